/*
 * Stable Diffusion 1.x checkpoints between one single file (the LDM layout
 * A1111, ComfyUI and Forge load) and a diffusers folder (unet/, vae/,
 * text_encoder/ with their config.json, scheduler/, model_index.json).
 * Tensor bytes are streamed unchanged; only names change, and the VAE
 * attention weights change rank (1x1 convolution <-> linear, the same
 * bytes). Every key must map: anything else is an error naming it.
 */
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

static const char *const comp_dir[ST_SD_COMPONENTS] = {"unet", "vae", "text_encoder"};
static const char *const comp_file[ST_SD_COMPONENTS] = {
    "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors",
    "model.safetensors"};

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
    const st_tensor *t;
    job *j;
    char *name;       /* the output name (owned) */
    uint64_t shape[4];
    uint32_t rank;
    int comp;
} src;

static int read_src(void *ctx, uint64_t offset, void *buf, size_t len)
{
    src *s = ctx;
    if (st_model_tensor_read(s->m, s->t, offset, buf, len, &s->j->err) != ST_OK) {
        s->j->failed = true;
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

/* The output shape of a renamed tensor. */
static int reshape(src *s, int how, st_error *err)
{
    const st_tensor *t = s->t;
    char q[160];
    st_quote_name(q, sizeof q, t->name, t->name_len);
    if (t->rank > 4)
        return st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET, "tensor %s has rank %u", q, t->rank);
    memcpy(s->shape, t->shape, t->rank * sizeof *s->shape);
    s->rank = t->rank;
    if (how == ST_RESHAPE_SQUEEZE) {
        if (t->rank != 4 || t->shape[2] != 1 || t->shape[3] != 1)
            return st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET,
                           "VAE attention weight %s is not a 1x1 convolution [o, i, 1, 1]", q);
        s->rank = 2;
    } else if (how == ST_RESHAPE_UNSQUEEZE) {
        if (t->rank == 4 && t->shape[2] == 1 && t->shape[3] == 1)
            return ST_OK; /* a folder written with LDM shapes: kept */
        if (t->rank != 2)
            return st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET,
                           "VAE attention weight %s is not a linear weight [o, i]", q);
        s->shape[2] = s->shape[3] = 1;
        s->rank = 4;
    }
    return ST_OK;
}

/* SD1.x and not another model with the same block names: cross-attention
 * over 768 features and a convolutional proj_in (SD2 has 1024 and linear). */
static int check_sd1(const src *srcs, size_t n, const char *to_k_name, const char *proj_name,
                     const char *what, st_error *err)
{
    bool have[ST_SD_COMPONENTS] = {false, false, false};
    int ctx_ok = 0, proj_ok = 0;
    for (size_t i = 0; i < n; i++) {
        have[srcs[i].comp] = true;
        if (strcmp(srcs[i].name, to_k_name) == 0)
            ctx_ok = srcs[i].rank == 2 && srcs[i].shape[0] == 320 && srcs[i].shape[1] == 768;
        if (strcmp(srcs[i].name, proj_name) == 0)
            proj_ok = srcs[i].rank == 4;
    }
    for (int c = 0; c < ST_SD_COMPONENTS; c++)
        if (!have[c])
            return st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET,
                           "%s: no %s weights: a whole SD1.x checkpoint (UNet, VAE, text encoder) is needed",
                           what, comp_dir[c]);
    if (!ctx_ok || !proj_ok)
        return st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET,
                       "%s: not a Stable Diffusion 1.x UNet (cross-attention over 768 features with "
                       "a convolutional proj_in); only SD1.x is supported", what);
    return ST_OK;
}

static void free_srcs(src *s, size_t n)
{
    for (size_t i = 0; s && i < n; i++)
        free(s[i].name);
    free(s);
}

/* ---- diffusers -> single file ---- */

/* A staged file stays until everything is written and renamed into
 * place: the temp hook hears of it so an interrupted run can remove it. */
static void staged_note(const st_output_hooks *h, const char *path, bool created)
{
    if (h->temp)
        h->temp(h->temp_ctx, path, created ? 1 : 0);
}

