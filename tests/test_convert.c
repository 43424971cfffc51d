/* Dtype conversion: exhaustive decoding of every code of the 16-, 8-, 6-
 * and 4-bit kinds against an independent ldexp-based decoder, encoding of
 * every halfway point (and its neighbours) of every target against an
 * independent nearest-value search, integer and BOOL semantics, SIMD vs
 * scalar vs the general path on large random arrays, threads, arguments. */
#include "dtype/convert.h"
#include "safetensors.h"
#include "test.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

/* ---- a small deterministic generator ---- */
static uint64_t rng_state = 0x853c49e6748fea9bull;
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint64_t d2u(double f)
{
    uint64_t u;
    memcpy(&u, &f, 8);
    return u;
}
static double u2d(uint64_t u)
{
    double f;
    memcpy(&f, &u, 8);
    return f;
}

/* ------------------------------------------------------------------------ */
/* Independent reference: values by ldexp, written per kind from the specs   */
/* ------------------------------------------------------------------------ */

enum { R_FIN, R_INF, R_NAN };

typedef struct kind {
    st_dtype d;
    int bits;
    int ebits, mbits, bias;
    const char *name;
} kind;

static const kind kinds8[] = {
    {ST_F8_E4M3, 8, 4, 3, 7, "F8_E4M3"},
    {ST_F8_E5M2, 8, 5, 2, 15, "F8_E5M2"},
    {ST_F8_E4M3FNUZ, 8, 4, 3, 8, "F8_E4M3FNUZ"},
    {ST_F8_E5M2FNUZ, 8, 5, 2, 16, "F8_E5M2FNUZ"},
};

