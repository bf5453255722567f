/* SPDX-License-Identifier: MIT */
/* tests/consumer/main.c: proves an installed weft can be included and linked. */
#include <weft.h>

#include <stdio.h>

static weft_result_t twice(void *arg, weft_future_t *src) {
  (void)arg;
  return weft_ok_int(weft_future_int(src) * 2);
}

int main(void) {
  weft_promise_t *p;
  weft_future_t *f, *g;
  if (weft_promise_create(&p, &f) != 0 ||
      weft_future_then(f, weft_executor_inline(), twice, NULL, NULL, &g) != 0)
    return 1;
  weft_promise_fulfil_int(p, 21);
  int ok = weft_future_await(g, 1000) == 0 && weft_future_int(g) == 42 &&
           weft_version_hex() == WEFT_VERSION_HEX;
  printf("consumer: weft %s, 21 * 2 = %ld: %s\n", weft_version_string(),
         (long)weft_future_int(g), ok ? "ok" : "WRONG");
  weft_future_release(g);
  weft_future_release(f);
  weft_promise_release(p);
  return ok ? 0 : 1;
}
