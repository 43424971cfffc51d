/* The canonical writer: byte for byte the output of the reference writer
 * (Rust crate `safetensors`, tensor.rs prepare/serialize) for the same
 * tensors and metadata, streamed to a file atomically or to a sink.
 *
 * Layout produced:
 *   u64 LE N | header JSON padded with spaces to N (a multiple of 8) | data
 * Tensors are ordered by descending dtype, then by name bytes (Rust's String
 * order); data offsets are assigned consecutively from 0 in that order.
 * The JSON is what serde_json::to_string writes: no whitespace, the
 * "__metadata__" object first (keys sorted bytewise here, so the output is
 * deterministic; the reference uses a HashMap), then one
 * {"dtype":..,"shape":[..],"data_offsets":[b,e]} object per tensor. */
#include "common/arena.h"
#include "common/outfile.h"
#include "format/json.h"
#include "format/writer_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Staging buffer for the output stream: small pieces (header, tiny tensors)
 * are gathered into one write, callback tensors are read straight into it.
 * Large pointer tensors bypass it. */
#define OUT_BUFFER_SIZE (1u << 20)
/* Pointer data is handed to a sink in pieces of at most this many bytes so
 * that no single write() or sink call has to cope with huge lengths. */
#define MAX_PIECE ((size_t)1 << 30)

typedef struct wtensor {
    char *name;          /* own copy, NUL-terminated                   */
    size_t name_len;
    uint64_t hash;
    st_dtype dtype;
    uint32_t rank;
    uint64_t *shape;     /* own copy (NULL when rank is 0)              */
    uint64_t nbytes;
    const void *data;    /* caller's bytes, or NULL with a callback     */
    st_read_fn read;
    void *ctx;
    int fd;               /* >= 0: the bytes are [file_offset, +nbytes)  */
    uint64_t file_offset; /* of this open file (st_writer_add_file_range) */
    st_view_fn view;      /* or the caller lends them (st_writer_add_view) */
} wtensor;

typedef struct wmeta {
    char *key;
    size_t key_len;
    uint64_t hash;
    char *value;
    size_t value_len;
} wmeta;

/* Open-addressing set of indexes (stored + 1, 0 = empty slot). */
typedef struct hset {
    size_t *slots;
    size_t cap;          /* power of two, or 0                          */
} hset;

struct st_writer {
    wtensor *tensors;
    size_t count, cap;
    hset tensor_set;
    wmeta *meta;
    size_t meta_count, meta_cap;
    hset meta_set;
    int meta_present;
    uint64_t seed;       /* per-writer hash seed: names may come from a
                          * hostile file, so collisions must not be
                          * predictable */
    uint64_t data_size;  /* sum of nbytes (checked at add)              */

    st_output_hooks hooks; /* progress and temp-file reporting          */
    uint64_t header_room;  /* spaces wanted after the JSON (--pad)       */
    uint64_t header_exact; /* non-zero: N exactly (an in-place edit)     */
    st_open_hook_fn open_hook; /* told of the output file (lent tensors)  */
    void *open_ctx;
    st_close_hook_fn close_hook; /* last word on the file before commit    */
    void *close_ctx;

    /* Prepared output, rebuilt after any change. */
    int prepared;
    char *header;        /* padded header JSON                          */
    size_t header_len;   /* N                                           */
    wtensor **order;     /* tensors in output order                     */
};

/* ---- small helpers ---- */

static size_t hset_find(const hset *s, uint64_t h, const void *ctx,
                        bool (*eq)(const void *ctx, size_t idx))
{
    if (!s->cap)
        return SIZE_MAX;
    size_t mask = s->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        size_t v = s->slots[i];
        if (!v)
            return SIZE_MAX;
        if (eq(ctx, v - 1))
            return v - 1;
    }
}

/* Makes room for one more entry of `count` (load factor at most 1/2);
 * `hash_of` gives the stored hash of an index for rehashing. */
static int hset_reserve(hset *s, size_t count, const void *ctx,
                        uint64_t (*hash_of)(const void *ctx, size_t idx))
{
    if (s->cap && (count + 1) * 2 <= s->cap)
        return ST_OK;
    size_t ncap = s->cap ? s->cap * 2 : 16;
    while ((count + 1) * 2 > ncap)
        ncap *= 2;
    size_t *slots = calloc(ncap, sizeof *slots);
    if (!slots)
        return ST_E_NOMEM;
    for (size_t k = 0; k < count; k++) {
        size_t i = (size_t)hash_of(ctx, k) & (ncap - 1);
        while (slots[i])
            i = (i + 1) & (ncap - 1);
        slots[i] = k + 1;
    }
    free(s->slots);
    s->slots = slots;
    s->cap = ncap;
    return ST_OK;
}

