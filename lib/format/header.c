/*
 * Header parsing: from checked JSON text to tensor entries and metadata.
 *
 * Two passes. st_json_check first proves the whole text is well-formed JSON
 * within the nesting limit, so a syntax error anywhere is reported as
 * header_json before any schema error. This pass then reads the schema the
 * reference's serde types define:
 *
 *   { "__metadata__": null | { string: string, ... },
 *     NAME: { "dtype": DTYPE, "shape": [u64, ...], "data_offsets": [u64, u64],
 *             other fields ignored }, ... }
 *
 * Keys are compared after escape decoding ("\u0064type" is "dtype"), and a
 * key repeated in any object, ignored fields included, is duplicate_key:
 * the format's README forbids duplicates even though the reference keeps
 * the last one. Every loop is iterative and every allocation is bounded by
 * the header's length.
 */
#include "format/header.h"
#include "format/json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct key_ref {
    size_t off, len; /* into parser.scratch */
    uint64_t header_offset;
} key_ref;

typedef struct parser {
    const char *s;
    size_t n, i;
    uint64_t base;
    st_error *err;
    st_header *h;
    char *scratch; /* decoded keys of the object being skipped */
    size_t scratch_len, scratch_cap;
    key_ref *keys;
    size_t nkeys, keys_cap;
} parser;

static bool grow(void **buf, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return true;
    size_t ncap = *cap ? *cap : 16;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2 / elem)
            return false;
        ncap *= 2;
    }
    void *p = realloc(*buf, ncap * elem);
    if (!p)
        return false;
    *buf = p;
    *cap = ncap;
    return true;
}

static int nomem(parser *p)
{
    return st_fail(p->err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory while parsing the header");
}

static uint64_t at(const parser *p, size_t pos)
{
    return p->base + pos;
}

static void skip_ws(parser *p)
{
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c != ' ' && c != '\n' && c != '\r' && c != '\t')
            break;
        p->i++;
    }
}

/* The current byte; the syntax pass guarantees one exists where we look,
 * but a NUL stands in rather than reading past the end. */
static char cur(const parser *p)
{
    return p->i < p->n ? p->s[p->i] : '\0';
}

/* Malformed JSON at p->i. The one-pass parser only notices it; the caller
 * then runs the full syntax check, which reports the first syntax error in
 * the document with its own message. */
static int syntax(parser *p)
{
    return st_fail(p->err, ST_E_HEADER_JSON, at(p, p->i), "invalid JSON at header byte %zu", p->i);
}

static int expect(parser *p, char c)
{
    skip_ws(p);
    if (cur(p) != c)
        return syntax(p);
    p->i++;
    return ST_OK;
}

/* After a member or element: ',' (returns 1) or the closer (returns 0). */
static int next_or_close(parser *p, char closer, int *more)
{
    skip_ws(p);
    char c = cur(p);
    if (c == ',')
        *more = 1;
    else if (c == closer)
        *more = 0;
    else
        return syntax(p);
    p->i++;
    return ST_OK;
}

static int literal(parser *p, const char *lit, size_t len)
{
    if (p->n - p->i < len || memcmp(p->s + p->i, lit, len))
        return syntax(p);
    p->i += len;
    return ST_OK;
}

/* A raw string token at p->i: body position and length, escape flag. */
typedef struct token {
    size_t pos, len;
    bool escaped;
} token;

static int read_string(parser *p, token *t)
{
    size_t start = p->i;
    if (cur(p) != '"')
        return syntax(p);
    int rc = st_json_scan_string(p->s, p->n, &p->i, &t->escaped, p->base, p->err);
    if (rc)
        return rc;
    t->pos = start + 1;
    t->len = p->i - start - 2;
    return ST_OK;
}

/* Decodes a token into the header arena, NUL-terminated. The arena was
 * reserved for the whole text (a decoded string and its NUL never take more
 * bytes than the string's JSON with its quotes), so it never moves. */
