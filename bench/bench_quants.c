/* GGUF quantization throughput: MB/s of F32 input for every type
 * st_ggml_quantize writes, on 1 thread (portable path and best path) and
 * on all threads, and, when given ggml's reference code as a shared
 * library, ggml's quantize_row_<type>_ref on the same input, 1 thread.
 * One-thread figures are MB per CPU-second of the thread; "all" is wall
 * time.
 *
 *   bench_quants [MIB] [RUNS] [REF.so]
 *
 * MIB (default 16) of normal-like F32 input, rows of 4096; best of RUNS
 * (default 5). REF.so: ggml's src/ggml-quants.c built as a shared library
 * outside this repository (see bench/quants.sh); nothing of ggml is
 * compiled in here, the symbols are looked up with dlopen. Output: one
 * line per type, the ratios to the reference last. */
#include "bench_util.h"
#include "gguf/quants.h"
#include "safetensors.h"

#include <dlfcn.h>

typedef void (*ref_fn)(const float *, void *, int64_t);

/* CPU time of this thread: the one-thread figures are compared on it, so
 * that other processes on a shared machine distort them less than wall
 * time would (cache and memory contention remain). */
static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double best_of(int runs, double *t)
{
    double b = t[0];
    for (int i = 1; i < runs; i++)
        if (t[i] < b)
            b = t[i];
    return b;
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 16;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    const char *refpath = argc > 3 ? argv[3] : NULL;
    if (mib == 0 || runs < 1 || runs > 100) {
        fprintf(stderr, "usage: bench_quants [MIB] [RUNS] [REF.so]\n");
        return 2;
    }
    const size_t nper = 4096;
    size_t n = mib * 1024 * 1024 / 4 / nper * nper;
    float *x = malloc(n * sizeof(float));
    unsigned char *y = malloc(n * 4), *yref = malloc(n * 4);
    if (!x || !y || !yref)
        return 2;
    uint64_t s = 1;
    for (size_t i = 0; i < n; i++) {
        double u = 0;
        for (int k = 0; k < 4; k++)
            u += (double)(bench_rand(&s) >> 11) * 0x1p-53;
        x[i] = (float)((u - 2.0) * 1.7320508);
    }
    void *lib = NULL;
    if (refpath) {
        lib = dlopen(refpath, RTLD_NOW | RTLD_LOCAL);
        if (!lib)
            fprintf(stderr, "bench_quants: %s\n", dlerror());
    }
    static const int types[] = {ST_GGML_F16,  ST_GGML_BF16, ST_GGML_Q8_0, ST_GGML_Q5_1, ST_GGML_Q5_0,
                                ST_GGML_Q4_1, ST_GGML_Q4_0, ST_GGML_Q6_K, ST_GGML_Q5_K, ST_GGML_Q4_K,
                                ST_GGML_Q3_K, ST_GGML_Q2_K};
    double mb = (double)n * 4 / 1e6;
    printf("%zu MiB of F32 (%zu rows of %zu), best of %d; MB/s of input; simd %s\n", mib,
           n / nper, nper, runs, st_quant_simd_available() ? "avx2" : "none");
    printf("%-6s %10s %10s %10s %10s %8s %8s %s\n", "type", "portable", "1 thread", "all", "ggml ref",
           "1t/ref", "all/ref", "bytes");
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        int type = types[ti];
        size_t nb = n / st_ggml_block_elements(type);
        size_t out = nb * st_ggml_block_bytes(type);
        double t_port[100], t_one[100], t_all[100], t_ref[100];
        /* each variant once per round, interleaved, so drifting load hits
         * them alike */
        ref_fn ref = NULL;
        if (lib && type != ST_GGML_F16 && type != ST_GGML_BF16) {
            char name[64];
            snprintf(name, sizeof name, "quantize_row_%s_ref", st_ggml_type_name(type));
            *(void **)&ref = dlsym(lib, name);
        }
        int same = 1;
        for (int r = 0; r < runs; r++) {
            uint64_t t0 = cpu_ns();
            st_quant_blocks(type, x, y, nb, ST_QUANT_PORTABLE);
            uint64_t t1 = cpu_ns();
            st_ggml_quantize(type, x, y, n / nper, nper, 1, NULL);
            uint64_t t2 = cpu_ns();
            uint64_t w0 = bench_now_ns();
            st_ggml_quantize(type, x, y, n / nper, nper, 0, NULL);
            uint64_t w1 = bench_now_ns();
            t_port[r] = (double)(t1 - t0) / 1e9;
            t_one[r] = (double)(t2 - t1) / 1e9;
            t_all[r] = (double)(w1 - w0) / 1e9;
            if (ref) {
                size_t rb = out / (n / nper);
                uint64_t t4 = cpu_ns();
                for (size_t row = 0; row < n / nper; row++)
                    ref(x + row * nper, yref + row * rb, (int64_t)nper);
                t_ref[r] = (double)(cpu_ns() - t4) / 1e9;
                same &= !memcmp(y, yref, out);
            }
        }
        double p = mb / best_of(runs, t_port), o = mb / best_of(runs, t_one),
               a = mb / best_of(runs, t_all);
        if (ref) {
            double g = mb / best_of(runs, t_ref);
            printf("%-6s %10.1f %10.1f %10.1f %10.1f %7.2fx %7.2fx %s\n", st_ggml_type_name(type), p,
                   o, a, g, o / g, a / g, same ? "identical" : "DIFFER");
        } else {
            printf("%-6s %10.1f %10.1f %10.1f %10s %8s %8s\n", st_ggml_type_name(type), p, o, a, "-",
                   "-", "-");
        }
        bench_keep(y[0]);
        fflush(stdout);
    }
    /* dequantization, 1 thread: MB/s of F32 output */
    static const int dtypes[] = {ST_GGML_F16,  ST_GGML_BF16, ST_GGML_Q8_0, ST_GGML_Q5_1,
                                 ST_GGML_Q5_0, ST_GGML_Q4_1, ST_GGML_Q4_0, ST_GGML_Q6_K,
                                 ST_GGML_Q5_K, ST_GGML_Q4_K, ST_GGML_Q3_K, ST_GGML_Q2_K};
    printf("dequantize, 1 thread, MB/s of F32 output:");
    float *z = malloc(n * sizeof(float));
    for (size_t ti = 0; z && ti < sizeof dtypes / sizeof dtypes[0]; ti++) {
        int type = dtypes[ti];
        st_ggml_quantize(type, x, y, n / nper, nper, 0, NULL);
        double best = 1e30;
        for (int r = 0; r < runs; r++) {
            uint64_t t0 = cpu_ns();
            st_ggml_dequantize(type, y, z, n, 1, NULL);
            double t = (double)(cpu_ns() - t0) / 1e9;
            best = t < best ? t : best;
        }
        printf(" %s %.0f", st_ggml_type_name(type), mb / best);
    }
    printf("\n");
    free(z);
    if (lib)
        dlclose(lib);
    free(x);
    free(y);
    free(yref);
    return 0;
}