static void hset_insert(hset *s, uint64_t h, size_t idx)
{
    size_t mask = s->cap - 1;
    size_t i = (size_t)h & mask;
    while (s->slots[i])
        i = (i + 1) & mask;
    s->slots[i] = idx + 1;
}

/* Names and metadata must be strings the reference could hold: strict
 * UTF-8, judged by the same check the reader applies to headers. */
static bool utf8_valid(const unsigned char *s, size_t n)
{
    return st_utf8_invalid_at(s, n) == SIZE_MAX;
}

static void invalidate(st_writer *w)
{
    w->prepared = 0;
    free(w->header);
    w->header = NULL;
    w->header_len = 0;
    free(w->order);
    w->order = NULL;
}

/* ---- lifetime ---- */

st_writer *st_writer_new(void)
{
    st_writer *w = calloc(1, sizeof(st_writer));
    if (!w)
        return NULL;
    w->seed = st_hash_seed(w);
    return w;
}

void st_writer_free(st_writer *w)
{
    if (!w)
        return;
    invalidate(w);
    for (size_t i = 0; i < w->count; i++) {
        free(w->tensors[i].name);
        free(w->tensors[i].shape);
    }
    free(w->tensors);
    free(w->tensor_set.slots);
    for (size_t i = 0; i < w->meta_count; i++) {
        free(w->meta[i].key);
        free(w->meta[i].value);
    }
    free(w->meta);
    free(w->meta_set.slots);
    free(w);
}

/* ---- adding tensors ---- */

typedef struct name_probe {
    const st_writer *w;
    const char *name;
    size_t len;
} name_probe;

static bool tensor_eq(const void *ctx, size_t idx)
{
    const name_probe *p = ctx;
    const wtensor *t = &p->w->tensors[idx];
    return t->name_len == p->len && memcmp(t->name, p->name, p->len) == 0;
}

static uint64_t tensor_hash_of(const void *ctx, size_t idx)
{
    return ((const st_writer *)ctx)->tensors[idx].hash;
}

static bool meta_eq(const void *ctx, size_t idx)
{
    const name_probe *p = ctx;
    const wmeta *m = &p->w->meta[idx];
    return m->key_len == p->len && memcmp(m->key, p->name, p->len) == 0;
}

static uint64_t meta_hash_of(const void *ctx, size_t idx)
{
    return ((const st_writer *)ctx)->meta[idx].hash;
}

static char *dup_bytes(const char *s, size_t n)
{
    if (n == SIZE_MAX)
        return NULL;
    char *p = malloc(n + 1);
    if (!p)
        return NULL;
    if (n)
        memcpy(p, s, n);
    p[n] = 0;
    return p;
}

