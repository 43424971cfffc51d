/*
 * BLAKE3 hash mode, written from the specification (the BLAKE3 paper,
 * section 2: compression function, chunk chaining, binary tree with the
 * CHUNK_START / CHUNK_END / PARENT / ROOT flags). Debian ships no C
 * library for it.
 *
 * Speed comes from hashing many whole chunks at once: with AVX2 eight
 * chunks (one per 32-bit lane), with AVX-512 sixteen. Chunks are
 * independent until their chaining values meet in parent nodes, which are
 * compressed one at a time (one parent per chunk, against 16 block
 * compressions per chunk). The instruction sets are picked at run time.
 *
 * Streaming follows the spec's reference structure: a chunk's chaining
 * value is pushed on the subtree stack only when more input is known to
 * follow, so the last chunk (and the parents above it) can still be
 * compressed with the ROOT flag at the end.
 */
#include "sd/blake3.h"

#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ST_B3_X86 1
#include <immintrin.h>
#endif

enum {
    CHUNK_START = 1u << 0,
    CHUNK_END = 1u << 1,
    PARENT = 1u << 2,
    ROOT = 1u << 3,
};

/* The IV is SHA-256's. */
static const uint32_t IV[8] = {0x6A09E667u, 0xBB67AE85u, 0x3C6EF372u, 0xA54FF53Au,
                               0x510E527Fu, 0x9B05688Cu, 0x1F83D9ABu, 0x5BE0CD19u};

/* Message word order for each of the 7 rounds: the spec's permutation
 * (2,6,3,10,7,0,4,13,1,11,12,5,9,14,15,8) applied r times. */
static const uint8_t SCHEDULE[7][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8},
    {3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1},
    {10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6},
    {12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4},
    {9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7},
    {11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13},
};

/* One round with the message words of round r, and all seven rounds. The
 * schedule indices are constants after expansion, so the message stays in
 * registers. */
#define ROUND(G, r)                                                           \
    do {                                                                      \
        G(0, 4, 8, 12, m[SCHEDULE[r][0]], m[SCHEDULE[r][1]]);                 \
        G(1, 5, 9, 13, m[SCHEDULE[r][2]], m[SCHEDULE[r][3]]);                 \
        G(2, 6, 10, 14, m[SCHEDULE[r][4]], m[SCHEDULE[r][5]]);                \
        G(3, 7, 11, 15, m[SCHEDULE[r][6]], m[SCHEDULE[r][7]]);                \
        G(0, 5, 10, 15, m[SCHEDULE[r][8]], m[SCHEDULE[r][9]]);                \
        G(1, 6, 11, 12, m[SCHEDULE[r][10]], m[SCHEDULE[r][11]]);              \
        G(2, 7, 8, 13, m[SCHEDULE[r][12]], m[SCHEDULE[r][13]]);               \
        G(3, 4, 9, 14, m[SCHEDULE[r][14]], m[SCHEDULE[r][15]]);               \
    } while (0)
#define ROUNDS(G)                                                             \
    do {                                                                      \
        ROUND(G, 0); ROUND(G, 1); ROUND(G, 2); ROUND(G, 3);                   \
        ROUND(G, 4); ROUND(G, 5); ROUND(G, 6);                                \
    } while (0)

static inline uint32_t load32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void store32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t rotr32(uint32_t x, unsigned n)
{
    return (x >> n) | (x << (32 - n));
}

#define G(a, b, c, d, x, y)                                                   \
    do {                                                                      \
        v[a] = v[a] + v[b] + (x);                                             \
        v[d] = rotr32(v[d] ^ v[a], 16);                                       \
        v[c] = v[c] + v[d];                                                   \
        v[b] = rotr32(v[b] ^ v[c], 12);                                       \
        v[a] = v[a] + v[b] + (y);                                             \
        v[d] = rotr32(v[d] ^ v[a], 8);                                        \
        v[c] = v[c] + v[d];                                                   \
        v[b] = rotr32(v[b] ^ v[c], 7);                                        \
    } while (0)

