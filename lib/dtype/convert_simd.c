/* x86 SIMD kernels for the hot conversions (F32 <-> F16, F32 <-> BF16,
 * F32 -> the four FP8 kinds with Inf/NaN rules of their own).
 *
 * Compiled without any -m flag: each kernel carries its own target
 * attribute and is only called after a run-time check of the CPU and of the
 * OS's register state (CPUID + XGETBV). CPUID is read directly rather than
 * through __builtin_cpu_supports because clang 14 does not know "f16c".
 *
 * Each kernel gives exactly the bits of the scalar code in convert.c:
 *  - F32 -> F16 uses the hardware conversion (VCVTPS2PH, round to nearest
 *    even, exact subnormals; it ignores MXCSR.DAZ/FTZ) after two integer
 *    fix-ups: NaN lanes are replaced by the quiet NaN of the same sign, so
 *    the output is the canonical 0x7E00 | sign, and, when saturating, finite
 *    lanes that would overflow are replaced by +-65504.
 *  - F32 -> BF16 is integer rounding (add 0x7FFF + lsb, shift), not
 *    VCVTNEPS2BF16, which flushes subnormals to zero.
 *  - F16 -> F32 is VCVTPH2PS (exact; quiets a signalling NaN, as the scalar
 *    code does). BF16 -> F32 is a zero-extend and shift.
 *  - F32 -> FP8 is integer only: rounding at a fixed shift where the result
 *    is normal, at a per-lane shift (VPSRLVD) where it is subnormal, then
 *    the overflow, Inf and NaN codes of the kind by masks. */
#include "dtype/convert.h"

/* -DST_NO_SIMD builds the portable code only (as on other CPUs). */
#if (defined(__x86_64__) || defined(__i386__)) && !defined(ST_NO_SIMD)
#include <cpuid.h>
#include <stdatomic.h>
#include <immintrin.h>

/* Software prefetch of the input, 4 KiB ahead: on large arrays a single
 * core's bandwidth is bound by how many misses are in flight, and this
 * keeps more of them going (measured about +25% over hardware prefetch
 * alone on 256 MiB). Prefetches never fault, past the end included. */
#define PREFETCH(p) _mm_prefetch((const char *)(p) + 4096, _MM_HINT_T0)

static uint64_t read_xcr0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static int detect_level(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return ST_SIMD_NONE;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !avx || !f16c)
        return ST_SIMD_NONE;
    uint64_t xcr0 = read_xcr0();
    if ((xcr0 & 0x6) != 0x6) /* XMM and YMM state enabled by the OS */
        return ST_SIMD_NONE;
    if (__get_cpuid_max(0, NULL) < 7)
        return ST_SIMD_NONE;
    __cpuid_count(7, 0, a, b, c, d);
    int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1, avx512bw = (b >> 30) & 1,
        avx512vl = (b >> 31) & 1;
    if (!avx2)
        return ST_SIMD_NONE;
    if (avx512f && avx512bw && avx512vl && (xcr0 & 0xE6) == 0xE6) /* opmask, ZMM */
        return ST_SIMD_AVX512;
    return ST_SIMD_AVX2;
}

/* cpuid traps to the hypervisor in a virtual machine (tens of
 * microseconds), and conversions run in small pieces: the answer, a fact
 * about the machine that never changes, is kept once found. Threads that
 * race here compute the same value. */
static _Atomic int cached_level = -1;

int st_simd_level(void)
{
    int level = atomic_load_explicit(&cached_level, memory_order_relaxed);
    if (level < 0) {
        level = detect_level();
        atomic_store_explicit(&cached_level, level, memory_order_relaxed);
    }
    return level;
}

/* ---- AVX2 + F16C ---- */

#define AVX2_T __attribute__((target("avx2,f16c")))

/* NaN lanes -> quiet NaN with the sign; saturating: finite lanes that
 * round past 65504 -> +-65504. */