/* value of code c of dtype d (long double holds every one exactly) */
static int ref_value(st_dtype d, unsigned c, long double *v)
{
    int s, e, m;
    switch (d) {
    case ST_F16:
        s = c >> 15, e = (c >> 10) & 31, m = c & 1023;
        if (e == 31)
            return m ? R_NAN : (*v = s ? -INFINITY : INFINITY, R_INF);
        *v = e ? ldexpl(1024 + m, e - 25) : ldexpl(m, -24);
        break;
    case ST_BF16:
        s = c >> 15, e = (c >> 7) & 255, m = c & 127;
        if (e == 255)
            return m ? R_NAN : (*v = s ? -INFINITY : INFINITY, R_INF);
        *v = e ? ldexpl(128 + m, e - 134) : ldexpl(m, -133);
        break;
    case ST_F8_E5M2:
        s = c >> 7, e = (c >> 2) & 31, m = c & 3;
        if (e == 31)
            return m ? R_NAN : (*v = s ? -INFINITY : INFINITY, R_INF);
        *v = e ? ldexpl(4 + m, e - 17) : ldexpl(m, -16);
        break;
    case ST_F8_E4M3:
        s = c >> 7, e = (c >> 3) & 15, m = c & 7;
        if ((c & 0x7F) == 0x7F)
            return R_NAN;
        *v = e ? ldexpl(8 + m, e - 10) : ldexpl(m, -9);
        break;
    case ST_F8_E4M3FNUZ:
        if (c == 0x80)
            return R_NAN;
        s = c >> 7, e = (c >> 3) & 15, m = c & 7;
        *v = e ? ldexpl(8 + m, e - 11) : ldexpl(m, -10);
        break;
    case ST_F8_E5M2FNUZ:
        if (c == 0x80)
            return R_NAN;
        s = c >> 7, e = (c >> 2) & 31, m = c & 3;
        *v = e ? ldexpl(4 + m, e - 18) : ldexpl(m, -17);
        break;
    case ST_F8_E8M0:
        if (c == 0xFF)
            return R_NAN;
        *v = ldexpl(1, (int)c - 127);
        return R_FIN;
    case ST_F4: {
        /* the E2M1 values, spelled out */
        static const double t[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
        s = c >> 3;
        *v = t[c & 7];
        break;
    }
    case ST_F6_E2M3:
        s = c >> 5, e = (c >> 3) & 3, m = c & 7;
        *v = e ? ldexpl(8 + m, e - 4) : ldexpl(m, -3);
        break;
    case ST_F6_E3M2:
        s = c >> 5, e = (c >> 2) & 7, m = c & 3;
        *v = e ? ldexpl(4 + m, e - 5) : ldexpl(m, -4);
        break;
    default:
        abort();
    }
    if (s)
        *v = -*v;
    return R_FIN;
}

/* Target description for the reference encoder. */
typedef struct tgt {
    st_dtype d;
    int bits;
    unsigned maxcode, signbit, inf;    /* inf: 0 if none */
    unsigned nan;                      /* canonical, unsigned part */
    int nan_signed, fnuz;
    long double *vals;                 /* vals[0..maxcode+1], the last virtual */
} tgt;

static tgt make_tgt(st_dtype d)
{
    tgt t = {d, 0, 0, 0, 0, 0, 1, 0, NULL};
    switch (d) {
    case ST_F16: t.bits = 16, t.maxcode = 0x7BFF, t.signbit = 0x8000, t.inf = 0x7C00, t.nan = 0x7E00; break;
    case ST_BF16: t.bits = 16, t.maxcode = 0x7F7F, t.signbit = 0x8000, t.inf = 0x7F80, t.nan = 0x7FC0; break;
    case ST_F8_E5M2: t.bits = 8, t.maxcode = 0x7B, t.signbit = 0x80, t.inf = 0x7C, t.nan = 0x7F; break;
    case ST_F8_E4M3: t.bits = 8, t.maxcode = 0x7E, t.signbit = 0x80, t.nan = 0x7F; break;
    case ST_F8_E4M3FNUZ:
    case ST_F8_E5M2FNUZ: t.bits = 8, t.maxcode = 0x7F, t.signbit = 0x80, t.nan = 0x80, t.nan_signed = 0, t.fnuz = 1; break;
    case ST_F8_E8M0: t.bits = 8, t.maxcode = 0xFE, t.nan = 0xFF, t.nan_signed = 0; break;
    default: abort();
    }
    t.vals = malloc((t.maxcode + 2) * sizeof *t.vals);
    for (unsigned c = 0; c <= t.maxcode; c++)
        ref_value(d, c, &t.vals[c]);
    t.vals[t.maxcode + 1] = 2 * t.vals[t.maxcode] - t.vals[t.maxcode - 1];
    return t;
}

static unsigned ref_overflow(const tgt *t, unsigned sign, int sat)
{
    if (t->d == ST_F8_E8M0)
        return sat ? 0xFE : 0xFF;
    if (sat)
        return sign | t->maxcode;
    if (t->inf)
        return sign | t->inf;
    return t->nan_signed ? sign | t->nan : t->nan;
}

/* cls/x: the input value (x finite when cls == R_FIN) */
static unsigned ref_encode(const tgt *t, int cls, int negative, long double x, int sat)
{
    unsigned sign = negative ? t->signbit : 0;
    if (cls == R_NAN)
        return t->nan_signed ? sign | t->nan : t->nan;
    if (cls == R_INF) {
        if (t->inf)
            return sign | t->inf;
        return ref_overflow(t, sign, sat);
    }
    long double a = fabsl(x);
    if (t->d == ST_F8_E8M0) {
        if (a == 0)
            return 0;
        int k;
        long double m = frexpl(a, &k) * 2; /* a = m * 2^(k-1), m in [1,2) */
        int c = k - 1 + 127 + (m >= 1.5L);
        if (c < 0)
            return 0;
        if (c > 254)
            return sat ? 0xFE : 0xFF;
        return (unsigned)c;
    }
    unsigned top = t->maxcode + 1;
    unsigned r;
    if (a > t->vals[top]) {
        r = top + 1;
    } else {
        unsigned lo = 0, hi = top; /* largest c with vals[c] <= a */
        while (lo < hi) {
            unsigned mid = (lo + hi + 1) / 2;
            if (t->vals[mid] <= a)
                lo = mid;
            else
                hi = mid - 1;
        }
        if (lo == top || t->vals[lo] == a) {
            r = lo;
        } else {
            long double d1 = a - t->vals[lo], d2 = t->vals[lo + 1] - a;
            r = d1 < d2 ? lo : d2 < d1 ? lo + 1 : ((lo & 1) ? lo + 1 : lo);
        }
    }
    if (r > t->maxcode)
        return ref_overflow(t, sign, sat);
    if (r == 0 && t->fnuz)
        return 0;
    return sign | r;
}

/* The FP8 descriptors of the SIMD kernels, from the documented formats. */
static const st_f8_fmt *test_f8_fmt(st_dtype d)
{
    static const st_f8_fmt e4m3 = {3, 7, 0x7E, 0, 0x7F, 0}, e5m2 = {2, 15, 0x7B, 0x7C, 0x7F, 0},
                           e4m3fnuz = {3, 8, 0x7F, 0, 0x80, 1},
                           e5m2fnuz = {2, 16, 0x7F, 0, 0x80, 1};
    switch (d) {
    case ST_F8_E4M3: return &e4m3;
    case ST_F8_E5M2: return &e5m2;
    case ST_F8_E4M3FNUZ: return &e4m3fnuz;
    case ST_F8_E5M2FNUZ: return &e5m2fnuz;
    default: return NULL;
    }
}

/* ------------------------------------------------------------------------ */
/* Helpers around st_convert                                                 */
/* ------------------------------------------------------------------------ */

static uint64_t conv1(st_dtype to, st_dtype from, uint64_t code, unsigned flags)
{
    unsigned char in[8] = {0}, out[8] = {0};
    unsigned fb = st_dtype_bits(from) / 8;
    for (unsigned i = 0; i < fb; i++)
        in[i] = (unsigned char)(code >> (8 * i));
    int rc = st_convert(to, out, from, in, 1, flags, NULL);
    if (rc != ST_OK)
        return ~0ull;
    uint64_t r = 0;
    for (unsigned i = 0; i < st_dtype_bits(to) / 8; i++)
        r |= (uint64_t)out[i] << (8 * i);
    return r;
}

/* Decoding check of one code against the reference (to F32 and F64). */
static int check_decode(st_dtype d, unsigned c, uint32_t f32bits, uint64_t f64bits)
{
    long double v = 0;
    int cls = ref_value(d, c, &v);
    float f = u2f(f32bits);
    double g = u2d(f64bits);
    if (cls == R_NAN)
        return isnan(f) && isnan(g) && (f64bits & (1ull << 51)) &&
               (d == ST_BF16 || (f32bits & 0x400000)); /* BF16 -> F32 keeps sNaN */
    /* exact: same value and same sign of zero */
    return (long double)f == v && (long double)g == v && !signbit(f) == !signbit(v) &&
           !signbit(g) == !signbit(v);
}

static void test_decode_16(st_dtype d)
{
    static uint16_t in[65536];
    static uint32_t o32[65536], o32s[65536], og[65536];
    static uint64_t o64[65536];
    for (unsigned c = 0; c < 65536; c++)
        in[c] = (uint16_t)c;
    CHECK_EQ_INT(st_convert(ST_F32, o32, d, in, 65536, 0, NULL), ST_OK);
    CHECK_EQ_INT(st_convert(ST_F32, o32s, d, in, 65536, ST_CONVERT_SCALAR, NULL), ST_OK);
    CHECK_EQ_INT(st_convert(ST_F64, o64, d, in, 65536, 0, NULL), ST_OK);
    st_convert_generic(ST_F32, og, d, in, 65536, 0);
    int bad = 0, nan_ok = 1, same = 1;
    for (unsigned c = 0; c < 65536; c++) {
        if (!check_decode(d, c, o32[c], o64[c])) {
            if (bad++ < 5)
                fprintf(stderr, "%s code 0x%04x -> f32 0x%08x f64 0x%016llx\n",
                        st_dtype_name(d), c, o32[c], (unsigned long long)o64[c]);
        }
        if (o32[c] != o32s[c] || o32[c] != og[c])
            same = 0;
        long double v;
        if (ref_value(d, c, &v) == R_NAN) {
            /* sign kept; payload kept left-aligned */
            unsigned mb = d == ST_F16 ? 10 : 7;
            uint32_t pay = (c & ((1u << mb) - 1)) << (23 - mb);
            uint32_t want = ((uint32_t)(c >> 15) << 31) | 0x7F800000u | pay;
            if (d == ST_F16)
                want |= 0x400000u; /* quieted */
            if (o32[c] != want)
                nan_ok = 0;
        }
    }
    CHECK(bad == 0, "%s: %d codes decode wrongly", st_dtype_name(d), bad);
    CHECK(same, "%s: SIMD, scalar and general decoders differ", st_dtype_name(d));
    CHECK(nan_ok, "%s: NaN sign/payload rule", st_dtype_name(d));
}

static void test_decode_8(st_dtype d)
{
    uint8_t in[256];
    uint32_t o32[256];
    uint64_t o64[256];
    for (unsigned c = 0; c < 256; c++)
        in[c] = (uint8_t)c;
    CHECK_EQ_INT(st_convert(ST_F32, o32, d, in, 256, 0, NULL), ST_OK);
    CHECK_EQ_INT(st_convert(ST_F64, o64, d, in, 256, 0, NULL), ST_OK);
    int bad = 0;
    for (unsigned c = 0; c < 256; c++)
        if (!check_decode(d, c, o32[c], o64[c]) && bad++ < 5)
            fprintf(stderr, "%s code 0x%02x -> 0x%08x\n", st_dtype_name(d), c, o32[c]);
    CHECK(bad == 0, "%s: %d codes decode wrongly", st_dtype_name(d), bad);
    /* through F16 and BF16 too: exact for all but E8M0's extremes */
    for (unsigned c = 0; c < 256; c++) {
        long double v;
        if (ref_value(d, c, &v) != R_FIN || d == ST_F8_E8M0)
            continue;
        uint64_t h = conv1(ST_F16, d, c, 0), b = conv1(ST_BF16, d, c, 0);
        uint64_t hf = conv1(ST_F32, ST_F16, h, 0), bf = conv1(ST_F32, ST_BF16, b, 0);
        if ((long double)u2f((uint32_t)hf) != v || (long double)u2f((uint32_t)bf) != v ||
            !signbit(u2f((uint32_t)hf)) != !signbit(v))
            bad++;
    }
    CHECK(bad == 0, "%s: via F16/BF16 not exact", st_dtype_name(d));
    /* the table path (n >= 1024) and the general path agree */
    static uint8_t big[4096];
    static uint16_t t16[4096], g16[4096];
    for (unsigned i = 0; i < 4096; i++)
        big[i] = (uint8_t)(i * 37 + 11);
    CHECK_EQ_INT(st_convert(ST_BF16, t16, d, big, 4096, 0, NULL), ST_OK);
    st_convert_generic(ST_BF16, g16, d, big, 4096, 0);
    CHECK(memcmp(t16, g16, sizeof t16) == 0, "%s: table vs general", st_dtype_name(d));
}

static void test_decode_subbyte(void)
{
    /* F4: all 16 codes, first element in the low nibble */
    uint8_t f4[8];
    for (unsigned i = 0; i < 8; i++)
        f4[i] = (uint8_t)((2 * i) | ((2 * i + 1) << 4));
    float o[16];
    CHECK_EQ_INT(st_convert(ST_F32, o, ST_F4, f4, 16, 0, NULL), ST_OK);
    int bad = 0;
    for (unsigned c = 0; c < 16; c++) {
        long double v;
        ref_value(ST_F4, c, &v);
        if ((long double)o[c] != v || !signbit(o[c]) != !signbit(v))
            bad++;
    }
    CHECK(bad == 0, "F4 decode");
    CHECK(o[1] == 0.5f && o[15] == -6.0f, "F4 packing");
    CHECK_EQ_INT(st_convert(ST_F32, o, ST_F4, f4, 3, 0, NULL), ST_E_MISALIGNED);

    /* F6: all 64 codes, four per three bytes, LSB-first */
    for (int k = 0; k < 2; k++) {
        st_dtype d = k ? ST_F6_E3M2 : ST_F6_E2M3;
        uint8_t p[48];
        for (unsigned g = 0; g < 16; g++) {
            unsigned e0 = 4 * g, e1 = 4 * g + 1, e2 = 4 * g + 2, e3 = 4 * g + 3;
            p[3 * g] = (uint8_t)(e0 | (e1 << 6));
            p[3 * g + 1] = (uint8_t)((e1 >> 2) | (e2 << 4));
            p[3 * g + 2] = (uint8_t)((e2 >> 4) | (e3 << 2));
        }
        float f[64];
        double g64[64];
        CHECK_EQ_INT(st_convert(ST_F32, f, d, p, 64, 0, NULL), ST_OK);
        CHECK_EQ_INT(st_convert(ST_F64, g64, d, p, 64, 0, NULL), ST_OK);
        bad = 0;
        for (unsigned c = 0; c < 64; c++) {
            long double v;
            ref_value(d, c, &v);
            if ((long double)f[c] != v || (long double)g64[c] != v || !signbit(f[c]) != !signbit(v))
                bad++;
        }
        CHECK(bad == 0, "%s decode", st_dtype_name(d));
        CHECK_EQ_INT(st_convert(ST_F32, f, d, p, 6, 0, NULL), ST_E_MISALIGNED);
    }
    CHECK(!st_convert_supported(ST_F32, ST_F4), "no F4 encoder");
    CHECK(!st_convert_supported(ST_F16, ST_F6_E2M3), "no F6 encoder");
}

/* ------------------------------------------------------------------------ */
/* Encoding                                                                  */
/* ------------------------------------------------------------------------ */

static int cls_of_f32(uint32_t u, long double *x)
{
    float f = u2f(u);
    if (isnan(f))
        return R_NAN;
    *x = f;
    return isinf(f) ? R_INF : R_FIN;
}

/* The F32 inputs of the boundary set for one target: every code's value,
 * every halfway point between neighbours (and the F32 values just below and
 * above it), the overflow threshold and its neighbours, specials. */
static size_t boundary_inputs(const tgt *t, uint32_t *out)
{
    size_t k = 0;
    for (unsigned c = 0; c <= t->maxcode + 1; c++) {
        float v = (float)t->vals[c];
        if (c <= t->maxcode) {
            out[k++] = f2u(v);
            out[k++] = f2u(nextafterf(v, INFINITY));
            if (v > 0)
                out[k++] = f2u(nextafterf(v, 0));
        }
        if (c > 0) {
            long double mid = (t->vals[c - 1] + t->vals[c]) / 2;
            float m = (float)mid;
            if ((long double)m == mid) {
                out[k++] = f2u(m);
                out[k++] = f2u(nextafterf(m, 0));
                out[k++] = f2u(nextafterf(m, INFINITY));
            }
        }
    }
    if (t->d == ST_F8_E8M0) /* 1.5 * 2^k and neighbours, all k */
        for (int e = -150; e < 129; e++) {
            float m = ldexpf(1.5f, e);
            if (m != 0 && !isinf(m)) {
                out[k++] = f2u(m);
                out[k++] = f2u(nextafterf(m, 0));
                out[k++] = f2u(nextafterf(m, INFINITY));
            }
        }
    static const uint32_t specials[] = {
        0x00000000, 0x00000001, 0x00000002, 0x007FFFFF, 0x00800000, 0x33000000, 0x33000001,
        0x32FFFFFF, 0x337FFFFF, 0x33800000, 0x38800000, 0x387FFFFF, 0x477FE000, 0x477FEFFF,
        0x477FF000, 0x477FF001, 0x477FFFFF, 0x47800000, 0x43E00000, 0x43E7FFFF, 0x43E80000,
        0x43EFFFFF, 0x43F00000, 0x43F00001, 0x43700000, 0x43780000, 0x43800000, 0x47600000,
        0x47700000, 0x477FFFFF, 0x7F7F7FFF, 0x7F7F8000, 0x7F7FFFFF, 0x7F800000, 0x7F800001,
        0x7FBFFFFF, 0x7FC00000, 0x7FC00001, 0x7FFFFFFF, 0x7FA12345, 0x3F800000, 0x3FC00000,
        0x00400000, 0x00C00000, 0x7F000000, 0x7F400000};
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++)
        out[k++] = specials[i];
    /* and every one negated */
    size_t n = k;
    for (size_t i = 0; i < n; i++)
        out[k++] = out[i] ^ 0x80000000u;
    return k;
}

