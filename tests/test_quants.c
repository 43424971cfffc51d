/* GGUF quantization kernels (lib/gguf/quants.c, quants_simd.c):
 *  - bytes identical to ggml's reference quantizers, and floats identical
 *    to ggml's dequantizers, on the inputs of tests/quants_inputs.h, against
 *    the outputs ggml produced (tests/data/quants/expected.txt);
 *  - the SIMD and portable paths, and every thread count, give the same
 *    bytes (also on inputs the expected file does not cover);
 *  - quantize -> dequantize error within bounds per type;
 *  - the type table and argument checks. */
#include "gguf/quants.h"
#include "quants_inputs.h"
#include "test.h"

#include <math.h>
#include <openssl/sha.h>
#include <stdint.h>

#define NTYPES_ALL 43

static const char *data_path(void)
{
    const char *d = getenv("ST_QUANTS_DATA");
    return d && *d ? d : "tests/data/quants/expected.txt";
}

static int type_by_name(const char *name)
{
    for (int t = 0; t < NTYPES_ALL; t++) {
        const char *n = st_ggml_type_name(t);
        if (n && !strcmp(n, name))
            return t;
    }
    return -1;
}

static int dist_by_name(const char *name)
{
    for (int d = 0; d < QI_NDIST; d++)
        if (!strcmp(qi_dist_names[d], name))
            return d;
    return -1;
}

static void to_hex(const unsigned char *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", p[i]);
    out[2 * n] = 0;
}

static void sha_hex(const void *p, size_t n, char out[65])
{
    unsigned char md[32];
    SHA256(p, n, md);
    to_hex(md, 32, out);
}

/* The tricky distribution's bytes rest on how x86 converts out-of-range
 * floats to integers, as ggml's build did. */
static int tricky_comparable(void)
{
#if defined(__x86_64__) || defined(__i386__)
    return 1;
#else
    return 0;
#endif
}

/* The special distribution has NaNs with different payloads: where an
 * operation meets two, the payload of the operand the compiler put first
 * propagates, and the k-quants turn payload bits into levels. ggml's bytes
 * there are those of its gcc build; the library's match them when gcc
 * builds it too. */
static int special_comparable(void)
{
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(__clang__)
    return 1;
#else
    return 0;
#endif
}

static int dist_comparable(int dist)
{
    if (dist == QI_SPECIAL)
        return special_comparable();
    if (dist == QI_TRICKY)
        return tricky_comparable();
    return 1;
}

/* Quantizes with st_ggml_quantize (default path, given threads) and with
 * the portable path block by block; both must agree. Returns the bytes
 * (caller frees) or NULL. */
static unsigned char *quantize_both(int type, const float *x, uint64_t nrows, uint64_t nper,
                                    unsigned threads, size_t *len)
{
    uint64_t rb = st_ggml_row_bytes(type, nper);
    size_t total = (size_t)(rb * nrows);
    unsigned char *a = malloc(total + 1), *b = malloc(total + 1);
    if (!a || !b) {
        free(a);
        free(b);
        return NULL;
    }
    st_error err;
    int rc = st_ggml_quantize(type, x, a, nrows, nper, threads, &err);
    CHECK(rc == ST_OK, "%s: %s", st_ggml_type_name(type), err.message);
    st_quant_blocks(type, x, b, (size_t)(nrows * nper / st_ggml_block_elements(type)),
                    ST_QUANT_PORTABLE);
    CHECK(!memcmp(a, b, total), "%s: SIMD/threaded bytes differ from the portable path",
          st_ggml_type_name(type));
    free(b);
    *len = total;
    return a;
}

