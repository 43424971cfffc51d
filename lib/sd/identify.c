/*
 * What a Stable Diffusion file is, from its header: tensor names, shapes,
 * dtypes and metadata (plus, for SD2 UNets, one small tensor's values).
 *
 * The rules, in the order they are tried, and where they come from:
 *  1. Adapters first, since their names embed the base model's:
 *     LoRA / LyCORIS by their weight suffixes (kohya sd-scripts networks/
 *     lora.py "lora_down"/"lora_up"/"alpha" under lora_unet_ / lora_te[12]_;
 *     LyCORIS hada_w1_a.. (LoHa) and lokr_w1.. (LoKr); PEFT lora_A/lora_B;
 *     diffusers' older ".lora.down"), then textual-inversion embeddings
 *     (A1111 textual_inversion.py: "emb_params", "string_to_param"; SDXL
 *     embeddings "clip_l" + "clip_g"), then ControlNets ("control_model."
 *     or a bare "input_hint_block" as in lllyasviel's files; diffusers
 *     "controlnet_cond_embedding"; Flux/SD3 "controlnet_blocks").
 *  2. Diffusion models, as ComfyUI comfy/model_detection.py
 *     detect_unet_config does it: MMDiT "joint_blocks" is SD3; "double_
 *     blocks...key_norm.scale" is Flux (guidance_in present: dev, absent:
 *     schnell; img_in with 384 input features: fill); "clf.1.weight" is
 *     Stable Cascade; otherwise an LDM UNet from input_blocks.0.0.weight
 *     (model channels, input channels), the cross-attention context width
 *     (attn2.to_k) and label_emb width, matched like comfy/supported_models
 *     .py: SDXL (context 2048, adm 2816), SDXL refiner (384 channels, adm
 *     2560), SD2 (context 1024), SD1 (context 768). Input channels 9 / 8 / 5
 *     are the inpainting / instruct-pix2pix / depth variants (A1111
 *     sd_models_config.py). Diffusers-layout UNets and transformers map to
 *     the same rules (model_detection.py unet_config_from_diffusers_unet).
 *     A diffusion model under "model.diffusion_model." with a VAE and text
 *     encoder beside it is a checkpoint; A1111's text-encoder rules
 *     (cond_stage_model / conditioner.embedders widths) are checked against
 *     the UNet's verdict.
 *  3. VAEs (decoder.conv_in input channels: 4-channel latents are SD1, SD2
 *     and SDXL alike; 16 are SD3 and Flux alike), then text encoders:
 *     CLIP (HF text_model.* or OpenCLIP resblocks; width 768 CLIP-L, 1280
 *     CLIP-G, 1024 OpenCLIP-H of SD2) and T5 (d_model 4096: T5-XXL).
 *  4. Metadata hints decide only what the tensors leave open, with low
 *     confidence: modelspec.architecture (the SAI model spec as kohya's
 *     library/sai_model_spec.py writes it, e.g. "stable-diffusion-xl-v1-
 *     base/lora") and kohya's ss_base_model_version ("sd_v1", "sd_v2",
 *     "sdxl_base_v1-0", "flux1", "sd3").
 * v-prediction markers: a "v_pred" key (ComfyUI supported_models.py, Forge),
 * modelspec.prediction_type "v", ss_v_parameterization "True", and for SD2
 * UNets ComfyUI's test: the standard deviation of output_blocks.11.1.
 * transformer_blocks.0.norm1.bias above 0.09.
 */
#include "common/internal.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN 512
/* A tensor by literal name. */
#define FIND(c, lit) find((c), lit, sizeof(lit) - 1)

/* A tensor as identify sees it (from an st_file or a caller's list). */
typedef struct vt {
    const char *name;
    size_t name_len;
    st_dtype dtype;
    uint32_t rank;
    const uint64_t *shape;
    uint64_t nelements; /* saturated at UINT64_MAX for a hostile list */
    size_t index;       /* in the caller's list, for the read callback */
} vt;

typedef struct ctx {
    const vt *t; /* sorted by name bytes (shorter first on a tie) */
    size_t n;
    const char *const *meta; /* key, value, key, value, ... */
    size_t nmeta;
    st_tensor_read_fn read;
    void *read_ctx;
    st_identity *id;
    /* which adapter formats the names show */
    size_t kohya, loha, lokr, peft, diffusers;
    size_t ema_tensors;
} ctx;

/* ---- small helpers ---- */

static void reason(ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reason(ctx *c, const char *fmt, ...)
{
    st_identity *id = c->id;
    if (id->reason_count >= ST_IDENTIFY_MAX_REASONS)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(id->reasons[id->reason_count], ST_IDENTIFY_REASON_MAX, fmt, ap);
    va_end(ap);
    id->reason_count++;
}

static uint64_t dim(const vt *t, uint32_t i)
{
    return t && i < t->rank ? t->shape[i] : 0;
}

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
    uint64_t r;
    return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    uint64_t r;
    return __builtin_add_overflow(a, b, &r) ? UINT64_MAX : r;
}

/* "[320, 4, 3, 3]" */
static const char *shape_str(const vt *t, char *buf, size_t cap)
{
    size_t at = 0;
    buf[0] = '\0';
    at += (size_t)snprintf(buf + at, cap - at, "[");
    for (uint32_t i = 0; t && i < t->rank && at < cap; i++)
        at += (size_t)snprintf(buf + at, cap - at, "%s%llu", i ? ", " : "",
                               (unsigned long long)t->shape[i]);
    if (at < cap)
        snprintf(buf + at, cap - at, "]");
    return buf;
}

/* A tensor name, cut and made printable for a reason line. */
static const char *name_str(const vt *t, char *buf, size_t cap)
{
    st_quote_name(buf, cap, t->name, t->name_len);
    return buf;
}

static bool starts(const vt *t, const char *prefix)
{
    size_t n = strlen(prefix);
    return t->name_len >= n && memcmp(t->name, prefix, n) == 0;
}

static bool ends(const vt *t, const char *suffix)
{
    size_t n = strlen(suffix);
    return t->name_len >= n && memcmp(t->name + t->name_len - n, suffix, n) == 0;
}

static bool contains(const vt *t, const char *needle)
{
    return memmem(t->name, t->name_len, needle, strlen(needle)) != NULL;
}

static int vt_cmp(const void *a, const void *b)
{
    const vt *x = a, *y = b;
    return st_name_cmp(x->name, x->name_len, y->name, y->name_len);
}

/* The tensor with exactly this name, or NULL (binary search). */
static const vt *find(const ctx *c, const char *name, size_t len)
{
    vt key;
    memset(&key, 0, sizeof key);
    key.name = name;
    key.name_len = len;
    return c->n ? bsearch(&key, c->t, c->n, sizeof *c->t, vt_cmp) : NULL;
}

