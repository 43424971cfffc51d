/*
 * Stable Diffusion checkpoints (1.x, 2.x, SDXL base and refiner) between one
 * single file (the LDM / SGM layout A1111, ComfyUI and Forge load) and a
 * diffusers folder (unet/, vae/, text_encoder/, text_encoder_2/ with their
 * config.json, scheduler/, model_index.json). Tensor bytes are streamed
 * unchanged except where the layouts really differ: the VAE attention
 * weights change rank (1x1 convolution <-> linear, the same bytes),
 * OpenCLIP's fused in_proj is split into q/k/v row blocks (and fused back),
 * its text_projection is transposed. Every key must map: anything else is
 * an error naming it.
 */
#include "model/diffusers_configs.h"
#include "model/diffusers_internal.h"
#include "model/model_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NAME_CAP 512

/* ---- streaming ---- */

typedef struct job {
    st_progress_fn progress;
    void *ctx;
    uint64_t done, total, next_report;
    bool failed, cancelled;
    st_error err;
} job;

typedef struct src {
    const st_model *m;
    const st_tensor *t;      /* the source (q's for a fused in_proj) */
    const st_tensor *kv[2];  /* FUSE: k and v */
    struct {                 /* PIECES: byte ranges concatenated */
        const st_tensor *t;
        uint64_t off, len;
    } pc[4];
    int npc;
    job *j;
    char *name;              /* the output name (owned) */
    const char *dname;       /* the diffusers name, for the family checks */
    size_t dlen;
    uint64_t shape[4];
    uint32_t rank;
    int comp;
    int how;                 /* ST_RESHAPE_* */
    uint64_t slice;          /* SPLIT: byte offset of this third */
    uint64_t nbytes;         /* output bytes */
    unsigned char *buf;      /* TRANSPOSE: the transposed tensor, while written */
} src;

static int read_raw(src *s, const st_tensor *t, uint64_t offset, void *buf, size_t len)
{
    if (st_model_tensor_read(s->m, t, offset, buf, len, &s->j->err) != ST_OK) {
        s->j->failed = true;
        return 1;
    }
    return 0;
}

/* The whole transposed tensor, built once: a text projection is one
 * square matrix, which the memory bound allows (one tensor). */
