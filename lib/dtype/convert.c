/* Dtype conversion: the portable scalar reference, the fast scalar paths,
 * the dispatcher (SIMD, lookup tables) and the thread split.
 *
 * Everything works on bit patterns with integer arithmetic only, so no
 * result depends on the caller's floating-point environment (rounding mode,
 * FTZ/DAZ) or on the compiler's float contraction. The general path unpacks
 * every value into sign, class, a 64-bit significand and an exponent: every
 * source value (F64's 53 bits, a U64's 64 bits) fits exactly, so each result
 * is rounded exactly once. The semantics are documented in safetensors.h. */
#include "dtype/convert.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Loads and stores (the format is little-endian)                            */
/* ------------------------------------------------------------------------ */

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define LE16(x) __builtin_bswap16(x)
#define LE32(x) __builtin_bswap32(x)
#define LE64(x) __builtin_bswap64(x)
#else
#define LE16(x) (x)
#define LE32(x) (x)
#define LE64(x) (x)
#endif

static inline uint16_t ld16(const unsigned char *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return LE16(v);
}

static inline uint32_t ld32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return LE32(v);
}

static inline uint64_t ld64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return LE64(v);
}

static inline void st16(unsigned char *p, uint16_t v)
{
    v = LE16(v);
    memcpy(p, &v, 2);
}

static inline void st32(unsigned char *p, uint32_t v)
{
    v = LE32(v);
    memcpy(p, &v, 4);
}

static inline void st64(unsigned char *p, uint64_t v)
{
    v = LE64(v);
    memcpy(p, &v, 8);
}

/* Element i of a buffer of `bits`-wide codes. Sub-byte kinds are an
 * LSB-first bit stream (see the header): F4 low nibble first, F6 four
 * elements per three bytes. */
static inline uint64_t load_code(const unsigned char *p, unsigned bits, size_t i)
{
    switch (bits) {
    case 8:
        return p[i];
    case 16:
        return ld16(p + 2 * i);
    case 32:
        return ld32(p + 4 * i);
    case 64:
        return ld64(p + 8 * i);
    case 4:
        return (p[i >> 1] >> ((i & 1) * 4)) & 15u;
    default: { /* 6 */
        size_t bit = 6 * i, byte = bit >> 3;
        unsigned sh = bit & 7;
        unsigned v = p[byte];
        if (sh > 2)
            v |= (unsigned)p[byte + 1] << 8;
        return (v >> sh) & 63u;
    }
    }
}

static inline void store_code(unsigned char *p, unsigned bits, size_t i, uint64_t v)
{
    switch (bits) {
    case 8:
        p[i] = (unsigned char)v;
        break;
    case 16:
        st16(p + 2 * i, (uint16_t)v);
        break;
    case 32:
        st32(p + 4 * i, (uint32_t)v);
        break;
    default:
        st64(p + 8 * i, v);
        break;
    }
}

/* ------------------------------------------------------------------------ */
/* Formats                                                                   */
/* ------------------------------------------------------------------------ */

enum { NAN_IEEE, NAN_ALLONES, NAN_FNUZ, NAN_NONE, NAN_E8M0 };

typedef struct ffmt {
    uint8_t ebits, mbits;
    uint8_t has_sign, has_inf, nan_kind;
    uint8_t wide;     /* F32/F64: NaN payloads from narrower kinds are kept */
    int16_t bias;
    uint64_t maxcode; /* largest finite magnitude                         */
    uint64_t nancode; /* canonical NaN, without the sign                  */
} ffmt;

static const ffmt fmts[ST_DTYPE_COUNT] = {
    [ST_F64] = {11, 52, 1, 1, NAN_IEEE, 1, 1023, 0x7FEFFFFFFFFFFFFFull, 0x7FF8000000000000ull},
    [ST_F32] = {8, 23, 1, 1, NAN_IEEE, 1, 127, 0x7F7FFFFF, 0x7FC00000},
    [ST_F16] = {5, 10, 1, 1, NAN_IEEE, 0, 15, 0x7BFF, 0x7E00},
    [ST_BF16] = {8, 7, 1, 1, NAN_IEEE, 0, 127, 0x7F7F, 0x7FC0},
    [ST_F8_E5M2] = {5, 2, 1, 1, NAN_IEEE, 0, 15, 0x7B, 0x7F},
    [ST_F8_E4M3] = {4, 3, 1, 0, NAN_ALLONES, 0, 7, 0x7E, 0x7F},
    [ST_F8_E4M3FNUZ] = {4, 3, 1, 0, NAN_FNUZ, 0, 8, 0x7F, 0x80},
    [ST_F8_E5M2FNUZ] = {5, 2, 1, 0, NAN_FNUZ, 0, 16, 0x7F, 0x80},
    [ST_F8_E8M0] = {8, 0, 0, 0, NAN_E8M0, 0, 127, 0xFE, 0xFF},
    [ST_F4] = {2, 1, 1, 0, NAN_NONE, 0, 1, 0x7, 0},
    [ST_F6_E2M3] = {2, 3, 1, 0, NAN_NONE, 0, 1, 0x1F, 0},
    [ST_F6_E3M2] = {3, 2, 1, 0, NAN_NONE, 0, 3, 0x1F, 0},
};

