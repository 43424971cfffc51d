/*
 * st_lora_bake: model + adapters -> a new model, streamed through st_writer.
 *
 * Untouched tensors move inside the kernel (or are converted chunk by
 * chunk) as the writer reaches them. Patched tensors are computed by a
 * team of workers (one per CPU) a few tensors ahead of the writer, in its
 * order (dtype descending, then name bytes), and written by them straight
 * to their planned place in the output file; the writer moves past them.
 * Low-rank modules are applied a block of rows at a time (read, widened,
 * up @ down added in f32, narrowed, written) so the block stays in cache
 * and both cores share a tensor; the products run in BLAS tiles small
 * enough to stay on the worker's thread. Memory: each worker's block plus
 * the factors of the tensors in flight; a LoHa/LoKr/DoRA tensor is held
 * whole, in f32, by the worker computing it.
 */
#include "common/outfile.h"
#include "format/writer_internal.h"
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

/* A patched tensor, by its position in the writer's order. Workers write
 * its bytes straight into the output file at their planned place (the
 * writer then moves past them), so no tensor is held whole in memory:
 * low-rank modules (lora_module_factors) are applied a block of rows at a
 * time by any worker; a tensor with another kind of module is computed
 * whole by one. */
enum { JOB_NEW, JOB_PREPARING, JOB_BLOCKS, JOB_DONE };

/* Patched tensors the workers may work on, from the one being written. */
enum { AHEAD = 16 };

typedef struct job {
    size_t idx;              /* model tensor                                  */
    uint64_t file_off;       /* where its bytes go in the output file         */
    lora_factors *f;         /* one per patch (block path), or NULL (whole)   */
    uint64_t cols, block_rows, nblocks, next, done;
    int state;               /* JOB_*                                         */
} job;

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
    /* the workers: patched tensors in writer order, computed ahead */
    st_writer *w;
    const st_outfile *of;    /* the output, once the writer has opened it     */
    job *jobs;
    size_t njobs;
    size_t *pos;             /* model tensor -> position in jobs, or SIZE_MAX */
    size_t consumed;         /* jobs before this one are written              */
    int wrc, stop;
    st_error werr;
    struct worker_ctx *workers;
    struct digests *digests;   /* the adapters' SHA-256, being computed     */
    unsigned nthreads;       /* started                                       */
    unsigned nworkers;       /* allocated                                     */
    bool sync_ready;         /* mu and cv initialized                         */
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

static uint64_t target_rows(const patch *p, const st_tensor *t)
{
    return p->tg->rows == UINT64_MAX ? t->shape[0] : p->tg->rows;
}

/* Patch p's factors (lora_module_factors); on a target whose halves the
 * adapter has swapped, the up rows are swapped back, and only a low-rank
 * module can patch it. */
static int patch_factors(const bake *b, const patch *p, const st_tensor *t, uint64_t cols,
                         lora_factors *f, st_error *err)
{
    const lora_module *m = &b->ad[p->adapter].mods[p->module];
    uint64_t rows = target_rows(p, t);
    int rc = lora_module_factors(&b->ad[p->adapter], m, b->in[p->adapter].strength, rows, cols,
                                 t->shape, t->rank, f, err);
    if (rc || !p->tg->swap_halves)
        return rc;
    if (!f->up) {
        char nm[160];
        st_quote_name(nm, sizeof nm, m->stem, m->stem_len);
        return st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET,
                       "%s: module %s: only a LoRA (up @ down) module can patch a weight whose "
                       "halves diffusers swaps", b->ad[p->adapter].path, nm);
    }
    uint64_t half = rows / 2 * f->k;
    for (uint64_t i = 0; i < half; i++) {
        float x = f->up[i];
        f->up[i] = f->up[half + i];
        f->up[half + i] = x;
    }
    return ST_OK;
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
        if (p->tg->swap_halves) {
            lora_factors f;
            rc = patch_factors(b, p, t, cols, &f, err);
            if (rc == ST_OK)
                lora_gemm_acc(target_rows(p, t), cols, f.k, f.scale, f.up, f.down,
                              w + p->tg->row0 * cols);
            lora_factors_free(&f);
            continue;
        }
        rc = lora_module_apply(&b->ad[p->adapter], &b->ad[p->adapter].mods[p->module],
                               b->in[p->adapter].strength, w + p->tg->row0 * cols,
                               target_rows(p, t), cols, t->shape, t->rank, err);
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