static int load_transposed(src *s)
{
    size_t n = (size_t)s->nbytes;
    unsigned char *in = malloc(n ? n : 1), *out = malloc(n ? n : 1);
    if (!in || !out) {
        free(in);
        free(out);
        st_fail(&s->j->err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
        s->j->failed = true;
        return 1;
    }
    if (read_raw(s, s->t, 0, in, n)) {
        free(in);
        free(out);
        return 1;
    }
    size_t es = st_dtype_bits(s->t->dtype) / 8;
    uint64_t rows = s->t->shape[0], cols = s->t->shape[1];
    for (uint64_t r = 0; r < rows; r++)
        for (uint64_t c = 0; c < cols; c++)
            memcpy(out + (c * rows + r) * es, in + (r * cols + c) * es, es);
    free(in);
    s->buf = out;
    return 0;
}

static int read_src(void *ctx, uint64_t offset, void *buf, size_t len)
{
    src *s = ctx;
    switch (s->how) {
    case ST_RESHAPE_SPLIT_QKV:
        if (read_raw(s, s->t, s->slice + offset, buf, len))
            return 1;
        break;
    case ST_RESHAPE_FUSE_QKV: {
        /* q, k, v one after the other; a read may cross from one to the next */
        uint64_t third = s->nbytes / 3, off = offset;
        unsigned char *p = buf;
        size_t left = len;
        while (left) {
            uint64_t k = off / third, in = off % third;
            size_t take = (size_t)(third - in < left ? third - in : left);
            const st_tensor *t = k == 0 ? s->t : s->kv[k - 1];
            if (read_raw(s, t, in, p, take))
                return 1;
            p += take;
            off += take;
            left -= take;
        }
        break;
    }
    case ST_RESHAPE_PIECES: {
        uint64_t off = offset, base = 0;
        unsigned char *p = buf;
        size_t left = len;
        for (int k = 0; k < s->npc && left; k++) {
            uint64_t plen = s->pc[k].len;
            if (off >= base + plen) {
                base += plen;
                continue;
            }
            uint64_t in = off - base;
            size_t take = (size_t)(plen - in < left ? plen - in : left);
            if (read_raw(s, s->pc[k].t, s->pc[k].off + in, p, take))
                return 1;
            p += take;
            off += take;
            left -= take;
            base += plen;
        }
        break;
    }
    case ST_RESHAPE_TRANSPOSE:
        if (!s->buf && load_transposed(s))
            return 1;
        memcpy(buf, s->buf + offset, len);
        if (offset + len == s->nbytes) {
            free(s->buf);
            s->buf = NULL;
        }
        break;
    default:
        if (read_raw(s, s->t, offset, buf, len))
            return 1;
    }
    s->j->done += len;
    if (s->j->progress && s->j->done >= s->j->next_report) {
        s->j->next_report = s->j->done + (64u << 20);
        if (s->j->progress(s->j->ctx, s->j->done, s->j->total)) {
            s->j->cancelled = true;
            return 1;
        }
    }
    return 0;
}

static int job_error(job *j, int rc, st_error *err)
{
    if (j->failed) {
        if (err)
            *err = j->err;
        return j->err.code;
    }
    if (j->cancelled)
        return st_fail(err, ST_E_CALLBACK, ST_NO_OFFSET, "stopped by the progress callback");
    return rc;
}

static bool same_shape(const st_tensor *a, const st_tensor *b)
{
    return a->dtype == b->dtype && a->rank == b->rank &&
           memcmp(a->shape, b->shape, a->rank * sizeof *a->shape) == 0;
}

/* The output shape and size of a renamed tensor; k is the third (q, k, v)
 * for a split. */
static int reshape(src *s, int how, int k, st_error *err)
{
    const st_tensor *t = s->t;
    char q[160];
    st_quote_name(q, sizeof q, t->name, t->name_len);
    if (t->rank > 4)
        return st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET, "tensor %s has rank %u", q, t->rank);
    memcpy(s->shape, t->shape, t->rank * sizeof *s->shape);
    s->rank = t->rank;
    s->how = how;
    s->nbytes = st_tensor_nbytes(t);
    switch (how) {
    case ST_RESHAPE_SQUEEZE:
        if (t->rank != 4 || t->shape[2] != 1 || t->shape[3] != 1)
            return st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET,
                           "VAE attention weight %s is not a 1x1 convolution [o, i, 1, 1]", q);
        s->rank = 2;
        break;
    case ST_RESHAPE_UNSQUEEZE:
        if (t->rank == 4 && t->shape[2] == 1 && t->shape[3] == 1)
            return ST_OK; /* a folder written with LDM shapes: kept */
        if (t->rank != 2)
            return st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET,
                           "VAE attention weight %s is not a linear weight [o, i]", q);
        s->shape[2] = s->shape[3] = 1;
        s->rank = 4;
        break;
    case ST_RESHAPE_SPLIT_QKV:
        if (t->rank < 1 || t->rank > 2 || t->shape[0] % 3 || s->nbytes % 3)
            return st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET,
                           "attention in_proj %s does not split in three along its first dimension", q);
        s->shape[0] /= 3;
        s->nbytes /= 3;
        s->slice = (uint64_t)k * s->nbytes;
        break;
    case ST_RESHAPE_FUSE_QKV:
        if (!s->kv[0] || !s->kv[1] || t->rank < 1 || t->rank > 2 || !same_shape(t, s->kv[0]) ||
            !same_shape(t, s->kv[1]) || t->shape[0] > UINT64_MAX / 3 || s->nbytes > UINT64_MAX / 3)
            return st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET,
                           "%s: q_proj, k_proj and v_proj are needed, of one dtype and shape, to "
                           "make OpenCLIP's in_proj", q);
        s->shape[0] *= 3;
        s->nbytes *= 3;
        break;
    case ST_RESHAPE_TRANSPOSE:
        if (t->rank != 2 || st_dtype_bits(t->dtype) % 8 || s->nbytes > SIZE_MAX / 2)
            return st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET,
                           "text projection %s is not a 2-D matrix of whole bytes", q);
        s->shape[0] = t->shape[1];
        s->shape[1] = t->shape[0];
        break;
    default:
        break;
    }
    return ST_OK;
}

static void free_srcs(src *s, size_t n)
{
    for (size_t i = 0; s && i < n; i++) {
        free(s[i].name);
        free(s[i].buf);
    }
    free(s);
}

/* ---- the families ---- */

typedef struct comp_def {
    int kind;
    const char *dir, *file, *prefix, *config;
} comp_def;

typedef struct family {
    const char *name;
    size_t ncomp;
    comp_def comp[4];
    st_sd_unet_layout unet;
    const char *model_index, *unet_head, *unet_tail, *vae_config, *sched_head, *sched_tail;
    /* The UNet this family has: a cross-attention of the first attention
     * level over `context` features ([rows, context]; rows 0 = any), proj_in
     * of rank proj_rank. */
    const char *probe_to_k, *probe_proj;
    uint64_t probe_rows, context;
    uint32_t proj_rank;
} family;


static const family sd1 = {
    "Stable Diffusion 1.x", 3,
    {{ST_SDK_UNET, "unet", "diffusion_pytorch_model.safetensors", "model.diffusion_model.", NULL},
     {ST_SDK_VAE, "vae", "diffusion_pytorch_model.safetensors", "first_stage_model.", NULL},
     {ST_SDK_CLIP, "text_encoder", "model.safetensors", "cond_stage_model.transformer.", sd1_te_config}},
    {4, {true, true, true, false}, false},
    sd1_model_index, sd1_unet_head, sd1_unet_tail, sd1_vae_config, sd1_scheduler_head, sd1_scheduler_tail,
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
    "down_blocks.0.attentions.0.proj_in.weight", 320, 768, 4};