int st_diffusers_to_single(const char *folder, const char *out_path, const st_output_hooks *hooks, st_error *err)
{
    st_progress_fn progress = hooks ? hooks->progress : NULL;
    void *progress_ctx = hooks ? hooks->progress_ctx : NULL;
    st_output_hooks temp_only = {.temp = hooks ? hooks->temp : NULL, .temp_ctx = hooks ? hooks->temp_ctx : NULL};
    if (!folder || !out_path)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_diffusers_to_single: folder and path are required");
    char path[4096];
    snprintf(path, sizeof path, "%s/model_index.json", folder);
    struct stat sb;
    if (stat(path, &sb) != 0)
        return st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET,
                       "%s has no model_index.json: not a diffusers pipeline folder", folder);
    st_model *m[ST_SD_COMPONENTS] = {NULL, NULL, NULL};
    src *srcs = NULL;
    size_t n = 0, cap = 0;
    st_writer *w = NULL;
    int rc = ST_OK;
    job j;
    memset(&j, 0, sizeof j);
    j.progress = progress;
    j.ctx = progress_ctx;
    for (int c = 0; c < ST_SD_COMPONENTS && !rc; c++) {
        snprintf(path, sizeof path, "%s/%s", folder, comp_dir[c]);
        rc = st_model_open(path, 0, &m[c], err);
        if (rc)
            break;
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
        for (size_t i = 0; i < cnt && !rc; i++) {
            const st_tensor *t = st_model_tensor_at(m[c], i);
            src *s = &srcs[n];
            memset(s, 0, sizeof *s);
            s->m = m[c];
            s->t = t;
            s->j = &j;
            s->comp = c;
            char out[NAME_CAP];
            int how;
            if (st_sd1_from_diffusers_name(c, t->name, t->name_len, out, sizeof out, &how) != ST_OK) {
                char q[160];
                st_quote_name(q, sizeof q, t->name, t->name_len);
                rc = st_fail(err, ST_E_UNSUPPORTED, t->header_offset,
                             "%s: tensor %s is not a Stable Diffusion 1.x %s weight (no single-file "
                             "name for it); only SD1.x is supported",
                             st_model_shard_path(m[c], st_model_tensor_shard(m[c], t)), q, comp_dir[c]);
                break;
            }
            s->name = strdup(out);
            n++;
            if (!s->name)
                rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
            else
                rc = reshape(s, how, err);
        }
    }
    if (!rc)
        rc = check_sd1(srcs, n, "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
                       "model.diffusion_model.input_blocks.1.1.proj_in.weight", folder, err);
    if (!rc && !(w = st_writer_new()))
        rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    for (size_t i = 0; i < n && !rc; i++)
        rc = st_writer_add_stream(w, srcs[i].name, strlen(srcs[i].name), srcs[i].t->dtype,
                                  srcs[i].shape, srcs[i].rank, st_tensor_nbytes(srcs[i].t), read_src,
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
    for (int c = 0; c < ST_SD_COMPONENTS; c++)
        st_model_close(m[c]);
    return rc;
}

/* ---- single file -> diffusers ---- */

static const char model_index_json[] =
    "{\n"
    "  \"_class_name\": \"StableDiffusionPipeline\",\n"
    "  \"_diffusers_version\": \"0.21.0\",\n"
    "  \"feature_extractor\": [null, null],\n"
    "  \"requires_safety_checker\": false,\n"
    "  \"safety_checker\": [null, null],\n"
    "  \"scheduler\": [\"diffusers\", \"PNDMScheduler\"],\n"
    "  \"text_encoder\": [\"transformers\", \"CLIPTextModel\"],\n"
    "  \"tokenizer\": [\"transformers\", \"CLIPTokenizer\"],\n"
    "  \"unet\": [\"diffusers\", \"UNet2DConditionModel\"],\n"
    "  \"vae\": [\"diffusers\", \"AutoencoderKL\"]\n"
    "}\n";