static int arena_string(parser *p, const token *t, size_t *off, size_t *len)
{
    st_header *h = p->h;
    if (h->arena_cap - h->arena_len < t->len + 1)
        return nomem(p);
    char *dst = h->arena + h->arena_len;
    size_t n = t->escaped ? st_json_decode_string(p->s + t->pos, t->len, dst)
                          : (memcpy(dst, p->s + t->pos, t->len), t->len);
    dst[n] = 0;
    *off = h->arena_len;
    *len = n;
    h->arena_len += n + 1;
    return ST_OK;
}

/* Compares a token with a short literal after decoding. */
#define token_is(p, t, lit) token_equals(p, t, lit, sizeof lit - 1)
static bool token_equals(const parser *p, const token *t, const char *lit, size_t ll)
{
    if (!t->escaped)
        return t->len == ll && memcmp(p->s + t->pos, lit, ll) == 0;
    /* Each decoded byte takes at most 6 raw bytes. */
    char buf[96];
    if (t->len > sizeof buf || t->len > 6 * ll)
        return false;
    size_t n = st_json_decode_string(p->s + t->pos, t->len, buf);
    return n == ll && memcmp(buf, lit, ll) == 0;
}

/* A schema error at header position pos, about tensor `name` (or about the
 * header itself when name is NULL). */
__attribute__((format(printf, 5, 6)))
static int schema_error(parser *p, size_t pos, const char *name, size_t name_len, const char *fmt, ...)
{
    char what[256], q[160] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (name)
        st_quote_name(q, sizeof q, name, name_len);
    return st_fail(p->err, ST_E_HEADER_SCHEMA, at(p, pos),
                   "invalid header at byte %zu (file offset %llu): %s%s%s%s", pos,
                   (unsigned long long)at(p, pos), name ? "tensor " : "", q, name ? ": " : "", what);
}

/* ---- duplicate keys in nested objects --------------------------------- */

static int push_key(parser *p, const token *t, size_t key_pos)
{
    /* + 1: an empty first key would otherwise leave scratch NULL, and
     * NULL + 0 below is undefined behaviour. */
    if (!grow((void **)&p->scratch, &p->scratch_cap, p->scratch_len + t->len + 1, 1) ||
        !grow((void **)&p->keys, &p->keys_cap, p->nkeys + 1, sizeof *p->keys))
        return nomem(p);
    size_t n = t->escaped ? st_json_decode_string(p->s + t->pos, t->len, p->scratch + p->scratch_len)
                          : (memcpy(p->scratch + p->scratch_len, p->s + t->pos, t->len), t->len);
    p->keys[p->nkeys++] = (key_ref){p->scratch_len, n, at(p, key_pos)};
    p->scratch_len += n;
    return ST_OK;
}

typedef struct key_view {
    const char *ptr;
    size_t len;
    uint64_t header_offset;
} key_view;

static int key_view_cmp(const void *a, const void *b)
{
    const key_view *x = a, *y = b;
    int c = st_name_cmp(x->ptr, x->len, y->ptr, y->len);
    if (c)
        return c;
    return x->header_offset < y->header_offset ? -1 : x->header_offset > y->header_offset;
}

static int duplicate_error(parser *p, const char *name, size_t len, uint64_t offset,
                           const char *where)
{
    char q[160];
    st_quote_name(q, sizeof q, name, len);
    return st_fail(p->err, ST_E_DUPLICATE_KEY, offset,
                   "duplicate key %s in %s at file offset %llu", q, where,
                   (unsigned long long)offset);
}

/* Checks keys[from..nkeys) for repeats, then forgets them. */
static int close_object_keys(parser *p, size_t from, size_t scratch_from, const char *where)
{
    size_t m = p->nkeys - from;
    int rc = ST_OK;
    if (m > 1) {
        key_view *v = malloc(m * sizeof *v);
        if (!v)
            return nomem(p);
        for (size_t k = 0; k < m; k++) {
            const key_ref *r = &p->keys[from + k];
            v[k] = (key_view){p->scratch + r->off, r->len, r->header_offset};
        }
        qsort(v, m, sizeof *v, key_view_cmp);
        /* Report the repeat that comes first in the file. */
        const key_view *dup = NULL;
        for (size_t k = 1; k < m; k++)
            if (st_name_cmp(v[k - 1].ptr, v[k - 1].len, v[k].ptr, v[k].len) == 0 &&
                (!dup || v[k].header_offset < dup->header_offset))
                dup = &v[k];
        if (dup)
            rc = duplicate_error(p, dup->ptr, dup->len, dup->header_offset, where);
        free(v);
    }
    p->nkeys = from;
    p->scratch_len = scratch_from;
    return rc;
}

