/* SPDX-License-Identifier: MIT */
/* lib/error.c: names and messages for the one error list in weft/error.h. */
#include <weft/error.h>

const char *weft_error_message(int err) {
  switch (err) {
  case 0:
    return "success";
#define WEFT__ERR_MSG(name, val, msg)                                          \
  case (val):                                                                  \
    return (msg);
    WEFT_ERRNO_MAP(WEFT__ERR_MSG)
#undef WEFT__ERR_MSG
  default:
    return "unknown error";
  }
}

const char *weft_error_name(int err) {
  switch (err) {
  case 0:
    return "WEFT_OK";
#define WEFT__ERR_NAME(name, val, msg)                                         \
  case (val):                                                                  \
    return "WEFT_" #name;
    WEFT_ERRNO_MAP(WEFT__ERR_NAME)
#undef WEFT__ERR_NAME
  default:
    return "WEFT_EUNKNOWN";
  }
}

int weft_error_from_errno(int errnum) {
  if (errnum == 0)
    return 0;
  switch (-errnum) {
#define WEFT__ERR_CASE(name, val, msg)                                         \
  case (val):                                                                  \
    return (val) > -4000 ? (val) : WEFT_EUNKNOWN;
    WEFT_ERRNO_MAP(WEFT__ERR_CASE)
#undef WEFT__ERR_CASE
  default:
    return WEFT_EUNKNOWN;
  }
}
