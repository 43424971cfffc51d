/*
 * File access: opening (mmap, pread or a caller's buffer), the length
 * prefix checks, and the accessors over a validated header.
 */
#include "format/header.h"
#include "format/json.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

enum { MODE_MMAP, MODE_PREAD, MODE_MEMORY };

struct st_file {
    int mode;
    int fd;                      /* -1 when not owned */
    const unsigned char *base;   /* whole file (mmap or memory), NULL for pread */
    size_t map_len;              /* bytes mapped, 0 when not mapped */
    char *header_copy;           /* pread mode: the header read into memory */
    const char *header;
    uint64_t header_len;
    uint64_t file_size;
    st_header h;
    const st_tensor *tensors;    /* f->h.tensors: file order */
    _Atomic(void *) name_order;  /* const st_tensor *[count], built on first use */
};

int st_file_fd(const st_file *f, uint64_t *size)
{
    if (size)
        *size = f->file_size;
    return f->mode == MODE_MEMORY ? -1 : f->fd;
}

static uint64_t read_le64(const unsigned char *b)
{
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--)
        v = v << 8 | b[k];
    return v;
}

static int pread_full(int fd, void *buf, size_t len, uint64_t off, st_error *err)
{
    unsigned char *p = buf;
    while (len) {
        size_t chunk = len > (1u << 30) ? (1u << 30) : len;
        ssize_t r = pread(fd, p, chunk, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return st_fail(err, ST_E_IO, off, "read failed at file offset %" PRIu64 ": %s", off,
                           strerror(errno));
        }
        if (r == 0)
            return st_fail(err, ST_E_IO, off,
                           "file ended at offset %" PRIu64 " (truncated while open?)", off);
        p += r;
        len -= (size_t)r;
        off += (uint64_t)r;
    }
    return ST_OK;
}

/* Everything after the file's bytes are reachable: the length prefix, the
 * header, and the tensor table. */
static int load(st_file *f, st_error *err)
{
    unsigned char prefix[8];
    if (f->file_size < 8)
        return st_fail(err, ST_E_HEADER_TOO_SMALL, 0,
                       "file has %" PRIu64 " bytes, fewer than the 8-byte header length", f->file_size);
    if (f->base)
        memcpy(prefix, f->base, 8);
    else if (pread_full(f->fd, prefix, 8, 0, err))
        return ST_E_IO;
    uint64_t n = read_le64(prefix);
    if (n > ST_MAX_HEADER_SIZE)
        return st_fail(err, ST_E_HEADER_TOO_LARGE, 0,
                       "header length %" PRIu64 " is over the limit of 100,000,000 bytes", n);
    if (n > f->file_size - 8)
        return st_fail(err, ST_E_HEADER_LENGTH, 0,
                       "header length %" PRIu64 " runs past the end of the file (%" PRIu64 " bytes)", n,
                       f->file_size);
    f->header_len = n;
    if (f->base) {
        f->header = (const char *)f->base + 8;
    } else {
        f->header_copy = malloc(n ? n : 1);
        if (!f->header_copy)
            return st_fail(err, ST_E_NOMEM, 8, "out of memory for a %" PRIu64 "-byte header", n);
        if (pread_full(f->fd, f->header_copy, n, 8, err))
            return ST_E_IO;
        f->header = f->header_copy;
    }
    size_t bad = st_utf8_invalid_at((const unsigned char *)f->header, n);
    if (bad != SIZE_MAX)
        return st_fail(err, ST_E_HEADER_UTF8, 8 + bad,
                       "header is not valid UTF-8: bad byte 0x%02x at header byte %zu (file offset %" PRIu64 ")",
                       (unsigned char)f->header[bad], bad, (uint64_t)(8 + bad));
    f->h.hash_seed = st_hash_seed(f);
    int rc = st_header_parse(&f->h, f->header, n, 8, err);
    if (!rc)
        rc = st_header_validate(&f->h, f->file_size - 8 - n, 8 + n, err);
    if (rc)
        return rc;

    f->tensors = f->h.tensors;
    return ST_OK;
}