static void test_encode_target(st_dtype d)
{
    tgt t = make_tgt(d);
    size_t cap = (size_t)(t.maxcode + 2) * 12 + 4096;
    uint32_t *in = malloc(cap * 4 + 4 * 1000000);
    size_t n = boundary_inputs(&t, in);
    /* plus random bit patterns of every class */
    for (size_t i = 0; i < (t.bits == 16 ? 300000u : 100000u); i++)
        in[n++] = (uint32_t)rnd();
    unsigned width = (unsigned)t.bits / 8;
    unsigned char *out = malloc(n * width), *outg = malloc(n * width);
    for (int mode = 0; mode < 4; mode++) {
        int sat = mode & 1;
        unsigned fl = (sat ? ST_CONVERT_SATURATE : 0) | (mode & 2 ? ST_CONVERT_SCALAR : 0);
        CHECK_EQ_INT(st_convert(d, out, ST_F32, in, n, fl, NULL), ST_OK);
        st_convert_generic(d, outg, ST_F32, in, n, fl);
        int bad = 0, diff = 0;
        for (size_t i = 0; i < n; i++) {
            long double x = 0;
            int cls = cls_of_f32(in[i], &x);
            unsigned want = ref_encode(&t, cls, (int)(in[i] >> 31), x, sat);
            unsigned got = width == 2 ? (unsigned)(out[2 * i] | out[2 * i + 1] << 8) : out[i];
            if (got != want && bad++ < 5)
                fprintf(stderr, "F32 0x%08x -> %s%s%s: got 0x%x want 0x%x\n", in[i],
                        st_dtype_name(d), sat ? " (saturate)" : "",
                        mode & 2 ? " (scalar)" : "", got, want);
            if (memcmp(out + i * width, outg + i * width, width))
                diff++;
        }
        CHECK(bad == 0, "F32 -> %s mode=%d: %d of %zu wrong", st_dtype_name(d), mode, bad, n);
        CHECK(diff == 0, "F32 -> %s sat=%d: fast path != general path (%d)", st_dtype_name(d),
              sat, diff);
        /* and each SIMD level's FP8 kernel on the same inputs */
        for (int lv = 1; test_f8_fmt(d) && lv <= st_simd_level(); lv++) {
            size_t done = st_simd_f32_to_f8(outg, in, n, test_f8_fmt(d), sat, lv);
            CHECK(done + 32 > n && memcmp(outg, out, done) == 0, "F32 -> %s level %d sat=%d",
                  st_dtype_name(d), lv, sat);
        }
    }
    /* F64 inputs: halfway points +- one F64 ulp (no double rounding) */
    double *din = malloc(sizeof(double) * (t.maxcode + 2) * 4);
    size_t dn = 0;
    for (unsigned c = 1; c <= t.maxcode + 1; c++) {
        double mid = (double)((t.vals[c - 1] + t.vals[c]) / 2);
        din[dn++] = mid;
        din[dn++] = nextafter(mid, 0);
        din[dn++] = nextafter(mid, INFINITY);
        din[dn++] = -nextafter(mid, INFINITY);
    }
    unsigned char *o2 = malloc(dn * width);
    CHECK_EQ_INT(st_convert(d, o2, ST_F64, din, dn, 0, NULL), ST_OK);
    int bad = 0;
    for (size_t i = 0; i < dn; i++) {
        unsigned want = ref_encode(&t, R_FIN, signbit(din[i]) != 0, din[i], 0);
        unsigned got = width == 2 ? (unsigned)(o2[2 * i] | o2[2 * i + 1] << 8) : o2[i];
        if (got != want && bad++ < 5)
            fprintf(stderr, "F64 %a -> %s: got 0x%x want 0x%x\n", din[i], st_dtype_name(d),
                    got, want);
    }
    CHECK(bad == 0, "F64 -> %s: %d wrong", st_dtype_name(d), bad);
    free(o2);
    free(din);
    free(out);
    free(outg);
    free(in);
    free(t.vals);
}

