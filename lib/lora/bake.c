/*
 * st_lora_bake: model + adapters -> a new model, streamed through st_writer.
 *
 * Untouched tensors are copied (or converted) chunk by chunk as the writer
 * asks for them. Patched tensors are computed whole, in f32, by a worker
 * thread running at most AHEAD tensors ahead of the writer, in the writer's
 * own order (dtype descending, then name bytes), so the BLAS work overlaps
 * the reading and writing; each is converted to the output dtype and
 * released after its last chunk. Memory: AHEAD patched layers plus the
 * worker's f32 working set.
 */
#include "common/outfile.h"
#include "lora/lora_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct patch {
    size_t adapter, module;
    const lora_target *tg;
} patch;

/* A reusable buffer: large allocations are mapped afresh by malloc each
 * time, and faulting in gigabytes page by page costs more than the BLAS. */
typedef struct obuf {
    unsigned char *p;
    size_t cap;
} obuf;

static bool obuf_fit(obuf *o, uint64_t n)
{
    if (n <= o->cap)
        return true;
    if (n > SIZE_MAX / 2)
        return false;
    free(o->p);
    o->p = malloc((size_t)n);
    o->cap = o->p ? (size_t)n : 0;
    return o->p != NULL;
}

typedef struct bake {
    const char *model_path;
    const st_file *model;
    const lora_adapter *ad;
    const st_lora_input *in;
    const st_lora_bake_options *opt;
    patch *patches;          /* sorted by model tensor                        */
    size_t *first, *count;   /* per model tensor                              */
    size_t cached;           /* tensor whose output bytes are in `cache`      */
    unsigned char *cache;
    /* the worker: patched tensors in writer order, computed ahead */
    size_t *order, norder;   /* model tensor indices                          */
    size_t *pos;             /* model tensor -> position in order, or SIZE_MAX */
    obuf *ready;             /* per position: output bytes, once computed     */
    obuf pool[3];            /* released output buffers, reused: fresh large  */
    size_t npool;            /* allocations cost a page fault per 4 KiB       */
    obuf work;               /* the worker's f32 weight                       */
    size_t produced, consumed;
    int wrc, stop, started;
    st_error werr;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned char *scratch; /* input bytes of a converted chunk              */
    size_t scratch_cap;
    uint64_t total;
    st_error err;            /* the first failure inside a callback           */
    int failed;
} bake;

typedef struct tensor_ctx {
    bake *b;
    size_t idx;
} tensor_ctx;

void st_lora_bake_defaults(st_lora_bake_options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->dtype = -1;
}

static st_dtype out_dtype(const bake *b, const st_tensor *t)
{
    if (b->opt->dtype >= 0 && st_dtype_is_float(t->dtype))
        return (st_dtype)b->opt->dtype;
    return t->dtype;
}

static int patch_cmp(const void *x, const void *y)
{
    const patch *a = x, *c = y;
    if (a->tg->tensor != c->tg->tensor)
        return a->tg->tensor < c->tg->tensor ? -1 : 1;
    if (a->adapter != c->adapter)
        return a->adapter < c->adapter ? -1 : 1;
    return (a->module > c->module) - (a->module < c->module);
}

/* The patched tensor in f32 (in *work), then in its output dtype into *out. */
static int compute_into(const bake *b, size_t idx, obuf *work, obuf *out, st_error *err)
{
    const st_tensor *t = st_tensor_at(b->model, idx);
    if (t->nelements > SIZE_MAX / 8 || !obuf_fit(work, t->nelements * 4))
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory for a %llu-element weight",
                       (unsigned long long)t->nelements);
    float *w = (float *)work->p;
    int rc = lora_load_rows_f32(b->model, b->model_path, t, 0, t->shape[0], w, err);
    if (rc)
        return rc;
    uint64_t cols = t->nelements / t->shape[0];
    for (size_t k = 0; k < b->count[idx] && rc == ST_OK; k++) {
        const patch *p = &b->patches[b->first[idx] + k];
        const lora_target *tg = p->tg;
        uint64_t rows = tg->rows == UINT64_MAX ? t->shape[0] : tg->rows;
        rc = lora_module_apply(&b->ad[p->adapter], &b->ad[p->adapter].mods[p->module],
                               b->in[p->adapter].strength, w + tg->row0 * cols, rows, cols,
                               t->shape, t->rank, err);
    }
    st_dtype od = out_dtype(b, t);
    uint64_t nbytes = 0;
    if (rc == ST_OK)
        rc = st_bytes_for(od, t->nelements, &nbytes);
    if (rc == ST_OK && !obuf_fit(out, nbytes ? nbytes : 1))
        rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    if (rc == ST_OK)
        rc = st_convert(od, out->p, ST_F32, w, t->nelements, 0, err);
    return rc;
}