/* The compression function; leaves all 16 state words in v. */
static void compress(const uint32_t cv[8], const uint8_t block[64], uint8_t block_len,
                     uint64_t counter, uint8_t flags, uint32_t v[16])
{
    uint32_t m[16];
    for (int i = 0; i < 16; i++)
        m[i] = load32(block + 4 * i);
    memcpy(v, cv, 8 * sizeof(uint32_t));
    v[8] = IV[0];
    v[9] = IV[1];
    v[10] = IV[2];
    v[11] = IV[3];
    v[12] = (uint32_t)counter;
    v[13] = (uint32_t)(counter >> 32);
    v[14] = block_len;
    v[15] = flags;
    ROUNDS(G);
    for (int i = 0; i < 8; i++) {
        v[i] ^= v[i + 8];
        v[i + 8] ^= cv[i];
    }
}

/* Compresses in place, keeping the new chaining value (first 8 words). */
static void compress_cv(uint32_t cv[8], const uint8_t block[64], uint8_t block_len,
                        uint64_t counter, uint8_t flags)
{
    uint32_t v[16];
    compress(cv, block, block_len, counter, flags, v);
    memcpy(cv, v, 8 * sizeof(uint32_t));
}

/* Chaining value of one whole 1024-byte chunk. */
static void hash_chunk_portable(const uint8_t *in, const uint32_t key[8], uint64_t counter,
                                uint32_t out[8])
{
    memcpy(out, key, 8 * sizeof(uint32_t));
    for (int b = 0; b < 16; b++) {
        uint8_t flags = (uint8_t)((b == 0 ? CHUNK_START : 0) | (b == 15 ? CHUNK_END : 0));
        compress_cv(out, in + 64 * b, 64, counter, flags);
    }
}

#ifdef ST_B3_X86
/* ---- AVX2: eight chunks, one per 32-bit lane ---- */

#define B3_AVX2 __attribute__((target("avx2")))

B3_AVX2 static inline __m256i rot16_256(__m256i x)
{
    const __m256i m = _mm256_set_epi8(13, 12, 15, 14, 9, 8, 11, 10, 5, 4, 7, 6, 1, 0, 3, 2,
                                      13, 12, 15, 14, 9, 8, 11, 10, 5, 4, 7, 6, 1, 0, 3, 2);
    return _mm256_shuffle_epi8(x, m);
}

B3_AVX2 static inline __m256i rot8_256(__m256i x)
{
    const __m256i m = _mm256_set_epi8(12, 15, 14, 13, 8, 11, 10, 9, 4, 7, 6, 5, 0, 3, 2, 1,
                                      12, 15, 14, 13, 8, 11, 10, 9, 4, 7, 6, 5, 0, 3, 2, 1);
    return _mm256_shuffle_epi8(x, m);
}

B3_AVX2 static inline __m256i rot12_256(__m256i x)
{
    return _mm256_or_si256(_mm256_srli_epi32(x, 12), _mm256_slli_epi32(x, 20));
}

B3_AVX2 static inline __m256i rot7_256(__m256i x)
{
    return _mm256_or_si256(_mm256_srli_epi32(x, 7), _mm256_slli_epi32(x, 25));
}

#define G256(a, b, c, d, x, y)                                                \
    do {                                                                      \
        v[a] = _mm256_add_epi32(_mm256_add_epi32(v[a], v[b]), (x));           \
        v[d] = rot16_256(_mm256_xor_si256(v[d], v[a]));                       \
        v[c] = _mm256_add_epi32(v[c], v[d]);                                  \
        v[b] = rot12_256(_mm256_xor_si256(v[b], v[c]));                       \
        v[a] = _mm256_add_epi32(_mm256_add_epi32(v[a], v[b]), (y));           \
        v[d] = rot8_256(_mm256_xor_si256(v[d], v[a]));                        \
        v[c] = _mm256_add_epi32(v[c], v[d]);                                  \
        v[b] = rot7_256(_mm256_xor_si256(v[b], v[c]));                        \
    } while (0)

