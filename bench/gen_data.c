/*
 * gen_data - writes a large safetensors file of real (non-zero, non-sparse)
 * F32 data, for read-throughput benchmarks.
 *
 *   gen_data OUT MIB
 *
 * MIB (a multiple of 8) mebibytes of data in 8 tensors of shape
 * [rows, 1024]. Data bytes are pseudo-random (never a hole: a sparse file
 * would be read from the zero page, not the page cache, and flatter the
 * figures). If OUT already holds exactly this file's header and size it is
 * reused. Written to OUT.tmp, fdatasync'ed (so background writeback does
 * not disturb the measurements that follow), then renamed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pread, fdatasync under -std=c11 */
#endif
#include "bench_util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NTENSORS 8
#define CHUNK (16u << 20)

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: gen_data OUT MIB\n");
        return 2;
    }
    const char *out = argv[1];
    unsigned long mib = strtoul(argv[2], NULL, 10);
    if (mib == 0 || mib % NTENSORS || mib > (1ul << 20)) {
        fprintf(stderr, "gen_data: MIB must be a positive multiple of %d\n", NTENSORS);
        return 2;
    }
    uint64_t per = (uint64_t)mib / NTENSORS << 20;
    uint64_t rows = per / 4096;

    char header[4096];
    size_t hl = (size_t)snprintf(header, sizeof header, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < NTENSORS; i++)
        hl += (size_t)snprintf(header + hl, sizeof header - hl,
                               ",\"model.layers.%d.mlp.down_proj.weight\":{\"dtype\":\"F32\","
                               "\"shape\":[%llu,1024],\"data_offsets\":[%llu,%llu]}",
                               i, (unsigned long long)rows, (unsigned long long)(per * (uint64_t)i),
                               (unsigned long long)(per * (uint64_t)(i + 1)));
    hl += (size_t)snprintf(header + hl, sizeof header - hl, "}");
    while (hl % 8)
        header[hl++] = ' ';
    unsigned char prefix[8];
    for (int i = 0; i < 8; i++)
        prefix[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    uint64_t total = 8 + hl + per * NTENSORS;

    /* Reuse an identical file from an earlier run. */
    int fd = open(out, O_RDONLY);
    if (fd >= 0) {
        struct stat st;
        char have[8 + sizeof header];
        if (fstat(fd, &st) == 0 && (uint64_t)st.st_size == total &&
            pread(fd, have, 8 + hl, 0) == (ssize_t)(8 + hl) && memcmp(have, prefix, 8) == 0 &&
            memcmp(have + 8, header, hl) == 0) {
            close(fd);
            printf("%s: reusing (%llu bytes)\n", out, (unsigned long long)total);
            return 0;
        }
        close(fd);
    }

    size_t plen = strlen(out) + 5;
    char *tmp = malloc(plen);
    unsigned char *buf = malloc(CHUNK);
    if (!tmp || !buf)
        return 1;
    snprintf(tmp, plen, "%s.tmp", out);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        perror(tmp);
        return 1;
    }
    /* Floats in [1, 2) with random mantissas: real-looking, never zero. */
    uint64_t rng = 2024;
    for (size_t i = 0; i < CHUNK; i += 8) {
        uint64_t r = bench_rand(&rng);
        uint32_t a = 0x3f800000u | (uint32_t)(r & 0x7fffff);
        uint32_t b = 0x3f800000u | (uint32_t)((r >> 32) & 0x7fffff);
        memcpy(buf + i, &a, 4);
        memcpy(buf + i + 4, &b, 4);
    }
    int ok = write_all(fd, prefix, 8) == 0 && write_all(fd, header, hl) == 0;
    uint64_t data = per * NTENSORS;
    for (uint64_t done = 0, n = 0; ok && done < data; n++) {
        size_t len = data - done < CHUNK ? (size_t)(data - done) : CHUNK;
        /* Vary each chunk a little, so no two chunks are identical. */
        uint32_t mark = 0x3f800000u | (uint32_t)(n & 0x7fffff);
        memcpy(buf, &mark, 4);
        ok = write_all(fd, buf, len) == 0;
        done += len;
    }
    if (ok && fdatasync(fd) != 0)
        ok = 0;
    if (close(fd) != 0)
        ok = 0;
    if (!ok || rename(tmp, out) != 0) {
        perror(out);
        unlink(tmp);
        return 1;
    }
    printf("%s: wrote %llu bytes\n", out, (unsigned long long)total);
    free(buf);
    free(tmp);
    return 0;
}