/* Skips one value, checking its syntax and every object in it for repeated
 * keys. Iterative; `open` containers already enclose it. */
static int skip_value(parser *p, size_t open)
{
    struct frame {
        char kind;
        size_t key_from, scratch_from;
    } stack[ST_MAX_NESTING];
    size_t depth = 0;
    int rc;
    token t;

    for (;;) {
        skip_ws(p);
        char c = cur(p);
        if (c == '{' || c == '[') {
            if (depth + open >= ST_MAX_NESTING)
                return syntax(p);
            stack[depth++] = (struct frame){c, p->nkeys, p->scratch_len};
            p->i++;
            skip_ws(p);
            if (cur(p) == (c == '{' ? '}' : ']')) {
                p->i++;
                depth--;
                goto after_value;
            }
            if (c == '{')
                goto member;
            continue;
        } else if (c == '"') {
            if ((rc = read_string(p, &t)))
                return rc;
        } else if (c == 't') {
            if ((rc = literal(p, "true", 4)))
                return rc;
        } else if (c == 'n') {
            if ((rc = literal(p, "null", 4)))
                return rc;
        } else if (c == 'f') {
            if ((rc = literal(p, "false", 5)))
                return rc;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            if ((rc = st_json_scan_number(p->s, p->n, &p->i, p->base, p->err)))
                return rc;
        } else {
            return syntax(p);
        }
    after_value:
        for (;;) {
            skip_ws(p);
            if (depth == 0)
                return ST_OK;
            c = cur(p);
            if (c == ',') {
                p->i++;
                if (stack[depth - 1].kind == '{')
                    goto member;
                break; /* next array element */
            }
            if (c != (stack[depth - 1].kind == '{' ? '}' : ']'))
                return syntax(p);
            p->i++;
            depth--;
            if (stack[depth].kind == '{' &&
                (rc = close_object_keys(p, stack[depth].key_from, stack[depth].scratch_from,
                                        "an object inside a tensor entry")))
                return rc;
        }
        continue;
    member:
        skip_ws(p);
        {
            size_t key_pos = p->i;
            if ((rc = read_string(p, &t)) || (rc = push_key(p, &t, key_pos)))
                return rc;
        }
        if ((rc = expect(p, ':')))
            return rc;
    }
}

/* ---- numbers --------------------------------------------------------------- */

/* A non-negative integer that fits in 64 bits, as serde reads usize. */
static int read_u64(parser *p, uint64_t *out, const char *what, const char *name, size_t name_len)
{
    skip_ws(p);
    size_t start = p->i;
    char c = cur(p);
    if (c != '-' && (c < '0' || c > '9'))
        return schema_error(p, start, name, name_len, "%s must be non-negative integers", what);
    size_t end = start;
    int rc = st_json_scan_number(p->s, p->n, &end, p->base, p->err);
    if (rc)
        return rc;
    uint64_t v = 0;
    bool ok = c != '-';
    for (size_t k = start; k < end && ok; k++) {
        char d = p->s[k];
        if (d < '0' || d > '9')
            ok = false;
        else if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, (uint64_t)(d - '0'), &v))
            ok = false;
    }
    if (!ok)
        return schema_error(p, start, name, name_len, "%s must be integers from 0 to 2^64-1, not %.*s",
                            what, (int)(end - start > 40 ? 40 : end - start), p->s + start);
    p->i = end;
    *out = v;
    return ST_OK;
}

/* ---- the schema --------------------------------------------------------- */

