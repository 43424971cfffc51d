/*
 * The model handle: one tensor table over the shards an index names (or
 * one file), built by validating every shard once, and reads that go to
 * the right shard with pread through a small, bounded cache of file
 * descriptors shared by all threads.
 */
#include "model/model_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct shard {
    char *name;            /* as the index gives it */
    char *path;            /* folder + "/" + name */
    uint64_t size, data_offset;
    dev_t dev;
    ino_t ino;
    struct timespec mtime;
    int fd;                /* -1 when not open */
    unsigned refs;         /* readers using fd */
    uint64_t used;         /* clock of the last use, for LRU */
    void *block;           /* shapes and names of its tensors */
} shard;

typedef struct meta_pair {
    char *key, *value;
    size_t key_len, value_len;
    size_t seq;            /* shard order, to keep the first on a tie */
} meta_pair;

struct st_model {
    char *index_path;
    char variant[ST_MODEL_VARIANT_MAX + 1]; /* the weight variant chosen, "" for none */
    shard *shards;
    size_t nshards;
    st_tensor *tensors;
    size_t count, cap;
    size_t *tshard;        /* shard of tensors[i] */
    const st_tensor **by_name;
    st_strtab names;
    uint64_t total;
    meta_pair *meta;
    size_t nmeta, meta_cap;
    int meta_present;
    /* the descriptor cache */
    pthread_mutex_t lock;
    pthread_cond_t freed;
    size_t open_count;
    uint64_t clock;
    unsigned max_open;
};

static const char *tensor_get(const void *ctx, size_t idx, size_t *len)
{
    const st_model *m = ctx;
    *len = m->tensors[idx].name_len;
    return m->tensors[idx].name;
}

static bool grow(void **buf, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return true;
    size_t c = *cap ? *cap : 16;
    while (c < need) {
        if (c > SIZE_MAX / 2 / elem)
            return false;
        c *= 2;
    }
    void *nb = realloc(*buf, c * elem);
    if (!nb)
        return false;
    *buf = nb;
    *cap = c;
    return true;
}

static int nomem(st_error *err, const char *what)
{
    return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory (%s)", what);
}

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

char *st_model_join_path(const char *dir, const char *name)
{
    size_t dl = strlen(dir), nl = strlen(name);
    char *p = malloc(dl + nl + 2);
    if (p) {
        memcpy(p, dir, dl);
        p[dl] = '/';
        memcpy(p + dl + 1, name, nl + 1);
    }
    return p;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && memcmp(s + n - k, suffix, k) == 0;
}

/* Prefixes err's message with a shard's path, keeping code and offset. */
static int in_shard(st_error *err, int rc, const char *path)
{
    if (err) {
        char m[2 * ST_ERROR_MESSAGE_MAX + PATH_MAX];
        snprintf(m, sizeof m, "shard %s: %s", path, err->message);
        memcpy(err->message, m, ST_ERROR_MESSAGE_MAX - 1);
        err->message[ST_ERROR_MESSAGE_MAX - 1] = '\0';
        err->code = rc;
    }
    return rc;
}

/* ---- symbolic links must not lead out of the folder -------------------- */

static bool has_prefix_dir(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    if (n == 1 && dir[0] == '/')
        return true;
    return strncmp(path, dir, n) == 0 && path[n] == '/';
}

/* The Hugging Face cache keeps files in REPO/blobs and links to them from
 * REPO/snapshots/REV/...: a link from below a snapshot into its repo's
 * blobs is inside the model. */
static bool in_hf_blobs(const char *real, const char *realdir)
{
    char buf[PATH_MAX];
    size_t n = strlen(realdir);
    if (n >= sizeof buf)
        return false;
    memcpy(buf, realdir, n + 1);
    for (;;) {
        char *slash = strrchr(buf, '/');
        if (!slash || slash == buf)
            return false;
        *slash = '\0'; /* buf is now the parent of the component cut */
        char *pslash = strrchr(buf, '/');
        const char *base = pslash ? pslash + 1 : buf;
        if (strcmp(base, "snapshots") == 0 && pslash && pslash != buf) {
            char blobs[PATH_MAX];
            int k = snprintf(blobs, sizeof blobs, "%.*s/blobs", (int)(pslash - buf), buf);
            return k > 0 && (size_t)k < sizeof blobs && has_prefix_dir(real, blobs);
        }
    }
}

