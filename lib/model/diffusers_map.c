/*
 * Key names of Stable Diffusion (1.x, SDXL base and refiner) between the
 * single-file (LDM / SGM) layout and diffusers' folder layout, for the
 * UNet, the VAE, the CLIP-L and the OpenCLIP text encoders. The block correspondences are those of diffusers'
 * scripts/convert_diffusers_to_original_stable_diffusion.py (and ComfyUI's
 * comfy/diffusers_convert.py); they are rebuilt here as prefix pairs, and
 * what follows a prefix must be one of the names that block really holds:
 * anything else is unmapped, and an unmapped key is an error.
 */
#include "model/diffusers_internal.h"

#include <stdio.h>
#include <string.h>

enum kind {
    LEAF,  /* the rest is weight or bias */
    URES,  /* UNet ResBlock: in_layers.0 <-> norm1, ... */
    UATTN, /* UNet SpatialTransformer: same names on both sides */
    VRES,  /* VAE ResnetBlock: nin_shortcut <-> conv_shortcut */
    VATTN  /* VAE mid attention: q <-> to_q, ..., 1x1 conv <-> linear */
};

typedef struct pair {
    char ldm[48];
    char diff[48];
    enum kind kind;
} pair;

#define MAX_PAIRS 128

typedef struct table {
    pair p[MAX_PAIRS];
    size_t n;
} table;

static void add(table *t, enum kind k, const char *ldm, const char *diff)
{
    if (t->n < MAX_PAIRS) {
        snprintf(t->p[t->n].ldm, sizeof t->p[t->n].ldm, "%s", ldm);
        snprintf(t->p[t->n].diff, sizeof t->p[t->n].diff, "%s", diff);
        t->p[t->n].kind = k;
        t->n++;
    }
}

/* input_blocks / output_blocks are numbered through all levels (two
 * ResBlocks per level down, three up, a downsampler between levels);
 * diffusers numbers the levels, and its up_blocks.i is LDM level
 * levels-1-i. A level with attention holds a SpatialTransformer at .1. */
static void unet_table(table *t, const st_sd_unet_layout *u)
{
    char a[48], b[48];
    int L = u->levels;
    t->n = 0;
    add(t, LEAF, "time_embed.0.", "time_embedding.linear_1.");
    add(t, LEAF, "time_embed.2.", "time_embedding.linear_2.");
    if (u->label_emb) {
        add(t, LEAF, "label_emb.0.0.", "add_embedding.linear_1.");
        add(t, LEAF, "label_emb.0.2.", "add_embedding.linear_2.");
    }
    add(t, LEAF, "input_blocks.0.0.", "conv_in.");
    add(t, LEAF, "out.0.", "conv_norm_out.");
    add(t, LEAF, "out.2.", "conv_out.");
    for (int i = 0; i < L; i++) {
        bool up_attn = u->attn[L - 1 - i];
        for (int j = 0; j < 2; j++) {
            snprintf(a, sizeof a, "input_blocks.%d.0.", 3 * i + j + 1);
            snprintf(b, sizeof b, "down_blocks.%d.resnets.%d.", i, j);
            add(t, URES, a, b);
            if (u->attn[i]) {
                snprintf(a, sizeof a, "input_blocks.%d.1.", 3 * i + j + 1);
                snprintf(b, sizeof b, "down_blocks.%d.attentions.%d.", i, j);
                add(t, UATTN, a, b);
            }
        }
        for (int j = 0; j < 3; j++) {
            snprintf(a, sizeof a, "output_blocks.%d.0.", 3 * i + j);
            snprintf(b, sizeof b, "up_blocks.%d.resnets.%d.", i, j);
            add(t, URES, a, b);
            if (up_attn) {
                snprintf(a, sizeof a, "output_blocks.%d.1.", 3 * i + j);
                snprintf(b, sizeof b, "up_blocks.%d.attentions.%d.", i, j);
                add(t, UATTN, a, b);
            }
        }
        if (i < L - 1) {
            snprintf(a, sizeof a, "input_blocks.%d.0.op.", 3 * (i + 1));
            snprintf(b, sizeof b, "down_blocks.%d.downsamplers.0.conv.", i);
            add(t, LEAF, a, b);
            snprintf(a, sizeof a, "output_blocks.%d.%d.conv.", 3 * i + 2, up_attn ? 2 : 1);
            snprintf(b, sizeof b, "up_blocks.%d.upsamplers.0.conv.", i);
            add(t, LEAF, a, b);
        }
    }
    add(t, UATTN, "middle_block.1.", "mid_block.attentions.0.");
    add(t, URES, "middle_block.0.", "mid_block.resnets.0.");
    add(t, URES, "middle_block.2.", "mid_block.resnets.1.");
}