/* Transposes 8 rows of 8 words: afterwards r[w] holds word w of each row. */
B3_AVX2 static inline void transpose8(__m256i r[8])
{
    __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]), t5 = _mm256_unpackhi_epi32(r[4], r[5]);
    __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]), t7 = _mm256_unpackhi_epi32(r[6], r[7]);
    __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
    __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
    r[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
    r[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
    r[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
    r[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
    r[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
    r[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
    r[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
    r[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
}

/* The 16 message words of block b of 8 inputs `stride` bytes apart, one
 * input per lane. */
B3_AVX2 static inline void load_msg8(const uint8_t *in, size_t stride, int b, __m256i m[16])
{
    for (int j = 0; j < 8; j++) {
        const uint8_t *p = in + (size_t)j * stride + 64 * (size_t)b;
        m[j] = _mm256_loadu_si256((const __m256i *)p);
        m[8 + j] = _mm256_loadu_si256((const __m256i *)(p + 32));
    }
    transpose8(m);
    transpose8(m + 8);
}

/* Hashes 8 inputs of `blocks` 64-byte blocks each, `stride` bytes apart:
 * whole chunks (stride 1024, 16 blocks, counters counter+j, CHUNK_START and
 * CHUNK_END on the first and last block) or parent nodes (stride 64, one
 * block, counter 0, PARENT). */
B3_AVX2 static void hash8_avx2(const uint8_t *in, size_t stride, int blocks,
                               const uint32_t key[8], uint64_t counter, int inc,
                               uint8_t flags, uint8_t fstart, uint8_t fend,
                               uint32_t out[8][8])
{
    __m256i h[8], m[16], v[16];
    for (int i = 0; i < 8; i++)
        h[i] = _mm256_set1_epi32((int)key[i]);
    uint32_t lo[8], hi[8];
    for (int j = 0; j < 8; j++) {
        uint64_t c = counter + (inc ? (uint64_t)j : 0);
        lo[j] = (uint32_t)c;
        hi[j] = (uint32_t)(c >> 32);
    }
    const __m256i clo = _mm256_loadu_si256((const __m256i *)lo);
    const __m256i chi = _mm256_loadu_si256((const __m256i *)hi);
    for (int b = 0; b < blocks; b++) {
        load_msg8(in, stride, b, m);
        uint32_t f = flags | (b == 0 ? fstart : 0) | (b == blocks - 1 ? fend : 0);
        for (int i = 0; i < 8; i++)
            v[i] = h[i];
        v[8] = _mm256_set1_epi32((int)IV[0]);
        v[9] = _mm256_set1_epi32((int)IV[1]);
        v[10] = _mm256_set1_epi32((int)IV[2]);
        v[11] = _mm256_set1_epi32((int)IV[3]);
        v[12] = clo;
        v[13] = chi;
        v[14] = _mm256_set1_epi32(64);
        v[15] = _mm256_set1_epi32((int)f);
        ROUNDS(G256);
        for (int i = 0; i < 8; i++)
            h[i] = _mm256_xor_si256(v[i], v[i + 8]);
    }
    transpose8(h); /* h[j] is now chunk j's chaining value */
    for (int j = 0; j < 8; j++)
        _mm256_storeu_si256((__m256i *)out[j], h[j]);
}

/* ---- AVX-512: sixteen chunks ---- */

#define B3_AVX512 __attribute__((target("avx512f,avx2")))

#define G512(a, b, c, d, x, y)                                                \
    do {                                                                      \
        v[a] = _mm512_add_epi32(_mm512_add_epi32(v[a], v[b]), (x));           \
        v[d] = _mm512_ror_epi32(_mm512_xor_si512(v[d], v[a]), 16);            \
        v[c] = _mm512_add_epi32(v[c], v[d]);                                  \
        v[b] = _mm512_ror_epi32(_mm512_xor_si512(v[b], v[c]), 12);            \
        v[a] = _mm512_add_epi32(_mm512_add_epi32(v[a], v[b]), (y));           \
        v[d] = _mm512_ror_epi32(_mm512_xor_si512(v[d], v[a]), 8);             \
        v[c] = _mm512_add_epi32(v[c], v[d]);                                  \
        v[b] = _mm512_ror_epi32(_mm512_xor_si512(v[b], v[c]), 7);             \
    } while (0)

/* As hash8_avx2, for 16 inputs. */
B3_AVX512 static void hash16_avx512(const uint8_t *in, size_t stride, int blocks,
                                    const uint32_t key[8], uint64_t counter, int inc,
                                    uint8_t flags, uint8_t fstart, uint8_t fend,
                                    uint32_t out[16][8])
{
    __m512i h[8], m[16], v[16];
    for (int i = 0; i < 8; i++)
        h[i] = _mm512_set1_epi32((int)key[i]);
    uint32_t lo[16], hi[16];
    for (int j = 0; j < 16; j++) {
        uint64_t c = counter + (inc ? (uint64_t)j : 0);
        lo[j] = (uint32_t)c;
        hi[j] = (uint32_t)(c >> 32);
    }
    const __m512i clo = _mm512_loadu_si512(lo);
    const __m512i chi = _mm512_loadu_si512(hi);
    for (int b = 0; b < blocks; b++) {
        /* Two 8-lane transposes (inputs 0-7 and 8-15), joined per word. */
        __m256i a[16], c[16];
        load_msg8(in, stride, b, a);
        load_msg8(in + 8 * stride, stride, b, c);
        for (int w = 0; w < 16; w++)
            m[w] = _mm512_inserti64x4(_mm512_castsi256_si512(a[w]), c[w], 1);
        uint32_t f = flags | (b == 0 ? fstart : 0) | (b == blocks - 1 ? fend : 0);
        for (int i = 0; i < 8; i++)
            v[i] = h[i];
        v[8] = _mm512_set1_epi32((int)IV[0]);
        v[9] = _mm512_set1_epi32((int)IV[1]);
        v[10] = _mm512_set1_epi32((int)IV[2]);
        v[11] = _mm512_set1_epi32((int)IV[3]);
        v[12] = clo;
        v[13] = chi;
        v[14] = _mm512_set1_epi32(64);
        v[15] = _mm512_set1_epi32((int)f);
        ROUNDS(G512);
        for (int i = 0; i < 8; i++)
            h[i] = _mm512_xor_si512(v[i], v[i + 8]);
    }
    uint32_t words[8][16];
    for (int i = 0; i < 8; i++)
        _mm512_storeu_si512(words[i], h[i]);
    for (int j = 0; j < 16; j++)
        for (int i = 0; i < 8; i++)
            out[j][i] = words[i][j];
}
#endif /* ST_B3_X86 */

int st_blake3_simd_level(void)
{
#ifdef ST_B3_X86
    /* libgcc / compiler-rt fill in the CPU model before main(); the
     * answer includes whether the OS saves the wide registers. */
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2"))
        return 2;
    if (__builtin_cpu_supports("avx2"))
        return 1;
#endif
    return 0;
}

static void parent_cv(const st_blake3 *h, const uint32_t left[8], const uint32_t right[8],
                      uint32_t out[8])
{
    uint8_t block[64];
    for (int i = 0; i < 8; i++) {
        store32(block + 4 * i, left[i]);
        store32(block + 32 + 4 * i, right[i]);
    }
    uint32_t cv[8];
    memcpy(cv, h->key, sizeof cv);
    compress_cv(cv, block, 64, 0, PARENT);
    memcpy(out, cv, sizeof cv);
}

/* Pushes the chaining value of a complete subtree that more input is known
 * to follow, then merges until the stack holds one entry per set bit of
 * total_chunks (the chunks covered so far): the binary decomposition of a
 * tree whose left subtrees are complete, as the spec builds it. */
static void push_cv(st_blake3 *h, const uint32_t cv[8], uint64_t total_chunks)
{
    memcpy(h->stack[h->stack_len], cv, 8 * sizeof(uint32_t));
    h->stack_len++;
    while (h->stack_len > (unsigned)__builtin_popcountll(total_chunks)) {
        h->stack_len--;
        parent_cv(h, h->stack[h->stack_len - 1], h->stack[h->stack_len],
                  h->stack[h->stack_len - 1]);
    }
}

/* Chaining values of n whole chunks starting at chunk `counter`. */
static void hash_chunks(const st_blake3 *h, const uint8_t *in, size_t n, uint64_t counter,
                        uint32_t (*out)[8])
{
    size_t i = 0;
#ifdef ST_B3_X86
    if (h->simd >= 2)
        for (; i + 16 <= n; i += 16)
            hash16_avx512(in + i * ST_BLAKE3_CHUNK_LEN, ST_BLAKE3_CHUNK_LEN, 16, h->key,
                          counter + i, 1, 0, CHUNK_START, CHUNK_END, out + i);
    if (h->simd >= 1)
        for (; i + 8 <= n; i += 8)
            hash8_avx2(in + i * ST_BLAKE3_CHUNK_LEN, ST_BLAKE3_CHUNK_LEN, 16, h->key,
                       counter + i, 1, 0, CHUNK_START, CHUNK_END, out + i);
#endif
    for (; i < n; i++)
        hash_chunk_portable(in + i * ST_BLAKE3_CHUNK_LEN, h->key, counter + i, out[i]);
}

/* Replaces 2n chaining values (in pairs, left then right) by their n
 * parents, in place: parent i lands in cvs[i]. */
static void hash_parents(const st_blake3 *h, uint32_t (*cvs)[8], size_t n)
{
    size_t i = 0;
#ifdef ST_B3_X86
    /* On x86 the words in memory are already the little-endian block. The
     * kernels load all their inputs before storing, and parent i only
     * overwrites entries at or below 2i, already consumed. */
    if (h->simd >= 2)
        for (; i + 16 <= n; i += 16)
            hash16_avx512((const uint8_t *)cvs[2 * i], 64, 1, h->key, 0, 0, PARENT, 0, 0,
                          cvs + i);
    if (h->simd >= 1)
        for (; i + 8 <= n; i += 8)
            hash8_avx2((const uint8_t *)cvs[2 * i], 64, 1, h->key, 0, 0, PARENT, 0, 0,
                       cvs + i);
#endif
    for (; i < n; i++)
        parent_cv(h, cvs[2 * i], cvs[2 * i + 1], cvs[i]);
}

void st_blake3_init(st_blake3 *h)
{
    memset(h, 0, sizeof *h);
    memcpy(h->key, IV, sizeof h->key);
    memcpy(h->cv, IV, sizeof h->cv);
    h->simd = st_blake3_simd_level();
}

void st_blake3_set_simd(st_blake3 *h, int level)
{
    int best = st_blake3_simd_level();
    h->simd = level < best ? level : best;
}

static size_t chunk_bytes(const st_blake3 *h)
{
    return (size_t)h->blocks_compressed * ST_BLAKE3_BLOCK_LEN + h->buf_len;
}

/* Finishes the current (full) chunk into the tree and starts the next. */
static void finish_chunk(st_blake3 *h)
{
    uint8_t flags = (uint8_t)(CHUNK_END | (h->blocks_compressed == 0 ? CHUNK_START : 0));
    compress_cv(h->cv, h->buf, h->buf_len, h->chunk_counter, flags);
    push_cv(h, h->cv, h->chunk_counter + 1);
    h->chunk_counter++;
    memcpy(h->cv, h->key, sizeof h->cv);
    h->buf_len = 0;
    h->blocks_compressed = 0;
}

void st_blake3_update(st_blake3 *h, const void *data, size_t len)
{
    const uint8_t *p = data;
    enum { BATCH = 64 };
    uint32_t cvs[BATCH][8];
    while (len > 0) {
        if (chunk_bytes(h) == ST_BLAKE3_CHUNK_LEN)
            finish_chunk(h); /* more input follows, so it is not the root */
        if (chunk_bytes(h) == 0 && len > ST_BLAKE3_CHUNK_LEN) {
            /* Whole chunks, keeping at least one byte back for the chunk
             * state: the last chunk of the input may be the root. */
            size_t n = (len - 1) / ST_BLAKE3_CHUNK_LEN;
            if (n > BATCH)
                n = BATCH;
            hash_chunks(h, p, n, h->chunk_counter, cvs);
            if (n == BATCH && h->chunk_counter % BATCH == 0) {
                /* An aligned complete subtree: reduce it here, many
                 * parents at a time, and push only its root. */
                for (size_t m = BATCH / 2; m >= 1; m /= 2)
                    hash_parents(h, cvs, m);
                h->chunk_counter += BATCH;
                push_cv(h, cvs[0], h->chunk_counter);
            } else {
                for (size_t i = 0; i < n; i++) {
                    h->chunk_counter++;
                    push_cv(h, cvs[i], h->chunk_counter);
                }
            }
            p += n * ST_BLAKE3_CHUNK_LEN;
            len -= n * ST_BLAKE3_CHUNK_LEN;
            continue;
        }
        /* Feed the chunk state block by block; a full block is compressed
         * only when more bytes of the same chunk follow. */
        if (h->buf_len == ST_BLAKE3_BLOCK_LEN) {
            uint8_t flags = h->blocks_compressed == 0 ? CHUNK_START : 0;
            compress_cv(h->cv, h->buf, ST_BLAKE3_BLOCK_LEN, h->chunk_counter, flags);
            h->blocks_compressed++;
            h->buf_len = 0;
        }
        size_t take = ST_BLAKE3_BLOCK_LEN - h->buf_len;
        if (take > len)
            take = len;
        memcpy(h->buf + h->buf_len, p, take);
        h->buf_len = (uint8_t)(h->buf_len + take);
        p += take;
        len -= take;
    }
}

void st_blake3_final(const st_blake3 *h, uint8_t out[ST_BLAKE3_OUT_LEN])
{
    /* The pending output: the current chunk's last block... */
    uint32_t cv[8];
    uint8_t block[64];
    memcpy(cv, h->cv, sizeof cv);
    memset(block, 0, sizeof block);
    memcpy(block, h->buf, h->buf_len);
    uint8_t block_len = h->buf_len;
    uint64_t counter = h->chunk_counter;
    uint8_t flags = (uint8_t)(CHUNK_END | (h->blocks_compressed == 0 ? CHUNK_START : 0));
    /* ...then parents up the stack, each with the one below as right child. */
    for (int i = h->stack_len; i > 0; i--) {
        compress_cv(cv, block, block_len, counter, flags);
        for (int k = 0; k < 8; k++) {
            store32(block + 4 * k, h->stack[i - 1][k]);
            store32(block + 32 + 4 * k, cv[k]);
        }
        memcpy(cv, h->key, sizeof cv);
        block_len = 64;
        counter = 0;
        flags = PARENT;
    }
    /* The root: output block 0, so the counter is 0. */
    uint32_t v[16];
    compress(cv, block, block_len, 0, (uint8_t)(flags | ROOT), v);
    for (int i = 0; i < 8; i++)
        store32(out + 4 * i, v[i]);
}
