/* Internal interface of the GGUF quantization kernels: the portable code
 * and dispatcher (quants.c) and the x86 kernels (quants_simd.c). Not
 * installed. Tests and benchmarks include it to run one path or the other
 * and compare them. */
#ifndef ST_GGUF_QUANTS_H
#define ST_GGUF_QUANTS_H

#include "common/internal.h"

#include <stddef.h>
#include <stdint.h>

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
ST_INTERNAL uint16_t st_ggml_f32_to_f16(float f);
ST_INTERNAL float st_ggml_f16_to_f32(uint16_t h);
ST_INTERNAL uint16_t st_ggml_f32_to_bf16(float f);

/* Pieces of q4_K/q5_K shared with the SIMD kernels: from the 8 sub-block
 * fits (scales, mins) to the 6-bit scale bytes, d, dmin and final levels
 * L (hdr is the block's start), and the packing of L into the block. */
ST_INTERNAL void st_quant_k4_finish(const float *x, const float *scales, const float *mins,
                                    int nmax, uint8_t *L, uint8_t *hdr);
ST_INTERNAL void st_quant_q4_K_pack(const uint8_t *L, uint8_t *y);
ST_INTERNAL void st_quant_q5_K_pack(const uint8_t *L, uint8_t *y);
/* The same for q2_K (after the 16 fits of make_qkx2_quants), q3_K (after
 * make_q3_quants) and q6_K (after make_qx_quants): the whole block. */
ST_INTERNAL void st_quant_q2_K_finish(const float *x, const float *scales, const float *mins,
                                      uint8_t *L, uint8_t *y);
ST_INTERNAL void st_quant_q3_K_finish(const float *x, const float *scales, int8_t *L, uint8_t *y);
ST_INTERNAL void st_quant_q6_K_finish(const float *x, const float *scales, int8_t *L, uint8_t *y);

/* x86 kernels (quants_simd.c). Each handles a prefix of the nblocks blocks
 * (a whole number of vector groups) when the CPU allows, and returns how
 * many blocks it did; the caller does the rest with the portable code. */
ST_INTERNAL int st_quant_simd_available(void);
ST_INTERNAL size_t st_simd_quant_q8_0(const float *x, uint8_t *y, size_t nblocks);
ST_INTERNAL size_t st_simd_quant_q4_0(const float *x, uint8_t *y, size_t nblocks);
ST_INTERNAL size_t st_simd_quant_q4_K(const float *x, uint8_t *y, size_t nblocks);
ST_INTERNAL size_t st_simd_quant_q5_K(const float *x, uint8_t *y, size_t nblocks);
ST_INTERNAL size_t st_simd_quant_q2_K(const float *x, uint8_t *y, size_t nblocks);
ST_INTERNAL size_t st_simd_quant_q6_K(const float *x, uint8_t *y, size_t nblocks);
ST_INTERNAL size_t st_simd_quant_q3_K(const float *x, uint8_t *y, size_t nblocks);

#endif