static int parse_shape(parser *p, st_tensor *e, const char *name)
{
    st_header *h = p->h;
    skip_ws(p);
    if (cur(p) != '[')
        return schema_error(p, p->i, name, e->name_len, "shape must be an array of integers");
    p->i++;
    e->nelements = h->ndims; /* the shape's offset until dims stops moving */
    e->rank = 0;
    skip_ws(p);
    if (cur(p) == ']') {
        p->i++;
        return ST_OK;
    }
    for (;;) {
        uint64_t d;
        int rc = read_u64(p, &d, "shape dimensions", name, e->name_len);
        if (rc)
            return rc;
        if (!grow((void **)&h->dims, &h->dims_cap, h->ndims + 1, sizeof *h->dims))
            return nomem(p);
        h->dims[h->ndims++] = d;
        e->rank++;
        int more;
        if ((rc = next_or_close(p, ']', &more)))
            return rc;
        if (!more)
            return ST_OK;
    }
}

static int parse_offsets(parser *p, st_tensor *e, const char *name)
{
    skip_ws(p);
    size_t start = p->i;
    if (cur(p) != '[')
        return schema_error(p, start, name, e->name_len, "data_offsets must be an array of 2 integers");
    p->i++;
    uint64_t v[2];
    for (int k = 0; k < 2; k++) {
        skip_ws(p);
        if (cur(p) == ']')
            return schema_error(p, start, name, e->name_len, "data_offsets must have exactly 2 entries");
        int rc = read_u64(p, &v[k], "data_offsets", name, e->name_len);
        if (rc)
            return rc;
        int more;
        if ((rc = next_or_close(p, ']', &more)))
            return rc;
        if (more != (k == 0))
            return schema_error(p, start, name, e->name_len, "data_offsets must have exactly 2 entries");
    }
    e->begin = v[0];
    e->end = v[1];
    return ST_OK;
}

/* A dtype: its name as a string, or, as the reference's serde enum also
 * accepts, an object with the name as its only key and null as the value
 * ({"F32": null}). */
static int parse_dtype(parser *p, st_tensor *e, const char *name)
{
    skip_ws(p);
    size_t start = p->i;
    bool map_form = cur(p) == '{';
    int rc;
    if (map_form) {
        p->i++;
        skip_ws(p);
    }
    if (cur(p) != '"')
        return schema_error(p, start, name, e->name_len,
                            map_form ? "dtype object must have exactly one key" : "dtype must be a string");
    token t;
    if ((rc = read_string(p, &t)))
        return rc;
    if (map_form) {
        if ((rc = expect(p, ':')))
            return rc;
        skip_ws(p);
        if (cur(p) != 'n')
            return schema_error(p, p->i, name, e->name_len, "the value in a dtype object must be null");
        int more;
        if ((rc = literal(p, "null", 4)) || (rc = next_or_close(p, '}', &more)))
            return rc;
        if (more)
            return schema_error(p, start, name, e->name_len, "dtype object must have exactly one key");
    }
    char buf[32];
    size_t len = t.len;
    if (t.len <= sizeof buf) {
        if (t.escaped)
            len = st_json_decode_string(p->s + t.pos, t.len, buf);
        else
            memcpy(buf, p->s + t.pos, t.len);
        if (st_dtype_from_name(buf, len, &e->dtype) == ST_OK)
            return ST_OK;
    }
    char q[120];
    st_quote_name(q, sizeof q, p->s + t.pos, t.len);
    return schema_error(p, start, name, e->name_len, "unknown dtype %s", q);
}

/* The sequence form of an entry the reference's serde derive accepts:
 * [dtype, shape, data_offsets], exactly three elements. */
