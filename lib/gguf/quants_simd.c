/* x86 kernels for the GGUF quantizers (placeholder: portable only). */
#include "gguf/quants.h"

int st_quant_simd_available(void)
{
    return 0;
}

size_t st_simd_quant_q8_0(const float *x, uint8_t *y, size_t nblocks) { (void)x; (void)y; (void)nblocks; return 0; }
size_t st_simd_quant_q4_0(const float *x, uint8_t *y, size_t nblocks) { (void)x; (void)y; (void)nblocks; return 0; }
size_t st_simd_quant_q4_K(const float *x, uint8_t *y, size_t nblocks) { (void)x; (void)y; (void)nblocks; return 0; }
size_t st_simd_quant_q5_K(const float *x, uint8_t *y, size_t nblocks) { (void)x; (void)y; (void)nblocks; return 0; }
size_t st_simd_quant_q2_K(const float *x, uint8_t *y, size_t nblocks) { (void)x; (void)y; (void)nblocks; return 0; }
size_t st_simd_quant_q6_K(const float *x, uint8_t *y, size_t nblocks) { (void)x; (void)y; (void)nblocks; return 0; }
size_t st_simd_quant_q3_K(const float *x, uint8_t *y, size_t nblocks) { (void)x; (void)y; (void)nblocks; return 0; }
