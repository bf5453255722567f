/* SPDX-License-Identifier: MIT */
/* tests/fuzz/fuzz_model.c: the model driver (tests/model.c) as a libFuzzer
 * target: the input's bytes make the driver's choices (byte i goes to
 * thread i % 4) instead of the PRNG. A check that fails aborts, so libFuzzer
 * keeps the input; replay it with `build/fuzz/fuzz_model <crash-file>`.
 * Built by -DWEFT_BUILD_FUZZ=ON under clang; run with scripts/fuzz.sh. */
#include "../model.h"

#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 8)
    return 0;
  model_cfg_t cfg = {0};
  cfg.data = data;
  cfg.size = size;
  cfg.quiet = 1;
  model_result_t r;
  if (model_run(&cfg, &r) != 0) {
    fprintf(stderr, "fuzz_model: %s\n", r.msg);
    abort();
  }
  return 0;
}