static int parse_tensor_array(parser *p, st_tensor *e)
{
    size_t start = p->i;
    p->i++; /* '[' */
    int rc, more = 1;
    skip_ws(p);
    if (cur(p) == ']')
        more = 0;
    for (int k = 0; k < 3; k++) {
        if (!more)
            return schema_error(p, start, e->name, e->name_len,
                                "an entry given as an array must have 3 elements (dtype, shape, data_offsets)");
        rc = k == 0 ? parse_dtype(p, e, e->name) : k == 1 ? parse_shape(p, e, e->name)
                                                          : parse_offsets(p, e, e->name);
        if (rc || (rc = next_or_close(p, ']', &more)))
            return rc;
    }
    if (more)
        return schema_error(p, start, e->name, e->name_len,
                            "an entry given as an array must have 3 elements (dtype, shape, data_offsets)");
    return ST_OK;
}

enum { F_DTYPE = 1, F_SHAPE = 2, F_OFFSETS = 4 };

static int parse_tensor(parser *p, st_tensor *e)
{
    const char *name = e->name;
    skip_ws(p);
    if (cur(p) == '[')
        return parse_tensor_array(p, e);
    if (cur(p) != '{')
        return schema_error(p, p->i, name, e->name_len,
                            "expected an object with dtype, shape and data_offsets");
    p->i++;
    unsigned seen = 0;
    size_t key_from = p->nkeys, scratch_from = p->scratch_len;
    int rc;
    skip_ws(p);
    if (cur(p) == '}') {
        p->i++;
    } else {
        for (;;) {
            skip_ws(p);
            size_t key_pos = p->i;
            token t;
            if ((rc = read_string(p, &t)) || (rc = expect(p, ':')))
                return rc;
            unsigned field = token_is(p, &t, "dtype")          ? F_DTYPE
                             : token_is(p, &t, "shape")        ? F_SHAPE
                             : token_is(p, &t, "data_offsets") ? F_OFFSETS
                                                               : 0;
            if (field & seen) {
                const char *fname = field == F_DTYPE ? "dtype" : field == F_SHAPE ? "shape" : "data_offsets";
                char where[200], q[160];
                st_quote_name(q, sizeof q, name, e->name_len);
                snprintf(where, sizeof where, "the entry of tensor %s", q);
                return duplicate_error(p, fname, strlen(fname), at(p, key_pos), where);
            }
            seen |= field;
            if (field == F_DTYPE)
                rc = parse_dtype(p, e, name);
            else if (field == F_SHAPE)
                rc = parse_shape(p, e, name);
            else if (field == F_OFFSETS)
                rc = parse_offsets(p, e, name);
            else if (!(rc = push_key(p, &t, key_pos)))
                rc = skip_value(p, 2);
            if (rc)
                return rc;
            int more;
            if ((rc = next_or_close(p, '}', &more)))
                return rc;
            if (!more)
                break;
        }
    }
    if (p->nkeys - key_from > 1) {
        char where[200], q[160];
        st_quote_name(q, sizeof q, name, e->name_len);
        snprintf(where, sizeof where, "the entry of tensor %s", q);
        if ((rc = close_object_keys(p, key_from, scratch_from, where)))
            return rc;
    }
    p->nkeys = key_from;
    p->scratch_len = scratch_from;
    static const char *const field_names[] = {"dtype", "shape", "data_offsets"};
    for (int k = 0; k < 3; k++)
        if (!(seen & (1u << k)))
            return schema_error(p, (size_t)(e->header_offset - p->base), name, e->name_len,
                                "missing field %s", field_names[k]);
    return ST_OK;
}

static int meta_cmp_arena_sort(const void *a, const void *b, void *arena)
{
    const st_meta_entry *x = a, *y = b;
    const char *base = arena;
    int c = st_name_cmp(base + x->key_off, x->key_len, base + y->key_off, y->key_len);
    if (c)
        return c;
    return x->header_offset < y->header_offset ? -1 : x->header_offset > y->header_offset;
}

