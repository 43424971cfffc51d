/*
 * Which model weight an adapter module patches.
 *
 * Every weight a LoRA can target gets its adapter stem(s) ("lora_unet_" +
 * the key with '.' -> '_'), indexed by a seeded hash table. The UNet's
 * weights get two: from the LDM key (how kohya names SDXL LoRAs) and from
 * the diffusers key (how kohya names SD1/SD2 LoRAs, trained on diffusers
 * modules). The LDM -> diffusers correspondence is the one of ComfyUI's
 * comfy/utils.py unet_to_diffusers, derived here from the block layout
 * (res blocks per level, found from where the first downsampler sits)
 * rather than from a config. OpenCLIP towers (SD2, SDXL's second encoder)
 * are addressed by the HF CLIP names kohya uses, q/k/v being row blocks of
 * the fused in_proj_weight (as kohya's model_util conversion splits it).
 */
#include "lora/lora_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lora_map {
    lora_target *t;
    size_t n, cap;
    size_t *slots;           /* index + 1; 0 = empty                          */
    size_t nslots;
    uint64_t seed;
    int family;
};

static bool has_prefix(const char *s, size_t len, const char *p, size_t *plen)
{
    size_t n = strlen(p);
    if (len < n || memcmp(s, p, n) != 0)
        return false;
    *plen = n;
    return true;
}

static bool ends_with(const char *s, size_t len, const char *suf)
{
    size_t n = strlen(suf);
    return len >= n && memcmp(s + len - n, suf, n) == 0;
}

static int add_target(lora_map *m, const char *stem, size_t tensor, uint64_t row0,
                      uint64_t rows, bool canonical, unsigned kind, st_error *err)
{
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 256;
        lora_target *t = realloc(m->t, cap * sizeof *t);
        if (!t)
            return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory building the LoRA name map");
        m->t = t;
        m->cap = cap;
    }
    char *s = strdup(stem);
    if (!s)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory building the LoRA name map");
    for (char *p = s; *p; p++)
        if (*p == '.')
            *p = '_';
    m->t[m->n++] = (lora_target){s, tensor, row0, rows, canonical, kind, false};
    return ST_OK;
}

/* ResnetBlock2D sub-layer names, LDM -> diffusers (comfy UNET_MAP_RESNET). */
static const char *resnet_name(const char *rest, const char **tail)
{
    static const char *const map[][2] = {
        {"in_layers.0.", "norm1."},       {"in_layers.2.", "conv1."},
        {"emb_layers.1.", "time_emb_proj."}, {"out_layers.0.", "norm2."},
        {"out_layers.3.", "conv2."},      {"skip_connection.", "conv_shortcut."},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        size_t n = strlen(map[i][0]);
        if (strncmp(rest, map[i][0], n) == 0) {
            *tail = rest + n;
            return map[i][1];
        }
    }
    return NULL;
}

/* "input_blocks.4.1.proj_in.weight" -> "down_blocks.1.attentions.0.proj_in.weight"
 * (nres res blocks per level). Returns false when there is no diffusers name.
 * *kind gets the kohya module class. */
