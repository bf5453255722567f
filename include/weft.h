/* SPDX-License-Identifier: MIT */
/* weft.h: the one header users include; it pulls in every weft module. */
#ifndef WEFT_H
#define WEFT_H

#include <weft/common.h>
#include <weft/error.h>
#include <weft/version.h>
#include <weft/system.h>
#include <weft/alloc.h>
#include <weft/executor.h>
#include <weft/future.h>
#include <weft/pool.h>
#include <weft/loop.h>
#include <weft/net.h>
#include <weft/stream.h>
#include <weft/fiber.h>
#include <weft/runtime.h>
#include <weft/fs.h>
#include <weft/dns.h>
#include <weft/sync.h>
#include <weft/retry.h>
#include <weft/process.h>

#endif /* WEFT_H */
