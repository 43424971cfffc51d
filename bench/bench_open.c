/*
 * bench_open - time st_open + st_close on big headers, and st_find.
 *
 *   bench_open [-r REF_MS] FILE...
 *
 * For each file: one untimed warm-up open (page cache, allocator), then
 * repeated open+close until at least 5 runs and 1 s of work (at most 200
 * runs), reported as the median. Header MB/s is header bytes / median time
 * (MB = 10^6 bytes). The same in ST_OPEN_PREAD mode (header read with
 * pread instead of mapped), and with st_open_memory on the file's bytes
 * already in memory (parsing and validation alone). Then, on one open handle, st_find of every
 * tensor name in a shuffled order (hits, each checked to return the right
 * tensor) and of as many names that are not in the file (misses).
 *
 * After the table: a least-squares line time = a + b * header_bytes over
 * all files and its R^2, and ns per header byte per file, to show the cost
 * is linear in header size. With -r, the file with 100,000 tensors is
 * compared with the target "at most half of REF_MS".
 */
#include "bench_util.h"
#include "safetensors.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RUNS 200
#define MIN_RUNS 5
#define MIN_TOTAL_NS 1000000000ull

typedef struct result {
    const char *path;
    size_t tensors;
    uint64_t header;
    double open_ms, open_min_ms, pread_ms, mem_ms, find_ns, miss_ns;
    int runs;
} result;

/* The file's bytes in memory, for timing st_open_memory (parse and
 * validation alone, no system calls: what the reference crate's
 * SafeTensors::deserialize(&buffer) does). NULL on failure. */
static void *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    char *p = NULL;
    if (fseek(fp, 0, SEEK_END) == 0) {
        long n = ftell(fp);
        if (n > 0 && fseek(fp, 0, SEEK_SET) == 0 && (p = malloc((size_t)n)) != NULL &&
            fread(p, 1, (size_t)n, fp) != (size_t)n) {
            free(p);
            p = NULL;
        }
        *len = n > 0 ? (size_t)n : 0;
    }
    fclose(fp);
    return p;
}

static int open_any(const char *path, const void *mem, size_t mem_len, unsigned flags,
                    st_file **f, st_error *err)
{
    return mem ? st_open_memory(mem, mem_len, 0, f, err) : st_open(path, flags, f, err);
}

/* Median ms of repeated open+close (of the file, or of mem when not NULL);
 * -1 on failure (reported). */
static double time_open(const char *path, const void *mem, size_t mem_len, unsigned flags,
                        int *runs_out, double *min_ms)
{
    double samples[MAX_RUNS];
    st_error err;
    st_file *f = NULL;
    if (open_any(path, mem, mem_len, flags, &f, &err) != ST_OK) {
        fprintf(stderr, "bench_open: %s: %s\n", path, err.message);
        return -1;
    }
    st_close(f);
    int runs = 0;
    uint64_t total = 0;
    while (runs < MAX_RUNS && (runs < MIN_RUNS || total < MIN_TOTAL_NS)) {
        uint64_t t0 = bench_now_ns();
        int rc = open_any(path, mem, mem_len, flags, &f, &err);
        st_close(f);
        uint64_t dt = bench_now_ns() - t0;
        if (rc != ST_OK) {
            fprintf(stderr, "bench_open: %s: %s\n", path, err.message);
            return -1;
        }
        samples[runs++] = (double)dt / 1e6;
        total += dt;
    }
    *runs_out = runs;
    double lo = samples[0];
    for (int i = 1; i < runs; i++)
        if (samples[i] < lo)
            lo = samples[i];
    if (min_ms)
        *min_ms = lo;
    return bench_median(samples, (size_t)runs);
}

/* Times st_find over every name (hits) and over altered names (misses).
 * Returns 0, or -1 if a lookup gave a wrong answer. */