static void vae_table(table *t)
{
    char a[48], b[48];
    t->n = 0;
    static const char *const same[] = {"encoder.conv_in.", "encoder.conv_out.", "decoder.conv_in.",
                                       "decoder.conv_out.", "quant_conv.", "post_quant_conv."};
    for (size_t k = 0; k < sizeof same / sizeof same[0]; k++)
        add(t, LEAF, same[k], same[k]);
    add(t, LEAF, "encoder.norm_out.", "encoder.conv_norm_out.");
    add(t, LEAF, "decoder.norm_out.", "decoder.conv_norm_out.");
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 2; j++) {
            snprintf(a, sizeof a, "encoder.down.%d.block.%d.", i, j);
            snprintf(b, sizeof b, "encoder.down_blocks.%d.resnets.%d.", i, j);
            add(t, VRES, a, b);
        }
        for (int j = 0; j < 3; j++) {
            snprintf(a, sizeof a, "decoder.up.%d.block.%d.", 3 - i, j);
            snprintf(b, sizeof b, "decoder.up_blocks.%d.resnets.%d.", i, j);
            add(t, VRES, a, b);
        }
        if (i < 3) {
            snprintf(a, sizeof a, "encoder.down.%d.downsample.conv.", i);
            snprintf(b, sizeof b, "encoder.down_blocks.%d.downsamplers.0.conv.", i);
            add(t, LEAF, a, b);
            snprintf(a, sizeof a, "decoder.up.%d.upsample.conv.", 3 - i);
            snprintf(b, sizeof b, "decoder.up_blocks.%d.upsamplers.0.conv.", i);
            add(t, LEAF, a, b);
        }
    }
    for (int s = 0; s < 2; s++) {
        const char *side = s ? "decoder" : "encoder";
        for (int k = 0; k < 2; k++) {
            snprintf(a, sizeof a, "%s.mid.block_%d.", side, k + 1);
            snprintf(b, sizeof b, "%s.mid_block.resnets.%d.", side, k);
            add(t, VRES, a, b);
        }
        snprintf(a, sizeof a, "%s.mid.attn_1.", side);
        snprintf(b, sizeof b, "%s.mid_block.attentions.0.", side);
        add(t, VATTN, a, b);
    }
}

/* ---- the names inside a block ---- */

static bool eq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

static bool leaf(const char *s, size_t n)
{
    return eq(s, n, "weight") || eq(s, n, "bias");
}

/* "<digits>." at s: its length, or 0. */
static size_t number_dot(const char *s, size_t n)
{
    size_t k = 0;
    while (k < n && k < 4 && s[k] >= '0' && s[k] <= '9')
        k++;
    if (k == 0 || k >= n || s[k] != '.' || (k > 1 && s[0] == '0'))
        return 0;
    return k + 1;
}

/* Starts with lit followed by weight or bias. */
static bool then_leaf(const char *s, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n > l && memcmp(s, lit, l) == 0 && leaf(s + l, n - l);
}