static void release(st_file *f)
{
    if (!f)
        return;
    if (f->map_len)
        munmap((void *)f->base, f->map_len);
    if (f->fd >= 0)
        close(f->fd);
    free(f->header_copy);
    free(atomic_load(&f->name_order));
    st_header_free(&f->h);
    free(f);
}

static st_file *new_file(int mode)
{
    st_file *f = calloc(1, sizeof *f);
    if (f) {
        f->mode = mode;
        f->fd = -1;
        atomic_init(&f->name_order, NULL);
    }
    return f;
}

int st_open(const char *path, unsigned flags, st_file **out, st_error *err)
{
    if (!out || !path)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_open: path and out are required");
    *out = NULL;
    st_file *f = new_file(flags & ST_OPEN_PREAD ? MODE_PREAD : MODE_MMAP);
    if (!f)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) {
        int e = errno;
        release(f);
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot open: %s", strerror(e));
    }
    struct stat st;
    if (fstat(f->fd, &st) != 0) {
        int e = errno;
        release(f);
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot stat: %s", strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        release(f);
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "not a regular file");
    }
    f->file_size = (uint64_t)st.st_size;
    if (f->mode == MODE_MMAP && f->file_size >= 8) {
        if (f->file_size > SIZE_MAX) {
            release(f);
            return st_fail(err, ST_E_IO, ST_NO_OFFSET, "file too large to map");
        }
        void *m = mmap(NULL, (size_t)f->file_size, PROT_READ, MAP_PRIVATE, f->fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            release(f);
            return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot map: %s", strerror(e));
        }
        f->base = m;
        f->map_len = (size_t)f->file_size;
        /* The mapping keeps the file reachable; the descriptor is no longer needed. */
        close(f->fd);
        f->fd = -1;
    }
    int rc = load(f, err);
    if (rc) {
        release(f);
        return rc;
    }
    *out = f;
    return ST_OK;
}

int st_open_memory(const void *data, size_t len, unsigned flags, st_file **out, st_error *err)
{
    (void)flags;
    if (!out || (!data && len))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_open_memory: data and out are required");
    *out = NULL;
    st_file *f = new_file(MODE_MEMORY);
    if (!f)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    static const unsigned char empty[1];
    f->base = data ? data : empty;
    f->file_size = len;
    int rc = load(f, err);
    if (rc) {
        release(f);
        return rc;
    }
    *out = f;
    return ST_OK;
}

void st_close(st_file *file)
{
    release(file);
}

uint64_t st_file_size(const st_file *f)
{
    return f ? f->file_size : 0;
}

uint64_t st_header_size(const st_file *f)
{
    return f ? f->header_len : 0;
}

uint64_t st_data_offset(const st_file *f)
{
    return f ? 8 + f->header_len : 0;
}

const char *st_header_json(const st_file *f)
{
    return f ? f->header : NULL;
}

size_t st_tensor_count(const st_file *f)
{
    return f ? f->h.count : 0;
}

const st_tensor *st_tensor_at(const st_file *f, size_t i)
{
    return f && i < f->h.count ? &f->tensors[i] : NULL;
}

static int name_order_cmp(const void *a, const void *b)
{
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    return st_name_cmp(x->name, x->name_len, y->name, y->name_len);
}

const st_tensor *st_tensor_by_name_order(const st_file *f, size_t i)
{
    if (!f || i >= f->h.count)
        return NULL;
    st_file *mf = (st_file *)f; /* only the atomic cache is written */
    const st_tensor **order = atomic_load_explicit(&mf->name_order, memory_order_acquire);
    if (!order) {
        const st_tensor **fresh = malloc(f->h.count * sizeof *fresh);
        if (!fresh)
            return NULL;
        for (size_t k = 0; k < f->h.count; k++)
            fresh[k] = &f->tensors[k];
        qsort(fresh, f->h.count, sizeof *fresh, name_order_cmp);
        void *expected = NULL;
        if (atomic_compare_exchange_strong_explicit(&mf->name_order, &expected, (void *)fresh,
                                                    memory_order_acq_rel, memory_order_acquire)) {
            order = fresh;
        } else {
            free(fresh); /* another thread won the race */
            order = expected;
        }
    }
    return order[i];
}

