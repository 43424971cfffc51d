/* x86 AVX2 kernels for the GGUF quantizers, giving the bytes of the
 * portable code in quants.c.
 *
 * The k-quants spend their time fitting each sub-block (make_qkx2_quants,
 * make_qx_quants, make_q3_quants): dozens of passes over 16 or 32 values,
 * each a chain of float operations whose order decides the result. Those
 * chains are kept as they are and run 8 at a time: lane j of every vector
 * is sub-block j, so each lane performs exactly the scalar sequence (same
 * operations, same order, each rounded to float; no FMA, as the target
 * attribute does not enable it and the Makefile forbids contraction).
 * Branches of the scalar code become per-lane masks; a lane that the
 * scalar code would have left (an all-zero sub-block) is computed anyway
 * and its result replaced at the end. What follows the fits (scale
 * quantization, final levels, packing) is the portable code. Super-blocks
 * holding a NaN are left to the portable code (see has_nan).
 *
 * Q8_0 vectorizes within a block: its max is order-independent when no
 * value is NaN, and blocks holding NaN or Inf go to the portable code.
 *
 * Compiled without -m flags; each kernel carries its own target attribute
 * and may only be called when st_quant_simd_available() (CPUID + XGETBV,
 * via st_simd_level), which the dispatcher checks once per call rather
 * than each kernel per block run (CPUID traps to the hypervisor in a VM). */
#include "gguf/quants.h"
#include "dtype/convert.h"

#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && !defined(ST_NO_SIMD)
#include <immintrin.h>

int st_quant_simd_available(void)
{
    return st_simd_level() >= ST_SIMD_AVX2;
}

#define AVX2_T __attribute__((target("avx2")))

AVX2_T static inline __m256i nearest_v(__m256 f)
{
    __m256i i = _mm256_castps_si256(_mm256_add_ps(f, _mm256_set1_ps(12582912.f)));
    return _mm256_sub_epi32(_mm256_and_si256(i, _mm256_set1_epi32(0x007FFFFF)),
                            _mm256_set1_epi32(0x00400000));
}

AVX2_T static inline __m256 absv(__m256 v)
{
    return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF)));
}

AVX2_T static inline __m256 negv(__m256 v)
{
    return _mm256_xor_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u)));
}

AVX2_T static inline __m256i clampi(__m256i v, int lo, int hi)
{
    return _mm256_max_epi32(_mm256_set1_epi32(lo), _mm256_min_epi32(_mm256_set1_epi32(hi), v));
}

#define GT(a, b) _mm256_cmp_ps(a, b, _CMP_GT_OQ)
#define LT(a, b) _mm256_cmp_ps(a, b, _CMP_LT_OQ)

/* X[i] (i < ncols, a multiple of 8) gets element i of 8 rows, row j at
 * base + j * stride: an 8x8 transpose per 8 columns. */
AVX2_T static void load_cols(const float *base, size_t stride, int ncols, __m256 *X)
{
    for (int c = 0; c < ncols; c += 8) {
        __m256 r[8];
        for (int j = 0; j < 8; j++)
            r[j] = _mm256_loadu_ps(base + (size_t)j * stride + c);
        __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
        __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
        __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
        __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
        __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
        __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
        __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
        __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
        X[c + 0] = _mm256_permute2f128_ps(u0, u4, 0x20);
        X[c + 1] = _mm256_permute2f128_ps(u1, u5, 0x20);
        X[c + 2] = _mm256_permute2f128_ps(u2, u6, 0x20);
        X[c + 3] = _mm256_permute2f128_ps(u3, u7, 0x20);
        X[c + 4] = _mm256_permute2f128_ps(u0, u4, 0x31);
        X[c + 5] = _mm256_permute2f128_ps(u1, u5, 0x31);
        X[c + 6] = _mm256_permute2f128_ps(u2, u6, 0x31);
        X[c + 7] = _mm256_permute2f128_ps(u3, u7, 0x31);
    }
}

/* 1 if any of x[0..n) (n a multiple of 8) is NaN. Super-blocks with a NaN
 * go to the portable code: with two NaN operands an operation returns the
 * first one's payload, and which operand is first in a commutative
 * operation is the compiler's choice; the payload then reaches the levels
 * through nearest_int's bit trick. The portable code is the one compiled
 * like ggml's. */