static int check_inside(const char *path, const char *realdir, const char *index_path,
                        st_error *err)
{
    char real[PATH_MAX];
    if (!realpath(path, real)) {
        if (errno == ENOENT)
            return st_fail(err, ST_E_IO, ST_NO_OFFSET, "shard %s listed in %s is missing", path,
                           index_path);
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "shard %s listed in %s: %s", path, index_path,
                       strerror(errno));
    }
    if (has_prefix_dir(real, realdir) || in_hf_blobs(real, realdir))
        return ST_OK;
    return st_fail(err, ST_E_HEADER_SCHEMA, ST_NO_OFFSET,
                   "shard %s listed in %s is a link to %s, outside the index's folder", path,
                   index_path, real);
}

/* ---- validating one shard ---------------------------------------------- */

static bool same_file(const struct stat *a, const shard *s)
{
    return a->st_dev == s->dev && a->st_ino == s->ino && (uint64_t)a->st_size == s->size &&
           a->st_mtim.tv_sec == s->mtime.tv_sec && a->st_mtim.tv_nsec == s->mtime.tv_nsec;
}

static int add_metadata(st_model *m, const st_file *f, st_error *err)
{
    if (st_metadata_present(f))
        m->meta_present = 1;
    size_t n = st_metadata_count(f);
    for (size_t i = 0; i < n; i++) {
        const char *k, *v;
        size_t kl, vl;
        st_metadata_at(f, i, &k, &kl, &v, &vl);
        if (!grow((void **)&m->meta, &m->meta_cap, m->nmeta + 1, sizeof *m->meta))
            return nomem(err, "metadata");
        meta_pair *p = &m->meta[m->nmeta];
        p->key = dup_n(k, kl);
        p->value = dup_n(v, vl);
        if (!p->key || !p->value) {
            free(p->key);
            free(p->value);
            return nomem(err, "metadata");
        }
        p->key_len = kl;
        p->value_len = vl;
        p->seq = m->nmeta; /* shards are loaded in order */
        m->nmeta++;
    }
    return ST_OK;
}

/* Where a tensor of shard si must be in the index; ST_OK when it is. */
static int check_listed(const st_model *m, const st_index *ix, size_t si, const size_t *ix_to_model,
                        const st_tensor *t, bool *found, st_error *err)
{
    const shard *s = &m->shards[si];
    char q[160];
    st_quote_name(q, sizeof q, t->name, t->name_len);
    size_t e = st_strtab_find(&ix->names, t->name, t->name_len);
    if (e == SIZE_MAX)
        return st_fail(err, ST_E_HEADER_SCHEMA, t->header_offset,
                       "tensor %s of shard %s (byte %" PRIu64 ") is not listed in the weight_map of %s",
                       q, s->path, t->header_offset, m->index_path);
    size_t named = ix_to_model[ix->entries[e].shard];
    if (named != si)
        return st_fail(err, ST_E_HEADER_SCHEMA, ix->entries[e].name.pos,
                       "tensor %s is in shard %s, but the weight_map of %s (byte %" PRIu64
                       ") puts it in %s",
                       q, s->path, m->index_path, ix->entries[e].name.pos, m->shards[named].name);
    found[e] = true;
    return ST_OK;
}