static bool unet_attn_rest(const char *s, size_t n)
{
    if (then_leaf(s, n, "norm.") || then_leaf(s, n, "proj_in.") || then_leaf(s, n, "proj_out."))
        return true;
    static const char tb[] = "transformer_blocks.";
    if (n <= sizeof tb - 1 || memcmp(s, tb, sizeof tb - 1))
        return false;
    s += sizeof tb - 1;
    n -= sizeof tb - 1;
    size_t d = number_dot(s, n);
    if (!d)
        return false;
    s += d;
    n -= d;
    static const char *const w_only[] = {"attn1.to_q.weight", "attn1.to_k.weight", "attn1.to_v.weight",
                                         "attn2.to_q.weight", "attn2.to_k.weight", "attn2.to_v.weight"};
    for (size_t k = 0; k < sizeof w_only / sizeof w_only[0]; k++)
        if (eq(s, n, w_only[k]))
            return true;
    static const char *const wb[] = {"attn1.to_out.0.", "attn2.to_out.0.", "ff.net.0.proj.",
                                     "ff.net.2.", "norm1.", "norm2.", "norm3."};
    for (size_t k = 0; k < sizeof wb / sizeof wb[0]; k++)
        if (then_leaf(s, n, wb[k]))
            return true;
    return false;
}

/* A renaming of the first part of the rest, then weight or bias. */
typedef struct part {
    const char *ldm, *diff;
} part;

static const part unet_res_parts[] = {
    {"in_layers.0.", "norm1."},        {"in_layers.2.", "conv1."},
    {"out_layers.0.", "norm2."},       {"out_layers.3.", "conv2."},
    {"emb_layers.1.", "time_emb_proj."}, {"skip_connection.", "conv_shortcut."},
};

static const part vae_res_parts[] = {
    {"norm1.", "norm1."}, {"conv1.", "conv1."}, {"norm2.", "norm2."},
    {"conv2.", "conv2."}, {"nin_shortcut.", "conv_shortcut."},
};

/* diffusers' older VAE attention names are read too (query, ...). */
static const part vae_attn_parts[] = {
    {"norm.", "group_norm."}, {"q.", "to_q."},       {"k.", "to_k."},
    {"v.", "to_v."},          {"proj_out.", "to_out.0."}, {"q.", "query."},
    {"k.", "key."},           {"v.", "value."},      {"proj_out.", "proj_attn."},
};

static int map_parts(const part *parts, size_t np, bool to_diff, const char *s, size_t n,
                     char *out, size_t cap, size_t *o, int *reshape, bool attn)
{
    for (size_t k = 0; k < np; k++) {
        const char *from = to_diff ? parts[k].ldm : parts[k].diff;
        const char *to = to_diff ? parts[k].diff : parts[k].ldm;
        if (!then_leaf(s, n, from))
            continue;
        size_t fl = strlen(from), tl = strlen(to);
        if (*o + tl + (n - fl) + 1 > cap)
            return ST_E_NOT_FOUND;
        memcpy(out + *o, to, tl);
        memcpy(out + *o + tl, s + fl, n - fl);
        *o += tl + n - fl;
        /* The VAE's q, k, v and proj_out are 1x1 convolutions in LDM and
         * linear layers in diffusers: their weights change rank. */
        if (attn && k > 0 && eq(s + fl, n - fl, "weight"))
            *reshape = to_diff ? ST_RESHAPE_SQUEEZE : ST_RESHAPE_UNSQUEEZE;
        return ST_OK;
    }
    return ST_E_NOT_FOUND;
}

static int map_in_table(const table *t, bool to_diff, const char *s, size_t n, char *out,
                        size_t cap, size_t *o, int *reshape)
{
    for (size_t i = 0; i < t->n; i++) {
        const pair *p = &t->p[i];
        const char *from = to_diff ? p->ldm : p->diff;
        const char *to = to_diff ? p->diff : p->ldm;
        size_t fl = strlen(from), tl = strlen(to);
        if (n <= fl || memcmp(s, from, fl) != 0)
            continue;
        const char *rest = s + fl;
        size_t rn = n - fl;
        if (*o + tl + 1 > cap)
            return ST_E_NOT_FOUND;
        memcpy(out + *o, to, tl);
        *o += tl;
        switch (p->kind) {
        case LEAF:
        case UATTN:
            if (p->kind == LEAF ? !leaf(rest, rn) : !unet_attn_rest(rest, rn))
                return ST_E_NOT_FOUND;
            if (*o + rn + 1 > cap)
                return ST_E_NOT_FOUND;
            memcpy(out + *o, rest, rn);
            *o += rn;
            return ST_OK;
        case URES:
            return map_parts(unet_res_parts, sizeof unet_res_parts / sizeof unet_res_parts[0],
                             to_diff, rest, rn, out, cap, o, reshape, false);
        case VRES:
            return map_parts(vae_res_parts, sizeof vae_res_parts / sizeof vae_res_parts[0], to_diff,
                             rest, rn, out, cap, o, reshape, false);
        case VATTN:
            /* LDM -> diffusers writes the current names (the first five). */
            return map_parts(vae_attn_parts, to_diff ? 5 : sizeof vae_attn_parts / sizeof vae_attn_parts[0],
                             to_diff, rest, rn, out, cap, o, reshape, true);
        }
    }
    return ST_E_NOT_FOUND;
}

