/* `safetensors merge`: A1111's checkpoint merger (modules/extras.py,
 * run_modelmerger) on safetensors files, streaming: every output tensor is
 * computed chunk by chunk inside the writer's read callback, so memory is
 * a few fixed buffers whatever the model size.
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
 *  - --vae bakes in a VAE (sd_vae.load_vae_dict's keys under
 *    first_stage_model.), --discard drops names matching a regex.
 * Arithmetic is in float32 (inputs decoded by st_convert); the output
 * keeps A's dtype unless --dtype. */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char usage[] =
    "Usage: " CLI_NAME " merge A B [C] -o OUT --alpha M [--mode weighted|add-diff]\n"
    "                   [--dtype TYPE] [--vae VAE] [--discard REGEX]\n"
    "\n"
    "Merge Stable Diffusion checkpoints as A1111's Checkpoint Merger does:\n"
    "  weighted   (1 - M) * A + M * B                  (A and B)\n"
    "  add-diff   A + M * (B - C)                      (A, B and C)\n"
    "Tensors whose name contains \"model\" and that B has are merged; A's other\n"
    "tensors are kept as they are; tensors only in B are left out. An\n"
    "inpainting (9 input channels) or instruct-pix2pix (8) A merges with a\n"
    "normal B on its first 4 channels. Computed in float32; each tensor keeps\n"
    "A's dtype unless --dtype. The metadata of A, B and C is carried over (in\n"
    "that order, later values win), with format=pt and A1111's sd_merge_recipe\n"
    "and sd_merge_models (the inputs' SHA-256, which takes a read of each).\n"
    "OUT is written to a temporary file, synced, then renamed.\n"
    "\n"
    "Options:\n"
    "  -o, --output OUT  the merged file (required; not one of the inputs)\n"
    "  --alpha M         the multiplier M (required), e.g. 0.3\n"
    "  --mode MODE       weighted (default) or add-diff\n"
    "  --dtype TYPE      write floating tensors as f16, bf16, f32 or f64\n"
    "  --vae VAE         bake in a VAE: its tensor K replaces first_stage_model.K\n"
    "  --discard REGEX   leave out tensors whose name matches REGEX (POSIX ERE,\n"
    "                    searched anywhere in the name)\n"
    "  -h, --help        show this help\n"
    "\n"
    "Exit status: 0 success, 1 invalid input file, 2 usage or I/O error,\n"
    "incompatible models.\n";

#define CHUNK ((size_t)1 << 18) /* elements per step */

/* Tensor names A1111 never merges (extras.py checkpoint_dict_skip_on_merge). */
static const char *const skip_on_merge[] = {
    "cond_stage_model.transformer.text_model.embeddings.position_ids",
};

typedef enum plan_kind {
    PLAN_COPY,     /* a source tensor's bytes unchanged (A's, or the VAE's) */
    PLAN_CONVERT,  /* a source tensor's values in another dtype (--dtype) */
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
    cli_copy_src copy;          /* PLAN_COPY / PLAN_CONVERT: where from */
    bool discard;               /* --discard matched: not written */
} plan;