static int load_shard(st_model *m, size_t si, const st_index *ix, const size_t *ix_to_model,
                      bool *found, st_error *err)
{
    shard *s = &m->shards[si];
    /* O_NONBLOCK: a FIFO named as a shard must not block the open; it is
     * then refused as not a regular file. */
    int fd = open(s->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        if (ix && errno == ENOENT)
            return st_fail(err, ST_E_IO, ST_NO_OFFSET, "shard %s listed in %s is missing", s->path,
                           m->index_path);
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot open %s: %s", s->path, strerror(errno));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "%s is not a regular file", s->path);
    }
    s->dev = sb.st_dev;
    s->ino = sb.st_ino;
    s->size = (uint64_t)sb.st_size;
    s->mtime = sb.st_mtim;

    st_file *f = NULL;
    int rc = st_open(s->path, ST_OPEN_PREAD, &f, err);
    if (rc) {
        close(fd);
        return in_shard(err, rc, s->path);
    }
    struct stat again;
    if (stat(s->path, &again) != 0 || !same_file(&again, s) || st_file_size(f) != s->size) {
        st_close(f);
        close(fd);
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "shard %s changed while it was being opened",
                       s->path);
    }
    s->data_offset = st_data_offset(f);
    size_t n = st_tensor_count(f);
    /* One block per shard: shapes (aligned) first, then names. */
    size_t dims = 0, chars = 0;
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_tensor_at(f, i);
        dims += t->rank;
        chars += t->name_len + 1;
    }
    if (dims > (SIZE_MAX - chars) / sizeof(uint64_t)) {
        st_close(f);
        close(fd);
        return nomem(err, "tensor table");
    }
    s->block = malloc(dims * sizeof(uint64_t) + chars + 1);
    if (!s->block || !grow((void **)&m->tensors, &m->cap, m->count + n, sizeof *m->tensors)) {
        st_close(f);
        close(fd);
        return nomem(err, "tensor table");
    }
    size_t *ts = realloc(m->tshard, m->cap * sizeof *ts);
    if (!ts) {
        st_close(f);
        close(fd);
        return nomem(err, "tensor table");
    }
    m->tshard = ts;
    uint64_t *shp = s->block;
    char *nm = (char *)(shp + dims);
    for (size_t i = 0; i < n && !rc; i++) {
        const st_tensor *t = st_tensor_at(f, i);
        st_tensor c = *t;
        if (t->rank)
            memcpy(shp, t->shape, t->rank * sizeof *shp);
        c.shape = shp;
        shp += t->rank;
        if (t->name_len)
            memcpy(nm, t->name, t->name_len);
        nm[t->name_len] = '\0';
        c.name = nm;
        nm += t->name_len + 1;
        m->tensors[m->count] = c;
        m->tshard[m->count] = si;
        size_t prev = st_strtab_insert(&m->names, m->count);
        if (prev == SIZE_MAX - 1) {
            rc = nomem(err, "name table");
        } else if (prev != SIZE_MAX) {
            char q[160];
            st_quote_name(q, sizeof q, t->name, t->name_len);
            rc = st_fail(err, ST_E_DUPLICATE_KEY, t->header_offset,
                         "tensor %s is in two shards: %s and %s (byte %" PRIu64 ")", q,
                         m->shards[m->tshard[prev]].path, s->path, t->header_offset);
        } else {
            if (m->total > UINT64_MAX - (t->end - t->begin))
                rc = st_fail(err, ST_E_OVERFLOW, ST_NO_OFFSET, "the model's size overflows 64 bits");
            m->total += t->end - t->begin;
            m->count++;
            if (!rc && ix)
                rc = check_listed(m, ix, si, ix_to_model, &c, found, err);
        }
    }
    if (!rc)
        rc = add_metadata(m, f, err);
    st_close(f);
    if (rc) {
        close(fd);
        return rc;
    }
    /* Keep the descriptor while the cache has room: the first reads then
     * need no open. */
    if (m->open_count < m->max_open) {
        s->fd = fd;
        m->open_count++;
    } else {
        close(fd);
    }
    return ST_OK;
}

/* ---- opening ---------------------------------------------------------- */