static const family sd2 = {
    "Stable Diffusion 2.x", 3,
    {{ST_SDK_UNET, "unet", "diffusion_pytorch_model.safetensors", "model.diffusion_model.", NULL},
     {ST_SDK_VAE, "vae", "diffusion_pytorch_model.safetensors", "first_stage_model.", NULL},
     {ST_SDK_OPENCLIP, "text_encoder", "model.safetensors", "cond_stage_model.model.", sd2_te_config}},
    {4, {true, true, true, false}, false},
    sd2_model_index, sd2_unet_head, sd2_unet_tail, sd1_vae_config, sd2_scheduler_head, sd2_scheduler_tail,
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
    "down_blocks.0.attentions.0.proj_in.weight", 320, 1024, 2};

static const family sdxl = {
    "SDXL base", 4,
    {{ST_SDK_UNET, "unet", "diffusion_pytorch_model.safetensors", "model.diffusion_model.", NULL},
     {ST_SDK_VAE, "vae", "diffusion_pytorch_model.safetensors", "first_stage_model.", NULL},
     {ST_SDK_CLIP, "text_encoder", "model.safetensors", "conditioner.embedders.0.transformer.", sdxl_te_config},
     {ST_SDK_OPENCLIP, "text_encoder_2", "model.safetensors", "conditioner.embedders.1.model.", sdxl_te2_config}},
    {3, {false, true, true, false}, true},
    sdxl_model_index, sdxl_unet_head, sdxl_unet_tail, sdxl_vae_config, sdxl_scheduler_head, sdxl_scheduler_tail,
    "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight",
    "down_blocks.1.attentions.0.proj_in.weight", 0, 2048, 2};

static const family refiner = {
    "SDXL refiner", 3,
    {{ST_SDK_UNET, "unet", "diffusion_pytorch_model.safetensors", "model.diffusion_model.", NULL},
     {ST_SDK_VAE, "vae", "diffusion_pytorch_model.safetensors", "first_stage_model.", NULL},
     {ST_SDK_OPENCLIP, "text_encoder_2", "model.safetensors", "conditioner.embedders.0.model.", sdxl_te2_config}},
    {4, {false, true, true, false}, true},
    refiner_model_index, refiner_unet_head, refiner_unet_tail, sdxl_vae_config, sdxl_scheduler_head, sdxl_scheduler_tail,
    "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight",
    "down_blocks.1.attentions.0.proj_in.weight", 0, 1280, 2};

/* The Flux transformer alone (BFL's flux1-dev / schnell file), as
 * transformer/ of a FluxPipeline folder: no UNet probe, no scheduler or
 * model_index.json (the rest of a Flux pipeline is other models). */
static const family flux = {
    "Flux transformer", 1,
    {{ST_SDK_FLUX, "transformer", "diffusion_pytorch_model.safetensors", "", NULL}},
    {0, {false, false, false, false}, false},
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0};

/* Flux as ComfyUI saves it: the same names under model.diffusion_model. */
static const family flux_comfy = {
    "Flux transformer", 1,
    {{ST_SDK_FLUX, "transformer", "diffusion_pytorch_model.safetensors", "model.diffusion_model.", NULL}},
    {0, {false, false, false, false}, false},
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0};

static bool starts(const char *s, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n > l && memcmp(s, lit, l) == 0;
}

/* Which family a single file is, from its text encoders' prefixes. */
static const family *single_family(const st_model *m, const char *what, st_error *err)
{
    bool e0_openclip = false, e1 = false, sd2_te = false, bfl = false, comfy = false;
    for (size_t i = 0, n = st_model_tensor_count(m); i < n; i++) {
        const st_tensor *t = st_model_tensor_at(m, i);
        e1 |= starts(t->name, t->name_len, "conditioner.embedders.1.");
        e0_openclip |= starts(t->name, t->name_len, "conditioner.embedders.0.model.");
        sd2_te |= starts(t->name, t->name_len, "cond_stage_model.model.");
        bfl |= starts(t->name, t->name_len, "double_blocks.");
        comfy |= starts(t->name, t->name_len, "model.diffusion_model.double_blocks.");
    }
    if (bfl)
        return &flux;
    if (comfy)
        return &flux_comfy;
    if (e1)
        return &sdxl;
    if (e0_openclip)
        return &refiner;
    (void)what;
    (void)err;
    return sd2_te ? &sd2 : &sd1;
}

/* Every component present, and a UNet of the family's widths. */
static int check_family(const family *f, const src *srcs, size_t n, const char *what, st_error *err)
{
    bool have[4] = {false, false, false, false};
    int ctx_ok = 0, proj_ok = 0;
    for (size_t i = 0; i < n; i++) {
        const src *s = &srcs[i];
        have[s->comp] = true;
        if (s->comp != 0 || !f->probe_to_k)
            continue;
        if (s->dlen == strlen(f->probe_to_k) && memcmp(s->dname, f->probe_to_k, s->dlen) == 0)
            ctx_ok = s->rank == 2 && s->shape[1] == f->context &&
                     (!f->probe_rows || s->shape[0] == f->probe_rows);
        if (s->dlen == strlen(f->probe_proj) && memcmp(s->dname, f->probe_proj, s->dlen) == 0)
            proj_ok = s->rank == f->proj_rank;
    }
    for (size_t c = 0; c < f->ncomp; c++)
        if (!have[c])
            return st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET,
                           "%s: no %s weights: a whole %s checkpoint is needed", what, f->comp[c].dir,
                           f->name);
    if (f->probe_to_k && (!ctx_ok || !proj_ok))
        return st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET,
                       "%s: not a %s UNet (cross-attention over %" PRIu64 " features with a %s "
                       "proj_in); Stable Diffusion 1.x, 2.x, SDXL base and refiner are supported",
                       what, f->name, f->context, f->proj_rank == 4 ? "convolutional" : "linear");
    return ST_OK;
}

