/* A1111's checkpoint merger (modules/extras.py, run_modelmerger) on
 * safetensors files, streaming: every output tensor is computed chunk by
 * chunk inside the writer's read callback, so memory is a few fixed
 * buffers whatever the model size.
 *
 * The rules followed, as A1111 has them:
 *  - the output has A's tensors, in A's dtypes; a tensor is merged when
 *    its name contains "model" and B has it (tensors only in B are
 *    ignored); the others are A's unchanged. The CLIP position_ids
 *    (cond_stage_model.transformer.text_model.embeddings.position_ids)
 *    are never merged (A1111's checkpoint_dict_skip_on_merge).
 *  - weighted sum: (1 - M) * A + M * B; add difference: A + M * (B - C),
 *    where a tensor missing from C contributes a zero difference.
 *  - inpainting (9 input channels) or instruct-pix2pix (8) A with a normal
 *    B (4): shapes that differ only in dimension 1 merge the first 4
 *    channels and keep A's others; a normal A with such a B is refused.
 *  - a VAE baked in replaces first_stage_model.K (sd_vae.load_vae_dict's
 *    keys); a discard regex drops names.
 * Arithmetic is in float32 (inputs decoded by st_convert); the output keeps
 * A's dtype unless a dtype is given. Metadata: A's, B's, C's (later wins),
 * then format=pt and A1111's sd_merge_recipe and sd_merge_models (the
 * inputs' SHA-256, which takes a read of each).
 *
 * An input is an st_file (st_merge's plain files: unchanged tensors move
 * by copy_file_range) or an st_model (an index or a folder, or any input
 * of st_merge_models: every read goes through st_model_tensor_read); the
 * in_* helpers below read either, so the rules are written once. */
#include "common/jsonval.h"
#include "sd/sd_input.h"

#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK ((size_t)1 << 18) /* elements per step */
#define VAE_INPUT 3             /* st_merge_report.failed_input of the VAE */

/* Tensor names A1111 never merges (extras.py checkpoint_dict_skip_on_merge). */
static const char *const skip_on_merge[] = {
    "cond_stage_model.transformer.text_model.embeddings.position_ids",
};

typedef enum plan_kind {
    PLAN_COPY,     /* a source tensor's bytes unchanged (A's, or the VAE's) */
    PLAN_CONVERT,  /* a source tensor's values in another dtype */
    PLAN_MERGE,    /* same shapes */
    PLAN_CHANNELS  /* A has more channels in dimension 1 than B */
} plan_kind;

typedef struct merge_job merge_job;

typedef struct plan {
    merge_job *job;
    plan_kind kind;
    const st_tensor *a, *b, *c; /* c NULL: weighted, or a zero difference */
    st_dtype out;
    uint64_t row_a, row_b;      /* PLAN_CHANNELS: elements per dimension-0 row */
    st_op_source copy;          /* PLAN_COPY / PLAN_CONVERT: where from */
    bool discard;               /* the discard regex matched: not written */
} plan;

struct merge_job {
    st_op_input in[4];          /* A, B, C, the VAE (file and model NULL: absent) */
    const st_model *model[4];   /* the input when it is a model, else NULL */
    const char *vae_name;       /* for the recipe; NULL: no VAE */
    size_t ninputs;
    const st_merge_options *opt;
    bool add_diff;
    float wa, wb, m; /* the multipliers in float32, as torch applies them */
    /* scratch */
    unsigned char *raw;
    float *fa, *fb, *fc, *fo;
    unsigned char *obuf;
};

/* ---- an input, a file or a model ---- */

static bool present(const merge_job *job, size_t i)
{
    return job->in[i].file || job->model[i];
}

/* A model of several files (opened from an index): recorded per shard. */
static bool sharded(const merge_job *job, size_t i)
{
    return job->model[i] && st_model_index_path(job->model[i]);
}

/* The file an input's name comes from: the file, a sharded model's
 * index, a single-file model's file. */
static const char *in_name_path(const merge_job *job, size_t i)
{
    const st_model *m = job->model[i];
    if (!m)
        return job->in[i].path;
    return st_model_index_path(m) ? st_model_index_path(m) : st_model_shard_path(m, 0);
}

static bool name_has_model(const st_tensor *t)
{
    return memmem(t->name, t->name_len, "model", 5) != NULL;
}

static bool skipped(const st_tensor *t)
{
    for (size_t i = 0; i < sizeof skip_on_merge / sizeof skip_on_merge[0]; i++)
        if (strlen(skip_on_merge[i]) == t->name_len &&
            memcmp(skip_on_merge[i], t->name, t->name_len) == 0)
            return true;
    return false;
}