const st_tensor *st_find(const st_file *f, const char *name, size_t name_len)
{
    if (!f || (!name && name_len))
        return NULL;
    size_t k = st_header_lookup(&f->h, name ? name : "", name_len);
    return k == SIZE_MAX ? NULL : &f->tensors[k];
}

uint64_t st_tensor_nbytes(const st_tensor *t)
{
    return t ? t->end - t->begin : 0;
}

static bool owns(const st_file *f, const st_tensor *t)
{
    return f && t && f->h.count && t >= f->tensors && t < f->tensors + f->h.count;
}

const void *st_tensor_data(const st_file *f, const st_tensor *t)
{
    if (!owns(f, t) || !f->base)
        return NULL;
    return f->base + 8 + f->header_len + t->begin;
}

int st_file_read(const st_file *f, uint64_t offset, void *buf, size_t len, st_error *err)
{
    if (!f || (!buf && len))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_file_read: bad arguments");
    if (offset > f->file_size || len > f->file_size - offset)
        return st_fail(err, ST_E_RANGE, offset,
                       "read of %zu bytes at offset %" PRIu64 " is past the end of the file (%" PRIu64 " bytes)",
                       len, offset, f->file_size);
    if (!len)
        return ST_OK;
    if (f->base) {
        memcpy(buf, f->base + offset, len);
        return ST_OK;
    }
    return pread_full(f->fd, buf, len, offset, err);
}

int st_tensor_file_range(const st_file *f, const st_tensor *t, int *fd, uint64_t *offset)
{
    if (!owns(f, t) || !fd || !offset)
        return ST_E_ARG;
    if (f->fd < 0)
        return ST_E_UNSUPPORTED; /* mapped (descriptor closed) or in memory */
    *fd = f->fd;
    *offset = 8 + f->header_len + t->begin;
    return ST_OK;
}

int st_tensor_read(const st_file *f, const st_tensor *t, uint64_t offset, void *buf, size_t len,
                   st_error *err)
{
    if (!owns(f, t))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_tensor_read: tensor is not from this file");
    uint64_t nbytes = t->end - t->begin;
    if (offset > nbytes || len > nbytes - offset) {
        char q[160];
        st_quote_name(q, sizeof q, t->name, t->name_len);
        return st_fail(err, ST_E_RANGE, ST_NO_OFFSET,
                       "read of %zu bytes at byte %" PRIu64 " of tensor %s is past its %" PRIu64 " bytes",
                       len, offset, q, nbytes);
    }
    return st_file_read(f, 8 + f->header_len + t->begin + offset, buf, len, err);
}

/* ---- metadata ------------------------------------------------------------- */

int st_metadata_present(const st_file *f)
{
    return f ? f->h.meta_present : 0;
}

size_t st_metadata_count(const st_file *f)
{
    return f ? f->h.nmeta : 0;
}

int st_metadata_at(const st_file *f, size_t i, const char **key, size_t *key_len,
                   const char **value, size_t *value_len)
{
    if (!f || i >= f->h.nmeta)
        return ST_E_NOT_FOUND;
    const st_meta_entry *m = &f->h.meta[i];
    if (key)
        *key = f->h.arena + m->key_off;
    if (key_len)
        *key_len = m->key_len;
    if (value)
        *value = f->h.arena + m->value_off;
    if (value_len)
        *value_len = m->value_len;
    return ST_OK;
}

const char *st_metadata_get(const st_file *f, const char *key, size_t key_len, size_t *value_len)
{
    if (!f || (!key && key_len))
        return NULL;
    size_t lo = 0, hi = f->h.nmeta;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const st_meta_entry *m = &f->h.meta[mid];
        int c = st_name_cmp(f->h.arena + m->key_off, m->key_len, key ? key : "", key_len);
        if (c == 0) {
            if (value_len)
                *value_len = m->value_len;
            return f->h.arena + m->value_off;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}