static bool ldm_to_diffusers(const char *x, unsigned nres, char *out, size_t cap, unsigned *kind)
{
    unsigned n, sub;
    int used = 0;
    const char *tail;
    *kind = 0;
    static const char *const basic[][2] = {
        {"time_embed.0.", "time_embedding.linear_1."}, {"time_embed.2.", "time_embedding.linear_2."},
        {"label_emb.0.0.", "add_embedding.linear_1."}, {"label_emb.0.2.", "add_embedding.linear_2."},
        {"input_blocks.0.0.", "conv_in."},            {"out.0.", "conv_norm_out."},
        {"out.2.", "conv_out."},
    };
    for (size_t i = 0; i < sizeof basic / sizeof basic[0]; i++) {
        size_t l = strlen(basic[i][0]);
        if (strncmp(x, basic[i][0], l) == 0)
            return snprintf(out, cap, "%s%s", basic[i][1], x + l) < (int)cap;
    }
    int w;
    if (sscanf(x, "input_blocks.%u.%u.%n", &n, &sub, &used) == 2 && used > 0 && n >= 1) {
        const char *rest = x + used;
        unsigned lvl = (n - 1) / (nres + 1), r = (n - 1) % (nres + 1);
        if (r == nres) {
            if (sub != 0 || strncmp(rest, "op.", 3) != 0)
                return false;
            *kind = LORA_LAYER_RESNET;
            w = snprintf(out, cap, "down_blocks.%u.downsamplers.0.conv.%s", lvl, rest + 3);
        } else if (sub == 0) {
            const char *d = resnet_name(rest, &tail);
            if (!d)
                return false;
            *kind = LORA_LAYER_RESNET;
            w = snprintf(out, cap, "down_blocks.%u.resnets.%u.%s%s", lvl, r, d, tail);
        } else if (sub == 1) {
            *kind = LORA_LAYER_ATTN;
            w = snprintf(out, cap, "down_blocks.%u.attentions.%u.%s", lvl, r, rest);
        } else {
            return false;
        }
        return w > 0 && w < (int)cap;
    }
    if (sscanf(x, "middle_block.%u.%n", &sub, &used) == 1 && used > 0) {
        const char *rest = x + used;
        if (sub == 1) {
            *kind = LORA_LAYER_ATTN;
            w = snprintf(out, cap, "mid_block.attentions.0.%s", rest);
        } else if (sub == 0 || sub == 2) {
            const char *d = resnet_name(rest, &tail);
            if (!d)
                return false;
            *kind = LORA_LAYER_RESNET;
            w = snprintf(out, cap, "mid_block.resnets.%u.%s%s", sub / 2, d, tail);
        } else {
            return false;
        }
        return w > 0 && w < (int)cap;
    }
    if (sscanf(x, "output_blocks.%u.%u.%n", &n, &sub, &used) == 2 && used > 0) {
        const char *rest = x + used;
        unsigned lvl = n / (nres + 1), i = n % (nres + 1);
        if (sub == 0) {
            const char *d = resnet_name(rest, &tail);
            if (!d)
                return false;
            *kind = LORA_LAYER_RESNET;
            w = snprintf(out, cap, "up_blocks.%u.resnets.%u.%s%s", lvl, i, d, tail);
        } else if (strncmp(rest, "conv.", 5) == 0) {
            *kind = LORA_LAYER_RESNET;
            w = snprintf(out, cap, "up_blocks.%u.upsamplers.0.conv.%s", lvl, rest + 5);
        } else if (sub == 1) {
            *kind = LORA_LAYER_ATTN;
            w = snprintf(out, cap, "up_blocks.%u.attentions.%u.%s", lvl, i, rest);
        } else {
            return false;
        }
        return w > 0 && w < (int)cap;
    }
    return false;
}

/* Res blocks per UNet level: the first downsampler is input_blocks.(nres+1). */
static unsigned find_nres(const st_file *model, const char *prefix)
{
    size_t plen = strlen(prefix);
    unsigned best = 0;
    for (size_t i = 0; i < st_tensor_count(model); i++) {
        const st_tensor *t = st_tensor_at(model, i);
        unsigned n;
        int used = 0;
        if (t->name_len <= plen || memcmp(t->name, prefix, plen) != 0)
            continue;
        if (sscanf(t->name + plen, "input_blocks.%u.0.op.weight%n", &n, &used) == 1 && used > 0 &&
            (size_t)used == t->name_len - plen && n >= 2 && (best == 0 || n - 1 < best))
            best = n - 1;
    }
    return best ? best : 2;
}