/* ---- Flux: tensors split by rows, fused, or with halves swapped ---- */

static int flux_fail(const st_tensor *t, const char *why, st_error *err)
{
    char q[160];
    st_quote_name(q, sizeof q, t->name, t->name_len);
    return st_fail(err, ST_E_UNSUPPORTED, t->header_offset, "Flux tensor %s: %s", q, why);
}

/* Part k of BFL tensor t (to diffusers), or t's halves swapped. */
static int flux_split(src *s, const st_sd_group *g, int k, st_error *err)
{
    const st_tensor *t = s->t;
    uint64_t nb = st_tensor_nbytes(t), sum = 0, before = 0;
    for (int i = 0; i < g->n; i++) {
        sum += g->parts[i];
        if (i < k)
            before += g->parts[i];
    }
    if (g->swap)
        sum = 2;
    if (t->rank < 1 || t->rank > 4 || t->shape[0] % sum || nb % sum)
        return flux_fail(t, "its rows do not divide as the layout says", err);
    memcpy(s->shape, t->shape, t->rank * sizeof *s->shape);
    s->rank = t->rank;
    s->how = ST_RESHAPE_PIECES;
    uint64_t unit = nb / sum;
    if (g->swap) {
        s->pc[0].t = s->pc[1].t = t;
        s->pc[0].off = unit;
        s->pc[0].len = s->pc[1].len = unit;
        s->pc[1].off = 0;
        s->npc = 2;
        s->nbytes = nb;
        return ST_OK;
    }
    s->pc[0].t = t;
    s->pc[0].off = before * unit;
    s->pc[0].len = g->parts[k] * unit;
    s->npc = 1;
    s->nbytes = s->pc[0].len;
    s->shape[0] = t->shape[0] / sum * g->parts[k];
    return ST_OK;
}

/* The BFL tensor made of the diffusers tensors g->names[1..n] (to single). */
static int flux_fuse(src *s, const st_model *m, const st_sd_group *g, st_error *err)
{
    const st_tensor *first = NULL;
    uint64_t rows = 0, nb = 0;
    for (int k = 0; k < g->n; k++) {
        const char *nm = g->names[k + 1];
        const st_tensor *t = st_model_find(m, nm, strlen(nm));
        if (!t) {
            char q[300];
            st_quote_name(q, sizeof q, nm, strlen(nm));
            return st_fail(err, ST_E_UNSUPPORTED, s->t->header_offset, "Flux: %s is needed to make %s", q,
                           g->names[0]);
        }
        if (!first)
            first = t;
        if (t->dtype != first->dtype || t->rank != first->rank || t->rank < 1 || t->rank > 4 ||
            (t->rank > 1 && memcmp(t->shape + 1, first->shape + 1, (t->rank - 1) * sizeof *t->shape)) ||
            t->shape[0] * g->parts[0] != first->shape[0] * g->parts[k])
            return flux_fail(t, "its dtype or shape does not match the other parts", err);
        rows += t->shape[0];
        nb += st_tensor_nbytes(t);
        s->pc[k].t = t;
        s->pc[k].off = 0;
        s->pc[k].len = st_tensor_nbytes(t);
    }
    s->t = first;
    s->npc = g->n;
    s->how = ST_RESHAPE_PIECES;
    memcpy(s->shape, first->shape, first->rank * sizeof *s->shape);
    s->rank = first->rank;
    s->shape[0] = rows;
    s->nbytes = nb;
    if (g->swap) { /* one part: its halves exchanged again */
        if (first->shape[0] % 2 || nb % 2)
            return flux_fail(first, "its rows do not divide in two", err);
        s->pc[1] = s->pc[0];
        s->pc[0].off = nb / 2;
        s->pc[0].len = s->pc[1].len = nb / 2;
        s->npc = 2;
    }
    return ST_OK;
}