static const char unet_config_fmt[] =
    "{\n"
    "  \"_class_name\": \"UNet2DConditionModel\",\n"
    "  \"_diffusers_version\": \"0.21.0\",\n"
    "  \"act_fn\": \"silu\",\n"
    "  \"attention_head_dim\": 8,\n"
    "  \"block_out_channels\": [320, 640, 1280, 1280],\n"
    "  \"center_input_sample\": false,\n"
    "  \"cross_attention_dim\": 768,\n"
    "  \"down_block_types\": [\"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\", "
    "\"CrossAttnDownBlock2D\", \"DownBlock2D\"],\n"
    "  \"downsample_padding\": 1,\n"
    "  \"flip_sin_to_cos\": true,\n"
    "  \"freq_shift\": 0,\n"
    "  \"in_channels\": %" PRIu64 ",\n"
    "  \"layers_per_block\": 2,\n"
    "  \"mid_block_scale_factor\": 1,\n"
    "  \"norm_eps\": 1e-05,\n"
    "  \"norm_num_groups\": 32,\n"
    "  \"out_channels\": 4,\n"
    "  \"sample_size\": 64,\n"
    "  \"up_block_types\": [\"UpBlock2D\", \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", "
    "\"CrossAttnUpBlock2D\"]\n"
    "}\n";

static const char vae_config_json[] =
    "{\n"
    "  \"_class_name\": \"AutoencoderKL\",\n"
    "  \"_diffusers_version\": \"0.21.0\",\n"
    "  \"act_fn\": \"silu\",\n"
    "  \"block_out_channels\": [128, 256, 512, 512],\n"
    "  \"down_block_types\": [\"DownEncoderBlock2D\", \"DownEncoderBlock2D\", "
    "\"DownEncoderBlock2D\", \"DownEncoderBlock2D\"],\n"
    "  \"in_channels\": 3,\n"
    "  \"latent_channels\": 4,\n"
    "  \"layers_per_block\": 2,\n"
    "  \"norm_num_groups\": 32,\n"
    "  \"out_channels\": 3,\n"
    "  \"sample_size\": 512,\n"
    "  \"scaling_factor\": 0.18215,\n"
    "  \"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\", "
    "\"UpDecoderBlock2D\"]\n"
    "}\n";

static const char te_config_json[] =
    "{\n"
    "  \"architectures\": [\"CLIPTextModel\"],\n"
    "  \"attention_dropout\": 0.0,\n"
    "  \"bos_token_id\": 0,\n"
    "  \"dropout\": 0.0,\n"
    "  \"eos_token_id\": 2,\n"
    "  \"hidden_act\": \"quick_gelu\",\n"
    "  \"hidden_size\": 768,\n"
    "  \"initializer_factor\": 1.0,\n"
    "  \"initializer_range\": 0.02,\n"
    "  \"intermediate_size\": 3072,\n"
    "  \"layer_norm_eps\": 1e-05,\n"
    "  \"max_position_embeddings\": 77,\n"
    "  \"model_type\": \"clip_text_model\",\n"
    "  \"num_attention_heads\": 12,\n"
    "  \"num_hidden_layers\": 12,\n"
    "  \"pad_token_id\": 1,\n"
    "  \"projection_dim\": 768,\n"
    "  \"torch_dtype\": \"float32\",\n"
    "  \"vocab_size\": 49408\n"
    "}\n";

static const char scheduler_config_json[] =
    "{\n"
    "  \"_class_name\": \"PNDMScheduler\",\n"
    "  \"_diffusers_version\": \"0.21.0\",\n"
    "  \"beta_end\": 0.012,\n"
    "  \"beta_schedule\": \"scaled_linear\",\n"
    "  \"beta_start\": 0.00085,\n"
    "  \"clip_sample\": false,\n"
    "  \"num_train_timesteps\": 1000,\n"
    "  \"set_alpha_to_one\": false,\n"
    "  \"skip_prk_steps\": true,\n"
    "  \"steps_offset\": 1,\n"
    "  \"trained_betas\": null\n"
    "}\n";

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

#define NFILES 8 /* 3 weight files, 5 JSON files */