static int add_unet(lora_map *m, size_t idx, const char *x, size_t xlen, unsigned nres,
                    bool sdxl, st_error *err)
{
    /* x is the key without the UNet prefix, ending in ".weight" */
    char ldm[512], dif[512];
    if (xlen + 1 > sizeof ldm)
        return ST_OK;
    memcpy(ldm, x, xlen - 7);
    ldm[xlen - 7] = 0;
    unsigned kind = 0;
    bool has_dif = ldm_to_diffusers(x, nres, dif, sizeof dif, &kind);
    /* Attention layers are the transformer blocks and proj_in/proj_out only;
     * the norms are 1-D and never reach here. */
    if (kind == LORA_LAYER_ATTN && !strstr(ldm, ".transformer_blocks.") &&
        !ends_with(ldm, strlen(ldm), ".proj_in") && !ends_with(ldm, strlen(ldm), ".proj_out"))
        kind = 0;
    char stem[600];
    snprintf(stem, sizeof stem, "lora_unet_%s", ldm);
    int rc = add_target(m, stem, idx, 0, UINT64_MAX, sdxl || !has_dif, kind, err);
    if (rc || !has_dif)
        return rc;
    size_t dl = strlen(dif);
    if (dl > 7 && strcmp(dif + dl - 7, ".weight") == 0)
        dif[dl - 7] = 0;
    snprintf(stem, sizeof stem, "lora_unet_%s", dif);
    return add_target(m, stem, idx, 0, UINT64_MAX, !sdxl, kind, err);
}

/* OpenCLIP resblock weights under the HF CLIP names kohya uses. */
static int add_open_clip(lora_map *m, size_t idx, const st_tensor *t, const char *x,
                         const char *te, st_error *err)
{
    unsigned layer;
    int used = 0;
    if (sscanf(x, "transformer.resblocks.%u.%n", &layer, &used) != 1 || used == 0)
        return ST_OK;
    const char *rest = x + used;
    char stem[256];
    static const char *const map[][2] = {
        {"attn.out_proj.weight", "self_attn_out_proj"},
        {"mlp.c_fc.weight", "mlp_fc1"},
        {"mlp.c_proj.weight", "mlp_fc2"},
    };
    for (size_t i = 0; i < 3; i++)
        if (strcmp(rest, map[i][0]) == 0) {
            snprintf(stem, sizeof stem, "%stext_model_encoder_layers_%u_%s", te, layer, map[i][1]);
            return add_target(m, stem, idx, 0, UINT64_MAX, true, LORA_LAYER_TE, err);
        }
    if (strcmp(rest, "attn.in_proj_weight") == 0 && t->rank == 2 && t->shape[0] % 3 == 0) {
        uint64_t w = t->shape[0] / 3;
        static const char qkv[] = "qkv";
        for (int k = 0; k < 3; k++) {
            snprintf(stem, sizeof stem, "%stext_model_encoder_layers_%u_self_attn_%c_proj", te,
                     layer, qkv[k]);
            int rc = add_target(m, stem, idx, w * (uint64_t)k, w, true, LORA_LAYER_TE, err);
            if (rc)
                return rc;
        }
    }
    return ST_OK;
}

static int add_hf_clip(lora_map *m, size_t idx, const char *x, size_t xlen, const char *te,
                       st_error *err)
{
    char stem[512];
    if (xlen > 400)
        return ST_OK;
    unsigned kind = 0;
    if (strstr(x, ".self_attn.") || strstr(x, ".mlp.fc"))
        kind = LORA_LAYER_TE;
    snprintf(stem, sizeof stem, "%s%.*s", te, (int)(xlen - 7), x);
    return add_target(m, stem, idx, 0, UINT64_MAX, true, kind, err);
}

/* Flux (BFL keys, "double_blocks.N...."): the diffusers module names of
 * diffusers/PEFT LoRAs ("lora_transformer_" + the name with '_'), as
 * kohya's flux_merge_lora.py and ComfyUI's model_lora_keys_unet map them,
 * fused qkv and linear1 split into row blocks; and XLabs' processor names.
 * kohya's own Flux names are the BFL keys ("lora_unet_double_blocks_0_
 * img_attn_qkv"), added with every UNet/DiT key. */