AVX2_T static int has_nan(const float *x, int n)
{
    __m256 u = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        u = _mm256_or_ps(u, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    return _mm256_movemask_ps(u) != 0;
}

/* The inverse for levels: L[j * stride + i] = lane j of Lv[i]. */
AVX2_T static void store_levels_u8(const __m256i *Lv, int ncols, size_t stride, uint8_t *L)
{
    for (int i = 0; i < ncols; i++) {
        int32_t t[8];
        _mm256_storeu_si256((__m256i *)t, Lv[i]);
        for (int j = 0; j < 8; j++)
            L[(size_t)j * stride + i] = (uint8_t)t[j];
    }
}

AVX2_T static void store_levels_i8(const __m256i *Lv, int ncols, size_t stride, int8_t *L)
{
    for (int i = 0; i < ncols; i++) {
        int32_t t[8];
        _mm256_storeu_si256((__m256i *)t, Lv[i]);
        for (int j = 0; j < 8; j++)
            L[(size_t)j * stride + i] = (int8_t)t[j];
    }
}

/* make_qkx2_quants on 8 sub-blocks at once (see quants.c). Outputs the
 * scale and the_min (= -min) per lane, and the levels Lv[i]. */
AVX2_T static void qkx2_v(const __m256 *X, const __m256 *W, int n, int nmax, float rmin,
                          float rdelta, int nstep, int use_mad, __m256i *Lv, __m256 *out_scale,
                          __m256 *out_min)
{
    const __m256 zero = _mm256_setzero_ps();
    __m256i Laux[32];
    __m256 min = X[0], max = X[0];
    __m256 sum_w = W[0], sum_x = _mm256_mul_ps(W[0], X[0]);
    for (int i = 1; i < n; i++) {
        min = _mm256_min_ps(X[i], min); /* X < min ? X : min */
        max = _mm256_max_ps(X[i], max);
        sum_w = _mm256_add_ps(sum_w, W[i]);
        sum_x = _mm256_add_ps(sum_x, _mm256_mul_ps(W[i], X[i]));
    }
    min = _mm256_blendv_ps(min, zero, GT(min, zero));
    const __m256 min0 = min;
    const __m256 flat = _mm256_cmp_ps(max, min, _CMP_EQ_OQ);
    __m256 iscale = _mm256_div_ps(_mm256_set1_ps((float)nmax), _mm256_sub_ps(max, min));
    __m256 scale = _mm256_div_ps(_mm256_set1_ps(1.f), iscale);
    __m256 best_error = zero;
    for (int i = 0; i < n; i++) {
        __m256i l = clampi(nearest_v(_mm256_mul_ps(iscale, _mm256_sub_ps(X[i], min))), 0, nmax);
        Lv[i] = l;
        __m256 diff =
            _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale, _mm256_cvtepi32_ps(l)), min), X[i]);
        diff = use_mad ? absv(diff) : _mm256_mul_ps(diff, diff);
        best_error = _mm256_add_ps(best_error, _mm256_mul_ps(W[i], diff));
    }
    for (int is = 0; is <= nstep; is++) {
        const float num = rmin + rdelta * (float)is + (float)nmax;
        /* max - min with min as updated so far, as the scalar code has it */
        iscale = _mm256_div_ps(_mm256_set1_ps(num), _mm256_sub_ps(max, min));
        __m256 sum_l = zero, sum_l2 = zero, sum_xl = zero;
        for (int i = 0; i < n; i++) {
            __m256i l =
                clampi(nearest_v(_mm256_mul_ps(iscale, _mm256_sub_ps(X[i], min))), 0, nmax);
            Laux[i] = l;
            __m256 lf = _mm256_cvtepi32_ps(l), wl = _mm256_mul_ps(W[i], lf);
            sum_l = _mm256_add_ps(sum_l, wl);
            sum_l2 = _mm256_add_ps(sum_l2, _mm256_mul_ps(wl, lf));
            sum_xl = _mm256_add_ps(sum_xl, _mm256_mul_ps(wl, X[i]));
        }
        __m256 D = _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_l2), _mm256_mul_ps(sum_l, sum_l));
        __m256 dpos = GT(D, zero);
        if (!_mm256_movemask_ps(dpos))
            continue;
        __m256 this_scale =
            _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_w, sum_xl), _mm256_mul_ps(sum_x, sum_l)), D);
        __m256 this_min =
            _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_l2, sum_x), _mm256_mul_ps(sum_l, sum_xl)), D);
        __m256 mpos = GT(this_min, zero);
        this_min = _mm256_blendv_ps(this_min, zero, mpos);
        this_scale = _mm256_blendv_ps(this_scale, _mm256_div_ps(sum_xl, sum_l2), mpos);
        __m256 cur_error = zero;
        for (int i = 0; i < n; i++) {
            __m256 diff = _mm256_sub_ps(
                _mm256_add_ps(_mm256_mul_ps(this_scale, _mm256_cvtepi32_ps(Laux[i])), this_min), X[i]);
            diff = use_mad ? absv(diff) : _mm256_mul_ps(diff, diff);
            cur_error = _mm256_add_ps(cur_error, _mm256_mul_ps(W[i], diff));
        }
        __m256 take = _mm256_and_ps(dpos, LT(cur_error, best_error));
        if (!_mm256_movemask_ps(take))
            continue;
        __m256i takei = _mm256_castps_si256(take);
        for (int i = 0; i < n; i++)
            Lv[i] = _mm256_blendv_epi8(Lv[i], Laux[i], takei);
        best_error = _mm256_blendv_ps(best_error, cur_error, take);
        scale = _mm256_blendv_ps(scale, this_scale, take);
        min = _mm256_blendv_ps(min, this_min, take);
    }
    /* lanes where all values were equal: the scalar code returned early */
    __m256i flati = _mm256_castps_si256(flat);
    for (int i = 0; i < n; i++)
        Lv[i] = _mm256_andnot_si256(flati, Lv[i]);
    *out_scale = _mm256_blendv_ps(scale, zero, flat);
    *out_min = negv(_mm256_blendv_ps(min, min0, flat));
}

