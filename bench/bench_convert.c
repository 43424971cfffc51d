/* Conversion throughput over a large in-memory array (default 1 GiB of F32):
 * memcpy of the same bytes as the yardstick, then F32 -> BF16 and F32 -> F16
 * with st_convert (SIMD as dispatched), with the portable scalar path, and
 * with st_convert_mt on every online CPU (and F32 -> F8_E4M3 for
 * reference). Best of REPS runs each; the
 * destination is allocated and touched once up front, so page faults are
 * not timed (the same holds for memcpy).
 *   bench_convert [MiB] [reps]
 * Prints one line per case: name, seconds, GB/s of F32 input, Gelem/s. */
#include "safetensors.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void report(const char *name, double sec, size_t in_bytes, size_t n)
{
    printf("%-28s %8.4f s  %7.2f GB/s  %6.3f Gelem/s\n", name, sec, in_bytes / sec / 1e9,
           n / sec / 1e9);
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
    int reps = argc > 2 ? atoi(argv[2]) : 3;
    size_t bytes = mib << 20, n = bytes / 4;
    uint32_t *src = malloc(bytes);
    void *big = malloc(bytes);
    uint16_t *dst = malloc(n * 2);
    if (!src || !big || !dst) {
        fprintf(stderr, "bench_convert: out of memory\n");
        return 1;
    }
    /* weights-like values: random mantissas, exponents around 2^-20..2^8,
     * both signs, plus a sprinkling of zeros */
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        uint32_t v = (uint32_t)s;
        v = (v & 0x807FFFFFu) | ((0x6B + (uint32_t)(s >> 40) % 0x1C) << 23);
        src[i] = (s >> 60) == 0 ? 0 : v;
    }
    memset(big, 1, bytes);
    memset(dst, 1, n * 2);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    printf("# %zu MiB of F32 (%zu elements), %d reps (best), %ld CPUs, SIMD path %s\n", mib, n,
           reps, cpus, st_convert_simd_name());

    double best = 1e9;
    for (int r = 0; r < reps; r++) {
        double t = now();
        memcpy(big, src, bytes);
        t = now() - t;
        if (t < best)
            best = t;
    }
    report("memcpy", best, bytes, n);

    static const struct {
        const char *name;
        st_dtype to;
        unsigned flags;
        unsigned threads; /* 1: st_convert; 0: st_convert_mt on all CPUs */
    } cases[] = {
        {"F32->BF16 1 thread", ST_BF16, 0, 1},
        {"F32->BF16 scalar 1 thread", ST_BF16, ST_CONVERT_SCALAR, 1},
        {"F32->BF16 all threads", ST_BF16, 0, 0},
        {"F32->F16 1 thread", ST_F16, 0, 1},
        {"F32->F16 scalar 1 thread", ST_F16, ST_CONVERT_SCALAR, 1},
        {"F32->F16 all threads", ST_F16, 0, 0},
        {"F32->F8_E4M3 1 thread", ST_F8_E4M3, 0, 1},
        {"F32->F8_E4M3 all threads", ST_F8_E4M3, 0, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        best = 1e9;
        for (int r = 0; r < reps; r++) {
            double t = now();
            int rc = cases[c].threads == 1
                         ? st_convert(cases[c].to, dst, ST_F32, src, n, cases[c].flags, NULL)
                         : st_convert_mt(cases[c].to, dst, ST_F32, src, n, cases[c].flags, 0,
                                         NULL);
            t = now() - t;
            if (rc) {
                fprintf(stderr, "st_convert failed: %d\n", rc);
                return 1;
            }
            if (t < best)
                best = t;
        }
        report(cases[c].name, best, bytes, n);
    }
    free(src);
    free(big);
    free(dst);
    return 0;
}