/* Synchronous path: a tensor the worker does not hold (converted at odd
 * offsets, or asked for again). */
static int compute(bake *b, size_t idx, st_error *err)
{
    free(b->cache);
    b->cache = NULL;
    b->cached = SIZE_MAX;
    obuf work = {0}, out = {0};
    int rc = compute_into(b, idx, &work, &out, err);
    free(work.p);
    if (rc == ST_OK) {
        b->cache = out.p;
        b->cached = idx;
    } else {
        free(out.p);
    }
    return rc;
}

enum { AHEAD = 2 };

static void *worker(void *arg)
{
    bake *b = arg;
    for (size_t k = 0; k < b->norder; k++) {
        pthread_mutex_lock(&b->mu);
        while (!b->stop && k >= b->consumed + AHEAD)
            pthread_cond_wait(&b->cv, &b->mu);
        int stop = b->stop;
        pthread_mutex_unlock(&b->mu);
        if (stop)
            break;
        st_error e;
        obuf out = {0};
        pthread_mutex_lock(&b->mu);
        if (b->npool)
            out = b->pool[--b->npool];
        pthread_mutex_unlock(&b->mu);
        int rc = compute_into(b, b->order[k], &b->work, &out, &e);
        pthread_mutex_lock(&b->mu);
        if (rc) {
            b->wrc = rc;
            b->werr = e;
            free(out.p);
        } else if (k < b->consumed) {
            free(out.p); /* the writer went past it */
        } else {
            b->ready[k] = out;
        }
        b->produced = k + 1;
        pthread_cond_broadcast(&b->cv);
        pthread_mutex_unlock(&b->mu);
        if (rc)
            break;
    }
    return NULL;
}

/* Waits for position k; releases everything before it. Returns the bytes
 * (owned by b->ready[k]) or NULL with b->err set. */
/* Called with b->mu held. */
static void recycle(bake *b, size_t k)
{
    obuf *o = &b->ready[k];
    if (o->p && b->npool < sizeof b->pool / sizeof b->pool[0])
        b->pool[b->npool++] = *o;
    else
        free(o->p);
    o->p = NULL;
    o->cap = 0;
}

static unsigned char *wait_ready(bake *b, size_t k)
{
    pthread_mutex_lock(&b->mu);
    for (size_t j = b->consumed; j < k; j++)
        recycle(b, j);
    if (k > b->consumed) {
        b->consumed = k;
        pthread_cond_broadcast(&b->cv);
    }
    while (b->produced <= k && !b->wrc)
        pthread_cond_wait(&b->cv, &b->mu);
    unsigned char *p = b->ready[k].p;
    if (!p && b->wrc)
        b->err = b->werr;
    pthread_mutex_unlock(&b->mu);
    return p;
}

static void release(bake *b, size_t k)
{
    pthread_mutex_lock(&b->mu);
    recycle(b, k);
    if (k + 1 > b->consumed) {
        b->consumed = k + 1;
        pthread_cond_broadcast(&b->cv);
    }
    pthread_mutex_unlock(&b->mu);
}

/* The writer's order: output dtype descending, then name bytes. */
static int writer_order(const void *x, const void *y, void *ctx)
{
    const bake *b = ctx;
    const st_tensor *s = st_tensor_at(b->model, *(const size_t *)x);
    const st_tensor *t = st_tensor_at(b->model, *(const size_t *)y);
    st_dtype ds = out_dtype(b, s), dt = out_dtype(b, t);
    if (ds != dt)
        return ds > dt ? -1 : 1;
    return st_name_cmp(s->name, s->name_len, t->name, t->name_len);
}