static int read_index(const char *path, char **text, size_t *len, st_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "%s is not a regular file", path);
    }
    if ((uint64_t)sb.st_size > ST_INDEX_MAX_SIZE) {
        close(fd);
        return st_fail(err, ST_E_HEADER_TOO_LARGE, 0,
                       "%s: index of %" PRIu64 " bytes is over the %llu-byte limit", path,
                       (uint64_t)sb.st_size, (unsigned long long)ST_INDEX_MAX_SIZE);
    }
    size_t n = (size_t)sb.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        close(fd);
        return nomem(err, "index");
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? errno : 0;
            free(buf);
            close(fd);
            return st_fail(err, ST_E_IO, got, "cannot read %s: %s", path,
                           e ? strerror(e) : "file got shorter");
        }
        got += (size_t)r;
    }
    close(fd);
    *text = buf;
    *len = n;
    return ST_OK;
}

static st_model *new_model(void)
{
    st_model *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m);
        return NULL;
    }
    if (pthread_cond_init(&m->freed, NULL) != 0) {
        pthread_mutex_destroy(&m->lock);
        free(m);
        return NULL;
    }
    m->max_open = ST_MODEL_MAX_OPEN;
    st_strtab_init(&m->names, tensor_get, m, st_hash_seed(m));
    return m;
}

static int shard_order_cmp(const void *a, const void *b)
{
    const shard *x = a, *y = b;
    return strcmp(x->name, y->name); /* names hold no NUL */
}

static int open_index(st_model *m, const char *index_path, unsigned flags, st_error *err)
{
    char *text = NULL;
    size_t n = 0;
    int rc = read_index(index_path, &text, &n, err);
    if (rc)
        return rc;
    st_index ix;
    rc = st_index_parse(&ix, text, n, index_path, err);
    free(text);
    if (rc) {
        st_index_free(&ix);
        return rc;
    }
    char *dir = strdup(index_path);
    size_t *ix_to_model = calloc(ix.nshards + 1, sizeof *ix_to_model);
    bool *found = calloc(ix.count + 1, sizeof *found);
    m->shards = calloc(ix.nshards + 1, sizeof *m->shards);
    if (!dir || !ix_to_model || !found || !m->shards) {
        rc = nomem(err, "index");
        goto out;
    }
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    char realdir[PATH_MAX];
    if (!realpath(dir, realdir)) {
        rc = st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot resolve folder %s: %s", dir, strerror(errno));
        goto out;
    }
    for (size_t i = 0; i < ix.nshards; i++) {
        shard *s = &m->shards[i];
        s->fd = -1;
        s->name = dup_n(ix.arena + ix.shards[i].off, ix.shards[i].len);
        s->path = s->name ? st_model_join_path(dir, s->name) : NULL;
        m->nshards++;
        if (!s->path) {
            rc = nomem(err, "index");
            goto out;
        }
        s->used = i; /* the index's position, until sorted */
    }
    qsort(m->shards, m->nshards, sizeof *m->shards, shard_order_cmp);
    for (size_t i = 0; i < m->nshards; i++)
        ix_to_model[m->shards[i].used] = i;
    for (size_t i = 0; i < m->nshards && !rc; i++) {
        m->shards[i].used = 0;
        rc = check_inside(m->shards[i].path, realdir, index_path, err);
        if (!rc)
            rc = load_shard(m, i, &ix, ix_to_model, found, err);
    }
    for (size_t e = 0; e < ix.count && !rc; e++) {
        if (found[e])
            continue;
        char q[160];
        st_quote_name(q, sizeof q, ix.arena + ix.entries[e].name.off, ix.entries[e].name.len);
        rc = st_fail(err, ST_E_HEADER_SCHEMA, ix.entries[e].name.pos,
                     "the weight_map of %s (byte %" PRIu64 ") puts tensor %s in shard %s, which does not hold it",
                     index_path, ix.entries[e].name.pos, q,
                     m->shards[ix_to_model[ix.entries[e].shard]].path);
    }
    if (!rc && ix.has_total_size && ix.total_size != m->total && !(flags & ST_MODEL_IGNORE_TOTAL_SIZE))
        rc = st_fail(err, ST_E_HEADER_SCHEMA, ST_NO_OFFSET,
                     "%s: metadata.total_size is %" PRIu64 " but the tensors take %" PRIu64 " bytes",
                     index_path, ix.total_size, m->total);
out:
    free(dir);
    free(ix_to_model);
    free(found);
    st_index_free(&ix);
    return rc;
}

