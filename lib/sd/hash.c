/*
 * File digests in one read pass: SHA-256 (libcrypto EVP), A1111's autov1 /
 * autov2, the kohya "addnet" autov3, CRC-32 (zlib) and BLAKE3 (blake3.c).
 *
 * Pipeline: the calling thread reads the file in large chunks (8 MiB by
 * default) into a small ring of buffers; "lanes" - worker threads - each
 * own some of the digests and walk the same ring in order. A buffer is
 * reused once every lane is done with it, so reading overlaps hashing and
 * the digests run side by side on different cores over one copy of the
 * data. Digests are given to lanes longest first, each to the least loaded
 * lane, using their relative costs (SHA-256 is the slow one: about 1 GB/s
 * even with the SHA extensions, BLAKE3 about 2 GB/s with AVX2/AVX-512,
 * CRC-32 about 3 GB/s).
 *
 * Where each hash comes from:
 *  - autov1: A1111 modules/sd_models.py model_hash() - SHA-256 of
 *    file.read(0x10000) after seek(0x100000), first 8 hex digits. Shorter
 *    files hash what the read returns, so a file under 1 MiB gives the hash
 *    of nothing (e3b0c442). Civitai (model-scanner HashTask.cs) leaves it
 *    null for files under 2 MiB; st_hash_text applies that in its style.
 *  - autov2: A1111's sha256 shorthash, first 10 hex digits.
 *  - autov3: A1111 modules/hashes.py addnet_hash_safetensors() and kohya
 *    sd-scripts library/train_util.py: n = u64 LE of the first 8 bytes,
 *    SHA-256 of everything from offset n + 8 to EOF.
 */
#include "common/internal.h"
#include "sd/blake3.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <zlib.h>

#define AUTOV1_OFFSET 0x100000u
#define AUTOV1_LEN 0x10000u
#define CIVITAI_AUTOV1_MIN (2u * 0x100000u)
#define DEFAULT_CHUNK (8u << 20)
#define RING 4
#define MAX_LANES 4

enum task { T_SHA256, T_AUTOV3, T_BLAKE3, T_CRC32, T_COUNT };
/* Relative cost per byte, measured on x86-64 with SHA-NI and AVX-512. */
static const unsigned task_cost[T_COUNT] = {100, 100, 45, 35};

typedef struct lane {
    unsigned tasks; /* bit per enum task */
    EVP_MD_CTX *sha;
    EVP_MD_CTX *v3;
    uLong crc;
    st_blake3 *b3;
    int failed; /* a digest update failed */
    pthread_t tid;
    int started;
    struct engine *eng;
} lane;

typedef struct slot {
    uint8_t *buf;         /* owned buffer (file sources) */
    const uint8_t *data;  /* the bytes: buf, or into the caller's memory */
    size_t len;
    uint64_t off;
    unsigned pending;     /* lanes still to process it */
} slot;

typedef struct engine {
    /* source */
    int fd;
    int use_read; /* unseekable: read() instead of pread() */
    uint64_t expected; /* the file's size for progress (0: unknown) */
    const uint8_t *mem;
    uint64_t mem_len;
    size_t chunk;
    /* ring */
    pthread_mutex_t mu;
    pthread_cond_t filled, freed;
    slot slots[RING];
    uint64_t produced; /* chunks published */
    int done;          /* no more chunks */
    /* facts from the first chunk, set before it is published */
    int v3_possible;
    uint64_t v3_off;
    lane lanes[MAX_LANES];
    unsigned nlanes;
} engine;

/* ---- digests of one chunk ---- */

static void lane_process(lane *l, const engine *e, uint64_t off, const uint8_t *p, size_t len)
{
    if (l->tasks & (1u << T_SHA256))
        if (EVP_DigestUpdate(l->sha, p, len) != 1)
            l->failed = 1;
    if ((l->tasks & (1u << T_AUTOV3)) && e->v3_possible && off + len > e->v3_off) {
        uint64_t skip = e->v3_off > off ? e->v3_off - off : 0;
        if (EVP_DigestUpdate(l->v3, p + skip, len - (size_t)skip) != 1)
            l->failed = 1;
    }
    if (l->tasks & (1u << T_CRC32))
        l->crc = crc32_z(l->crc, p, len);
    if (l->tasks & (1u << T_BLAKE3))
        st_blake3_update(l->b3, p, len);
}