AVX2_T static inline __m256i fix_for_f16_avx2(__m256i x, int sat)
{
    const __m256i absm = _mm256_set1_epi32(0x7FFFFFFF), inf = _mm256_set1_epi32(0x7F800000);
    __m256i a = _mm256_and_si256(x, absm);
    __m256i sign = _mm256_andnot_si256(absm, x);
    __m256i nan = _mm256_cmpgt_epi32(a, inf);
    x = _mm256_blendv_epi8(x, _mm256_or_si256(sign, _mm256_set1_epi32(0x7FC00000)), nan);
    if (sat) {
        __m256i big = _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x477FEFFF));
        __m256i fin = _mm256_cmpgt_epi32(inf, a);
        x = _mm256_blendv_epi8(x, _mm256_or_si256(sign, _mm256_set1_epi32(0x477FE000)),
                               _mm256_and_si256(big, fin));
    }
    return x;
}

AVX2_T static size_t f32_to_f16_avx2(void *dst, const void *src, size_t n, int sat)
{
    const unsigned char *s = src;
    unsigned char *d = dst;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        PREFETCH(s + 4 * i);
        __m256i x = _mm256_loadu_si256((const __m256i *)(s + 4 * i));
        x = fix_for_f16_avx2(x, sat);
        __m128i h = _mm256_cvtps_ph(_mm256_castsi256_ps(x), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(d + 2 * i), h);
    }
    return i;
}

AVX2_T static inline __m256i bf16_round_avx2(__m256i x, int sat)
{
    const __m256i absm = _mm256_set1_epi32(0x7FFFFFFF), inf = _mm256_set1_epi32(0x7F800000);
    __m256i a = _mm256_and_si256(x, absm);
    __m256i sign16 = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(0x8000));
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(x, _mm256_add_epi32(_mm256_set1_epi32(0x7FFF), lsb));
    r = _mm256_srli_epi32(r, 16);
    __m256i nan = _mm256_cmpgt_epi32(a, inf);
    r = _mm256_blendv_epi8(r, _mm256_or_si256(sign16, _mm256_set1_epi32(0x7FC0)), nan);
    if (sat) {
        __m256i big = _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x7F7F7FFF));
        __m256i fin = _mm256_cmpgt_epi32(inf, a);
        r = _mm256_blendv_epi8(r, _mm256_or_si256(sign16, _mm256_set1_epi32(0x7F7F)),
                               _mm256_and_si256(big, fin));
    }
    return r;
}

AVX2_T static size_t f32_to_bf16_avx2(void *dst, const void *src, size_t n, int sat)
{
    const unsigned char *s = src;
    unsigned char *d = dst;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        PREFETCH(s + 4 * i);
        __m256i r0 = bf16_round_avx2(_mm256_loadu_si256((const __m256i *)(s + 4 * i)), sat);
        __m256i r1 = bf16_round_avx2(_mm256_loadu_si256((const __m256i *)(s + 4 * i + 32)), sat);
        /* values are 0..0xFFFF, so the unsigned saturating pack is exact;
         * it interleaves 128-bit lanes, which the permute undoes */
        __m256i p = _mm256_packus_epi32(r0, r1);
        p = _mm256_permute4x64_epi64(p, 0xD8);
        _mm256_storeu_si256((__m256i *)(d + 2 * i), p);
    }
    return i;
}

AVX2_T static size_t f16_to_f32_avx2(void *dst, const void *src, size_t n)
{
    const unsigned char *s = src;
    unsigned char *d = dst;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(s + 2 * i));
        _mm256_storeu_ps((float *)(void *)(d + 4 * i), _mm256_cvtph_ps(h));
    }
    return i;
}

AVX2_T static size_t bf16_to_f32_avx2(void *dst, const void *src, size_t n)
{
    const unsigned char *s = src;
    unsigned char *d = dst;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(s + 2 * i));
        __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
        _mm256_storeu_si256((__m256i *)(d + 4 * i), w);
    }
    return i;
}

/* F32 -> an 8-bit kind: 8 lanes of the same steps as the scalar f32_to_f8
 * (every value compared here fits in 31 bits, so signed compares do). */