static int add_common(st_writer *w, const char *name, size_t name_len,
                      st_dtype dtype, const uint64_t *shape, uint32_t rank,
                      const void *data, uint64_t nbytes, st_read_fn read,
                      void *ctx, st_error *err)
{
    char q[160];
    if (!w || (!name && name_len))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_writer_add: NULL writer or name");
    if (!name)
        name = ""; /* so that no NULL pointer reaches memcpy or hashing */
    if (!utf8_valid((const unsigned char *)name, name_len))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET,
                       "st_writer_add: tensor name is not valid UTF-8");
    st_quote_name(q, sizeof q, name, name_len);
    if (name_len == 12 && memcmp(name, "__metadata__", 12) == 0)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET,
                       "st_writer_add: '__metadata__' is reserved and cannot name a tensor");
    if ((unsigned)dtype >= ST_DTYPE_COUNT)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_writer_add: tensor %s: invalid dtype %d",
                       q, (int)dtype);
    if (rank > ST_MAX_RANK)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET,
                       "st_writer_add: tensor %s: rank %u is over the limit of %d", q,
                       (unsigned)rank, ST_MAX_RANK);
    if (rank && !shape)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_writer_add: tensor %s: NULL shape", q);
    if (nbytes && !data && !read)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET,
                       "st_writer_add: tensor %s: NULL data for %llu bytes", q,
                       (unsigned long long)nbytes);

    name_probe probe = {w, name, name_len};
    uint64_t h = st_hash_bytes_seeded(w->seed, name, name_len);
    if (hset_find(&w->tensor_set, h, &probe, tensor_eq) != SIZE_MAX)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_writer_add: tensor %s already added", q);

    uint64_t nelements, expect;
    if (!st_shape_product(shape, rank, &nelements))
        return st_fail(err, ST_E_OVERFLOW, ST_NO_OFFSET,
                       "st_writer_add: tensor %s: element count overflows 64 bits", q);
    int rc = st_bytes_for(dtype, nelements, &expect);
    if (rc == ST_E_OVERFLOW)
        return st_fail(err, rc, ST_NO_OFFSET,
                       "st_writer_add: tensor %s: bit count overflows 64 bits", q);
    if (rc == ST_E_MISALIGNED)
        return st_fail(err, rc, ST_NO_OFFSET,
                       "st_writer_add: tensor %s: %llu elements of %s are not a whole number "
                       "of bytes", q, (unsigned long long)nelements, st_dtype_name(dtype));
    if (expect != nbytes)
        return st_fail(err, ST_E_SIZE_MISMATCH, ST_NO_OFFSET,
                       "st_writer_add: tensor %s: %llu bytes given, shape and dtype need %llu",
                       q, (unsigned long long)nbytes, (unsigned long long)expect);
    uint64_t total;
    if (__builtin_add_overflow(w->data_size, nbytes, &total))
        return st_fail(err, ST_E_OVERFLOW, ST_NO_OFFSET,
                       "st_writer_add: tensor %s: total data size overflows 64 bits", q);

    if (w->count == w->cap) {
        size_t ncap = w->cap ? w->cap * 2 : 16;
        wtensor *nt = ncap > SIZE_MAX / sizeof *nt ? NULL : realloc(w->tensors, ncap * sizeof *nt);
        if (!nt)
            return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "st_writer_add: out of memory");
        w->tensors = nt;
        w->cap = ncap;
    }
    if (hset_reserve(&w->tensor_set, w->count, w, tensor_hash_of) != ST_OK)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "st_writer_add: out of memory");
    wtensor t = {0};
    t.name = dup_bytes(name, name_len);
    if (rank) {
        t.shape = malloc(rank * sizeof *t.shape);
        if (t.shape)
            memcpy(t.shape, shape, rank * sizeof *t.shape);
    }
    if (!t.name || (rank && !t.shape)) {
        free(t.name);
        free(t.shape);
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "st_writer_add: out of memory");
    }
    t.name_len = name_len;
    t.hash = h;
    t.dtype = dtype;
    t.rank = rank;
    t.nbytes = nbytes;
    t.data = data;
    t.read = read;
    t.ctx = ctx;
    t.fd = -1;
    t.view = NULL;
    invalidate(w);
    w->tensors[w->count] = t;
    hset_insert(&w->tensor_set, h, w->count);
    w->count++;
    w->data_size = total;
    return ST_OK;
}

int st_writer_add(st_writer *w, const char *name, size_t name_len, st_dtype dtype,
                  const uint64_t *shape, uint32_t rank, const void *data, uint64_t nbytes,
                  st_error *err)
{
    return add_common(w, name, name_len, dtype, shape, rank, data, nbytes, NULL, NULL, err);
}

int st_writer_add_stream(st_writer *w, const char *name, size_t name_len, st_dtype dtype,
                         const uint64_t *shape, uint32_t rank, uint64_t nbytes,
                         st_read_fn read, void *ctx, st_error *err)
{
    if (!read && nbytes)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET,
                       "st_writer_add_stream: NULL callback for %llu bytes",
                       (unsigned long long)nbytes);
    return add_common(w, name, name_len, dtype, shape, rank, NULL, nbytes, read, ctx, err);
}

/* Stands in as the read callback of file-range tensors (so add_common's
 * checks see a source); stream() moves their bytes itself. */
static int file_range_marker(void *ctx, uint64_t offset, void *buf, size_t len)
{
    (void)ctx;
    (void)offset;
    (void)buf;
    (void)len;
    return -1;
}

int st_writer_add_file_range(st_writer *w, const char *name, size_t name_len, st_dtype dtype,
                             const uint64_t *shape, uint32_t rank, int fd, uint64_t offset,
                             uint64_t nbytes, st_error *err)
{
    if (fd < 0)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_writer_add_file_range: bad descriptor");
    if (offset > UINT64_MAX - nbytes)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_writer_add_file_range: range overflows");
    int rc = add_common(w, name, name_len, dtype, shape, rank, NULL, nbytes, file_range_marker,
                        NULL, err);
    if (rc == ST_OK) {
        w->tensors[w->count - 1].fd = fd;
        w->tensors[w->count - 1].file_offset = offset;
    }
    return rc;
}

int st_writer_add_view(st_writer *w, const char *name, size_t name_len, st_dtype dtype,
                       const uint64_t *shape, uint32_t rank, uint64_t nbytes, st_view_fn view,
                       void *ctx, st_error *err)
{
    if (!view && nbytes)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_writer_add_view: NULL callback");
    int rc = add_common(w, name, name_len, dtype, shape, rank, NULL, nbytes, file_range_marker,
                        ctx, err);
    if (rc == ST_OK)
        w->tensors[w->count - 1].view = view;
    return rc;
}