/* Kind of a dtype for conversion purposes. */
enum { K_NONE, K_FLOAT, K_SUBBYTE, K_INT, K_BOOL, K_OTHER };

static int kind_of(st_dtype d)
{
    switch (d) {
    case ST_F64: case ST_F32: case ST_F16: case ST_BF16: case ST_F8_E5M2:
    case ST_F8_E4M3: case ST_F8_E4M3FNUZ: case ST_F8_E5M2FNUZ: case ST_F8_E8M0:
        return K_FLOAT;
    case ST_F4: case ST_F6_E2M3: case ST_F6_E3M2:
        return K_SUBBYTE;
    case ST_U8: case ST_I8: case ST_I16: case ST_U16: case ST_I32: case ST_U32:
    case ST_I64: case ST_U64:
        return K_INT;
    case ST_BOOL:
        return K_BOOL;
    case ST_C64:
        return K_OTHER;
    default:
        return K_NONE;
    }
}

static int int_signed(st_dtype d)
{
    return d == ST_I8 || d == ST_I16 || d == ST_I32 || d == ST_I64;
}

/* ------------------------------------------------------------------------ */
/* Unpacked values                                                           */
/* ------------------------------------------------------------------------ */

enum { V_ZERO, V_FINITE, V_INF, V_NAN };

/* value = (-1)^sign * mant * 2^(exp - 63), mant with bit 63 set (finite);
 * for NaN, mant holds the source's mantissa bits left-aligned. */
typedef struct uval {
    int cls;
    unsigned sign;
    int32_t exp;
    uint64_t mant;
} uval;

static void set_magnitude(uval *u, uint64_t mag, int32_t exp_of_bit0)
{
    /* mag * 2^exp_of_bit0, mag != 0 */
    int lz = __builtin_clzll(mag);
    u->cls = V_FINITE;
    u->mant = mag << lz;
    u->exp = exp_of_bit0 + 63 - lz;
}

static uval decode_float(uint64_t code, const ffmt *f)
{
    uval u = {V_ZERO, 0, 0, 0};
    unsigned tb = f->ebits + f->mbits;
    uint64_t mag = code & ((1ull << tb) - 1);
    uint64_t emax = (1ull << f->ebits) - 1;
    uint64_t E = mag >> f->mbits, M = mag & ((1ull << f->mbits) - 1);
    u.sign = f->has_sign ? (unsigned)(code >> tb) & 1u : 0u;
    switch (f->nan_kind) {
    case NAN_E8M0:
        if (code == 0xFF) {
            u.cls = V_NAN;
            return u;
        }
        u.cls = V_FINITE;
        u.mant = 1ull << 63;
        u.exp = (int32_t)code - 127;
        return u;
    case NAN_FNUZ:
        if (code == 0x80) {
            u.cls = V_NAN;
            u.sign = 0;
            return u;
        }
        break;
    case NAN_IEEE:
        if (E == emax) {
            u.cls = M ? V_NAN : V_INF;
            u.mant = M << (64 - f->mbits);
            return u;
        }
        break;
    case NAN_ALLONES:
        if (mag == (1ull << tb) - 1) {
            u.cls = V_NAN;
            u.mant = M << (64 - f->mbits);
            return u;
        }
        break;
    default:
        break;
    }
    if (mag == 0)
        return u;
    if (E == 0)
        set_magnitude(&u, M, 1 - f->bias - f->mbits);
    else
        set_magnitude(&u, M | (1ull << f->mbits), (int32_t)E - f->bias - f->mbits);
    return u;
}