static void test_expected(void)
{
    FILE *f = fopen(data_path(), "r");
    CHECK(f != NULL, "cannot open %s", data_path());
    if (!f)
        return;
    char line[8192];
    int lines = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n')
            continue;
        char tname[16], dname[32], want[4200];
        unsigned long long seed, a, b;
        if (sscanf(line, "quant %15s %31s %llu %llu %llu %64s", tname, dname, &seed, &a, &b, want) ==
            6) {
            int type = type_by_name(tname), dist = dist_by_name(dname);
            CHECK(type >= 0 && dist >= 0, "bad line: %s", line);
            if (type < 0 || dist < 0 || !dist_comparable(dist))
                continue;
            size_t n = (size_t)(a * b);
            float *x = malloc(n * sizeof(float));
            qi_fill(x, n, dist, seed);
            size_t len;
            unsigned char *y = quantize_both(type, x, a, b, 0, &len);
            char got[65];
            sha_hex(y, len, got);
            CHECK(!strcmp(got, want), "quant %s %s: sha256 %s, ggml %s", tname, dname, got, want);
            free(x);
            free(y);
            lines++;
        } else if (sscanf(line, "qbytes %15s %31s %llu %llu %4199s", tname, dname, &seed, &a, want) ==
                   5) {
            int type = type_by_name(tname), dist = dist_by_name(dname);
            CHECK(type >= 0 && dist >= 0, "bad line: %s", line);
            if (type < 0 || dist < 0)
                continue;
            /* the first `a` elements of the 64 x 1024 array the generator filled */
            size_t n = 64 * 1024;
            float *x = malloc(n * sizeof(float));
            qi_fill(x, n, dist, seed);
            size_t len;
            unsigned char *y = quantize_both(type, x, 1, a, 1, &len);
            char *got = malloc(2 * len + 1);
            to_hex(y, len, got);
            CHECK(!strcmp(got, want), "qbytes %s %s:\n got  %s\n ggml %s", tname, dname, got,
                  want);
            free(got);
            free(x);
            free(y);
            lines++;
        } else if (sscanf(line, "roundtrip %15s %31s %llu %llu %64s", tname, dname, &seed, &a,
                          want) == 5) {
            int type = type_by_name(tname), dist = dist_by_name(dname);
            CHECK(type >= 0 && dist >= 0, "bad line: %s", line);
            if (type < 0 || dist < 0 || !dist_comparable(dist))
                continue;
            float *x = malloc(a * sizeof(float)), *z = malloc(a * sizeof(float));
            qi_fill(x, a, dist, seed);
            size_t len;
            unsigned char *y = quantize_both(type, x, a / 1024, 1024, 2, &len);
            st_error err;
            CHECK(st_ggml_dequantize(type, y, z, a, 0, &err) == ST_OK, "%s", err.message);
            char got[65];
            sha_hex(z, a * sizeof(float), got);
            CHECK(!strcmp(got, want), "roundtrip %s %s: sha256 %s, ggml %s", tname, dname, got,
                  want);
            free(x);
            free(y);
            free(z);
            lines++;
        } else if (sscanf(line, "dequant %15s %llu %llu %64s", tname, &seed, &a, want) == 4) {
            int type = type_by_name(tname);
            CHECK(type >= 0, "bad line: %s", line);
            if (type < 0)
                continue;
            size_t nb = (size_t)(a / st_ggml_block_elements(type));
            size_t bytes = nb * st_ggml_block_bytes(type);
            unsigned char *raw = malloc(bytes);
            float *z = malloc(a * sizeof(float));
            qi_bytes(raw, bytes, seed);
            st_error err;
            CHECK(st_ggml_dequantize(type, raw, z, a, 3, &err) == ST_OK, "%s", err.message);
            char got[65];
            sha_hex(z, a * sizeof(float), got);
            CHECK(!strcmp(got, want), "dequant %s: sha256 %s, ggml %s", tname, got, want);
            free(raw);
            free(z);
            lines++;
        } else {
            CHECK(0, "unparsed line: %s", line);
        }
    }
    fclose(f);
    CHECK(lines >= 280, "only %d expected-output lines", lines);
}