int st_writer_set_metadata(st_writer *w, const char *key, size_t key_len, const char *value,
                           size_t value_len, st_error *err)
{
    if (!w || (!key && key_len) || (!value && value_len))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_writer_set_metadata: NULL argument");
    if (!key)
        key = "";
    if (!value)
        value = "";
    if (!utf8_valid((const unsigned char *)key, key_len))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET,
                       "st_writer_set_metadata: key is not valid UTF-8");
    if (!utf8_valid((const unsigned char *)value, value_len))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET,
                       "st_writer_set_metadata: value is not valid UTF-8");
    char *v = dup_bytes(value, value_len);
    if (!v)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "st_writer_set_metadata: out of memory");
    name_probe probe = {w, key, key_len};
    uint64_t h = st_hash_bytes_seeded(w->seed, key, key_len);
    size_t at = hset_find(&w->meta_set, h, &probe, meta_eq);
    if (at != SIZE_MAX) {
        invalidate(w);
        free(w->meta[at].value);
        w->meta[at].value = v;
        w->meta[at].value_len = value_len;
        w->meta_present = 1;
        return ST_OK;
    }
    if (w->meta_count == w->meta_cap) {
        size_t ncap = w->meta_cap ? w->meta_cap * 2 : 8;
        wmeta *nm = ncap > SIZE_MAX / sizeof *nm ? NULL : realloc(w->meta, ncap * sizeof *nm);
        if (!nm) {
            free(v);
            return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "st_writer_set_metadata: out of memory");
        }
        w->meta = nm;
        w->meta_cap = ncap;
    }
    char *k = dup_bytes(key, key_len);
    if (!k || hset_reserve(&w->meta_set, w->meta_count, w, meta_hash_of) != ST_OK) {
        free(k);
        free(v);
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "st_writer_set_metadata: out of memory");
    }
    invalidate(w);
    w->meta[w->meta_count] = (wmeta){k, key_len, h, v, value_len};
    hset_insert(&w->meta_set, h, w->meta_count);
    w->meta_count++;
    w->meta_present = 1;
    return ST_OK;
}

void st_writer_set_metadata_present(st_writer *w, int present)
{
    if (!w)
        return;
    if ((present != 0) != (w->meta_present != 0))
        invalidate(w);
    w->meta_present = present != 0;
}

/* ---- header ---- */

/* The header text. Built in two passes over the same code: the first only
 * counts (p == NULL, measuring), so a header over the limit is refused
 * without allocating it and the second pass fills an exact allocation. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    int measuring;
    int failed;          /* ST_E_HEADER_TOO_LARGE */
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->failed || !n)
        return;
    /* The padded header may not exceed the reference's limit; as the limit
     * is a multiple of 8, that is the same as the unpadded text. */
    if (n > ST_MAX_HEADER_SIZE - b->len) {
        b->failed = ST_E_HEADER_TOO_LARGE;
        return;
    }
    if (!b->measuring) {
        if (n > b->cap - b->len) { /* cannot happen: the sizes were counted */
            b->failed = ST_E_HEADER_TOO_LARGE;
            return;
        }
        memcpy(b->p + b->len, s, n);
    }
    b->len += n;
}

static void sb_puts(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_u64(sbuf *b, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    sb_put(b, tmp, (size_t)n);
}

/* A JSON string as serde_json escapes it: the two-character escapes for
 * " \ \b \f \n \r \t, \u00xx (lower-case hex) for the other control bytes,
 * every other byte (DEL and all of UTF-8 included) as is. */
static void sb_json_string(sbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    sb_put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[6];
        size_t elen;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        sb_put(b, s + run, i - run);
        run = i + 1;
        esc[0] = '\\';
        elen = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case 0x08: esc[1] = 'b'; break;
        case 0x0c: esc[1] = 'f'; break;
        case 0x0a: esc[1] = 'n'; break;
        case 0x0d: esc[1] = 'r'; break;
        case 0x09: esc[1] = 't'; break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            elen = 6;
        }
        sb_put(b, esc, elen);
    }
    sb_put(b, s + run, n - run);
    sb_put(b, "\"", 1);
}

static int cmp_tensor(const void *a, const void *b)
{
    const wtensor *x = *(const wtensor *const *)a, *y = *(const wtensor *const *)b;
    if (x->dtype != y->dtype)
        return x->dtype > y->dtype ? -1 : 1;
    return st_name_cmp(x->name, x->name_len, y->name, y->name_len);
}

static int cmp_meta(const void *a, const void *b)
{
    const wmeta *x = *(const wmeta *const *)a, *y = *(const wmeta *const *)b;
    return st_name_cmp(x->key, x->key_len, y->key, y->key_len);
}