/* Overflow result: Inf, the largest finite value, or NaN. */
static uint64_t overflow_code(const ffmt *f, uint64_t sbit, int sat)
{
    if (sat)
        return sbit | f->maxcode;
    if (f->has_inf)
        return sbit | (((1ull << f->ebits) - 1) << f->mbits);
    if (f->nan_kind == NAN_ALLONES)
        return sbit | f->nancode;
    return f->nancode; /* FNUZ, E8M0: unsigned NaN */
}

static uint64_t encode_e8m0(const uval *u, int sat)
{
    switch (u->cls) {
    case V_NAN:
        return 0xFF;
    case V_INF:
        return sat ? 0xFE : 0xFF;
    case V_ZERO:
        return 0x00;
    default:
        break;
    }
    /* |x| = 1.f * 2^exp: nearer of 2^exp and 2^(exp+1), 1.5 going up. */
    int64_t c = (int64_t)u->exp + 127 + (u->mant >= 0xC000000000000000ull);
    if (c < 0)
        return 0x00;
    if (c > 254)
        return sat ? 0xFE : 0xFF;
    return (uint64_t)c;
}

/* keep: a NaN payload is kept (wide target, source mantissa not wider). */
static uint64_t encode_float(const uval *u, const ffmt *f, int sat, int keep)
{
    if (f->nan_kind == NAN_E8M0)
        return encode_e8m0(u, sat);
    unsigned tb = f->ebits + f->mbits;
    uint64_t sbit = (uint64_t)u->sign << tb;
    uint64_t emaxf = ((1ull << f->ebits) - 1) << f->mbits;
    switch (u->cls) {
    case V_NAN:
        if (keep)
            return sbit | emaxf | (u->mant >> (64 - f->mbits)) | (1ull << (f->mbits - 1));
        return f->nan_kind == NAN_FNUZ ? f->nancode : (sbit | f->nancode);
    case V_INF:
        if (f->has_inf)
            return sbit | emaxf;
        return overflow_code(f, sbit, sat);
    case V_ZERO:
        return f->nan_kind == NAN_FNUZ ? 0 : sbit;
    default:
        break;
    }
    int32_t emin = 1 - f->bias;
    int64_t shift = 63 - f->mbits;
    int sub = u->exp < emin;
    if (sub)
        shift += (int64_t)emin - u->exp;
    uint64_t kept;
    if (shift > 64) {
        kept = 0; /* below half the smallest subnormal */
    } else if (shift == 64) {
        kept = u->mant > (1ull << 63); /* exactly half ties to even 0 */
    } else {
        kept = u->mant >> shift;
        uint64_t rem = u->mant & ((1ull << shift) - 1), half = 1ull << (shift - 1);
        kept += (rem > half) | ((rem == half) & (kept & 1));
    }
    uint64_t code;
    if (sub)
        code = kept; /* a carry into bit mbits is the smallest normal */
    else
        code = ((uint64_t)((int64_t)u->exp + f->bias) << f->mbits) + kept - (1ull << f->mbits);
    if (code == 0)
        return f->nan_kind == NAN_FNUZ ? 0 : sbit;
    if (code > f->maxcode)
        return overflow_code(f, sbit, sat);
    return sbit | code;
}

static uval decode_int(uint64_t raw, st_dtype d)
{
    uval u = {V_ZERO, 0, 0, 0};
    unsigned bits = st_dtype_bits(d);
    if (d == ST_BOOL)
        raw = raw != 0;
    if (int_signed(d) && bits < 64 && (raw >> (bits - 1)) & 1)
        raw |= ~0ull << bits; /* sign-extend */
    if (raw == 0)
        return u;
    uint64_t mag = raw;
    if (int_signed(d) && (int64_t)raw < 0) {
        u.sign = 1;
        mag = 0 - raw;
    }
    set_magnitude(&u, mag, 0);
    return u;
}

/* Truncation toward zero; NaN -> 0; out of range clamps. */
static uint64_t encode_int(const uval *u, st_dtype d)
{
    if (d == ST_BOOL)
        return u->cls != V_ZERO;
    if (u->cls == V_ZERO || u->cls == V_NAN)
        return 0;
    unsigned bits = st_dtype_bits(d);
    int sgn = int_signed(d);
    uint64_t mask = bits == 64 ? ~0ull : (1ull << bits) - 1;
    uint64_t lim = u->sign ? (sgn ? 1ull << (bits - 1) : 0) : (sgn ? (mask >> 1) : mask);
    uint64_t mag;
    if (u->cls == V_INF || u->exp >= 64)
        mag = ~0ull;
    else if (u->exp < 0)
        mag = 0;
    else
        mag = u->mant >> (63 - u->exp);
    if (mag > lim)
        mag = lim;
    return (u->sign ? 0 - mag : mag) & mask;
}