static int parse_metadata(parser *p)
{
    st_header *h = p->h;
    skip_ws(p);
    size_t start = p->i;
    char c = cur(p);
    if (c == 'n') /* null: same as absent */
        return literal(p, "null", 4);
    if (c != '{')
        return schema_error(p, start, NULL, 0, "__metadata__ must be an object of strings or null");
    h->meta_present = 1;
    p->i++;
    skip_ws(p);
    if (cur(p) == '}') {
        p->i++;
        return ST_OK;
    }
    int rc;
    for (;;) {
        skip_ws(p);
        size_t key_pos = p->i;
        token t;
        if ((rc = read_string(p, &t)))
            return rc;
        if (!grow((void **)&h->meta, &h->meta_cap, h->nmeta + 1, sizeof *h->meta))
            return nomem(p);
        st_meta_entry *m = &h->meta[h->nmeta];
        m->header_offset = at(p, key_pos);
        if ((rc = arena_string(p, &t, &m->key_off, &m->key_len)) || (rc = expect(p, ':')))
            return rc;
        skip_ws(p);
        if (cur(p) != '"')
        {
            char q[160];
            st_quote_name(q, sizeof q, h->arena + m->key_off, m->key_len);
            return schema_error(p, p->i, NULL, 0, "__metadata__ value of key %s must be a string", q);
        }
        if ((rc = read_string(p, &t)) || (rc = arena_string(p, &t, &m->value_off, &m->value_len)))
            return rc;
        h->nmeta++;
        int more;
        if ((rc = next_or_close(p, '}', &more)))
            return rc;
        if (!more)
            break;
    }
    qsort_r(h->meta, h->nmeta, sizeof *h->meta, meta_cmp_arena_sort, h->arena);
    const st_meta_entry *dup = NULL;
    for (size_t k = 1; k < h->nmeta; k++) {
        const st_meta_entry *a = &h->meta[k - 1], *b = &h->meta[k];
        if (st_name_cmp(h->arena + a->key_off, a->key_len, h->arena + b->key_off, b->key_len) == 0 &&
            (!dup || b->header_offset < dup->header_offset))
            dup = b;
    }
    if (dup)
        return duplicate_error(p, h->arena + dup->key_off, dup->key_len, dup->header_offset,
                               "__metadata__");
    return ST_OK;
}

/* ---- the tensor-name index ------------------------------------------------- */

size_t st_header_lookup(const st_header *h, const char *name, size_t len)
{
    if (!h->index)
        return SIZE_MAX;
    uint64_t hash = st_hash_bytes_seeded(h->hash_seed, name, len);
    uint64_t tag = hash >> 32;
    for (size_t slot = hash & h->index_mask;; slot = (slot + 1) & h->index_mask) {
        uint64_t v = h->index[slot];
        if (!v)
            return SIZE_MAX;
        const st_tensor *t = &h->tensors[(uint32_t)v - 1];
        if (v >> 32 == tag && t->name_len == len && memcmp(t->name, name, len) == 0)
            return (uint32_t)v - 1;
    }
}

/* Builds the index over the tensors in their current order; fails on the
 * first name (in document order) that repeats an earlier one. Hashes are
 * computed a batch ahead and their slots prefetched: on a million tensors
 * the table is far larger than the cache, and each insert would otherwise
 * wait for memory. */
static int build_index(parser *p)
{
    enum { BATCH = 16 };
    st_header *h = p->h;
    size_t cap = 16;
    while (cap < h->count * 2)
        cap *= 2;
    h->index = calloc(cap, sizeof *h->index);
    if (!h->index)
        return nomem(p);
    h->index_mask = cap - 1;
    uint64_t hashes[BATCH];
    for (size_t base = 0; base < h->count; base += BATCH) {
        size_t m = h->count - base < BATCH ? h->count - base : BATCH;
        for (size_t j = 0; j < m; j++) {
            const st_tensor *t = &h->tensors[base + j];
            hashes[j] = st_hash_bytes_seeded(h->hash_seed, t->name, t->name_len);
            __builtin_prefetch(&h->index[hashes[j] & h->index_mask], 1);
        }
        for (size_t j = 0; j < m; j++) {
            size_t k = base + j;
            const st_tensor *t = &h->tensors[k];
            uint64_t tag = hashes[j] >> 32;
            for (size_t slot = hashes[j] & h->index_mask;; slot = (slot + 1) & h->index_mask) {
                uint64_t v = h->index[slot];
                if (!v) {
                    h->index[slot] = tag << 32 | (uint64_t)(k + 1);
                    break;
                }
                const st_tensor *o = &h->tensors[(uint32_t)v - 1];
                if (v >> 32 == tag && o->name_len == t->name_len &&
                    memcmp(o->name, t->name, t->name_len) == 0)
                    return duplicate_error(p, t->name, t->name_len, t->header_offset,
                                           "the header (tensor names)");
            }
        }
    }
    return ST_OK;
}