/* st_requant, 8 values at a time (n is 16 or 32): each value's own
 * division and rounding, so the order question does not arise. */
AVX2_T void st_requant_avx2(const float *x, int n, int with_dm, float dm, float d, int lo, int hi,
                            int bias, uint8_t *L)
{
    const __m256 vd = _mm256_set1_ps(d), vdm = _mm256_set1_ps(dm);
    for (int i = 0; i < n; i += 16) {
        __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
        if (with_dm) {
            a = _mm256_add_ps(a, vdm);
            b = _mm256_add_ps(b, vdm);
        }
        __m256i la = clampi(nearest_v(_mm256_div_ps(a, vd)), lo, hi);
        __m256i lb = clampi(nearest_v(_mm256_div_ps(b, vd)), lo, hi);
        la = _mm256_add_epi32(la, _mm256_set1_epi32(bias));
        lb = _mm256_add_epi32(lb, _mm256_set1_epi32(bias));
        /* 0..255 after the bias (levels are at most 63): packs do not clip */
        __m256i p = _mm256_packs_epi32(la, lb);             /* a0-3 b0-3 a4-7 b4-7 */
        p = _mm256_permute4x64_epi64(p, 0xD8);              /* a0-7 b0-7 */
        __m128i q = _mm_packus_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
        _mm_storeu_si128((__m128i *)(L + i), q);
    }
}

/* ---- q4_K, q5_K: 8 sub-blocks of 32 = one super-block per call ---- */

AVX2_T static void k4_block(const float *x, int nmax, float rmin, int nstep, uint8_t *L,
                            float *scales, float *mins)
{
    __m256 X[32], W[32], Lsc, Lmn;
    __m256i Lv[32];
    load_cols(x, 32, 32, X);
    __m256 sum_x2 = _mm256_setzero_ps();
    for (int l = 0; l < 32; l++)
        sum_x2 = _mm256_add_ps(sum_x2, _mm256_mul_ps(X[l], X[l]));
    __m256 av_x = _mm256_sqrt_ps(_mm256_div_ps(sum_x2, _mm256_set1_ps(32.f)));
    for (int l = 0; l < 32; l++)
        W[l] = _mm256_add_ps(av_x, absv(X[l]));
    qkx2_v(X, W, 32, nmax, rmin, 0.1f, nstep, 0, Lv, &Lsc, &Lmn);
    _mm256_storeu_ps(scales, Lsc);
    _mm256_storeu_ps(mins, Lmn);
    store_levels_u8(Lv, 32, 32, L);
}

AVX2_T size_t st_simd_quant_q4_K(const float *x, uint8_t *y, size_t nblocks)
{
    uint8_t L[256];
    float scales[8], mins[8];
    for (size_t i = 0; i < nblocks; i++, x += 256, y += 144) {
        if (has_nan(x, 256))
            return i;
        memset(y + 4, 0, 12);
        k4_block(x, 15, -1.f, 20, L, scales, mins);
        st_quant_k4_finish(x, scales, mins, 15, L, y, st_requant_avx2);
        st_quant_q4_K_pack(L, y);
    }
    return nblocks;
}