/* Integer/BOOL to integer/BOOL: wrap-around as C, BOOL is "non-zero". */
static uint64_t int_to_int(uint64_t raw, st_dtype from, st_dtype to)
{
    unsigned fb = st_dtype_bits(from), tb = st_dtype_bits(to);
    if (from == ST_BOOL)
        raw = raw != 0;
    else if (int_signed(from) && fb < 64 && (raw >> (fb - 1)) & 1)
        raw |= ~0ull << fb;
    if (to == ST_BOOL)
        return raw != 0;
    return tb == 64 ? raw : raw & ((1ull << tb) - 1);
}

/* ------------------------------------------------------------------------ */
/* The general path                                                          */
/* ------------------------------------------------------------------------ */

typedef struct pair {
    st_dtype from, to;
    int fk, tk;
    unsigned fbits, tbits;
    const ffmt *ff, *tf;
    int sat, keep;
} pair;

static pair make_pair(st_dtype to, st_dtype from, unsigned flags)
{
    pair p;
    p.from = from;
    p.to = to;
    p.fk = kind_of(from);
    p.tk = kind_of(to);
    p.fbits = st_dtype_bits(from);
    p.tbits = st_dtype_bits(to);
    p.ff = &fmts[from];
    p.tf = &fmts[to];
    p.sat = (flags & ST_CONVERT_SATURATE) != 0;
    p.keep = 0;
    if ((p.fk == K_FLOAT || p.fk == K_SUBBYTE) && p.tk == K_FLOAT && p.tf->wide &&
        p.ff->mbits <= p.tf->mbits)
        p.keep = 1;
    return p;
}

static inline uint64_t convert_one(const pair *p, uint64_t code)
{
    int from_int = p->fk == K_INT || p->fk == K_BOOL;
    int to_int = p->tk == K_INT || p->tk == K_BOOL;
    if (from_int && to_int)
        return int_to_int(code, p->from, p->to);
    /* BF16 -> F32 is the exact bit extension, a signalling NaN included. */
    if (p->from == ST_BF16 && p->to == ST_F32)
        return code << 16;
    uval u = from_int ? decode_int(code, p->from) : decode_float(code, p->ff);
    return to_int ? encode_int(&u, p->to) : encode_float(&u, p->tf, p->sat, p->keep);
}

void st_convert_generic(st_dtype to, void *dst, st_dtype from, const void *src, size_t n,
                        unsigned flags)
{
    pair p = make_pair(to, from, flags);
    const unsigned char *s = src;
    unsigned char *d = dst;
    if (from == to) {
        if (n)
            memcpy(dst, src, (size_t)((uint64_t)n * p.fbits / 8));
        return;
    }
    for (size_t i = 0; i < n; i++)
        store_code(d, p.tbits, i, convert_one(&p, load_code(s, p.fbits, i)));
}

/* ------------------------------------------------------------------------ */
/* Fast scalar paths (the same bits as the general path; tested so)          */
/* ------------------------------------------------------------------------ */

static inline uint16_t f32_to_f16(uint32_t x, int sat)
{
    uint32_t sign = (x >> 16) & 0x8000u, a = x & 0x7FFFFFFFu;
    if (__builtin_expect(a >= 0x477FF000u, 0)) { /* rounds to 65536 or more; Inf; NaN */
        if (a > 0x7F800000u)
            return (uint16_t)(sign | 0x7E00u);
        if (a == 0x7F800000u || !sat)
            return (uint16_t)(sign | 0x7C00u);
        return (uint16_t)(sign | 0x7BFFu);
    }
    /* Both roundings, then a select (no branch on the data, which is often
     * spread across the normal/subnormal boundary of F16). Normal from
     * 2^-14 up: round at bit 13 and rebias. Below: units of 2^-24, at a
     * shift of 14..24 (25 and up give 0; F32 subnormals end up there). */
    uint32_t nrm = (a + 0xFFFu + ((a >> 13) & 1u) - 0x38000000u) >> 13;
    uint32_t sh = 126 - (a >> 23); /* wraps for large a: clamped, unused */
    sh = sh > 25 ? 25 : sh < 14 ? 14 : sh;
    uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
    uint32_t kept = m >> sh, rem = m & ((1u << sh) - 1), half = 1u << (sh - 1);
    uint32_t sub = kept + ((rem > half) | ((rem == half) & (kept & 1u)));
    uint32_t use_nrm = 0u - (uint32_t)(a >= 0x38800000u); /* all ones or zero */
    return (uint16_t)(sign | (nrm & use_nrm) | (sub & ~use_nrm));
}