struct merge_job {
    cli_input in[3];
    size_t ninputs;
    cli_input vae;   /* --vae (path NULL: none) */
    const char *discard; /* --discard REGEX, or NULL */
    regex_t discard_re;
    bool add_diff;
    double alpha;
    float wa, wb, m; /* the multipliers in float32, as torch applies them */
    /* scratch */
    unsigned char *raw;
    float *fa, *fb, *fc, *fo;
    unsigned char *obuf;
};

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
static int read_f32(merge_job *job, cli_input *in, const st_tensor *t, uint64_t e, size_t k,
                    float *dst)
{
    size_t eb = st_dtype_bits(t->dtype) / 8;
    st_error err;
    memset(&err, 0, sizeof err);
    int rc = st_tensor_read(in->file, t, e * eb, job->raw, k * eb, &err);
    if (rc == ST_OK)
        rc = st_convert(ST_F32, dst, t->dtype, job->raw, k, 0, &err);
    return cli_input_fail(in, rc, &err);
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
            rc = st_tensor_read(p->copy.in->file, t, e * ib, job->raw, k * ib, &err);
            if (rc == ST_OK)
                rc = st_convert(p->out, job->obuf, t->dtype, job->raw, k, 0, &err);
            if (rc != ST_OK)
                return cli_input_fail(p->copy.in, rc, &err);
        } else {
            rc = compute(p, e, k, job->fo);
            if (rc != ST_OK)
                return rc;
            rc = st_convert(p->out, job->obuf, ST_F32, job->fo, k, 0, &err);
            if (rc != ST_OK)
                return cli_input_fail(&job->in[0], rc, &err);
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

static void print_tensor_error(const char *what, const st_tensor *t)
{
    char *p = cli_printable(t->name, t->name_len);
    cli_errorf("invalid_argument: %s: %s", p ? p : "?", what);
    free(p);
}

/* Decides how each of A's tensors is written. Returns an exit code. */
static int plan_all(merge_job *job, plan *plans, bool has_dtype, st_dtype dtype,
                    size_t *merged, bool *inpainting, bool *pix2pix)
{
    st_file *A = job->in[0].file, *B = job->in[1].file;
    st_file *C = job->add_diff ? job->in[2].file : NULL;
    size_t n = st_tensor_count(A);
    *merged = 0;
    for (size_t i = 0; i < n; i++) {
        plan *p = &plans[i];
        p->job = job;
        p->a = st_tensor_at(A, i);
        p->copy.in = &job->in[0];
        p->copy.t = p->a;
        p->out = has_dtype && mergeable(p->a->dtype) ? dtype : p->a->dtype;
        p->kind = p->out == p->a->dtype ? PLAN_COPY : PLAN_CONVERT;
        if (!name_has_model(p->a) || skipped(p->a))
            continue;
        p->b = st_find(B, p->a->name, p->a->name_len);
        if (!p->b)
            continue;
        if (!mergeable(p->a->dtype) || !mergeable(p->b->dtype))
            continue; /* integer tensors and the like: A's */
        if (p->a->nelements == 0)
            continue; /* nothing to compute (and no rows to divide by) */
        if (C) {
            p->c = st_find(C, p->a->name, p->a->name_len);
            if (p->c && (!cli_same_shape(p->b, p->c) || !mergeable(p->c->dtype))) {
                print_tensor_error(!cli_same_shape(p->b, p->c) ? "B and C have different shapes"
                                                          : "C's dtype cannot be merged",
                                   p->a);
                return CLI_EXIT_ERROR;
            }
        }
        if (cli_same_shape(p->a, p->b)) {
            p->kind = PLAN_MERGE;
        } else if (same_but_channels(p->a, p->b)) {
            uint64_t ca = p->a->shape[1], cb = p->b->shape[1];
            if (ca == 4 && cb == 9) {
                print_tensor_error("when merging an inpainting model with a normal one, A must "
                                   "be the inpainting model",
                                   p->a);
                return CLI_EXIT_ERROR;
            }
            if (ca == 4 && cb == 8) {
                print_tensor_error("when merging an instruct-pix2pix model with a normal one, A "
                                   "must be the instruct-pix2pix model",
                                   p->a);
                return CLI_EXIT_ERROR;
            }
            if (!((ca == 9 || ca == 8) && cb == 4)) {
                char msg[128];
                snprintf(msg, sizeof msg, "bad dimensions for a merged layer: A has %llu "
                         "channels, B %llu",
                         (unsigned long long)ca, (unsigned long long)cb);
                print_tensor_error(msg, p->a);
                return CLI_EXIT_ERROR;
            }
            p->kind = PLAN_CHANNELS;
            p->row_a = p->a->nelements / p->a->shape[0];
            p->row_b = p->b->nelements / p->b->shape[0];
            if (ca == 9)
                *inpainting = true;
            else
                *pix2pix = true;
        } else {
            char *sa = cli_shape_text(p->a->shape, p->a->rank);
            char *sb = cli_shape_text(p->b->shape, p->b->rank);
            char msg[256];
            snprintf(msg, sizeof msg, "shapes differ: A %s, B %s (models of different "
                     "architectures?)",
                     sa ? sa : "?", sb ? sb : "?");
            free(sa);
            free(sb);
            print_tensor_error(msg, p->a);
            return CLI_EXIT_ERROR;
        }
        (*merged)++;
    }
    return CLI_EXIT_OK;
}

/* --vae: A1111's "bake in VAE": every tensor K of the VAE file (but
 * loss.* and the EMA counters, sd_vae.load_vae_dict) replaces A's
 * first_stage_model.K when A has it, merged or not, in the VAE's dtype
 * unless --dtype. Unlike A1111, a shape that differs is an error. */
static int bake_vae(merge_job *job, plan *plans, size_t n, bool has_dtype, st_dtype dtype,
                    size_t *baked)
{
    static const char prefix[] = "first_stage_model.";
    st_file *V = job->vae.file;
    size_t nv = st_tensor_count(V);
    *baked = 0;
    for (size_t i = 0; i < nv; i++) {
        const st_tensor *v = st_tensor_at(V, i);
        if ((v->name_len >= 4 && memcmp(v->name, "loss", 4) == 0) ||
            strcmp(v->name, "model_ema.decay") == 0 || strcmp(v->name, "model_ema.num_updates") == 0)
            continue;
        size_t len = sizeof prefix - 1 + v->name_len;
        char *key = malloc(len + 1);
        if (!key) {
            cli_errorf("nomem: out of memory");
            return CLI_EXIT_ERROR;
        }
        memcpy(key, prefix, sizeof prefix - 1);
        memcpy(key + sizeof prefix - 1, v->name, v->name_len);
        key[len] = 0;
        const st_tensor *a = st_find(job->in[0].file, key, len);
        free(key);
        if (!a)
            continue;
        if (!cli_same_shape(a, v)) {
            print_tensor_error("the VAE's tensor has another shape", a);
            return CLI_EXIT_ERROR;
        }
        for (size_t j = 0; j < n; j++) {
            plan *p = &plans[j];
            if (p->a != a)
                continue;
            p->copy.in = &job->vae;
            p->copy.t = v;
            p->out = has_dtype && mergeable(v->dtype) ? dtype : v->dtype;
            p->kind = p->out == v->dtype ? PLAN_COPY : PLAN_CONVERT;
            (*baked)++;
            break;
        }
    }
    return CLI_EXIT_OK;
}

/* --discard: A1111's "discard weights", a regular expression searched in
 * each output name (POSIX extended syntax here; Python's re there). */
static size_t discard(plan *plans, size_t n, const regex_t *re)
{
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        if (regexec(re, plans[i].a->name, 0, NULL, 0) == 0) {
            plans[i].discard = true;
            count++;
        }
    return count;
}

/* ---- metadata: A1111's sd_merge_recipe and sd_merge_models ---- */

typedef struct input_hash {
    char sha256[ST_HASH_TEXT_MAX];
    char legacy[ST_HASH_TEXT_MAX];
} input_hash;

/* sd_merge_models members, in insertion order, replaced in place on a
 * repeated key (Python's dict.update). */
typedef struct members {
    st_span *keys;  /* raw JSON strings */
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

/* A metadata value as JSON: embedded when it is a JSON object (A1111 reads
 * such values parsed), a JSON string otherwise, null when absent. */
static void json_meta_value(FILE *o, const st_file *f, const char *key)
{
    size_t vl;
    const char *v = st_metadata_get(f, key, strlen(key), &vl);
    if (!v)
        fputs("null", o);
    else if (st_jv_is_container(v, vl))
        fwrite(v, 1, vl, o);
    else
        cli_json_string(o, v, vl);
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static char *build_merge_models(merge_job *job, const input_hash *h)
{
    members m;
    memset(&m, 0, sizeof m);
    char *out = NULL;
    for (size_t i = 0; i < job->ninputs; i++) {
        st_file *f = job->in[i].file;
        char *val = NULL, *key = NULL;
        size_t vlen = 0, klen = 0;
        FILE *o = open_memstream(&val, &vlen);
        if (!o)
            goto fail;
        fputs("{\"name\": ", o);
        cli_json_cstr(o, base_name(job->in[i].path));
        fputs(", \"legacy_hash\": ", o);
        cli_json_cstr(o, h[i].legacy);
        fputs(", \"sd_merge_recipe\": ", o);
        json_meta_value(o, f, "sd_merge_recipe");
        fputs("}", o);
        fclose(o);
        FILE *ko = open_memstream(&key, &klen);
        if (!ko) {
            free(val);
            goto fail;
        }
        cli_json_cstr(ko, h[i].sha256);
        fclose(ko);
        bool ok = val && key && members_put(&m, key, klen, val, vlen);
        free(val);
        free(key);
        if (!ok)
            goto fail;
        size_t hl;
        const char *hist = st_metadata_get(f, "sd_merge_models", 15, &hl);
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

static char *build_recipe(const merge_job *job, const input_hash *h, const char *out_path,
                          bool half, bool inpainting, bool pix2pix)
{
    char *s = NULL;
    size_t len;
    FILE *o = open_memstream(&s, &len);
    if (!o)
        return NULL;
    char num[40];
    fputs("{\"type\": \"safetensors-c\", \"primary_model_hash\": ", o);
    cli_json_cstr(o, h[0].sha256);
    fputs(", \"secondary_model_hash\": ", o);
    cli_json_cstr(o, h[1].sha256);
    fputs(", \"tertiary_model_hash\": ", o);
    cli_json_cstr(o, job->ninputs > 2 ? h[2].sha256 : NULL);
    fprintf(o, ", \"interp_method\": \"%s\"", job->add_diff ? "Add difference" : "Weighted sum");
    fprintf(o, ", \"multiplier\": %s", st_format_double(job->alpha, num, sizeof num));
    fprintf(o, ", \"save_as_half\": %s", half ? "true" : "false");
    /* custom_name: the output's name without its extension */
    const char *b = base_name(out_path);
    const char *dot = strrchr(b, '.');
    fputs(", \"custom_name\": ", o);
    cli_json_string(o, b, dot && dot != b ? (size_t)(dot - b) : strlen(b));
    fputs(", \"config_source\": 0, \"bake_in_vae\": ", o);
    cli_json_cstr(o, job->vae.path ? base_name(job->vae.path) : "None");
    fputs(", \"discard_weights\": ", o);
    cli_json_cstr(o, job->discard ? job->discard : "");
    fprintf(o, ", \"is_inpainting\": %s, \"is_instruct_pix2pix\": %s}",
            inpainting ? "true" : "false", pix2pix ? "true" : "false");
    fclose(o);
    return s;
}

static int hash_inputs(merge_job *job, input_hash *h)
{
    for (size_t i = 0; i < job->ninputs; i++) {
        st_hashes hs;
        st_error err;
        memset(&err, 0, sizeof err);
        int rc = st_hash_path(job->in[i].path, ST_HASH_SHA256 | ST_HASH_AUTOV1, NULL, &hs, &err);
        if (rc == ST_OK)
            rc = st_hash_text(&hs, ST_HASH_SHA256, ST_HASH_STYLE_PLAIN, h[i].sha256);
        if (rc == ST_OK)
            rc = st_hash_text(&hs, ST_HASH_AUTOV1, ST_HASH_STYLE_PLAIN, h[i].legacy);
        if (rc != ST_OK) {
            if (err.code == ST_OK)
                err.code = rc;
            cli_print_error(job->in[i].path, &err);
            return CLI_EXIT_ERROR;
        }
    }
    return CLI_EXIT_OK;
}

static int set_meta(st_writer *w, const char *k, const char *v, size_t vl, const char *out_path)
{
    st_error err;
    memset(&err, 0, sizeof err);
    int rc = st_writer_set_metadata(w, k, strlen(k), v, vl, &err);
    if (rc != ST_OK) {
        if (err.code == ST_OK)
            err.code = rc;
        cli_print_error(out_path, &err);
        return CLI_EXIT_ERROR;
    }
    return CLI_EXIT_OK;
}

static int run(merge_job *job, const char *out_path, bool has_dtype, st_dtype dtype)
{
    int ret = CLI_EXIT_ERROR;
    st_writer *w = NULL;
    plan *plans = NULL;
    char *recipe = NULL, *models = NULL;
    for (size_t i = 0; i < job->ninputs; i++) {
        int rc = cli_open_file(job->in[i].path, ST_OPEN_PREAD, &job->in[i].file);
        if (rc != CLI_EXIT_OK) {
            ret = rc;
            goto done;
        }
    }
    if (job->vae.path) {
        int rc = cli_open_file(job->vae.path, ST_OPEN_PREAD, &job->vae.file);
        if (rc != CLI_EXIT_OK) {
            ret = rc;
            goto done;
        }
        if (cli_same_file(job->vae.path, out_path)) {
            cli_errorf("invalid_argument: OUT '%s' is the VAE file", out_path);
            goto done;
        }
    }
    for (size_t i = 0; i < job->ninputs; i++)
        if (cli_same_file(job->in[i].path, out_path)) {
            cli_errorf("invalid_argument: OUT '%s' is an input file; inputs are never "
                       "overwritten",
                       out_path);
            goto done;
        }
    size_t n = st_tensor_count(job->in[0].file);
    plans = calloc(n ? n : 1, sizeof *plans);
    w = st_writer_new();
    job->raw = malloc(CHUNK * 8);
    job->fa = malloc(CHUNK * sizeof(float));
    job->fb = malloc(CHUNK * sizeof(float));
    job->fc = malloc(CHUNK * sizeof(float));
    job->fo = malloc(CHUNK * sizeof(float));
    job->obuf = malloc(CHUNK * 8);
    if (!plans || !w || !job->raw || !job->fa || !job->fb || !job->fc || !job->fo || !job->obuf) {
        cli_errorf("nomem: out of memory");
        goto done;
    }
    size_t merged = 0;
    bool inpainting = false, pix2pix = false;
    int rc = plan_all(job, plans, has_dtype, dtype, &merged, &inpainting, &pix2pix);
    size_t baked = 0, discarded = 0;
    if (rc == CLI_EXIT_OK && job->vae.file)
        rc = bake_vae(job, plans, n, has_dtype, dtype, &baked);
    if (rc != CLI_EXIT_OK) {
        ret = rc;
        goto done;
    }
    if (job->discard)
        discarded = discard(plans, n, &job->discard_re);
    st_error err;
    memset(&err, 0, sizeof err);
    for (size_t i = 0; i < n; i++) {
        plan *p = &plans[i];
        const st_tensor *a = p->a;
        if (p->discard)
            continue;
        uint64_t nbytes = p->kind == PLAN_COPY ? st_tensor_nbytes(p->copy.t)
                                               : a->nelements * (st_dtype_bits(p->out) / 8);
        rc = p->kind == PLAN_COPY
                 ? st_writer_add_stream(w, a->name, a->name_len, p->copy.t->dtype, a->shape,
                                        a->rank, nbytes, cli_copy_read, &p->copy, &err)
                 : st_writer_add_stream(w, a->name, a->name_len, p->out, a->shape, a->rank,
                                        nbytes, merge_read, p, &err);
        if (rc != ST_OK) {
            if (err.code == ST_OK)
                err.code = rc;
            cli_print_error(out_path, &err);
            goto done;
        }
    }
    /* Metadata: A's, B's, C's (later wins), then A1111's own keys. */
    for (size_t f = 0; f < job->ninputs; f++) {
        size_t nm = st_metadata_count(job->in[f].file);
        for (size_t i = 0; i < nm; i++) {
            const char *k, *v;
            size_t kl, vl;
            if (st_metadata_at(job->in[f].file, i, &k, &kl, &v, &vl) != ST_OK)
                continue;
            rc = st_writer_set_metadata(w, k, kl, v, vl, &err);
            if (rc != ST_OK) {
                if (err.code == ST_OK)
                    err.code = rc;
                cli_print_error(out_path, &err);
                goto done;
            }
        }
    }
    input_hash h[3];
    memset(h, 0, sizeof h);
    rc = hash_inputs(job, h);
    if (rc != CLI_EXIT_OK)
        goto done;
    recipe = build_recipe(job, h, out_path, has_dtype && dtype == ST_F16, inpainting, pix2pix);
    models = build_merge_models(job, h);
    if (!recipe || !models) {
        cli_errorf("nomem: out of memory");
        goto done;
    }
    if (set_meta(w, "format", "pt", 2, out_path) != CLI_EXIT_OK ||
        set_meta(w, "sd_merge_recipe", recipe, strlen(recipe), out_path) != CLI_EXIT_OK ||
        set_meta(w, "sd_merge_models", models, strlen(models), out_path) != CLI_EXIT_OK)
        goto done;
    uint64_t size = st_writer_output_size(w);
    cli_input *inputs[4] = {&job->in[0], &job->in[1], job->ninputs > 2 ? &job->in[2] : NULL,
                            &job->vae};
    ret = cli_write_output(w, out_path, inputs, 4);
    if (ret != CLI_EXIT_OK)
        goto done;
    char num[40], a[32], b[32];
    printf("merged %zu tensor%s (%s, alpha %s)%s%s; %zu kept from A\n", merged,
           merged == 1 ? "" : "s", job->add_diff ? "add difference" : "weighted sum",
           st_format_double(job->alpha, num, sizeof num), inpainting ? ", inpainting" : "",
           pix2pix ? ", instruct-pix2pix" : "", n - merged);
    if (job->vae.file)
        printf("baked in %zu VAE tensor%s\n", baked, baked == 1 ? "" : "s");
    if (job->discard)
        printf("discarded %zu tensor%s\n", discarded, discarded == 1 ? "" : "s");
    char *p = cli_printable(out_path, strlen(out_path));
    printf("wrote %s: %zu tensor%s, %s (%s bytes)\n", p ? p : "?", n - discarded,
           n - discarded == 1 ? "" : "s",
           cli_human_size(size, a, sizeof a), cli_grouped(size, b, sizeof b));
    free(p);
done:
    free(recipe);
    free(models);
    free(plans);
    st_writer_free(w);
    free(job->raw);
    free(job->fa);
    free(job->fb);
    free(job->fc);
    free(job->fo);
    free(job->obuf);
    for (size_t i = 0; i < job->ninputs; i++)
        st_close(job->in[i].file);
    st_close(job->vae.file);
    return ret;
}

int cmd_merge(int argc, char **argv)
{
    enum { OPT_ALPHA = 256, OPT_MODE, OPT_DTYPE, OPT_VAE, OPT_DISCARD };
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {"output", required_argument, NULL, 'o'},
        {"alpha", required_argument, NULL, OPT_ALPHA},
        {"mode", required_argument, NULL, OPT_MODE},
        {"dtype", required_argument, NULL, OPT_DTYPE},
        {"vae", required_argument, NULL, OPT_VAE},
        {"discard", required_argument, NULL, OPT_DISCARD},
        {NULL, 0, NULL, 0},
    };
    merge_job job;
    memset(&job, 0, sizeof job);
    const char *out = NULL;
    bool has_alpha = false, has_dtype = false;
    st_dtype dtype = ST_F32;
    int c;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        switch (c) {
        case 'h': return cli_help(usage);
        case 'o': out = optarg; break;
        case OPT_ALPHA: {
            char *end;
            errno = 0;
            job.alpha = strtod(optarg, &end);
            if (end == optarg || *end || errno || !isfinite(job.alpha))
                return cli_usage_error(usage, "merge: --alpha wants a number, got '%s'", optarg);
            has_alpha = true;
            break;
        }
        case OPT_MODE:
            if (strcmp(optarg, "weighted") == 0)
                job.add_diff = false;
            else if (strcmp(optarg, "add-diff") == 0)
                job.add_diff = true;
            else
                return cli_usage_error(usage, "merge: --mode wants weighted or add-diff, got "
                                              "'%s'",
                                       optarg);
            break;
        case OPT_DTYPE:
            if (!cli_parse_dtype(optarg, &dtype) ||
                (dtype != ST_F16 && dtype != ST_BF16 && dtype != ST_F32 && dtype != ST_F64))
                return cli_usage_error(usage, "merge: --dtype wants f16, bf16, f32 or f64, got "
                                              "'%s'",
                                       optarg);
            has_dtype = true;
            break;
        case OPT_VAE: job.vae.path = optarg; break;
        case OPT_DISCARD: job.discard = optarg; break;
        default: return cli_usage_error(usage, NULL);
        }
    }
    size_t nin = (size_t)(argc - optind);
    if (nin < 2 || nin > 3)
        return cli_usage_error(usage, "merge: expected A B, or A B C with --mode add-diff");
    if (job.add_diff && nin != 3)
        return cli_usage_error(usage, "merge: add-diff needs three models A B C");
    if (!job.add_diff && nin != 2)
        return cli_usage_error(usage, "merge: a weighted sum takes two models (C is for "
                                      "--mode add-diff)");
    if (!out)
        return cli_usage_error(usage, "merge: -o OUT is required");
    if (!has_alpha)
        return cli_usage_error(usage, "merge: --alpha M is required");
    job.ninputs = nin;
    for (size_t i = 0; i < nin; i++)
        job.in[i].path = argv[optind + (int)i];
    job.wa = (float)(1.0 - job.alpha);
    job.wb = (float)job.alpha;
    job.m = (float)job.alpha;
    if (job.discard) {
        int rc = regcomp(&job.discard_re, job.discard, REG_EXTENDED | REG_NOSUB);
        if (rc != 0) {
            char msg[128];
            regerror(rc, &job.discard_re, msg, sizeof msg);
            return cli_usage_error(usage, "merge: --discard '%s': %s", job.discard, msg);
        }
    }
    int ret = run(&job, out, has_dtype, dtype);
    if (job.discard)
        regfree(&job.discard_re);
    return ret;
}