static int time_find(const char *path, double *hit_ns, double *miss_ns)
{
    st_error err;
    st_file *f = NULL;
    if (st_open(path, ST_OPEN_MMAP, &f, &err) != ST_OK) {
        fprintf(stderr, "bench_open: %s: %s\n", path, err.message);
        return -1;
    }
    size_t n = st_tensor_count(f);
    const st_tensor **order = malloc(n * sizeof *order);
    char **miss = malloc(n * sizeof *miss);
    if (!order || !miss) {
        fprintf(stderr, "bench_open: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        order[i] = st_tensor_at(f, i);
    /* Shuffled, so the lookups do not walk the table in its own order. */
    uint64_t rng = 42;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(bench_rand(&rng) % i);
        const st_tensor *t = order[i - 1];
        order[i - 1] = order[j];
        order[j] = t;
    }
    /* Misses: same length, last byte changed to one no generated name ends
     * with, so hashing and comparing cost the same as for a hit. */
    for (size_t i = 0; i < n; i++) {
        miss[i] = malloc(order[i]->name_len + 1);
        if (!miss[i]) {
            fprintf(stderr, "bench_open: out of memory\n");
            exit(1);
        }
        memcpy(miss[i], order[i]->name, order[i]->name_len);
        miss[i][order[i]->name_len - 1] = '~';
    }
    int bad = 0;
    double hs[5], ms[5];
    for (int r = 0; r < 5; r++) {
        uint64_t t0 = bench_now_ns();
        for (size_t i = 0; i < n; i++)
            if (st_find(f, order[i]->name, order[i]->name_len) != order[i])
                bad++;
        uint64_t t1 = bench_now_ns();
        for (size_t i = 0; i < n; i++)
            if (st_find(f, miss[i], order[i]->name_len) != NULL)
                bad++;
        uint64_t t2 = bench_now_ns();
        hs[r] = (double)(t1 - t0) / (double)n;
        ms[r] = (double)(t2 - t1) / (double)n;
    }
    *hit_ns = bench_median(hs, 5);
    *miss_ns = bench_median(ms, 5);
    for (size_t i = 0; i < n; i++)
        free(miss[i]);
    free(miss);
    free(order);
    st_close(f);
    if (bad) {
        fprintf(stderr, "bench_open: %s: %d wrong st_find answers\n", path, bad);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    double ref_ms = 0;
    int first = 1;
    if (argc > 2 && strcmp(argv[1], "-r") == 0) {
        ref_ms = strtod(argv[2], NULL);
        first = 3;
    }
    if (first >= argc) {
        fprintf(stderr, "usage: bench_open [-r REF_MS] FILE...\n");
        return 2;
    }
    int nfiles = argc - first, failed = 0;
    result *res = calloc((size_t)nfiles, sizeof *res);
    if (!res)
        return 1;

    printf("st_open + st_close (median of N runs after a warm-up; MB = 10^6 bytes)\n");
    printf("%9s %11s %5s %10s %10s %8s %6s %10s %10s %8s %8s\n", "tensors", "header B", "runs",
           "open ms", "min ms", "MB/s", "ns/B", "pread ms", "memory ms", "find ns", "miss ns");
    for (int i = 0; i < nfiles; i++) {
        result *r = &res[i];
        r->path = argv[first + i];
        st_file *f = NULL;
        st_error err;
        if (st_open(r->path, 0, &f, &err) != ST_OK) {
            fprintf(stderr, "bench_open: %s: %s\n", r->path, err.message);
            failed = 1;
            continue;
        }
        r->tensors = st_tensor_count(f);
        r->header = st_header_size(f);
        st_close(f);
        r->open_ms = time_open(r->path, NULL, 0, ST_OPEN_MMAP, &r->runs, &r->open_min_ms);
        int other_runs;
        r->pread_ms = time_open(r->path, NULL, 0, ST_OPEN_PREAD, &other_runs, NULL);
        size_t mem_len = 0;
        void *mem = slurp(r->path, &mem_len);
        r->mem_ms = mem ? time_open(r->path, mem, mem_len, 0, &other_runs, NULL) : -1;
        free(mem);
        if (r->open_ms < 0 || r->pread_ms < 0 || r->mem_ms < 0 ||
            time_find(r->path, &r->find_ns, &r->miss_ns)) {
            failed = 1;
            continue;
        }
        printf("%9zu %11llu %5d %10.3f %10.3f %8.1f %6.2f %10.3f %10.3f %8.1f %8.1f\n",
               r->tensors, (unsigned long long)r->header, r->runs, r->open_ms, r->open_min_ms,
               (double)r->header / (r->open_ms * 1e3), r->open_ms * 1e6 / (double)r->header,
               r->pread_ms, r->mem_ms, r->find_ns, r->miss_ns);
        fflush(stdout);
    }
    if (failed)
        return 1;

    /* Linearity: least squares of open time against header bytes. */
    if (nfiles >= 2) {
        double sx = 0, sy = 0, sxx = 0, sxy = 0, syy = 0, n = nfiles;
        double lo = 0, hi = 0;
        for (int i = 0; i < nfiles; i++) {
            double x = (double)res[i].header / 1e6, y = res[i].open_ms;
            sx += x;
            sy += y;
            sxx += x * x;
            sxy += x * y;
            syy += y * y;
            double per = y / x;
            if (i == 0 || per < lo)
                lo = per;
            if (i == 0 || per > hi)
                hi = per;
        }
        double b = (n * sxy - sx * sy) / (n * sxx - sx * sx);
        double a = (sy - b * sx) / n;
        double r = (n * sxy - sx * sy) / sqrt((n * sxx - sx * sx) * (n * syy - sy * sy));
        printf("linear fit: open ms = %.3f + %.3f * header MB (R^2 = %.5f); "
               "ms per header MB ranges %.2f .. %.2f over the files\n",
               a, b, r * r, lo, hi);
    }
    for (int i = 0; i < nfiles; i++) {
        if (ref_ms > 0 && res[i].tensors == 100000) {
            printf("target: open+validate of the 100,000-tensor header (%.1f MB) <= %.1f ms "
                   "(half of the reference's %.1f ms): st_open %.3f ms (speed-up %.2fx), "
                   "st_open_memory %.3f ms (%.2fx) -> %s\n",
                   (double)res[i].header / 1e6, ref_ms / 2, ref_ms, res[i].open_ms,
                   ref_ms / res[i].open_ms, res[i].mem_ms, ref_ms / res[i].mem_ms,
                   res[i].open_ms <= ref_ms / 2 ? "PASS" : "FAIL");
        }
    }
    free(res);
    return 0;
}