static bool te_rest(const char *s, size_t n)
{
    static const char *const whole[] = {
        "text_model.embeddings.token_embedding.weight",
        "text_model.embeddings.position_embedding.weight", "text_model.embeddings.position_ids",
        "text_model.final_layer_norm.weight", "text_model.final_layer_norm.bias"};
    for (size_t k = 0; k < sizeof whole / sizeof whole[0]; k++)
        if (eq(s, n, whole[k]))
            return true;
    static const char layers[] = "text_model.encoder.layers.";
    if (n <= sizeof layers - 1 || memcmp(s, layers, sizeof layers - 1))
        return false;
    s += sizeof layers - 1;
    n -= sizeof layers - 1;
    size_t d = number_dot(s, n);
    if (!d)
        return false;
    s += d;
    n -= d;
    static const char *const wb[] = {"self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.",
                                     "self_attn.out_proj.", "layer_norm1.", "layer_norm2.",
                                     "mlp.fc1.", "mlp.fc2."};
    for (size_t k = 0; k < sizeof wb / sizeof wb[0]; k++)
        if (then_leaf(s, n, wb[k]))
            return true;
    return false;
}

/* ---- OpenCLIP text tower (SD2's and SDXL's second text encoder) ----
 * diffusers' convert_open_clip_checkpoint: resblocks -> encoder.layers,
 * the fused in_proj split into q/k/v (rows), text_projection transposed
 * (OpenCLIP multiplies x @ P, a Linear holds P^T). */

static const part openclip_whole[] = {
    {"token_embedding.weight", "text_model.embeddings.token_embedding.weight"},
    {"positional_embedding", "text_model.embeddings.position_embedding.weight"},
    {"ln_final.weight", "text_model.final_layer_norm.weight"},
    {"ln_final.bias", "text_model.final_layer_norm.bias"},
    {"text_projection", "text_projection.weight"},
};

static const part openclip_layer_parts[] = {
    {"ln_1.", "layer_norm1."},  {"ln_2.", "layer_norm2."}, {"mlp.c_fc.", "mlp.fc1."},
    {"mlp.c_proj.", "mlp.fc2."}, {"attn.out_proj.", "self_attn.out_proj."},
};

static int put(char *out, size_t cap, size_t *o, const char *s, size_t n)
{
    if (*o + n + 1 > cap)
        return ST_E_NOT_FOUND;
    memcpy(out + *o, s, n);
    *o += n;
    out[*o] = '\0';
    return ST_OK;
}

