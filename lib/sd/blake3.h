/* BLAKE3 (hash mode, 32-byte output), written from the BLAKE3 paper and
 * specification (https://github.com/BLAKE3-team/BLAKE3-specs). Internal:
 * the library uses it for the `blake3` digest of st_hash_*. */
#ifndef ST_BLAKE3_H
#define ST_BLAKE3_H

#include "common/internal.h"

#include <stddef.h>
#include <stdint.h>

#define ST_BLAKE3_OUT_LEN 32
#define ST_BLAKE3_BLOCK_LEN 64
#define ST_BLAKE3_CHUNK_LEN 1024
/* A tree over 2^64 bytes has at most 54 levels of chaining values. */
#define ST_BLAKE3_MAX_DEPTH 54

typedef struct st_blake3 {
    uint32_t key[8];
    /* the chunk being filled */
    uint32_t cv[8];
    uint64_t chunk_counter;
    uint8_t buf[ST_BLAKE3_BLOCK_LEN];
    uint8_t buf_len;
    uint8_t blocks_compressed;
    /* chaining values of completed subtrees, largest first */
    uint8_t stack_len;
    uint32_t stack[ST_BLAKE3_MAX_DEPTH][8];
    int simd; /* which many-chunk routine to use (see blake3.c) */
} st_blake3;

ST_INTERNAL void st_blake3_init(st_blake3 *h);
ST_INTERNAL void st_blake3_update(st_blake3 *h, const void *data, size_t len);
/* Does not modify *h: more input may follow and finalize be called again. */
ST_INTERNAL void st_blake3_final(const st_blake3 *h, uint8_t out[ST_BLAKE3_OUT_LEN]);
/* Forces the portable code path (tests compare it with the SIMD ones). */
ST_INTERNAL void st_blake3_set_simd(st_blake3 *h, int level);
/* The best SIMD level this CPU supports: 0 portable, 1 AVX2, 2 AVX-512. */
ST_INTERNAL int st_blake3_simd_level(void);

#endif
