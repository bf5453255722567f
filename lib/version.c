/* SPDX-License-Identifier: MIT */
/* lib/version.c: the version of the library that is actually loaded. */
#include <weft/version.h>

const char *weft_version_string(void) { return WEFT_VERSION_STRING; }

unsigned weft_version_hex(void) { return (unsigned)WEFT_VERSION_HEX; }