/* Spot checks of documented behaviour, written out by hand. */
static void test_encode_spots(void)
{
    /* F16 */
    CHECK_EQ_INT(conv1(ST_F16, ST_F32, 0x477FF000, 0), 0x7C00);     /* 65520 ties up: Inf */
    CHECK_EQ_INT(conv1(ST_F16, ST_F32, 0x477FEFFF, 0), 0x7BFF);
    CHECK_EQ_INT(conv1(ST_F16, ST_F32, 0x477FF000, ST_CONVERT_SATURATE), 0x7BFF);
    CHECK_EQ_INT(conv1(ST_F16, ST_F32, 0xFF800000, ST_CONVERT_SATURATE), 0xFC00); /* Inf kept */
    CHECK_EQ_INT(conv1(ST_F16, ST_F32, 0x33000000, 0), 0x0000);     /* 2^-25 ties to 0 */
    CHECK_EQ_INT(conv1(ST_F16, ST_F32, 0x33000001, 0), 0x0001);
    CHECK_EQ_INT(conv1(ST_F16, ST_F32, 0x80000000, 0), 0x8000);
    CHECK_EQ_INT(conv1(ST_F16, ST_F32, 0xFFA12345, 0), 0xFE00);     /* NaN sign kept */
    /* BF16 */
    CHECK_EQ_INT(conv1(ST_BF16, ST_F32, 0x3F808000, 0), 0x3F80);    /* tie to even */
    CHECK_EQ_INT(conv1(ST_BF16, ST_F32, 0x3F818000, 0), 0x3F82);
    CHECK_EQ_INT(conv1(ST_BF16, ST_F32, 0x7F7FFFFF, 0), 0x7F80);
    CHECK_EQ_INT(conv1(ST_BF16, ST_F32, 0x7F7FFFFF, ST_CONVERT_SATURATE), 0x7F7F);
    CHECK_EQ_INT(conv1(ST_BF16, ST_F32, 0xFF800001, 0), 0xFFC0);
    CHECK_EQ_INT(conv1(ST_BF16, ST_F32, 0x00008000, 0), 0x0000);    /* subnormal tie to even */
    CHECK_EQ_INT(conv1(ST_BF16, ST_F32, 0x00018000, 0), 0x0002);
    /* F8_E4M3: 448 max, 464 ties to 448, above -> NaN (c10) */
    CHECK_EQ_INT(conv1(ST_F8_E4M3, ST_F32, f2u(448.0f), 0), 0x7E);
    CHECK_EQ_INT(conv1(ST_F8_E4M3, ST_F32, f2u(464.0f), 0), 0x7E);
    CHECK_EQ_INT(conv1(ST_F8_E4M3, ST_F32, f2u(464.01f), 0), 0x7F);
    CHECK_EQ_INT(conv1(ST_F8_E4M3, ST_F32, f2u(-1e6f), 0), 0xFF);
    CHECK_EQ_INT(conv1(ST_F8_E4M3, ST_F32, f2u(-1e6f), ST_CONVERT_SATURATE), 0xFE);
    CHECK_EQ_INT(conv1(ST_F8_E4M3, ST_F32, 0x7F800000, 0), 0x7F);
    CHECK_EQ_INT(conv1(ST_F8_E4M3, ST_F32, 0x7F800000, ST_CONVERT_SATURATE), 0x7E);
    CHECK_EQ_INT(conv1(ST_F8_E4M3, ST_F32, f2u(0x1p-9f), 0), 0x01); /* min subnormal */
    CHECK_EQ_INT(conv1(ST_F8_E4M3, ST_F32, f2u(0x1p-10f), 0), 0x00); /* tie to 0 */
    /* F8_E5M2: IEEE-like */
    CHECK_EQ_INT(conv1(ST_F8_E5M2, ST_F32, f2u(57344.0f), 0), 0x7B);
    CHECK_EQ_INT(conv1(ST_F8_E5M2, ST_F32, f2u(61440.0f), 0), 0x7C);
    CHECK_EQ_INT(conv1(ST_F8_E5M2, ST_F32, f2u(61440.0f), ST_CONVERT_SATURATE), 0x7B);
    CHECK_EQ_INT(conv1(ST_F8_E5M2, ST_F32, 0xFFC00000, 0), 0xFF);
    /* FNUZ: no -0, overflow and Inf -> 0x80 */
    CHECK_EQ_INT(conv1(ST_F8_E4M3FNUZ, ST_F32, 0x80000000, 0), 0x00);
    CHECK_EQ_INT(conv1(ST_F8_E4M3FNUZ, ST_F32, f2u(-0x1p-12f), 0), 0x00); /* rounds to -0 */
    CHECK_EQ_INT(conv1(ST_F8_E4M3FNUZ, ST_F32, f2u(240.0f), 0), 0x7F);
    CHECK_EQ_INT(conv1(ST_F8_E4M3FNUZ, ST_F32, f2u(248.0f), 0), 0x80);
    CHECK_EQ_INT(conv1(ST_F8_E4M3FNUZ, ST_F32, f2u(-300.0f), ST_CONVERT_SATURATE), 0xFF);
    CHECK_EQ_INT(conv1(ST_F8_E5M2FNUZ, ST_F32, 0xFF800000, 0), 0x80);
    CHECK_EQ_INT(conv1(ST_F8_E5M2FNUZ, ST_F32, 0xFFC00000, 0), 0x80);
    /* E8M0 */
    CHECK_EQ_INT(conv1(ST_F8_E8M0, ST_F32, f2u(1.0f), 0), 127);
    CHECK_EQ_INT(conv1(ST_F8_E8M0, ST_F32, f2u(1.5f), 0), 128);
    CHECK_EQ_INT(conv1(ST_F8_E8M0, ST_F32, f2u(1.4999f), 0), 127);
    CHECK_EQ_INT(conv1(ST_F8_E8M0, ST_F32, f2u(-4.0f), 0), 129);
    CHECK_EQ_INT(conv1(ST_F8_E8M0, ST_F32, 0, 0), 0);
    CHECK_EQ_INT(conv1(ST_F8_E8M0, ST_F32, 0x7F7FFFFF, 0), 0xFF);
    CHECK_EQ_INT(conv1(ST_F8_E8M0, ST_F32, 0x7F7FFFFF, ST_CONVERT_SATURATE), 0xFE);
    CHECK_EQ_INT(conv1(ST_F32, ST_F8_E8M0, 0, 0), 0x00400000);
    CHECK_EQ_INT(conv1(ST_F32, ST_F8_E8M0, 0xFF, 0), 0x7FC00000);
    /* NaN payloads into F32/F64 */
    CHECK_EQ_INT(conv1(ST_F32, ST_F16, 0xFC01, 0), 0xFFC02000);
    CHECK_EQ_INT(conv1(ST_F32, ST_BF16, 0x7F81, 0), 0x7F810000); /* bit extension */
    CHECK_EQ_INT(conv1(ST_F32, ST_F8_E4M3, 0xFF, 0), 0xFFF00000);
    CHECK_EQ_INT(conv1(ST_F32, ST_F8_E4M3FNUZ, 0x80, 0), 0x7FC00000);
    CHECK(conv1(ST_F64, ST_F32, 0x7F800001, 0) == 0x7FF8000020000000ull, "F32 sNaN -> F64");
    CHECK(conv1(ST_F32, ST_F64, 0xFFF0000000000001ull, 0) == 0xFFC00000ull, "F64 NaN -> F32");
    /* F64 -> F32: overflow and the smallest subnormal */
    CHECK(conv1(ST_F32, ST_F64, d2u(1e300), 0) == 0x7F800000ull, "F64 overflow");
    CHECK(conv1(ST_F32, ST_F64, d2u(-1e300), ST_CONVERT_SATURATE) == 0xFF7FFFFFull, "sat");
    CHECK(conv1(ST_F32, ST_F64, d2u(0x1p-149), 0) == 1, "F32 min subnormal");
    CHECK(conv1(ST_F32, ST_F64, d2u(0x1p-150), 0) == 0, "tie to 0");
    CHECK(conv1(ST_F32, ST_F64, d2u(nextafter(0x1p-150, 1)), 0) == 1, "above tie");
}