/* Types st_ggml_quantize writes. */
static const int QTYPES[] = {ST_GGML_F32,  ST_GGML_F16,  ST_GGML_BF16, ST_GGML_Q4_0, ST_GGML_Q4_1,
                             ST_GGML_Q5_0, ST_GGML_Q5_1, ST_GGML_Q8_0, ST_GGML_Q2_K, ST_GGML_Q3_K,
                             ST_GGML_Q4_K, ST_GGML_Q5_K, ST_GGML_Q6_K};
#define NQ (sizeof QTYPES / sizeof QTYPES[0])

/* SIMD == portable on more inputs (every distribution, other seeds, odd
 * block counts so the vector kernels leave remainders), every thread
 * count. */
static void test_paths_agree(void)
{
    const size_t nper = 256 * 13; /* 13 k-blocks, 104 small blocks per row */
    const size_t nrows = 3;
    float *x = malloc(nrows * nper * sizeof(float));
    for (size_t ti = 0; ti < NQ; ti++) {
        int type = QTYPES[ti];
        for (int dist = 0; dist < QI_NDIST; dist++) {
            for (uint64_t seed = 2; seed < 4; seed++) {
                qi_fill(x, nrows * nper, dist, seed);
                size_t len1, len2;
                unsigned char *a = quantize_both(type, x, nrows, nper, 1, &len1);
                unsigned char *b = quantize_both(type, x, nrows, nper, 5, &len2);
                CHECK(a && b && len1 == len2 && !memcmp(a, b, len1), "%s %s: threads differ",
                      st_ggml_type_name(type), qi_dist_names[dist]);
                free(a);
                free(b);
            }
        }
    }
    /* groups scaled into and around the subnormal range, where the
     * scales' reciprocals overflow or lose precision */
    for (int round = 0; round < 8; round++) {
        qi_fill(x, nrows * nper, QI_OUTLIER, 50 + (uint64_t)round);
        qi_rng rs = {500 + (uint64_t)round};
        for (size_t g = 0; g < nrows * nper; g += 32) {
            float sc = 1.0f;
            for (int e = 100 + (int)(qi_next(&rs) % 50); e > 0; e--)
                sc *= 0.5f;
            for (size_t i = 0; i < 32; i++)
                x[g + i] *= sc;
        }
        for (size_t ti = 0; ti < NQ; ti++) {
            size_t len;
            free(quantize_both(QTYPES[ti], x, nrows, nper, 1, &len));
        }
    }

    /* values drawn from a few that make ties and signed zeros: which
     * equal-magnitude value or which zero the scalar code meets first
     * decides the bytes, and the vector code must agree */
    static const float tricky[] = {0.0f, -0.0f, 1.0f, -1.0f, 0.5f, -0.5f, 1e-40f, -1e-40f,
                                   65504.0f, -3.0e38f, 3.0e38f, 1.17549435e-38f, 7.0f, -7.0f};
    qi_rng r = {77};
    for (int round = 0; round < 40; round++) {
        size_t ntr = sizeof tricky / sizeof tricky[0];
        size_t span = 1 + (size_t)(qi_next(&r) % ntr); /* how many of them to draw from */
        for (size_t i = 0; i < nrows * nper; i++)
            x[i] = tricky[(size_t)(qi_next(&r) % span)];
        for (size_t ti = 0; ti < NQ; ti++) {
            size_t len;
            unsigned char *a = quantize_both(QTYPES[ti], x, nrows, nper, 1, &len);
            free(a);
        }
    }
    free(x);
}

/* Quantize -> dequantize error: per 32-element group, |x - x'| is at most
 * a fraction of the group's range, per type (generous bounds: they catch a
 * wrong layout or scale, not a small loss of quality). */