static int add_flux(lora_map *m, size_t idx, const st_tensor *t, const char *x, st_error *err)
{
    unsigned b;
    int used = 0;
    char stem[256];
    uint64_t d0 = t->shape[0], h = t->rank == 2 ? t->shape[1] : 0;
    if (t->rank != 2)
        return ST_OK;
#define ADD(row0, rows, ...)                                                                    \
    do {                                                                                        \
        snprintf(stem, sizeof stem, __VA_ARGS__);                                               \
        int rc_ = add_target(m, stem, idx, (row0), (rows), false, 0, err);                      \
        if (rc_)                                                                                \
            return rc_;                                                                         \
    } while (0)
    if (sscanf(x, "double_blocks.%u.%n", &b, &used) == 1 && used > 0) {
        const char *r = x + used;
        static const char *const pairs[][3] = {
            /* BFL, diffusers, XLabs */
            {"img_attn.proj.weight", "attn.to_out.0", "proj_lora1"},
            {"txt_attn.proj.weight", "attn.to_add_out", "proj_lora2"},
            {"img_mlp.0.weight", "ff.net.0.proj", NULL},
            {"img_mlp.2.weight", "ff.net.2", NULL},
            {"txt_mlp.0.weight", "ff_context.net.0.proj", NULL},
            {"txt_mlp.2.weight", "ff_context.net.2", NULL},
            {"img_mod.lin.weight", "norm1.linear", NULL},
            {"txt_mod.lin.weight", "norm1_context.linear", NULL},
        };
        for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++)
            if (strcmp(r, pairs[i][0]) == 0) {
                ADD(0, UINT64_MAX, "lora_transformer_transformer_blocks.%u.%s", b, pairs[i][1]);
                if (pairs[i][2])
                    ADD(0, UINT64_MAX, "lora_unet_double_blocks.%u.%s", b, pairs[i][2]);
                return ST_OK;
            }
        bool img = strcmp(r, "img_attn.qkv.weight") == 0, txt = strcmp(r, "txt_attn.qkv.weight") == 0;
        if ((img || txt) && d0 % 3 == 0) {
            static const char *const q[2][3] = {{"to_q", "to_k", "to_v"},
                                                {"add_q_proj", "add_k_proj", "add_v_proj"}};
            for (int k = 0; k < 3; k++)
                ADD(d0 / 3 * (uint64_t)k, d0 / 3, "lora_transformer_transformer_blocks.%u.attn.%s", b,
                    q[txt][k]);
            ADD(0, UINT64_MAX, "lora_unet_double_blocks.%u.qkv_lora%d", b, img ? 1 : 2);
        }
        return ST_OK;
    }
    if (sscanf(x, "single_blocks.%u.%n", &b, &used) == 1 && used > 0) {
        const char *r = x + used;
        if (strcmp(r, "linear2.weight") == 0)
            ADD(0, UINT64_MAX, "lora_transformer_single_transformer_blocks.%u.proj_out", b);
        else if (strcmp(r, "modulation.lin.weight") == 0)
            ADD(0, UINT64_MAX, "lora_transformer_single_transformer_blocks.%u.norm.linear", b);
        else if (strcmp(r, "linear1.weight") == 0 && d0 > 3 * h) {
            static const char *const q[3] = {"to_q", "to_k", "to_v"};
            for (int k = 0; k < 3; k++)
                ADD(h * (uint64_t)k, h, "lora_transformer_single_transformer_blocks.%u.attn.%s", b, q[k]);
            ADD(3 * h, d0 - 3 * h, "lora_transformer_single_transformer_blocks.%u.proj_mlp", b);
        }
        return ST_OK;
    }
    static const char *const top[][2] = {
        {"img_in.weight", "x_embedder"},
        {"txt_in.weight", "context_embedder"},
        {"time_in.in_layer.weight", "time_text_embed.timestep_embedder.linear_1"},
        {"time_in.out_layer.weight", "time_text_embed.timestep_embedder.linear_2"},
        {"vector_in.in_layer.weight", "time_text_embed.text_embedder.linear_1"},
        {"vector_in.out_layer.weight", "time_text_embed.text_embedder.linear_2"},
        {"guidance_in.in_layer.weight", "time_text_embed.guidance_embedder.linear_1"},
        {"guidance_in.out_layer.weight", "time_text_embed.guidance_embedder.linear_2"},
        {"final_layer.linear.weight", "proj_out"},
    };
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++)
        if (strcmp(x, top[i][0]) == 0)
            ADD(0, UINT64_MAX, "lora_transformer_%s", top[i][1]);
    /* diffusers' norm_out.linear is BFL's final AdaLN with its shift and
     * scale halves swapped (convert_flux_to_diffusers' swap_scale_shift;
     * InvokeAI swaps a LoRA's delta back the same way) */
    if (strcmp(x, "final_layer.adaLN_modulation.1.weight") == 0 && d0 % 2 == 0) {
        ADD(0, UINT64_MAX, "lora_transformer_norm_out.linear");
        m->t[m->n - 1].swap_halves = true;
    }
