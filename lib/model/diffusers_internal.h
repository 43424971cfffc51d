/* Stable Diffusion names between the single-file (LDM / SGM) and diffusers
 * layouts (diffusers_map.c), used by diffusers.c. Not installed. */
#ifndef ST_DIFFUSERS_INTERNAL_H
#define ST_DIFFUSERS_INTERNAL_H

#include "common/internal.h"

#include <stdbool.h>

/* The kinds of component a pipeline is made of. */
enum {
    ST_SDK_UNET = 0,     /* LDM UNetModel <-> UNet2DConditionModel              */
    ST_SDK_VAE = 1,      /* LDM AutoencoderKL <-> diffusers AutoencoderKL        */
    ST_SDK_CLIP = 2,     /* HF CLIPTextModel: the same names on both sides      */
    ST_SDK_OPENCLIP = 3, /* OpenCLIP text tower <-> CLIPTextModel(WithProjection) */
    ST_SDK_FLUX = 4      /* BFL Flux transformer <-> FluxTransformer2DModel     */
};

/* How a tensor changes on the way. */
enum {
    ST_RESHAPE_NONE = 0,
    ST_RESHAPE_SQUEEZE = 1,   /* [o,i,1,1] -> [o,i] (the same bytes) */
    ST_RESHAPE_UNSQUEEZE = 2, /* [o,i] -> [o,i,1,1] */
    ST_RESHAPE_SPLIT_QKV = 3, /* in_proj [3d,...] -> q, k, v [d,...]: the name given is q's */
    ST_RESHAPE_FUSE_QKV = 4,  /* q, k, v [d,...] -> in_proj [3d,...]: named from q */
    ST_RESHAPE_TRANSPOSE = 5, /* [a,b] -> [b,a] (OpenCLIP text_projection) */
    ST_RESHAPE_PIECES = 6     /* row ranges of tensors concatenated (Flux), set by the caller */
};

/* Returned for a buffer no component on the other side holds (the DDPM
 * noise schedule, EMA bookkeeping, OpenCLIP's logit_scale, HF's
 * position_ids): left out, and counted. */
#define ST_SD_LEFT_OUT (-1)
/* Returned for k_proj/v_proj of an OpenCLIP layer: written fused with
 * q_proj, under q_proj's name. */
#define ST_SD_PART (-2)

/* The UNet's block layout: levels, whether a level has attention (down
 * side; the up side mirrors it), SDXL's label_emb. */
typedef struct st_sd_unet_layout {
    int levels;
    bool attn[4];
    bool label_emb;
} st_sd_unet_layout;

/* A single-file buffer outside any component that is left out. */
ST_INTERNAL bool st_sd_left_out(const char *name, size_t len);

/* The rest of a single-file name after its component's prefix -> the name
 * in the diffusers component of that kind (NUL-terminated in out). ST_OK,
 * ST_SD_LEFT_OUT, or ST_E_NOT_FOUND when it is not one of the model's. */
ST_INTERNAL int st_sd_to_diffusers_name(int kind, const st_sd_unet_layout *u, const char *rest,
                                        size_t n, char *out, size_t cap, int *reshape);

/* A diffusers component's name -> the rest of the single-file name (to
 * follow the component's prefix). ST_OK, ST_SD_LEFT_OUT, ST_SD_PART or
 * ST_E_NOT_FOUND. */
ST_INTERNAL int st_sd_from_diffusers_name(int kind, const st_sd_unet_layout *u, const char *name,
                                          size_t len, char *out, size_t cap, int *reshape);

/* A tensor of one layout that is several, or rearranged, in the other
 * (Flux): to diffusers, names[0..n-1] are the row blocks of the BFL tensor
 * in proportions parts[] (swap: its two halves exchanged); from diffusers,
 * names[0] is the BFL name and names[1..n] the diffusers tensors that make
 * it, in order (part_index: which of them was asked about). */
typedef struct st_sd_group {
    int n, part_index;
    bool swap;
    unsigned char parts[4];
    char names[5][256];
} st_sd_group;

/* A Flux transformer name without its prefix, either way. ST_OK,
 * ST_SD_PART (from diffusers: a part other than the first) or
 * ST_E_NOT_FOUND. */
ST_INTERNAL int st_flux_map(bool to_diff, const char *name, size_t len, st_sd_group *g);

#endif