/* ---- entry point ------------------------------------------------------------ */

static int parse_document(parser *p)
{
    st_header *h = p->h;
    int rc;
    skip_ws(p);
    if (cur(p) != '{')
        return schema_error(p, p->i, NULL, 0, "the header must be a JSON object");
    p->i++;
    skip_ws(p);
    if (cur(p) == '}') {
        p->i++;
        skip_ws(p);
        return p->i == p->n ? ST_OK : syntax(p);
    }
    bool seen_metadata = false;
    for (;;) {
        skip_ws(p);
        size_t key_pos = p->i;
        token t;
        if ((rc = read_string(p, &t)) || (rc = expect(p, ':')))
            return rc;
        if (token_is(p, &t, "__metadata__")) {
            if (seen_metadata)
                return duplicate_error(p, "__metadata__", 12, at(p, key_pos), "the header");
            seen_metadata = true;
            if ((rc = parse_metadata(p)))
                return rc;
        } else {
            if (h->count >= UINT32_MAX - 1)
                return st_fail(p->err, ST_E_HEADER_SCHEMA, at(p, key_pos), "too many tensors");
            if (!grow((void **)&h->tensors, &h->cap, h->count + 1, sizeof *h->tensors))
                return nomem(p);
            st_tensor *e = &h->tensors[h->count];
            memset(e, 0, sizeof *e);
            e->header_offset = at(p, key_pos);
            size_t name_off;
            if ((rc = arena_string(p, &t, &name_off, &e->name_len)))
                return rc;
            e->name = h->arena + name_off;
            if ((rc = parse_tensor(p, e)))
                return rc;
            h->count++;
        }
        int more;
        if ((rc = next_or_close(p, '}', &more)))
            return rc;
        if (!more)
            break;
    }
    skip_ws(p);
    return p->i == p->n ? ST_OK : syntax(p);
}

int st_header_parse(st_header *h, const char *text, size_t n, uint64_t base, st_error *err)
{
    parser p = {.s = text, .n = n, .base = base, .err = err, .h = h};
    /* Reserve what the text can need at most: decoded strings are never
     * longer than their JSON, plus one NUL each; an entry takes at least
     * 40 bytes of JSON. Pages never touched cost nothing, and no growth
     * means no copying. */
    size_t arena_max = n + 16;
    size_t entries_guess = n / 40 + 1;
    if (!grow((void **)&h->arena, &h->arena_cap, arena_max, 1) ||
        !grow((void **)&h->tensors, &h->cap, entries_guess, sizeof *h->tensors))
        return nomem(&p);
    int rc = parse_document(&p);
    /* The one pass stops at the first problem of any kind; a syntax error
     * anywhere in the document takes precedence, as in the reference. */
    if (rc && rc != ST_E_NOMEM) {
        int syntax_rc = st_json_check(text, n, base, err);
        if (syntax_rc)
            rc = syntax_rc;
        else if (rc == ST_E_HEADER_JSON)
            rc = st_fail(err, ST_E_HEADER_JSON, ST_NO_OFFSET, "invalid JSON in header");
    }
    if (!rc) {
        for (size_t k = 0; k < h->count; k++) {
            st_tensor *t = &h->tensors[k];
            t->shape = t->rank ? h->dims + t->nelements : NULL;
            t->nelements = 0;
        }
        rc = build_index(&p);
    }
    free(p.scratch);
    free(p.keys);
    return rc;
}

void st_header_free(st_header *h)
{
    free(h->tensors);
    free(h->dims);
    free(h->arena);
    free(h->meta);
    free(h->index);
    memset(h, 0, sizeof *h);
}
