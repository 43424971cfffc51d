/*
 * bench_read - read throughput of all tensor data of one file.
 *
 *   bench_read [-c CAT_GBPS] FILE
 *
 * Every mode opens the file, reads every byte of every tensor, and closes
 * it, so page-fault and mapping costs are counted each run. One untimed
 * warm-up run per mode, then RUNS timed runs of all modes interleaved; the
 * median is reported, in GB/s of tensor data (GB = 10^9 bytes). The page
 * cache is warm: this measures the library against memory, not the disk.
 *
 *   mmap sum        st_tensor_data, every 8-byte word added up
 *   mmap memcpy     st_tensor_data, memcpy into a chunk-sized buffer
 *   st_tensor_read  ST_OPEN_PREAD handle, chunks of 4, 8, 16 MiB
 *   + sum           8 MiB chunks, then every word added up (like mmap sum)
 *   raw pread(2)    the whole file with plain pread(2), no library, 128 KiB
 *                   (cat's buffer size) and 8 MiB: the floor for copying
 *   cat             `cat FILE > /dev/null` spawned and timed here (whole
 *                   file), the page-cache limit every mode is compared with
 *
 * The two summing modes must give the same checksum, or the run fails.
 * With -c (the `cat` throughput the caller measured with hyperfine) each
 * mode is also shown as a percentage of that.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pread under -std=c11 */
#endif
#include "bench_util.h"
#include "safetensors.h"

#include <fcntl.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define RUNS 7
#define MIB (1u << 20)

typedef enum mode { M_MMAP_SUM, M_MMAP_COPY, M_READ, M_READ_SUM, M_RAW, M_CAT } mode;

/* Sum of the bytes as little 64-bit words (tail bytes added singly).
 * Four accumulators keep the adds from being one serial chain. */
static uint64_t sum_words(const unsigned char *p, size_t n)
{
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        uint64_t w[4];
        memcpy(w, p + i, 32);
        s0 += w[0];
        s1 += w[1];
        s2 += w[2];
        s3 += w[3];
    }
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        s0 += w;
    }
    for (; i < n; i++)
        s1 += p[i];
    return s0 + s1 + s2 + s3;
}

/* One full pass; returns bytes read (0 on error) and sets *sum. */
static uint64_t one_pass(const char *path, mode m, size_t chunk, unsigned char *buf, uint64_t *sum)
{
    uint64_t bytes = 0, s = 0;
    st_error err;
    if (m == M_CAT) {
        /* `cat FILE > /dev/null`, spawned and timed here so that it runs
         * interleaved with the other modes under the same conditions. */
        posix_spawn_file_actions_t fa;
        pid_t pid;
        int status;
        char *args[] = {(char *)"cat", (char *)path, NULL};
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
        int rc = posix_spawnp(&pid, "cat", &fa, NULL, args, environ);
        posix_spawn_file_actions_destroy(&fa);
        if (rc != 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0)
            return 0;
        struct stat st;
        if (stat(path, &st) != 0)
            return 0;
        *sum = 0;
        return (uint64_t)st.st_size;
    }
    if (m == M_RAW) {
        int fd = open(path, O_RDONLY);
        if (fd < 0)
            return 0;
        for (;;) {
            ssize_t r = pread(fd, buf, chunk, (off_t)bytes);
            if (r < 0) {
                close(fd);
                return 0;
            }
            if (r == 0)
                break;
            bytes += (uint64_t)r;
        }
        close(fd);
        *sum = 0;
        return bytes;
    }
    st_file *f = NULL;
    unsigned flags = (m == M_READ || m == M_READ_SUM) ? ST_OPEN_PREAD : ST_OPEN_MMAP;
    if (st_open(path, flags, &f, &err) != ST_OK) {
        fprintf(stderr, "bench_read: %s: %s\n", path, err.message);
        return 0;
    }
    size_t n = st_tensor_count(f);
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_tensor_at(f, i);
        uint64_t nb = st_tensor_nbytes(t);
        if (m == M_MMAP_SUM || m == M_MMAP_COPY) {
            const unsigned char *p = st_tensor_data(f, t);
            if (!p && nb) {
                fprintf(stderr, "bench_read: no mapping for tensor %zu\n", i);
                st_close(f);
                return 0;
            }
            if (m == M_MMAP_SUM) {
                s += sum_words(p, (size_t)nb);
            } else {
                for (uint64_t o = 0; o < nb; o += chunk) {
                    size_t len = nb - o < chunk ? (size_t)(nb - o) : chunk;
                    memcpy(buf, p + o, len);
                    bench_keep(buf[len - 1]);
                }
            }
        } else {
            for (uint64_t o = 0; o < nb; o += chunk) {
                size_t len = nb - o < chunk ? (size_t)(nb - o) : chunk;
                if (st_tensor_read(f, t, o, buf, len, &err) != ST_OK) {
                    fprintf(stderr, "bench_read: %s: %s\n", path, err.message);
                    st_close(f);
                    return 0;
                }
                if (m == M_READ_SUM)
                    s += sum_words(buf, len);
            }
        }
        bytes += nb;
    }
    st_close(f);
    bench_keep(s);
    *sum = s;
    return bytes;
}