AVX2_T size_t st_simd_quant_q5_K(const float *x, uint8_t *y, size_t nblocks)
{
    uint8_t L[256];
    float scales[8], mins[8];
    for (size_t i = 0; i < nblocks; i++, x += 256, y += 176) {
        if (has_nan(x, 256))
            return i;
        memset(y + 4, 0, 12);
        k4_block(x, 31, -0.5f, 15, L, scales, mins);
        st_quant_k4_finish(x, scales, mins, 31, L, y, st_requant_avx2);
        st_quant_q5_K_pack(L, y);
    }
    return nblocks;
}

/* ---- q2_K: 16 sub-blocks of 16, two groups of 8 ---- */

AVX2_T size_t st_simd_quant_q2_K(const float *x, uint8_t *y, size_t nblocks)
{
    uint8_t L[256];
    float scales[16], mins[16];
    for (size_t i = 0; i < nblocks; i++, x += 256, y += 84) {
        if (has_nan(x, 256))
            return i;
        for (int g = 0; g < 2; g++) {
            __m256 X[16], W[16], sc, mn;
            __m256i Lv[16];
            load_cols(x + 128 * g, 16, 16, X);
            for (int l = 0; l < 16; l++)
                W[l] = absv(X[l]);
            qkx2_v(X, W, 16, 3, -0.5f, 0.1f, 15, 1, Lv, &sc, &mn);
            _mm256_storeu_ps(scales + 8 * g, sc);
            _mm256_storeu_ps(mins + 8 * g, mn);
            store_levels_u8(Lv, 16, 16, L + 128 * g);
        }
        st_quant_q2_K_finish(x, scales, mins, L, y, st_requant_avx2);
    }
    return nblocks;
}

/* ---- q6_K: make_qx_quants(16, 32, rmse_type 1) on 8 sub-blocks ---- */

#define GROUP_MAX_EPS 1e-15f

AVX2_T static void qx_v(const __m256 *X, int n, int nmax, __m256i *Lv, __m256 *out_scale)
{
    const __m256 zero = _mm256_setzero_ps();
    __m256 max = zero, amax = zero;
    for (int i = 0; i < n; i++) {
        __m256 ax = absv(X[i]);
        __m256 gt = GT(ax, amax);
        amax = _mm256_blendv_ps(amax, ax, gt);
        max = _mm256_blendv_ps(max, X[i], gt);
    }
    const __m256 tiny = LT(amax, _mm256_set1_ps(GROUP_MAX_EPS));
    __m256 W[32];
    for (int i = 0; i < n; i++)
        W[i] = _mm256_mul_ps(X[i], X[i]);
    __m256 iscale = _mm256_div_ps(_mm256_set1_ps((float)-nmax), max);
    __m256 sumlx = zero, suml2 = zero;
    for (int i = 0; i < n; i++) {
        __m256i l = clampi(nearest_v(_mm256_mul_ps(iscale, X[i])), -nmax, nmax - 1);
        Lv[i] = _mm256_add_epi32(l, _mm256_set1_epi32(nmax));
        __m256 lf = _mm256_cvtepi32_ps(l);
        sumlx = _mm256_add_ps(sumlx, _mm256_mul_ps(_mm256_mul_ps(W[i], X[i]), lf));
        suml2 = _mm256_add_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(W[i], lf), lf));
    }
    /* suml2 ? sumlx/suml2 : 0 (NaN counts as true) */
    __m256 scale = _mm256_and_ps(_mm256_cmp_ps(suml2, zero, _CMP_NEQ_UQ), _mm256_div_ps(sumlx, suml2));
    __m256 best = _mm256_mul_ps(scale, sumlx);
    for (int is = -9; is <= 9; is++) {
        if (is == 0)
            continue;
        const float num = -((float)nmax + 0.1f * (float)is);
        iscale = _mm256_div_ps(_mm256_set1_ps(num), max);
        sumlx = suml2 = zero;
        __m256i Lt[32];
        for (int i = 0; i < n; i++) {
            __m256i l = clampi(nearest_v(_mm256_mul_ps(iscale, X[i])), -nmax, nmax - 1);
            Lt[i] = l;
            __m256 lf = _mm256_cvtepi32_ps(l);
            sumlx = _mm256_add_ps(sumlx, _mm256_mul_ps(_mm256_mul_ps(W[i], X[i]), lf));
            suml2 = _mm256_add_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(W[i], lf), lf));
        }
        __m256 take = _mm256_and_ps(GT(suml2, zero),
                                    GT(_mm256_mul_ps(sumlx, sumlx), _mm256_mul_ps(best, suml2)));
        if (!_mm256_movemask_ps(take))
            continue;
        __m256i takei = _mm256_castps_si256(take);
        for (int i = 0; i < n; i++)
            Lv[i] = _mm256_blendv_epi8(Lv[i], _mm256_add_epi32(Lt[i], _mm256_set1_epi32(nmax)), takei);
        __m256 s = _mm256_div_ps(sumlx, suml2);
        scale = _mm256_blendv_ps(scale, s, take);
        best = _mm256_blendv_ps(best, _mm256_mul_ps(s, sumlx), take);
    }
    __m256i tinyi = _mm256_castps_si256(tiny);
    for (int i = 0; i < n; i++)
        Lv[i] = _mm256_andnot_si256(tinyi, Lv[i]);
    *out_scale = _mm256_blendv_ps(scale, zero, tiny);
}

