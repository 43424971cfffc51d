/* GGUF block quantization: ggml's reference quantizers
 * (quantize_row_<type>_ref in ggml's src/ggml-quants.c) and dequantizers,
 * written from their definitions so that the bytes are identical.
 *
 * Identical bytes need identical float operations, in the same order, each
 * rounded to float: no reassociation, no reciprocal in place of a division,
 * and no fused multiply-add (ggml's reference build targets baseline
 * x86-64, which has no FMA; the Makefile passes -ffp-contract=off so that
 * a build for a CPU with FMA does not contract either). Where C
 * leaves a conversion undefined (a NaN or an out-of-range float converted
 * to a small integer) ggml's bytes are what x86's CVTTSS2SI gives; cvtt()
 * reproduces that without undefined behaviour, so any input, NaN and Inf
 * included, gives ggml's bytes on x86.
 *
 * Blocks are laid out as ggml-common.h declares them, written byte by byte
 * (little-endian halves), so no struct padding or host order is involved. */
#include "gguf/quants.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define QK 32   /* elements in a Q4_0 .. Q8_1 block */
#define QKK 256 /* elements in a k-quant super-block */

/* ------------------------------------------------------------------ */
/* Scalar helpers                                                     */
/* ------------------------------------------------------------------ */

static inline uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float bitsf(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Exact; a signalling NaN comes out quiet, as from ggml's float formula. */
float st_ggml_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1F, m = h & 0x3FFu;
    if (e == 0x1F)
        return bitsf(sign | 0x7F800000u | (m << 13) | (m ? 0x00400000u : 0));
    if (e == 0) {
        float v = (float)m * 0x1p-24f; /* exact */
        return bitsf(sign | fbits(v));
    }
    return bitsf(sign | ((e + 112) << 23) | (m << 13));
}

uint16_t st_ggml_f32_to_bf16(float f)
{
    uint32_t u = fbits(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u)
        return (uint16_t)((u >> 16) | 64);
    return (uint16_t)((u + (0x7FFFu + ((u >> 16) & 1))) >> 16);
}

static inline float bf16_to_f32(uint16_t h)
{
    return bitsf((uint32_t)h << 16);
}

static inline uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline void wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void wr_half(uint8_t *p, float f)
{
    wr16(p, st_ggml_f32_to_f16(f));
}

static inline float rd_half(const uint8_t *p)
{
    return st_ggml_f16_to_f32(rd16(p));
}

/* Float -> int32 as CVTTSS2SI: truncation, and INT32_MIN for NaN and for
 * values outside the int32 range (C leaves those undefined). ggml's
 * (int8_t)/(uint8_t) casts of floats are this, then the low byte. */
static inline int32_t cvtt(float v)
{
    /* a select rather than a branch, so that loops still vectorize */
    float in = (v > -2147483904.0f && v < 2147483648.0f) ? v : -2147483648.0f;
    return (int32_t)in;
}

static inline uint8_t lowbyte(int32_t v)
{
    return (uint8_t)((uint32_t)v & 0xFFu);
}

/* (int8_t) of an int, as gcc defines it (modulo 256). */
static inline int8_t to_i8(int v)
{
    uint8_t b = lowbyte(v);
    return (int8_t)(b < 128 ? b : (int)b - 256);
}

/* ggml's nearest_int: round to nearest even through the float adder, for
 * |f| <= 2^22; bit arithmetic only, so defined for any input. */
static inline int nearest_int(float f)
{
    uint32_t i = fbits(f + 12582912.f);
    return (int)(i & 0x007FFFFFu) - 0x00400000;
}

static inline int imin(int a, int b)
{
    return a < b ? a : b;
}

static inline int imax(int a, int b)
{
    return a > b ? a : b;
}

#define GROUP_MAX_EPS 1e-15f

/* ------------------------------------------------------------------ */
/* 32-element blocks                                                  */
/* ------------------------------------------------------------------ */

/* q4_0: d (f16), qs[16] */
static void quant_q4_0(const float *x, uint8_t *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += QK, y += 18) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK; j++) {
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        const float d = max / -8;
        const float id = d ? 1.0f / d : 0.0f;
        wr_half(y, d);
        for (int j = 0; j < QK / 2; j++) {
            int xi0 = imin(15, (int8_t)lowbyte(cvtt(x[j] * id + 8.5f)));
            int xi1 = imin(15, (int8_t)lowbyte(cvtt(x[QK / 2 + j] * id + 8.5f)));
            y[2 + j] = (uint8_t)((uint8_t)xi0 | ((uint8_t)xi1 << 4));
        }
    }
}

/* q4_1: d, m (f16), qs[16] */
static void quant_q4_1(const float *x, uint8_t *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += QK, y += 20) {
        float min = 3.40282347e+38f, max = -3.40282347e+38f;
        for (int j = 0; j < QK; j++) {
            if (x[j] < min)
                min = x[j];
            if (x[j] > max)
                max = x[j];
        }
        const float d = (max - min) / 15;
        const float id = d ? 1.0f / d : 0.0f;
        wr_half(y, d);
        wr_half(y + 2, min);
        for (int j = 0; j < QK / 2; j++) {
            int xi0 = imin(15, (int8_t)lowbyte(cvtt((x[j] - min) * id + 0.5f)));
            int xi1 = imin(15, (int8_t)lowbyte(cvtt((x[QK / 2 + j] - min) * id + 0.5f)));
            y[4 + j] = (uint8_t)((uint8_t)xi0 | ((uint8_t)xi1 << 4));
        }
    }
}