static void test_error_bounds(void)
{
    const size_t n = 256 * 64;
    float *x = malloc(n * sizeof(float)), *z = malloc(n * sizeof(float));
    unsigned char *y = malloc(n * 4);
    struct {
        int type;
        double frac; /* of the 32-group's max |x| (k-quants: of the 256-block's) */
    } bounds[] = {
        {ST_GGML_F32, 0.0},       {ST_GGML_F16, 1.0 / 1024}, {ST_GGML_BF16, 1.0 / 128},
        {ST_GGML_Q8_0, 1.0 / 200}, {ST_GGML_Q5_0, 1.0 / 15},  {ST_GGML_Q5_1, 1.0 / 25},
        {ST_GGML_Q4_0, 1.0 / 7.5}, {ST_GGML_Q4_1, 1.0 / 12},  {ST_GGML_Q6_K, 1.0 / 40},
        {ST_GGML_Q5_K, 1.0 / 20},  {ST_GGML_Q4_K, 1.0 / 10},  {ST_GGML_Q3_K, 1.0 / 4},
        {ST_GGML_Q2_K, 1.0 / 2},
    };
    int dists[] = {QI_NORMAL, QI_UNIFORM, QI_OUTLIER, QI_HEAVY, QI_CONSTANT};
    for (size_t bi = 0; bi < sizeof bounds / sizeof bounds[0]; bi++) {
        int type = bounds[bi].type;
        size_t group = st_ggml_block_elements(type) == 256 ? 256 : 32;
        for (size_t di = 0; di < sizeof dists / sizeof dists[0]; di++) {
            qi_fill(x, n, dists[di], 7);
            st_error err;
            int ok = st_ggml_quantize(type, x, y, n / 1024, 1024, 0, &err) == ST_OK &&
                     st_ggml_dequantize(type, y, z, n, 0, &err) == ST_OK;
            CHECK(ok, "%s", err.message);
            double worst = 0;
            for (size_t g = 0; g < n; g += group) {
                double amax = 0;
                for (size_t i = 0; i < group; i++)
                    amax = fmax(amax, fabs((double)x[g + i]));
                for (size_t i = 0; i < group; i++) {
                    double e = fabs((double)x[g + i] - (double)z[g + i]);
                    /* plus F16 scales' absolute resolution near zero (2^-24 times
                     * the largest level product) */
                    double lim = bounds[bi].frac * amax + 2e-4;
                    if (e > lim && e / (amax + 1e-37) > worst)
                        worst = e / (amax + 1e-37);
                    if (!isfinite(z[g + i]))
                        worst = INFINITY;
                }
            }
            CHECK(worst == 0, "%s %s: error %.4g of the group's max over the bound %.4g",
                  st_ggml_type_name(type), qi_dist_names[dists[di]], worst, bounds[bi].frac);
        }
    }
    free(x);
    free(z);
    free(y);
}

/* Dequantizing random bytes: finite unless a scale is NaN/Inf (checked
 * against ggml's floats in test_expected); here: no crash, the same with
 * any thread count, finite where every half in the block is finite. */
static void test_dequant_random(void)
{
    const int types[] = {ST_GGML_Q4_0, ST_GGML_Q4_1, ST_GGML_Q5_0, ST_GGML_Q5_1, ST_GGML_Q8_0,
                         ST_GGML_Q8_1, ST_GGML_Q2_K, ST_GGML_Q3_K, ST_GGML_Q4_K, ST_GGML_Q5_K,
                         ST_GGML_Q6_K, ST_GGML_F16,  ST_GGML_BF16};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        int type = types[ti];
        size_t nb = 1000, be = st_ggml_block_elements(type), bb = st_ggml_block_bytes(type);
        if (be == 1)
            nb = 100000;
        unsigned char *b = malloc(nb * bb);
        float *z1 = malloc(nb * be * 4), *z2 = malloc(nb * be * 4);
        qi_bytes(b, nb * bb, 99 + (uint64_t)type);
        st_error err;
        CHECK(st_ggml_dequantize(type, b, z1, nb * be, 1, &err) == ST_OK, "%s", err.message);
        CHECK(st_ggml_dequantize(type, b, z2, nb * be, 4, &err) == ST_OK, "%s", err.message);
        CHECK(!memcmp(z1, z2, nb * be * 4), "%s: threads differ", st_ggml_type_name(type));
        free(b);
        free(z1);
        free(z2);
    }
    /* blocks with finite scales dequantize to finite values */
    unsigned char blk[210];
    float z[256];
    for (int k = 0; k < 200; k++) {
        qi_bytes(blk, sizeof blk, 1000 + (uint64_t)k);
        blk[208] = 0x3C; /* q6_K d = some finite half */
        blk[209] = (uint8_t)(blk[209] & 0x7B);
        CHECK(st_ggml_dequantize(ST_GGML_Q6_K, blk, z, 256, 1, NULL) == ST_OK);
        int finite = 1;
        for (int i = 0; i < 256; i++)
            finite &= isfinite(z[i]) != 0;
        CHECK(finite, "q6_K with a finite scale gave a non-finite value");
    }
}