AVX2_T static inline __m256i f8_avx2(__m256i x, const st_f8_fmt *f, int sat)
{
    const __m256i absm = _mm256_set1_epi32(0x7FFFFFFF), inf = _mm256_set1_epi32(0x7F800000);
    const __m256i one = _mm256_set1_epi32(1), zero = _mm256_setzero_si256();
    const unsigned shift = 23 - f->mbits;
    const __m128i cnt = _mm_cvtsi32_si128((int)shift);
    __m256i a = _mm256_and_si256(x, absm);
    __m256i sign = _mm256_and_si256(_mm256_srli_epi32(x, 24), _mm256_set1_epi32(0x80));
    __m256i e = _mm256_srli_epi32(a, 23);
    __m256i lsb = _mm256_and_si256(_mm256_srl_epi32(a, cnt), one);
    __m256i r = _mm256_add_epi32(a, _mm256_set1_epi32((int)((1u << (shift - 1)) - 1)));
    r = _mm256_srl_epi32(_mm256_add_epi32(r, lsb), cnt);
    __m256i cn = _mm256_sub_epi32(r, _mm256_set1_epi32((int)((127 - f->bias) << f->mbits)));
    __m256i m = _mm256_or_si256(_mm256_and_si256(a, _mm256_set1_epi32(0x7FFFFF)),
                                _mm256_set1_epi32(0x800000));
    __m256i sh = _mm256_min_epu32(
        _mm256_sub_epi32(_mm256_set1_epi32((int)(151 - f->bias - f->mbits)), e),
        _mm256_set1_epi32(26));
    __m256i kept = _mm256_srlv_epi32(m, sh);
    __m256i bit = _mm256_sllv_epi32(one, sh);
    __m256i rem = _mm256_and_si256(m, _mm256_sub_epi32(bit, one));
    __m256i half = _mm256_srli_epi32(bit, 1);
    __m256i up = _mm256_or_si256(
        _mm256_cmpgt_epi32(rem, half),
        _mm256_and_si256(_mm256_cmpeq_epi32(rem, half),
                         _mm256_cmpeq_epi32(_mm256_and_si256(kept, one), one)));
    __m256i cs = _mm256_sub_epi32(kept, up); /* up is -1 where rounding up */
    __m256i isnorm = _mm256_cmpgt_epi32(e, _mm256_set1_epi32((int)(127 - f->bias)));
    __m256i c = _mm256_blendv_epi8(cs, cn, isnorm);
    __m256i maxc = _mm256_set1_epi32((int)f->maxcode);
    __m256i nanc = _mm256_set1_epi32((int)f->nancode);
    __m256i infc = _mm256_set1_epi32((int)f->infcode);
    __m256i nanr = f->fnuz ? nanc : _mm256_or_si256(sign, nanc);
    __m256i res = _mm256_or_si256(c, sign);
    if (f->fnuz)
        res = _mm256_blendv_epi8(res, zero, _mm256_cmpeq_epi32(c, zero));
    __m256i ovr = sat ? _mm256_or_si256(sign, maxc)
                      : f->infcode ? _mm256_or_si256(sign, infc) : nanr;
    res = _mm256_blendv_epi8(res, ovr, _mm256_cmpgt_epi32(c, maxc));
    __m256i infr = f->infcode ? _mm256_or_si256(sign, infc)
                              : sat ? _mm256_or_si256(sign, maxc) : nanr;
    res = _mm256_blendv_epi8(res, infr, _mm256_cmpeq_epi32(a, inf));
    res = _mm256_blendv_epi8(res, nanr, _mm256_cmpgt_epi32(a, inf));
    return res;
}

AVX2_T static size_t f32_to_f8_avx2(void *dst, const void *src, size_t n, const st_f8_fmt *f,
                                    int sat)
{
    const unsigned char *s = src;
    unsigned char *d = dst;
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        PREFETCH(s + 4 * i);
        PREFETCH(s + 4 * i + 64);
        __m256i r0 = f8_avx2(_mm256_loadu_si256((const __m256i *)(s + 4 * i)), f, sat);
        __m256i r1 = f8_avx2(_mm256_loadu_si256((const __m256i *)(s + 4 * i + 32)), f, sat);
        __m256i r2 = f8_avx2(_mm256_loadu_si256((const __m256i *)(s + 4 * i + 64)), f, sat);
        __m256i r3 = f8_avx2(_mm256_loadu_si256((const __m256i *)(s + 4 * i + 96)), f, sat);
        /* 0..255 in every lane: the saturating packs are exact; they work
         * per 128-bit half, which the final permute puts back in order */
        __m256i b = _mm256_packus_epi16(_mm256_packus_epi32(r0, r1), _mm256_packus_epi32(r2, r3));
        _mm256_storeu_si256((__m256i *)(d + i), _mm256_permutevar8x32_epi32(b, order));
    }
    return i;
}