AVX2_T size_t st_simd_quant_q6_K(const float *x, uint8_t *y, size_t nblocks)
{
    int8_t L[256];
    float scales[16];
    for (size_t i = 0; i < nblocks; i++, x += 256, y += 210) {
        if (has_nan(x, 256))
            return i;
        for (int g = 0; g < 2; g++) {
            __m256 X[16], sc;
            __m256i Lv[16];
            load_cols(x + 128 * g, 16, 16, X);
            qx_v(X, 16, 32, Lv, &sc);
            _mm256_storeu_ps(scales + 8 * g, sc);
            store_levels_i8(Lv, 16, 16, L + 128 * g);
        }
        st_quant_q6_K_finish(x, scales, L, y, st_requant_avx2);
    }
    return nblocks;
}

/* ---- q3_K: make_q3_quants(16, 4, do_rmse) on 8 sub-blocks ---- */

/* The refinement passes are a chain of dependent operations per lane
 * (each value's move changes the sums the next one sees), so Q3_G groups
 * of 8 sub-blocks (two super-blocks) go through the loop side by side
 * for the CPU to overlap their chains. */
#define Q3_G 4

AVX2_T static void q3_v(const __m256 (*X)[16], int G, __m256i (*Lv)[16], __m256 *out_scale)
{
    const int n = 16, nmax = 4;
    const __m256 zero = _mm256_setzero_ps();
    __m256 W[Q3_G][16], WX[Q3_G][16], sumlx[Q3_G], suml2[Q3_G], tiny[Q3_G];
    for (int g = 0; g < G; g++) {
        __m256 max = zero, amax = zero;
        for (int i = 0; i < n; i++) {
            __m256 ax = absv(X[g][i]);
            __m256 gt = GT(ax, amax);
            amax = _mm256_blendv_ps(amax, ax, gt);
            max = _mm256_blendv_ps(max, X[g][i], gt);
        }
        tiny[g] = LT(amax, _mm256_set1_ps(GROUP_MAX_EPS));
        __m256 iscale = _mm256_div_ps(_mm256_set1_ps((float)-nmax), max);
        sumlx[g] = suml2[g] = zero;
        for (int i = 0; i < n; i++) {
            __m256i l = clampi(nearest_v(_mm256_mul_ps(iscale, X[g][i])), -nmax, nmax - 1);
            Lv[g][i] = l;
            W[g][i] = _mm256_mul_ps(X[g][i], X[g][i]);
            WX[g][i] = _mm256_mul_ps(W[g][i], X[g][i]);
            __m256 lf = _mm256_cvtepi32_ps(l);
            sumlx[g] = _mm256_add_ps(sumlx[g], _mm256_mul_ps(WX[g][i], lf));
            suml2[g] = _mm256_add_ps(suml2[g], _mm256_mul_ps(_mm256_mul_ps(W[g][i], lf), lf));
        }
    }
    /* A lane whose pass changes nothing would change nothing on the next
     * pass either (same state, same arithmetic), so running passes for all
     * 8 lanes of a group until none changes, at most 5, matches the scalar
     * loop. */
    int active[Q3_G];
    for (int g = 0; g < G; g++)
        active[g] = 1;
    for (int itry = 0; itry < 5; itry++) {
        __m256 changed[Q3_G];
        for (int g = 0; g < G; g++)
            changed[g] = zero;
        for (int i = 0; i < n; i++) {
            for (int g = 0; g < G; g++) {
                if (!active[g]) /* converged: a pass would change nothing */
                    continue;
                __m256 Lf = _mm256_cvtepi32_ps(Lv[g][i]);
                __m256 slx = _mm256_sub_ps(sumlx[g], _mm256_mul_ps(WX[g][i], Lf));
                __m256 ok = GT(slx, zero);
                __m256 sl2 = _mm256_sub_ps(suml2[g], _mm256_mul_ps(_mm256_mul_ps(W[g][i], Lf), Lf));
                __m256i nl = clampi(nearest_v(_mm256_div_ps(_mm256_mul_ps(X[g][i], sl2), slx)),
                                    -nmax, nmax - 1);
                __m256 diff = _mm256_castsi256_ps(
                    _mm256_xor_si256(_mm256_cmpeq_epi32(nl, Lv[g][i]), _mm256_set1_epi32(-1)));
                ok = _mm256_and_ps(ok, diff);
                __m256 nf = _mm256_cvtepi32_ps(nl);
                slx = _mm256_add_ps(slx, _mm256_mul_ps(WX[g][i], nf));
                sl2 = _mm256_add_ps(sl2, _mm256_mul_ps(_mm256_mul_ps(W[g][i], nf), nf));
                __m256 better = GT(_mm256_mul_ps(_mm256_mul_ps(slx, slx), suml2[g]),
                                   _mm256_mul_ps(_mm256_mul_ps(sumlx[g], sumlx[g]), sl2));
                ok = _mm256_and_ps(ok, _mm256_and_ps(GT(sl2, zero), better));
                Lv[g][i] = _mm256_blendv_epi8(Lv[g][i], nl, _mm256_castps_si256(ok));
                sumlx[g] = _mm256_blendv_ps(sumlx[g], slx, ok);
                suml2[g] = _mm256_blendv_ps(suml2[g], sl2, ok);
                changed[g] = _mm256_or_ps(changed[g], ok);
            }
        }
        int any = 0;
        for (int g = 0; g < G; g++) {
            active[g] = active[g] && _mm256_movemask_ps(changed[g]) != 0;
            any |= active[g];
        }
        if (!any)
            break;
    }
    for (int g = 0; g < G; g++) {
        __m256i tinyi = _mm256_castps_si256(tiny[g]);
        for (int i = 0; i < n; i++)
            Lv[g][i] =
                _mm256_andnot_si256(tinyi, _mm256_add_epi32(Lv[g][i], _mm256_set1_epi32(nmax)));
        __m256 s = _mm256_and_ps(GT(suml2[g], zero), _mm256_div_ps(sumlx[g], suml2[g]));
        out_scale[g] = _mm256_blendv_ps(s, zero, tiny[g]);
    }
}