static void test_table_and_args(void)
{
    CHECK(!strcmp(st_ggml_type_name(ST_GGML_Q4_K), "q4_K"));
    CHECK(!strcmp(st_ggml_type_name(ST_GGML_BF16), "bf16"));
    CHECK(!strcmp(st_ggml_type_name(ST_GGML_IQ2_XXS), "iq2_xxs"));
    CHECK(st_ggml_type_name(4) == NULL && st_ggml_type_name(31) == NULL);
    CHECK(st_ggml_type_name(-1) == NULL && st_ggml_type_name(43) == NULL);
    CHECK_EQ_INT(st_ggml_block_elements(ST_GGML_Q8_0), 32);
    CHECK_EQ_INT(st_ggml_block_bytes(ST_GGML_Q8_0), 34);
    CHECK_EQ_INT(st_ggml_block_bytes(ST_GGML_Q2_K), 84);
    CHECK_EQ_INT(st_ggml_block_bytes(ST_GGML_Q3_K), 110);
    CHECK_EQ_INT(st_ggml_block_bytes(ST_GGML_Q4_K), 144);
    CHECK_EQ_INT(st_ggml_block_bytes(ST_GGML_Q5_K), 176);
    CHECK_EQ_INT(st_ggml_block_bytes(ST_GGML_Q6_K), 210);
    CHECK_EQ_INT(st_ggml_block_bytes(ST_GGML_Q8_K), 292);
    CHECK_EQ_INT(st_ggml_block_bytes(ST_GGML_IQ4_XS), 136);
    CHECK_EQ_INT(st_ggml_block_bytes(ST_GGML_IQ1_S), 50);
    CHECK_EQ_INT(st_ggml_block_bytes(ST_GGML_TQ1_0), 54);
    CHECK_EQ_INT(st_ggml_block_elements(ST_GGML_F16), 1);
    CHECK_EQ_INT(st_ggml_block_elements(5), 0);
    CHECK_EQ_INT(st_ggml_block_bytes(99), 0);
    CHECK_EQ_INT(st_ggml_row_bytes(ST_GGML_Q4_K, 4096), 16 * 144);
    CHECK_EQ_INT(st_ggml_row_bytes(ST_GGML_Q4_K, 4000), 0);
    CHECK_EQ_INT(st_ggml_row_bytes(ST_GGML_F32, 7), 28);
    CHECK_EQ_INT(st_ggml_row_bytes(ST_GGML_F32, UINT64_MAX / 2), 0);
    int nq = 0;
    for (int t = -2; t < 50; t++)
        nq += st_ggml_can_quantize(t);
    CHECK_EQ_INT(nq, (int)NQ);
    for (size_t i = 0; i < NQ; i++)
        CHECK(st_ggml_can_quantize(QTYPES[i]) && st_ggml_can_dequantize(QTYPES[i]));
    CHECK(!st_ggml_can_quantize(ST_GGML_Q8_K) && st_ggml_can_dequantize(ST_GGML_Q8_K));
    CHECK(!st_ggml_can_quantize(ST_GGML_IQ2_XS) && !st_ggml_can_dequantize(ST_GGML_IQ2_XS));

    float x[256] = {0};
    unsigned char y[512];
    st_error err;
    CHECK_EQ_INT(st_ggml_quantize(ST_GGML_Q4_K, x, y, 1, 128, 1, &err), ST_E_ARG);
    CHECK(strstr(err.message, "q4_K") != NULL, "%s", err.message);
    CHECK_EQ_INT(st_ggml_quantize(4, x, y, 1, 32, 1, &err), ST_E_ARG);
    CHECK_EQ_INT(st_ggml_quantize(ST_GGML_IQ2_XXS, x, y, 1, 256, 1, &err), ST_E_UNSUPPORTED);
    CHECK_EQ_INT(st_ggml_quantize(ST_GGML_Q8_0, NULL, y, 1, 32, 1, &err), ST_E_ARG);
    CHECK_EQ_INT(st_ggml_quantize(ST_GGML_Q8_0, x, y, UINT64_MAX, 64, 1, &err), ST_E_OVERFLOW);
    CHECK_EQ_INT(st_ggml_quantize(ST_GGML_Q8_0, x, y, 1ull << 40, 1ull << 30, 1, &err),
                 ST_E_OVERFLOW);
    CHECK_EQ_INT(st_ggml_quantize(ST_GGML_Q8_0, NULL, NULL, 0, 32, 1, &err), ST_OK);
    CHECK_EQ_INT(st_ggml_dequantize(ST_GGML_Q8_0, y, x, 33, 1, &err), ST_E_ARG);
    CHECK_EQ_INT(st_ggml_dequantize(ST_GGML_IQ4_NL, y, x, 32, 1, &err), ST_E_UNSUPPORTED);
    CHECK_EQ_INT(st_ggml_dequantize(ST_GGML_Q8_0, y, NULL, 32, 1, &err), ST_E_ARG);
    CHECK_EQ_INT(st_ggml_dequantize(ST_GGML_Q8_0, y, x, 0, 1, &err), ST_OK);
}