/* F64 -> F32 and integers -> F32 against the C conversions (RNE). */
static void test_against_c_casts(void)
{
    enum { N = 200000 };
    double *d = malloc(N * sizeof *d);
    float *f = malloc(N * sizeof *f);
    for (size_t i = 0; i < N; i++) {
        uint64_t r = rnd();
        if (i % 3 == 0) /* values near the F32 range */
            r = (r & 0x800FFFFFFFFFFFFFull) | ((uint64_t)(0x360 + rnd() % 0x140) << 52);
        d[i] = u2d(r);
    }
    CHECK_EQ_INT(st_convert(ST_F32, f, ST_F64, d, N, 0, NULL), ST_OK);
    int bad = 0;
    for (size_t i = 0; i < N; i++) {
        float want = (float)d[i];
        if (isnan(d[i]))
            continue;
        if (f2u(want) != f2u(f[i]) && bad++ < 5)
            fprintf(stderr, "F64 %a -> F32 %a want %a\n", d[i], f[i], want);
    }
    CHECK(bad == 0, "F64 -> F32 vs C cast: %d", bad);

    uint64_t *u = malloc(N * 8);
    for (size_t i = 0; i < N; i++)
        u[i] = rnd() >> (rnd() % 64);
    static const st_dtype its[] = {ST_U64, ST_I64};
    for (int k = 0; k < 2; k++) {
        CHECK_EQ_INT(st_convert(ST_F32, f, its[k], u, N, 0, NULL), ST_OK);
        CHECK_EQ_INT(st_convert(ST_F64, d, its[k], u, N, 0, NULL), ST_OK);
        bad = 0;
        for (size_t i = 0; i < N; i++) {
            float wf = k ? (float)(int64_t)u[i] : (float)u[i];
            double wd = k ? (double)(int64_t)u[i] : (double)u[i];
            if ((f2u(wf) != f2u(f[i]) || d2u(wd) != d2u(d[i])) && bad++ < 5)
                fprintf(stderr, "%s %llx -> %a %a\n", st_dtype_name(its[k]),
                        (unsigned long long)u[i], f[i], d[i]);
        }
        CHECK(bad == 0, "%s -> F32/F64 vs C cast: %d", st_dtype_name(its[k]), bad);
    }
    /* I64 -> BF16: rounded once (2^63 + 2^55 + 1 must go up) */
    int64_t v = (int64_t)0x4000000000000000ll + (1ll << 54) + 1;
    CHECK_EQ_INT(conv1(ST_BF16, ST_I64, (uint64_t)v, 0), 0x5E81);
    CHECK_EQ_INT(conv1(ST_F16, ST_I32, 70000, 0), 0x7C00);
    CHECK_EQ_INT(conv1(ST_F16, ST_I32, 70000, ST_CONVERT_SATURATE), 0x7BFF);
    free(u);
    free(d);
    free(f);
}

