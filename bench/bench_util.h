/* Small helpers shared by the benchmark programs (header-only, all static). */
#ifndef ST_BENCH_UTIL_H
#define ST_BENCH_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Monotonic clock in nanoseconds: immune to wall-clock steps during a run. */
static inline uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of n samples (sorts them in place); the mean of the middle two
 * for an even count. The median, not the mean, so one preempted run on a
 * shared machine does not skew the figure. */
static inline double bench_median(double *v, size_t n)
{
    if (n == 0)
        return 0.0;
    qsort(v, n, sizeof *v, bench_cmp_double);
    return (n % 2) ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

/* splitmix64: a tiny deterministic generator, so every run of the
 * generators produces byte-identical inputs. */
static inline uint64_t bench_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Keeps the compiler from discarding a computed value. */
static inline void bench_keep(uint64_t v)
{
    __asm__ __volatile__("" : : "r"(v) : "memory");
}

#endif