/* ggml's F32 -> F16 equals round-to-nearest-even with NaN -> 0x7E00|sign,
 * checked on a spread of bit patterns against an integer formulation. */
static uint16_t rne_f16(uint32_t w)
{
    uint32_t sign = (w >> 16) & 0x8000u, a = w & 0x7FFFFFFFu;
    if (a > 0x7F800000u)
        return (uint16_t)(sign | 0x7E00u);
    if (a >= 0x477FF000u) /* rounds to >= 65536 */
        return (uint16_t)(sign | 0x7C00u);
    if (a < 0x33000001u) /* <= 2^-25: rounds to 0 */
        return (uint16_t)sign;
    int e = (int)(a >> 23) - 127;
    uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
    int shift = e < -14 ? 13 + (-14 - e) : 13;
    uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1)))
        q++;
    uint32_t h = e < -14 ? q : (((uint32_t)(e + 15) << 10) + (q - 0x400u));
    return (uint16_t)(sign | h);
}

static void test_half_conversions(void)
{
    qi_rng r = {42};
    int bad = 0;
    for (int i = 0; i < 2000000; i++) {
        uint32_t w = (uint32_t)qi_next(&r);
        if (i < 65536 * 4)
            w = (uint32_t)i << 14 | (w & 0x3FFF); /* every exponent/top-mantissa */
        float f;
        memcpy(&f, &w, 4);
        if (st_ggml_f32_to_f16(f) != rne_f16(w))
            bad++;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(st_ggml_f32_to_bf16(1.0f), 0x3F80);
    float nan;
    uint32_t nb = 0x7F800001u;
    memcpy(&nan, &nb, 4);
    CHECK_EQ_INT(st_ggml_f32_to_bf16(nan), 0x7FC0);
    CHECK_EQ_INT(st_ggml_f32_to_f16(nan), 0x7E00);
    CHECK_EQ_INT(st_ggml_f32_to_f16(-nan), 0xFE00);
    int ok = 1;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = st_ggml_f16_to_f32((uint16_t)h);
        if ((h & 0x7C00) == 0x7C00 && (h & 0x3FF))
            ok &= isnan(f) != 0;
        else
            ok &= st_ggml_f32_to_f16(f) == h;
    }
    CHECK(ok, "f16 -> f32 -> f16 not the identity");

    /* the F16 and BF16 "quantizers" (the F16 one through the dtype room's
     * SIMD conversion) on every exponent and top mantissa bits */
    size_t n = (size_t)1 << 20;
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        uint32_t w = (uint32_t)i << 12 | (uint32_t)(qi_next(&r) & 0xFFF);
        memcpy(&x[i], &w, 4);
    }
    size_t len;
    free(quantize_both(ST_GGML_F16, x, 1, n, 1, &len));
    free(quantize_both(ST_GGML_BF16, x, 1, n, 1, &len));
    unsigned char *h = quantize_both(ST_GGML_F16, x, 4, n / 4, 3, &len);
    int same = 1;
    for (size_t i = 0; i < n; i++)
        same &= (h[2 * i] | h[2 * i + 1] << 8) == st_ggml_f32_to_f16(x[i]);
    CHECK(same, "F16 quantization differs from ggml's conversion");
    /* F16 -> F32 of every half, both paths */
    uint16_t *hs = malloc(65536 * 2);
    float *f1 = malloc(65536 * 4), *f2 = malloc(65536 * 4);
    for (uint32_t i = 0; i < 65536; i++)
        hs[i] = (uint16_t)i;
    CHECK(st_ggml_dequantize(ST_GGML_F16, hs, f1, 65536, 1, NULL) == ST_OK);
    st_dequant_blocks(ST_GGML_F16, hs, f2, 65536, ST_QUANT_PORTABLE);
    CHECK(!memcmp(f1, f2, 65536 * 4), "F16 dequantization paths differ");
    free(hs);
    free(f1);
    free(f2);
    free(h);
    free(x);
}