static void test_integers(void)
{
    /* float -> int: truncation, NaN -> 0, clamping */
    CHECK_EQ_INT(conv1(ST_I32, ST_F32, f2u(2.7f), 0), 2);
    CHECK_EQ_INT(conv1(ST_I32, ST_F32, f2u(-2.7f), 0), (uint32_t)-2);
    CHECK_EQ_INT(conv1(ST_I32, ST_F32, 0x7FC00000, 0), 0);
    CHECK_EQ_INT(conv1(ST_I32, ST_F32, f2u(1e10f), 0), 0x7FFFFFFF);
    CHECK_EQ_INT(conv1(ST_I32, ST_F32, 0xFF800000, 0), 0x80000000);
    CHECK_EQ_INT(conv1(ST_U8, ST_F32, f2u(300.0f), 0), 255);
    CHECK_EQ_INT(conv1(ST_U8, ST_F32, f2u(-1.0f), 0), 0);
    CHECK_EQ_INT(conv1(ST_I8, ST_F32, f2u(-128.9f), 0), 0x80);
    CHECK_EQ_INT(conv1(ST_I8, ST_F32, f2u(-129.0f), 0), 0x80);
    CHECK(conv1(ST_I64, ST_F64, d2u(-0x1p63), 0) == 0x8000000000000000ull, "I64 min");
    CHECK(conv1(ST_I64, ST_F64, d2u(0x1p63), 0) == 0x7FFFFFFFFFFFFFFFull, "I64 clamp");
    CHECK(conv1(ST_U64, ST_F64, d2u(0x1.fffffffffffffp63), 0) == 0xFFFFFFFFFFFFF800ull, "U64");
    CHECK_EQ_INT(conv1(ST_BOOL, ST_F32, 0x7FC00000, 0), 1);
    CHECK_EQ_INT(conv1(ST_BOOL, ST_F32, 0x80000000, 0), 0);
    CHECK_EQ_INT(conv1(ST_BOOL, ST_F16, 0x0001, 0), 1);
    CHECK_EQ_INT(conv1(ST_F32, ST_BOOL, 2, 0), 0x3F800000);
    CHECK_EQ_INT(conv1(ST_F16, ST_I8, 0xFF, 0), 0xBC00);
    /* int -> int: wrap-around */
    CHECK_EQ_INT(conv1(ST_U8, ST_I32, 300, 0), 44);
    CHECK_EQ_INT(conv1(ST_U32, ST_I8, 0xFF, 0), 0xFFFFFFFF);
    CHECK(conv1(ST_I64, ST_I16, 0x8000, 0) == 0xFFFFFFFFFFFF8000ull, "I16 -> I64");
    CHECK(conv1(ST_I64, ST_U16, 0x8000, 0) == 0x8000ull, "U16 -> I64");
    CHECK_EQ_INT(conv1(ST_I32, ST_BOOL, 7, 0), 1);
    CHECK_EQ_INT(conv1(ST_BOOL, ST_I64, 0x100, 0), 1);

    /* every F16 code -> I8, I32, U16 against trunc + clamp */
    static uint16_t in[65536];
    static int8_t o8[65536];
    static int32_t o32[65536];
    static uint16_t ou16[65536];
    for (unsigned c = 0; c < 65536; c++)
        in[c] = (uint16_t)c;
    CHECK_EQ_INT(st_convert(ST_I8, o8, ST_F16, in, 65536, 0, NULL), ST_OK);
    CHECK_EQ_INT(st_convert(ST_I32, o32, ST_F16, in, 65536, 0, NULL), ST_OK);
    CHECK_EQ_INT(st_convert(ST_U16, ou16, ST_F16, in, 65536, 0, NULL), ST_OK);
    int bad = 0;
    for (unsigned c = 0; c < 65536; c++) {
        long double v;
        int cls = ref_value(ST_F16, c, &v);
        long double t = cls == R_NAN ? 0 : truncl(v);
        long double w8 = t < -128 ? -128 : t > 127 ? 127 : t;
        long double w32 = t < -2147483648.0L ? -2147483648.0L : t > 2147483647.0L ? 2147483647.0L : t;
        long double wu = t < 0 ? 0 : t > 65535 ? 65535 : t;
        if ((o8[c] != w8 || o32[c] != w32 || ou16[c] != wu) && bad++ < 5)
            fprintf(stderr, "F16 0x%04x -> %d %d %u\n", c, o8[c], o32[c], ou16[c]);
    }
    CHECK(bad == 0, "F16 -> ints: %d", bad);
    /* every I16 -> F16 and BF16 against the reference encoder */
    tgt th = make_tgt(ST_F16), tb = make_tgt(ST_BF16);
    static uint16_t oh[65536], ob[65536];
    CHECK_EQ_INT(st_convert(ST_F16, oh, ST_I16, in, 65536, 0, NULL), ST_OK);
    CHECK_EQ_INT(st_convert(ST_BF16, ob, ST_I16, in, 65536, 0, NULL), ST_OK);
    bad = 0;
    for (unsigned c = 0; c < 65536; c++) {
        int16_t x = (int16_t)c;
        if (oh[c] != ref_encode(&th, R_FIN, x < 0, x, 0) ||
            ob[c] != ref_encode(&tb, R_FIN, x < 0, x, 0))
            bad++;
    }
    CHECK(bad == 0, "I16 -> F16/BF16: %d", bad);
    free(th.vals);
    free(tb.vals);
}

/* ------------------------------------------------------------------------ */
/* SIMD vs scalar vs general; threads                                        */
/* ------------------------------------------------------------------------ */

static uint32_t random_f32_bits(void)
{
    static const uint32_t sp[] = {0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000,
                                  0xFFC00001, 0x7F800001, 0x00000001, 0x477FF000, 0x477FEFFF,
                                  0x33000000, 0x38800000, 0x7F7F8000, 0x7F7FFFFF, 0x00008000};
    uint64_t r = rnd();
    switch (r & 7) {
    case 0:
        return sp[(r >> 8) % (sizeof sp / sizeof sp[0])] ^ (uint32_t)((r >> 40) & 1) << 31;
    case 1: /* near the F16 range */
        return (uint32_t)(((r >> 8) & 0x807FFFFF) | ((0x60 + (r >> 40) % 0x30) << 23));
    default:
        return (uint32_t)(r >> 16);
    }
}