/* Synchronous path: a tensor no worker writes (converted at odd offsets,
 * or an output that is not a file). */
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

/* Rows per block: a block's floats stay in cache between the widening,
 * the products and the narrowing. */
enum { BLOCK_ROWS = 64, BLOCK_FLOATS_MAX = 2 << 20 };

static void free_factors(job *j, size_t n)
{
    for (size_t k = 0; j->f && k < n; k++)
        lora_factors_free(&j->f[k]);
    free(j->f);
    j->f = NULL;
}

typedef struct worker_ctx {
    bake *b;
    obuf block;              /* f32 rows of a block                           */
    obuf bytes;              /* the same rows in the output dtype             */
    obuf work;               /* f32 weight of a whole-tensor job              */
    pthread_t thread;
} worker_ctx;

/* Factors of job j; a tensor that is not all low-rank modules is computed
 * and written here, whole. */
static int prepare(worker_ctx *w, job *j, st_error *err)
{
    bake *b = w->b;
    const st_tensor *t = st_tensor_at(b->model, j->idx);
    size_t n = b->count[j->idx];
    j->f = calloc(n, sizeof *j->f);
    if (!j->f)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    j->cols = t->nelements / t->shape[0];
    bool lowrank = true;
    int rc = ST_OK;
    for (size_t k = 0; k < n && rc == ST_OK && lowrank; k++) {
        rc = patch_factors(b, &b->patches[b->first[j->idx] + k], t, j->cols, &j->f[k], err);
        lowrank = j->f[k].up != NULL;
    }
    if (rc == ST_OK && lowrank) {
        uint64_t br = BLOCK_FLOATS_MAX / (j->cols ? j->cols : 1);
        j->block_rows = br < 1 ? 1 : br > BLOCK_ROWS ? BLOCK_ROWS : br;
        j->nblocks = (t->shape[0] + j->block_rows - 1) / j->block_rows;
        return ST_OK;
    }
    free_factors(j, n);
    j->nblocks = 0;
    if (rc == ST_OK)
        rc = compute_into(b, j->idx, &w->work, &w->bytes, err);
    uint64_t nbytes = 0;
    if (rc == ST_OK)
        rc = st_bytes_for(out_dtype(b, t), t->nelements, &nbytes);
    if (rc == ST_OK)
        rc = st_outfile_pwrite(b->of, w->bytes.p, (size_t)nbytes, j->file_off, err);
    return rc;
}

/* Rows [r0, r0 + nr) of job j: read and widened, every module's product
 * added, narrowed, written to the file. */