static void build_header(const st_writer *w, wtensor *const *order, wmeta *const *mo, sbuf *b)
{
    sb_put(b, "{", 1);
    int first = 1;
    /* Pairs are never dropped: present = 0 only omits an empty object. */
    if (w->meta_present || w->meta_count) {
        sb_puts(b, "\"__metadata__\":{");
        for (size_t i = 0; i < w->meta_count; i++) {
            if (i)
                sb_put(b, ",", 1);
            sb_json_string(b, mo[i]->key, mo[i]->key_len);
            sb_put(b, ":", 1);
            sb_json_string(b, mo[i]->value, mo[i]->value_len);
        }
        sb_put(b, "}", 1);
        first = 0;
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < w->count && !b->failed; i++) {
        const wtensor *t = order[i];
        if (!first)
            sb_put(b, ",", 1);
        first = 0;
        sb_json_string(b, t->name, t->name_len);
        sb_puts(b, ":{\"dtype\":\"");
        sb_puts(b, st_dtype_name(t->dtype));
        sb_puts(b, "\",\"shape\":[");
        for (uint32_t d = 0; d < t->rank; d++) {
            if (d)
                sb_put(b, ",", 1);
            sb_u64(b, t->shape[d]);
        }
        sb_puts(b, "],\"data_offsets\":[");
        sb_u64(b, offset);
        sb_put(b, ",", 1);
        offset += t->nbytes; /* cannot overflow: data_size was checked */
        sb_u64(b, offset);
        sb_puts(b, "]}");
    }
    sb_put(b, "}", 1);
    /* Spaces: to a multiple of 8 (the reference writer's alignment), after
     * at least header_room of them, or to exactly header_exact. */
    uint64_t want = b->len;
    if (w->header_exact)
        want = w->header_exact;
    else if (w->header_room > ST_MAX_HEADER_SIZE - want)
        want = (uint64_t)ST_MAX_HEADER_SIZE + 1; /* refused below */
    else
        want = (want + w->header_room + 7) & ~(uint64_t)7;
    if (b->failed || want <= b->len)
        return;
    if (want - b->len > ST_MAX_HEADER_SIZE - b->len) {
        b->failed = ST_E_HEADER_TOO_LARGE;
        return;
    }
    if (!b->measuring) {
        if (want > b->cap) {
            b->failed = ST_E_HEADER_TOO_LARGE;
            return;
        }
        memset(b->p + b->len, ' ', (size_t)(want - b->len));
    }
    b->len = (size_t)want;
}

/* Sorts the tensors and builds the padded header (cached until the next
 * change). */
static int prepare(st_writer *w, st_error *err)
{
    if (!w)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "NULL writer");
    if (w->prepared)
        return ST_OK;
    invalidate(w);
    wtensor **order = malloc((w->count ? w->count : 1) * sizeof *order);
    wmeta **mo = malloc((w->meta_count ? w->meta_count : 1) * sizeof *mo);
    if (!order || !mo) {
        free(order);
        free(mo);
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory preparing the header");
    }
    for (size_t i = 0; i < w->count; i++)
        order[i] = &w->tensors[i];
    for (size_t i = 0; i < w->meta_count; i++)
        mo[i] = &w->meta[i];
    /* Names are unique, so the order is total and qsort's instability
     * cannot show. */
    if (w->count > 1)
        qsort(order, w->count, sizeof *order, cmp_tensor);
    if (w->meta_count > 1)
        qsort(mo, w->meta_count, sizeof *mo, cmp_meta);

    sbuf b = {0};
    b.measuring = 1;
    build_header(w, order, mo, &b);
    if (!b.failed) {
        size_t n = b.len;
        b = (sbuf){malloc(n ? n : 1), 0, n, 0, 0};
        if (!b.p) {
            free(mo);
            free(order);
            return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET,
                           "out of memory for a header of %zu bytes", n);
        }
        build_header(w, order, mo, &b);
    }
    free(mo);
    if (b.failed) {
        free(b.p);
        free(order);
        return st_fail(err, ST_E_HEADER_TOO_LARGE, ST_NO_OFFSET,
                       "header would be over %llu bytes", (unsigned long long)ST_MAX_HEADER_SIZE);
    }
    w->header = b.p;
    w->header_len = b.len;
    w->order = order;
    w->prepared = 1;
    return ST_OK;
}

void st_writer_set_header_padding(st_writer *w, uint64_t bytes)
{
    if (!w)
        return;
    if (bytes != w->header_room)
        invalidate(w);
    w->header_room = bytes;
}

void st_writer_set_header_size(st_writer *w, uint64_t n)
{
    if (!w)
        return;
    if (n != w->header_exact)
        invalidate(w);
    w->header_exact = n;
}