static void *lane_main(void *arg)
{
    lane *l = arg;
    engine *e = l->eng;
    for (uint64_t k = 0;; k++) {
        pthread_mutex_lock(&e->mu);
        while (e->produced <= k && !e->done)
            pthread_cond_wait(&e->filled, &e->mu);
        if (e->produced <= k) {
            pthread_mutex_unlock(&e->mu);
            break;
        }
        slot *s = &e->slots[k % RING];
        pthread_mutex_unlock(&e->mu);
        lane_process(l, e, s->off, s->data, s->len);
        pthread_mutex_lock(&e->mu);
        if (--s->pending == 0)
            pthread_cond_broadcast(&e->freed);
        pthread_mutex_unlock(&e->mu);
    }
    return NULL;
}

/* ---- reading ---- */

/* Fills up to `want` bytes at `off`; returns bytes read (less only at
 * EOF) or -1 with errno set. */
static ssize_t read_full(engine *e, uint8_t *buf, size_t want, uint64_t off)
{
    size_t got = 0;
    while (got < want) {
        ssize_t r;
        if (e->use_read) {
            r = read(e->fd, buf + got, want - got);
        } else {
            r = pread(e->fd, buf + got, want - got, (off_t)(off + got));
            if (r < 0 && errno == ESPIPE && off == 0 && got == 0) {
                e->use_read = 1; /* a pipe or terminal: read it as a stream */
                continue;
            }
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* Next chunk into slot s. Returns 1 with data, 0 at EOF, -1 on error. */
static int fill_slot(engine *e, slot *s, uint64_t off, st_error *err)
{
    s->off = off;
    if (e->mem) {
        uint64_t left = e->mem_len - off;
        s->len = left < e->chunk ? (size_t)left : e->chunk;
        s->data = e->mem + off;
        return s->len > 0;
    }
    ssize_t r = read_full(e, s->buf, e->chunk, off);
    if (r < 0) {
        st_fail(err, ST_E_IO, off, "read failed at byte %llu: %s",
                (unsigned long long)off, strerror(errno));
        return -1;
    }
    s->len = (size_t)r;
    s->data = s->buf;
    return r > 0;
}

/* What the first chunk tells: where autov3 starts. */
static void inspect_first(engine *e, const slot *s)
{
    if (s->len < 8)
        return;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | s->data[i];
    if (n > ST_MAX_HEADER_SIZE)
        return;
    e->v3_possible = 1;
    e->v3_off = 8 + n;
}

/* ---- lanes ---- */

static int lane_init(lane *l, unsigned tasks)
{
    memset(l, 0, sizeof *l);
    l->tasks = tasks;
    if (tasks & (1u << T_SHA256)) {
        l->sha = EVP_MD_CTX_new();
        if (!l->sha || EVP_DigestInit_ex(l->sha, EVP_sha256(), NULL) != 1)
            return ST_E_NOMEM;
    }
    if (tasks & (1u << T_AUTOV3)) {
        l->v3 = EVP_MD_CTX_new();
        if (!l->v3 || EVP_DigestInit_ex(l->v3, EVP_sha256(), NULL) != 1)
            return ST_E_NOMEM;
    }
    if (tasks & (1u << T_CRC32))
        l->crc = crc32_z(0L, Z_NULL, 0);
    if (tasks & (1u << T_BLAKE3)) {
        l->b3 = malloc(sizeof *l->b3);
        if (!l->b3)
            return ST_E_NOMEM;
        st_blake3_init(l->b3);
    }
    return ST_OK;
}

static void lane_free(lane *l)
{
    EVP_MD_CTX_free(l->sha);
    EVP_MD_CTX_free(l->v3);
    free(l->b3);
}

/* Longest-processing-time-first: each task, costliest first, goes to the
 * least loaded of `n` lanes. */
static unsigned assign_lanes(unsigned tasks, unsigned n, unsigned out[MAX_LANES])
{
    unsigned load[MAX_LANES] = {0};
    unsigned ntasks = (unsigned)__builtin_popcount(tasks);
    if (n > ntasks)
        n = ntasks;
    if (n > MAX_LANES)
        n = MAX_LANES;
    if (n == 0)
        n = 1;
    memset(out, 0, MAX_LANES * sizeof *out);
    /* task_cost is already in descending order */
    for (unsigned t = 0; t < T_COUNT; t++) {
        if (!(tasks & (1u << t)))
            continue;
        unsigned best = 0;
        for (unsigned i = 1; i < n; i++)
            if (load[i] < load[best])
                best = i;
        out[best] |= 1u << t;
        load[best] += task_cost[t];
    }
    return n;
}

static unsigned cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 64 ? 64 : (unsigned)n;
}

/* ---- the pass ---- */

static int run(engine *e, unsigned algos, const st_hash_options *opt, st_hashes *out,
               st_error *err)
{
    unsigned threads = opt ? opt->threads : 0;
    size_t chunk = opt && opt->chunk_size ? opt->chunk_size : DEFAULT_CHUNK;
    if (algos == 0 || (algos & ~ST_HASH_ALL) || chunk < (64u << 10) || chunk > (1u << 30))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "no digest asked for, or a bad option");
    e->chunk = chunk;

    unsigned tasks = 0;
    if (algos & (ST_HASH_SHA256 | ST_HASH_AUTOV2))
        tasks |= 1u << T_SHA256;
    if (algos & ST_HASH_AUTOV3)
        tasks |= 1u << T_AUTOV3;
    if (algos & ST_HASH_CRC32)
        tasks |= 1u << T_CRC32;
    if (algos & ST_HASH_BLAKE3)
        tasks |= 1u << T_BLAKE3;

    /* threads == 1: everything in this thread. Otherwise one lane thread
     * per CPU at most (the reader mostly waits on the page cache copy). */
    int inline_mode = threads == 1 || tasks == 0;
    unsigned want = threads == 0 ? cpu_count() : threads;
    unsigned groups[MAX_LANES];
    e->nlanes = inline_mode ? 1 : assign_lanes(tasks, want, groups);
    if (inline_mode)
        groups[0] = tasks;

    int rc = ST_OK;
    EVP_MD_CTX *v1 = NULL;
    uint64_t total = 0;
    int mu_init = 0;
    for (unsigned i = 0; i < e->nlanes && rc == ST_OK; i++) {
        rc = lane_init(&e->lanes[i], groups[i]);
        e->lanes[i].eng = e;
    }
    if (rc == ST_OK && (algos & ST_HASH_AUTOV1)) {
        v1 = EVP_MD_CTX_new();
        if (!v1 || EVP_DigestInit_ex(v1, EVP_sha256(), NULL) != 1)
            rc = ST_E_NOMEM;
    }
    unsigned nslots = inline_mode ? 1 : RING;
    for (unsigned i = 0; i < nslots && rc == ST_OK && !e->mem; i++) {
        e->slots[i].buf = malloc(chunk);
        if (!e->slots[i].buf)
            rc = ST_E_NOMEM;
    }
    if (rc != ST_OK) {
        st_fail(err, rc, ST_NO_OFFSET, "out of memory");
        goto done;
    }
    if (pthread_mutex_init(&e->mu, NULL) == 0) {
        if (pthread_cond_init(&e->filled, NULL) == 0) {
            if (pthread_cond_init(&e->freed, NULL) == 0)
                mu_init = 1;
            else
                pthread_cond_destroy(&e->filled);
        }
        if (!mu_init)
            pthread_mutex_destroy(&e->mu);
    }
    if (!mu_init) {
        rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "cannot create a lock");
        goto done;
    }
    if (!inline_mode) {
        for (unsigned i = 0; i < e->nlanes; i++) {
            if (pthread_create(&e->lanes[i].tid, NULL, lane_main, &e->lanes[i]) != 0) {
                rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "cannot start a thread");
                break;
            }
            e->lanes[i].started = 1;
        }
    }

    for (uint64_t k = 0; rc == ST_OK; k++) {
        slot *s = &e->slots[k % nslots];
        if (!inline_mode) {
            pthread_mutex_lock(&e->mu);
            while (s->pending > 0)
                pthread_cond_wait(&e->freed, &e->mu);
            pthread_mutex_unlock(&e->mu);
        }
        int got = fill_slot(e, s, total, err);
        if (got < 0) {
            rc = ST_E_IO;
            break;
        }
        if (got == 0)
            break;
        if (k == 0)
            inspect_first(e, s);
        if (v1 && s->off < AUTOV1_OFFSET + AUTOV1_LEN && s->off + s->len > AUTOV1_OFFSET) {
            uint64_t a = s->off > AUTOV1_OFFSET ? s->off : AUTOV1_OFFSET;
            uint64_t b = s->off + s->len;
            if (b > AUTOV1_OFFSET + AUTOV1_LEN)
                b = AUTOV1_OFFSET + AUTOV1_LEN;
            if (EVP_DigestUpdate(v1, s->data + (a - s->off), (size_t)(b - a)) != 1)
                rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "SHA-256 update failed");
        }
        total += s->len;
        if (opt && opt->progress &&
            opt->progress(opt->progress_ctx, total, e->mem ? e->mem_len : e->expected) != 0) {
            rc = st_fail(err, ST_E_CALLBACK, ST_NO_OFFSET, "stopped by the progress callback");
            break;
        }
        if (inline_mode) {
            lane_process(&e->lanes[0], e, s->off, s->data, s->len);
        } else {
            pthread_mutex_lock(&e->mu);
            s->pending = e->nlanes;
            e->produced = k + 1;
            pthread_cond_broadcast(&e->filled);
            pthread_mutex_unlock(&e->mu);
        }
        if (s->len < chunk && !e->use_read)
            break; /* a short read is EOF */
    }
    if (!inline_mode) {
        pthread_mutex_lock(&e->mu);
        e->done = 1;
        pthread_cond_broadcast(&e->filled);
        pthread_mutex_unlock(&e->mu);
        for (unsigned i = 0; i < e->nlanes; i++)
            if (e->lanes[i].started)
                pthread_join(e->lanes[i].tid, NULL);
    }
    if (rc != ST_OK)
        goto done;

    /* ---- results ---- */
    memset(out, 0, sizeof *out);
    out->size = total;
    for (unsigned i = 0; i < e->nlanes; i++) {
        lane *l = &e->lanes[i];
        unsigned len = 0;
        if (l->failed) {
            rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "a digest update failed");
            goto done;
        }
        if (l->sha && EVP_DigestFinal_ex(l->sha, out->sha256, &len) == 1)
            out->computed |= algos & (ST_HASH_SHA256 | ST_HASH_AUTOV2);
        if (l->v3 && e->v3_possible && e->v3_off <= total &&
            EVP_DigestFinal_ex(l->v3, out->autov3, &len) == 1) {
            out->computed |= ST_HASH_AUTOV3;
            out->autov3_offset = e->v3_off;
        }
        if (l->tasks & (1u << T_CRC32)) {
            out->crc32 = (uint32_t)l->crc;
            out->computed |= ST_HASH_CRC32;
        }
        if (l->b3) {
            st_blake3_final(l->b3, out->blake3);
            out->computed |= ST_HASH_BLAKE3;
        }
    }
    if (v1) {
        unsigned len = 0;
        if (EVP_DigestFinal_ex(v1, out->autov1, &len) == 1)
            out->computed |= ST_HASH_AUTOV1;
    }