static int run_block(worker_ctx *w, job *j, uint64_t blk, st_error *err)
{
    bake *b = w->b;
    const st_tensor *t = st_tensor_at(b->model, j->idx);
    st_dtype od = out_dtype(b, t);
    uint64_t oe = st_dtype_bits(od) / 8;
    uint64_t r0 = blk * j->block_rows, nr = t->shape[0] - r0;
    if (nr > j->block_rows)
        nr = j->block_rows;
    if (!obuf_fit(&w->block, j->block_rows * j->cols * 4) ||
        !obuf_fit(&w->bytes, j->block_rows * j->cols * oe))
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    float *rows = (float *)w->block.p;
    int rc = lora_load_rows_f32(b->model, b->model_path, t, r0, nr, rows, err);
    for (size_t k = 0; k < b->count[j->idx] && rc == ST_OK; k++) {
        const patch *p = &b->patches[b->first[j->idx] + k];
        const lora_factors *f = &j->f[k];
        uint64_t lo = p->tg->row0 > r0 ? p->tg->row0 : r0;
        uint64_t hi = p->tg->row0 + target_rows(p, t);
        if (hi > r0 + nr)
            hi = r0 + nr;
        if (lo < hi)
            lora_gemm_acc_serial(hi - lo, j->cols, f->k, f->scale,
                                 f->up + (lo - p->tg->row0) * f->k, f->down,
                                 rows + (lo - r0) * j->cols);
    }
    if (rc == ST_OK)
        rc = st_convert(od, w->bytes.p, ST_F32, rows, nr * j->cols, 0, err);
    if (rc == ST_OK)
        rc = st_outfile_pwrite(b->of, w->bytes.p, (size_t)(nr * j->cols * oe),
                               j->file_off + r0 * j->cols * oe, err);
    return rc;
}