static void test_simd_vs_scalar(void)
{
    enum { N = 1 << 20 };
    uint32_t *in = malloc(N * 4 + 64);
    uint16_t *a = malloc(N * 2 + 64), *b = malloc(N * 2 + 64), *c = malloc(N * 2 + 64);
    uint32_t *fa = malloc(N * 4 + 64), *fb = malloc(N * 4 + 64);
    for (size_t i = 0; i < N; i++)
        in[i] = random_f32_bits();
    int top = st_simd_level();
    printf("# simd: %s (level %d)\n", st_convert_simd_name(), top);
    static const st_dtype halves[] = {ST_F16, ST_BF16};
    for (int mxcsr = 0; mxcsr < 2; mxcsr++) {
#if defined(__x86_64__)
        unsigned saved = _mm_getcsr();
        if (mxcsr) /* FTZ and DAZ on: results must not change */
            _mm_setcsr(saved | 0x8040);
#else
        if (mxcsr)
            break;
#endif
        for (int h = 0; h < 2; h++) {
            st_dtype d = halves[h];
            for (int sat = 0; sat < 2; sat++) {
                unsigned fl = sat ? ST_CONVERT_SATURATE : 0;
                /* odd length and offset: tails and unaligned vectors */
                size_t n = N - 13;
                st_convert_generic(d, c, ST_F32, in + 1, n, fl);
                CHECK_EQ_INT(st_convert(d, a, ST_F32, in + 1, n, fl | ST_CONVERT_SCALAR, NULL),
                             ST_OK);
                CHECK(memcmp(a, c, n * 2) == 0, "scalar vs general %s sat=%d", st_dtype_name(d),
                      sat);
                for (int lv = 1; lv <= top; lv++) {
                    memset(b, 0, n * 2);
                    size_t done = d == ST_F16 ? st_simd_f32_to_f16(b, in + 1, n, sat, lv)
                                              : st_simd_f32_to_bf16(b, in + 1, n, sat, lv);
                    CHECK(done > n - 64 && done <= n, "simd did %zu of %zu", done, n);
                    CHECK(memcmp(b, c, done * 2) == 0, "simd level %d vs scalar %s sat=%d mxcsr=%d",
                          lv, st_dtype_name(d), sat, mxcsr);
                }
                CHECK_EQ_INT(st_convert(d, b, ST_F32, in + 1, n, fl, NULL), ST_OK);
                CHECK(memcmp(b, c, n * 2) == 0, "dispatch %s sat=%d", st_dtype_name(d), sat);
            }
            /* and back, from every kind of 16-bit code */
            size_t n = N - 7;
            for (size_t i = 0; i < n; i++)
                a[i] = (uint16_t)(in[i] ^ (in[i] >> 16));
            st_convert_generic(ST_F32, fa, d, a, n, 0);
            for (int lv = 1; lv <= top; lv++) {
                size_t done = d == ST_F16 ? st_simd_f16_to_f32(fb, a, n, lv)
                                          : st_simd_bf16_to_f32(fb, a, n, lv);
                CHECK(memcmp(fa, fb, done * 4) == 0, "simd level %d %s -> F32 mxcsr=%d", lv,
                      st_dtype_name(d), mxcsr);
            }
            CHECK_EQ_INT(st_convert(ST_F32, fb, d, a, n, 0, NULL), ST_OK);
            CHECK(memcmp(fa, fb, n * 4) == 0, "dispatch %s -> F32", st_dtype_name(d));
        }
#if defined(__x86_64__)
        _mm_setcsr(saved);
#endif
    }
    /* large outputs (>= 8 MiB) take the non-temporal store path; check it
     * at odd offsets too */
    {
        size_t bn = (size_t)5 << 20;
        uint32_t *bin = malloc(bn * 4 + 16);
        uint16_t *bo = malloc(bn * 2 + 16), *bs = malloc(bn * 2 + 16);
        for (size_t i = 0; i < bn + 4; i++)
            bin[i] = random_f32_bits();
        for (int h = 0; h < 2; h++)
            for (int off = 0; off < 3; off++) {
                st_dtype d = halves[h];
                size_t m = bn - (size_t)off * 5;
                CHECK_EQ_INT(st_convert(d, (char *)bo + 2 * off, ST_F32, bin + off, m, 0, NULL), ST_OK);
                CHECK_EQ_INT(st_convert(d, bs, ST_F32, bin + off, m, ST_CONVERT_SCALAR, NULL), ST_OK);
                CHECK(memcmp((char *)bo + 2 * off, bs, m * 2) == 0, "large %s offset %d",
                      st_dtype_name(d), off);
            }
        free(bin);
        free(bo);
        free(bs);
    }
    /* threads: same bits as one thread */
    size_t n = N - 5;
    CHECK_EQ_INT(st_convert(ST_BF16, a, ST_F32, in, n, 0, NULL), ST_OK);
    for (unsigned th = 0; th <= 5; th++) {
        memset(b, 0, n * 2);
        CHECK_EQ_INT(st_convert_mt(ST_BF16, b, ST_F32, in, n, 0, th, NULL), ST_OK);
        CHECK(memcmp(a, b, n * 2) == 0, "mt %u threads", th);
    }
    /* 16-bit table path (F16 -> FP8, large) vs general, threaded */
    unsigned char *e1 = malloc(N), *e2 = malloc(N);
    for (size_t i = 0; i < N; i++)
        a[i] = (uint16_t)rnd();
    CHECK_EQ_INT(st_convert_mt(ST_F8_E4M3, e1, ST_F16, a, N, ST_CONVERT_SATURATE, 3, NULL), ST_OK);
    st_convert_generic(ST_F8_E4M3, e2, ST_F16, a, N, ST_CONVERT_SATURATE);
    CHECK(memcmp(e1, e2, N) == 0, "F16 -> E4M3 table vs general");
    free(e1);
    free(e2);
    free(in);
    free(a);
    free(b);
    free(c);
    free(fa);
    free(fb);
}

/* Every fast path (SIMD and scalar) against the general path, on random
 * bit patterns of every class, both overflow modes, odd lengths. */
