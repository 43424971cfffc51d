/* Helpers shared by the libFuzzer targets in fuzz/. Each target is one .c
 * file compiled together with the library sources (see fuzz/run.sh). Everything here is
 * static: the targets are separate programs.
 *
 * A failed property calls FUZZ_ASSERT, which prints what went wrong and
 * abort()s, so libFuzzer records the input as a crash. */
#ifndef ST_FUZZ_UTIL_H
#define ST_FUZZ_UTIL_H

#include "safetensors.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define FUZZ_ASSERT(cond, ...)                                                \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "FUZZ_ASSERT %s:%d: %s: ", __FILE__, __LINE__,    \
                    #cond);                                                   \
            fprintf(stderr, "" __VA_ARGS__);                                  \
            fputc('\n', stderr);                                              \
            abort();                                                          \
        }                                                                     \
    } while (0)


/* A deterministic stream of choices drawn from the input: bytes first, then
 * a PRNG seeded by them, so every input byte matters and runs never end
 * early. */
typedef struct fz {
    const uint8_t *p;
    size_t n, i;
    uint64_t s;
} fz;

static inline void fz_init(fz *f, const uint8_t *p, size_t n)
{
    f->p = p;
    f->n = n;
    f->i = 0;
    f->s = 0x9e3779b97f4a7c15ull ^ n;
    for (size_t k = 0; k < n; k++)
        f->s = (f->s ^ p[k]) * 0x100000001b3ull;
}

static inline uint64_t fz_rand(fz *f)
{
    f->s ^= f->s << 13;
    f->s ^= f->s >> 7;
    f->s ^= f->s << 17;
    return f->s;
}

static inline uint8_t fz_byte(fz *f)
{
    if (f->i < f->n)
        return f->p[f->i++];
    return (uint8_t)fz_rand(f);
}

static inline uint64_t fz_below(fz *f, uint64_t n)
{
    if (n == 0)
        return 0;
    uint64_t v = fz_byte(f);
    if (n > 256)
        v = v << 56 ^ fz_rand(f);
    return v % n;
}

/* Bytes left in the input (not the PRNG). */
static inline size_t fz_left(const fz *f)
{
    return f->n - f->i;
}

/* An independent UTF-8 check (RFC 3629: no overlongs, no surrogates, at
 * most U+10FFFF), so the library's own is not its own oracle. */
static inline bool fz_utf8_ok(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        uint32_t cp;
        size_t len;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            cp = c & 0x1f;
            len = 2;
        } else if ((c & 0xf0) == 0xe0) {
            cp = c & 0x0f;
            len = 3;
        } else if ((c & 0xf8) == 0xf0) {
            cp = c & 0x07;
            len = 4;
        } else {
            return false;
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

/* An error must carry a known code and a NUL-terminated message. */
static inline void fz_check_error(int rc, const st_error *err)
{
    FUZZ_ASSERT(rc == err->code, "returned %d, err->code %d", rc, err->code);
    FUZZ_ASSERT(strcmp(st_code_name(rc), "unknown") != 0, "unknown code %d", rc);
    FUZZ_ASSERT(memchr(err->message, 0, sizeof err->message) != NULL, "message not terminated");
    FUZZ_ASSERT(err->message[0] != 0, "empty message for %s", st_code_name(rc));
}

/* The same bytes as a real file, through an anonymous memory file, so the
 * mmap and pread paths of st_open can be compared with st_open_memory.
 * Returns the descriptor (close it after st_open) or -1. */
static inline int fz_memfd(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz", MFD_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(fd, data + off, size - off);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    return fd;
}

static inline int fz_open_fd(int fd, unsigned flags, st_file **out, st_error *err)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    return st_open(path, flags, out, err);
}

#endif