uint64_t st_writer_json_size(st_writer *w)
{
    uint64_t room = w->header_room, exact = w->header_exact;
    w->header_room = w->header_exact = 0;
    invalidate(w);
    uint64_t n = prepare(w, NULL) == ST_OK ? w->header_len : 0;
    /* the JSON without the alignment spaces */
    while (n && w->header[n - 1] == ' ')
        n--;
    w->header_room = room;
    w->header_exact = exact;
    invalidate(w);
    return n;
}

int st_writer_header(st_writer *w, const char **header, uint64_t *n, st_error *err)
{
    int rc = prepare(w, err);
    if (rc != ST_OK)
        return rc;
    *header = w->header;
    *n = w->header_len;
    return ST_OK;
}

size_t st_writer_tensor_count(const st_writer *w)
{
    return w ? w->count : 0;
}

int st_writer_planned_begin(st_writer *w, size_t i, uint64_t *begin)
{
    if (prepare(w, NULL) != ST_OK || i >= w->count)
        return ST_E_ARG;
    uint64_t off = 0;
    for (size_t k = 0; k < w->count; k++) {
        if (w->order[k] == &w->tensors[i]) {
            *begin = off;
            return ST_OK;
        }
        off += w->order[k]->nbytes;
    }
    return ST_E_ARG;
}

uint64_t st_writer_output_size(st_writer *w)
{
    if (prepare(w, NULL) != ST_OK)
        return 0;
    uint64_t total;
    if (__builtin_add_overflow((uint64_t)8 + w->header_len, w->data_size, &total))
        return 0;
    return total;
}

/* ---- streaming ---- */

/* Where bytes go: `emit` writes n bytes and returns ST_OK or fills err. */
typedef struct out {
    int (*emit)(void *ctx, const void *p, size_t n, st_error *err);
    void *ctx;
    unsigned char *buf;
    size_t cap, len;
    /* Progress: bytes emitted of `total`, reported at most every
     * PROGRESS_NS through the writer's hook. */
    const st_output_hooks *hooks;
    uint64_t done, total, last_ns;
    /* Set when the output is a file: moves n bytes of fd from off into it
     * without passing them through this process. */
    int (*copy)(void *ctx, int fd, uint64_t off, uint64_t n, st_error *err);
    /* Set when the output is a file: moves past n bytes put there by the
     * caller (a lent tensor answering ST_VIEW_PLACED). */
    int (*skip)(void *ctx, uint64_t n, st_error *err);
} out;

#define PROGRESS_NS 100000000ull

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Counts n emitted bytes and tells the progress hook when due (always at
 * the end). A hook asking to stop fails the write like a callback would. */
static int out_progress(out *o, size_t n, st_error *err)
{
    o->done += n;
    if (!o->hooks || !o->hooks->progress)
        return ST_OK;
    uint64_t t = now_ns();
    if (o->done != o->total && t - o->last_ns < PROGRESS_NS)
        return ST_OK;
    o->last_ns = t;
    if (o->hooks->progress(o->hooks->progress_ctx, o->done, o->total) != 0)
        return st_fail(err, ST_E_CALLBACK, ST_NO_OFFSET, "stopped by the progress callback");
    return ST_OK;
}

static int emit_counted(out *o, const void *p, size_t n, st_error *err)
{
    int rc = o->emit(o->ctx, p, n, err);
    return rc ? rc : out_progress(o, n, err);
}

static int out_flush(out *o, st_error *err)
{
    if (!o->len)
        return ST_OK;
    size_t n = o->len;
    o->len = 0;
    return emit_counted(o, o->buf, n, err);
}

static int out_write(out *o, const void *p, uint64_t n, st_error *err)
{
    const unsigned char *s = p;
    if (!n)
        return ST_OK;
    if (n < o->cap - o->len) {
        memcpy(o->buf + o->len, s, (size_t)n);
        o->len += (size_t)n;
        return ST_OK;
    }
    int rc = out_flush(o, err);
    if (rc)
        return rc;
    if (n < o->cap) {
        memcpy(o->buf, s, (size_t)n);
        o->len = (size_t)n;
        return ST_OK;
    }
    while (n) {
        size_t piece = n > MAX_PIECE ? MAX_PIECE : (size_t)n;
        rc = emit_counted(o, s, piece, err);
        if (rc)
            return rc;
        s += piece;
        n -= piece;
    }
    return ST_OK;
}

/* A file-range tensor: into a file, flushed and moved by the kernel (in
 * pieces, so progress keeps moving); elsewhere, read into the buffer. */
