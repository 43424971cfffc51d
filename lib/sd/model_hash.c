/*
 * Digests of every shard of a model, several shards at once.
 *
 * One file's SHA-256 is a serial chain, so st_hash_fd cannot spread one
 * digest over cores; the shards of a model are independent streams,
 * though, and hashing several at once is what fills the cores when the
 * data is in page cache. Workers take shards largest first (the last
 * shard of a split is usually the small one, and should not be the one
 * that starts last); each runs st_hash_fd with the threads left over, so
 * a single-shard model is hashed exactly as st_hash_fd would.
 *
 * Stopping: every worker's progress goes through one callback that sums
 * the bytes of all shards for the caller's callback (called under a lock,
 * so it needs no locking of its own) and returns "stop" once any worker
 * has failed or the caller asked to stop; a worker stopped that way ends
 * with ST_E_CALLBACK, which is not an error of its own.
 */
#include "common/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Read buffers of all shards' passes together, unless a chunk size is given. */
#define BUDGET ((size_t)32 << 20)
#define MAX_WORKERS 64

typedef struct pool {
    const st_model *m;
    unsigned algos;
    st_hash_options inner; /* what each shard's st_hash_fd gets */
    st_progress_fn progress;
    void *progress_ctx;
    st_hashes *out;
    size_t *order;         /* shard indices, largest first */
    size_t n;
    pthread_mutex_t mu;
    size_t next;           /* in order[] */
    uint64_t done, total;  /* bytes over all shards */
    bool stop;
    bool cancelled;        /* the caller's callback asked to stop */
    int rc;                /* the first real failure */
    size_t failed;
    st_error err;
} pool;

typedef struct worker {
    pool *p;
    uint64_t reported;     /* bytes of the current shard already counted */
    pthread_t tid;
    bool started;
} worker;

static unsigned cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 64 ? 64 : (unsigned)n;
}

static int on_progress(void *ctx, uint64_t done, uint64_t total)
{
    (void)total;
    worker *w = ctx;
    pool *p = w->p;
    pthread_mutex_lock(&p->mu);
    p->done += done - w->reported;
    w->reported = done;
    if (!p->stop && p->progress && p->progress(p->progress_ctx, p->done, p->total) != 0) {
        p->stop = true;
        p->cancelled = true;
    }
    bool stop = p->stop;
    pthread_mutex_unlock(&p->mu);
    return stop ? 1 : 0;
}

/* Hashes shard si into p->out[si]. */
static int hash_shard(worker *w, size_t si, st_error *err)
{
    pool *p = w->p;
    const char *path = st_model_shard_path(p->m, si);
    uint64_t size = st_model_shard_size(p->m, si);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot open shard %s: %s", path,
                       strerror(errno));
    struct stat sb;
    int rc = ST_OK;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || (uint64_t)sb.st_size != size)
        rc = st_fail(err, ST_E_IO, ST_NO_OFFSET,
                     "shard %s changed since the model was opened (%" PRIu64 " bytes then)", path,
                     size);
    st_hash_options o = p->inner;
    o.progress = on_progress;
    o.progress_ctx = w;
    w->reported = 0;
    if (rc == ST_OK)
        rc = st_hash_fd(fd, p->algos, &o, &p->out[si], err);
    close(fd);
    /* A shard that shrank or grew while read would get the digest of
     * bytes that were never the file. */
    if (rc == ST_OK && p->out[si].size != size)
        rc = st_fail(err, ST_E_IO, ST_NO_OFFSET,
                     "shard %s changed size while being hashed (%" PRIu64 " bytes when opened, "
                     "%" PRIu64 " read)",
                     path, size, p->out[si].size);
    else if (rc != ST_OK && rc != ST_E_CALLBACK && err && !strstr(err->message, path)) {
        /* st_hash_fd's messages do not know the file */
        char msg[2 * sizeof err->message];
        snprintf(msg, sizeof msg, "shard %s: %s", path, err->message);
        memcpy(err->message, msg, sizeof err->message);
        err->message[sizeof err->message - 1] = '\0';
    }
    return rc;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    pool *p = w->p;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        if (p->stop || p->next >= p->n) {
            pthread_mutex_unlock(&p->mu);
            break;
        }
        size_t si = p->order[p->next++];
        pthread_mutex_unlock(&p->mu);
        st_error e;
        memset(&e, 0, sizeof e);
        int rc = hash_shard(w, si, &e);
        if (rc == ST_OK || rc == ST_E_CALLBACK)
            continue; /* stopped by the pool: not an error of this shard */
        pthread_mutex_lock(&p->mu);
        if (p->rc == ST_OK) {
            p->rc = rc;
            p->failed = si;
            p->err = e;
            if (p->err.code == ST_OK)
                p->err.code = rc;
        }
        p->stop = true;
        pthread_mutex_unlock(&p->mu);
    }
    return NULL;
}

