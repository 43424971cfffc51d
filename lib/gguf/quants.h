/* Internal interface of the GGUF quantization kernels: the portable code
 * and dispatcher (quants.c) and the x86 kernels (quants_simd.c). Not
 * installed. Tests and benchmarks include it to run one path or the other
 * and compare them. */
#ifndef ST_GGUF_QUANTS_H
#define ST_GGUF_QUANTS_H

#include "common/internal.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Which kernels may be used: the portable C code only, or the best this CPU
 * has. Both give identical bytes. */
enum { ST_QUANT_PORTABLE = 0, ST_QUANT_BEST = 1 };

/* Quantizes nblocks whole blocks of `type` (x holds nblocks * block
 * elements, y receives nblocks * block bytes), on the calling thread.
 * type must be one st_ggml_can_quantize accepts. */
ST_INTERNAL void st_quant_blocks(int type, const float *x, void *y, size_t nblocks, int path);

/* Dequantizes nblocks blocks; type must be one st_ggml_dequantize accepts. */
ST_INTERNAL void st_dequant_blocks(int type, const void *x, float *y, size_t nblocks, int path);

/* ggml's scalar conversions (ggml-impl.h), as ggml's quantizers apply them
 * to scales: F32 -> F16 rounds to nearest even, NaN -> 0x7E00 | sign;
 * F32 -> BF16 rounds to nearest even, NaN -> (bits >> 16) | 0x40. */
static inline uint16_t st_ggml_f32_to_f16(float f);
ST_INTERNAL float st_ggml_f16_to_f32(uint16_t h);
ST_INTERNAL uint16_t st_ggml_f32_to_bf16(float f);

/* The final levels of a sub-block once its scale is known:
 * L[i] = clamp(nearest_int((x[i] + dm) / d), lo, hi) + bias (x[i] / d
 * when !with_dm); portable and AVX2 versions. */
typedef void (*st_requant_fn)(const float *x, int n, int with_dm, float dm, float d, int lo,
                              int hi, int bias, uint8_t *L);
ST_INTERNAL void st_requant(const float *x, int n, int with_dm, float dm, float d, int lo, int hi,
                            int bias, uint8_t *L);
ST_INTERNAL void st_requant_avx2(const float *x, int n, int with_dm, float dm, float d, int lo,
                                 int hi, int bias, uint8_t *L);

/* ggml's FP32 -> FP16 (from Maratyszcza's FP16 library): the magnitude is
 * scaled so that adding a power of two chosen from the exponent rounds the
 * mantissa at FP16's precision, in float arithmetic. Inline: the vector
 * kernels call it once or twice per block. */
static inline uint16_t st_ggml_f32_to_f16(float f)
{
    uint32_t w, b;
    memcpy(&w, &f, 4);
    uint32_t shl1 = w << 1, sign = w & 0x80000000u;
    if (shl1 > 0xFF000000u)
        return (uint16_t)((sign >> 16) | 0x7E00u);
    float base = (fabsf(f) * 0x1p+112f) * 0x1p-110f;
    uint32_t bias = shl1 & 0xFF000000u;
    if (bias < 0x71000000u)
        bias = 0x71000000u;
    uint32_t pb = (bias >> 1) + 0x07800000u;
    float p;
    memcpy(&p, &pb, 4);
    base = p + base;
    memcpy(&b, &base, 4);
    return (uint16_t)((sign >> 16) | (((b >> 13) & 0x7C00u) + (b & 0x0FFFu)));
}

/* Pieces of the k-quants shared with the SIMD kernels, which do the
 * sub-block fits themselves: from the fits (scales, mins) to the block's
 * bytes (quantized scales, d, dmin, final levels through rq, packing).
 * st_quant_k4_finish writes q4_K/q5_K's header (hdr = the block) and the
 * levels L; the _pack functions then write the quants. */
ST_INTERNAL void st_quant_k4_finish(const float *x, const float *scales, const float *mins,
                                    int nmax, uint8_t *L, uint8_t *hdr, st_requant_fn rq);
ST_INTERNAL void st_quant_q4_K_pack(const uint8_t *L, uint8_t *y);
ST_INTERNAL void st_quant_q5_K_pack(const uint8_t *L, uint8_t *y);
ST_INTERNAL void st_quant_q2_K_finish(const float *x, const float *scales, const float *mins,
                                      uint8_t *L, uint8_t *y, st_requant_fn rq);
ST_INTERNAL void st_quant_q3_K_finish(const float *x, const float *scales, int8_t *L, uint8_t *y,
                                      st_requant_fn rq);
ST_INTERNAL void st_quant_q6_K_finish(const float *x, const float *scales, int8_t *L, uint8_t *y,
                                      st_requant_fn rq);

/* x86 kernels (quants_simd.c). Each handles a prefix of the nblocks blocks
 * (a whole number of vector groups) when the CPU allows, and returns how
 * many blocks it did; the caller does the rest with the portable code. */
ST_INTERNAL int st_quant_simd_available(void);
ST_INTERNAL size_t st_simd_quant_q8_0(const float *x, uint8_t *y, size_t nblocks);
ST_INTERNAL size_t st_simd_quant_q4_0(const float *x, uint8_t *y, size_t nblocks);
ST_INTERNAL size_t st_simd_quant_q4_1(const float *x, uint8_t *y, size_t nblocks);
ST_INTERNAL size_t st_simd_quant_q5_0(const float *x, uint8_t *y, size_t nblocks);
ST_INTERNAL size_t st_simd_quant_q5_1(const float *x, uint8_t *y, size_t nblocks);
ST_INTERNAL size_t st_simd_quant_q4_K(const float *x, uint8_t *y, size_t nblocks);
ST_INTERNAL size_t st_simd_quant_q5_K(const float *x, uint8_t *y, size_t nblocks);
ST_INTERNAL size_t st_simd_quant_q2_K(const float *x, uint8_t *y, size_t nblocks);
ST_INTERNAL size_t st_simd_quant_q6_K(const float *x, uint8_t *y, size_t nblocks);
ST_INTERNAL size_t st_simd_quant_q3_K(const float *x, uint8_t *y, size_t nblocks);

#endif