/* q5_0: d (f16), qh[4], qs[16] */
static void quant_q5_0(const float *x, uint8_t *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += QK, y += 22) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK; j++) {
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        const float d = max / -16;
        const float id = d ? 1.0f / d : 0.0f;
        wr_half(y, d);
        uint32_t qh = 0;
        for (int j = 0; j < QK / 2; j++) {
            uint8_t xi0 = (uint8_t)imin(31, (int8_t)lowbyte(cvtt(x[j] * id + 16.5f)));
            uint8_t xi1 = (uint8_t)imin(31, (int8_t)lowbyte(cvtt(x[QK / 2 + j] * id + 16.5f)));
            y[6 + j] = (uint8_t)((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
            qh |= ((xi0 & 0x10u) >> 4) << j;
            qh |= ((xi1 & 0x10u) >> 4) << (j + QK / 2);
        }
        for (int b = 0; b < 4; b++)
            y[2 + b] = (uint8_t)(qh >> (8 * b));
    }
}

/* q5_1: d, m (f16), qh[4], qs[16] */
static void quant_q5_1(const float *x, uint8_t *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += QK, y += 24) {
        float min = 3.40282347e+38f, max = -3.40282347e+38f;
        for (int j = 0; j < QK; j++) {
            if (x[j] < min)
                min = x[j];
            if (x[j] > max)
                max = x[j];
        }
        const float d = (max - min) / 31;
        const float id = d ? 1.0f / d : 0.0f;
        wr_half(y, d);
        wr_half(y + 2, min);
        uint32_t qh = 0;
        for (int j = 0; j < QK / 2; j++) {
            uint8_t xi0 = lowbyte(cvtt((x[j] - min) * id + 0.5f));
            uint8_t xi1 = lowbyte(cvtt((x[QK / 2 + j] - min) * id + 0.5f));
            y[8 + j] = (uint8_t)((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
            qh |= ((xi0 & 0x10u) >> 4) << j;
            qh |= ((xi1 & 0x10u) >> 4) << (j + QK / 2);
        }
        for (int b = 0; b < 4; b++)
            y[4 + b] = (uint8_t)(qh >> (8 * b));
    }
}

/* q8_0: d (f16), qs[32] */
static void quant_q8_0(const float *x, uint8_t *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += QK, y += 34) {
        float amax = 0.0f;
        for (int j = 0; j < QK; j++) {
            float a = fabsf(x[j]);
            amax = amax > a ? amax : a; /* ggml's MAX: order matters for NaN */
        }
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        wr_half(y, d);
        for (int j = 0; j < QK; j++)
            y[2 + j] = lowbyte(cvtt(roundf(x[j] * id)));
    }
}

static void dequant_q4_0(const uint8_t *x, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += 18, y += QK) {
        const float d = rd_half(x);
        for (int j = 0; j < QK / 2; j++) {
            y[j] = (float)((x[2 + j] & 0x0F) - 8) * d;
            y[j + QK / 2] = (float)((x[2 + j] >> 4) - 8) * d;
        }
    }
}

static void dequant_q4_1(const uint8_t *x, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += 20, y += QK) {
        const float d = rd_half(x), m = rd_half(x + 2);
        for (int j = 0; j < QK / 2; j++) {
            y[j] = (float)(x[4 + j] & 0x0F) * d + m;
            y[j + QK / 2] = (float)(x[4 + j] >> 4) * d + m;
        }
    }
}

static inline uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void dequant_q5_0(const uint8_t *x, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += 22, y += QK) {
        const float d = rd_half(x);
        const uint32_t qh = rd32(x + 2);
        for (int j = 0; j < QK / 2; j++) {
            int h0 = (int)(((qh >> j) << 4) & 0x10), h1 = (int)((qh >> (j + 12)) & 0x10);
            y[j] = (float)(((x[6 + j] & 0x0F) | h0) - 16) * d;
            y[j + QK / 2] = (float)(((x[6 + j] >> 4) | h1) - 16) * d;
        }
    }
}

static void dequant_q5_1(const uint8_t *x, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += 24, y += QK) {
        const float d = rd_half(x), m = rd_half(x + 2);
        const uint32_t qh = rd32(x + 4);
        for (int j = 0; j < QK / 2; j++) {
            int h0 = (int)(((qh >> j) << 4) & 0x10), h1 = (int)((qh >> (j + 12)) & 0x10);
            y[j] = (float)((x[8 + j] & 0x0F) | h0) * d + m;
            y[j + QK / 2] = (float)((x[8 + j] >> 4) | h1) * d + m;
        }
    }
}

static void dequant_q8_0(const uint8_t *x, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += 34, y += QK) {
        const float d = rd_half(x);
        for (int j = 0; j < QK; j++)
            y[j] = (float)(int8_t)x[2 + j] * d;
    }
}

/* q8_1: d, s (f16), qs[32]; ggml has no dequantizer for it: the value is
 * qs * d, as for q8_0 (s is the block's sum, redundant). */
static void dequant_q8_1(const uint8_t *x, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += 36, y += QK) {
        const float d = rd_half(x);
        for (int j = 0; j < QK; j++)
            y[j] = (float)(int8_t)x[4 + j] * d;
    }
}

/* ------------------------------------------------------------------ */
/* k-quant helpers                                                    */
/* ------------------------------------------------------------------ */

/* The final levels of a sub-block once its scale is known:
 * L[i] = clamp(nearest_int((x[i] + dm) / d), lo, hi) + bias, or with
 * x[i] / d when !with_dm (adding 0 would turn -0 into +0; the level is the
 * same, but the code says what ggml's does). */
void st_requant(const float *x, int n, int with_dm, float dm, float d, int lo, int hi, int bias,
                uint8_t *L)
{
    for (int i = 0; i < n; i++) {
        int l = nearest_int(with_dm ? (x[i] + dm) / d : x[i] / d);
        L[i] = (uint8_t)(imax(lo, imin(hi, l)) + bias);
    }
}

/* ggml's make_qx_quants with qw == NULL: symmetric quantization of n
 * values to [-nmax, nmax-1], searching 18 scales around nmax/max for the
 * best weighted fit (weights x^2 for rmse_type 1). */