done:
    if (mu_init) {
        pthread_cond_destroy(&e->freed);
        pthread_cond_destroy(&e->filled);
        pthread_mutex_destroy(&e->mu);
    }
    EVP_MD_CTX_free(v1);
    for (unsigned i = 0; i < e->nlanes; i++)
        lane_free(&e->lanes[i]);
    for (unsigned i = 0; i < RING; i++)
        free(e->slots[i].buf);
    return rc;
}

int st_hash_fd(int fd, unsigned algos, const st_hash_options *opt, st_hashes *out,
               st_error *err)
{
    if (fd < 0 || !out)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "bad file descriptor or output");
    engine *e = calloc(1, sizeof *e);
    if (!e)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    e->fd = fd;
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
        (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        e->expected = (uint64_t)st.st_size;
    }
    int rc = run(e, algos, opt, out, err);
    free(e);
    return rc;
}

int st_hash_path(const char *path, unsigned algos, const st_hash_options *opt,
                 st_hashes *out, st_error *err)
{
    if (!path)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "no path");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        close(fd);
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "%s is a directory", path);
    }
    int rc = st_hash_fd(fd, algos, opt, out, err);
    close(fd);
    return rc;
}

int st_hash_memory(const void *data, size_t len, unsigned algos, const st_hash_options *opt,
                   st_hashes *out, st_error *err)
{
    if ((!data && len) || !out)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "no buffer or output");
    engine *e = calloc(1, sizeof *e);
    if (!e)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    static const uint8_t empty[1];
    e->fd = -1;
    e->mem = len ? data : empty;
    e->mem_len = len;
    int rc = run(e, algos, opt, out, err);
    free(e);
    return rc;
}