AVX2_T size_t st_simd_quant_q3_K(const float *x, uint8_t *y, size_t nblocks)
{
    int8_t L[Q3_G / 2][256];
    float scales[Q3_G / 2][16];
    size_t i = 0;
    while (i < nblocks) {
        if (has_nan(x, 256))
            return i;
        int nbk = nblocks - i >= Q3_G / 2 && !has_nan(x + 256, 256) ? Q3_G / 2 : 1;
        __m256 X[Q3_G][16], sc[Q3_G];
        __m256i Lv[Q3_G][16];
        for (int g = 0; g < 2 * nbk; g++)
            load_cols(x + 256 * (g / 2) + 128 * (g % 2), 16, 16, X[g]);
        q3_v((const __m256(*)[16])X, 2 * nbk, Lv, sc);
        for (int g = 0; g < 2 * nbk; g++) {
            _mm256_storeu_ps(scales[g / 2] + 8 * (g % 2), sc[g]);
            store_levels_i8(Lv[g], 16, 16, L[g / 2] + 128 * (g % 2));
        }
        for (int b = 0; b < nbk; b++, i++, x += 256, y += 110)
            st_quant_q3_K_finish(x, scales[b], L[b], y, st_requant_avx2);
    }
    return nblocks;
}

/* ---- q8_0 ---- */

/* round half away from zero (roundf), exact: truncate, then step away
 * from zero where the dropped fraction is >= 0.5 */
AVX2_T static inline __m256 roundf_v(__m256 v)
{
    __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m256 frac = absv(_mm256_sub_ps(v, t));
    __m256 away = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    __m256 one = _mm256_or_ps(_mm256_set1_ps(1.0f),
                              _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u))));
    return _mm256_add_ps(t, _mm256_and_ps(away, one));
}