typedef struct prog {
    int calls, stop_at;
    uint64_t last, total;
    int monotonic;
} prog;

static int on_progress(void *ctx, uint64_t done, uint64_t total)
{
    prog *p = ctx;
    p->calls++;
    if (done < p->last || done > total)
        p->monotonic = 0;
    p->last = done;
    p->total = total;
    return p->stop_at && p->calls >= p->stop_at;
}

static void test_progress(void)
{
    /* 3 pieces of 4 MiB and a bit: the last call reports everything */
    size_t nper = 4096, nrows = 800;
    size_t n = nper * nrows;
    float *x = malloc(n * sizeof(float));
    unsigned char *a = malloc(2 * n), *b = malloc(2 * n); /* q8_0: 34 bytes per 32 */
    qi_fill(x, n, QI_NORMAL, 5);
    prog p = {0, 0, 0, 0, 1};
    st_error err;
    CHECK(st_ggml_quantize_progress(ST_GGML_Q8_0, x, a, nrows, nper, 2, on_progress, &p, &err) ==
          ST_OK);
    CHECK(p.calls >= 1 && p.monotonic && p.last == n * 4 && p.total == n * 4, "%d calls, %llu/%llu",
          p.calls, (unsigned long long)p.last, (unsigned long long)p.total);
    CHECK(st_ggml_quantize(ST_GGML_Q8_0, x, b, nrows, nper, 1, &err) == ST_OK);
    CHECK(!memcmp(a, b, (size_t)st_ggml_row_bytes(ST_GGML_Q8_0, nper) * nrows));
    prog stop = {0, 1, 0, 0, 1};
    CHECK_EQ_INT(st_ggml_quantize_progress(ST_GGML_Q4_K, x, a, nrows, nper, 1, on_progress, &stop,
                                           &err),
                 ST_E_CALLBACK);
    CHECK_EQ_INT(stop.calls, 1);
    free(x);
    free(a);
    free(b);
}

int main(void)
{
    test_table_and_args();
    test_half_conversions();
    test_expected();
    test_paths_agree();
    test_error_bounds();
    test_dequant_random();
    test_progress();
    printf("# simd: %s\n", st_quant_simd_available() ? "yes" : "no");
    TEST_END();
}