/* transformer/config.json from what the weights say. */
static void flux_config(char *buf, size_t cap, const src *srcs, size_t n)
{
    uint64_t in_ch = 64, layers = 0, single = 0, joint = 4096, pooled = 768;
    bool guidance = false;
    for (size_t i = 0; i < n; i++) {
        const char *nm = srcs[i].name;
        unsigned long b;
        if (sscanf(nm, "transformer_blocks.%lu.", &b) == 1 && b + 1 > layers)
            layers = b + 1;
        if (sscanf(nm, "single_transformer_blocks.%lu.", &b) == 1 && b + 1 > single)
            single = b + 1;
        guidance |= strncmp(nm, "time_text_embed.guidance_embedder.", 34) == 0;
        if (strcmp(nm, "x_embedder.weight") == 0 && srcs[i].rank == 2)
            in_ch = srcs[i].shape[1];
        if (strcmp(nm, "context_embedder.weight") == 0 && srcs[i].rank == 2)
            joint = srcs[i].shape[1];
        if (strcmp(nm, "time_text_embed.text_embedder.linear_1.weight") == 0 && srcs[i].rank == 2)
            pooled = srcs[i].shape[1];
    }
    snprintf(buf, cap,
             "{\n"
             "  \"_class_name\": \"FluxTransformer2DModel\",\n"
             "  \"_diffusers_version\": \"0.30.0\",\n"
             "  \"attention_head_dim\": 128,\n"
             "  \"axes_dims_rope\": [16, 56, 56],\n"
             "  \"guidance_embeds\": %s,\n"
             "  \"in_channels\": %" PRIu64 ",\n"
             "  \"joint_attention_dim\": %" PRIu64 ",\n"
             "  \"num_attention_heads\": 24,\n"
             "  \"num_layers\": %" PRIu64 ",\n"
             "  \"num_single_layers\": %" PRIu64 ",\n"
             "  \"patch_size\": 1,\n"
             "  \"pooled_projection_dim\": %" PRIu64 "\n"
             "}\n",
             guidance ? "true" : "false", in_ch, joint, layers, single, pooled);
}

/* ---- diffusers -> single file ---- */

/* A staged file stays until everything is written and renamed into
 * place: the temp hook hears of it so an interrupted run can remove it. */
static void staged_note(const st_output_hooks *h, const char *path, bool created)
{
    if (h->temp)
        h->temp(h->temp_ctx, path, created ? 1 : 0);
}

static bool is_dir(const char *folder, const char *sub)
{
    char path[4096];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", folder, sub);
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* SD2's text encoder (OpenCLIP ViT-H) has HF names like SD1's CLIP-L:
 * told apart by the UNet's cross-attention width, 1024 against 768. */
static bool unet_context_1024(const char *folder, const char *variant)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/unet", folder);
    st_model *m = NULL;
    if (st_model_open_variant(path, variant, ST_MODEL_VARIANT_FALLBACK, &m, NULL) != ST_OK)
        return false;
    const char *k = sd2.probe_to_k;
    const st_tensor *t = st_model_find(m, k, strlen(k));
    bool wide = t && t->rank == 2 && t->shape[1] == 1024;
    st_model_close(m);
    return wide;
}

/* k_proj / v_proj of a fused in_proj: found by q_proj's name. */
static const st_tensor *sibling(const st_model *m, const st_tensor *t, char which)
{
    char name[NAME_CAP];
    if (t->name_len >= sizeof name)
        return NULL;
    memcpy(name, t->name, t->name_len);
    name[t->name_len] = '\0';
    char *q = strstr(name, "self_attn.q_proj.");
    if (!q)
        q = strstr(name, "self_attn.k_proj.");
    if (!q)
        q = strstr(name, "self_attn.v_proj.");
    if (!q)
        return NULL;
    q[10] = which;
    return st_model_find(m, name, t->name_len);
}

int st_diffusers_to_single(const char *folder, const char *out_path, const st_output_hooks *hooks, st_error *err)
{
    return st_diffusers_to_single_variant(folder, NULL, out_path, hooks, err);
}