/* ---- AVX-512 (F, BW, VL) ---- */

#define AVX512_T __attribute__((target("avx512f,avx512bw,avx512vl,avx2,f16c")))

#define NT_MIN_BYTES ((size_t)8 << 20)

/* 16 F32 -> 16 F16 */
AVX512_T static inline __m256i f16_512(__m512i x, int sat)
{
    const __m512i absm = _mm512_set1_epi32(0x7FFFFFFF), inf = _mm512_set1_epi32(0x7F800000);
    __m512i a = _mm512_and_si512(x, absm);
    __m512i sign = _mm512_andnot_si512(absm, x);
    __mmask16 nan = _mm512_cmpgt_epi32_mask(a, inf);
    x = _mm512_mask_mov_epi32(x, nan, _mm512_or_si512(sign, _mm512_set1_epi32(0x7FC00000)));
    if (sat) {
        __mmask16 ov = _mm512_cmpge_epi32_mask(a, _mm512_set1_epi32(0x477FF000)) &
                       _mm512_cmplt_epi32_mask(a, inf);
        x = _mm512_mask_mov_epi32(x, ov, _mm512_or_si512(sign, _mm512_set1_epi32(0x477FE000)));
    }
    return _mm512_cvtps_ph(_mm512_castsi512_ps(x), _MM_FROUND_TO_NEAREST_INT);
}

/* 16 F32 -> 16 BF16 */
AVX512_T static inline __m256i bf16_512(__m512i x, int sat)
{
    const __m512i absm = _mm512_set1_epi32(0x7FFFFFFF), inf = _mm512_set1_epi32(0x7F800000);
    __m512i a = _mm512_and_si512(x, absm);
    __m512i hi = _mm512_srli_epi32(x, 16);
    __m512i r = _mm512_add_epi32(
        x, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), _mm512_and_si512(hi, _mm512_set1_epi32(1))));
    r = _mm512_srli_epi32(r, 16);
    __m512i sign16 = _mm512_and_si512(hi, _mm512_set1_epi32(0x8000));
    __mmask16 nan = _mm512_cmpgt_epi32_mask(a, inf);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(sign16, _mm512_set1_epi32(0x7FC0)));
    if (sat) {
        __mmask16 ov = _mm512_cmpge_epi32_mask(a, _mm512_set1_epi32(0x7F7F8000)) &
                       _mm512_cmplt_epi32_mask(a, inf);
        r = _mm512_mask_mov_epi32(r, ov, _mm512_or_si512(sign16, _mm512_set1_epi32(0x7F7F)));
    }
    return _mm512_cvtepi32_epi16(r);
}

/* The loop around one of the two above. A large output (NT_MIN_BYTES and
 * up, far past the caches) is written with non-temporal stores: no
 * read-for-ownership of the destination, no eviction of useful lines. They
 * need 32-byte alignment, so the first vector is stored unaligned and the
 * aligned loop starts inside it (recomputing a few identical values). */
#define NARROW_LOOP_512(KERNEL)                                                  \
    const unsigned char *s = src;                                                \
    unsigned char *d = dst;                                                      \
    size_t i = 0;                                                                \
    if (n >= 32 && n * 2 >= NT_MIN_BYTES && ((uintptr_t)d & 1) == 0) {          \
        _mm256_storeu_si256((__m256i *)d, KERNEL(_mm512_loadu_si512(s), sat));   \
        i = ((32 - ((uintptr_t)d & 31)) & 31) / 2;                               \
        for (; i + 16 <= n; i += 16) {                                           \
            PREFETCH(s + 4 * i);                                                 \
            _mm256_stream_si256((__m256i *)(void *)(d + 2 * i),                  \
                                KERNEL(_mm512_loadu_si512(s + 4 * i), sat));     \
        }                                                                        \
        _mm_sfence();                                                            \
        return i;                                                                \
    }                                                                            \
    for (; i + 16 <= n; i += 16) {                                               \
        PREFETCH(s + 4 * i);                                                     \
        _mm256_storeu_si256((__m256i *)(d + 2 * i),                              \
                            KERNEL(_mm512_loadu_si512(s + 4 * i), sat));         \
    }                                                                            \
    return i