static int stream_file_range(out *o, const wtensor *t, st_error *err)
{
    uint64_t off = 0;
    int rc = ST_OK;
    if (o->copy) {
        rc = out_flush(o, err);
        while (rc == ST_OK && off < t->nbytes) {
            uint64_t n = t->nbytes - off;
            if (n > ((uint64_t)64 << 20))
                n = (uint64_t)64 << 20;
            rc = o->copy(o->ctx, t->fd, t->file_offset + off, n, err);
            if (rc == ST_OK)
                rc = out_progress(o, (size_t)n, err);
            off += n;
        }
        return rc;
    }
    while (rc == ST_OK && off < t->nbytes) {
        if (o->cap - o->len < o->cap / 4)
            rc = out_flush(o, err);
        if (rc)
            break;
        uint64_t left = t->nbytes - off;
        size_t room = o->cap - o->len;
        size_t piece = left < room ? (size_t)left : room;
        if (st_pread_full(t->fd, o->buf + o->len, piece, t->file_offset + off) != ST_OK) {
            char q[160];
            st_quote_name(q, sizeof q, t->name, t->name_len);
            return st_fail(err, ST_E_IO, t->file_offset + off,
                           "cannot read tensor %s's bytes at byte %llu of its file", q,
                           (unsigned long long)(t->file_offset + off));
        }
        o->len += piece;
        off += piece;
    }
    return rc;
}

/* Lent bytes: emitted from the lender's memory (out_write copies only
 * pieces smaller than the buffer). */
static int stream_view(out *o, const wtensor *t, st_error *err)
{
    int rc = ST_OK;
    for (uint64_t off = 0; off < t->nbytes && rc == ST_OK;) {
        uint64_t n = 0;
        const void *p = t->view(t->ctx, off, &n);
        if (!p || n == 0 || n > t->nbytes - off) {
            char q[160];
            st_quote_name(q, sizeof q, t->name, t->name_len);
            return st_fail(err, ST_E_CALLBACK, ST_NO_OFFSET,
                           "view callback of tensor %s failed at byte %llu", q,
                           (unsigned long long)off);
        }
        if (p == ST_VIEW_PLACED) {
            rc = o->skip ? out_flush(o, err) : st_fail(err, ST_E_CALLBACK, ST_NO_OFFSET,
                                                      "a tensor was placed in an output that is not a file");
            if (rc == ST_OK)
                rc = o->skip(o->ctx, n, err);
            if (rc == ST_OK)
                rc = out_progress(o, n, err);
        } else {
            rc = out_write(o, p, n, err);
        }
        off += n;
    }
    return rc;
}

static int stream(st_writer *w, out *o, st_error *err)
{
    o->hooks = &w->hooks;
    o->total = st_writer_output_size(w);
    unsigned char nle[8];
    uint64_t n = w->header_len;
    for (int i = 0; i < 8; i++)
        nle[i] = (unsigned char)(n >> (8 * i));
    int rc = out_write(o, nle, 8, err);
    if (!rc)
        rc = out_write(o, w->header, w->header_len, err);
    for (size_t i = 0; i < w->count && !rc; i++) {
        const wtensor *t = w->order[i];
        if (!t->read) {
            rc = out_write(o, t->data, t->nbytes, err);
            continue;
        }
        if (t->fd >= 0) {
            rc = stream_file_range(o, t, err);
            continue;
        }
        if (t->view) {
            rc = stream_view(o, t, err);
            continue;
        }
        uint64_t off = 0;
        while (off < t->nbytes && !rc) {
            /* Flush rather than hand the callback a sliver of space. */
            if (o->cap - o->len < o->cap / 4)
                rc = out_flush(o, err);
            if (rc)
                break;
            uint64_t left = t->nbytes - off;
            size_t room = o->cap - o->len;
            size_t piece = left < room ? (size_t)left : room;
            if (t->read(t->ctx, off, o->buf + o->len, piece) != 0) {
                char q[160];
                st_quote_name(q, sizeof q, t->name, t->name_len);
                rc = st_fail(err, ST_E_CALLBACK, ST_NO_OFFSET,
                             "read callback of tensor %s failed at byte %llu", q,
                             (unsigned long long)off);
                break;
            }
            o->len += piece;
            off += piece;
        }
    }
    if (!rc)
        rc = out_flush(o, err);
    return rc;
}

typedef struct user_sink {
    st_write_fn fn;
    void *ctx;
} user_sink;

static int emit_user(void *ctx, const void *p, size_t n, st_error *err)
{
    const user_sink *s = ctx;
    if (s->fn(s->ctx, p, n) != 0)
        return st_fail(err, ST_E_CALLBACK, ST_NO_OFFSET, "write callback failed");
    return ST_OK;
}

void st_writer_set_hooks(st_writer *w, const st_output_hooks *hooks)
{
    if (!w)
        return;
    if (hooks)
        w->hooks = *hooks;
    else
        memset(&w->hooks, 0, sizeof w->hooks);
}

