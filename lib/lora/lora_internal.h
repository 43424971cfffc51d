/* Internal interfaces of lib/lora: the model-key <-> adapter-name map, f32
 * tensor loading, the linear algebra over BLAS/LAPACK, and adapter parsing. */
#ifndef ST_LORA_INTERNAL_H
#define ST_LORA_INTERNAL_H

#include "common/internal.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- names.c: which model weight an adapter module patches ---- */

/* One (adapter stem -> model weight rows) pair. */
typedef struct lora_target {
    const char *stem;        /* "lora_unet_input_blocks_4_1_..." (owned)     */
    size_t tensor;           /* index in the model's file order              */
    uint64_t row0, rows;     /* the patched rows of the weight's first dim   */
    bool canonical;          /* the name kohya itself writes for this layer  */
    unsigned kind;           /* LORA_LAYER_* bits: what kohya targets        */
    bool swap_halves;        /* the adapter's rows are the weight's with its */
                             /* two halves swapped (diffusers' AdaLN norm_out */
                             /* is [scale; shift], BFL's [shift; scale])      */
} lora_target;

#define LORA_LAYER_ATTN 1u   /* UNet Transformer2DModel linear / conv 1x1    */
#define LORA_LAYER_RESNET 2u /* ResnetBlock2D, Downsample2D, Upsample2D      */
#define LORA_LAYER_TE 4u     /* CLIPAttention, CLIPMLP                       */

typedef struct lora_map lora_map;

/* Builds the map for every weight of `model` a LoRA can target. */
ST_INTERNAL int lora_map_build(const st_file *model, lora_map **out, st_error *err);
ST_INTERNAL void lora_map_free(lora_map *map);
ST_INTERNAL const lora_target *lora_map_find(const lora_map *map, const char *stem, size_t len);
ST_INTERNAL size_t lora_map_count(const lora_map *map);
ST_INTERNAL const lora_target *lora_map_at(const lora_map *map, size_t i);
/* The model family the keys say (ST_FAMILY_SD1/SD2/SDXL or UNKNOWN). */
ST_INTERNAL int lora_map_family(const lora_map *map);

/* ---- tensor.c: f32 loading ---- */

/* Reads a whole floating tensor as f32 into a malloc'ed array (*out). */
ST_INTERNAL int lora_load_f32(const st_file *f, const char *path, const st_tensor *t,
                              float **out, st_error *err);
/* Reads `rows` rows from row0 of a tensor (rows of numel/shape[0]) as f32
 * into dst. */
ST_INTERNAL int lora_load_rows_f32(const st_file *f, const char *path, const st_tensor *t,
                                   uint64_t row0, uint64_t rows, float *dst, st_error *err);
/* Reads a scalar (any numeric dtype, one element) as a double. */
ST_INTERNAL int lora_load_scalar(const st_file *f, const char *path, const st_tensor *t,
                                 double *out, st_error *err);
/* Allocates n floats, failing with ST_E_NOMEM naming `what`. */
ST_INTERNAL float *lora_alloc_f32(uint64_t n, const char *what, st_error *err);

/* ---- linalg.c (BLAS / LAPACK) ---- */

/* C[m x n] += s * A[m x k] @ B[k x n], all row-major, contiguous. */
ST_INTERNAL void lora_gemm_acc(size_t m, size_t n, size_t k, float s, const float *a,
                               const float *b, float *c);

/* The same product in tiles small enough that BLAS keeps each on the
 * calling thread (for callers running their own threads). */
ST_INTERNAL void lora_gemm_acc_serial(size_t m, size_t n, size_t k, float s, const float *a,
                                      const float *b, float *c);
/* Online CPUs, 1..64. */
ST_INTERNAL unsigned lora_cpu_count(void);

/* Truncated SVD of A [m x n] (row-major; not modified) to rank r <= min(m, n)
 * by a randomized range finder: up [m x r] = U S, down [r x n] = V^T. */
ST_INTERNAL int lora_svd_truncated(const float *a, size_t m, size_t n, size_t r, float *up,
                                   float *down, st_error *err);

/* Exact SVD of up [m x r] @ down [r x n] via QR of both factors. Fills s[r]
 * (descending); when u_out / vt_out are not NULL, U [m x r] and V^T [r x n]. */
ST_INTERNAL int lora_svd_product(const float *up, const float *down, size_t m, size_t n,
                                 size_t r, double *s, float *u_out, float *vt_out,
                                 st_error *err);

/* ---- adapter.c: the modules of an adapter file ---- */

enum {
    LK_DOWN, LK_UP, LK_MID, LK_ALPHA,
    LK_HADA_W1A, LK_HADA_W1B, LK_HADA_W2A, LK_HADA_W2B, LK_HADA_T1, LK_HADA_T2,
    LK_LOKR_W1, LK_LOKR_W1A, LK_LOKR_W1B, LK_LOKR_W2, LK_LOKR_W2A, LK_LOKR_W2B, LK_LOKR_T2,
    LK_DORA,
    LK_COUNT
};

typedef struct lora_module {
    char *stem;              /* NUL-terminated key stem                       */
    size_t stem_len;
    const st_tensor *part[LK_COUNT];
} lora_module;

typedef struct lora_adapter {
    const char *path;
    st_file *file;
    lora_module *mods;
    size_t nmods;
    st_lora_format format;
} lora_adapter;

/* Opens an adapter and groups its tensors by module; any tensor with a
 * suffix this library does not know is an ST_E_LORA error naming it. */
ST_INTERNAL int lora_adapter_open(const char *path, lora_adapter *a, st_error *err);
ST_INTERNAL void lora_adapter_close(lora_adapter *a);

/* A module whose delta is one low-rank product: strength * delta =
 * scale * up [rows x k] @ down [k x cols] (f32, row-major, malloc'ed), so
 * a weight can be patched a block of rows at a time. */
typedef struct lora_factors {
    float *up, *down;
    uint64_t k;
    float scale;
} lora_factors;

/* Fills f for kohya LoRA/LoCon (with or without a Tucker lora_mid), PEFT
 * and diffusers modules; leaves f->up NULL (and returns ST_OK) for the
 * others (LoHa, LoKr, DoRA), which only lora_module_apply computes. Errors
 * as lora_module_apply. */
ST_INTERNAL int lora_module_factors(const lora_adapter *a, const lora_module *m, float strength,
                                    uint64_t rows, uint64_t cols, const uint64_t *tshape,
                                    uint32_t trank, lora_factors *f, st_error *err);
ST_INTERNAL void lora_factors_free(lora_factors *f);

/* Adds strength * delta(module) to w [rows x cols] (f32, row-major), after
 * checking every shape against it. rows x cols is the target's flattened
 * shape (tshape/trank the whole weight's). w NULL: only check (LoRA
 * modules: shapes, rank, alpha; LyCORIS modules are checked when applied). */
ST_INTERNAL int lora_module_apply(const lora_adapter *a, const lora_module *m, float strength,
                                  float *w, uint64_t rows, uint64_t cols,
                                  const uint64_t *tshape, uint32_t trank, st_error *err);

#endif