static int open_single(st_model *m, const char *path, st_error *err)
{
    m->shards = calloc(1, sizeof *m->shards);
    if (!m->shards)
        return nomem(err, "model");
    m->nshards = 1;
    shard *s = &m->shards[0];
    s->fd = -1;
    const char *slash = strrchr(path, '/');
    s->name = strdup(slash ? slash + 1 : path);
    s->path = strdup(path);
    if (!s->name || !s->path)
        return nomem(err, "model");
    return load_shard(m, 0, NULL, NULL, NULL, err);
}

static int meta_cmp(const void *a, const void *b)
{
    const meta_pair *x = a, *y = b;
    int c = st_name_cmp(x->key, x->key_len, y->key, y->key_len);
    return c ? c : (x->seq < y->seq ? -1 : x->seq > y->seq);
}

static int name_order_cmp(const void *a, const void *b)
{
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    return st_name_cmp(x->name, x->name_len, y->name, y->name_len);
}

static int finish(st_model *m, st_error *err)
{
    if (m->nmeta) {
        qsort(m->meta, m->nmeta, sizeof *m->meta, meta_cmp);
        size_t o = 0;
        for (size_t i = 0; i < m->nmeta; i++) {
            if (o && st_name_cmp(m->meta[o - 1].key, m->meta[o - 1].key_len, m->meta[i].key,
                                 m->meta[i].key_len) == 0) {
                free(m->meta[i].key);
                free(m->meta[i].value);
                continue;
            }
            m->meta[o++] = m->meta[i];
        }
        m->nmeta = o;
    }
    m->by_name = malloc((m->count + 1) * sizeof *m->by_name);
    if (!m->by_name)
        return nomem(err, "name order");
    for (size_t i = 0; i < m->count; i++)
        m->by_name[i] = &m->tensors[i];
    qsort(m->by_name, m->count, sizeof *m->by_name, name_order_cmp);
    return ST_OK;
}

int st_model_open(const char *path, unsigned flags, st_model **out, st_error *err)
{
    return st_model_open_variant(path, NULL, flags, out, err);
}

int st_model_open_variant(const char *path, const char *variant, unsigned flags, st_model **out,
                          st_error *err)
{
    if (!out || !path)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_model_open: path and out are required");
    *out = NULL;
    if (flags & ~(ST_MODEL_IGNORE_TOTAL_SIZE | ST_MODEL_VARIANT_FALLBACK))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_model_open: unknown flags 0x%x", flags);
    struct stat sb;
    if (stat(path, &sb) != 0)
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot open %s: %s", path, strerror(errno));
    char *found = NULL;
    char used[ST_MODEL_VARIANT_MAX + 1] = "";
    if (S_ISDIR(sb.st_mode)) {
        int rc = st_model_find_in_folder(path, variant, flags, &found, used, err);
        if (rc)
            return rc;
        path = found;
    }
    st_model *m = new_model();
    if (!m) {
        free(found);
        return nomem(err, "model");
    }
    memcpy(m->variant, used, sizeof used);
    int rc;
    if (ends_with(path, ".json") || (strlen(path) == 5 && strcmp(path, ".json") == 0)) {
        m->index_path = strdup(path);
        rc = m->index_path ? open_index(m, path, flags, err) : nomem(err, "model");
    } else {
        rc = open_single(m, path, err);
    }
    free(found);
    if (!rc)
        rc = finish(m, err);
    if (rc) {
        st_model_close(m);
        return rc;
    }
    *out = m;
    return ST_OK;
}

void st_model_close(st_model *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nshards; i++) {
        shard *s = &m->shards[i];
        if (s->fd >= 0)
            close(s->fd);
        free(s->name);
        free(s->path);
        free(s->block);
    }
    for (size_t i = 0; i < m->nmeta; i++) {
        free(m->meta[i].key);
        free(m->meta[i].value);
    }
    free(m->meta);
    free(m->shards);
    free(m->tensors);
    free(m->tshard);
    free(m->by_name);
    free(m->index_path);
    st_strtab_free(&m->names);
    pthread_cond_destroy(&m->freed);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* ---- accessors --------------------------------------------------------- */