static inline uint16_t f32_to_bf16(uint32_t x, int sat)
{
    uint32_t sign = (x >> 16) & 0x8000u, a = x & 0x7FFFFFFFu;
    if (a > 0x7F800000u)
        return (uint16_t)(sign | 0x7FC0u);
    if (sat && a >= 0x7F7F8000u && a != 0x7F800000u)
        return (uint16_t)(sign | 0x7F7Fu);
    return (uint16_t)((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

static inline uint32_t f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
    if (e == 0x1F)
        return sign | 0x7F800000u | (m << 13) | (m ? 0x400000u : 0);
    if (e)
        return sign | ((e + 112) << 23) | (m << 13);
    if (!m)
        return sign;
    int p = 31 - __builtin_clz(m); /* leading one, 0..9 */
    uint32_t shift = 10 - (uint32_t)p;
    return sign | ((113 - shift) << 23) | (((m << shift) & 0x3FFu) << 13);
}

static void run_f32_to_f16(unsigned char *d, const unsigned char *s, size_t n, int sat)
{
    for (size_t i = 0; i < n; i++)
        st16(d + 2 * i, f32_to_f16(ld32(s + 4 * i), sat));
}

static void run_f32_to_bf16(unsigned char *d, const unsigned char *s, size_t n, int sat)
{
    for (size_t i = 0; i < n; i++)
        st16(d + 2 * i, f32_to_bf16(ld32(s + 4 * i), sat));
}

static void run_f16_to_f32(unsigned char *d, const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        st32(d + 4 * i, f16_to_f32(ld16(s + 2 * i)));
}

static void run_bf16_to_f32(unsigned char *d, const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        st32(d + 4 * i, (uint32_t)ld16(s + 2 * i) << 16);
}

static const st_f8_fmt f8_e4m3 = {3, 7, 0x7E, 0, 0x7F, 0};
static const st_f8_fmt f8_e5m2 = {2, 15, 0x7B, 0x7C, 0x7F, 0};
static const st_f8_fmt f8_e4m3fnuz = {3, 8, 0x7F, 0, 0x80, 1};
static const st_f8_fmt f8_e5m2fnuz = {2, 16, 0x7F, 0, 0x80, 1};

static const st_f8_fmt *f8_fmt_of(st_dtype d)
{
    switch (d) {
    case ST_F8_E4M3: return &f8_e4m3;
    case ST_F8_E5M2: return &f8_e5m2;
    case ST_F8_E4M3FNUZ: return &f8_e4m3fnuz;
    case ST_F8_E5M2FNUZ: return &f8_e5m2fnuz;
    default: return NULL;
    }
}

/* F32 -> an 8-bit kind, integer only (same bits as encode_float). */
static inline uint8_t f32_to_f8(uint32_t x, const st_f8_fmt *f, int sat)
{
    uint32_t a = x & 0x7FFFFFFFu, sign = (x >> 24) & 0x80u;
    uint32_t nan = f->fnuz ? 0x80u : sign | f->nancode;
    if (a >= 0x7F800000u) {
        if (a > 0x7F800000u)
            return (uint8_t)nan;
        if (f->infcode)
            return (uint8_t)(sign | f->infcode);
        return (uint8_t)(sat ? sign | f->maxcode : nan);
    }
    uint32_t e = a >> 23, c;
    if (e >= 128 - f->bias) { /* normal in the target */
        uint32_t shift = 23 - f->mbits;
        uint32_t r = (a + (1u << (shift - 1)) - 1 + ((a >> shift) & 1u)) >> shift;
        c = r - ((127 - f->bias) << f->mbits);
        if (c > f->maxcode)
            return (uint8_t)(sat ? sign | f->maxcode : f->infcode ? sign | f->infcode : nan);
    } else { /* subnormal in the target (or zero); F32 subnormals end up 0 */
        uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
        uint32_t sh = 151 - f->bias - f->mbits - e;
        if (sh > 26)
            sh = 26;
        uint32_t kept = m >> sh, rem = m & ((1u << sh) - 1), half = 1u << (sh - 1);
        c = kept + ((rem > half) | ((rem == half) & (kept & 1u)));
    }
    if (c == 0)
        return (uint8_t)(f->fnuz ? 0 : sign);
    return (uint8_t)(sign | c);
}

static void run_f32_to_f8(unsigned char *d, const unsigned char *s, size_t n, const st_f8_fmt *f,
                          int sat)
{
    for (size_t i = 0; i < n; i++)
        d[i] = f32_to_f8(ld32(s + 4 * i), f, sat);
}

/* F32 -> F64: exact; NaN keeps sign and payload, quiet bit set. */
static inline uint64_t f32_to_f64(uint32_t x)
{
    uint64_t sign = (uint64_t)(x >> 31) << 63;
    uint32_t e = (x >> 23) & 0xFFu, m = x & 0x7FFFFFu;
    if (e == 0xFF)
        return sign | 0x7FF0000000000000ull | ((uint64_t)m << 29) | (m ? 1ull << 51 : 0);
    if (e)
        return sign | ((uint64_t)(e + 896) << 52) | ((uint64_t)m << 29);
    if (!m)
        return sign;
    int p = 31 - __builtin_clz(m); /* leading one, 0..22 */
    uint64_t shift = 23 - (uint64_t)p;
    return sign | ((uint64_t)(897 - shift) << 52) | (((uint64_t)m << shift & 0x7FFFFFu) << 29);
}

/* F64 -> F32: RNE; NaN -> 0x7FC00000 | sign. */
static inline uint32_t f64_to_f32(uint64_t x, int sat)
{
    uint32_t sign = (uint32_t)(x >> 32) & 0x80000000u;
    uint64_t a = x & 0x7FFFFFFFFFFFFFFFull;
    if (a >= 0x47EFFFFFF0000000ull) { /* rounds past FLT_MAX; Inf; NaN */
        if (a > 0x7FF0000000000000ull)
            return sign | 0x7FC00000u;
        if (a == 0x7FF0000000000000ull || !sat)
            return sign | 0x7F800000u;
        return sign | 0x7F7FFFFFu;
    }
    if (a >= 0x3810000000000000ull) { /* 2^-126 and up: normal in F32 */
        a += 0xFFFFFFFull + ((a >> 29) & 1u);
        return sign | (uint32_t)((a - 0x3800000000000000ull) >> 29);
    }
    if (a <= 0x3690000000000000ull) /* at most 2^-150: rounds to zero */
        return sign;
    uint64_t e = a >> 52, m = (a & 0xFFFFFFFFFFFFFull) | 0x10000000000000ull;
    uint64_t sh = 926 - e; /* value m * 2^(e-1075), unit 2^-149: 30..53 */
    uint64_t kept = m >> sh, rem = m & ((1ull << sh) - 1), half = 1ull << (sh - 1);
    kept += (rem > half) | ((rem == half) & (kept & 1u));
    return sign | (uint32_t)kept;
}

static void run_f32_to_f64(unsigned char *d, const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        st64(d + 8 * i, f32_to_f64(ld32(s + 4 * i)));
}

static void run_f64_to_f32(unsigned char *d, const unsigned char *s, size_t n, int sat)
{
    for (size_t i = 0; i < n; i++)
        st32(d + 4 * i, f64_to_f32(ld64(s + 8 * i), sat));
}

/* Lookup table over every source code (8- and 16-bit sources), built on
 * the stack or heap for this call only: exact by construction. */
static int run_table(const pair *p, unsigned char *d, const unsigned char *s, size_t n)
{
    if (p->fbits != 8 && p->fbits != 16)
        return 0;
    size_t codes = (size_t)1 << p->fbits;
    uint64_t small[256];
    uint64_t *tab = small;
    if (p->fbits == 16) {
        /* worth building only when it is used several times over */
        if (n < codes * 4)
            return 0;
        tab = malloc(codes * sizeof *tab);
        if (!tab)
            return 0;
    } else if (n < 1024) {
        return 0;
    }
    for (size_t c = 0; c < codes; c++)
        tab[c] = convert_one(p, c);
    switch (p->tbits) {
    case 8:
        for (size_t i = 0; i < n; i++)
            d[i] = (unsigned char)tab[p->fbits == 8 ? s[i] : ld16(s + 2 * i)];
        break;
    case 16:
        for (size_t i = 0; i < n; i++)
            st16(d + 2 * i, (uint16_t)tab[p->fbits == 8 ? s[i] : ld16(s + 2 * i)]);
        break;
    case 32:
        for (size_t i = 0; i < n; i++)
            st32(d + 4 * i, (uint32_t)tab[p->fbits == 8 ? s[i] : ld16(s + 2 * i)]);
        break;
    default:
        for (size_t i = 0; i < n; i++)
            st64(d + 8 * i, tab[p->fbits == 8 ? s[i] : ld16(s + 2 * i)]);
        break;
    }
    if (tab != small)
        free(tab);
    return 1;
}

/* The fast paths from F32 (SIMD where there is one, then scalar).
 * Returns 0 when `to` has none. */
static int from_f32_fast(st_dtype to, unsigned char *d, const unsigned char *s, size_t n, int sat,
                         int level)
{
    size_t done = 0;
    const st_f8_fmt *f8 = f8_fmt_of(to);
    if (to == ST_F16) {
        if (level)
            done = st_simd_f32_to_f16(d, s, n, sat, level);
        run_f32_to_f16(d + 2 * done, s + 4 * done, n - done, sat);
    } else if (to == ST_BF16) {
        if (level)
            done = st_simd_f32_to_bf16(d, s, n, sat, level);
        run_f32_to_bf16(d + 2 * done, s + 4 * done, n - done, sat);
    } else if (f8) {
        if (level)
            done = st_simd_f32_to_f8(d, s, n, f8, sat, level);
        run_f32_to_f8(d + done, s + 4 * done, n - done, f8, sat);
    } else if (to == ST_F64) {
        run_f32_to_f64(d, s, n);
    } else {
        return 0;
    }
    return 1;
}

/* F16 or BF16 -> F32, exact (SIMD, then scalar). */
static void half_to_f32(st_dtype from, unsigned char *d, const unsigned char *s, size_t n,
                        int level)
{
    size_t done = 0;
    if (from == ST_F16) {
        if (level)
            done = st_simd_f16_to_f32(d, s, n, level);
        run_f16_to_f32(d + 4 * done, s + 2 * done, n - done);
    } else {
        if (level)
            done = st_simd_bf16_to_f32(d, s, n, level);
        run_bf16_to_f32(d + 4 * done, s + 2 * done, n - done);
    }
}

/* Converts n elements (src/dst already offset to the first one). */
static void convert_range(st_dtype to, unsigned char *d, st_dtype from, const unsigned char *s,
                          size_t n, unsigned flags)
{
    int sat = (flags & ST_CONVERT_SATURATE) != 0;
    int level = (flags & ST_CONVERT_SCALAR) ? ST_SIMD_NONE : st_simd_level();
    if (from == ST_F32 && to != ST_F32 && from_f32_fast(to, d, s, n, sat, level))
        return;
    if ((from == ST_F16 || from == ST_BF16) && to == ST_F32) {
        half_to_f32(from, d, s, n, level);
        return;
    }
    if (from == ST_F64 && to == ST_F32) {
        run_f64_to_f32(d, s, n, sat);
        return;
    }
    /* F16/BF16 to another float kind with an F32 fast path: through F32 in
     * blocks. The widening is exact, so there is still one rounding, and
     * the NaN rules compose to the same bits (tested against the general
     * path); no set-up cost, unlike a lookup table. */
    if ((from == ST_F16 || from == ST_BF16) && to != from &&
        (to == ST_F16 || to == ST_BF16 || to == ST_F64 || f8_fmt_of(to))) {
        uint32_t tmp[1024];
        size_t ob = st_dtype_bits(to) / 8;
        for (size_t i = 0; i < n; i += 1024) {
            size_t k = n - i < 1024 ? n - i : 1024;
            half_to_f32(from, (unsigned char *)tmp, s + 2 * i, k, level);
            from_f32_fast(to, d + ob * i, (const unsigned char *)tmp, k, sat, level);
        }
        return;
    }
    if (from == to) {
        st_convert_generic(to, d, from, s, n, flags);
        return;
    }
    pair p = make_pair(to, from, flags);
    if (!(flags & ST_CONVERT_SCALAR) && run_table(&p, d, s, n))
        return;
    st_convert_generic(to, d, from, s, n, flags);
}

/* ------------------------------------------------------------------------ */
/* Public API                                                                */
/* ------------------------------------------------------------------------ */

int st_convert_supported(st_dtype from, st_dtype to)
{
    int fk = kind_of(from), tk = kind_of(to);
    if (fk == K_NONE || tk == K_NONE)
        return 0;
    if (from == to)
        return 1;
    if (fk == K_OTHER || tk == K_OTHER || tk == K_SUBBYTE)
        return 0;
    return 1;
}

/* Validates a call; sets the byte counts. */
static int check_args(st_dtype to, void *dst, st_dtype from, const void *src, uint64_t n,
                      unsigned flags, size_t *n_out, st_error *err)
{
    if (flags & ~(ST_CONVERT_SATURATE | ST_CONVERT_SCALAR))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_convert: unknown flags 0x%x", flags);
    if (!st_convert_supported(from, to)) {
        const char *fn = st_dtype_name(from), *tn = st_dtype_name(to);
        return st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET,
                       "st_convert: no conversion from %s to %s", fn ? fn : "(invalid)",
                       tn ? tn : "(invalid)");
    }
    uint64_t fbytes, tbytes;
    int rc = st_bytes_for(from, n, &fbytes);
    if (rc == ST_OK)
        rc = st_bytes_for(to, n, &tbytes);
    if (rc == ST_E_MISALIGNED)
        return st_fail(err, rc, ST_NO_OFFSET,
                       "st_convert: %llu elements of %s are not a whole number of bytes",
                       (unsigned long long)n, st_dtype_name(from));
    if (rc != ST_OK || fbytes > SIZE_MAX || tbytes > SIZE_MAX || n > SIZE_MAX)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_convert: %llu elements is too many",
                       (unsigned long long)n);
    if (n && (!dst || !src))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_convert: NULL buffer");
    *n_out = (size_t)n;
    return ST_OK;
}