static float make_qx_quants(int n, int nmax, const float *x, int8_t *L, int rmse_type)
{
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; i++)
            L[i] = 0;
        return 0.f;
    }
    float iscale = (float)-nmax / max;
    if (rmse_type == 0) {
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * x[i]);
            L[i] = (int8_t)(nmax + imax(-nmax, imin(nmax - 1, l)));
        }
        return 1 / iscale;
    }
    float w[QKK];
    for (int i = 0; i < n; i++)
        w[i] = rmse_type == 1 ? x[i] * x[i] : rmse_type == 2 ? 1 : rmse_type == 3 ? fabsf(x[i]) : sqrtf(fabsf(x[i]));
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * x[i]);
        l = imax(-nmax, imin(nmax - 1, l));
        L[i] = (int8_t)(l + nmax);
        sumlx += w[i] * x[i] * (float)l;
        suml2 += w[i] * (float)l * (float)l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0)
            continue;
        iscale = -((float)nmax + 0.1f * (float)is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * x[i]);
            l = imax(-nmax, imin(nmax - 1, l));
            sumlx += w[i] * x[i] * (float)l;
            suml2 += w[i] * (float)l * (float)l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) {
                int l = nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + imax(-nmax, imin(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* ggml's make_q3_quants with do_rmse: symmetric start, then up to five
 * passes moving single values to a better level. */
static float make_q3_quants(int n, int nmax, const float *x, int8_t *L)
{
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; i++)
            L[i] = 0;
        return 0.f;
    }
    float iscale = (float)-nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * x[i]);
        l = imax(-nmax, imin(nmax - 1, l));
        L[i] = (int8_t)l;
        float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * (float)L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * (float)L[i] * (float)L[i];
                int new_l = nearest_int(x[i] * sl2 / slx);
                new_l = imax(-nmax, imin(nmax - 1, new_l));
                if (new_l != L[i]) {
                    slx += w * x[i] * (float)new_l;
                    sl2 += w * (float)new_l * (float)new_l;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed++;
                    }
                }
            }
        }
        if (!n_changed)
            break;
    }
    for (int i = 0; i < n; i++)
        L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* ggml's make_qkx2_quants: asymmetric (scale, min) fit of n values to
 * [0, nmax] minimising the weighted error, trying nstep+1 scales. */
static float make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                              float *the_min, float rmin, float rdelta, int nstep, bool use_mad)
{
    uint8_t Laux[32];
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min)
            min = x[i];
        if (x[i] > max)
            max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0)
        min = 0;
    if (max == min) {
        for (int i = 0; i < n; i++)
            L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = (float)nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)imax(0, imin(nmax, l));
        float diff = scale * (float)L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_error += weights[i] * diff;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * (x[i] - min));
            l = imax(0, imin(nmax, l));
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * (float)l;
            sum_l2 += w * (float)l * (float)l;
            sum_xl += w * (float)l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * (float)Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                cur_error += weights[i] * diff;
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* The 6-bit scale/min pairs of q4_K and q5_K, 12 bytes for 8 sub-blocks. */
static inline void get_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m)
{
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}

/* ------------------------------------------------------------------ */
/* k-quants                                                           */
/* ------------------------------------------------------------------ */

/* q2_K: scales[16], qs[64], d, dmin (f16). After the 16 sub-block fits:
 * 4-bit scales and mins, d, dmin, the final levels and the packing. */
void st_quant_q2_K_finish(const float *x, const float *scales, const float *mins, uint8_t *L,
                          uint8_t *y, st_requant_fn rq)
{
    const float q4scale = 15.f;
    uint8_t *ysc = y, *qs = y + 16;
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; j++) {
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    uint16_t hd, hdmin;
    if (max_scale > 0) {
        float iscale = q4scale / max_scale;
        for (int j = 0; j < 16; j++)
            ysc[j] = lowbyte(nearest_int(iscale * scales[j]));
        hd = st_ggml_f32_to_f16(max_scale / q4scale);
    } else {
        memset(ysc, 0, 16);
        hd = st_ggml_f32_to_f16(0.f);
    }
    if (max_min > 0) {
        float iscale = q4scale / max_min;
        for (int j = 0; j < 16; j++)
            ysc[j] = (uint8_t)(ysc[j] | ((unsigned)nearest_int(iscale * mins[j]) << 4));
        hdmin = st_ggml_f32_to_f16(max_min / q4scale);
    } else {
        hdmin = st_ggml_f32_to_f16(0.f);
    }
    wr16(y + 80, hd);
    wr16(y + 82, hdmin);
    const float fd = st_ggml_f16_to_f32(hd), fdmin = st_ggml_f16_to_f32(hdmin);
    for (int j = 0; j < 16; j++) {
        const float d = fd * (float)(ysc[j] & 0xF);
        if (!d)
            continue;
        const float dm = fdmin * (float)(ysc[j] >> 4);
        rq(x + 16 * j, 16, 1, dm, d, 0, 3, 0, L + 16 * j);
    }
    for (int j = 0; j < QKK; j += 128)
        for (int l = 0; l < 32; l++)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
                                      (L[j + l + 96] << 6));
}

static void quant_q2_K(const float *x, uint8_t *y, size_t nb)
{
    uint8_t L[QKK];
    float weights[16], mins[16], scales[16];
    for (size_t i = 0; i < nb; i++, x += QKK, y += 84) {
        for (int j = 0; j < 16; j++) {
            for (int l = 0; l < 16; l++)
                weights[l] = fabsf(x[16 * j + l]);
            scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], -0.5f,
                                         0.1f, 15, true);
        }
        st_quant_q2_K_finish(x, scales, mins, L, y, st_requant);
    }
}