AVX512_T static size_t f32_to_f16_avx512(void *dst, const void *src, size_t n, int sat)
{
    NARROW_LOOP_512(f16_512);
}

AVX512_T static size_t f32_to_bf16_avx512(void *dst, const void *src, size_t n, int sat)
{
    NARROW_LOOP_512(bf16_512);
}

AVX512_T static size_t f16_to_f32_avx512(void *dst, const void *src, size_t n)
{
    const unsigned char *s = src;
    unsigned char *d = dst;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        PREFETCH(s + 2 * i);
        __m256i h = _mm256_loadu_si256((const __m256i *)(s + 2 * i));
        _mm512_storeu_ps((void *)(d + 4 * i), _mm512_cvtph_ps(h));
    }
    return i;
}

AVX512_T static size_t bf16_to_f32_avx512(void *dst, const void *src, size_t n)
{
    const unsigned char *s = src;
    unsigned char *d = dst;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        PREFETCH(s + 2 * i);
        __m256i h = _mm256_loadu_si256((const __m256i *)(s + 2 * i));
        __m512i w = _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16);
        _mm512_storeu_si512((void *)(d + 4 * i), w);
    }
    return i;
}

/* F32 -> an 8-bit kind (F8_E4M3, F8_E5M2, FNUZ), integer only, the same
 * steps as the scalar f32_to_f8: rounding at a fixed shift for results
 * that are normal in the target, at a per-lane shift for subnormals. */
AVX512_T static size_t f32_to_f8_avx512(void *dst, const void *src, size_t n,
                                        const st_f8_fmt *f, int sat)
{
    const unsigned char *s = src;
    unsigned char *d = dst;
    const unsigned shift = 23 - f->mbits;
    const __m128i cnt = _mm_cvtsi32_si128((int)shift);
    const __m512i absm = _mm512_set1_epi32(0x7FFFFFFF), inf = _mm512_set1_epi32(0x7F800000);
    const __m512i one = _mm512_set1_epi32(1), zero = _mm512_setzero_si512();
    const __m512i rbias = _mm512_set1_epi32((int)((1u << (shift - 1)) - 1));
    const __m512i rebias = _mm512_set1_epi32((int)((127 - f->bias) << f->mbits));
    const __m512i enorm = _mm512_set1_epi32((int)(128 - f->bias));
    const __m512i shbase = _mm512_set1_epi32((int)(151 - f->bias - f->mbits));
    const __m512i shmax = _mm512_set1_epi32(26), implicit = _mm512_set1_epi32(0x800000);
    const __m512i mmask = _mm512_set1_epi32(0x7FFFFF), smask = _mm512_set1_epi32(0x80);
    const __m512i maxc = _mm512_set1_epi32((int)f->maxcode);
    const __m512i nanc = _mm512_set1_epi32((int)f->nancode);
    const __m512i infc = _mm512_set1_epi32((int)f->infcode);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        PREFETCH(s + 4 * i);
        __m512i x = _mm512_loadu_si512((const void *)(s + 4 * i));
        __m512i a = _mm512_and_si512(x, absm);
        __m512i sign = _mm512_and_si512(_mm512_srli_epi32(x, 24), smask);
        __m512i e = _mm512_srli_epi32(a, 23);
        /* normal in the target */
        __m512i lsb = _mm512_and_si512(_mm512_srl_epi32(a, cnt), one);
        __m512i r = _mm512_srl_epi32(_mm512_add_epi32(_mm512_add_epi32(a, rbias), lsb), cnt);
        __m512i cn = _mm512_sub_epi32(r, rebias);
        /* subnormal in the target */
        __m512i m = _mm512_or_si512(_mm512_and_si512(a, mmask), implicit);
        __m512i sh = _mm512_min_epu32(_mm512_sub_epi32(shbase, e), shmax);
        __m512i kept = _mm512_srlv_epi32(m, sh);
        __m512i bit = _mm512_sllv_epi32(one, sh);
        __m512i rem = _mm512_and_si512(m, _mm512_sub_epi32(bit, one));
        __m512i half = _mm512_srli_epi32(bit, 1);
        __mmask16 up = _mm512_cmpgt_epu32_mask(rem, half) |
                       (_mm512_cmpeq_epi32_mask(rem, half) & _mm512_test_epi32_mask(kept, one));
        __m512i cs = _mm512_mask_add_epi32(kept, up, kept, one);
        __m512i c = _mm512_mask_mov_epi32(cs, _mm512_cmpge_epu32_mask(e, enorm), cn);
        /* results */
        __m512i nanr = f->fnuz ? nanc : _mm512_or_si512(sign, nanc);
        __m512i res = _mm512_or_si512(c, sign);
        if (f->fnuz)
            res = _mm512_mask_mov_epi32(res, _mm512_cmpeq_epi32_mask(c, zero), zero);
        __m512i ovr = sat ? _mm512_or_si512(sign, maxc)
                          : f->infcode ? _mm512_or_si512(sign, infc) : nanr;
        res = _mm512_mask_mov_epi32(res, _mm512_cmpgt_epu32_mask(c, maxc), ovr);
        __m512i infr = f->infcode ? _mm512_or_si512(sign, infc)
                                  : sat ? _mm512_or_si512(sign, maxc) : nanr;
        res = _mm512_mask_mov_epi32(res, _mm512_cmpeq_epi32_mask(a, inf), infr);
        res = _mm512_mask_mov_epi32(res, _mm512_cmpgt_epi32_mask(a, inf), nanr);
        _mm_storeu_si128((__m128i *)(d + i), _mm512_cvtepi32_epi8(res));
    }
    return i;
}

