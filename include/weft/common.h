/* SPDX-License-Identifier: MIT */
/* weft/common.h: export macro and small shared definitions for all public headers. */
#ifndef WEFT_COMMON_H
#define WEFT_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(WEFT_STATIC_DEFINE)
#define WEFT_EXTERN
#elif defined(__GNUC__) || defined(__clang__)
#define WEFT_EXTERN __attribute__((visibility("default")))
#else
#define WEFT_EXTERN
#endif

#ifdef __cplusplus
#define WEFT_BEGIN_DECLS extern "C" {
#define WEFT_END_DECLS }
#else
#define WEFT_BEGIN_DECLS
#define WEFT_END_DECLS
#endif

/** Timeout value meaning "wait without a time limit". */
#define WEFT_FOREVER ((int64_t)-1)

/** Destructor for a value or argument handed to weft. Runs exactly once. */
typedef void (*weft_dtor_fn)(void *ptr);

#endif /* WEFT_COMMON_H */