AVX2_T size_t st_simd_quant_q8_0(const float *x, uint8_t *y, size_t nblocks)
{
    const __m256 inf = _mm256_set1_ps(__builtin_inff());
    size_t done = 0;
    for (; done < nblocks; done++, x += 32, y += 34) {
        __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
        __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
        __m256 a0 = absv(v0), a1 = absv(v1), a2 = absv(v2), a3 = absv(v3);
        /* NaN or Inf anywhere: not (|v| < Inf) */
        __m256 bad = _mm256_or_ps(_mm256_or_ps(_mm256_cmp_ps(a0, inf, _CMP_NLT_UQ),
                                               _mm256_cmp_ps(a1, inf, _CMP_NLT_UQ)),
                                  _mm256_or_ps(_mm256_cmp_ps(a2, inf, _CMP_NLT_UQ),
                                               _mm256_cmp_ps(a3, inf, _CMP_NLT_UQ)));
        if (_mm256_movemask_ps(bad))
            break; /* the portable code takes it from here */
        __m256 m = _mm256_max_ps(_mm256_max_ps(a0, a1), _mm256_max_ps(a2, a3));
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
        const float amax = _mm_cvtss_f32(h);
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        if (!(id < __builtin_inff()))
            break; /* 1/d overflowed: x * id is not bounded by 127 */
        uint16_t hd = st_ggml_f32_to_f16(d);
        y[0] = (uint8_t)hd;
        y[1] = (uint8_t)(hd >> 8);
        __m256 vid = _mm256_set1_ps(id);
        __m256i q0 = _mm256_cvttps_epi32(roundf_v(_mm256_mul_ps(v0, vid)));
        __m256i q1 = _mm256_cvttps_epi32(roundf_v(_mm256_mul_ps(v1, vid)));
        __m256i q2 = _mm256_cvttps_epi32(roundf_v(_mm256_mul_ps(v2, vid)));
        __m256i q3 = _mm256_cvttps_epi32(roundf_v(_mm256_mul_ps(v3, vid)));
        /* |q| <= 127 for finite input: the saturating packs do not clip */
        __m256i p01 = _mm256_packs_epi32(q0, q1), p23 = _mm256_packs_epi32(q2, q3);
        __m256i p = _mm256_packs_epi16(p01, p23);
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(y + 2), p);
    }
    return done;
}

/* ---- q4_0, q4_1, q5_0, q5_1: one block of 32 in 4 vectors ---- */

/* Loads a block; 0 if a value is NaN or Inf (left to the portable code,
 * whose float -> int conversions of NaN the vector code does not mimic). */
AVX2_T static inline int load_block(const float *x, __m256 *v, __m256 *a)
{
    const __m256 inf = _mm256_set1_ps(__builtin_inff());
    __m256 bad = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) {
        v[k] = _mm256_loadu_ps(x + 8 * k);
        a[k] = absv(v[k]);
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(a[k], inf, _CMP_NLT_UQ));
    }
    return !_mm256_movemask_ps(bad);
}

AVX2_T static inline float hmax8(__m256 m)
{
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}

AVX2_T static inline float hmin8(__m256 m)
{
    __m128 h = _mm_min_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_min_ps(h, _mm_movehl_ps(h, h));
    h = _mm_min_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}

/* 16 bytes lo[j] | hi[j] << 4 from two pairs of int32 vectors (j < 8 in
 * lo0/hi0, j >= 8 in lo1/hi1), every value 0..15 */
AVX2_T static inline void store_nibbles(__m256i lo0, __m256i lo1, __m256i hi0, __m256i hi1,
                                        uint8_t *out)
{
    __m256i a = _mm256_or_si256(lo0, _mm256_slli_epi32(hi0, 4));
    __m256i b = _mm256_or_si256(lo1, _mm256_slli_epi32(hi1, 4));
    __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);
    __m128i q = _mm_packus_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
    _mm_storeu_si128((__m128i *)out, q);
}

/* bit 4 of each of the 32 values, value k -> bit k */
AVX2_T static inline uint32_t high_bits(const __m256i *q)
{
    uint32_t m = 0;
    for (int k = 0; k < 4; k++)
        m |= (uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_slli_epi32(q[k], 27)))
             << (8 * k);
    return m;
}

enum { K_Q4_0, K_Q4_1, K_Q5_0, K_Q5_1 };