int st_diffusers_to_single_variant(const char *folder, const char *variant, const char *out_path,
                                   const st_output_hooks *hooks, st_error *err)
{
    st_progress_fn progress = hooks ? hooks->progress : NULL;
    void *progress_ctx = hooks ? hooks->progress_ctx : NULL;
    st_output_hooks temp_only = {.temp = hooks ? hooks->temp : NULL, .temp_ctx = hooks ? hooks->temp_ctx : NULL};
    if (!folder || !out_path)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_diffusers_to_single: folder and path are required");
    char path[4096];
    snprintf(path, sizeof path, "%s/model_index.json", folder);
    struct stat sb;
    bool flux_dir = is_dir(folder, "transformer") && !is_dir(folder, "unet");
    if (!flux_dir && stat(path, &sb) != 0)
        return st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET,
                       "%s has no model_index.json: not a diffusers pipeline folder", folder);
    /* SDXL has text_encoder_2 (the refiner only that one); SD2's text
     * encoder is OpenCLIP's, told by its hidden size in config.json. */
    const family *f = flux_dir ? &flux
                      : is_dir(folder, "text_encoder_2") ? (is_dir(folder, "text_encoder") ? &sdxl : &refiner)
                      : unet_context_1024(folder, variant) ? &sd2
                                                         : &sd1;
    st_model *m[4] = {NULL, NULL, NULL, NULL};
    src *srcs = NULL;
    size_t n = 0, cap = 0;
    st_writer *w = NULL;
    int rc = ST_OK;
    size_t with_variant = 0;
    job j;
    memset(&j, 0, sizeof j);
    j.progress = progress;
    j.ctx = progress_ctx;
    for (size_t c = 0; c < f->ncomp && !rc; c++) {
        const comp_def *cd = &f->comp[c];
        snprintf(path, sizeof path, "%s/%s", folder, cd->dir);
        /* As diffusers' pipeline loading: a component without the variant
         * loads its plain weights. */
        rc = st_model_open_variant(path, variant, ST_MODEL_VARIANT_FALLBACK, &m[c], err);
        if (rc)
            break;
        if (st_model_variant(m[c]))
            with_variant++;
        size_t cnt = st_model_tensor_count(m[c]);
        j.total += st_model_total_size(m[c]);
        if (n + cnt > cap) {
            size_t nc = n + cnt + 1;
            src *ns = realloc(srcs, nc * sizeof *ns);
            if (!ns) {
                rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
                break;
            }
            srcs = ns;
            cap = nc;
        }
        size_t pl = strlen(cd->prefix);
        for (size_t i = 0; i < cnt && !rc; i++) {
            const st_tensor *t = st_model_tensor_at(m[c], i);
            char out[NAME_CAP];
            int how = ST_RESHAPE_NONE, r;
            memcpy(out, cd->prefix, pl + 1);
            st_sd_group g;
            if (cd->kind == ST_SDK_FLUX) {
                r = st_flux_map(false, t->name, t->name_len, &g);
                if (r == ST_SD_PART && st_model_find(m[c], g.names[1], strlen(g.names[1])))
                    continue; /* written with the first part */
                if (r == ST_OK && (strlen(g.names[0]) + pl >= sizeof out))
                    r = ST_E_NOT_FOUND;
                if (r == ST_OK) {
                    memcpy(out + pl, g.names[0], strlen(g.names[0]) + 1);
                    how = ST_RESHAPE_PIECES;
                }
            } else {
                r = st_sd_from_diffusers_name(cd->kind, &f->unet, t->name, t->name_len, out + pl,
                                              sizeof out - pl, &how);
            }
            if (r == ST_SD_LEFT_OUT)
                continue;
            if (r == ST_SD_PART && sibling(m[c], t, 'q'))
                continue; /* written fused, with q_proj */
            if (r != ST_OK) {
                char q[160];
                st_quote_name(q, sizeof q, t->name, t->name_len);
                rc = st_fail(err, ST_E_UNSUPPORTED, t->header_offset,
                             r == ST_SD_PART ? "%s: tensor %s has no first part beside it (q_proj) to fuse with"
                                             : "%s: tensor %s is not a %s %s weight (no single-file "
                                               "name for it); Stable Diffusion 1.x, 2.x, SDXL base "
                                               "and refiner are supported",
                             st_model_shard_path(m[c], st_model_tensor_shard(m[c], t)), q, f->name,
                             cd->dir);
                break;
            }
            src *s = &srcs[n];
            memset(s, 0, sizeof *s);
            s->m = m[c];
            s->t = t;
            s->j = &j;
            s->comp = (int)c;
            s->dname = t->name;
            s->dlen = t->name_len;
            if (how == ST_RESHAPE_FUSE_QKV) {
                s->kv[0] = sibling(m[c], t, 'k');
                s->kv[1] = sibling(m[c], t, 'v');
            }
            s->name = strdup(out);
            n++;
            if (!s->name)
                rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
            else if (how == ST_RESHAPE_PIECES)
                rc = flux_fuse(s, m[c], &g, err);
            else
                rc = reshape(s, how, 0, err);
        }
    }
    if (!rc && variant && !with_variant)
        rc = st_fail(err, ST_E_NOT_FOUND, ST_NO_OFFSET,
                     "no component of %s has weight variant %s (no %s/diffusion_pytorch_model.%s"
                     ".safetensors nor its index, nor the like in the other component folders)",
                     folder, variant, f->comp[0].dir, variant);
    if (!rc)
        rc = check_family(f, srcs, n, folder, err);
    if (!rc && !(w = st_writer_new()))
        rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    for (size_t i = 0; i < n && !rc; i++)
        rc = st_writer_add_stream(w, srcs[i].name, strlen(srcs[i].name), srcs[i].t->dtype,
                                  srcs[i].shape, srcs[i].rank, srcs[i].nbytes, read_src,
                                  &srcs[i], err);
    if (!rc) {
        st_writer_set_hooks(w, &temp_only);
        rc = st_writer_write(w, out_path, err);
        if (rc)
            rc = job_error(&j, rc, err);
        else if (progress && progress(progress_ctx, j.done, j.total))
            rc = st_fail(err, ST_E_CALLBACK, ST_NO_OFFSET, "stopped by the progress callback");
    }
    st_writer_free(w);
    free_srcs(srcs, n);
    for (size_t c = 0; c < 4; c++)
        st_model_close(m[c]);
    return rc;
}

/* ---- single file -> diffusers ---- */

static int write_text_file(const char *path, const char *text, st_error *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot create %s: %s", path, strerror(errno));
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t wr = write(fd, text + off, len - off);
        if (wr < 0 && errno == EINTR)
            continue;
        if (wr <= 0) {
            int e = errno;
            close(fd);
            return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot write %s: %s", path, strerror(e));
        }
        off += (size_t)wr;
    }
    if (fsync(fd) != 0 || close(fd) != 0)
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot write %s: %s", path, strerror(errno));
    return ST_OK;
}

/* Creates a folder; *made says whether this call created it (so that a
 * failed conversion can remove what it made and nothing else). */