#undef ADD
    return ST_OK;
}

static uint64_t slot_hash(const lora_map *m, const char *s, size_t len)
{
    return st_hash_bytes_seeded(m->seed, s, len);
}

int lora_map_build(const st_file *model, lora_map **out, st_error *err)
{
    *out = NULL;
    lora_map *m = calloc(1, sizeof *m);
    if (!m)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    st_identity id;
    int rc = st_identify(model, &id, err);
    if (rc) {
        free(m);
        return rc;
    }
    /* The text encoders' prefixes say the family even when the shapes are
     * not the real ones; identify decides for a bare UNet. */
    m->family = id.family;
    for (size_t i = 0; i < st_tensor_count(model); i++) {
        const st_tensor *t = st_tensor_at(model, i);
        size_t p;
        if (has_prefix(t->name, t->name_len, "conditioner.embedders.", &p)) {
            m->family = ST_FAMILY_SDXL;
            break;
        }
        if (has_prefix(t->name, t->name_len, "cond_stage_model.model.", &p)) {
            m->family = ST_FAMILY_SD2;
            break;
        }
        if (has_prefix(t->name, t->name_len, "cond_stage_model.transformer.", &p)) {
            m->family = ST_FAMILY_SD1;
            break;
        }
    }
    bool sdxl = m->family == ST_FAMILY_SDXL || m->family == ST_FAMILY_SDXL_REFINER;
    const char *uprefix = "model.diffusion_model.";
    bool bare = st_find(model, "input_blocks.0.0.weight", 23) != NULL ||
                st_find(model, "double_blocks.0.img_attn.qkv.weight", 35) != NULL;
    if (bare)
        uprefix = "";
    unsigned nres = find_nres(model, uprefix);
    bool clip_g = false;
    for (size_t i = 0; i < st_tensor_count(model) && !clip_g; i++) {
        size_t p;
        const st_tensor *t = st_tensor_at(model, i);
        clip_g = has_prefix(t->name, t->name_len, "text_encoders.clip_g.", &p);
    }
    size_t n = st_tensor_count(model);
    for (size_t i = 0; i < n && rc == ST_OK; i++) {
        const st_tensor *t = st_tensor_at(model, i);
        const char *s = t->name;
        size_t len = t->name_len, p;
        if (!st_dtype_is_float(t->dtype) || (t->rank != 2 && t->rank != 4) ||
            memchr(s, 0, len) || t->nelements == 0)
            continue;
        bool w = ends_with(s, len, ".weight");
        if (has_prefix(s, len, "cond_stage_model.model.", &p) ||
            has_prefix(s, len, "conditioner.embedders.1.model.", &p)) {
            rc = add_open_clip(m, i, t, s + p, p == 23 ? "lora_te_" : "lora_te2_", err);
        } else if (w && has_prefix(s, len, "text_encoders.clip_l.transformer.", &p)) {
            /* ComfyUI's all-in-one Flux files: CLIP-L is kohya's lora_te1_ */
            rc = add_hf_clip(m, i, s + p, len - p, "lora_te1_", err);
        } else if (w && has_prefix(s, len, "text_encoders.t5xxl.transformer.", &p)) {
            /* T5-XXL: kohya's flux scripts name it lora_te3_, OneTrainer's
             * Flux LoRAs lora_te2_ (both as ComfyUI maps them; te2 only
             * while no CLIP-G holds that name) */
            rc = add_hf_clip(m, i, s + p, len - p, "lora_te3_", err);
            if (rc == ST_OK && !clip_g)
                rc = add_hf_clip(m, i, s + p, len - p, "lora_te2_", err);
        } else if (has_prefix(s, len, "conditioner.embedders.0.model.", &p)) {
            /* the SDXL refiner's only encoder (bigG): ComfyUI names it lora_te_ */
            rc = add_open_clip(m, i, t, s + p, "lora_te_", err);
        } else if (!w) {
            continue;
        } else if (has_prefix(s, len, "cond_stage_model.transformer.", &p)) {
            rc = add_hf_clip(m, i, s + p, len - p, "lora_te_", err);
        } else if (has_prefix(s, len, "conditioner.embedders.0.transformer.", &p)) {
            rc = add_hf_clip(m, i, s + p, len - p, "lora_te1_", err);
        } else if (bare ? (has_prefix(s, len, "input_blocks.", &p) ||
                           has_prefix(s, len, "middle_block.", &p) ||
                           has_prefix(s, len, "output_blocks.", &p) ||
                           has_prefix(s, len, "time_embed.", &p) ||
                           has_prefix(s, len, "label_emb.", &p) || has_prefix(s, len, "out.", &p) ||
                           has_prefix(s, len, "double_blocks.", &p) ||
                           has_prefix(s, len, "single_blocks.", &p) ||
                           has_prefix(s, len, "img_in.", &p) || has_prefix(s, len, "txt_in.", &p) ||
                           has_prefix(s, len, "time_in.", &p) || has_prefix(s, len, "vector_in.", &p) ||
                           has_prefix(s, len, "guidance_in.", &p) ||
                           has_prefix(s, len, "final_layer.", &p))
                        : has_prefix(s, len, uprefix, &p)) {
            size_t off = bare ? 0 : p;
            rc = add_unet(m, i, s + off, len - off, nres, sdxl, err);
            if (rc == ST_OK && len - off < 400) {
                char x[512];
                memcpy(x, s + off, len - off);
                x[len - off] = 0;
                rc = add_flux(m, i, t, x, err);
            }
        }
    }
    if (rc == ST_OK) {
        m->nslots = 16;
        while (m->nslots < m->n * 2)
            m->nslots *= 2;
        m->slots = calloc(m->nslots, sizeof *m->slots);
        m->seed = st_hash_seed(m);
        if (!m->slots)
            rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
        for (size_t i = 0; rc == ST_OK && i < m->n; i++) {
            size_t len = strlen(m->t[i].stem);
            size_t h = (size_t)slot_hash(m, m->t[i].stem, len) & (m->nslots - 1);
            bool dup = false;
            while (m->slots[h]) {
                if (strcmp(m->t[m->slots[h] - 1].stem, m->t[i].stem) == 0) {
                    dup = true; /* first wins: a name both LDM and diffusers */
                    break;
                }
                h = (h + 1) & (m->nslots - 1);
            }
            if (!dup)
                m->slots[h] = i + 1;
        }
    }
    if (rc) {
        lora_map_free(m);
        return rc;
    }
    *out = m;
    return ST_OK;
}

void lora_map_free(lora_map *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++)
        free((char *)m->t[i].stem);
    free(m->t);
    free(m->slots);
    free(m);
}

const lora_target *lora_map_find(const lora_map *m, const char *stem, size_t len)
{
    if (!m->nslots)
        return NULL;
    size_t h = (size_t)slot_hash(m, stem, len) & (m->nslots - 1);
    while (m->slots[h]) {
        const lora_target *t = &m->t[m->slots[h] - 1];
        if (strlen(t->stem) == len && memcmp(t->stem, stem, len) == 0)
            return t;
        h = (h + 1) & (m->nslots - 1);
    }
    return NULL;
}

size_t lora_map_count(const lora_map *m) { return m->n; }
const lora_target *lora_map_at(const lora_map *m, size_t i) { return i < m->n ? &m->t[i] : NULL; }
int lora_map_family(const lora_map *m) { return m->family; }