typedef struct bench_case {
    const char *label;
    mode m;
    size_t chunk;
} bench_case;

int main(int argc, char **argv)
{
    double cat_gbps = 0;
    int first = 1;
    if (argc > 2 && strcmp(argv[1], "-c") == 0) {
        cat_gbps = strtod(argv[2], NULL);
        first = 3;
    }
    if (first != argc - 1) {
        fprintf(stderr, "usage: bench_read [-c CAT_GBPS] FILE\n");
        return 2;
    }
    const char *path = argv[first];
    static const bench_case cases[] = {
        {"mmap, sum every word", M_MMAP_SUM, 0},
        {"mmap, memcpy 8 MiB chunks", M_MMAP_COPY, 8 * MIB},
        {"st_tensor_read 4 MiB chunks", M_READ, 4 * MIB},
        {"st_tensor_read 8 MiB chunks", M_READ, 8 * MIB},
        {"st_tensor_read 16 MiB chunks", M_READ, 16 * MIB},
        {"st_tensor_read 8 MiB + sum", M_READ_SUM, 8 * MIB},
        {"raw pread(2) 128 KiB, no lib", M_RAW, 128 * 1024},
        {"raw pread(2) 8 MiB, no lib", M_RAW, 8 * MIB},
        {"cat FILE > /dev/null (spawned)", M_CAT, 0},
    };
    const size_t ncases = sizeof cases / sizeof cases[0];
    _Static_assert(sizeof cases / sizeof cases[0] <= 16, "arrays below hold 16 modes");
    unsigned char *buf = malloc(16 * MIB);
    if (!buf)
        return 1;
    memset(buf, 1, 16 * MIB); /* fault the buffer in before timing */

    printf("read all tensor data, warm page cache (median of %d runs after a warm-up; "
           "GB = 10^9 bytes)\n", RUNS);
    printf("%-34s %12s %9s %8s %8s%s\n", "mode", "bytes", "ms", "GB/s", "vs cat",
           cat_gbps > 0 ? " vs cat(hyperfine)" : "");
    /* Warm-up pass of every mode, then the timed runs interleaved (run r of
     * every mode, then run r + 1), so that drift in the machine's load hits
     * all modes alike rather than whichever ran during a noisy moment. */
    uint64_t bytes[16], sum[16];
    double t[16][RUNS];
    int failed = 0;
    for (size_t c = 0; c < ncases; c++) {
        bytes[c] = one_pass(path, cases[c].m, cases[c].chunk, buf, &sum[c]);
        if (!bytes[c]) {
            fprintf(stderr, "bench_read: %s failed\n", cases[c].label);
            return 1;
        }
    }
    for (int r = 0; r < RUNS; r++) {
        for (size_t c = 0; c < ncases; c++) {
            uint64_t s2 = 0, t0 = bench_now_ns();
            uint64_t b2 = one_pass(path, cases[c].m, cases[c].chunk, buf, &s2);
            t[c][r] = (double)(bench_now_ns() - t0) / 1e9;
            if (b2 != bytes[c] || s2 != sum[c]) {
                fprintf(stderr, "bench_read: %s: runs disagree\n", cases[c].label);
                failed = 1;
            }
        }
    }
    double gbps[16], cat = 0, read8 = 0;
    for (size_t c = 0; c < ncases; c++) {
        gbps[c] = (double)bytes[c] / bench_median(t[c], RUNS) / 1e9;
        if (cases[c].m == M_CAT)
            cat = gbps[c];
        if (cases[c].m == M_READ && cases[c].chunk == 8 * MIB)
            read8 = gbps[c];
    }
    uint64_t sums[2] = {0, 0};
    int nsums = 0;
    for (size_t c = 0; c < ncases; c++) {
        const bench_case *bc = &cases[c];
        if (bc->m == M_MMAP_SUM || bc->m == M_READ_SUM)
            sums[nsums++] = sum[c];
        printf("%-34s %12llu %9.1f %8.2f %7.0f%%", bc->label, (unsigned long long)bytes[c],
               (double)bytes[c] / gbps[c] / 1e6, gbps[c], 100.0 * gbps[c] / cat);
        if (cat_gbps > 0)
            printf(" %7.0f%%", 100.0 * gbps[c] / cat_gbps);
        printf("\n");
    }
    if (nsums == 2 && sums[0] != sums[1]) {
        fprintf(stderr, "bench_read: checksums differ: mmap %016llx, st_tensor_read %016llx\n",
                (unsigned long long)sums[0], (unsigned long long)sums[1]);
        failed = 1;
    } else if (nsums == 2) {
        printf("checksum (sum of 64-bit words) mmap == st_tensor_read: %016llx\n",
               (unsigned long long)sums[0]);
    }
    printf("target: st_tensor_read (8 MiB chunks) / cat = %.0f%% (target >= 80%%) -> %s\n",
           100.0 * read8 / cat, read8 >= 0.8 * cat ? "PASS" : "FAIL");
    if (cat_gbps > 0)
        printf("        against the separately measured cat (%.2f GB/s): %.0f%%\n", cat_gbps,
               100.0 * read8 / cat_gbps);
    free(buf);
    return failed;
}