static int openclip_map(bool to_diff, const char *s, size_t n, char *out, size_t cap, int *reshape)
{
    size_t o = 0;
    for (size_t k = 0; k < sizeof openclip_whole / sizeof openclip_whole[0]; k++) {
        const char *from = to_diff ? openclip_whole[k].ldm : openclip_whole[k].diff;
        const char *to = to_diff ? openclip_whole[k].diff : openclip_whole[k].ldm;
        if (eq(s, n, from)) {
            if (k == 4)
                *reshape = ST_RESHAPE_TRANSPOSE;
            return put(out, cap, &o, to, strlen(to));
        }
    }
    if (to_diff ? eq(s, n, "logit_scale") : eq(s, n, "text_model.embeddings.position_ids"))
        return ST_SD_LEFT_OUT;
    const char *lp = to_diff ? "transformer.resblocks." : "text_model.encoder.layers.";
    const char *lq = to_diff ? "text_model.encoder.layers." : "transformer.resblocks.";
    size_t ll = strlen(lp);
    if (n <= ll || memcmp(s, lp, ll) != 0)
        return ST_E_NOT_FOUND;
    size_t d = number_dot(s + ll, n - ll);
    if (!d)
        return ST_E_NOT_FOUND;
    if (put(out, cap, &o, lq, strlen(lq)) || put(out, cap, &o, s + ll, d))
        return ST_E_NOT_FOUND;
    s += ll + d;
    n -= ll + d;
    if (map_parts(openclip_layer_parts, sizeof openclip_layer_parts / sizeof openclip_layer_parts[0],
                  to_diff, s, n, out, cap, &o, reshape, false) == ST_OK) {
        out[o] = '\0';
        return ST_OK;
    }
    if (to_diff) {
        if (eq(s, n, "attn.in_proj_weight") || eq(s, n, "attn.in_proj_bias")) {
            *reshape = ST_RESHAPE_SPLIT_QKV;
            return put(out, cap, &o, "self_attn.q_proj.", 17) ||
                           put(out, cap, &o, s + 13, n - 13) /* weight | bias */
                       ? ST_E_NOT_FOUND
                       : ST_OK;
        }
        return ST_E_NOT_FOUND;
    }
    static const char sa[] = "self_attn.";
    if (n <= sizeof sa - 1 + 7 || memcmp(s, sa, sizeof sa - 1) != 0)
        return ST_E_NOT_FOUND;
    const char *qk = s + sizeof sa - 1;
    size_t qn = n - (sizeof sa - 1);
    if (memcmp(qk + 1, "_proj.", 6) != 0 || !leaf(qk + 7, qn - 7))
        return ST_E_NOT_FOUND;
    if (qk[0] == 'k' || qk[0] == 'v')
        return ST_SD_PART;
    if (qk[0] != 'q')
        return ST_E_NOT_FOUND;
    *reshape = ST_RESHAPE_FUSE_QKV;
    return put(out, cap, &o, "attn.in_proj_", 13) || put(out, cap, &o, qk + 7, qn - 7) ? ST_E_NOT_FOUND
                                                                                       : ST_OK;
}

/* Buffers of LDM checkpoints that are not weights of any diffusers
 * component: the DDPM noise schedule (diffusers' scheduler computes it from
 * its config), the EMA bookkeeping, the empty marker keys. */
static const char *const schedule_buffers[] = {
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2", "model_ema.decay", "model_ema.num_updates",
    "logvar", "lvlb_weights",
    /* ComfyUI/Forge markers (v-prediction goes into the scheduler config) */
    "v_pred", "ztsnr"};

bool st_sd_left_out(const char *name, size_t len)
{
    for (size_t k = 0; k < sizeof schedule_buffers / sizeof schedule_buffers[0]; k++)
        if (eq(name, len, schedule_buffers[k]))
            return true;
    return false;
}

static int map_kind(bool to_diff, int kind, const st_sd_unet_layout *u, const char *s, size_t n,
                    char *out, size_t cap, int *reshape)
{
    *reshape = ST_RESHAPE_NONE;
    size_t o = 0;
    table t;
    switch (kind) {
    case ST_SDK_CLIP:
        if (!te_rest(s, n))
            return ST_E_NOT_FOUND;
        return put(out, cap, &o, s, n);
    case ST_SDK_OPENCLIP:
        return openclip_map(to_diff, s, n, out, cap, reshape);
    case ST_SDK_UNET:
        if (!u)
            return ST_E_NOT_FOUND;
        unet_table(&t, u);
        break;
    case ST_SDK_VAE:
        vae_table(&t);
        break;
    default:
        return ST_E_NOT_FOUND;
    }
    int rc = map_in_table(&t, to_diff, s, n, out, cap, &o, reshape);
    if (rc == ST_OK)
        out[o] = '\0';
    return rc;
}

int st_sd_to_diffusers_name(int kind, const st_sd_unet_layout *u, const char *rest, size_t n,
                            char *out, size_t cap, int *reshape)
{
    return map_kind(true, kind, u, rest, n, out, cap, reshape);
}

int st_sd_from_diffusers_name(int kind, const st_sd_unet_layout *u, const char *name, size_t len,
                              char *out, size_t cap, int *reshape)
{
    return map_kind(false, kind, u, name, len, out, cap, reshape);
}