int st_convert(st_dtype to, void *dst, st_dtype from, const void *src, uint64_t n,
               unsigned flags, st_error *err)
{
    size_t count;
    int rc = check_args(to, dst, from, src, n, flags, &count, err);
    if (rc)
        return rc;
    if (count)
        convert_range(to, dst, from, src, count, flags);
    return ST_OK;
}

typedef struct job {
    st_dtype to, from;
    unsigned char *d;
    const unsigned char *s;
    size_t n;
    unsigned flags;
} job;

static void *job_run(void *arg)
{
    job *j = arg;
    convert_range(j->to, j->d, j->from, j->s, j->n, j->flags);
    return NULL;
}

#define MT_MAX_THREADS 64
#define MT_MIN_BYTES ((size_t)1 << 20)

const char *st_convert_simd_name(void)
{
    switch (st_simd_level()) {
    case ST_SIMD_AVX512:
        return "avx512";
    case ST_SIMD_AVX2:
        return "avx2+f16c";
    default:
        return "scalar";
    }
}

int st_convert_mt(st_dtype to, void *dst, st_dtype from, const void *src, uint64_t n,
                  unsigned flags, unsigned threads, st_error *err)
{
    size_t count;
    int rc = check_args(to, dst, from, src, n, flags, &count, err);
    if (rc || !count)
        return rc;
    if (threads == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cpus > 0 ? (unsigned)cpus : 1;
    }
    if (threads > MT_MAX_THREADS)
        threads = MT_MAX_THREADS;
    unsigned fbits = st_dtype_bits(from), tbits = st_dtype_bits(to);
    unsigned maxbits = fbits > tbits ? fbits : tbits;
    /* at least MT_MIN_BYTES of the wider side per thread */
    size_t per_min = MT_MIN_BYTES / (maxbits / 8 ? maxbits / 8 : 1);
    size_t want = count / per_min;
    if (want < threads)
        threads = want ? (unsigned)want : 1;
    if (threads <= 1) {
        convert_range(to, dst, from, src, count, flags);
        return ST_OK;
    }
    /* pieces of a multiple of 64 elements: whole bytes for sub-byte kinds
     * and whole cache lines mostly */
    size_t piece = ((count + threads - 1) / threads + 63) & ~(size_t)63;
    job jobs[MT_MAX_THREADS];
    pthread_t tids[MT_MAX_THREADS];
    int started[MT_MAX_THREADS];
    unsigned nj = 0;
    for (size_t at = 0; at < count && nj < threads; at += piece, nj++) {
        size_t len = count - at < piece ? count - at : piece;
        jobs[nj].to = to;
        jobs[nj].from = from;
        jobs[nj].d = (unsigned char *)dst + at * tbits / 8;
        jobs[nj].s = (const unsigned char *)src + at * fbits / 8;
        jobs[nj].n = len;
        jobs[nj].flags = flags;
    }
    /* the calling thread does piece 0 itself */
    for (unsigned i = 1; i < nj; i++)
        started[i] = pthread_create(&tids[i], NULL, job_run, &jobs[i]) == 0;
    job_run(&jobs[0]);
    for (unsigned i = 1; i < nj; i++) {
        if (started[i])
            pthread_join(tids[i], NULL);
        else
            job_run(&jobs[i]);
    }
    return ST_OK;
}
