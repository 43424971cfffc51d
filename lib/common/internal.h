/* Internal helpers shared by the library's files. Not installed. */
#ifndef ST_INTERNAL_H
#define ST_INTERNAL_H

#include "safetensors.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ST_INTERNAL __attribute__((visibility("hidden")))

/* Fills *err (when not NULL) and returns code, so callers can
 * `return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "...", ...)`. */
ST_INTERNAL int st_fail(st_error *err, int code, uint64_t offset, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Writes a tensor name for a message: quoted, non-printable bytes escaped,
 * cut with "..." past about 100 bytes. Always NUL-terminates dst. */
ST_INTERNAL void st_quote_name(char *dst, size_t cap, const char *name, size_t len);

/* Bytes for nelements of dtype, with the reference's checks: returns ST_OK,
 * ST_E_OVERFLOW (element count x bits overflows 64 bits) or ST_E_MISALIGNED
 * (not a whole number of bytes). */
ST_INTERNAL int st_bytes_for(st_dtype dtype, uint64_t nelements, uint64_t *nbytes);

/* Product of a shape, left to right, as the reference computes it;
 * false on 64-bit overflow. */
ST_INTERNAL bool st_shape_product(const uint64_t *shape, uint32_t rank, uint64_t *out);

/* A fast 64-bit hash of a byte string (not cryptographic), seeded so that
 * tables indexed by names from a file cannot be flooded with collisions
 * chosen in advance. */
ST_INTERNAL uint64_t st_hash_bytes_seeded(uint64_t seed, const void *data, size_t len);

/* A fresh seed for st_hash_bytes_seeded: from getrandom, else the clock
 * mixed with `salt` (an address). */
ST_INTERNAL uint64_t st_hash_seed(const void *salt);

/* Bytewise order of two byte strings, shorter first on a common prefix. */
ST_INTERNAL int st_name_cmp(const char *a, size_t alen, const char *b, size_t blen);

#endif
