/* SPDX-License-Identifier: MIT */
/* tests/test_error.c: the one error list: names, messages, errno mapping. */
#include "testutil.h"

#include <errno.h>
#include <string.h>

static void test_every_code_named(void) {
  static const int codes[] = {
#define X(name, val, msg) WEFT_##name,
      WEFT_ERRNO_MAP(X)
#undef X
  };
  static const char *names[] = {
#define X(name, val, msg) "WEFT_" #name,
      WEFT_ERRNO_MAP(X)
#undef X
  };
  for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
    EXPECT_TRUE(codes[i] < 0);
    EXPECT_EQ(strcmp(weft_error_name(codes[i]), names[i]), 0);
    if (codes[i] != WEFT_EUNKNOWN) /* every other code has its message */
      EXPECT_TRUE(strcmp(weft_error_message(codes[i]), "unknown error") != 0);
  }
}

static void test_zero_and_unknown(void) {
  EXPECT_EQ(strcmp(weft_error_message(0), "success"), 0);
  EXPECT_EQ(strcmp(weft_error_name(0), "WEFT_OK"), 0);
  EXPECT_EQ(strcmp(weft_error_message(-9999), "unknown error"), 0);
  EXPECT_EQ(strcmp(weft_error_name(12345), "WEFT_EUNKNOWN"), 0);
}

static void test_weft_own_codes(void) {
  EXPECT_EQ(strcmp(weft_error_name(WEFT_ECYCLE), "WEFT_ECYCLE"), 0);
  EXPECT_EQ(
      strcmp(weft_error_message(WEFT_ECYCLE), "future would follow itself"), 0);
  EXPECT_TRUE(WEFT_ECYCLE <= -4000); /* weft's own: no errno maps onto it */
  EXPECT_ERR(weft_error_from_errno(-WEFT_ECYCLE), WEFT_EUNKNOWN);
}

static void test_from_errno(void) {
  EXPECT_ERR(weft_error_from_errno(0), 0);
  EXPECT_ERR(weft_error_from_errno(ECANCELED), WEFT_ECANCELED);
  EXPECT_ERR(weft_error_from_errno(ETIMEDOUT), WEFT_ETIMEDOUT);
  EXPECT_ERR(weft_error_from_errno(ECONNRESET), WEFT_ECONNRESET);
  EXPECT_ERR(weft_error_from_errno(EMFILE), WEFT_EMFILE);
  EXPECT_ERR(weft_error_from_errno(ENOTBLK), WEFT_EUNKNOWN);
  EXPECT_ERR(weft_error_from_errno(4001), WEFT_EUNKNOWN); /* not EBROKEN */
}

static const test_case_t cases[] = {{"every code named", test_every_code_named},
                                    {"zero and unknown", test_zero_and_unknown},
                                    {"weft's own codes", test_weft_own_codes},
                                    {"from errno", test_from_errno},
                                    {NULL, NULL}};
const test_suite_t suite_error = {"error", cases};