const char *st_model_variant(const st_model *m)
{
    return m && m->variant[0] ? m->variant : NULL;
}

const char *st_model_index_path(const st_model *m)
{
    return m ? m->index_path : NULL;
}

size_t st_model_shard_count(const st_model *m)
{
    return m ? m->nshards : 0;
}

const char *st_model_shard_name(const st_model *m, size_t i)
{
    return m && i < m->nshards ? m->shards[i].name : NULL;
}

const char *st_model_shard_path(const st_model *m, size_t i)
{
    return m && i < m->nshards ? m->shards[i].path : NULL;
}

uint64_t st_model_shard_size(const st_model *m, size_t i)
{
    return m && i < m->nshards ? m->shards[i].size : 0;
}

uint64_t st_model_shard_data_offset(const st_model *m, size_t i)
{
    return m && i < m->nshards ? m->shards[i].data_offset : 0;
}

uint64_t st_model_total_size(const st_model *m)
{
    return m ? m->total : 0;
}

size_t st_model_tensor_count(const st_model *m)
{
    return m ? m->count : 0;
}

const st_tensor *st_model_tensor_at(const st_model *m, size_t i)
{
    return m && i < m->count ? &m->tensors[i] : NULL;
}

const st_tensor *st_model_tensor_by_name_order(const st_model *m, size_t i)
{
    return m && i < m->count ? m->by_name[i] : NULL;
}

const st_tensor *st_model_find(const st_model *m, const char *name, size_t name_len)
{
    if (!m || (!name && name_len))
        return NULL;
    size_t k = st_strtab_find(&m->names, name ? name : "", name_len);
    return k == SIZE_MAX ? NULL : &m->tensors[k];
}

size_t st_model_tensor_shard(const st_model *m, const st_tensor *t)
{
    if (!m || !t || !m->count || t < m->tensors || t >= m->tensors + m->count)
        return SIZE_MAX;
    return m->tshard[t - m->tensors];
}

/* ---- reads ------------------------------------------------------------- */

/* A descriptor for shard si, counted as in use until release(). When
 * every descriptor the cache allows is in use, waits for one, or with
 * !wait fails with ST_E_UNSUPPORTED. */
static int acquire_fd(st_model *m, size_t si, int *fd, bool wait, st_error *err)
{
    shard *s = &m->shards[si];
    pthread_mutex_lock(&m->lock);
    while (s->fd < 0 && m->open_count >= m->max_open) {
        shard *victim = NULL;
        for (size_t i = 0; i < m->nshards; i++) {
            shard *o = &m->shards[i];
            if (o->fd >= 0 && o->refs == 0 && (!victim || o->used < victim->used))
                victim = o;
        }
        if (victim) {
            close(victim->fd);
            victim->fd = -1;
            m->open_count--;
            break;
        }
        if (!wait) {
            pthread_mutex_unlock(&m->lock);
            return ST_E_UNSUPPORTED;
        }
        pthread_cond_wait(&m->freed, &m->lock);
    }
    if (s->fd < 0) {
        int nfd = open(s->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        struct stat sb;
        if (nfd < 0 || fstat(nfd, &sb) != 0 || !same_file(&sb, s)) {
            int e = nfd < 0 ? errno : 0;
            if (nfd >= 0)
                close(nfd);
            pthread_mutex_unlock(&m->lock);
            if (e)
                return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot reopen shard %s: %s", s->path,
                               strerror(e));
            return st_fail(err, ST_E_IO, ST_NO_OFFSET,
                           "shard %s was replaced or changed since the model was opened", s->path);
        }
        s->fd = nfd;
        m->open_count++;
    }
    s->refs++;
    s->used = ++m->clock;
    *fd = s->fd;
    pthread_mutex_unlock(&m->lock);
    return ST_OK;
}