size_t st_simd_f32_to_f8(void *dst, const void *src, size_t n, const st_f8_fmt *f, int sat,
                         int level)
{
    if (level >= ST_SIMD_AVX512)
        return f32_to_f8_avx512(dst, src, n, f, sat);
    if (level == ST_SIMD_AVX2)
        return f32_to_f8_avx2(dst, src, n, f, sat);
    return 0;
}

size_t st_simd_f32_to_f16(void *dst, const void *src, size_t n, int sat, int level)
{
    if (level >= ST_SIMD_AVX512)
        return f32_to_f16_avx512(dst, src, n, sat);
    if (level == ST_SIMD_AVX2)
        return f32_to_f16_avx2(dst, src, n, sat);
    return 0;
}

size_t st_simd_f32_to_bf16(void *dst, const void *src, size_t n, int sat, int level)
{
    if (level >= ST_SIMD_AVX512)
        return f32_to_bf16_avx512(dst, src, n, sat);
    if (level == ST_SIMD_AVX2)
        return f32_to_bf16_avx2(dst, src, n, sat);
    return 0;
}

size_t st_simd_f16_to_f32(void *dst, const void *src, size_t n, int level)
{
    if (level >= ST_SIMD_AVX512)
        return f16_to_f32_avx512(dst, src, n);
    if (level == ST_SIMD_AVX2)
        return f16_to_f32_avx2(dst, src, n);
    return 0;
}

size_t st_simd_bf16_to_f32(void *dst, const void *src, size_t n, int level)
{
    if (level >= ST_SIMD_AVX512)
        return bf16_to_f32_avx512(dst, src, n);
    if (level == ST_SIMD_AVX2)
        return bf16_to_f32_avx2(dst, src, n);
    return 0;
}

#else /* not x86 (or ST_NO_SIMD): the scalar code does everything */

int st_simd_level(void)
{
    return ST_SIMD_NONE;
}

size_t st_simd_f32_to_f16(void *dst, const void *src, size_t n, int sat, int level)
{
    (void)dst, (void)src, (void)n, (void)sat, (void)level;
    return 0;
}

size_t st_simd_f32_to_bf16(void *dst, const void *src, size_t n, int sat, int level)
{
    (void)dst, (void)src, (void)n, (void)sat, (void)level;
    return 0;
}

size_t st_simd_f16_to_f32(void *dst, const void *src, size_t n, int level)
{
    (void)dst, (void)src, (void)n, (void)level;
    return 0;
}

size_t st_simd_bf16_to_f32(void *dst, const void *src, size_t n, int level)
{
    (void)dst, (void)src, (void)n, (void)level;
    return 0;
}

size_t st_simd_f32_to_f8(void *dst, const void *src, size_t n, const st_f8_fmt *f, int sat,
                         int level)
{
    (void)dst, (void)src, (void)n, (void)f, (void)sat, (void)level;
    return 0;
}

#endif
