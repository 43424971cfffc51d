/* Internal interface between the conversion files (lib/convert.c, the
 * portable reference and dispatcher, and lib/convert_simd.c, the x86 SIMD
 * kernels). Not installed. Tests include it to compare the paths. */
#ifndef ST_CONVERT_H
#define ST_CONVERT_H

#include "common/internal.h"

/* SIMD levels, from none to the widest this CPU and OS support. */
enum { ST_SIMD_NONE = 0, ST_SIMD_AVX2 = 1, ST_SIMD_AVX512 = 2 };

/* The best level available here (CPUID + XGETBV, checked on each call:
 * cheap, and no cached global). */
ST_INTERNAL int st_simd_level(void);

/* SIMD kernels. Each converts a prefix of the n elements (a whole number of
 * vectors) at `level` (which must be <= st_simd_level()) and returns how
 * many it did; the caller finishes the rest with the scalar code. They give
 * the same bits as the scalar functions below. */
ST_INTERNAL size_t st_simd_f32_to_f16(void *dst, const void *src, size_t n, int sat, int level);
ST_INTERNAL size_t st_simd_f32_to_bf16(void *dst, const void *src, size_t n, int sat, int level);
ST_INTERNAL size_t st_simd_f16_to_f32(void *dst, const void *src, size_t n, int level);
ST_INTERNAL size_t st_simd_bf16_to_f32(void *dst, const void *src, size_t n, int level);

/* An 8-bit float target of the F32 fast paths (F8_E4M3, F8_E5M2 and the
 * FNUZ kinds; not F8_E8M0). */
typedef struct st_f8_fmt {
    unsigned mbits;   /* 2 or 3 */
    unsigned bias;    /* 7, 8, 15 or 16 */
    unsigned maxcode; /* largest finite magnitude */
    unsigned infcode; /* 0 when the kind has no Inf */
    unsigned nancode; /* canonical NaN, without the sign */
    int fnuz;         /* no -0, one unsigned NaN 0x80 */
} st_f8_fmt;

ST_INTERNAL size_t st_simd_f32_to_f8(void *dst, const void *src, size_t n, const st_f8_fmt *f,
                                     int sat, int level);

/* The general element-by-element path (every supported pair), without the
 * fast paths, lookup tables, SIMD or threads: the reference the others are
 * tested against. Arguments as st_convert's (already validated). */
ST_INTERNAL void st_convert_generic(st_dtype to, void *dst, st_dtype from, const void *src,
                                    size_t n, unsigned flags);

#endif