/* inlined into each wrapper, so that `kind` is a constant there */
AVX2_T static inline __attribute__((always_inline)) size_t quant_small(const float *x, uint8_t *y,
                                                                       size_t nblocks, int kind)
{
    const int five = kind == K_Q5_0 || kind == K_Q5_1;
    const int asym = kind == K_Q4_1 || kind == K_Q5_1;
    const size_t bytes = kind == K_Q4_0 ? 18 : kind == K_Q4_1 ? 20 : kind == K_Q5_0 ? 22 : 24;
    size_t done = 0;
    for (; done < nblocks; done++, x += 32, y += bytes) {
        __m256 v[4], a[4];
        if (!load_block(x, v, a))
            break;
        float d, min = 0;
        __m256 off;
        if (asym) {
            float max = hmax8(_mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3])));
            min = hmin8(_mm256_min_ps(_mm256_min_ps(v[0], v[1]), _mm256_min_ps(v[2], v[3])));
            /* a zero extreme's sign depends on which zero came first */
            if (min == 0 || max == 0)
                break;
            d = (max - min) / (five ? 31 : 15);
            off = _mm256_set1_ps(0.5f);
        } else {
            float amax = hmax8(_mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3])));
            float max = 0.0f;
            if (amax > 0) { /* the first value of largest magnitude */
                __m256 am = _mm256_set1_ps(amax);
                uint32_t m = 0;
                for (int k = 0; k < 4; k++)
                    m |= (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(a[k], am, _CMP_EQ_OQ)) << (8 * k);
                max = x[__builtin_ctz(m)];
            }
            d = max / (five ? -16 : -8);
            off = _mm256_set1_ps(five ? 16.5f : 8.5f);
        }
        const float id = d ? 1.0f / d : 0.0f;
        /* With 1/d finite, |d| >= 2^-128, where even a subnormal d is
         * within 2^-21 of the exact quotient, so every level is in range
         * (0..15 or 0..31 up to rounding) and the vector conversions and
         * packs see what the scalar casts see. Otherwise: portable code. */
        if (!(d < __builtin_inff()) || !(id < __builtin_inff()) || !(id > -__builtin_inff()))
            break;
        __m256 vid = _mm256_set1_ps(id), vmin = _mm256_set1_ps(min);
        __m256i q[4];
        for (int k = 0; k < 4; k++) {
            __m256 t = asym ? _mm256_mul_ps(_mm256_sub_ps(v[k], vmin), vid) : _mm256_mul_ps(v[k], vid);
            q[k] = _mm256_cvttps_epi32(_mm256_add_ps(t, off));
            if (kind != K_Q5_1) /* ggml's MIN(15 or 31, ...); q5_1 has none */
                q[k] = _mm256_min_epi32(q[k], _mm256_set1_epi32(five ? 31 : 15));
        }
        uint16_t hd = st_ggml_f32_to_f16(d);
        y[0] = (uint8_t)hd;
        y[1] = (uint8_t)(hd >> 8);
        uint8_t *p = y + 2;
        if (asym) {
            uint16_t hm = st_ggml_f32_to_f16(min);
            p[0] = (uint8_t)hm;
            p[1] = (uint8_t)(hm >> 8);
            p += 2;
        }
        if (five) {
            uint32_t qh = high_bits(q);
            memcpy(p, &qh, 4); /* little-endian, as x86 is */
            p += 4;
            const __m256i m15 = _mm256_set1_epi32(15);
            for (int k = 0; k < 4; k++)
                q[k] = _mm256_and_si256(q[k], m15);
        }
        store_nibbles(q[0], q[1], q[2], q[3], p);
    }
    return done;
}

AVX2_T size_t st_simd_quant_q4_0(const float *x, uint8_t *y, size_t nblocks)
{
    return quant_small(x, y, nblocks, K_Q4_0);
}

AVX2_T size_t st_simd_quant_q4_1(const float *x, uint8_t *y, size_t nblocks)
{
    return quant_small(x, y, nblocks, K_Q4_1);
}

AVX2_T size_t st_simd_quant_q5_0(const float *x, uint8_t *y, size_t nblocks)
{
    return quant_small(x, y, nblocks, K_Q5_0);
}

AVX2_T size_t st_simd_quant_q5_1(const float *x, uint8_t *y, size_t nblocks)
{
    return quant_small(x, y, nblocks, K_Q5_1);
}

#else /* no x86 SIMD */

int st_quant_simd_available(void)
{
    return 0;
}

#define NO_KERNEL(name)                                                    \
    size_t name(const float *x, uint8_t *y, size_t nblocks)                \
    {                                                                      \
        (void)x;                                                           \
        (void)y;                                                           \
        (void)nblocks;                                                     \
        return 0;                                                          \
    }
NO_KERNEL(st_simd_quant_q8_0)
NO_KERNEL(st_simd_quant_q4_0)
NO_KERNEL(st_simd_quant_q4_1)
NO_KERNEL(st_simd_quant_q5_0)
NO_KERNEL(st_simd_quant_q5_1)
NO_KERNEL(st_simd_quant_q4_K)
NO_KERNEL(st_simd_quant_q5_K)
NO_KERNEL(st_simd_quant_q2_K)
NO_KERNEL(st_simd_quant_q6_K)
NO_KERNEL(st_simd_quant_q3_K)

void st_requant_avx2(const float *x, int n, int with_dm, float dm, float d, int lo, int hi,
                     int bias, uint8_t *L)
{
    st_requant(x, n, with_dm, dm, d, lo, hi, bias, L);
}

#endif