static void *worker(void *arg)
{
    worker_ctx *w = arg;
    bake *b = w->b;
    pthread_mutex_lock(&b->mu);
    while (!b->stop) {
        size_t lim = b->consumed + AHEAD < b->njobs ? b->consumed + AHEAD : b->njobs;
        job *j = NULL;
        uint64_t blk = 0;
        for (size_t k = b->consumed; k < lim && !j; k++) {
            job *c = &b->jobs[k];
            if (c->state == JOB_NEW) {
                c->state = JOB_PREPARING;
                j = c;
            } else if (c->state == JOB_BLOCKS && c->next < c->nblocks) {
                blk = c->next++;
                j = c;
            }
        }
        if (!j) {
            pthread_cond_wait(&b->cv, &b->mu);
            continue;
        }
        bool prep = j->state == JOB_PREPARING;
        pthread_mutex_unlock(&b->mu);
        st_error e;
        int rc = prep ? prepare(w, j, &e) : run_block(w, j, blk, &e);
        pthread_mutex_lock(&b->mu);
        /* wake the others only when something they wait for changed: new
         * blocks, a finished job, a failure */
        bool changed = true;
        if (rc) {
            if (!b->wrc) {
                b->wrc = rc;
                b->werr = e;
            }
            b->stop = 1;
        } else if (prep) {
            j->state = j->nblocks ? JOB_BLOCKS : JOB_DONE;
        } else if (++j->done == j->nblocks) {
            free_factors(j, b->count[j->idx]);
            j->state = JOB_DONE;
        } else {
            changed = false;
        }
        if (changed)
            pthread_cond_broadcast(&b->cv);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* The writer opened the output: jobs learn where their bytes go and the
 * workers start. Without it (or without threads) patched tensors are
 * computed as the writer reaches them. */
static void stop_workers(bake *b)
{
    if (b->nthreads) {
        pthread_mutex_lock(&b->mu);
        b->stop = 1;
        pthread_cond_broadcast(&b->cv);
        pthread_mutex_unlock(&b->mu);
        for (unsigned i = 0; i < b->nthreads; i++)
            pthread_join(b->workers[i].thread, NULL);
        b->nthreads = 0;
    }
    if (b->sync_ready) {
        pthread_mutex_destroy(&b->mu);
        pthread_cond_destroy(&b->cv);
        b->sync_ready = false;
    }
    if (b->workers) {
        for (unsigned i = 0; i < b->nworkers; i++) {
            free(b->workers[i].block.p);
            free(b->workers[i].bytes.p);
            free(b->workers[i].work.p);
        }
        free(b->workers);
        b->workers = NULL;
    }
    b->of = NULL;
}

static void on_open(void *ctx, st_outfile *file, uint64_t data_start)
{
    bake *b = ctx;
    if (!file) { /* the writer is about to close it: no worker may write */
        stop_workers(b);
        return;
    }
    for (size_t k = 0; k < b->njobs; k++) {
        uint64_t begin = 0;
        if (st_writer_planned_begin(b->w, b->jobs[k].idx, &begin) != ST_OK)
            return;
        b->jobs[k].file_off = data_start + begin;
    }
    b->of = file;
    unsigned want = b->opt->threads ? b->opt->threads : lora_cpu_count();
    want = want > 64 ? 64 : want;
    b->workers = calloc(want, sizeof *b->workers);
    if (!b->workers || !b->njobs)
        return;
    b->nworkers = want;
    if (pthread_mutex_init(&b->mu, NULL) != 0)
        return;
    if (pthread_cond_init(&b->cv, NULL) != 0) {
        pthread_mutex_destroy(&b->mu);
        return;
    }
    b->sync_ready = true;
    for (unsigned i = 0; i < want; i++) {
        b->workers[i].b = b;
        if (pthread_create(&b->workers[i].thread, NULL, worker, &b->workers[i]) != 0)
            break;
        b->nthreads++;
    }
}

/* Waits for job k, after the jobs before it (one not yet started is
 * dropped: its tensor was not asked for). ST_OK when its bytes are in the
 * file. */
static int wait_done(bake *b, size_t k)
{
    pthread_mutex_lock(&b->mu);
    for (size_t j = b->consumed; j < k; j++)
        if (b->jobs[j].state == JOB_NEW)
            b->jobs[j].state = JOB_DONE;
    for (size_t j = b->consumed; j <= k; j++)
        while (b->jobs[j].state != JOB_DONE && !b->wrc)
            pthread_cond_wait(&b->cv, &b->mu);
    b->consumed = k + 1;
    pthread_cond_broadcast(&b->cv);
    int rc = b->wrc;
    if (rc)
        b->err = b->werr;
    pthread_mutex_unlock(&b->mu);
    return rc;
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
        /* odd pieces of a converted tensor: computed whole, once */
        if (b->cached != c->idx)
            rc = compute(b, c->idx, &b->err);
        if (rc == ST_OK)
            memcpy(buf, b->cache + offset, len);
    }
    if (rc) {
        b->failed = 1;
        return -1;
    }
    return 0;
}

/* A patched tensor's bytes: placed in the file by the workers, or
 * computed here when none run. */
static const void *view_tensor(void *vctx, uint64_t offset, uint64_t *len)
{
    tensor_ctx *c = vctx;
    bake *b = c->b;
    const st_tensor *t = st_tensor_at(b->model, c->idx);
    uint64_t nbytes = 0;
    st_bytes_for(out_dtype(b, t), t->nelements, &nbytes);
    *len = nbytes - offset;
    if (b->nthreads && offset == 0) {
        if (wait_done(b, b->pos[c->idx]) != ST_OK) {
            b->failed = 1;
            return NULL;
        }
        return ST_VIEW_PLACED;
    }
    if (b->cached != c->idx && compute(b, c->idx, &b->err) != ST_OK) {
        b->failed = 1;
        return NULL;
    }
    return b->cache + offset;
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

/* The adapters' SHA-256 for the metadata, computed on a thread of its own
 * while the bake runs: the header is written with zeros in their place
 * and the digits are put in before the file is committed. */
typedef struct digests {
    const st_lora_input *in;
    size_t n;
    char (*hex)[ST_HASH_TEXT_MAX];
    int rc;
    st_error err;
    pthread_t thread;
    bool started;
} digests;

static void *digest_all(void *arg)
{
    digests *d = arg;
    for (size_t i = 0; i < d->n && d->rc == ST_OK; i++) {
        st_hashes h;
        d->rc = st_hash_path(d->in[i].path, ST_HASH_SHA256, NULL, &h, &d->err);
        if (d->rc == ST_OK)
            d->rc = st_hash_text(&h, ST_HASH_SHA256, ST_HASH_STYLE_PLAIN, d->hex[i]);
    }
    return NULL;
}

static int digests_wait(digests *d)
{
    if (d->started) {
        pthread_join(d->thread, NULL);
        d->started = false;
    } else if (d->hex && d->rc == ST_OK && !d->hex[0][0]) {
        digest_all(d);
    }
    return d->rc;
}

#define ZERO_DIGEST "0000000000000000000000000000000000000000000000000000000000000000"

/* Where the i-th digest of "lora_baked" sits in the header: after the key
 * (unescaped quotes occur only around keys and values) at the i-th
 * ,\"sha256\":\" (a quote in a name is escaped twice there). */
static int put_digests(void *ctx, st_outfile *file, st_error *err)
{
    bake *b = ctx;
    digests *d = b->digests;
    int rc = digests_wait(d);
    if (rc) {
        if (err)
            *err = d->err;
        return rc;
    }
    const char *h;
    uint64_t hn;
    rc = st_writer_header(b->w, &h, &hn, err);
    if (rc)
        return rc;
    static const char key[] = "\"lora_baked\":\"", mark[] = ",\\\"sha256\\\":\\\"";
    const char *end = h + hn, *p = memmem(h, hn, key, sizeof key - 1);
    for (size_t i = 0; i < d->n && rc == ST_OK; i++) {
        p = p ? memmem(p, (size_t)(end - p), mark, sizeof mark - 1) : NULL;
        if (!p || (size_t)(end - p) < sizeof mark - 1 + 64 ||
            memcmp(p + sizeof mark - 1, ZERO_DIGEST, 64) != 0)
            return st_fail(err, ST_E_CALLBACK, ST_NO_OFFSET, "lora_baked: digest %zu not found in the header", i + 1);
        p += sizeof mark - 1;
        rc = st_outfile_pwrite(file, d->hex[i], 64, 8 + (uint64_t)(p - h), err);
    }
    return rc;
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
        const char *hex = ZERO_DIGEST;
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
    digests dg = {.in = loras, .n = n, .hex = calloc(n, sizeof *dg.hex)};
    if (!dg.hex) {
        free(ad);
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    }
    dg.started = pthread_create(&dg.thread, NULL, digest_all, &dg) == 0;
    b.digests = &dg;
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
        else if (rc == ST_OK && b.count[i])
            rc = st_writer_add_view(w, t->name, t->name_len, od, t->shape, t->rank, nbytes,
                                    view_tensor, &ctxs[i], err);
        else if (rc == ST_OK)
            rc = st_writer_add_stream(w, t->name, t->name_len, od, t->shape, t->rank, nbytes,
                                      read_tensor, &ctxs[i], err);
    }
    if (rc == ST_OK)
        rc = set_metadata(w, model, loras, n, err);
    /* the workers compute the patched tensors in the writer's order */
    size_t *order = NULL;
    if (rc == ST_OK) {
        order = malloc((nt ? nt : 1) * sizeof *order);
        b.pos = malloc((nt ? nt : 1) * sizeof *b.pos);
        b.jobs = calloc(nt ? nt : 1, sizeof *b.jobs);
        if (!order || !b.pos || !b.jobs)
            rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    }
    if (rc == ST_OK) {
        for (size_t i = 0; i < nt; i++)
            if (b.count[i])
                order[b.njobs++] = i;
        qsort_r(order, b.njobs, sizeof *order, writer_order, &b);
        for (size_t i = 0; i < nt; i++)
            b.pos[i] = SIZE_MAX;
        for (size_t k = 0; k < b.njobs; k++) {
            b.pos[order[k]] = k;
            b.jobs[k].idx = order[k];
        }
        b.w = w;
        st_writer_set_open_hook(w, on_open, &b);
        st_writer_set_close_hook(w, put_digests, &b);
    }
    free(order);
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
    stop_workers(&b);
    digests_wait(&dg);
    free(dg.hex);
    for (size_t k = 0; b.jobs && k < b.njobs; k++)
        free_factors(&b.jobs[k], b.count[b.jobs[k].idx]);
    free(b.jobs), free(b.pos);
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