static int make_dir(const char *path, bool *made, st_error *err)
{
    *made = false;
    if (mkdir(path, 0755) == 0) {
        *made = true;
        return ST_OK;
    }
    if (errno != EEXIST)
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot create folder %s: %s", path, strerror(errno));
    return ST_OK;
}

#define NFILES 10 /* up to 4 weight files, model_index, 4 configs, the scheduler's */
#define NDIRS 6   /* outdir, up to 4 components, scheduler */

int st_single_to_diffusers(const st_model *m, const char *outdir, unsigned flags, const st_output_hooks *hooks,
                           size_t *left_out, st_error *err)
{
    st_progress_fn progress = hooks ? hooks->progress : NULL;
    void *progress_ctx = hooks ? hooks->progress_ctx : NULL;
    st_output_hooks temp_only = {.temp = hooks ? hooks->temp : NULL, .temp_ctx = hooks ? hooks->temp_ctx : NULL};
    if (!m || !outdir)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_single_to_diffusers: model and folder are required");
    const char *what = st_model_index_path(m) ? st_model_index_path(m) : st_model_shard_path(m, 0);
    if (!what)
        what = "the model";
    const family *f = single_family(m, what, err);
    if (!f)
        return ST_E_UNSUPPORTED;
    size_t n = st_model_tensor_count(m), nsrc = 0, dropped = 0;
    if (n > (SIZE_MAX / sizeof(src) - 1) / 4)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    src *srcs = calloc(4 * n + 1, sizeof *srcs); /* a Flux linear1 becomes four */
    if (!srcs)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    job j;
    memset(&j, 0, sizeof j);
    j.progress = progress;
    j.ctx = progress_ctx;
    int rc = ST_OK;
    uint64_t in_channels = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const st_tensor *t = st_model_tensor_at(m, i);
        char out[NAME_CAP];
        int how = ST_RESHAPE_NONE, r = ST_E_NOT_FOUND;
        size_t comp = 0;
        st_sd_group g;
        g.n = 0;
        out[0] = '\0';
        if (st_sd_left_out(t->name, t->name_len))
            r = ST_SD_LEFT_OUT;
        for (size_t c = 0; c < f->ncomp && r == ST_E_NOT_FOUND; c++)
            if (starts(t->name, t->name_len, f->comp[c].prefix)) {
                size_t pl = strlen(f->comp[c].prefix);
                comp = c;
                if (f->comp[c].kind == ST_SDK_FLUX) {
                    r = st_flux_map(true, t->name + pl, t->name_len - pl, &g);
                    how = ST_RESHAPE_PIECES;
                } else {
                    r = st_sd_to_diffusers_name(f->comp[c].kind, &f->unet, t->name + pl, t->name_len - pl,
                                                out, sizeof out, &how);
                }
                if (r == ST_E_NOT_FOUND)
                    break;
            }
        if (r == ST_SD_LEFT_OUT) {
            dropped++;
            continue;
        }
        if (r != ST_OK) {
            char q[160];
            st_quote_name(q, sizeof q, t->name, t->name_len);
            bool ema = t->name_len > 10 && memcmp(t->name, "model_ema.", 10) == 0;
            rc = st_fail(err, ST_E_UNSUPPORTED, t->header_offset,
                         ema ? "%s: tensor %s is an EMA weight: keep or drop the EMA first "
                               "(convert --ema only|drop)"
                             : "%s: tensor %s has no diffusers name: not a %s checkpoint key "
                               "(Stable Diffusion 1.x, 2.x, SDXL base and refiner are supported)",
                         what, q, f->name);
            break;
        }
        int parts = how == ST_RESHAPE_SPLIT_QKV ? 3 : how == ST_RESHAPE_PIECES ? g.n : 1;
        char *qkv = how == ST_RESHAPE_SPLIT_QKV ? strstr(out, "self_attn.q_proj.") : NULL;
        if (how == ST_RESHAPE_SPLIT_QKV && !qkv)
            rc = st_fail(err, ST_E_UNSUPPORTED, t->header_offset, "%s: in_proj without a q_proj name", what);
        for (int k = 0; k < parts && !rc; k++) {
            src *s = &srcs[nsrc++];
            s->m = m;
            s->t = t;
            s->j = &j;
            s->comp = (int)comp;
            if (k > 0 && qkv) /* q_proj -> k_proj, v_proj */
                qkv[10] = k == 1 ? 'k' : 'v';
            s->name = strdup(how == ST_RESHAPE_PIECES ? g.names[k] : out);
            if (!s->name) {
                rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
                break;
            }
            s->dname = s->name;
            s->dlen = strlen(s->name);
            rc = how == ST_RESHAPE_PIECES ? flux_split(s, &g, k, err) : reshape(s, how, k, err);
        }
        if (!rc && comp == 0 && strcmp(out, "conv_in.weight") == 0 && t->rank == 4)
            in_channels = t->shape[1];
        j.total += st_tensor_nbytes(t);
    }
    if (!rc)
        rc = check_family(f, srcs, nsrc, what, err);

    /* Staged files, renamed into place when all are written. */
    char final[NFILES][4096], staged[NFILES][4096];
    const char *texts[NFILES];
    size_t nfiles = 0, nstaged = 0;
    /* Flux: transformer/ alone, its config from the weights */
    bool pipeline = f->model_index != NULL;
    char unet_config[1536], sched_config[1536];
    if (pipeline) {
        snprintf(unet_config, sizeof unet_config, "%s%" PRIu64 "%s", f->unet_head,
                 in_channels ? in_channels : 4, f->unet_tail);
        snprintf(sched_config, sizeof sched_config, "%s\"%s\"%s", f->sched_head,
                 flags & ST_DIFFUSERS_V_PREDICTION ? "v_prediction" : "epsilon", f->sched_tail);
    } else {
        flux_config(unet_config, sizeof unet_config, srcs, nsrc);
    }
    for (size_t c = 0; c < f->ncomp; c++) {
        const comp_def *cd = &f->comp[c];
        snprintf(final[nfiles], sizeof final[0], "%s/%s/%s", outdir, cd->dir, cd->file);
        snprintf(staged[nfiles], sizeof staged[0], "%s/%s/.%s.%ld.part", outdir, cd->dir, cd->file,
                 (long)getpid());
        texts[nfiles++] = NULL;
    }
    for (size_t c = 0; c <= (pipeline ? f->ncomp + 1 : f->ncomp - 1); c++) {
        const char *dir = c < f->ncomp ? f->comp[c].dir : c == f->ncomp ? "scheduler" : NULL;
        const char *file = c < f->ncomp ? "config.json" : c == f->ncomp ? "scheduler_config.json"
                                                                        : "model_index.json";
        if (dir) {
            snprintf(final[nfiles], sizeof final[0], "%s/%s/%s", outdir, dir, file);
            snprintf(staged[nfiles], sizeof staged[0], "%s/%s/.%s.%ld.part", outdir, dir, file,
                     (long)getpid());
        } else {
            snprintf(final[nfiles], sizeof final[0], "%s/%s", outdir, file);
            snprintf(staged[nfiles], sizeof staged[0], "%s/.%s.%ld.part", outdir, file, (long)getpid());
        }
        const int kind = c < f->ncomp ? f->comp[c].kind : -1;
        texts[nfiles++] = c == f->ncomp + 1 ? f->model_index
                          : c == f->ncomp   ? sched_config
                          : kind == ST_SDK_UNET || kind == ST_SDK_FLUX ? unet_config
                          : kind == ST_SDK_VAE  ? f->vae_config
                                                : f->comp[c].config;
    }
    char dirs[NDIRS][4096];
    bool made[NDIRS] = {false, false, false, false, false, false};
    size_t ndirs = 0;
    snprintf(dirs[ndirs++], sizeof dirs[0], "%s", outdir);
    for (size_t c = 0; c < f->ncomp; c++)
        snprintf(dirs[ndirs++], sizeof dirs[0], "%s/%s", outdir, f->comp[c].dir);
    if (pipeline)
        snprintf(dirs[ndirs++], sizeof dirs[0], "%s/scheduler", outdir);
    for (size_t k = 0; k < ndirs && !rc; k++)
        rc = make_dir(dirs[k], &made[k], err);
    for (size_t c = 0; c < f->ncomp && !rc; c++) {
        st_writer *w = st_writer_new();
        if (!w) {
            rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
            break;
        }
        rc = st_writer_set_metadata(w, "format", 6, "pt", 2, err);
        for (size_t i = 0; i < nsrc && !rc; i++)
            if (srcs[i].comp == (int)c)
                rc = st_writer_add_stream(w, srcs[i].name, strlen(srcs[i].name), srcs[i].t->dtype,
                                          srcs[i].shape, srcs[i].rank, srcs[i].nbytes, read_src,
                                          &srcs[i], err);
        if (!rc) {
            st_writer_set_hooks(w, &temp_only);
            rc = st_writer_write(w, staged[c], err);
            staged_note(&temp_only, staged[c], rc == ST_OK);
            if (rc)
                rc = job_error(&j, rc, err);
            else
                nstaged++;
        }
        st_writer_free(w);
    }
    for (size_t k = f->ncomp; k < nfiles && !rc; k++) {
        rc = write_text_file(staged[k], texts[k], err);
        if (!rc)
            staged_note(&temp_only, staged[k], true);
        if (!rc)
            nstaged++;
    }
    if (!rc && progress && progress(progress_ctx, j.done, j.total))
        rc = st_fail(err, ST_E_CALLBACK, ST_NO_OFFSET, "stopped by the progress callback");
    for (size_t k = 0; k < nstaged && !rc; k++)
        if (rename(staged[k], final[k]) == 0)
            staged_note(&temp_only, staged[k], false);
        else
            rc = st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot rename %s to %s: %s", staged[k], final[k],
                         strerror(errno));
    if (rc) {
        for (size_t k = 0; k < nstaged; k++) {
            unlink(staged[k]);
            staged_note(&temp_only, staged[k], false);
        }
        for (size_t k = ndirs; k-- > 0;)
            if (made[k])
                rmdir(dirs[k]);
    }
    free_srcs(srcs, nsrc);
    if (!rc && left_out)
        *left_out = dropped;
    return rc;
}