static void dequant_q2_K(const uint8_t *x, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += 84) {
        const float d = rd_half(x + 80), min = rd_half(x + 82);
        const uint8_t *q = x + 16;
        int is = 0;
        for (int n = 0; n < QKK; n += 128) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int half = 0; half < 2; half++) {
                    uint8_t sc = x[is++];
                    float dl = d * (float)(sc & 0xF), ml = min * (float)(sc >> 4);
                    for (int l = 0; l < 16; l++)
                        *y++ = dl * (float)((q[l + 16 * half] >> shift) & 3) - ml;
                }
            }
            q += 32;
        }
    }
}

/* q3_K: hmask[32], qs[64], scales[12], d (f16). After the 16 sub-block
 * fits: 6-bit signed scales, d, the final levels and the packing. */
void st_quant_q3_K_finish(const float *x, const float *scales, int8_t *L, uint8_t *y,
                          st_requant_fn rq)
{
    uint8_t *hmask = y, *qs = y + 32, *ysc = y + 96;
    float max_scale = 0, amax = 0;
    for (int j = 0; j < 16; j++) {
        float scale = fabsf(scales[j]);
        if (scale > amax) {
            amax = scale;
            max_scale = scales[j];
        }
    }
    memset(ysc, 0, 12);
    uint16_t hd;
    if (max_scale) {
        float iscale = -32.f / max_scale;
        for (int j = 0; j < 16; j++) {
            int8_t l8 = to_i8(nearest_int(iscale * scales[j]));
            int l = imax(-32, imin(31, l8)) + 32;
            if (j < 8)
                ysc[j] = (uint8_t)(l & 0xF);
            else
                ysc[j - 8] = (uint8_t)(ysc[j - 8] | ((l & 0xF) << 4));
            l >>= 4;
            ysc[j % 4 + 8] = (uint8_t)(ysc[j % 4 + 8] | (l << (2 * (j / 4))));
        }
        hd = st_ggml_f32_to_f16(1 / iscale);
    } else {
        hd = st_ggml_f32_to_f16(0.f);
    }
    wr16(y + 108, hd);
    const float fd = st_ggml_f16_to_f32(hd);
    for (int j = 0; j < 16; j++) {
        int sc = j < 8 ? ysc[j] & 0xF : ysc[j - 8] >> 4;
        sc = (sc | (((ysc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
        float d = fd * (float)sc;
        if (!d)
            continue;
        rq(x + 16 * j, 16, 0, 0.f, d, -4, 3, 4, (uint8_t *)L + 16 * j);
    }
    /* Levels are 0..7 here. The high bit of level j goes to bit j / 32 of
     * hmask[j % 32], the low two bits to qs like q2_K's. Eight levels at a
     * time in a 64-bit word: every step is per byte, without carries. */
    const uint64_t ones = 0x0101010101010101ull, threes = 0x0303030303030303ull;
    for (int m = 0; m < 32; m += 8) {
        uint64_t acc = 0, v[8];
        for (int k = 0; k < 8; k++) {
            memcpy(&v[k], L + 32 * k + m, 8);
            acc |= ((v[k] >> 2) & ones) << k;
            v[k] &= threes;
        }
        memcpy(hmask + m, &acc, 8);
        for (int h = 0; h < 2; h++) {
            uint64_t q = v[4 * h] | (v[4 * h + 1] << 2) | (v[4 * h + 2] << 4) | (v[4 * h + 3] << 6);
            memcpy(qs + 32 * h + m, &q, 8);
        }
    }
}

static void quant_q3_K(const float *x, uint8_t *y, size_t nb)
{
    int8_t L[QKK];
    float scales[16];
    for (size_t i = 0; i < nb; i++, x += QKK, y += 110) {
        for (int j = 0; j < 16; j++)
            scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
        st_quant_q3_K_finish(x, scales, L, y, st_requant);
    }
}

static void dequant_q3_K(const uint8_t *x, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += 110) {
        const float d_all = rd_half(x + 108);
        const uint8_t *hm = x, *q = x + 32, *s = x + 96;
        int8_t scales[16];
        for (int j = 0; j < 16; j++) {
            int lo = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
            int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
            scales[j] = (int8_t)((lo | (hi << 4)) - 32);
        }
        int is = 0;
        uint8_t m = 1;
        for (int n = 0; n < QKK; n += 128) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int half = 0; half < 2; half++) {
                    float dl = d_all * (float)scales[is++];
                    for (int l = 0; l < 16; l++) {
                        int k = l + 16 * half;
                        *y++ = dl * (float)(((q[k] >> shift) & 3) - ((hm[k] & m) ? 0 : 4));
                    }
                }
                m = (uint8_t)(m << 1);
            }
            q += 32;
        }
    }
}

/* The sub-block fits shared by q4_K and q5_K: 8 sub-blocks of 32 with
 * weights av_x + |x| (av_x the sub-block's RMS). */
static void k4_fits(const float *x, int nmax, float rmin, int nstep, uint8_t *L, float *scales,
                    float *mins)
{
    float weights[32];
    for (int j = 0; j < 8; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++)
            sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++)
            weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], rmin,
                                     0.1f, nstep, false);
    }
}

/* The rest of q4_K / q5_K after the fits: 6-bit scales and mins packed
 * into 12 bytes, d and dmin, and the final levels in L. */