static int acquire(st_model *m, size_t si, int *fd, st_error *err)
{
    return acquire_fd(m, si, fd, true, err);
}

static void release(st_model *m, size_t si)
{
    pthread_mutex_lock(&m->lock);
    if (--m->shards[si].refs == 0)
        pthread_cond_broadcast(&m->freed);
    pthread_mutex_unlock(&m->lock);
}

int st_model_tensor_file_range(const st_model *cm, const st_tensor *t, int *fd, uint64_t *off)
{
    size_t si = st_model_tensor_shard(cm, t);
    if (si == SIZE_MAX)
        return ST_E_ARG;
    st_model *m = (st_model *)cm; /* only the descriptor cache changes, under its lock */
    int rc = acquire_fd(m, si, fd, false, NULL);
    if (rc == ST_OK)
        *off = m->shards[si].data_offset + t->begin;
    return rc;
}

void st_model_tensor_file_release(const st_model *cm, const st_tensor *t)
{
    size_t si = st_model_tensor_shard(cm, t);
    if (si != SIZE_MAX)
        release((st_model *)cm, si);
}

int st_model_tensor_read(const st_model *cm, const st_tensor *t, uint64_t offset, void *buf,
                         size_t len, st_error *err)
{
    size_t si = st_model_tensor_shard(cm, t);
    if (si == SIZE_MAX || (!buf && len))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_model_tensor_read: tensor is not from this model");
    uint64_t nbytes = t->end - t->begin;
    if (offset > nbytes || len > nbytes - offset) {
        char q[160];
        st_quote_name(q, sizeof q, t->name, t->name_len);
        return st_fail(err, ST_E_RANGE, ST_NO_OFFSET,
                       "read of %zu bytes at byte %" PRIu64 " of tensor %s is past its %" PRIu64 " bytes",
                       len, offset, q, nbytes);
    }
    if (!len)
        return ST_OK;
    st_model *m = (st_model *)cm; /* only the descriptor cache changes, under its lock */
    const shard *s = &m->shards[si];
    int fd = -1;
    int rc = acquire(m, si, &fd, err);
    if (rc)
        return rc;
    uint64_t at = s->data_offset + t->begin + offset;
    unsigned char *p = buf;
    while (len) {
        size_t chunk = len > (1u << 30) ? (1u << 30) : len;
        ssize_t r = pread(fd, p, chunk, (off_t)at);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? errno : 0;
            release(m, si);
            return st_fail(err, ST_E_IO, at, "shard %s: read at offset %" PRIu64 " failed: %s",
                           s->path, at, e ? strerror(e) : "the file got shorter");
        }
        p += r;
        len -= (size_t)r;
        at += (uint64_t)r;
    }
    release(m, si);
    return ST_OK;
}

/* ---- metadata ---------------------------------------------------------- */

int st_model_metadata_present(const st_model *m)
{
    return m ? m->meta_present : 0;
}

size_t st_model_metadata_count(const st_model *m)
{
    return m ? m->nmeta : 0;
}

int st_model_metadata_at(const st_model *m, size_t i, const char **key, size_t *key_len,
                         const char **value, size_t *value_len)
{
    if (!m || i >= m->nmeta)
        return ST_E_NOT_FOUND;
    const meta_pair *p = &m->meta[i];
    if (key)
        *key = p->key;
    if (key_len)
        *key_len = p->key_len;
    if (value)
        *value = p->value;
    if (value_len)
        *value_len = p->value_len;
    return ST_OK;
}

const char *st_model_metadata_get(const st_model *m, const char *key, size_t key_len,
                                  size_t *value_len)
{
    if (!m || (!key && key_len))
        return NULL;
    size_t lo = 0, hi = m->nmeta;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = st_name_cmp(m->meta[mid].key, m->meta[mid].key_len, key ? key : "", key_len);
        if (c == 0) {
            if (value_len)
                *value_len = m->meta[mid].value_len;
            return m->meta[mid].value;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}