/* Largest first, ties in shard order: an insertion sort, since qsort
 * has no context argument to reach the model's sizes. */
static void order_shards(const st_model *m, size_t *order, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t v = order[i] = i, j = i;
        uint64_t sv = st_model_shard_size(m, v);
        while (j > 0 && st_model_shard_size(m, order[j - 1]) < sv) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = v;
    }
}

int st_model_hash(const st_model *m, unsigned algos, const st_hash_options *opt, st_hashes *out,
                  size_t *failed_shard, st_error *err)
{
    if (failed_shard)
        *failed_shard = SIZE_MAX;
    if (!m || !out)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_model_hash: model and out are required");
    if (algos == 0 || (algos & ~ST_HASH_ALL))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_model_hash: no digest asked for");
    size_t n = st_model_shard_count(m);
    pool p;
    memset(&p, 0, sizeof p);
    p.m = m;
    p.algos = algos;
    p.out = out;
    p.n = n;
    if (opt) {
        p.inner = *opt;
        p.progress = opt->progress;
        p.progress_ctx = opt->progress_ctx;
    }
    for (size_t i = 0; i < n; i++)
        p.total += st_model_shard_size(m, i);
    unsigned cores = opt && opt->threads ? opt->threads : cpu_count();
    if (cores > MAX_WORKERS)
        cores = MAX_WORKERS; /* each holds at least a 1 MiB buffer */
    size_t nw = n < cores ? n : cores;
    if (nw == 0)
        return ST_OK;
    /* The threads a shard's own pass may use (its reader and digest
     * lanes): what the shards hashed side by side leave. */
    unsigned per = (unsigned)(cores / nw);
    p.inner.threads = per < 1 ? 1 : per;
    /* Memory: a pass holds one chunk (alone) or a ring of 4 (with lanes);
     * unless the caller chose a chunk size, the passes share BUDGET, with
     * chunks of 1..8 MiB (page-cache reads are as fast from 1 MiB up). */
    if (!p.inner.chunk_size) {
        size_t slots = p.inner.threads > 1 ? 4 : 1;
        size_t chunk = BUDGET / (nw * slots);
        chunk = chunk < ((size_t)1 << 20) ? (size_t)1 << 20 : chunk;
        p.inner.chunk_size = chunk > ((size_t)8 << 20) ? (size_t)8 << 20 : chunk;
    }
    p.order = malloc(n * sizeof *p.order);
    worker *ws = calloc(nw, sizeof *ws);
    if (!p.order || !ws) {
        free(p.order);
        free(ws);
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    }
    order_shards(m, p.order, n);
    if (pthread_mutex_init(&p.mu, NULL) != 0) {
        free(p.order);
        free(ws);
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "cannot create a lock");
    }
    for (size_t i = 0; i < nw; i++)
        ws[i].p = &p;
    /* The calling thread is worker 0; the others get threads of their own
     * (when one cannot be started, the rest share the work). */
    for (size_t i = 1; i < nw; i++)
        ws[i].started = pthread_create(&ws[i].tid, NULL, worker_main, &ws[i]) == 0;
    worker_main(&ws[0]);
    for (size_t i = 1; i < nw; i++)
        if (ws[i].started)
            pthread_join(ws[i].tid, NULL);
    pthread_mutex_destroy(&p.mu);
    int rc = p.rc;
    if (rc != ST_OK) {
        if (err)
            *err = p.err;
        if (failed_shard)
            *failed_shard = p.failed;
    } else if (p.cancelled) {
        rc = st_fail(err, ST_E_CALLBACK, ST_NO_OFFSET, "stopped by the progress callback");
    }
    free(p.order);
    free(ws);
    return rc;
}