void st_quant_k4_finish(const float *x, const float *scales, const float *mins, int nmax,
                        uint8_t *L, uint8_t *hdr, st_requant_fn rq)
{
    uint8_t *ysc = hdr + 4;
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < 8; j++) {
        uint8_t ls = lowbyte(nearest_int(inv_scale * scales[j]));
        uint8_t lm = lowbyte(nearest_int(inv_min * mins[j]));
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
        if (j < 4) {
            ysc[j] = ls;
            ysc[j + 4] = lm;
        } else {
            ysc[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            ysc[j - 4] = (uint8_t)(ysc[j - 4] | ((ls >> 4) << 6));
            ysc[j - 0] = (uint8_t)(ysc[j - 0] | ((lm >> 4) << 6));
        }
    }
    uint16_t hd = st_ggml_f32_to_f16(max_scale / 63.f);
    uint16_t hdmin = st_ggml_f32_to_f16(max_min / 63.f);
    wr16(hdr, hd);
    wr16(hdr + 2, hdmin);
    const float fd = st_ggml_f16_to_f32(hd), fdmin = st_ggml_f16_to_f32(hdmin);
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        get_scale_min_k4(j, ysc, &sc, &m);
        const float d = fd * (float)sc;
        if (!d)
            continue;
        const float dm = fdmin * (float)m;
        rq(x + 32 * j, 32, 1, dm, d, 0, nmax, 0, L + 32 * j);
    }
}

/* q4_K: d, dmin (f16), scales[12], qs[128] */
void st_quant_q4_K_pack(const uint8_t *L, uint8_t *y)
{
    uint8_t *q = y + 16;
    for (int j = 0; j < QKK; j += 64, q += 32)
        for (int l = 0; l < 32; l++)
            q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
}

static void quant_q4_K(const float *x, uint8_t *y, size_t nb)
{
    uint8_t L[QKK];
    float scales[8], mins[8];
    for (size_t i = 0; i < nb; i++, x += QKK, y += 144) {
        memset(y + 4, 0, 12);
        k4_fits(x, 15, -1.f, 20, L, scales, mins);
        st_quant_k4_finish(x, scales, mins, 15, L, y, st_requant);
        st_quant_q4_K_pack(L, y);
    }
}

/* q5_K: d, dmin (f16), scales[12], qh[32], qs[128] */
void st_quant_q5_K_pack(const uint8_t *L, uint8_t *y)
{
    uint8_t *qh = y + 16, *ql = y + 48;
    memset(qh, 0, 32);
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < QKK; n += 64, ql += 32) {
        for (int j = 0; j < 32; j++) {
            int l1 = L[n + j], l2 = L[n + j + 32];
            qh[j] = (uint8_t)(qh[j] | (l1 > 15 ? m1 : 0) | (l2 > 15 ? m2 : 0));
            ql[j] = (uint8_t)((l1 & 15) | ((l2 & 15) << 4));
        }
        m1 = (uint8_t)(m1 << 2);
        m2 = (uint8_t)(m2 << 2);
    }
}

static void quant_q5_K(const float *x, uint8_t *y, size_t nb)
{
    uint8_t L[QKK];
    float scales[8], mins[8];
    for (size_t i = 0; i < nb; i++, x += QKK, y += 176) {
        memset(y + 4, 0, 12);
        k4_fits(x, 31, -0.5f, 15, L, scales, mins);
        st_quant_k4_finish(x, scales, mins, 31, L, y, st_requant);
        st_quant_q5_K_pack(L, y);
    }
}

static void dequant_q4_K(const uint8_t *x, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += 144) {
        const float d = rd_half(x), min = rd_half(x + 2);
        const uint8_t *q = x + 16;
        for (int is = 0; is < 8; is += 2, q += 32) {
            uint8_t sc, m;
            get_scale_min_k4(is, x + 4, &sc, &m);
            const float d1 = d * (float)sc, m1 = min * (float)m;
            get_scale_min_k4(is + 1, x + 4, &sc, &m);
            const float d2 = d * (float)sc, m2 = min * (float)m;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (float)(q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

static void dequant_q5_K(const uint8_t *x, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += 176) {
        const float d = rd_half(x), min = rd_half(x + 2);
        const uint8_t *qh = x + 16, *ql = x + 48;
        uint8_t u1 = 1, u2 = 2;
        for (int is = 0; is < 8; is += 2, ql += 32) {
            uint8_t sc, m;
            get_scale_min_k4(is, x + 4, &sc, &m);
            const float d1 = d * (float)sc, m1 = min * (float)m;
            get_scale_min_k4(is + 1, x + 4, &sc, &m);
            const float d2 = d * (float)sc, m2 = min * (float)m;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (float)((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
            u1 = (uint8_t)(u1 << 2);
            u2 = (uint8_t)(u2 << 2);
        }
    }
}

/* q6_K: ql[128], qh[64], scales[16] (int8), d (f16). After the 16
 * sub-block fits: 8-bit scales, d, the final levels and the packing. */
void st_quant_q6_K_finish(const float *x, const float *scales, int8_t *L, uint8_t *y,
                          st_requant_fn rq)
{
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < 16; ib++) {
        const float abs_scale = fabsf(scales[ib]);
        if (abs_scale > max_abs_scale) {
            max_abs_scale = abs_scale;
            max_scale = scales[ib];
        }
    }
    if (max_abs_scale < GROUP_MAX_EPS) {
        memset(y, 0, 210);
        return;
    }
    uint8_t *ql = y, *qh = y + 128, *ysc = y + 192;
    float iscale = -128.f / max_scale;
    uint16_t hd = st_ggml_f32_to_f16(1 / iscale);
    wr16(y + 208, hd);
    for (int ib = 0; ib < 16; ib++)
        ysc[ib] = lowbyte(imin(127, nearest_int(iscale * scales[ib])));
    const float fd = st_ggml_f16_to_f32(hd);
    for (int j = 0; j < 16; j++) {
        float d = fd * (float)(int8_t)ysc[j];
        if (!d)
            continue;
        rq(x + 16 * j, 16, 0, 0.f, d, -32, 31, 32, (uint8_t *)L + 16 * j);
    }
    for (int j = 0; j < QKK; j += 128, ql += 64, qh += 32) {
        for (int l = 0; l < 32; l++) {
            const uint8_t q1 = L[j + l + 0] & 0xF, q2 = L[j + l + 32] & 0xF;
            const uint8_t q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
            ql[l + 0] = (uint8_t)(q1 | (q3 << 4));
            ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
            qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                              ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
        }
    }
}

static void quant_q6_K(const float *x, uint8_t *y, size_t nb)
{
    int8_t L[QKK];
    float scales[16];
    for (size_t i = 0; i < nb; i++, x += QKK, y += 210) {
        for (int ib = 0; ib < 16; ib++)
            scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, 1);
        st_quant_q6_K_finish(x, scales, L, y, st_requant);
    }
}

static void dequant_q6_K(const uint8_t *x, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += 210) {
        const float d = rd_half(x + 208);
        const uint8_t *ql = x, *qh = x + 128;
        const int8_t *sc = (const int8_t *)(x + 192);
        for (int n = 0; n < QKK; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = ((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l + 0] = d * (float)sc[is + 0] * (float)q1;
                y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                y[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
        }
    }
}

/* q8_K: d (f32), qs[256], bsums[16] (int16) */
static void dequant_q8_K(const uint8_t *x, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += 292) {
        const float d = bitsf(rd32(x));
        for (int j = 0; j < QKK; j++)
            *y++ = d * (float)(int8_t)x[4 + j];
    }
}

/* ------------------------------------------------------------------ */
/* Plain types                                                        */
/* ------------------------------------------------------------------ */

static void quant_f32(const float *x, uint8_t *y, size_t n)
{
    memcpy(y, x, n * 4);
}

static void quant_f16(const float *x, uint8_t *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        wr16(y + 2 * i, st_ggml_f32_to_f16(x[i]));
}

static void quant_bf16(const float *x, uint8_t *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        wr16(y + 2 * i, st_ggml_f32_to_bf16(x[i]));
}

static void dequant_f32(const uint8_t *x, float *y, size_t n)
{
    memcpy(y, x, n * 4);
}

static void dequant_f16(const uint8_t *x, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] = st_ggml_f16_to_f32(rd16(x + 2 * i));
}

static void dequant_bf16(const uint8_t *x, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] = bf16_to_f32(rd16(x + 2 * i));
}

