/* Internal interface of the GGUF container: the type policy for image
 * models (gguf_policy.c) and what the writer (gguf_write.c) and reader
 * (gguf_read.c) share. Not installed. */
#ifndef ST_GGUF_INTERNAL_H
#define ST_GGUF_INTERNAL_H

#include "common/internal.h"

#define ST_GGUF_MAGIC 0x46554747u     /* "GGUF" read as a little-endian u32 */
#define ST_GGUF_VERSION 3u
#define ST_GGUF_ALIGNMENT 32u         /* GGUF_DEFAULT_ALIGNMENT            */
#define ST_GGUF_QUANT_VERSION 2u      /* GGML_QNT_VERSION                  */
#define ST_GGUF_MAX_DIMS 4u           /* GGML_MAX_DIMS                     */
#define ST_GGUF_QUANT_THRESHOLD 1024u /* convert.py: F32 at or below this   */
#define ST_GGUF_REARRANGE_THRESHOLD 512u
#define ST_GGUF_MAX_NAME 127u         /* convert.py's MAX_TENSOR_NAME_LENGTH */

/* Metadata value types: ST_GGUF_UINT8 .. ST_GGUF_FLOAT64 (safetensors.h). */
#define GG_TYPE_COUNT 13

static inline bool gg_signed_int(int t)
{
    return t == ST_GGUF_INT8 || t == ST_GGUF_INT16 || t == ST_GGUF_INT32 || t == ST_GGUF_INT64;
}

/* Tensor names of the input, asked by architecture detection. */
typedef struct gg_names {
    bool (*has)(const void *ctx, const char *name);
    const void *ctx;
} gg_names;

/* llama-quantize's counters that img_tensor_get_type consults. */
typedef struct gg_state {
    unsigned i_attention_wv, i_ffn_down;
} gg_state;

/* city96's architecture of the tensors in `names`, or `forced` when given
 * (checked against the known names). ST_E_UNSUPPORTED for a diffusers
 * layout or an unknown model. *arch is a static string. */
ST_INTERNAL int st_gguf_detect_arch(const gg_names *names, const char *forced, const char **arch,
                                    st_error *err);

/* The i-th known architecture name, NULL past the end. */
ST_INTERNAL const char *st_gguf_arch_at(size_t i);

/* The ggml type the quantizable tensors of a file type start from. */
ST_INTERNAL int st_gguf_ftype_base(int ftype);

/* convert.py drops tensors of these names for this architecture. */
ST_INTERNAL bool st_gguf_ignored(const char *arch, const char *name);

/* SD1 and SDXL tensors may be stored as rows of 256 (convert.py). */
ST_INTERNAL bool st_gguf_shape_fix(const char *arch);

/* The ggml type of one tensor: name (prefix stripped), source dtype, its
 * dimensions in ggml order (ne[0] innermost) as they will be stored.
 * *fallback is set when a row does not fill the chosen type's blocks and
 * F16 is used instead. Counters in st advance as llama-quantize's do; call
 * once per tensor, in the file's order. */
ST_INTERNAL int st_gguf_choose_type(gg_state *st, const char *arch, int ftype, const char *name,
                                    st_dtype src, const uint64_t *ne, uint32_t n_dims,
                                    int *fallback);

#endif