int st_writer_write_to(st_writer *w, st_write_fn sink, void *ctx, st_error *err)
{
    if (!sink)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_writer_write_to: NULL sink");
    int rc = prepare(w, err);
    if (rc)
        return rc;
    user_sink us = {sink, ctx};
    out o = {.emit = emit_user, .ctx = &us, .buf = malloc(OUT_BUFFER_SIZE), .cap = OUT_BUFFER_SIZE};
    if (!o.buf)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    rc = stream(w, &o, err);
    free(o.buf);
    return rc;
}

typedef struct mem_sink {
    unsigned char *p;
    size_t len, cap;
} mem_sink;

static int emit_mem(void *ctx, const void *p, size_t n, st_error *err)
{
    mem_sink *m = ctx;
    if (n > m->cap - m->len) /* a callback or tensor changed size: a bug */
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "output larger than computed");
    memcpy(m->p + m->len, p, n);
    m->len += n;
    return ST_OK;
}

int st_writer_serialize(st_writer *w, void **outp, size_t *out_len, st_error *err)
{
    if (!outp || !out_len)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_writer_serialize: NULL output");
    *outp = NULL;
    *out_len = 0;
    int rc = prepare(w, err);
    if (rc)
        return rc;
    uint64_t total = st_writer_output_size(w);
    if (!total || total > SIZE_MAX)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "output of %llu bytes does not fit memory",
                       (unsigned long long)total);
    mem_sink m = {malloc((size_t)total), 0, (size_t)total};
    unsigned char *stage = malloc(64 * 1024);
    if (!m.p || !stage) {
        free(m.p);
        free(stage);
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory for %llu bytes",
                       (unsigned long long)total);
    }
    out o = {.emit = emit_mem, .ctx = &m, .buf = stage, .cap = 64 * 1024};
    rc = stream(w, &o, err);
    free(stage);
    if (!rc && m.len != total)
        rc = st_fail(err, ST_E_ARG, ST_NO_OFFSET, "output smaller than computed");
    if (rc) {
        free(m.p);
        return rc;
    }
    *outp = m.p;
    *out_len = m.len;
    return ST_OK;
}

/* ---- atomic file write ---- */

static int emit_file(void *ctx, const void *p, size_t n, st_error *err)
{
    return st_outfile_write(ctx, p, n, err);
}

static int copy_file(void *ctx, int fd, uint64_t off, uint64_t n, st_error *err)
{
    return st_outfile_copy_range(ctx, fd, off, n, err);
}

static int skip_file(void *ctx, uint64_t n, st_error *err)
{
    return st_outfile_skip(ctx, n, err);
}

const char st_view_placed_marker = 0;

void st_writer_set_open_hook(st_writer *w, st_open_hook_fn hook, void *ctx)
{
    w->open_hook = hook;
    w->open_ctx = ctx;
}

void st_writer_set_close_hook(st_writer *w, st_close_hook_fn hook, void *ctx)
{
    w->close_hook = hook;
    w->close_ctx = ctx;
}

int st_writer_write(st_writer *w, const char *path, st_error *err)
{
    if (!w || !path || !*path)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_writer_write: NULL writer or empty path");
    int rc = prepare(w, err);
    if (rc)
        return rc;
    st_outfile of;
    /* with an open hook, the space is reserved after it, so the caller's
     * work overlaps the reservation (which fills tmpfs page by page) */
    uint64_t size = st_writer_output_size(w);
    rc = st_outfile_open(&of, path, w->open_hook ? 0 : size, w->hooks.temp, w->hooks.temp_ctx, err);
    if (rc)
        return rc;
    out ob = {.emit = emit_file, .ctx = &of, .buf = malloc(OUT_BUFFER_SIZE), .cap = OUT_BUFFER_SIZE,
              .copy = copy_file, .skip = skip_file};
    if (!ob.buf) {
        st_outfile_abort(&of);
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    }
    if (w->open_hook) {
        w->open_hook(w->open_ctx, &of, 8 + w->header_len);
        rc = st_outfile_reserve(&of, size, err);
        if (rc) {
            w->open_hook(w->open_ctx, NULL, 0);
            free(ob.buf);
            st_outfile_abort(&of);
            return rc;
        }
    }
    rc = stream(w, &ob, err);
    free(ob.buf);
    if (w->open_hook)
        w->open_hook(w->open_ctx, NULL, 0);
    if (rc == ST_OK && w->close_hook)
        rc = w->close_hook(w->close_ctx, &of, err);
    if (rc) {
        st_outfile_abort(&of);
        return rc;
    }
    return st_outfile_commit(&of, err);
}