/* ------------------------------------------------------------------ */
/* The type table (ggml.c's type_traits: names, block sizes)          */
/* ------------------------------------------------------------------ */

typedef void (*quant_fn)(const float *, uint8_t *, size_t);
typedef void (*dequant_fn)(const uint8_t *, float *, size_t);

typedef struct qtype {
    const char *name;
    uint32_t blck, bytes;
    quant_fn quant;
    dequant_fn dequant;
} qtype;

#define NTYPES 43

static const qtype TYPES[NTYPES] = {
    [ST_GGML_F32] = {"f32", 1, 4, quant_f32, dequant_f32},
    [ST_GGML_F16] = {"f16", 1, 2, quant_f16, dequant_f16},
    [ST_GGML_Q4_0] = {"q4_0", 32, 18, quant_q4_0, dequant_q4_0},
    [ST_GGML_Q4_1] = {"q4_1", 32, 20, quant_q4_1, dequant_q4_1},
    [ST_GGML_Q5_0] = {"q5_0", 32, 22, quant_q5_0, dequant_q5_0},
    [ST_GGML_Q5_1] = {"q5_1", 32, 24, quant_q5_1, dequant_q5_1},
    [ST_GGML_Q8_0] = {"q8_0", 32, 34, quant_q8_0, dequant_q8_0},
    [ST_GGML_Q8_1] = {"q8_1", 32, 36, NULL, dequant_q8_1},
    [ST_GGML_Q2_K] = {"q2_K", 256, 84, quant_q2_K, dequant_q2_K},
    [ST_GGML_Q3_K] = {"q3_K", 256, 110, quant_q3_K, dequant_q3_K},
    [ST_GGML_Q4_K] = {"q4_K", 256, 144, quant_q4_K, dequant_q4_K},
    [ST_GGML_Q5_K] = {"q5_K", 256, 176, quant_q5_K, dequant_q5_K},
    [ST_GGML_Q6_K] = {"q6_K", 256, 210, quant_q6_K, dequant_q6_K},
    [ST_GGML_Q8_K] = {"q8_K", 256, 292, NULL, dequant_q8_K},
    [ST_GGML_IQ2_XXS] = {"iq2_xxs", 256, 66, NULL, NULL},
    [ST_GGML_IQ2_XS] = {"iq2_xs", 256, 74, NULL, NULL},
    [ST_GGML_IQ3_XXS] = {"iq3_xxs", 256, 98, NULL, NULL},
    [ST_GGML_IQ1_S] = {"iq1_s", 256, 50, NULL, NULL},
    [ST_GGML_IQ4_NL] = {"iq4_nl", 32, 18, NULL, NULL},
    [ST_GGML_IQ3_S] = {"iq3_s", 256, 110, NULL, NULL},
    [ST_GGML_IQ2_S] = {"iq2_s", 256, 82, NULL, NULL},
    [ST_GGML_IQ4_XS] = {"iq4_xs", 256, 136, NULL, NULL},
    [ST_GGML_I8] = {"i8", 1, 1, NULL, NULL},
    [ST_GGML_I16] = {"i16", 1, 2, NULL, NULL},
    [ST_GGML_I32] = {"i32", 1, 4, NULL, NULL},
    [ST_GGML_I64] = {"i64", 1, 8, NULL, NULL},
    [ST_GGML_F64] = {"f64", 1, 8, NULL, NULL},
    [ST_GGML_IQ1_M] = {"iq1_m", 256, 56, NULL, NULL},
    [ST_GGML_BF16] = {"bf16", 1, 2, quant_bf16, dequant_bf16},
    [ST_GGML_TQ1_0] = {"tq1_0", 256, 54, NULL, NULL},
    [ST_GGML_TQ2_0] = {"tq2_0", 256, 66, NULL, NULL},
    [ST_GGML_MXFP4] = {"mxfp4", 32, 17, NULL, NULL},
    [ST_GGML_NVFP4] = {"nvfp4", 64, 36, NULL, NULL},
    [ST_GGML_Q1_0] = {"q1_0", 128, 18, NULL, NULL},
    [ST_GGML_Q2_0] = {"q2_0", 64, 18, NULL, NULL},
};