/* Floating kinds whose values merge meaningfully: whole-byte elements,
 * not the block-scale format F8_E8M0. */
static bool mergeable(st_dtype d)
{
    return st_dtype_is_float(d) && st_dtype_bits(d) >= 8 && d != ST_F8_E8M0 &&
           st_convert_supported(d, ST_F32);
}

/* Shapes equal but for dimension 1 (A1111: a.shape[0:1] + a.shape[2:]). */
static bool same_but_channels(const st_tensor *x, const st_tensor *y)
{
    if (x->rank != y->rank || x->rank < 2)
        return false;
    for (uint32_t i = 0; i < x->rank; i++)
        if (i != 1 && x->shape[i] != y->shape[i])
            return false;
    return true;
}

/* Reads elements [e, e + k) of input tensor t as float32. */
static int read_f32(merge_job *job, st_op_input *in, const st_tensor *t, uint64_t e, size_t k,
                    float *dst)
{
    size_t eb = st_dtype_bits(t->dtype) / 8;
    st_error err;
    memset(&err, 0, sizeof err);
    int rc = sd_in_read(in, job->model[in - job->in], t, e * eb, job->raw, k * eb);
    if (rc != ST_OK)
        return rc;
    rc = st_convert(ST_F32, dst, t->dtype, job->raw, k, 0, &err);
    return st_op_input_fail(in, rc, &err);
}

/* Merged values of A-elements [e, e + k) whose B (and C) elements start
 * at eb. */
static int merge_span(plan *p, uint64_t e, uint64_t eb, size_t k, float *out)
{
    merge_job *job = p->job;
    int rc = read_f32(job, &job->in[0], p->a, e, k, job->fa);
    if (rc == ST_OK)
        rc = read_f32(job, &job->in[1], p->b, eb, k, job->fb);
    if (rc == ST_OK && p->c)
        rc = read_f32(job, &job->in[2], p->c, eb, k, job->fc);
    if (rc != ST_OK)
        return rc;
    const float *a = job->fa, *b = job->fb, *c = job->fc;
    if (!job->add_diff) {
        for (size_t i = 0; i < k; i++)
            out[i] = job->wa * a[i] + job->wb * b[i];
    } else if (p->c) {
        for (size_t i = 0; i < k; i++) {
            float d = b[i] - c[i];
            out[i] = a[i] + job->m * d;
        }
    } else {
        /* B - C where C lacks the tensor is a zero difference: A + M * 0. */
        for (size_t i = 0; i < k; i++)
            out[i] = a[i] + job->m * 0.0f;
    }
    return ST_OK;
}

/* Output values of elements [e, e + k) as float32 (k <= CHUNK). */
static int compute(plan *p, uint64_t e, size_t k, float *out)
{
    merge_job *job = p->job;
    if (p->kind == PLAN_MERGE)
        return merge_span(p, e, e, k, out);
    /* PLAN_CHANNELS: per row of A, the first row_b elements merge with B's
     * row, the rest are A's. */
    while (k) {
        uint64_t row = e / p->row_a, pos = e % p->row_a;
        size_t n;
        int rc;
        if (pos < p->row_b) {
            uint64_t left = p->row_b - pos;
            n = left < k ? (size_t)left : k;
            rc = merge_span(p, e, row * p->row_b + pos, n, out);
        } else {
            uint64_t left = p->row_a - pos;
            n = left < k ? (size_t)left : k;
            rc = read_f32(job, &job->in[0], p->a, e, n, job->fa);
            if (rc == ST_OK)
                memcpy(out, job->fa, n * sizeof *out);
        }
        if (rc != ST_OK)
            return rc;
        out += n;
        e += n;
        k -= n;
    }
    return ST_OK;
}

/* st_read_fn of merged and converted tensors: output bytes [offset,
 * offset + len), in pieces of any size; elements cut by a piece boundary
 * are computed again for the next piece. */
