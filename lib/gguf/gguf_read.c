/* A strict GGUF reader (ggml's docs/gguf.md, versions 2 and 3), with the
 * same care as the safetensors one: every count, length, type and offset is
 * checked against the file's size before it is used, with overflow checks;
 * what is kept in memory (keys, names, short strings) is bounded by the
 * header's bytes, so a small hostile file costs little. Tensor data stays
 * in the file and is read with pread, a slice at a time. */
#include "common/arena.h"
#include "common/outfile.h"
#include "format/stream.h"
#include "gguf/gguf_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Strings kept as values: at most this long (longer ones are known by
 * their offset and length only). */
#define KEEP_STRING 4096
#define WINDOW ((size_t)1 << 20)

struct st_gguf {
    int fd;
    uint64_t size;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;     /* absolute start of the tensor data */
    st_gguf_kv *kv;
    size_t nkv;
    st_gguf_tensor *t;
    size_t nt;
    char *strings;            /* keys, names, kept strings: one block */
    size_t strings_len, strings_cap;
    char *path;               /* as opened, for messages */
};

/* A cursor over the file through a window of WINDOW bytes. */
typedef struct cursor {
    const st_gguf *g;
    const char *path;
    unsigned char *win;
    uint64_t win_at, win_len;  /* the window holds [win_at, win_at + win_len) */
    uint64_t pos;
    st_error *err;
} cursor;

static int bad(cursor *c, uint64_t at, const char *fmt, const char *what)
{
    return st_fail(c->err, ST_E_GGUF, at, "%s: %s at byte %llu", c->path, what ? what : fmt,
                   (unsigned long long)at);
}

/* Makes [pos, pos + n) readable in the window (n <= WINDOW). */
static int need(cursor *c, uint64_t n, const char *what)
{
    if (n > c->g->size || c->pos > c->g->size - n)
        return st_fail(c->err, ST_E_GGUF, c->pos,
                       "%s: %s runs past the end of the file (byte %llu)", c->path, what,
                       (unsigned long long)c->pos);
    if (c->pos >= c->win_at && c->pos + n <= c->win_at + c->win_len)
        return ST_OK;
    uint64_t len = c->g->size - c->pos < WINDOW ? c->g->size - c->pos : WINDOW;
    if (st_pread_full(c->g->fd, c->win, (size_t)len, c->pos) != 0)
        return st_fail(c->err, ST_E_IO, c->pos, "%s: read error at byte %llu", c->path,
                       (unsigned long long)c->pos);
    c->win_at = c->pos;
    c->win_len = len;
    return ST_OK;
}

static const unsigned char *at(cursor *c)
{
    return c->win + (c->pos - c->win_at);
}

static int rd_u32(cursor *c, uint32_t *v, const char *what)
{
    int rc = need(c, 4, what);
    if (rc)
        return rc;
    const unsigned char *p = at(c);
    *v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    c->pos += 4;
    return ST_OK;
}

static int rd_u64(cursor *c, uint64_t *v, const char *what)
{
    int rc = need(c, 8, what);
    if (rc)
        return rc;
    const unsigned char *p = at(c);
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--)
        x = x << 8 | p[i];
    *v = x;
    c->pos += 8;
    return ST_OK;
}