static const qtype *type_of(int type)
{
    if (type < 0 || type >= NTYPES || !TYPES[type].name)
        return NULL;
    return &TYPES[type];
}

const char *st_ggml_type_name(int type)
{
    const qtype *t = type_of(type);
    return t ? t->name : NULL;
}

uint32_t st_ggml_block_elements(int type)
{
    const qtype *t = type_of(type);
    return t ? t->blck : 0;
}

uint32_t st_ggml_block_bytes(int type)
{
    const qtype *t = type_of(type);
    return t ? t->bytes : 0;
}

int st_ggml_can_quantize(int type)
{
    const qtype *t = type_of(type);
    return t && t->quant ? 1 : 0;
}

int st_ggml_can_dequantize(int type)
{
    const qtype *t = type_of(type);
    return t && t->dequant ? 1 : 0;
}

uint64_t st_ggml_row_bytes(int type, uint64_t n_per_row)
{
    const qtype *t = type_of(type);
    if (!t || n_per_row % t->blck)
        return 0;
    uint64_t blocks = n_per_row / t->blck;
    if (blocks > UINT64_MAX / t->bytes)
        return 0;
    return blocks * t->bytes;
}

/* ------------------------------------------------------------------ */
/* Dispatch and threads                                               */
/* ------------------------------------------------------------------ */

typedef size_t (*simd_fn)(const float *, uint8_t *, size_t);

static simd_fn simd_kernel(int type)
{
    switch (type) {
    case ST_GGML_Q8_0:
        return st_simd_quant_q8_0;
    case ST_GGML_Q4_0:
        return st_simd_quant_q4_0;
    case ST_GGML_Q4_1:
        return st_simd_quant_q4_1;
    case ST_GGML_Q5_0:
        return st_simd_quant_q5_0;
    case ST_GGML_Q5_1:
        return st_simd_quant_q5_1;
    case ST_GGML_Q2_K:
        return st_simd_quant_q2_K;
    case ST_GGML_Q3_K:
        return st_simd_quant_q3_K;
    case ST_GGML_Q4_K:
        return st_simd_quant_q4_K;
    case ST_GGML_Q5_K:
        return st_simd_quant_q5_K;
    case ST_GGML_Q6_K:
        return st_simd_quant_q6_K;
    default:
        return NULL;
    }
}

void st_quant_blocks(int type, const float *x, void *y, size_t nblocks, int path)
{
    const qtype *t = &TYPES[type];
    uint8_t *out = y;
    if (path == ST_QUANT_BEST && type == ST_GGML_F16) {
        /* the dtype room's F32 -> F16 (non-saturating) is ggml's exactly:
         * round to nearest even, overflow to Inf, NaN -> 0x7E00 | sign;
         * it has SIMD kernels */
        st_convert(ST_F16, y, ST_F32, x, nblocks, 0, NULL);
        return;
    }
    if (path == ST_QUANT_BEST && st_quant_simd_available()) {
        simd_fn k = simd_kernel(type);
        /* a kernel may stop at a block it leaves to the portable code */
        while (k && nblocks) {
            size_t done = k(x, out, nblocks);
            if (done < nblocks)
                t->quant(x + done * t->blck, out + done * t->bytes, 1), done++;
            x += done * t->blck;
            out += done * t->bytes;
            nblocks -= done;
        }
    }
    if (nblocks)
        t->quant(x, out, nblocks);
}

void st_dequant_blocks(int type, const void *x, float *y, size_t nblocks, int path)
{
    if (path == ST_QUANT_BEST && type == ST_GGML_F16) {
        /* exact either way; the dtype room's has SIMD kernels and quiets a
         * signalling NaN as ggml's float formula does */
        st_convert(ST_F32, y, ST_F16, x, nblocks, 0, NULL);
        return;
    }
    TYPES[type].dequant(x, y, nblocks);
}

typedef struct job {
    int type, quant, path;
    const void *src;
    void *dst;
    size_t nblocks;
} job;

static void *job_run(void *arg)
{
    job *j = arg;
    if (j->quant)
        st_quant_blocks(j->type, j->src, j->dst, j->nblocks, j->path);
    else
        st_dequant_blocks(j->type, j->src, j->dst, j->nblocks, j->path);
    return NULL;
}

#define MT_MAX_THREADS 64

/* Splits nblocks over threads (the calling thread takes the first share);
 * a thread that cannot be created has its share done here, so the result
 * never depends on it. */