int st_single_to_diffusers(const st_model *m, const char *outdir, const st_output_hooks *hooks, size_t *left_out, st_error *err)
{
    st_progress_fn progress = hooks ? hooks->progress : NULL;
    void *progress_ctx = hooks ? hooks->progress_ctx : NULL;
    st_output_hooks temp_only = {.temp = hooks ? hooks->temp : NULL, .temp_ctx = hooks ? hooks->temp_ctx : NULL};
    if (!m || !outdir)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_single_to_diffusers: model and folder are required");
    size_t n = st_model_tensor_count(m), nsrc = 0, dropped = 0;
    src *srcs = calloc(n + 1, sizeof *srcs);
    if (!srcs)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    job j;
    memset(&j, 0, sizeof j);
    j.progress = progress;
    j.ctx = progress_ctx;
    int rc = ST_OK;
    const char *what = st_model_index_path(m) ? st_model_index_path(m) : st_model_shard_path(m, 0);
    if (!what)
        what = "the model";
    uint64_t in_channels = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const st_tensor *t = st_model_tensor_at(m, i);
        char out[NAME_CAP];
        int comp = 0, how;
        int r = st_sd1_to_diffusers_name(t->name, t->name_len, &comp, out, sizeof out, &how);
        if (r == ST_SD_SCHEDULE) {
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
                             : "%s: tensor %s has no diffusers name: not a Stable Diffusion 1.x "
                               "checkpoint key; only SD1.x is supported",
                         what, q);
            break;
        }
        src *s = &srcs[nsrc++];
        s->m = m;
        s->t = t;
        s->j = &j;
        s->comp = comp;
        s->name = strdup(out);
        if (!s->name) {
            rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
            break;
        }
        rc = reshape(s, how, err);
        if (!rc && comp == ST_SD_UNET && strcmp(out, "conv_in.weight") == 0 && t->rank == 4)
            in_channels = t->shape[1];
        j.total += st_tensor_nbytes(t);
    }
    if (!rc)
        rc = check_sd1(srcs, nsrc, "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
                       "down_blocks.0.attentions.0.proj_in.weight", what, err);

    /* Staged files, renamed into place when all are written. */
    char final[NFILES][4096], staged[NFILES][4096];
    size_t nstaged = 0;
    static const char *const json_rel[5] = {"model_index.json", "unet/config.json", "vae/config.json",
                                            "text_encoder/config.json", "scheduler/scheduler_config.json"};
    for (int k = 0; k < NFILES; k++) {
        char rel[128];
        if (k < ST_SD_COMPONENTS)
            snprintf(rel, sizeof rel, "%s/%s", comp_dir[k], comp_file[k]);
        else
            snprintf(rel, sizeof rel, "%s", json_rel[k - ST_SD_COMPONENTS]);
        snprintf(final[k], sizeof final[k], "%s/%s", outdir, rel);
        char *slash = strrchr(rel, '/');
        if (slash)
            snprintf(staged[k], sizeof staged[k], "%s/%.*s/.%s.%ld.part", outdir, (int)(slash - rel),
                     rel, slash + 1, (long)getpid());
        else
            snprintf(staged[k], sizeof staged[k], "%s/.%s.%ld.part", outdir, rel, (long)getpid());
    }
    static const char *const subdirs[] = {"unet", "vae", "text_encoder", "scheduler"};
    char dirs[5][4096];
    bool made[5] = {false, false, false, false, false};
    snprintf(dirs[0], sizeof dirs[0], "%s", outdir);
    for (size_t k = 0; k < 4; k++)
        snprintf(dirs[k + 1], sizeof dirs[k + 1], "%s/%s", outdir, subdirs[k]);
    for (size_t k = 0; k < 5 && !rc; k++)
        rc = make_dir(dirs[k], &made[k], err);
    for (int c = 0; c < ST_SD_COMPONENTS && !rc; c++) {
        st_writer *w = st_writer_new();
        if (!w) {
            rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
            break;
        }
        rc = st_writer_set_metadata(w, "format", 6, "pt", 2, err);
        for (size_t i = 0; i < nsrc && !rc; i++)
            if (srcs[i].comp == c)
                rc = st_writer_add_stream(w, srcs[i].name, strlen(srcs[i].name), srcs[i].t->dtype,
                                          srcs[i].shape, srcs[i].rank, st_tensor_nbytes(srcs[i].t),
                                          read_src, &srcs[i], err);
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
    char unet_config[sizeof unet_config_fmt + 32];
    snprintf(unet_config, sizeof unet_config, unet_config_fmt, in_channels ? in_channels : 4);
    const char *texts[5] = {model_index_json, unet_config, vae_config_json, te_config_json,
                            scheduler_config_json};
    for (int k = 0; k < 5 && !rc; k++) {
        rc = write_text_file(staged[ST_SD_COMPONENTS + k], texts[k], err);
        if (!rc)
            staged_note(&temp_only, staged[ST_SD_COMPONENTS + k], true);
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
        for (size_t k = 5; k-- > 0;)
            if (made[k])
                rmdir(dirs[k]);
    }
    free_srcs(srcs, nsrc);
    if (!rc && left_out)
        *left_out = dropped;
    return rc;
}