static int merge_read(void *ctx, uint64_t offset, void *buf, size_t len)
{
    plan *p = ctx;
    merge_job *job = p->job;
    size_t ob = st_dtype_bits(p->out) / 8;
    unsigned char *dst = buf;
    st_error err;
    memset(&err, 0, sizeof err);
    while (len) {
        uint64_t e = offset / ob;
        size_t skip = (size_t)(offset % ob);
        uint64_t left = p->a->nelements - e;
        size_t k = left < CHUNK ? (size_t)left : CHUNK;
        uint64_t need = ((uint64_t)skip + len + ob - 1) / ob; /* elements this piece needs */
        if (need < k)
            k = (size_t)need;
        int rc;
        if (p->kind == PLAN_CONVERT) {
            const st_tensor *t = p->copy.t;
            size_t ib = st_dtype_bits(t->dtype) / 8;
            rc = sd_in_read(p->copy.in, job->model[p->copy.in - job->in], t, e * ib, job->raw,
                            k * ib);
            if (rc != ST_OK)
                return rc;
            rc = st_convert(p->out, job->obuf, t->dtype, job->raw, k, 0, &err);
            if (rc != ST_OK)
                return st_op_input_fail(p->copy.in, rc, &err);
        } else {
            rc = compute(p, e, k, job->fo);
            if (rc != ST_OK)
                return rc;
            rc = st_convert(p->out, job->obuf, ST_F32, job->fo, k, 0, &err);
            if (rc != ST_OK)
                return st_op_input_fail(&job->in[0], rc, &err);
        }
        size_t have = k * ob - skip;
        size_t take = have < len ? have : len;
        memcpy(dst, job->obuf + skip, take);
        dst += take;
        offset += take;
        len -= take;
    }
    return ST_OK;
}

static int tensor_error(st_error *err, const st_tensor *t, const char *what)
{
    char q[160];
    st_quote_name(q, sizeof q, t->name, t->name_len);
    return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "tensor %s: %s", q, what);
}

/* Decides how each of A's tensors is written. */
static int plan_all(merge_job *job, plan *plans, st_merge_report *rep, st_error *err)
{
    const st_merge_options *o = job->opt;
    bool C = job->add_diff && present(job, 2);
    size_t n = sd_in_count(&job->in[0], job->model[0]);
    for (size_t i = 0; i < n; i++) {
        plan *p = &plans[i];
        p->job = job;
        p->a = sd_in_at(&job->in[0], job->model[0], i);
        p->copy.in = &job->in[0];
        p->copy.t = p->a;
        p->out = o->set_dtype && mergeable(p->a->dtype) ? o->dtype : p->a->dtype;
        p->kind = p->out == p->a->dtype ? PLAN_COPY : PLAN_CONVERT;
        if (!name_has_model(p->a) || skipped(p->a))
            continue;
        p->b = sd_in_find(&job->in[1], job->model[1], p->a->name, p->a->name_len);
        if (!p->b)
            continue;
        if (!mergeable(p->a->dtype) || !mergeable(p->b->dtype))
            continue; /* integer tensors and the like: A's */
        if (p->a->nelements == 0)
            continue; /* nothing to compute (and no rows to divide by) */
        if (C) {
            p->c = sd_in_find(&job->in[2], job->model[2], p->a->name, p->a->name_len);
            if (p->c && !st_op_same_shape(p->b, p->c))
                return tensor_error(err, p->a, "B and C have different shapes");
            if (p->c && !mergeable(p->c->dtype))
                return tensor_error(err, p->a, "C's dtype cannot be merged");
        }
        if (st_op_same_shape(p->a, p->b)) {
            p->kind = PLAN_MERGE;
        } else if (same_but_channels(p->a, p->b)) {
            uint64_t ca = p->a->shape[1], cb = p->b->shape[1];
            if (ca == 4 && cb == 9)
                return tensor_error(err, p->a, "when merging an inpainting model with a normal "
                                               "one, A must be the inpainting model");
            if (ca == 4 && cb == 8)
                return tensor_error(err, p->a, "when merging an instruct-pix2pix model with a "
                                               "normal one, A must be the instruct-pix2pix model");
            if (!((ca == 9 || ca == 8) && cb == 4)) {
                char msg[128];
                snprintf(msg, sizeof msg,
                         "bad dimensions for a merged layer: A has %llu channels, B %llu",
                         (unsigned long long)ca, (unsigned long long)cb);
                return tensor_error(err, p->a, msg);
            }
            p->kind = PLAN_CHANNELS;
            p->row_a = p->a->nelements / p->a->shape[0];
            p->row_b = p->b->nelements / p->b->shape[0];
            if (ca == 9)
                rep->inpainting = 1;
            else
                rep->pix2pix = 1;
        } else {
            char sa[160], sb[160], msg[400];
            st_op_shape_text(p->a, sa, sizeof sa);
            st_op_shape_text(p->b, sb, sizeof sb);
            snprintf(msg, sizeof msg,
                     "shapes differ: A %s, B %s (models of different architectures?)", sa, sb);
            return tensor_error(err, p->a, msg);
        }
        rep->merged++;
    }
    return ST_OK;
}