static int read_tensor(void *vctx, uint64_t offset, void *buf, size_t len)
{
    tensor_ctx *c = vctx;
    bake *b = c->b;
    const st_tensor *t = st_tensor_at(b->model, c->idx);
    st_dtype od = out_dtype(b, t);
    int rc = ST_OK;
    uint64_t nbytes = 0;
    st_bytes_for(od, t->nelements, &nbytes);
    if (b->count[c->idx] == 0 && od == t->dtype) {
        rc = st_tensor_read(b->model, t, offset, buf, len, &b->err);
    } else if (b->count[c->idx] == 0 && st_dtype_bits(od) >= 8 && st_dtype_bits(t->dtype) >= 8 &&
               offset % (st_dtype_bits(od) / 8) == 0 && len % (st_dtype_bits(od) / 8) == 0) {
        /* converted chunk by chunk through a scratch buffer (pread mode) */
        uint64_t oe = st_dtype_bits(od) / 8, ie = st_dtype_bits(t->dtype) / 8;
        size_t need = (size_t)(len / oe * ie);
        if (need > b->scratch_cap) {
            unsigned char *p = realloc(b->scratch, need);
            if (!p)
                rc = st_fail(&b->err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
            else
                b->scratch = p, b->scratch_cap = need;
        }
        if (rc == ST_OK)
            rc = st_tensor_read(b->model, t, offset / oe * ie, b->scratch, need, &b->err);
        if (rc == ST_OK)
            rc = st_convert(od, buf, t->dtype, b->scratch, len / oe, 0, &b->err);
    } else {
        size_t k = b->pos[c->idx];
        unsigned char *p = NULL;
        if (k != SIZE_MAX && b->started && b->cached != c->idx) {
            pthread_mutex_lock(&b->mu);
            bool gone = k < b->consumed;
            pthread_mutex_unlock(&b->mu);
            if (!gone && !(p = wait_ready(b, k)))
                rc = b->err.code ? b->err.code : ST_E_CALLBACK;
        }
        if (p) {
            memcpy(buf, p + offset, len);
            if (offset + len >= nbytes)
                release(b, k);
        } else if (rc == ST_OK) {
            if (b->cached != c->idx)
                rc = compute(b, c->idx, &b->err);
            if (rc == ST_OK)
                memcpy(buf, b->cache + offset, len);
            if (offset + len >= nbytes) {
                free(b->cache);
                b->cache = NULL;
                b->cached = SIZE_MAX;
            }
        }
    }
    if (rc) {
        b->failed = 1;
        return -1;
    }
    return 0;
}

static void json_str(char *dst, size_t cap, size_t *len, const char *s)
{
    for (; *s && *len + 8 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            *len += (size_t)snprintf(dst + *len, cap - *len, "\\%c", ch);
        else if (ch < 0x20)
            *len += (size_t)snprintf(dst + *len, cap - *len, "\\u%04x", ch);
        else
            dst[(*len)++] = (char)ch;
    }
    dst[*len] = 0;
}

static int set_metadata(st_writer *w, const st_file *model, const st_lora_input *in, size_t n,
                        st_error *err)
{
    for (size_t i = 0; i < st_metadata_count(model); i++) {
        const char *k, *v;
        size_t kl, vl;
        st_metadata_at(model, i, &k, &kl, &v, &vl);
        int rc = st_writer_set_metadata(w, k, kl, v, vl, err);
        if (rc)
            return rc;
    }
    size_t cap = 256 + n * 1200, len = 0;
    char *j = malloc(cap);
    if (!j)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    j[len++] = '[';
    for (size_t i = 0; i < n; i++) {
        st_hashes h;
        char hex[ST_HASH_TEXT_MAX] = "";
        int rc = st_hash_path(in[i].path, ST_HASH_SHA256, NULL, &h, err);
        if (rc == ST_OK)
            rc = st_hash_text(&h, ST_HASH_SHA256, ST_HASH_STYLE_PLAIN, hex);
        if (rc) {
            free(j);
            return rc;
        }
        const char *base = strrchr(in[i].path, '/');
        base = base ? base + 1 : in[i].path;
        len += (size_t)snprintf(j + len, cap - len, "%s{\"name\":\"", i ? "," : "");
        json_str(j, cap - 200, &len, base);
        len += (size_t)snprintf(j + len, cap - len, "\",\"strength\":%.9g,\"sha256\":\"%s\"}",
                                (double)in[i].strength, hex);
    }
    len += (size_t)snprintf(j + len, cap - len, "]");
    int rc = st_writer_set_metadata(w, "lora_baked", 10, j, len, err);
    free(j);
    return rc;
}

int st_lora_bake(const char *model_path, const char *out_path, const st_lora_input *loras,
                 size_t n, const st_lora_bake_options *opt_in, st_lora_bake_report *report,
                 st_error *err)
{
    st_lora_bake_options defaults;
    st_lora_bake_defaults(&defaults);
    const st_lora_bake_options *opt = opt_in ? opt_in : &defaults;
    if (report)
        memset(report, 0, sizeof *report);
    if (!model_path || !out_path || (n && !loras) || n == 0)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_lora_bake: a model, an output and at least one LoRA are needed");
    if (opt->dtype >= 0 && (opt->dtype >= ST_DTYPE_COUNT || !st_dtype_is_float((st_dtype)opt->dtype) ||
                            !st_convert_supported(ST_F32, (st_dtype)opt->dtype) ||
                            st_dtype_bits((st_dtype)opt->dtype) < 8))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_lora_bake: output dtype must be a float of 8 bits or more");
    for (size_t i = 0; i < n; i++)
        if (!loras[i].path || !isfinite(loras[i].strength))
            return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "LoRA %zu: no path or a strength that is not a finite number", i + 1);

    st_file *model = NULL;
    lora_map *map = NULL;
    lora_adapter *ad = calloc(n, sizeof *ad);
    bake b = {0};
    tensor_ctx *ctxs = NULL;
    st_writer *w = NULL;
    size_t nt = 0, np = 0, unmatched = 0;
    int rc = ad ? ST_OK : st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    if (rc == ST_OK)
        rc = st_open(model_path, ST_OPEN_PREAD, &model, err); /* RSS: no mapped model */
    if (rc == ST_OK)
        rc = lora_map_build(model, &map, err);
    for (size_t i = 0; i < n && rc == ST_OK; i++)
        rc = lora_adapter_open(loras[i].path, &ad[i], err);
    if (rc)
        goto out;
    nt = st_tensor_count(model);
    size_t total_mods = 0;
    for (size_t i = 0; i < n; i++)
        total_mods += ad[i].nmods;
    b.patches = malloc((total_mods ? total_mods : 1) * sizeof *b.patches);
    b.first = calloc(nt ? nt : 1, sizeof *b.first);
    b.count = calloc(nt ? nt : 1, sizeof *b.count);
    ctxs = calloc(nt ? nt : 1, sizeof *ctxs);
    if (!b.patches || !b.first || !b.count || !ctxs) {
        rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
        goto out;
    }
    char listed[512] = "";
    size_t ll = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < ad[i].nmods; k++) {
            const lora_module *m = &ad[i].mods[k];
            const lora_target *tg = lora_map_find(map, m->stem, m->stem_len);
            if (!tg && m->stem_len > 8 && memcmp(m->stem, "lora_te_", 8) == 0 &&
                m->stem_len < 1000) {
                /* PEFT's "text_encoder." is SDXL's first encoder too */
                char alt[1024];
                snprintf(alt, sizeof alt, "lora_te1_%s", m->stem + 8);
                tg = lora_map_find(map, alt, m->stem_len + 1);
            }
            if (!tg) {
                if (report && report->unmatched_listed < ST_LORA_REPORT_NAMES)
                    st_quote_name(report->unmatched_names[report->unmatched_listed++],
                                  ST_LORA_NAME_MAX, m->stem, m->stem_len);
                if (unmatched < 4 && ll < sizeof listed - 200) {
                    char nm[160];
                    st_quote_name(nm, sizeof nm, m->stem, m->stem_len);
                    ll += (size_t)snprintf(listed + ll, sizeof listed - ll, "%s%s",
                                           unmatched ? ", " : "", nm);
                }
                unmatched++;
                continue;
            }
            b.patches[np++] = (patch){i, k, tg};
        }
    if (report)
        report->unmatched = unmatched;
    if (unmatched && !opt->allow_unmatched) {
        rc = st_fail(err, ST_E_LORA, ST_NO_OFFSET,
                     "%zu LoRA module(s) match no weight of %s: %s%s (--allow-unmatched to skip them)",
                     unmatched, model_path, listed, unmatched > 4 ? ", ..." : "");
        goto out;
    }
    qsort(b.patches, np, sizeof *b.patches, patch_cmp);
    for (size_t i = 0; i < np; i++) {
        size_t ti = b.patches[i].tg->tensor;
        if (b.count[ti]++ == 0)
            b.first[ti] = i;
    }
    /* Check every LoRA module's shapes, rank and alpha before writing. */
    for (size_t i = 0; i < np && rc == ST_OK; i++) {
        const patch *p = &b.patches[i];
        const st_tensor *t = st_tensor_at(model, p->tg->tensor);
        uint64_t rows = p->tg->rows == UINT64_MAX ? t->shape[0] : p->tg->rows;
        rc = lora_module_apply(&ad[p->adapter], &ad[p->adapter].mods[p->module],
                               loras[p->adapter].strength, NULL, rows, t->nelements / t->shape[0],
                               t->shape, t->rank, err);
    }
    if (rc)
        goto out;
    b.model_path = model_path;
    b.model = model;
    b.ad = ad;
    b.in = loras;
    b.opt = opt;
    b.cached = SIZE_MAX;
    w = st_writer_new();
    if (!w) {
        rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < nt && rc == ST_OK; i++) {
        const st_tensor *t = st_tensor_at(model, i);
        st_dtype od = out_dtype(&b, t);
        uint64_t nbytes;
        rc = st_bytes_for(od, t->nelements, &nbytes);
        ctxs[i] = (tensor_ctx){&b, i};
        int fd;
        uint64_t off;
        /* a weight no adapter touches, in its own dtype: its bytes move
         * inside the kernel */
        if (rc == ST_OK && b.count[i] == 0 && od == t->dtype && st_kernel_copy_allowed() &&
            st_tensor_file_range(model, t, &fd, &off) == ST_OK)
            rc = st_writer_add_file_range(w, t->name, t->name_len, od, t->shape, t->rank, fd, off,
                                          nbytes, err);
        else if (rc == ST_OK)
            rc = st_writer_add_stream(w, t->name, t->name_len, od, t->shape, t->rank, nbytes,
                                      read_tensor, &ctxs[i], err);
    }
    if (rc == ST_OK)
        rc = set_metadata(w, model, loras, n, err);
    /* the worker computes the patched tensors in the writer's order */
    if (rc == ST_OK) {
        b.order = malloc((nt ? nt : 1) * sizeof *b.order);
        b.pos = malloc((nt ? nt : 1) * sizeof *b.pos);
        b.ready = calloc(nt ? nt : 1, sizeof *b.ready);
        if (!b.order || !b.pos || !b.ready)
            rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    }
    if (rc == ST_OK) {
        for (size_t i = 0; i < nt; i++)
            if (b.count[i])
                b.order[b.norder++] = i;
        qsort_r(b.order, b.norder, sizeof *b.order, writer_order, &b);
        for (size_t i = 0; i < nt; i++)
            b.pos[i] = SIZE_MAX;
        for (size_t k = 0; k < b.norder; k++)
            b.pos[b.order[k]] = k;
        pthread_mutex_init(&b.mu, NULL);
        pthread_cond_init(&b.cv, NULL);
        b.started = pthread_create(&b.thread, NULL, worker, &b) == 0;
        if (!b.started) {
            pthread_mutex_destroy(&b.mu);
            pthread_cond_destroy(&b.cv);
        }
    }
    if (rc == ST_OK) {
        b.total = st_writer_output_size(w);
        {
            /* progress from the writer: it also counts the tensors that
             * move inside the kernel */
            st_output_hooks h = {opt->progress, opt->progress_ctx, opt->temp, opt->temp_ctx};
            st_writer_set_hooks(w, &h);
        }
        rc = st_writer_write(w, out_path, err);
        if (rc == ST_E_CALLBACK && b.err.code) {
            rc = b.err.code;
            if (err)
                *err = b.err;
        }
    }
    if (rc == ST_OK && report) {
        for (size_t i = 0; i < nt; i++)
            report->tensors_patched += b.count[i] != 0;
        report->modules = np;
    }
    if (rc == ST_OK && opt->progress)
        opt->progress(opt->progress_ctx, b.total, b.total);
out:
    if (b.started) {
        pthread_mutex_lock(&b.mu);
        b.stop = 1;
        pthread_cond_broadcast(&b.cv);
        pthread_mutex_unlock(&b.mu);
        pthread_join(b.thread, NULL);
        pthread_mutex_destroy(&b.mu);
        pthread_cond_destroy(&b.cv);
    }
    for (size_t k = 0; b.ready && k < b.norder; k++)
        free(b.ready[k].p);
    for (size_t k = 0; k < b.npool; k++)
        free(b.pool[k].p);
    free(b.work.p);
    free(b.ready), free(b.order), free(b.pos);
    st_writer_free(w);
    free(ctxs);
    free(b.cache);
    free(b.scratch);
    free(b.patches), free(b.first), free(b.count);
    for (size_t i = 0; ad && i < n; i++)
        lora_adapter_close(&ad[i]);
    free(ad);
    lora_map_free(map);
    st_close(model);
    return rc;
}