static void run_split(int type, int quant, const void *src, void *dst, size_t nblocks,
                      unsigned threads, size_t min_blocks)
{
    const qtype *t = &TYPES[type];
    /* ST_GGML_PORTABLE=1 in the environment: portable code only (tests and
     * benchmarks of programs over the library; the bytes are the same) */
    const char *env = getenv("ST_GGML_PORTABLE");
    int path = env && env[0] == '1' ? ST_QUANT_PORTABLE : ST_QUANT_BEST;
    if (threads == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cpus > 0 ? (unsigned)cpus : 1;
    }
    if (threads > MT_MAX_THREADS)
        threads = MT_MAX_THREADS;
    size_t want = nblocks / (min_blocks ? min_blocks : 1);
    if (want < threads)
        threads = want ? (unsigned)want : 1;
    job jobs[MT_MAX_THREADS];
    pthread_t tids[MT_MAX_THREADS];
    int started[MT_MAX_THREADS] = {0};
    size_t piece = (nblocks + threads - 1) / threads;
    piece = (piece + 7) & ~(size_t)7; /* whole groups of 8 for the SIMD kernels */
    size_t in_size = quant ? (size_t)t->blck * 4 : t->bytes;
    size_t out_size = quant ? t->bytes : (size_t)t->blck * 4;
    unsigned nj = 0;
    for (size_t at = 0; at < nblocks && nj < threads; at += piece, nj++) {
        jobs[nj].type = type;
        jobs[nj].quant = quant;
        jobs[nj].path = path;
        jobs[nj].src = (const uint8_t *)src + at * in_size;
        jobs[nj].dst = (uint8_t *)dst + at * out_size;
        jobs[nj].nblocks = nblocks - at < piece ? nblocks - at : piece;
    }
    for (unsigned i = 1; i < nj; i++)
        started[i] = pthread_create(&tids[i], NULL, job_run, &jobs[i]) == 0;
    if (nj)
        job_run(&jobs[0]);
    for (unsigned i = 1; i < nj; i++) {
        if (started[i])
            pthread_join(tids[i], NULL);
        else
            job_run(&jobs[i]);
    }
}

/* Blocks per thread below which a thread costs more than it saves: about
 * 64 KiB of input for the cheap types, a few hundred blocks for k-quants. */
static size_t min_blocks_per_thread(int type, int quant)
{
    const qtype *t = &TYPES[type];
    if (quant && t->blck == QKK)
        return 64;
    size_t bytes = quant ? (size_t)t->blck * 4 : t->bytes;
    return ((size_t)1 << 16) / bytes;
}

static int check_type(int type, int quant, const qtype **out, st_error *err)
{
    const qtype *t = type_of(type);
    if (!t)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "unknown ggml type %d", type);
    if (quant ? !t->quant : !t->dequant)
        return st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET, "cannot %squantize ggml type %s",
                       quant ? "" : "de", t->name);
    *out = t;
    return ST_OK;
}

int st_ggml_quantize(int type, const float *src, void *dst, uint64_t nrows, uint64_t n_per_row,
                     unsigned threads, st_error *err)
{
    return st_ggml_quantize_progress(type, src, dst, nrows, n_per_row, threads, NULL, NULL, err);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Elements per piece when reporting progress: 4 MiB of input, a few ms to
 * a few tens of ms of work, so a cancel is heard quickly. */
#define PROGRESS_PIECE ((size_t)1 << 20)

int st_ggml_quantize_progress(int type, const float *src, void *dst, uint64_t nrows,
                              uint64_t n_per_row, unsigned threads, st_progress_fn progress,
                              void *ctx, st_error *err)
{
    const qtype *t;
    int rc = check_type(type, 1, &t, err);
    if (rc)
        return rc;
    if (n_per_row % t->blck)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET,
                       "%s: %llu elements per row is not a multiple of the block size %u",
                       t->name, (unsigned long long)n_per_row, t->blck);
    if (nrows && n_per_row > UINT64_MAX / nrows)
        return st_fail(err, ST_E_OVERFLOW, ST_NO_OFFSET, "%s: %llu rows of %llu elements overflow",
                       t->name, (unsigned long long)nrows, (unsigned long long)n_per_row);
    uint64_t n = nrows * n_per_row, nblocks = n / t->blck;
    if (n > SIZE_MAX / 4 || nblocks > SIZE_MAX / t->bytes)
        return st_fail(err, ST_E_OVERFLOW, ST_NO_OFFSET, "%s: %llu elements do not fit in memory",
                       t->name, (unsigned long long)n);
    if (nblocks && (!src || !dst))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "%s: NULL buffer", t->name);
    size_t min_blocks = min_blocks_per_thread(type, 1);
    if (!progress) {
        if (nblocks)
            run_split(type, 1, src, dst, (size_t)nblocks, threads, min_blocks);
        return ST_OK;
    }
    /* pieces, with a report at most every 200 ms and at the end */
    size_t piece = PROGRESS_PIECE / t->blck;
    uint64_t last = now_ms();
    for (size_t at = 0; at < nblocks; at += piece) {
        size_t len = nblocks - at < piece ? (size_t)nblocks - at : piece;
        run_split(type, 1, src + at * t->blck, (uint8_t *)dst + at * t->bytes, len, threads,
                  min_blocks);
        uint64_t now = now_ms();
        if (at + len < nblocks && now - last < 200)
            continue;
        last = now;
        if (progress(ctx, (uint64_t)(at + len) * t->blck * 4, n * 4))
            return st_fail(err, ST_E_CALLBACK, ST_NO_OFFSET, "%s quantization cancelled",
                           t->name);
    }
    if (!nblocks && progress(ctx, 0, 0))
        return st_fail(err, ST_E_CALLBACK, ST_NO_OFFSET, "%s quantization cancelled", t->name);
    return ST_OK;
}

int st_ggml_dequantize(int type, const void *src, float *dst, uint64_t n, unsigned threads,
                       st_error *err)
{
    const qtype *t;
    int rc = check_type(type, 0, &t, err);
    if (rc)
        return rc;
    if (n % t->blck)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET,
                       "%s: %llu elements is not a multiple of the block size %u", t->name,
                       (unsigned long long)n, t->blck);
    uint64_t nblocks = n / t->blck;
    if (n > SIZE_MAX / 4 || nblocks > SIZE_MAX / t->bytes)
        return st_fail(err, ST_E_OVERFLOW, ST_NO_OFFSET, "%s: %llu elements do not fit in memory",
                       t->name, (unsigned long long)n);
    if (!nblocks)
        return ST_OK;
    if (!src || !dst)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "%s: NULL buffer", t->name);
    run_split(type, 0, src, dst, (size_t)nblocks, threads, min_blocks_per_thread(type, 0));
    return ST_OK;
}