static void test_fast_vs_general(void)
{
    enum { N = 200003 };
    uint64_t *in = malloc(N * 8);
    unsigned char *a = malloc(N * 8), *b = malloc(N * 8), *g = malloc(N * 8);
    for (size_t i = 0; i < N; i++) {
        uint64_t r = rnd();
        in[i] = i & 1 ? r : (uint64_t)random_f32_bits() | (uint64_t)random_f32_bits() << 32;
    }
    static const struct {
        st_dtype from, to;
    } pairs[] = {
        {ST_F32, ST_F8_E4M3}, {ST_F32, ST_F8_E5M2}, {ST_F32, ST_F8_E4M3FNUZ},
        {ST_F32, ST_F8_E5M2FNUZ}, {ST_F32, ST_F64}, {ST_F64, ST_F32}, {ST_F32, ST_F16},
        {ST_F32, ST_BF16}, {ST_F16, ST_F32}, {ST_BF16, ST_F32}, {ST_F16, ST_F8_E5M2},
        {ST_BF16, ST_F8_E4M3FNUZ}, {ST_F8_E4M3, ST_F32}, {ST_U8, ST_F16}, {ST_I8, ST_BF16},
        {ST_F16, ST_I16}, {ST_F16, ST_BF16}, {ST_BF16, ST_F16},
    };
    for (size_t k = 0; k < sizeof pairs / sizeof pairs[0]; k++)
        for (int sat = 0; sat < 2; sat++) {
            unsigned fl = sat ? ST_CONVERT_SATURATE : 0;
            size_t n = N - k;
            size_t ob = st_dtype_bits(pairs[k].to) / 8;
            st_convert_generic(pairs[k].to, g, pairs[k].from, in, n, fl);
            CHECK_EQ_INT(st_convert(pairs[k].to, a, pairs[k].from, in, n, fl, NULL), ST_OK);
            CHECK_EQ_INT(st_convert(pairs[k].to, b, pairs[k].from, in, n, fl | ST_CONVERT_SCALAR,
                                    NULL), ST_OK);
            CHECK(memcmp(a, g, n * ob) == 0, "%s -> %s sat=%d: fast != general",
                  st_dtype_name(pairs[k].from), st_dtype_name(pairs[k].to), sat);
            CHECK(memcmp(b, g, n * ob) == 0, "%s -> %s sat=%d: scalar != general",
                  st_dtype_name(pairs[k].from), st_dtype_name(pairs[k].to), sat);
        }
    /* the F32 -> FP8 kernels at every SIMD level this CPU has */
    static const st_dtype f8s[] = {ST_F8_E4M3, ST_F8_E5M2, ST_F8_E4M3FNUZ, ST_F8_E5M2FNUZ};
    for (size_t k = 0; k < 4; k++)
        for (int sat = 0; sat < 2; sat++) {
            size_t n = N - 9;
            st_convert_generic(f8s[k], g, ST_F32, in, n, sat ? ST_CONVERT_SATURATE : 0);
            for (int lv = 1; lv <= st_simd_level(); lv++) {
                size_t done = st_simd_f32_to_f8(a, in, n, test_f8_fmt(f8s[k]), sat, lv);
                CHECK(done + 32 > n && memcmp(a, g, done) == 0,
                      "F32 -> %s simd level %d sat=%d (%zu done)", st_dtype_name(f8s[k]), lv,
                      sat, done);
            }
        }
    /* every F16 and BF16 code to every float kind, both overflow modes */
    static const st_dtype floats[] = {ST_F64, ST_F32, ST_F16, ST_BF16, ST_F8_E4M3, ST_F8_E5M2,
                                      ST_F8_E4M3FNUZ, ST_F8_E5M2FNUZ, ST_F8_E8M0};
    uint16_t *codes = malloc(65536 * 2);
    for (unsigned c = 0; c < 65536; c++)
        codes[c] = (uint16_t)c;
    for (int h = 0; h < 2; h++)
        for (size_t k = 0; k < sizeof floats / sizeof floats[0]; k++)
            for (int mode = 0; mode < 4; mode++) {
                st_dtype from = h ? ST_BF16 : ST_F16, to = floats[k];
                unsigned fl = (mode & 1 ? ST_CONVERT_SATURATE : 0) |
                              (mode & 2 ? ST_CONVERT_SCALAR : 0);
                size_t ob = st_dtype_bits(to) / 8;
                st_convert_generic(to, g, from, codes, 65536, fl);
                CHECK_EQ_INT(st_convert(to, a, from, codes, 65536, fl, NULL), ST_OK);
                CHECK(memcmp(a, g, 65536 * ob) == 0, "all %s codes -> %s mode %d",
                      st_dtype_name(from), st_dtype_name(to), mode);
            }
    free(codes);
    /* F32 -> F64 is exact: the C conversion agrees on every non-NaN */
    CHECK_EQ_INT(st_convert(ST_F64, a, ST_F32, in, N, 0, NULL), ST_OK);
    int bad = 0;
    for (size_t i = 0; i < N; i++) {
        uint32_t x;
        memcpy(&x, (const char *)in + 4 * i, 4);
        double want = (double)u2f(x), got;
        memcpy(&got, a + 8 * i, 8);
        if (!isnan(want) && d2u(want) != d2u(got))
            bad++;
    }
    CHECK(bad == 0, "F32 -> F64 vs C: %d", bad);
    free(in);
    free(a);
    free(b);
    free(g);
}

static void test_args(void)
{
    st_error err;
    float f = 1;
    uint16_t h;
    CHECK_EQ_INT(st_convert(ST_F16, &h, ST_C64, &f, 1, 0, &err), ST_E_UNSUPPORTED);
    CHECK(strstr(err.message, "C64") != NULL, "message names the dtype: %s", err.message);
    CHECK_EQ_INT(st_convert(ST_F16, &h, ST_F32, &f, 1, 0x100, NULL), ST_E_ARG);
    CHECK_EQ_INT(st_convert(ST_F16, NULL, ST_F32, &f, 1, 0, NULL), ST_E_ARG);
    CHECK_EQ_INT(st_convert(ST_F16, NULL, ST_F32, NULL, 0, 0, NULL), ST_OK);
    CHECK_EQ_INT(st_convert((st_dtype)99, &h, ST_F32, &f, 1, 0, NULL), ST_E_UNSUPPORTED);
    CHECK_EQ_INT(st_convert(ST_F16, &h, ST_F32, &f, UINT64_MAX, 0, NULL), ST_E_ARG);
    CHECK(st_convert_supported(ST_C64, ST_C64), "same dtype copies");
    CHECK(st_convert_supported(ST_F4, ST_BF16), "F4 decode");
    CHECK(st_convert_supported(ST_U8, ST_F8_E5M2), "int -> fp8");
    CHECK(!st_convert_supported(ST_F32, ST_C64), "no complex");
    CHECK_EQ_INT(st_convert(ST_F16, &h, ST_F32, &f, 1, 0, NULL), ST_OK);
    CHECK_EQ_INT(h, 0x3C00);
}

int main(void)
{
    test_decode_16(ST_F16);
    test_decode_16(ST_BF16);
    for (size_t i = 0; i < sizeof kinds8 / sizeof kinds8[0]; i++)
        test_decode_8(kinds8[i].d);
    test_decode_8(ST_F8_E8M0);
    test_decode_subbyte();
    static const st_dtype targets[] = {ST_F16, ST_BF16, ST_F8_E4M3, ST_F8_E5M2,
                                       ST_F8_E4M3FNUZ, ST_F8_E5M2FNUZ, ST_F8_E8M0};
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++)
        test_encode_target(targets[i]);
    test_encode_spots();
    test_against_c_casts();
    test_integers();
    test_simd_vs_scalar();
    test_fast_vs_general();
    test_args();
    TEST_END();
}