/* A1111's "bake in VAE": every tensor K of the VAE file (but loss.* and the
 * EMA counters, sd_vae.load_vae_dict) replaces A's first_stage_model.K when
 * A has it, merged or not, in the VAE's dtype unless a dtype is given.
 * Unlike A1111, a shape that differs is an error. */
static int bake_vae(merge_job *job, plan *plans, size_t n, st_merge_report *rep, st_error *err)
{
    static const char prefix[] = "first_stage_model.";
    const st_merge_options *o = job->opt;
    size_t nv = sd_in_count(&job->in[VAE_INPUT], job->model[VAE_INPUT]);
    for (size_t i = 0; i < nv; i++) {
        const st_tensor *v = sd_in_at(&job->in[VAE_INPUT], job->model[VAE_INPUT], i);
        if ((v->name_len >= 4 && memcmp(v->name, "loss", 4) == 0) ||
            strcmp(v->name, "model_ema.decay") == 0 || strcmp(v->name, "model_ema.num_updates") == 0)
            continue;
        size_t len = sizeof prefix - 1 + v->name_len;
        char *key = malloc(len + 1);
        if (!key)
            return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
        memcpy(key, prefix, sizeof prefix - 1);
        memcpy(key + sizeof prefix - 1, v->name, v->name_len);
        key[len] = 0;
        const st_tensor *a = sd_in_find(&job->in[0], job->model[0], key, len);
        free(key);
        if (!a)
            continue;
        if (!st_op_same_shape(a, v))
            return tensor_error(err, a, "the VAE's tensor has another shape");
        for (size_t j = 0; j < n; j++) {
            plan *p = &plans[j];
            if (p->a != a)
                continue;
            p->copy.in = &job->in[VAE_INPUT];
            p->copy.t = v;
            p->out = o->set_dtype && mergeable(v->dtype) ? o->dtype : v->dtype;
            p->kind = p->out == v->dtype ? PLAN_COPY : PLAN_CONVERT;
            rep->baked++;
            break;
        }
    }
    return ST_OK;
}

/* ---- metadata: A1111's sd_merge_recipe and sd_merge_models ---- */

/* An input's digests: one file's, or each shard's of a sharded model. */
typedef struct input_hash {
    size_t n;
    char (*sha256)[ST_HASH_TEXT_MAX];
    char (*legacy)[ST_HASH_TEXT_MAX];
} input_hash;

/* sd_merge_models members, in insertion order, replaced in place on a
 * repeated key (Python's dict.update). */
typedef struct members {
    st_span *keys;   /* raw JSON strings */
    char **values;   /* raw JSON, malloc'ed */
    size_t n, cap;
    char **owned_keys;
} members;

#define MAX_MERGE_MODELS 10000

static bool members_put(members *m, const char *k, size_t kl, const char *v, size_t vl)
{
    for (size_t i = 0; i < m->n; i++)
        if (m->keys[i].n == kl && memcmp(m->keys[i].s, k, kl) == 0) {
            char *nv = strndup(v, vl);
            if (!nv)
                return false;
            free(m->values[i]);
            m->values[i] = nv;
            return true;
        }
    if (m->n >= MAX_MERGE_MODELS)
        return true; /* a hostile history: the rest is left out */
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 8;
        st_span *nk = realloc(m->keys, cap * sizeof *nk);
        if (nk)
            m->keys = nk;
        char **nv = realloc(m->values, cap * sizeof *nv);
        if (nv)
            m->values = nv;
        char **no = realloc(m->owned_keys, cap * sizeof *no);
        if (no)
            m->owned_keys = no;
        if (!nk || !nv || !no)
            return false;
        m->cap = cap;
    }
    char *ko = strndup(k, kl), *vo = strndup(v, vl);
    if (!ko || !vo) {
        free(ko);
        free(vo);
        return false;
    }
    m->owned_keys[m->n] = ko;
    m->keys[m->n] = (st_span){ko, kl};
    m->values[m->n] = vo;
    m->n++;
    return true;
}

static void members_free(members *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->owned_keys[i]);
        free(m->values[i]);
    }
    free(m->keys);
    free(m->values);
    free(m->owned_keys);
}

static void json_cstr(FILE *o, const char *s)
{
    if (s)
        st_jv_write_string(o, s, strlen(s));
    else
        fputs("null", o);
}

/* A metadata value as JSON: embedded when it is a JSON object (A1111 reads
 * such values parsed), a JSON string otherwise, null when absent. */
