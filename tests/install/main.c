/* Uses the installed weft: a job per element, one counter. */
#include <stdio.h>

#include <weft.h>

static void square(void* arg) {
  long* v = arg;
  *v = *v * *v;
}

int main(void) {
  weft_runtime_t* rt;
  weft_counter_t c;
  long v[100];
  long sum = 0;
  int i;
  if (weft_runtime_create(&rt, NULL) != 0)
    return 1;
  weft_counter_init(&c, 0);
  for (i = 0; i < 100; i++) {
    v[i] = i;
    weft_spawn(rt, square, &v[i], &c);
  }
  weft_counter_wait(&c, 0);
  weft_runtime_destroy(rt);
  for (i = 0; i < 100; i++)
    sum += v[i];
  printf("weft %s: sum of squares %ld\n", WEFT_VERSION_STRING, sum);
  return sum == 328350 ? 0 : 1;
}