static bool utf8_ok(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char b = s[i];
        size_t len;
        uint32_t cp;
        if (b < 0x80) {
            i++;
            continue;
        } else if ((b & 0xE0) == 0xC0) {
            len = 2, cp = b & 0x1F;
        } else if ((b & 0xF0) == 0xE0) {
            len = 3, cp = b & 0x0F;
        } else if ((b & 0xF8) == 0xF0) {
            len = 4, cp = b & 0x07;
        } else {
            return false;
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

/* Appends n bytes + NUL to the string block; returns the offset. */
static int keep(st_gguf *g, const void *p, size_t n, size_t *off, st_error *err)
{
    if (n + 1 > g->strings_cap - g->strings_len) {
        size_t cap = g->strings_cap ? g->strings_cap : 4096;
        while (cap - g->strings_len < n + 1)
            cap *= 2;
        char *s = realloc(g->strings, cap);
        if (!s)
            return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
        g->strings = s;
        g->strings_cap = cap;
    }
    memcpy(g->strings + g->strings_len, p, n);
    g->strings[g->strings_len + n] = 0;
    *off = g->strings_len;
    g->strings_len += n + 1;
    return ST_OK;
}

/* A string: u64 length, bytes (UTF-8). Kept when keep_max allows. */
static int rd_string(cursor *c, st_gguf *g, size_t keep_max, size_t *off, uint64_t *len,
                     const char *what)
{
    uint64_t n;
    uint64_t start = c->pos;
    int rc = rd_u64(c, &n, what);
    if (rc)
        return rc;
    if (n > c->g->size - c->pos)
        return st_fail(c->err, ST_E_GGUF, start,
                       "%s: %s of %llu bytes at byte %llu runs past the end of the file", c->path,
                       what, (unsigned long long)n, (unsigned long long)start);
    *len = n;
    *off = SIZE_MAX;
    /* checked for UTF-8 a window at a time; a character split across two
     * windows is checked whole by taking the string in one piece when it
     * fits, else in pieces cut at character starts */
    uint64_t done = 0;
    bool kept = n <= keep_max;
    unsigned char *copy = NULL;
    if (kept) {
        copy = malloc(n ? (size_t)n : 1);
        if (!copy)
            return st_fail(c->err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    }
    while (done < n) {
        uint64_t piece = n - done < WINDOW / 2 ? n - done : WINDOW / 2;
        rc = need(c, piece, what);
        if (rc) {
            free(copy);
            return rc;
        }
        const unsigned char *p = at(c);
        /* do not cut a character: back up to a lead byte */
        if (done + piece < n)
            while (piece > 4 && (p[piece] & 0xC0) == 0x80)
                piece--;
        if (!utf8_ok(p, (size_t)piece)) {
            free(copy);
            return bad(c, start, NULL, "a string that is not UTF-8");
        }
        if (copy)
            memcpy(copy + done, p, (size_t)piece);
        c->pos += piece;
        done += piece;
    }
    if (copy) {
        rc = keep(g, copy, (size_t)n, off, c->err);
        free(copy);
    }
    return rc;
}

static unsigned scalar_size(uint32_t t)
{
    switch (t) {
    case ST_GGUF_UINT8: case ST_GGUF_INT8: case ST_GGUF_BOOL: return 1;
    case ST_GGUF_UINT16: case ST_GGUF_INT16: return 2;
    case ST_GGUF_UINT32: case ST_GGUF_INT32: case ST_GGUF_FLOAT32: return 4;
    case ST_GGUF_UINT64: case ST_GGUF_INT64: case ST_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

static void decode_scalar(st_gguf_kv *kv, uint32_t t, const unsigned char *p)
{
    uint64_t u = 0;
    unsigned n = scalar_size(t);
    for (unsigned i = n; i-- > 0;)
        u = u << 8 | p[i];
    kv->u = u;
    switch (t) {
    case ST_GGUF_INT8: kv->i = (int8_t)u; break;
    case ST_GGUF_INT16: kv->i = (int16_t)u; break;
    case ST_GGUF_INT32: kv->i = (int32_t)u; break;
    case ST_GGUF_INT64: kv->i = (int64_t)u; break;
    default: kv->i = u > INT64_MAX ? INT64_MAX : (int64_t)u; break;
    }
    if (t == ST_GGUF_FLOAT32) {
        uint32_t b = (uint32_t)u;
        float f;
        memcpy(&f, &b, 4);
        kv->f = f;
    } else if (t == ST_GGUF_FLOAT64) {
        memcpy(&kv->f, &u, 8);
    } else {
        kv->f = gg_signed_int((int)t) ? (double)kv->i : (double)u;
    }
}

static int rd_kv(cursor *c, st_gguf *g, st_gguf_kv *kv)
{
    uint64_t key_len;
    size_t key_off;
    uint64_t start = c->pos;
    int rc = rd_string(c, g, SIZE_MAX, &key_off, &key_len, "a metadata key");
    if (rc)
        return rc;
    if (key_len == 0)
        return bad(c, start, NULL, "an empty metadata key");
    if (memchr(g->strings + key_off, 0, (size_t)key_len))
        return bad(c, start, NULL, "a metadata key holding a NUL byte");
    kv->key = (const char *)(uintptr_t)key_off; /* fixed up once the block stops moving */
    kv->key_len = (size_t)key_len;
    uint32_t t;
    if ((rc = rd_u32(c, &t, "a value type")))
        return rc;
    if (t >= GG_TYPE_COUNT)
        return bad(c, c->pos - 4, NULL, "an unknown value type");
    kv->type = (int)t;
    kv->count = 1;
    kv->value_offset = c->pos;
    kv->str = NULL;
    if (t == ST_GGUF_STRING) {
        size_t off;
        uint64_t n;
        if ((rc = rd_string(c, g, KEEP_STRING, &off, &n, "a string value")))
            return rc;
        kv->str = off == SIZE_MAX ? NULL : (const char *)(uintptr_t)(off + 1);
        kv->str_len = (size_t)n;
        return ST_OK;
    }
    if (t != ST_GGUF_ARRAY) {
        unsigned n = scalar_size(t);
        if ((rc = need(c, n, "a value")))
            return rc;
        decode_scalar(kv, t, at(c));
        c->pos += n;
        return ST_OK;
    }
    uint32_t et;
    uint64_t count;
    if ((rc = rd_u32(c, &et, "an array type")) || (rc = rd_u64(c, &count, "an array length")))
        return rc;
    if (et >= GG_TYPE_COUNT)
        return bad(c, c->pos - 12, NULL, "an array of an unknown type");
    if (et == ST_GGUF_ARRAY)
        return bad(c, c->pos - 12, NULL, "an array of arrays (ggml does not read them)");
    kv->array_type = (int)et;
    kv->count = count;
    kv->value_offset = c->pos;
    if (et == ST_GGUF_STRING) {
        /* each at least 8 bytes: the count cannot promise more than the file */
        if (count > (c->g->size - c->pos) / 8)
            return bad(c, c->pos - 8, NULL, "an array longer than the file");
        for (uint64_t i = 0; i < count; i++) {
            size_t off;
            uint64_t n;
            if ((rc = rd_string(c, g, 0, &off, &n, "an array string")))
                return rc;
        }
        return ST_OK;
    }
    unsigned es = scalar_size(et);
    if (count > (c->g->size - c->pos) / es)
        return bad(c, c->pos - 8, NULL, "an array longer than the file");
    c->pos += count * es;
    return ST_OK;
}

static int rd_tensor(cursor *c, st_gguf *g, st_gguf_tensor *t)
{
    uint64_t start = c->pos;
    uint64_t name_len;
    size_t name_off;
    int rc = rd_string(c, g, SIZE_MAX, &name_off, &name_len, "a tensor name");
    if (rc)
        return rc;
    if (name_len == 0)
        return bad(c, start, NULL, "a tensor with an empty name");
    if (memchr(g->strings + name_off, 0, (size_t)name_len))
        return bad(c, start, NULL, "a tensor name holding a NUL byte");
    t->name = (const char *)(uintptr_t)name_off;
    t->name_len = (size_t)name_len;
    t->header_offset = start;
    uint32_t nd;
    if ((rc = rd_u32(c, &nd, "a dimension count")))
        return rc;
    if (nd == 0 || nd > ST_GGUF_MAX_DIMS)
        return st_fail(c->err, ST_E_GGUF, start,
                       "%s: tensor at byte %llu has %u dimensions (1 to %u)", c->path,
                       (unsigned long long)start, nd, ST_GGUF_MAX_DIMS);
    t->n_dims = nd;
    uint64_t n = 1;
    for (uint32_t d = 0; d < ST_GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < nd; d++) {
        if ((rc = rd_u64(c, &t->ne[d], "a dimension")))
            return rc;
        if (t->ne[d] > INT64_MAX || (t->ne[d] && n > UINT64_MAX / t->ne[d]))
            return st_fail(c->err, ST_E_GGUF, start, "%s: tensor at byte %llu: dimensions overflow",
                           c->path, (unsigned long long)start);
        n *= t->ne[d];
    }
    t->nelements = n;
    uint32_t type;
    if ((rc = rd_u32(c, &type, "a tensor type")) || (rc = rd_u64(c, &t->offset, "an offset")))
        return rc;
    t->type = (int)type;
    uint32_t blk = st_ggml_block_elements((int)type);
    if (!blk || !st_ggml_type_name((int)type))
        return st_fail(c->err, ST_E_GGUF, start, "%s: tensor at byte %llu has unknown type %u",
                       c->path, (unsigned long long)start, type);
    if (t->ne[0] % blk)
        return st_fail(c->err, ST_E_GGUF, start,
                       "%s: tensor at byte %llu: rows of %llu elements do not fill %s blocks of %u",
                       c->path, (unsigned long long)start, (unsigned long long)t->ne[0],
                       st_ggml_type_name((int)type), blk);
    uint64_t bb = st_ggml_block_bytes((int)type);
    if (n / blk > UINT64_MAX / bb)
        return st_fail(c->err, ST_E_GGUF, start, "%s: tensor at byte %llu: size overflows",
                       c->path, (unsigned long long)start);
    t->size = n / blk * bb;
    return ST_OK;
}

static int cmp_offset(const void *a, const void *b)
{
    const st_gguf_tensor *x = *(const st_gguf_tensor *const *)a;
    const st_gguf_tensor *y = *(const st_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int cmp_name(const void *a, const void *b)
{
    const st_gguf_tensor *x = *(const st_gguf_tensor *const *)a;
    const st_gguf_tensor *y = *(const st_gguf_tensor *const *)b;
    return st_name_cmp(x->name, x->name_len, y->name, y->name_len);
}

/* Offsets aligned, ranges inside the data, no overlap, no name twice. */
static int check_layout(st_gguf *g, const char *path, st_error *err)
{
    if (!g->nt)
        return ST_OK;
    const st_gguf_tensor **v = malloc(g->nt * sizeof *v);
    if (!v)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    int rc = ST_OK;
    uint64_t data = g->size - g->data_offset;
    for (size_t i = 0; i < g->nt && rc == ST_OK; i++) {
        const st_gguf_tensor *t = &g->t[i];
        v[i] = t;
        if (t->offset % g->alignment)
            rc = st_fail(err, ST_E_GGUF, t->header_offset,
                         "%s: tensor '%s': offset %llu is not a multiple of the alignment %u "
                         "(tensor info at byte %llu)",
                         path, t->name, (unsigned long long)t->offset, g->alignment,
                         (unsigned long long)t->header_offset);
        else if (t->offset > data || t->size > data - t->offset)
            rc = st_fail(err, ST_E_GGUF, t->header_offset,
                         "%s: tensor '%s': %llu bytes at data offset %llu run past the end of "
                         "the file (tensor info at byte %llu)",
                         path, t->name, (unsigned long long)t->size,
                         (unsigned long long)t->offset, (unsigned long long)t->header_offset);
    }
    if (rc == ST_OK) {
        qsort(v, g->nt, sizeof *v, cmp_offset);
        for (size_t i = 1; i < g->nt && rc == ST_OK; i++)
            if (v[i]->offset < v[i - 1]->offset + v[i - 1]->size)
                rc = st_fail(err, ST_E_GGUF, v[i]->header_offset,
                             "%s: tensors '%s' and '%s' overlap (tensor info at byte %llu)",
                             path, v[i - 1]->name, v[i]->name,
                             (unsigned long long)v[i]->header_offset);
    }
    if (rc == ST_OK) {
        qsort(v, g->nt, sizeof *v, cmp_name);
        for (size_t i = 1; i < g->nt && rc == ST_OK; i++)
            if (cmp_name(&v[i - 1], &v[i]) == 0)
                rc = st_fail(err, ST_E_GGUF, v[i]->header_offset,
                             "%s: tensor name '%s' appears twice (tensor info at byte %llu)",
                             path, v[i]->name, (unsigned long long)v[i]->header_offset);
    }
    free(v);
    return rc;
}

static int cmp_key(const void *a, const void *b)
{
    const st_gguf_kv *x = *(const st_gguf_kv *const *)a;
    const st_gguf_kv *y = *(const st_gguf_kv *const *)b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->key, y->key, n);
    if (c)
        return c;
    if (x->key_len != y->key_len)
        return x->key_len < y->key_len ? -1 : 1;
    return x->value_offset < y->value_offset ? -1 : x->value_offset > y->value_offset;
}

/* No key twice, however many pairs (sorted, so a header of a million
 * pairs costs n log n, not n^2); the later of the two is named. */
static int check_keys(st_gguf *g, const char *path, st_error *err)
{
    if (g->nkv < 2)
        return ST_OK;
    const st_gguf_kv **v = malloc(g->nkv * sizeof *v);
    if (!v)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    for (size_t i = 0; i < g->nkv; i++)
        v[i] = &g->kv[i];
    qsort(v, g->nkv, sizeof *v, cmp_key);
    int rc = ST_OK;
    for (size_t i = 1; i < g->nkv && rc == ST_OK; i++)
        if (v[i]->key_len == v[i - 1]->key_len &&
            memcmp(v[i]->key, v[i - 1]->key, v[i]->key_len) == 0)
            rc = st_fail(err, ST_E_GGUF, v[i]->value_offset,
                         "%s: metadata key '%s' twice (the second's value at byte %llu)", path,
                         v[i]->key, (unsigned long long)v[i]->value_offset);
    free(v);
    return rc;
}

void st_gguf_close(st_gguf *g)
{
    if (!g)
        return;
    if (g->fd >= 0)
        close(g->fd);
    free(g->kv);
    free(g->t);
    free(g->strings);
    free(g->path);
    free(g);
}

int st_gguf_open(const char *path, st_gguf **out, st_error *err)
{
    if (out)
        *out = NULL;
    if (!path || !out)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_gguf_open: path and out are required");
    st_gguf *g = calloc(1, sizeof *g);
    if (!g)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    g->path = strdup(path);
    g->fd = g->path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    struct stat sb;
    if (g->fd < 0 || fstat(g->fd, &sb) != 0) {
        char eb[128];
        int e = errno;
        st_gguf_close(g);
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "%s: cannot open: %s", path,
                       st_errno_text(e, eb, sizeof eb));
    }
    if (!S_ISREG(sb.st_mode)) {
        st_gguf_close(g);
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "%s: not a regular file", path);
    }
    g->size = (uint64_t)sb.st_size;
    /* need() never loads more than the file's size: a small file gets a
     * small window */
    size_t win = g->size < WINDOW ? (size_t)g->size + 1 : WINDOW;
    cursor c = {g, path, malloc(win), 0, 0, 0, err};
    int rc = c.win ? ST_OK : st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    uint32_t magic = 0;
    uint64_t nt = 0, nkv = 0;
    if (rc == ST_OK && g->size < 24)
        rc = st_fail(err, ST_E_GGUF, 0, "%s: %llu bytes: shorter than a GGUF header (24)", path,
                     (unsigned long long)g->size);
    if (rc == ST_OK)
        rc = rd_u32(&c, &magic, "the magic");
    if (rc == ST_OK && magic != ST_GGUF_MAGIC)
        rc = st_fail(err, ST_E_GGUF, 0, "%s: not a GGUF file (no \"GGUF\" magic)", path);
    if (rc == ST_OK)
        rc = rd_u32(&c, &g->version, "the version");
    if (rc == ST_OK && g->version != 2 && g->version != 3)
        rc = st_fail(err, ST_E_GGUF, 4, "%s: GGUF version %u (2 and 3 are read)", path,
                     g->version);
    if (rc == ST_OK)
        rc = rd_u64(&c, &nt, "the tensor count");
    if (rc == ST_OK)
        rc = rd_u64(&c, &nkv, "the metadata count");
    /* every KV takes at least 13 bytes (key length, a key byte, type) and
     * every tensor info 29: counts the file cannot hold are refused before
     * anything is allocated for them */
    if (rc == ST_OK && (nkv > (g->size - 24) / 13 || nt > (g->size - 24) / 29))
        rc = st_fail(err, ST_E_GGUF, 8, "%s: %llu tensors and %llu metadata pairs cannot fit in "
                     "%llu bytes", path, (unsigned long long)nt, (unsigned long long)nkv,
                     (unsigned long long)g->size);
    if (rc == ST_OK) {
        g->kv = calloc(nkv ? (size_t)nkv : 1, sizeof *g->kv);
        g->t = calloc(nt ? (size_t)nt : 1, sizeof *g->t);
        if (!g->kv || !g->t)
            rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    }
    for (uint64_t i = 0; i < nkv && rc == ST_OK; i++, g->nkv++)
        rc = rd_kv(&c, g, &g->kv[i]);
    for (uint64_t i = 0; i < nt && rc == ST_OK; i++, g->nt++)
        rc = rd_tensor(&c, g, &g->t[i]);
    free(c.win);
    if (rc == ST_OK) {
        /* string offsets become pointers now that the block is complete */
        for (size_t i = 0; i < g->nkv; i++) {
            st_gguf_kv *kv = &g->kv[i];
            kv->key = g->strings + (uintptr_t)kv->key;
            if (kv->str)
                kv->str = g->strings + ((uintptr_t)kv->str - 1);
        }
        for (size_t i = 0; i < g->nt; i++)
            g->t[i].name = g->strings + (uintptr_t)g->t[i].name;
        g->alignment = ST_GGUF_ALIGNMENT;
        for (size_t i = 0; i < g->nkv && rc == ST_OK; i++) {
            const st_gguf_kv *kv = &g->kv[i];
            if (kv->key_len == 17 && memcmp(kv->key, "general.alignment", 17) == 0) {
                if (kv->type != ST_GGUF_UINT32 || kv->u == 0 || (kv->u & (kv->u - 1)) ||
                    kv->u > (1u << 30))
                    rc = st_fail(err, ST_E_GGUF, kv->value_offset,
                                 "%s: general.alignment must be a UINT32 power of two (value "
                                 "at byte %llu)",
                                 path, (unsigned long long)kv->value_offset);
                else
                    g->alignment = (uint32_t)kv->u;
            }
        }
        if (rc == ST_OK)
            rc = check_keys(g, path, err);
    }
    if (rc == ST_OK) {
        uint64_t p = c.pos;
        uint64_t a = (p + g->alignment - 1) / g->alignment * g->alignment;
        if (a < p || (a > g->size && g->nt))
            rc = st_fail(err, ST_E_GGUF, p, "%s: the tensor data would start past the end", path);
        g->data_offset = a > g->size ? g->size : a;
    }
    if (rc == ST_OK)
        rc = check_layout(g, path, err);
    if (rc != ST_OK) {
        st_gguf_close(g);
        return rc;
    }
    *out = g;
    return ST_OK;
}

uint32_t st_gguf_version(const st_gguf *g)
{
    return g ? g->version : 0;
}

uint32_t st_gguf_alignment(const st_gguf *g)
{
    return g ? g->alignment : 0;
}

uint64_t st_gguf_data_offset(const st_gguf *g)
{
    return g ? g->data_offset : 0;
}

size_t st_gguf_kv_count(const st_gguf *g)
{
    return g ? g->nkv : 0;
}

const st_gguf_kv *st_gguf_kv_at(const st_gguf *g, size_t i)
{
    return g && i < g->nkv ? &g->kv[i] : NULL;
}

const st_gguf_kv *st_gguf_kv_find(const st_gguf *g, const char *key)
{
    if (!g || !key)
        return NULL;
    size_t n = strlen(key);
    for (size_t i = 0; i < g->nkv; i++)
        if (g->kv[i].key_len == n && memcmp(g->kv[i].key, key, n) == 0)
            return &g->kv[i];
    return NULL;
}

int st_gguf_kv_array_int(const st_gguf *g, const st_gguf_kv *kv, uint64_t i, int64_t *v,
                         st_error *err)
{
    if (!g || !kv || !v || kv->type != ST_GGUF_ARRAY || i >= kv->count)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_gguf_kv_array_int: not an element");
    unsigned es = scalar_size((uint32_t)kv->array_type);
    if (!es || kv->array_type == ST_GGUF_FLOAT32 || kv->array_type == ST_GGUF_FLOAT64 ||
        kv->array_type == ST_GGUF_BOOL)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "'%s' is not an array of integers",
                       kv->key);
    unsigned char b[8];
    if (st_pread_full(g->fd, b, es, kv->value_offset + i * es) != 0)
        return st_fail(err, ST_E_IO, kv->value_offset, "read error");
    st_gguf_kv tmp;
    decode_scalar(&tmp, (uint32_t)kv->array_type, b);
    *v = tmp.i;
    return ST_OK;
}

size_t st_gguf_tensor_count(const st_gguf *g)
{
    return g ? g->nt : 0;
}

const st_gguf_tensor *st_gguf_tensor_at(const st_gguf *g, size_t i)
{
    return g && i < g->nt ? &g->t[i] : NULL;
}

int st_gguf_tensor_read_f32(const st_gguf *g, const st_gguf_tensor *t, uint64_t first, float *dst,
                            uint64_t n, void *scratch, size_t scratch_len, st_error *err)
{
    if (!g || !t || t < g->t || t >= g->t + g->nt || (!dst && n))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_gguf_tensor_read_f32: bad argument");
    uint32_t blk = st_ggml_block_elements(t->type), bb = st_ggml_block_bytes(t->type);
    if (first > t->nelements || n > t->nelements - first || first % blk || n % blk)
        return st_fail(err, ST_E_RANGE, ST_NO_OFFSET,
                       "tensor '%s': elements [%llu, +%llu) are not whole blocks inside it",
                       t->name, (unsigned long long)first, (unsigned long long)n);
    if (!st_ggml_can_dequantize(t->type))
        return st_fail(err, ST_E_UNSUPPORTED, t->header_offset,
                       "tensor '%s': type %s cannot be dequantized here", t->name,
                       st_ggml_type_name(t->type));
    uint64_t bytes = n / blk * bb;
    if (bytes > scratch_len)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "scratch of %zu bytes, %llu needed",
                       scratch_len, (unsigned long long)bytes);
    uint64_t at_off = g->data_offset + t->offset + first / blk * bb;
    if (st_pread_full(g->fd, scratch, (size_t)bytes, at_off) != 0)
        return st_fail(err, ST_E_IO, at_off, "tensor '%s': read error at byte %llu (the file "
                       "got shorter?)", t->name, (unsigned long long)at_off);
    return st_ggml_dequantize(t->type, scratch, dst, n, 0, err);
}

/* ---- GGUF -> safetensors ---- */

typedef struct deq_source {
    const st_gguf *g;
    const st_gguf_tensor *t;
    st_dtype dtype;            /* of the output */
    float *f32;                /* SLICE_ELEMS floats */
    unsigned char *raw;        /* SLICE_ELEMS elements' GGUF bytes */
    unsigned char *conv;       /* SLICE_ELEMS elements of the output dtype */
    size_t raw_cap;
    st_op_input *in;           /* keeps the first read error */
} deq_source;

#define SLICE_ELEMS ((uint64_t)1 << 20) /* a multiple of every block size */

/* st_read_fn: the output's bytes [offset, offset + len), from whole blocks
 * dequantized and converted a slice at a time. */
static int deq_read(void *ctx, uint64_t offset, void *buf, size_t len)
{
    deq_source *s = ctx;
    unsigned es = st_dtype_bits(s->dtype) / 8;
    uint32_t blk = st_ggml_block_elements(s->t->type);
    unsigned char *out = buf;
    while (len) {
        uint64_t e = offset / es;
        uint64_t first = e / blk * blk;
        uint64_t n = s->t->nelements - first < SLICE_ELEMS ? s->t->nelements - first : SLICE_ELEMS;
        st_error e2;
        memset(&e2, 0, sizeof e2);
        int rc = st_gguf_tensor_read_f32(s->g, s->t, first, s->f32, n, s->raw, s->raw_cap, &e2);
        if (rc == ST_OK)
            rc = st_convert(s->dtype, s->conv, ST_F32, s->f32, (size_t)n, 0, &e2);
        if (rc != ST_OK)
            return st_op_input_fail(s->in, rc, &e2);
        uint64_t from = offset - first * es;
        uint64_t avail = n * es - from;
        size_t k = len < avail ? len : (size_t)avail;
        memcpy(out, s->conv + from, k);
        out += k;
        offset += k;
        len -= k;
    }
    return ST_OK;
}

/* The shape to write: comfy.gguf.orig_shape.<name> when present and
 * consistent, else ggml's dimensions reversed. */
int st_gguf_tensor_shape(const st_gguf *g, const st_gguf_tensor *t, uint64_t shape[8],
                         uint32_t *rank, int *restored, st_error *err)
{
    if (!g || !t || t < g->t || t >= g->t + g->nt || !shape || !rank || !restored)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_gguf_tensor_shape: bad argument");
    const char *path = g->path;
    char key[64 + 256];
    *restored = 0;
    const st_gguf_kv *kv = NULL;
    if (t->name_len < 256) {
        snprintf(key, sizeof key, "comfy.gguf.orig_shape.%s", t->name);
        kv = st_gguf_kv_find(g, key);
    }
    if (!kv) {
        *rank = t->n_dims;
        for (uint32_t d = 0; d < t->n_dims; d++)
            shape[d] = t->ne[t->n_dims - 1 - d];
        return ST_OK;
    }
    int at = kv->array_type;
    if (kv->type != ST_GGUF_ARRAY || kv->count > 8 ||
        (at != ST_GGUF_INT32 && at != ST_GGUF_INT64 && at != ST_GGUF_UINT32 && at != ST_GGUF_UINT64))
        return st_fail(err, ST_E_GGUF, kv->value_offset,
                       "%s: %s is not an array of at most 8 integers", path, key);
    uint64_t n = 1;
    for (uint64_t d = 0; d < kv->count; d++) {
        int64_t v;
        int rc = st_gguf_kv_array_int(g, kv, d, &v, err);
        if (rc)
            return rc;
        if (v < 0 || (v && n > UINT64_MAX / (uint64_t)v))
            return st_fail(err, ST_E_GGUF, kv->value_offset, "%s: %s has a bad dimension", path,
                           key);
        shape[d] = (uint64_t)v;
        n *= (uint64_t)v;
    }
    if (n != t->nelements)
        return st_fail(err, ST_E_GGUF, kv->value_offset,
                       "%s: %s holds %llu elements, the tensor %llu", path, key,
                       (unsigned long long)n, (unsigned long long)t->nelements);
    *rank = (uint32_t)kv->count;
    *restored = 1;
    return ST_OK;
}

static bool internal_key(const st_gguf_kv *kv)
{
    return strncmp(kv->key, "comfy.gguf.orig_shape.", 22) == 0 ||
           strcmp(kv->key, "safetensors.name_prefix") == 0;
}

int st_gguf_to_safetensors(const char *in_path, const char *out_path,
                           const st_gguf_read_options *opt, st_gguf_read_report *report,
                           st_error *err)
{
    st_gguf_read_report rep;
    memset(&rep, 0, sizeof rep);
    rep.failed_input = -1;
    st_dtype dt = opt && opt->dtype ? opt->dtype : ST_F32;
    st_gguf *g = NULL;
    st_writer *w = NULL;
    deq_source *src = NULL;
    float *f32 = NULL;
    unsigned char *raw = NULL, *conv = NULL;
    st_op_input in;
    memset(&in, 0, sizeof in);
    int rc;
    if (!in_path || !out_path || (dt != ST_F32 && dt != ST_F16 && dt != ST_BF16)) {
        rc = st_fail(err, ST_E_ARG, ST_NO_OFFSET,
                     "st_gguf_to_safetensors: paths, and a dtype of F32, F16 or BF16");
        goto done;
    }
    rc = st_gguf_open(in_path, &g, err);
    if (rc != ST_OK) {
        rep.failed_input = 0;
        goto done;
    }
    if (st_op_same_file(in_path, out_path)) {
        rc = st_fail(err, ST_E_ARG, ST_NO_OFFSET, "OUT '%s' is the input file", out_path);
        goto done;
    }
    rep.input_size = g->size;
    const st_gguf_kv *pk = st_gguf_kv_find(g, "safetensors.name_prefix");
    const char *prefix = pk && pk->type == ST_GGUF_STRING && pk->str ? pk->str : "";
    size_t pl = strlen(prefix);
    w = st_writer_new();
    src = calloc(g->nt ? g->nt : 1, sizeof *src);
    f32 = malloc(SLICE_ELEMS * sizeof *f32);
    size_t raw_cap = (size_t)SLICE_ELEMS * 8; /* no type takes more than 8 bytes per element */
    raw = malloc(raw_cap);
    conv = malloc(SLICE_ELEMS * 4);
    char *name = malloc(pl + 65536);
    if (!w || !src || !f32 || !raw || !conv || !name) {
        free(name);
        rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < g->nt && rc == ST_OK; i++) {
        const st_gguf_tensor *t = &g->t[i];
        if (!st_ggml_can_dequantize(t->type)) {
            rc = st_fail(err, ST_E_UNSUPPORTED, t->header_offset,
                         "%s: tensor '%s' is %s, which this library cannot dequantize", in_path,
                         t->name, st_ggml_type_name(t->type));
            rep.failed_input = 0;
            break;
        }
        uint64_t shape[8];
        uint32_t rank = 0;
        int restored = 0;
        rc = st_gguf_tensor_shape(g, t, shape, &rank, &restored, err);
        if (rc != ST_OK) {
            rep.failed_input = 0;
            break;
        }
        rep.reshaped += restored;
        size_t nl = t->name_len < 65536 ? t->name_len : 65535;
        memcpy(name, prefix, pl);
        memcpy(name + pl, t->name, nl);
        src[i] = (deq_source){g, t, dt, f32, raw, conv, raw_cap, &in};
        uint64_t bytes = t->nelements * (st_dtype_bits(dt) / 8);
        rc = st_writer_add_stream(w, name, pl + nl, dt, shape, rank, bytes, deq_read, &src[i],
                                  err);
    }
    free(name);
    for (size_t i = 0; i < g->nkv && rc == ST_OK; i++) {
        const st_gguf_kv *kv = &g->kv[i];
        if (internal_key(kv) || kv->type == ST_GGUF_ARRAY ||
            (kv->type == ST_GGUF_STRING && !kv->str))
            continue;
        char key[512], val[64];
        snprintf(key, sizeof key, "gguf.%s", kv->key);
        const char *v = val;
        size_t vl;
        if (kv->type == ST_GGUF_STRING) {
            v = kv->str;
            vl = kv->str_len;
        } else if (kv->type == ST_GGUF_FLOAT32 || kv->type == ST_GGUF_FLOAT64) {
            vl = (size_t)snprintf(val, sizeof val, "%.17g", kv->f);
        } else if (kv->type == ST_GGUF_BOOL) {
            vl = (size_t)snprintf(val, sizeof val, "%s", kv->u ? "true" : "false");
        } else if (gg_signed_int(kv->type)) {
            vl = (size_t)snprintf(val, sizeof val, "%lld", (long long)kv->i);
        } else {
            vl = (size_t)snprintf(val, sizeof val, "%llu", (unsigned long long)kv->u);
        }
        rc = st_writer_set_metadata(w, key, strlen(key), v, vl, err);
    }
    if (rc == ST_OK)
        rc = st_writer_set_metadata(w, "format", 6, "pt", 2, err);
    if (rc != ST_OK)
        goto done;
    if (opt)
        st_writer_set_hooks(w, &opt->hooks);
    rep.tensors = g->nt;
    rep.output_size = st_writer_output_size(w);
    rc = st_op_write(w, out_path, &in, 1, &rep.failed_input, err);
done:
    st_writer_free(w);
    free(src);
    free(f32);
    free(raw);
    free(conv);
    st_gguf_close(g);
    if (report)
        *report = rep;
    return rc;
}