/* The tensor named prefix + name, or NULL. */
static const vt *get(const ctx *c, const char *prefix, const char *name)
{
    char buf[NAME_MAX_LEN];
    int len = snprintf(buf, sizeof buf, "%s%s", prefix, name);
    if (len < 0 || (size_t)len >= sizeof buf)
        return NULL;
    return find(c, buf, (size_t)len);
}

/* First tensor in name order starting with prefix and containing needle
 * (either may be ""). */
static const vt *find_in(const ctx *c, const char *prefix, const char *needle)
{
    for (size_t i = 0; i < c->n; i++) {
        const vt *t = &c->t[i];
        if (starts(t, prefix) && contains(t, needle))
            return t;
    }
    return NULL;
}

/* First tensor whose name ends with suffix. */
static const vt *find_suffix(const ctx *c, const char *suffix)
{
    for (size_t i = 0; i < c->n; i++) {
        const vt *t = &c->t[i];
        if (ends(t, suffix))
            return t;
    }
    return NULL;
}

static bool any_prefix(const ctx *c, const char *prefix)
{
    return find_in(c, prefix, "") != NULL;
}

static const char *meta(const ctx *c, const char *key)
{
    for (size_t i = 0; i + 1 < 2 * c->nmeta; i += 2)
        if (c->meta[i] && c->meta[i + 1] && strcmp(c->meta[i], key) == 0)
            return c->meta[i + 1];
    return NULL;
}

static bool ieq(const char *a, const char *b)
{
    return a && strcasecmp(a, b) == 0;
}

static bool istarts(const char *s, const char *prefix)
{
    return s && strncasecmp(s, prefix, strlen(prefix)) == 0;
}