/* ---- names and text ---- */

static const struct {
    unsigned algo;
    const char *name;
} names[] = {
    {ST_HASH_SHA256, "sha256"}, {ST_HASH_AUTOV1, "autov1"}, {ST_HASH_AUTOV2, "autov2"},
    {ST_HASH_AUTOV3, "autov3"}, {ST_HASH_CRC32, "crc32"},   {ST_HASH_BLAKE3, "blake3"},
};

const char *st_hash_name(unsigned algo)
{
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i].algo == algo)
            return names[i].name;
    return NULL;
}

int st_hash_from_name(const char *name, size_t len, unsigned *algo)
{
    if (!name)
        return ST_E_NOT_FOUND;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i].name) == len && strncasecmp(names[i].name, name, len) == 0) {
            if (algo)
                *algo = names[i].algo;
            return ST_OK;
        }
    return ST_E_NOT_FOUND;
}

static void hex(char *dst, const uint8_t *src, size_t n, int upper)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        dst[2 * i] = digits[src[i] >> 4];
        dst[2 * i + 1] = digits[src[i] & 15];
    }
    dst[2 * n] = '\0';
}

int st_hash_text(const st_hashes *h, unsigned algo, unsigned style, char out[ST_HASH_TEXT_MAX])
{
    if (!h || !out || !st_hash_name(algo) || style > ST_HASH_STYLE_CIVITAI)
        return ST_E_ARG;
    out[0] = '\0';
    if (!(h->computed & algo))
        return ST_E_NOT_FOUND;
    int up = style == ST_HASH_STYLE_CIVITAI;
    switch (algo) {
    case ST_HASH_SHA256:
        hex(out, h->sha256, 32, up);
        break;
    case ST_HASH_AUTOV1:
        if (up && h->size < CIVITAI_AUTOV1_MIN)
            return ST_E_NOT_FOUND;
        hex(out, h->autov1, 4, up);
        break;
    case ST_HASH_AUTOV2:
        hex(out, h->sha256, 5, up);
        break;
    case ST_HASH_AUTOV3:
        hex(out, h->autov3, 32, up);
        break;
    case ST_HASH_CRC32: {
        /* Plain: the value, as zlib.crc32 and cksum print it. Civitai:
         * .NET's Crc32.GetCurrentHash() bytes, which are little-endian. */
        uint32_t c = h->crc32;
        uint8_t be[4] = {(uint8_t)(c >> 24), (uint8_t)(c >> 16), (uint8_t)(c >> 8), (uint8_t)c};
        uint8_t le[4] = {(uint8_t)c, (uint8_t)(c >> 8), (uint8_t)(c >> 16), (uint8_t)(c >> 24)};
        hex(out, up ? le : be, 4, up);
        break;
    }
    case ST_HASH_BLAKE3:
        hex(out, h->blake3, 32, up);
        break;
    default:
        return ST_E_ARG;
    }
    return ST_OK;
}
