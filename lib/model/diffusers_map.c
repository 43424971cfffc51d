/*
 * Key names of Stable Diffusion 1.x between the single-file (LDM) layout
 * and diffusers' folder layout, for the UNet, the VAE and the CLIP text
 * encoder. The block correspondences are those of diffusers'
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

static void unet_table(table *t)
{
    char a[48], b[48];
    t->n = 0;
    add(t, LEAF, "time_embed.0.", "time_embedding.linear_1.");
    add(t, LEAF, "time_embed.2.", "time_embedding.linear_2.");
    add(t, LEAF, "input_blocks.0.0.", "conv_in.");
    add(t, LEAF, "out.0.", "conv_norm_out.");
    add(t, LEAF, "out.2.", "conv_out.");
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 2; j++) {
            snprintf(a, sizeof a, "input_blocks.%d.0.", 3 * i + j + 1);
            snprintf(b, sizeof b, "down_blocks.%d.resnets.%d.", i, j);
            add(t, URES, a, b);
            if (i < 3) {
                snprintf(a, sizeof a, "input_blocks.%d.1.", 3 * i + j + 1);
                snprintf(b, sizeof b, "down_blocks.%d.attentions.%d.", i, j);
                add(t, UATTN, a, b);
            }
        }
        for (int j = 0; j < 3; j++) {
            snprintf(a, sizeof a, "output_blocks.%d.0.", 3 * i + j);
            snprintf(b, sizeof b, "up_blocks.%d.resnets.%d.", i, j);
            add(t, URES, a, b);
            if (i > 0) {
                snprintf(a, sizeof a, "output_blocks.%d.1.", 3 * i + j);
                snprintf(b, sizeof b, "up_blocks.%d.attentions.%d.", i, j);
                add(t, UATTN, a, b);
            }
        }
        if (i < 3) {
            snprintf(a, sizeof a, "input_blocks.%d.0.op.", 3 * (i + 1));
            snprintf(b, sizeof b, "down_blocks.%d.downsamplers.0.conv.", i);
            add(t, LEAF, a, b);
            snprintf(a, sizeof a, "output_blocks.%d.%d.conv.", 3 * i + 2, i == 0 ? 1 : 2);
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

static const char *const comp_prefix[ST_SD_COMPONENTS] = {
    "model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer."};

/* Buffers of LDM checkpoints that are not weights of any diffusers
 * component: the DDPM noise schedule (diffusers' scheduler computes it from
 * its config) and the EMA bookkeeping. */
static const char *const schedule_buffers[] = {
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2", "model_ema.decay", "model_ema.num_updates",
    "logvar", "lvlb_weights"};

int st_sd1_to_diffusers_name(const char *name, size_t len, int *comp, char *out, size_t cap,
                             int *reshape)
{
    *reshape = ST_RESHAPE_NONE;
    for (size_t k = 0; k < sizeof schedule_buffers / sizeof schedule_buffers[0]; k++)
        if (eq(name, len, schedule_buffers[k]))
            return ST_SD_SCHEDULE;
    for (int c = 0; c < ST_SD_COMPONENTS; c++) {
        size_t pl = strlen(comp_prefix[c]);
        if (len <= pl || memcmp(name, comp_prefix[c], pl) != 0)
            continue;
        const char *s = name + pl;
        size_t n = len - pl;
        *comp = c;
        size_t o = 0;
        if (c == ST_SD_TEXT_ENCODER) {
            if (!te_rest(s, n) || n + 1 > cap)
                return ST_E_NOT_FOUND;
            memcpy(out, s, n);
            out[n] = '\0';
            return ST_OK;
        }
        table t;
        if (c == ST_SD_UNET)
            unet_table(&t);
        else
            vae_table(&t);
        int rc = map_in_table(&t, true, s, n, out, cap, &o, reshape);
        if (rc == ST_OK)
            out[o] = '\0';
        return rc;
    }
    return ST_E_NOT_FOUND;
}

int st_sd1_from_diffusers_name(int comp, const char *name, size_t len, char *out, size_t cap,
                               int *reshape)
{
    *reshape = ST_RESHAPE_NONE;
    if (comp < 0 || comp >= ST_SD_COMPONENTS)
        return ST_E_NOT_FOUND;
    size_t pl = strlen(comp_prefix[comp]);
    if (pl + 1 > cap)
        return ST_E_NOT_FOUND;
    memcpy(out, comp_prefix[comp], pl);
    size_t o = pl;
    if (comp == ST_SD_TEXT_ENCODER) {
        if (!te_rest(name, len) || o + len + 1 > cap)
            return ST_E_NOT_FOUND;
        memcpy(out + o, name, len);
        out[o + len] = '\0';
        return ST_OK;
    }
    table t;
    if (comp == ST_SD_UNET)
        unet_table(&t);
    else
        vae_table(&t);
    int rc = map_in_table(&t, false, name, len, out, cap, &o, reshape);
    if (rc == ST_OK)
        out[o] = '\0';
    return rc;
}