/* Value of a small F32/F16/BF16 element. */
static double load_float(st_dtype dt, const uint8_t *p)
{
    if (dt == ST_F32) {
        uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24;
        float f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
    uint16_t h = (uint16_t)(p[0] | p[1] << 8);
    if (dt == ST_BF16) {
        uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
    /* F16 */
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? INFINITY : ldexp(m + 1024, e - 25);
    return (h & 0x8000) ? -v : v;
}

/* ---- diffusion models ---- */

typedef struct unet_facts {
    uint64_t in_ch, model_ch, context, adm;
} unet_facts;

/* Family of an SD UNet from its widths (comfy/supported_models.py order). */
static st_model_family unet_family(ctx *c, const unet_facts *u)
{
    if (u->adm == 2816 && (u->context == 2048 || u->context == 0 || u->context == 1))
        return ST_FAMILY_SDXL;
    if (u->model_ch == 384 && u->adm == 2560)
        return ST_FAMILY_SDXL_REFINER;
    if (u->context == 2048)
        return ST_FAMILY_SDXL;
    if (u->context == 1280)
        return ST_FAMILY_SDXL_REFINER;
    if (u->context == 1024) {
        if (u->adm == 2048 || u->adm == 1536)
            reason(c, "label_emb width %llu: an SD2 unCLIP model", (unsigned long long)u->adm);
        return ST_FAMILY_SD2;
    }
    if (u->context == 768)
        return ST_FAMILY_SD1;
    return ST_FAMILY_UNKNOWN;
}

static void unet_variants(ctx *c, uint64_t in_ch)
{
    if (in_ch == 9) {
        c->id->variants |= ST_VARIANT_INPAINTING;
        reason(c, "9 input channels: inpainting (latent + mask + masked image)");
    } else if (in_ch == 8) {
        c->id->variants |= ST_VARIANT_INSTRUCT_PIX2PIX;
        reason(c, "8 input channels: instruct-pix2pix (latent + image)");
    } else if (in_ch == 5) {
        c->id->variants |= ST_VARIANT_DEPTH;
        reason(c, "5 input channels: depth-conditioned (latent + depth)");
    } else if (in_ch != 4) {
        reason(c, "%llu input channels (4 is the usual)", (unsigned long long)in_ch);
    }
}

static void report_unet(ctx *c, const unet_facts *u, st_model_family fam)
{
    char adm[48] = "";
    if (u->adm)
        snprintf(adm, sizeof adm, ", label_emb width %llu", (unsigned long long)u->adm);
    reason(c, "cross-attention context width %llu%s, %llu model channels: %s",
           (unsigned long long)u->context, adm, (unsigned long long)u->model_ch,
           fam == ST_FAMILY_UNKNOWN ? "no known family" : st_family_name(fam));
}

/* ComfyUI's SD2 v-prediction test (supported_models.py SD20.model_type). */
static void sd2_vpred_test(ctx *c, const char *prefix)
{
    const vt *t = get(c, prefix, "output_blocks.11.1.transformer_blocks.0.norm1.bias");
    if (!t || t->nelements == 0 || t->nelements > 4096 ||
        (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16))
        return;
    size_t es = t->dtype == ST_F32 ? 4 : 2;
    size_t nb = (size_t)t->nelements * es;
    uint8_t *buf = malloc(nb);
    if (!buf)
        return;
    if (c->read && c->read(c->read_ctx, t->index, buf, nb) == 0) {
        double sum = 0, sq = 0;
        for (size_t i = 0; i < t->nelements; i++) {
            double v = load_float(t->dtype, buf + i * es);
            sum += v;
            sq += v * v;
        }
        double mean = sum / (double)t->nelements;
        double var = sq / (double)t->nelements - mean * mean;
        double sd = var > 0 ? sqrt(var) : 0;
        char nb2[160];
        if (sd > 0.09) {
            c->id->variants |= ST_VARIANT_V_PREDICTION;
            reason(c, "%s std %.3f > 0.09: v-prediction (ComfyUI's SD2 test)",
                   name_str(t, nb2, sizeof nb2), sd);
        } else {
            reason(c, "%s std %.3f <= 0.09: epsilon prediction (ComfyUI's SD2 test)",
                   name_str(t, nb2, sizeof nb2), sd);
        }
    }
    free(buf);
}

/* LDM UNet under prefix. Returns true when input_blocks.0.0.weight is there. */
static bool probe_ldm_unet(ctx *c, const char *prefix, st_model_family *fam, bool vtest)
{
    const vt *t = get(c, prefix, "input_blocks.0.0.weight");
    if (!t || t->rank < 2)
        return false;
    unet_facts u = {dim(t, 1), dim(t, 0), 0, 0};
    const vt *k = find_in(c, prefix, "attn2.to_k.weight");
    u.context = dim(k, 1);
    u.adm = dim(get(c, prefix, "label_emb.0.0.weight"), 1);
    char nb[160], sb[96];
    reason(c, "%s %s: LDM UNet, %llu input channels", name_str(t, nb, sizeof nb),
           shape_str(t, sb, sizeof sb), (unsigned long long)u.in_ch);
    if (k)
        reason(c, "%s %s", name_str(k, nb, sizeof nb), shape_str(k, sb, sizeof sb));
    *fam = unet_family(c, &u);
    report_unet(c, &u, *fam);
    const vt *v = find_in(c, prefix, ".time_stack.");
    if (!v)
        v = find_in(c, prefix, ".time_mix_blocks.");
    if (v) {
        /* comfy/model_detection.py calculate_transformer_depth: temporal
         * layers make it a video model (Stable Video Diffusion), which
         * none of the families here is. */
        reason(c, "%s: temporal layers, a video model (SVD)", name_str(v, nb, sizeof nb));
        *fam = ST_FAMILY_UNKNOWN;
        return true; /* its input channels mean something else */
    }
    unet_variants(c, u.in_ch);
    if (vtest && *fam == ST_FAMILY_SD2 && u.in_ch == 4)
        sd2_vpred_test(c, prefix);
    return true;
}

static void flux_variant(ctx *c, bool guidance, uint64_t img_in, const char *gname)
{
    if (img_in == 384) {
        c->id->variants |= ST_VARIANT_FILL;
        reason(c, "img_in takes 384 features (64 latent + 320 mask/image): Flux fill");
    } else if (guidance) {
        c->id->variants |= ST_VARIANT_DEV;
        reason(c, "%s present: guidance-distilled Flux dev", gname);
    } else {
        c->id->variants |= ST_VARIANT_SCHNELL;
        reason(c, "no %s: Flux schnell", gname);
    }
    if (img_in == 128)
        reason(c, "img_in takes 128 features: a Flux depth/canny control model");
}

/* MMDiT (SD3), Flux, Stable Cascade under prefix, original layouts. */
static bool probe_dit(ctx *c, const char *prefix, st_model_family *fam)
{
    char nb[160], sb[96];
    const vt *t = get(c, prefix, "joint_blocks.0.context_block.attn.qkv.weight");
    if (t) {
        const vt *x = get(c, prefix, "x_embedder.proj.weight");
        reason(c, "%s: MMDiT joint blocks (SD3)", name_str(t, nb, sizeof nb));
        if (x)
            reason(c, "%s %s: depth %llu", name_str(x, nb, sizeof nb), shape_str(x, sb, sizeof sb),
                   (unsigned long long)(dim(x, 0) / 64));
        *fam = ST_FAMILY_SD3;
        return true;
    }
    t = get(c, prefix, "double_blocks.0.img_attn.norm.key_norm.scale");
    if (t) {
        reason(c, "%s: Flux double blocks", name_str(t, nb, sizeof nb));
        const vt *img = get(c, prefix, "img_in.weight");
        flux_variant(c, get(c, prefix, "guidance_in.in_layer.weight") != NULL, dim(img, 1),
                     "guidance_in");
        *fam = ST_FAMILY_FLUX;
        return true;
    }
    t = get(c, prefix, "clf.1.weight");
    if (t) {
        const vt *m = get(c, prefix, "clip_txt_mapper.weight");
        reason(c, "%s: Stable Cascade %s", name_str(t, nb, sizeof nb),
               m ? "stage C (clip_txt_mapper)" : get(c, prefix, "clip_mapper.weight")
                                                    ? "stage B (clip_mapper)"
                                                    : "");
        *fam = ST_FAMILY_STABLE_CASCADE;
        return true;
    }
    return false;
}

/* Diffusers layouts of the same models. */
static bool probe_diffusers(ctx *c, const char *prefix, st_model_family *fam)
{
    char nb[160], sb[96];
    const vt *t = get(c, prefix, "single_transformer_blocks.0.attn.to_k.weight");
    if (t && get(c, prefix, "x_embedder.weight")) {
        reason(c, "%s: diffusers Flux transformer", name_str(t, nb, sizeof nb));
        flux_variant(c, get(c, prefix, "time_text_embed.guidance_embedder.linear_1.weight") != NULL,
                     dim(get(c, prefix, "x_embedder.weight"), 1), "guidance_embedder");
        *fam = ST_FAMILY_FLUX;
        return true;
    }
    t = get(c, prefix, "transformer_blocks.0.attn.add_q_proj.weight");
    if (t && get(c, prefix, "pos_embed.proj.weight")) {
        reason(c, "%s with pos_embed: diffusers SD3 transformer", name_str(t, nb, sizeof nb));
        *fam = ST_FAMILY_SD3;
        return true;
    }
    t = get(c, prefix, "conv_in.weight");
    if (t && t->rank == 4 && get(c, prefix, "time_embedding.linear_1.weight")) {
        unet_facts u = {dim(t, 1), dim(t, 0), 0, 0};
        const vt *k = find_in(c, prefix, "attn2.to_k.weight");
        u.context = dim(k, 1);
        const vt *a = get(c, prefix, "add_embedding.linear_1.weight");
        if (!a)
            a = get(c, prefix, "class_embedding.linear_1.weight");
        u.adm = dim(a, 1);
        reason(c, "%s %s with time_embedding: diffusers UNet", name_str(t, nb, sizeof nb),
               shape_str(t, sb, sizeof sb));
        *fam = unet_family(c, &u);
        report_unet(c, &u, *fam);
        unet_variants(c, u.in_ch);
        return true;
    }
    return false;
}

/* ---- checkpoints: the parts beside the diffusion model ---- */

/* Family the text encoders of an LDM/SGM checkpoint imply (A1111
 * sd_models_config.py guess_model_config_from_state_dict). */
static st_model_family checkpoint_te_family(ctx *c)
{
    char nb[160], sb[96];
    const vt *t;
    if ((t = get(c, "conditioner.embedders.1.model.", "ln_final.weight")) ||
        (t = get(c, "conditioner.embedders.1.model.", "transformer.resblocks.0.attn.in_proj_weight"))) {
        reason(c, "%s: SDXL's second text encoder (OpenCLIP ViT-bigG)", name_str(t, nb, sizeof nb));
        return ST_FAMILY_SDXL;
    }
    if ((t = get(c, "conditioner.embedders.0.model.", "ln_final.weight")) ||
        (t = get(c, "conditioner.embedders.0.model.", "transformer.resblocks.0.attn.in_proj_weight"))) {
        reason(c, "%s: the SDXL refiner's only text encoder (OpenCLIP ViT-bigG)",
               name_str(t, nb, sizeof nb));
        return ST_FAMILY_SDXL_REFINER;
    }
    t = get(c, "cond_stage_model.model.", "transformer.resblocks.0.attn.in_proj_weight");
    if (t && dim(t, 1) == 1024) {
        reason(c, "%s %s: OpenCLIP ViT-H text encoder (SD2)", name_str(t, nb, sizeof nb),
               shape_str(t, sb, sizeof sb));
        return ST_FAMILY_SD2;
    }
    t = find_in(c, "cond_stage_model.transformer.", "layers.0.self_attn.q_proj.weight");
    if (t && dim(t, 1) == 768) {
        reason(c, "%s %s: CLIP ViT-L text encoder (SD1)", name_str(t, nb, sizeof nb),
               shape_str(t, sb, sizeof sb));
        return ST_FAMILY_SD1;
    }
    if (any_prefix(c, "text_encoders.")) {
        reason(c, "text_encoders.%s%s%s present",
               any_prefix(c, "text_encoders.clip_l.") ? " clip_l" : "",
               any_prefix(c, "text_encoders.clip_g.") ? " clip_g" : "",
               any_prefix(c, "text_encoders.t5xxl.") ? " t5xxl" : "");
    }
    return ST_FAMILY_UNKNOWN;
}

static const char *vae_prefix(const ctx *c)
{
    static const char *const prefixes[] = {"first_stage_model.", "vae."};
    for (size_t i = 0; i < 2; i++)
        if (get(c, prefixes[i], "decoder.conv_in.weight") ||
            get(c, prefixes[i], "encoder.conv_in.weight"))
            return prefixes[i];
    return NULL;
}

static bool has_text_encoder(const ctx *c)
{
    return any_prefix(c, "cond_stage_model.") || any_prefix(c, "conditioner.embedders.") ||
           any_prefix(c, "text_encoders.");
}

static bool identify_diffusion(ctx *c)
{
    st_identity *id = c->id;
    st_model_family fam = ST_FAMILY_UNKNOWN;
    const char *p = "model.diffusion_model.";
    if (probe_dit(c, p, &fam) || probe_ldm_unet(c, p, &fam, true)) {
        const char *vp = vae_prefix(c);
        bool te = has_text_encoder(c);
        if (vp && te) {
            id->kind = ST_KIND_CHECKPOINT;
            reason(c, "diffusion model, VAE (%s) and text encoder in one file: a checkpoint", vp);
        } else {
            id->kind = ST_KIND_DIFFUSION_MODEL;
            reason(c, "model.diffusion_model.* without %s", !vp && !te ? "VAE and text encoder"
                                                            : !vp    ? "a VAE"
                                                                     : "a text encoder");
        }
        id->family = fam;
        id->confidence = fam != ST_FAMILY_UNKNOWN ? ST_CONFIDENCE_HIGH : ST_CONFIDENCE_LOW;
        if (te && fam != ST_FAMILY_SD3 && fam != ST_FAMILY_FLUX) {
            st_model_family tf = checkpoint_te_family(c);
            if (tf != ST_FAMILY_UNKNOWN && fam != ST_FAMILY_UNKNOWN && tf != fam) {
                reason(c, "the text encoder says %s, the UNet %s: keeping the UNet's verdict",
                       st_family_name(tf), st_family_name(fam));
                id->confidence = ST_CONFIDENCE_MEDIUM;
            } else if (fam == ST_FAMILY_UNKNOWN && tf != ST_FAMILY_UNKNOWN) {
                id->family = tf;
                id->confidence = ST_CONFIDENCE_MEDIUM;
            }
        }
        return true;
    }
    if (probe_dit(c, "", &fam) || probe_ldm_unet(c, "", &fam, true) ||
        probe_diffusers(c, "", &fam)) {
        id->kind = ST_KIND_DIFFUSION_MODEL;
        id->family = fam;
        id->confidence = fam != ST_FAMILY_UNKNOWN ? ST_CONFIDENCE_HIGH : ST_CONFIDENCE_LOW;
        return true;
    }
    return false;
}

/* ---- VAE and text encoders ---- */

static bool identify_vae(ctx *c)
{
    char nb[160], sb[96];
    static const char *const prefixes[] = {"", "first_stage_model.", "vae."};
    for (size_t i = 0; i < 3; i++) {
        const vt *d = get(c, prefixes[i], "decoder.conv_in.weight");
        const vt *e = get(c, prefixes[i], "encoder.conv_in.weight");
        if (!d && !e)
            continue;
        st_identity *id = c->id;
        id->kind = ST_KIND_VAE;
        id->confidence = ST_CONFIDENCE_MEDIUM;
        if (d && d->rank == 4) {
            uint64_t z = dim(d, 1);
            reason(c, "%s %s: a VAE decoder for %llu-channel latents", name_str(d, nb, sizeof nb),
                   shape_str(d, sb, sizeof sb), (unsigned long long)z);
            if (z == 4) {
                id->family = ST_FAMILY_SD1;
                reason(c, "SD1, SD2 and SDXL VAEs have the same shapes; metadata may tell");
            } else if (z == 16) {
                id->family = ST_FAMILY_FLUX;
                reason(c, "Flux and SD3 VAEs have the same shapes; metadata may tell");
            } else {
                id->confidence = ST_CONFIDENCE_LOW;
            }
        } else if (e) {
            reason(c, "%s: a VAE encoder only", name_str(e, nb, sizeof nb));
            id->confidence = ST_CONFIDENCE_LOW;
        } else {
            /* A decoder conv_in that is not rank 4 and no encoder: d is the
             * only tensor there is to name (e is NULL). */
            reason(c, "%s %s: a VAE decoder input of unexpected rank", name_str(d, nb, sizeof nb),
                   shape_str(d, sb, sizeof sb));
            id->confidence = ST_CONFIDENCE_LOW;
        }
        return true;
    }
    const vt *q = FIND(c, "vquantizer.codebook.weight");
    if (q) {
        c->id->kind = ST_KIND_VAE;
        c->id->family = ST_FAMILY_STABLE_CASCADE;
        c->id->confidence = ST_CONFIDENCE_MEDIUM;
        reason(c, "vquantizer.codebook.weight: Stable Cascade stage A (VQGAN)");
        return true;
    }
    return false;
}

static bool identify_text_encoder(ctx *c)
{
    char nb[160], sb[96];
    st_identity *id = c->id;
    const vt *t = find_suffix(c, "encoder.block.0.layer.0.SelfAttention.q.weight");
    if (t) {
        uint64_t d = dim(t, 1);
        reason(c, "%s %s: T5 encoder, d_model %llu", name_str(t, nb, sizeof nb),
               shape_str(t, sb, sizeof sb), (unsigned long long)d);
        id->kind = ST_KIND_TEXT_ENCODER;
        id->family = d == 4096 ? ST_FAMILY_T5XXL : ST_FAMILY_UNKNOWN;
        id->confidence = d == 4096 ? ST_CONFIDENCE_HIGH : ST_CONFIDENCE_LOW;
        return true;
    }
    uint64_t w = 0;
    t = find_suffix(c, "text_model.encoder.layers.0.self_attn.q_proj.weight");
    if (t) {
        w = dim(t, 1);
        reason(c, "%s %s: CLIP text model (transformers layout), width %llu",
               name_str(t, nb, sizeof nb), shape_str(t, sb, sizeof sb), (unsigned long long)w);
    } else if ((t = find_suffix(c, "transformer.resblocks.0.attn.in_proj_weight"))) {
        w = dim(t, 1);
        reason(c, "%s %s: CLIP text model (OpenCLIP layout), width %llu",
               name_str(t, nb, sizeof nb), shape_str(t, sb, sizeof sb), (unsigned long long)w);
    }
    if (!t)
        return false;
    id->kind = ST_KIND_TEXT_ENCODER;
    id->confidence = ST_CONFIDENCE_HIGH;
    if (w == 768) {
        id->family = ST_FAMILY_CLIP_L;
    } else if (w == 1280) {
        id->family = ST_FAMILY_CLIP_G;
    } else if (w == 1024) {
        id->family = ST_FAMILY_SD2;
        reason(c, "width 1024: OpenCLIP ViT-H, SD2's text encoder");
    } else {
        id->confidence = ST_CONFIDENCE_LOW;
    }
    return true;
}

/* ---- adapters ---- */

/* XLabs' Flux LoRAs: "double_blocks.0.processor.proj_lora1.down.weight". */
static bool xlabs_lora(const vt *t)
{
    return (ends(t, ".down.weight") || ends(t, ".up.weight")) && contains(t, "_lora") &&
           contains(t, ".processor.");
}

/* Input width of the layer an adapter tensor belongs to, from a "down"
 * side: [rank, in] for LoRA/PEFT/LoHa, kron factors for LoKr. */
static uint64_t adapter_in_width(const ctx *c, const vt *t)
{
    if (ends(t, ".lora_down.weight") || ends(t, ".lora_A.weight") ||
        ends(t, ".lora.down.weight") || ends(t, "_lora.down.weight") ||
        ends(t, ".lora_linear_layer.down.weight") || ends(t, ".hada_w1_b") ||
        (xlabs_lora(t) && ends(t, ".down.weight")))
        return dim(t, 1);
    if (ends(t, ".lokr_w1") || ends(t, ".lokr_w1_b")) {
        /* W = kron(w1, w2): in = w1.cols * w2.cols */
        size_t base = t->name_len - (ends(t, ".lokr_w1") ? 8 : 10);
        char buf[NAME_MAX_LEN];
        if (base + 12 >= sizeof buf)
            return 0;
        memcpy(buf, t->name, base);
        const char *w2s[] = {".lokr_w2", ".lokr_w2_b"};
        for (int i = 0; i < 2; i++) {
            size_t l = strlen(w2s[i]);
            memcpy(buf + base, w2s[i], l);
            const vt *w2 = find(c, buf, base + l);
            if (w2)
                return dim(t, 1) * dim(w2, 1);
        }
    }
    return 0;
}

/* Input width of the first adapted layer whose name contains needle. */
static uint64_t adapter_width(const ctx *c, const char *prefix, const char *needle,
                              const vt **which)
{
    for (size_t i = 0; i < c->n; i++) {
        const vt *t = &c->t[i];
        if (!starts(t, prefix) || !contains(t, needle))
            continue;
        uint64_t w = adapter_in_width(c, t);
        if (w) {
            if (which)
                *which = t;
            return w;
        }
    }
    return 0;
}

static st_model_family context_family(uint64_t w)
{
    switch (w) {
    case 768: return ST_FAMILY_SD1;
    case 1024: return ST_FAMILY_SD2;
    case 2048: return ST_FAMILY_SDXL;
    case 1280: return ST_FAMILY_SDXL_REFINER;
    default: return ST_FAMILY_UNKNOWN;
    }
}

static bool identify_lora(ctx *c)
{
    st_identity *id = c->id;
    size_t total = c->kohya + c->loha + c->lokr + c->peft + c->diffusers;
    if (total == 0)
        return false;
    id->kind = ST_KIND_LORA;
    if (c->loha)
        id->format = ST_LORA_LYCORIS_LOHA;
    else if (c->lokr)
        id->format = ST_LORA_LYCORIS_LOKR;
    else if (c->kohya)
        id->format = ST_LORA_KOHYA;
    else if (c->peft)
        id->format = ST_LORA_PEFT;
    else
        id->format = ST_LORA_DIFFUSERS;
    reason(c, "adapter weights: %zu lora_down/up, %zu LoHa, %zu LoKr, %zu lora_A/B, %zu .lora.down/up",
           c->kohya, c->loha, c->lokr, c->peft, c->diffusers);

    char nb[160];
    const vt *t;
    /* DiT families first: their block names are unmistakable. */
    if ((t = find_in(c, "", "double_blocks")) || (t = find_in(c, "", "single_blocks")) ||
        (t = find_in(c, "", "single_transformer_blocks"))) {
        id->family = ST_FAMILY_FLUX;
        id->confidence = ST_CONFIDENCE_HIGH;
        reason(c, "%s: Flux blocks", name_str(t, nb, sizeof nb));
        return true;
    }
    if ((t = find_in(c, "", "joint_blocks"))) {
        id->family = ST_FAMILY_SD3;
        id->confidence = ST_CONFIDENCE_HIGH;
        reason(c, "%s: SD3 joint blocks", name_str(t, nb, sizeof nb));
        return true;
    }
    uint64_t w = adapter_width(c, "", "transformer_blocks.0.attn.add_k_proj", &t);
    if (w) {
        id->family = w == 3072 ? ST_FAMILY_FLUX : ST_FAMILY_SD3;
        id->confidence = ST_CONFIDENCE_MEDIUM;
        reason(c, "%s: joint attention of width %llu (%s)", name_str(t, nb, sizeof nb),
               (unsigned long long)w, w == 3072 ? "Flux" : "SD3");
        return true;
    }
    /* UNet cross-attention: its key projection takes the text context. */
    w = adapter_width(c, "", "attn2_to_k", &t);
    if (!w)
        w = adapter_width(c, "", "attn2.to_k", &t);
    if (!w)
        w = adapter_width(c, "", "attn2.processor.to_k", &t);
    if (w) {
        id->family = context_family(w);
        id->confidence = id->family ? ST_CONFIDENCE_HIGH : ST_CONFIDENCE_LOW;
        reason(c, "%s takes %llu features: cross-attention context of %s",
               name_str(t, nb, sizeof nb), (unsigned long long)w,
               id->family ? st_family_name(id->family) : "no known family");
        return true;
    }
    /* Text encoder widths (kohya lora_te_ / lora_te1_ / lora_te2_, PEFT
     * text_encoder / text_encoder_2). */
    uint64_t w2 = adapter_width(c, "lora_te2_", "", &t);
    if (!w2)
        w2 = adapter_width(c, "text_encoder_2.", "", &t);
    if (w2) {
        id->family = ST_FAMILY_SDXL;
        id->confidence = w2 == 1280 ? ST_CONFIDENCE_HIGH : ST_CONFIDENCE_MEDIUM;
        reason(c, "%s: second text encoder, width %llu: SDXL", name_str(t, nb, sizeof nb),
               (unsigned long long)w2);
        return true;
    }
    uint64_t w1 = adapter_width(c, "lora_te_", "", &t);
    if (!w1)
        w1 = adapter_width(c, "text_encoder.", "", &t);
    if (w1 == 768 || w1 == 1024) {
        id->family = w1 == 768 ? ST_FAMILY_SD1 : ST_FAMILY_SD2;
        id->confidence = ST_CONFIDENCE_HIGH;
        reason(c, "%s: text encoder width %llu: %s", name_str(t, nb, sizeof nb),
               (unsigned long long)w1, st_family_name(id->family));
        return true;
    }
    /* Naming alone: kohya names SDXL UNet modules the SGM way. */
    if ((t = find_in(c, "lora_unet_input_blocks_", "")) ||
        (t = find_in(c, "lora_unet_output_blocks_", "")) ||
        (t = find_in(c, "lora_unet_middle_block_", ""))) {
        id->family = ST_FAMILY_SDXL;
        id->confidence = ST_CONFIDENCE_LOW;
        reason(c, "%s: kohya names SDXL UNet modules input_blocks/output_blocks",
               name_str(t, nb, sizeof nb));
        return true;
    }
    if ((t = find_in(c, "lora_te1_", ""))) {
        id->family = ST_FAMILY_SDXL;
        id->confidence = ST_CONFIDENCE_LOW;
        reason(c, "%s: lora_te1_ (a first of two text encoders)", name_str(t, nb, sizeof nb));
        return true;
    }
    id->confidence = ST_CONFIDENCE_LOW;
    return true;
}

static bool identify_embedding(ctx *c)
{
    char nb[160], sb[96];
    st_identity *id = c->id;
    if (c->n > 8)
        return false;
    const vt *l = FIND(c, "clip_l"), *g = FIND(c, "clip_g");
    if (l && g) {
        id->kind = ST_KIND_EMBEDDING;
        id->family = ST_FAMILY_SDXL;
        id->confidence = dim(l, l->rank - 1) == 768 && dim(g, g->rank - 1) == 1280
                             ? ST_CONFIDENCE_HIGH
                             : ST_CONFIDENCE_MEDIUM;
        reason(c, "clip_l %s and clip_g %s: an SDXL textual-inversion embedding",
               shape_str(l, sb, sizeof sb), shape_str(g, nb, sizeof nb));
        return true;
    }
    const vt *e = FIND(c, "emb_params");
    if (!e)
        e = find_in(c, "string_to_param.", "");
    if (!e || e->rank < 1)
        return false;
    uint64_t w = dim(e, e->rank - 1);
    id->kind = ST_KIND_EMBEDDING;
    id->family = w == 768 ? ST_FAMILY_SD1 : w == 1024 ? ST_FAMILY_SD2 : ST_FAMILY_UNKNOWN;
    id->confidence = id->family ? ST_CONFIDENCE_HIGH : ST_CONFIDENCE_LOW;
    reason(c, "%s %s: textual-inversion vectors of width %llu", name_str(e, nb, sizeof nb),
           shape_str(e, sb, sizeof sb), (unsigned long long)w);
    return true;
}

static bool identify_controlnet(ctx *c)
{
    char nb[160];
    st_identity *id = c->id;
    const char *prefix = NULL;
    const vt *t;
    if ((t = FIND(c, "control_model.input_hint_block.0.weight")))
        prefix = "control_model.";
    else if ((t = FIND(c, "input_hint_block.0.weight")))
        prefix = "";
    if (prefix) {
        id->kind = ST_KIND_CONTROLNET;
        reason(c, "%s: ControlNet hint encoder", name_str(t, nb, sizeof nb));
        const vt *in = get(c, prefix, "input_blocks.0.0.weight");
        unet_facts u = {dim(in, 1), dim(in, 0), 0, 0};
        const vt *k = find_in(c, prefix, "attn2.to_k.weight");
        u.context = dim(k, 1);
        u.adm = dim(get(c, prefix, "label_emb.0.0.weight"), 1);
        id->family = unet_family(c, &u);
        report_unet(c, &u, id->family);
        id->confidence = id->family ? ST_CONFIDENCE_HIGH : ST_CONFIDENCE_LOW;
        return true;
    }
    if ((t = FIND(c, "controlnet_cond_embedding.conv_in.weight"))) {
        id->kind = ST_KIND_CONTROLNET;
        reason(c, "%s: diffusers ControlNet", name_str(t, nb, sizeof nb));
        const vt *in = FIND(c, "conv_in.weight");
        unet_facts u = {dim(in, 1), dim(in, 0), 0, 0};
        u.context = dim(find_in(c, "", "attn2.to_k.weight"), 1);
        u.adm = dim(FIND(c, "add_embedding.linear_1.weight"), 1);
        id->family = unet_family(c, &u);
        report_unet(c, &u, id->family);
        id->confidence = id->family ? ST_CONFIDENCE_HIGH : ST_CONFIDENCE_LOW;
        return true;
    }
    t = FIND(c, "controlnet_x_embedder.weight");
    if (!t)
        t = find_in(c, "controlnet_blocks.", "");
    if (t) {
        id->kind = ST_KIND_CONTROLNET;
        reason(c, "%s: a DiT ControlNet", name_str(t, nb, sizeof nb));
        if (find_in(c, "", "double_blocks") || find_in(c, "", "single_transformer_blocks") ||
            FIND(c, "controlnet_x_embedder.weight")) {
            id->family = ST_FAMILY_FLUX;
            reason(c, "Flux blocks / controlnet_x_embedder: Flux");
        } else if (FIND(c, "pos_embed.proj.weight")) {
            id->family = ST_FAMILY_SD3;
            reason(c, "pos_embed.proj.weight: SD3");
        }
        id->confidence = id->family ? ST_CONFIDENCE_MEDIUM : ST_CONFIDENCE_LOW;
        return true;
    }
    return false;
}

/* ---- metadata ---- */

/* What modelspec.architecture / ss_base_model_version say. */
static st_model_family meta_family(ctx *c, st_model_kind *kind, unsigned *variants,
                                   const char **source)
{
    const char *arch = meta(c, "modelspec.architecture");
    *kind = ST_KIND_UNKNOWN;
    *variants = 0;
    *source = NULL;
    if (arch) {
        const char *slash = strchr(arch, '/');
        if (slash) {
            if (ieq(slash + 1, "lora") || ieq(slash + 1, "lycoris"))
                *kind = ST_KIND_LORA;
            else if (ieq(slash + 1, "textual-inversion"))
                *kind = ST_KIND_EMBEDDING;
            else if (ieq(slash + 1, "controlnet"))
                *kind = ST_KIND_CONTROLNET;
            else if (ieq(slash + 1, "vae"))
                *kind = ST_KIND_VAE;
        }
        *source = "modelspec.architecture";
        if (istarts(arch, "stable-diffusion-xl-v1-refiner"))
            return ST_FAMILY_SDXL_REFINER;
        if (istarts(arch, "stable-diffusion-xl"))
            return ST_FAMILY_SDXL;
        if (istarts(arch, "stable-diffusion-v1"))
            return ST_FAMILY_SD1;
        if (istarts(arch, "stable-diffusion-v2")) {
            if (strstr(arch, "768-v"))
                *variants |= ST_VARIANT_V_PREDICTION;
            return ST_FAMILY_SD2;
        }
        if (istarts(arch, "stable-diffusion-3") || istarts(arch, "stable-diffusion-v3"))
            return ST_FAMILY_SD3;
        if (istarts(arch, "flux")) {
            if (istarts(arch, "flux-1-dev"))
                *variants |= ST_VARIANT_DEV;
            else if (istarts(arch, "flux-1-schnell"))
                *variants |= ST_VARIANT_SCHNELL;
            return ST_FAMILY_FLUX;
        }
        if (istarts(arch, "stable-cascade"))
            return ST_FAMILY_STABLE_CASCADE;
    }
    const char *v = meta(c, "ss_base_model_version");
    if (v) {
        *source = "ss_base_model_version";
        if (istarts(v, "sdxl_refiner"))
            return ST_FAMILY_SDXL_REFINER;
        if (istarts(v, "sdxl"))
            return ST_FAMILY_SDXL;
        if (istarts(v, "sd_v1") || istarts(v, "sd1"))
            return ST_FAMILY_SD1;
        if (istarts(v, "sd_v2") || istarts(v, "sd2"))
            return ST_FAMILY_SD2;
        if (istarts(v, "sd3"))
            return ST_FAMILY_SD3;
        if (istarts(v, "flux"))
            return ST_FAMILY_FLUX;
    }
    *source = NULL;
    return ST_FAMILY_UNKNOWN;
}

static void apply_metadata(ctx *c)
{
    st_identity *id = c->id;
    st_model_kind mk;
    unsigned mv;
    const char *src;
    st_model_family mf = meta_family(c, &mk, &mv, &src);
    if (id->kind == ST_KIND_UNKNOWN && mk != ST_KIND_UNKNOWN) {
        id->kind = mk;
        id->confidence = ST_CONFIDENCE_LOW;
        reason(c, "%s names the kind: %s", src ? src : "metadata", st_kind_name(mk));
    }
    if (mf == ST_FAMILY_UNKNOWN)
        return;
    bool ambiguous_vae = id->kind == ST_KIND_VAE &&
                         ((id->family == ST_FAMILY_SD1 &&
                           (mf == ST_FAMILY_SD2 || mf == ST_FAMILY_SDXL)) ||
                          (id->family == ST_FAMILY_FLUX && mf == ST_FAMILY_SD3));
    if (id->family == ST_FAMILY_UNKNOWN || ambiguous_vae) {
        /* The tensors left it open: the metadata decides. For an ambiguous
         * VAE the shapes already narrowed it, so the confidence stays. */
        if (!ambiguous_vae)
            id->confidence = ST_CONFIDENCE_LOW;
        id->family = mf;
        reason(c, "%s says %s", src, st_family_name(mf));
        if (mf == ST_FAMILY_FLUX &&
            !(id->variants & (ST_VARIANT_DEV | ST_VARIANT_SCHNELL | ST_VARIANT_FILL)))
            id->variants |= mv & (ST_VARIANT_DEV | ST_VARIANT_SCHNELL);
    } else if (mf != id->family) {
        reason(c, "%s says %s, the tensors %s: keeping the tensors' verdict", src,
               st_family_name(mf), st_family_name(id->family));
        if (id->confidence > ST_CONFIDENCE_MEDIUM)
            id->confidence = ST_CONFIDENCE_MEDIUM;
    } else {
        reason(c, "%s agrees: %s", src, st_family_name(mf));
    }
}

static void v_prediction_markers(ctx *c)
{
    st_identity *id = c->id;
    if (FIND(c, "v_pred")) {
        id->variants |= ST_VARIANT_V_PREDICTION;
        reason(c, "a \"v_pred\" key marks v-prediction (ComfyUI, Forge)%s",
               FIND(c, "ztsnr") ? ", \"ztsnr\" zero terminal SNR" : "");
    }
    const char *p = meta(c, "modelspec.prediction_type");
    if (p && (ieq(p, "v") || ieq(p, "v_prediction") || ieq(p, "v-prediction") || ieq(p, "v_pred"))) {
        id->variants |= ST_VARIANT_V_PREDICTION;
        reason(c, "modelspec.prediction_type = %s", p);
    }
    const char *v = meta(c, "ss_v_parameterization");
    if (v && ieq(v, "true")) {
        id->variants |= ST_VARIANT_V_PREDICTION;
        reason(c, "ss_v_parameterization = True");
    }
    const char *arch = meta(c, "modelspec.architecture");
    if (arch && strstr(arch, "768-v") && !(id->variants & ST_VARIANT_V_PREDICTION)) {
        id->variants |= ST_VARIANT_V_PREDICTION;
        reason(c, "modelspec.architecture %s is a v model", arch);
    }
}

/* ---- counts ---- */

static void scan(ctx *c)
{
    for (size_t i = 0; i < c->n; i++) {
        const vt *t = &c->t[i];
        if (ends(t, ".lora_down.weight") || ends(t, ".lora_up.weight"))
            c->kohya++;
        else if (ends(t, ".lora_A.weight") || ends(t, ".lora_B.weight"))
            c->peft++;
        else if (ends(t, ".lora.down.weight") || ends(t, ".lora.up.weight") ||
                 ends(t, "_lora.down.weight") || ends(t, "_lora.up.weight") ||
                 ends(t, ".lora_linear_layer.down.weight") ||
                 ends(t, ".lora_linear_layer.up.weight") || xlabs_lora(t))
            c->diffusers++;
        else if (contains(t, ".hada_w"))
            c->loha++;
        else if (contains(t, ".lokr_w"))
            c->lokr++;
        if (starts(t, "model_ema.") && !ends(t, "decay") && !ends(t, "num_updates"))
            c->ema_tensors++;
    }
}

static bool is_adapter_te(const vt *t)
{
    return starts(t, "lora_te") || starts(t, "text_encoder") || starts(t, "te_") ||
           starts(t, "te1.") || starts(t, "te2.");
}

static void count_params(ctx *c)
{
    st_identity *id = c->id;
    uint64_t by_dtype[ST_DTYPE_COUNT] = {0};
    for (size_t i = 0; i < c->n; i++) {
        const vt *t = &c->t[i];
        uint64_t n = t->nelements;
        id->params.total = sat_add(id->params.total, n);
        if ((unsigned)t->dtype < ST_DTYPE_COUNT && st_dtype_is_float(t->dtype))
            by_dtype[t->dtype] = sat_add(by_dtype[t->dtype], n);
        uint64_t *slot = &id->params.other;
        if (starts(t, "model_ema."))
            slot = &id->params.ema;
        else if (id->kind == ST_KIND_LORA) {
            if (ends(t, ".alpha"))
                slot = &id->params.other;
            else if (is_adapter_te(t))
                slot = &id->params.text_encoder;
            else
                slot = &id->params.diffusion_model;
        } else if (starts(t, "model.diffusion_model."))
            slot = &id->params.diffusion_model;
        else if (starts(t, "first_stage_model.") || starts(t, "vae."))
            slot = &id->params.vae;
        else if (starts(t, "cond_stage_model.") || starts(t, "conditioner.embedders.") ||
                 starts(t, "text_encoders.") || starts(t, "text_encoder."))
            slot = &id->params.text_encoder;
        else if (starts(t, "control_model."))
            slot = &id->params.controlnet;
        else if (id->kind == ST_KIND_DIFFUSION_MODEL)
            slot = &id->params.diffusion_model;
        else if (id->kind == ST_KIND_VAE)
            slot = &id->params.vae;
        else if (id->kind == ST_KIND_TEXT_ENCODER)
            slot = &id->params.text_encoder;
        else if (id->kind == ST_KIND_CONTROLNET)
            slot = &id->params.controlnet;
        *slot = sat_add(*slot, n);
    }
    id->precision = -1;
    uint64_t best = 0;
    for (int d = 0; d < ST_DTYPE_COUNT; d++)
        if (by_dtype[d] > best) {
            best = by_dtype[d];
            id->precision = d;
        }
}

int st_identify_tensors(const st_tensor_desc *tensors, size_t count,
                        const char *const *metadata, size_t metadata_count,
                        st_tensor_read_fn read, void *read_ctx, st_identity *out,
                        st_error *err)
{
    if (!out || (count && !tensors) || (metadata_count && !metadata))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_identify_tensors: NULL argument");
    memset(out, 0, sizeof *out);
    vt *t = calloc(count ? count : 1, sizeof *t);
    if (!t)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    for (size_t i = 0; i < count; i++) {
        const st_tensor_desc *d = &tensors[i];
        if ((!d->name && d->name_len) || (d->rank && !d->shape)) {
            free(t);
            return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_identify_tensors: tensor %zu", i);
        }
        t[i].name = d->name ? d->name : "";
        t[i].name_len = d->name_len;
        t[i].dtype = d->dtype;
        t[i].rank = d->rank;
        t[i].shape = d->shape;
        t[i].nelements = 1;
        for (uint32_t k = 0; k < d->rank; k++)
            t[i].nelements = sat_mul(t[i].nelements, d->shape[k]);
        t[i].index = i;
    }
    if (count > 1)
        qsort(t, count, sizeof *t, vt_cmp);
    ctx c;
    memset(&c, 0, sizeof c);
    c.t = t;
    c.n = count;
    c.meta = metadata;
    c.nmeta = metadata_count;
    c.read = read;
    c.read_ctx = read_ctx;
    c.id = out;
    scan(&c);

    if (!identify_lora(&c) && !identify_embedding(&c) && !identify_controlnet(&c) &&
        !identify_diffusion(&c) && !identify_vae(&c) && !identify_text_encoder(&c))
        reason(&c, "no rule matched the %zu tensor names", c.n);
    apply_metadata(&c);
    v_prediction_markers(&c);
    if (c.ema_tensors) {
        out->ema = 1;
        reason(&c, "%zu model_ema.* tensors: EMA weights present", c.ema_tensors);
    }
    count_params(&c);
    if (out->kind == ST_KIND_UNKNOWN && out->family == ST_FAMILY_UNKNOWN)
        out->confidence = ST_CONFIDENCE_NONE;
    free(t);
    return ST_OK;
}

/* st_file adapter: the first len bytes of tensor `index` (file order). */
static int file_read(void *arg, size_t index, void *buf, size_t len)
{
    const st_file *f = arg;
    const st_tensor *t = st_tensor_at(f, index);
    return t && st_tensor_read(f, t, 0, buf, len, NULL) == ST_OK ? 0 : 1;
}

int st_identify(const st_file *f, st_identity *out, st_error *err)
{
    if (!f || !out)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_identify: NULL argument");
    size_t n = st_tensor_count(f), m = st_metadata_count(f);
    st_tensor_desc *d = calloc(n ? n : 1, sizeof *d);
    const char **meta = calloc(m ? 2 * m : 1, sizeof *meta);
    if (!d || !meta) {
        free(d);
        free(meta);
        memset(out, 0, sizeof *out);
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_tensor_at(f, i);
        d[i].name = t->name;
        d[i].name_len = t->name_len;
        d[i].dtype = t->dtype;
        d[i].rank = t->rank;
        d[i].shape = t->shape;
    }
    for (size_t i = 0; i < m; i++)
        st_metadata_at(f, i, &meta[2 * i], NULL, &meta[2 * i + 1], NULL);
    int rc = st_identify_tensors(d, n, meta, m, file_read, (void *)(uintptr_t)f, out, err);
    free(d);
    free(meta);
    return rc;
}

/* ---- names ---- */

const char *st_kind_name(st_model_kind k)
{
    static const char *const names[] = {"unknown", "checkpoint", "diffusion_model", "vae",
                                        "text_encoder", "lora", "embedding", "controlnet"};
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "unknown";
}

const char *st_family_name(st_model_family fam)
{
    static const char *const names[] = {"unknown", "sd1",  "sd2",    "sdxl",   "sdxl_refiner",
                                        "sd3",     "flux", "stable_cascade", "clip_l", "clip_g",
                                        "t5xxl"};
    return (unsigned)fam < sizeof names / sizeof names[0] ? names[fam] : "unknown";
}

const char *st_variant_name(unsigned bit)
{
    switch (bit) {
    case ST_VARIANT_INPAINTING: return "inpainting";
    case ST_VARIANT_INSTRUCT_PIX2PIX: return "instruct_pix2pix";
    case ST_VARIANT_DEPTH: return "depth";
    case ST_VARIANT_DEV: return "dev";
    case ST_VARIANT_SCHNELL: return "schnell";
    case ST_VARIANT_FILL: return "fill";
    case ST_VARIANT_V_PREDICTION: return "v_prediction";
    default: return NULL;
    }
}

const char *st_lora_format_name(st_lora_format fmt)
{
    static const char *const names[] = {"none",         "kohya", "lycoris_loha",
                                        "lycoris_lokr", "peft",  "diffusers"};
    return (unsigned)fmt < sizeof names / sizeof names[0] ? names[fmt] : "unknown";
}

const char *st_confidence_name(st_confidence conf)
{
    static const char *const names[] = {"none", "low", "medium", "high"};
    return (unsigned)conf < sizeof names / sizeof names[0] ? names[conf] : "unknown";
}