static void json_meta_value(FILE *o, const merge_job *job, size_t i, const char *key)
{
    size_t vl;
    const char *v = sd_in_meta_get(&job->in[i], job->model[i], key, &vl);
    if (!v)
        fputs("null", o);
    else if (st_jv_is_container(v, vl))
        fwrite(v, 1, vl, o);
    else
        st_jv_write_string(o, v, vl);
}

/* One sd_merge_models entry: what A1111 records of a file it merged. */
static bool put_entry(members *m, const merge_job *job, size_t i, const char *name,
                      const char *sha256, const char *legacy)
{
    char *val = NULL, *key = NULL;
    size_t vlen = 0, klen = 0;
    FILE *o = open_memstream(&val, &vlen);
    if (!o)
        return false;
    fputs("{\"name\": ", o);
    json_cstr(o, name);
    fputs(", \"legacy_hash\": ", o);
    json_cstr(o, legacy);
    fputs(", \"sd_merge_recipe\": ", o);
    json_meta_value(o, job, i, "sd_merge_recipe");
    fputs("}", o);
    fclose(o);
    FILE *ko = open_memstream(&key, &klen);
    if (!ko) {
        free(val);
        return false;
    }
    json_cstr(ko, sha256);
    fclose(ko);
    bool ok = val && key && members_put(m, key, klen, val, vlen);
    free(val);
    free(key);
    return ok;
}

static char *build_merge_models(merge_job *job, const input_hash *h)
{
    members m;
    memset(&m, 0, sizeof m);
    char *out = NULL;
    for (size_t i = 0; i < job->ninputs; i++) {
        for (size_t s = 0; s < h[i].n; s++) {
            const char *name = sharded(job, i) ? st_model_shard_name(job->model[i], s)
                                               : st_op_base_name(in_name_path(job, i));
            if (!put_entry(&m, job, i, name, h[i].sha256[s], h[i].legacy[s]))
                goto fail;
        }
        size_t hl;
        const char *hist = sd_in_meta_get(&job->in[i], job->model[i], "sd_merge_models", &hl);
        if (hist && st_jv_valid(hist, hl)) {
            size_t pos = 0;
            st_span k, v;
            while (st_jv_object_next(hist, hl, &pos, &k, &v))
                if (!members_put(&m, k.s, k.n, v.s, v.n))
                    goto fail;
        }
    }
    size_t olen;
    FILE *o = open_memstream(&out, &olen);
    if (!o)
        goto fail;
    fputc('{', o);
    for (size_t i = 0; i < m.n; i++) {
        if (i)
            fputs(", ", o);
        fwrite(m.keys[i].s, 1, m.keys[i].n, o);
        fputs(": ", o);
        fputs(m.values[i], o);
    }
    fputc('}', o);
    fclose(o);
    members_free(&m);
    return out;
fail:
    members_free(&m);
    return NULL;
}

/* A recipe's model hash: one file's SHA-256, a sharded model's list. */
static void json_model_hash(FILE *o, const merge_job *job, const input_hash *h, size_t i)
{
    if (i >= job->ninputs) {
        fputs("null", o);
        return;
    }
    if (!sharded(job, i)) {
        json_cstr(o, h[i].sha256[0]);
        return;
    }
    fputc('[', o);
    for (size_t s = 0; s < h[i].n; s++) {
        if (s)
            fputs(", ", o);
        json_cstr(o, h[i].sha256[s]);
    }
    fputc(']', o);
}

static char *build_recipe(const merge_job *job, const input_hash *h, const char *out_path,
                          const st_merge_report *rep)
{
    const st_merge_options *opt = job->opt;
    char *s = NULL;
    size_t len;
    FILE *o = open_memstream(&s, &len);
    if (!o)
        return NULL;
    char num[40];
    fputs("{\"type\": \"safetensors-c\", \"primary_model_hash\": ", o);
    json_model_hash(o, job, h, 0);
    fputs(", \"secondary_model_hash\": ", o);
    json_model_hash(o, job, h, 1);
    fputs(", \"tertiary_model_hash\": ", o);
    json_model_hash(o, job, h, 2);
    fprintf(o, ", \"interp_method\": \"%s\"", job->add_diff ? "Add difference" : "Weighted sum");
    fprintf(o, ", \"multiplier\": %s", st_format_double(opt->alpha, num, sizeof num));
    fprintf(o, ", \"save_as_half\": %s", opt->set_dtype && opt->dtype == ST_F16 ? "true" : "false");
    /* custom_name: the output's name without its extension */
    const char *b = st_op_base_name(out_path);
    const char *dot = strrchr(b, '.');
    fputs(", \"custom_name\": ", o);
    st_jv_write_string(o, b, dot && dot != b ? (size_t)(dot - b) : strlen(b));
    fputs(", \"config_source\": 0, \"bake_in_vae\": ", o);
    json_cstr(o, job->vae_name ? st_op_base_name(job->vae_name) : "None");
    fputs(", \"discard_weights\": ", o);
    json_cstr(o, opt->discard ? opt->discard : "");
    fprintf(o, ", \"is_inpainting\": %s, \"is_instruct_pix2pix\": %s}",
            rep->inpainting ? "true" : "false", rep->pix2pix ? "true" : "false");
    fclose(o);
    return s;
}

static void input_hash_free(input_hash *h)
{
    free(h->sha256);
    free(h->legacy);
}

/* SHA-256 and autov1 of each input's file, or of each of its shards. */
static int hash_input(merge_job *job, size_t i, input_hash *h, st_error *err)
{
    const st_model *m = sharded(job, i) ? job->model[i] : NULL;
    size_t n = m ? st_model_shard_count(m) : 1;
    st_hashes *hs = calloc(n, sizeof *hs);
    h->sha256 = calloc(n, sizeof *h->sha256);
    h->legacy = calloc(n, sizeof *h->legacy);
    h->n = n;
    int rc;
    if (!hs || !h->sha256 || !h->legacy)
        rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    else if (m)
        rc = st_model_hash(m, ST_HASH_SHA256 | ST_HASH_AUTOV1, NULL, hs, NULL, err);
    else
        rc = st_hash_path(in_name_path(job, i), ST_HASH_SHA256 | ST_HASH_AUTOV1, NULL, hs, err);
    for (size_t s = 0; rc == ST_OK && s < n; s++) {
        rc = st_hash_text(&hs[s], ST_HASH_SHA256, ST_HASH_STYLE_PLAIN, h->sha256[s]);
        if (rc == ST_OK)
            rc = st_hash_text(&hs[s], ST_HASH_AUTOV1, ST_HASH_STYLE_PLAIN, h->legacy[s]);
    }
    free(hs);
    return rc;
}

static int hash_inputs(merge_job *job, input_hash *h, st_merge_report *rep, st_error *err)
{
    for (size_t i = 0; i < job->ninputs; i++) {
        int rc = hash_input(job, i, &h[i], err);
        if (rc != ST_OK) {
            rep->failed_input = (int)i;
            if (err && err->code == ST_OK)
                st_fail(err, rc, ST_NO_OFFSET, "cannot hash '%s'", job->in[i].path);
            return rc;
        }
    }
    return ST_OK;
}

static int check_options(const void *inputs, size_t ninputs, const char *out_path,
                         const st_merge_options *o, st_error *err)
{
    if (!inputs || !out_path || !o)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_merge: NULL argument");
    if (o->mode != ST_MERGE_WEIGHTED && o->mode != ST_MERGE_ADD_DIFF)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_merge: unknown mode %d", (int)o->mode);
    if (o->mode == ST_MERGE_ADD_DIFF && ninputs != 3)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "add-diff needs three models A B C");
    if (o->mode == ST_MERGE_WEIGHTED && ninputs != 2)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET,
                       "a weighted sum takes two models (C is for add-diff)");
    if (!isfinite(o->alpha))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "the multiplier is not a finite number");
    if (o->set_dtype && o->dtype != ST_F16 && o->dtype != ST_BF16 && o->dtype != ST_F32 &&
        o->dtype != ST_F64)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "merge writes F16, BF16, F32 or F64, not %s",
                       st_dtype_name(o->dtype) ? st_dtype_name(o->dtype) : "that dtype");
    if (o->discard) {
        /* before any input is opened, as a usage error should be */
        regex_t re;
        int r = regcomp(&re, o->discard, REG_EXTENDED | REG_NOSUB);
        if (r != 0) {
            char msg[128];
            regerror(r, &re, msg, sizeof msg);
            return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "discard pattern '%s': %s", o->discard,
                           msg);
        }
        regfree(&re);
    }
    return ST_OK;
}

/* st_merge's inputs: plain files with st_open, as they always were, an
 * index or a folder with st_model_open. */
static int open_inputs(merge_job *job, st_model **owned, st_merge_report *rep, st_error *err)
{
    for (size_t i = 0; i < 4; i++) {
        const char *path = job->in[i].path;
        if (!path)
            continue;
        int rc = sd_is_model_path(path) ? st_model_open(path, 0, &owned[i], err)
                                  : st_open(path, ST_OPEN_PREAD, &job->in[i].file, err);
        job->model[i] = owned[i];
        if (rc != ST_OK) {
            rep->failed_input = (int)i;
            return rc;
        }
    }
    return ST_OK;
}

/* OUT may be no file of an input: not a file, nor a shard or an index. */
static int check_output(const merge_job *job, const char *out_path, st_error *err)
{
    for (size_t i = 0; i < 4; i++) {
        if (!present(job, i))
            continue;
        bool same = sd_in_is_file_of(&job->in[i], job->model[i], out_path);
        if (same)
            return st_fail(err, ST_E_ARG, ST_NO_OFFSET,
                           "OUT '%s' is %s; inputs are never overwritten", out_path,
                           i == VAE_INPUT ? "the VAE file" : "an input file");
    }
    return ST_OK;
}

/* st_read_fn of a tensor copied unchanged from a model input. */
static int model_copy_read(void *ctx, uint64_t offset, void *buf, size_t len)
{
    plan *p = ctx;
    return sd_in_read(p->copy.in, p->job->model[p->copy.in - p->job->in], p->copy.t, offset, buf,
                      len);
}

static int add_tensors(merge_job *job, plan *plans, size_t n, st_writer *w, st_error *err)
{
    for (size_t i = 0; i < n; i++) {
        plan *p = &plans[i];
        const st_tensor *a = p->a;
        if (p->discard)
            continue;
        int rc;
        if (p->kind == PLAN_COPY && p->copy.in->file)
            rc = st_op_add_copy(w, a->name, a->name_len, &p->copy, err);
        else if (p->kind == PLAN_COPY)
            rc = st_writer_add_stream(w, a->name, a->name_len, a->dtype, a->shape, a->rank,
                                      st_tensor_nbytes(p->copy.t), model_copy_read, p, err);
        else
            rc = st_writer_add_stream(w, a->name, a->name_len, p->out, a->shape, a->rank,
                                      a->nelements * (st_dtype_bits(p->out) / 8), merge_read, p,
                                      err);
        if (rc != ST_OK)
            return rc;
    }
    (void)job;
    return ST_OK;
}

static int set_metadata(merge_job *job, st_writer *w, const char *out_path,
                        st_merge_report *rep, st_error *err)
{
    /* A's, B's, C's (later wins), then A1111's own keys. */
    for (size_t f = 0; f < job->ninputs; f++) {
        size_t nm = sd_in_meta_count(&job->in[f], job->model[f]);
        for (size_t i = 0; i < nm; i++) {
            const char *k, *v;
            size_t kl, vl;
            if (sd_in_meta_at(&job->in[f], job->model[f], i, &k, &kl, &v, &vl) != ST_OK)
                continue;
            int rc = st_writer_set_metadata(w, k, kl, v, vl, err);
            if (rc != ST_OK)
                return rc;
        }
    }
    input_hash h[3];
    memset(h, 0, sizeof h);
    int rc = hash_inputs(job, h, rep, err);
    char *recipe = NULL, *models = NULL;
    if (rc == ST_OK) {
        recipe = build_recipe(job, h, out_path, rep);
        models = build_merge_models(job, h);
        if (!recipe || !models)
            rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    }
    if (rc == ST_OK)
        rc = st_writer_set_metadata(w, "format", 6, "pt", 2, err);
    if (rc == ST_OK)
        rc = st_writer_set_metadata(w, "sd_merge_recipe", 15, recipe, strlen(recipe), err);
    if (rc == ST_OK)
        rc = st_writer_set_metadata(w, "sd_merge_models", 15, models, strlen(models), err);
    free(recipe);
    free(models);
    for (size_t i = 0; i < 3; i++)
        input_hash_free(&h[i]);
    return rc;
}

static void job_init(merge_job *job, size_t ninputs, const st_merge_options *opt)
{
    memset(job, 0, sizeof *job);
    job->opt = opt;
    job->ninputs = ninputs;
    job->add_diff = opt->mode == ST_MERGE_ADD_DIFF;
    job->wa = (float)(1.0 - opt->alpha);
    job->wb = (float)opt->alpha;
    job->m = (float)opt->alpha;
}

/* The merge itself, once the inputs are open. */
static int merge_run(merge_job *job, const char *out_path, st_merge_report *rep, st_error *err)
{
    const st_merge_options *opt = job->opt;
    regex_t re;
    bool have_re = false;
    st_writer *w = NULL;
    plan *plans = NULL;
    int rc = check_output(job, out_path, err);
    if (rc != ST_OK)
        return rc;
    if (opt->discard) {
        int r = regcomp(&re, opt->discard, REG_EXTENDED | REG_NOSUB);
        if (r != 0) {
            char msg[128];
            regerror(r, &re, msg, sizeof msg);
            return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "discard pattern '%s': %s", opt->discard,
                           msg);
        }
        have_re = true;
    }
    size_t n = sd_in_count(&job->in[0], job->model[0]);
    rep->tensors = n;
    plans = calloc(n ? n : 1, sizeof *plans);
    w = st_writer_new();
    job->raw = malloc(CHUNK * 8);
    job->fa = malloc(CHUNK * sizeof(float));
    job->fb = malloc(CHUNK * sizeof(float));
    job->fc = malloc(CHUNK * sizeof(float));
    job->fo = malloc(CHUNK * sizeof(float));
    job->obuf = malloc(CHUNK * 8);
    if (!plans || !w || !job->raw || !job->fa || !job->fb || !job->fc || !job->fo ||
        !job->obuf) {
        rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
        goto done;
    }
    rc = plan_all(job, plans, rep, err);
    if (rc == ST_OK && present(job, VAE_INPUT))
        rc = bake_vae(job, plans, n, rep, err);
    if (rc != ST_OK)
        goto done;
    /* A1111's "discard weights": a regular expression searched in each
     * output name (POSIX extended syntax here; Python's re there). */
    if (have_re)
        for (size_t i = 0; i < n; i++)
            if (regexec(&re, plans[i].a->name, 0, NULL, 0) == 0) {
                plans[i].discard = true;
                rep->discarded++;
            }
    rep->written = n - rep->discarded;
    rc = add_tensors(job, plans, n, w, err);
    if (rc == ST_OK)
        rc = set_metadata(job, w, out_path, rep, err);
    if (rc != ST_OK)
        goto done;
    rep->output_size = st_writer_output_size(w);
    st_writer_set_hooks(w, &opt->hooks);
    rc = st_op_write(w, out_path, job->in, 4, &rep->failed_input, err);
done:
    if (have_re)
        regfree(&re);
    free(plans);
    st_writer_free(w);
    free(job->raw);
    free(job->fa);
    free(job->fb);
    free(job->fc);
    free(job->fo);
    free(job->obuf);
    return rc;
}

int st_merge(const char *const *inputs, size_t ninputs, const char *out_path,
             const st_merge_options *opt, st_merge_report *report, st_error *err)
{
    st_merge_report rep;
    memset(&rep, 0, sizeof rep);
    rep.failed_input = -1;
    int rc = check_options(inputs, ninputs, out_path, opt, err);
    for (size_t i = 0; rc == ST_OK && i < ninputs; i++)
        if (!inputs[i])
            rc = st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_merge: NULL input path");
    if (rc != ST_OK) {
        if (report)
            *report = rep;
        return rc;
    }
    merge_job job;
    job_init(&job, ninputs, opt);
    for (size_t i = 0; i < ninputs; i++)
        job.in[i].path = inputs[i];
    job.in[VAE_INPUT].path = opt->vae_path;
    st_model *owned[4] = {NULL, NULL, NULL, NULL};
    rc = open_inputs(&job, owned, &rep, err);
    /* the VAE's file name, as st_merge_models gives it (a folder's file) */
    if (opt->vae_path)
        job.vae_name = job.model[VAE_INPUT] ? in_name_path(&job, VAE_INPUT) : opt->vae_path;
    if (rc == ST_OK)
        rc = merge_run(&job, out_path, &rep, err);
    for (size_t i = 0; i < 4; i++) {
        st_close(job.in[i].file);
        st_model_close(owned[i]);
    }
    if (report)
        *report = rep;
    return rc;
}

int st_merge_models(const st_model *const *inputs, size_t ninputs, const st_model *vae,
                    const char *out_path, const st_merge_options *opt, st_merge_report *report,
                    st_error *err)
{
    st_merge_report rep;
    memset(&rep, 0, sizeof rep);
    rep.failed_input = -1;
    int rc = check_options(inputs, ninputs, out_path, opt, err);
    for (size_t i = 0; rc == ST_OK && i < ninputs; i++)
        if (!inputs[i])
            rc = st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_merge_models: NULL input model");
    if (rc == ST_OK) {
        merge_job job;
        job_init(&job, ninputs, opt);
        for (size_t i = 0; i < ninputs; i++)
            job.model[i] = inputs[i];
        job.model[VAE_INPUT] = vae;
        for (size_t i = 0; i < 4; i++)
            if (job.model[i])
                job.in[i].path = in_name_path(&job, i);
        job.vae_name = vae ? job.in[VAE_INPUT].path : NULL;
        rc = merge_run(&job, out_path, &rep, err);
    }
    if (report)
        *report = rep;
    return rc;
}
