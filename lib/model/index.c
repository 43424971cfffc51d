/*
 * The index file of a sharded model ({"metadata": {...}, "weight_map":
 * {name: shard}}), parsed strictly: the format room's JSON checker first
 * (UTF-8, syntax, nesting), then a walk over the checked text that reads
 * only what it needs and rejects repeated keys in every object it reads.
 */
#include "model/model_internal.h"
#include "format/json.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct keyset {
    st_index_str *v;
    size_t n, cap;
    const char *arena;
    st_strtab t;
} keyset;

typedef struct parser {
    const char *s;
    size_t n, i;
    const char *path;
    st_index *ix;
    st_error *err;
} parser;

static const char *keyset_get(const void *ctx, size_t idx, size_t *len)
{
    const keyset *k = ctx;
    *len = k->v[idx].len;
    return k->arena + k->v[idx].off;
}

static const char *entry_get(const void *ctx, size_t idx, size_t *len)
{
    const st_index *ix = ctx;
    *len = ix->entries[idx].name.len;
    return ix->arena + ix->entries[idx].name.off;
}

static const char *shard_get(const void *ctx, size_t idx, size_t *len)
{
    const st_index *ix = ctx;
    *len = ix->shards[idx].len;
    return ix->arena + ix->shards[idx].off;
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

static int nomem(parser *p)
{
    return st_fail(p->err, ST_E_NOMEM, ST_NO_OFFSET, "%s: out of memory reading the index", p->path);
}

static void skip_ws(parser *p)
{
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\n' || p->s[p->i] == '\r' ||
                           p->s[p->i] == '\t'))
        p->i++;
}

/* The text passed st_json_check, so the structure is known to be sound;
 * the walk still never reads past n. */
static char cur(parser *p)
{
    skip_ws(p);
    return p->i < p->n ? p->s[p->i] : '\0';
}

static int schema(parser *p, uint64_t pos, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int schema(parser *p, uint64_t pos, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return st_fail(p->err, ST_E_HEADER_SCHEMA, pos, "%s: %s (index byte %" PRIu64 ")", p->path, msg,
                   pos);
}

/* Reads the string at p->i, decoded into the arena. */
static int read_string(parser *p, st_index_str *out)
{
    size_t start = p->i;
    bool esc = false;
    int rc = st_json_scan_string(p->s, p->n, &p->i, &esc, 0, p->err);
    if (rc)
        return rc;
    size_t raw = p->i - start - 2;
    st_index *ix = p->ix;
    if (raw + 1 > ix->arena_cap - ix->arena_len)
        return nomem(p); /* cannot happen: the arena holds the whole text */
    char *dst = ix->arena + ix->arena_len;
    size_t len = esc ? st_json_decode_string(p->s + start + 1, raw, dst) : raw;
    if (!esc)
        memcpy(dst, p->s + start + 1, raw);
    dst[len] = '\0';
    out->off = ix->arena_len;
    out->len = len;
    out->pos = start;
    ix->arena_len += len + 1;
    return ST_OK;
}

/* Skips one (checked) value. */
static int skip_value(parser *p)
{
    size_t depth = 0;
    do {
        char c = cur(p);
        if (c == '"') {
            int rc = st_json_scan_string(p->s, p->n, &p->i, NULL, 0, p->err);
            if (rc)
                return rc;
        } else if (c == '{' || c == '[') {
            depth++;
            p->i++;
        } else if (c == '}' || c == ']') {
            if (depth == 0)
                return ST_OK; /* the empty container's closer was already consumed */
            depth--;
            p->i++;
        } else if (c == ',' || c == ':') {
            p->i++;
        } else if (c == '\0') {
            return st_fail(p->err, ST_E_HEADER_JSON, p->i, "%s: unexpected end of the index", p->path);
        } else {
            while (p->i < p->n && !strchr(",:]} \t\r\n", p->s[p->i]))
                p->i++;
        }
    } while (depth);
    return ST_OK;
}

/* Reads "key": and checks the key is not a repeat in this object. */
static int read_key(parser *p, keyset *ks, const char *where, st_index_str *key)
{
    int rc = read_string(p, key);
    if (rc)
        return rc;
    if (!grow((void **)&ks->v, &ks->cap, ks->n + 1, sizeof *ks->v))
        return nomem(p);
    ks->v[ks->n] = *key;
    size_t prev = st_strtab_insert(&ks->t, ks->n);
    if (prev == SIZE_MAX - 1)
        return nomem(p);
    if (prev != SIZE_MAX) {
        char q[160];
        st_quote_name(q, sizeof q, p->ix->arena + key->off, key->len);
        return st_fail(p->err, ST_E_DUPLICATE_KEY, key->pos,
                       "%s: key %s appears twice in %s (index byte %" PRIu64 ")", p->path, q, where,
                       key->pos);
    }
    ks->n++;
    cur(p);
    p->i++; /* ':' */
    return ST_OK;
}

static bool key_is(const parser *p, const st_index_str *k, const char *lit)
{
    size_t l = strlen(lit);
    return k->len == l && memcmp(p->ix->arena + k->off, lit, l) == 0;
}

/* Iterates an object's members: call with *first = true; returns 1 while
 * there is a member to read, 0 after the closing brace. */
static int next_member(parser *p, bool *first)
{
    char c = cur(p);
    if (*first) {
        *first = false;
        p->i++; /* '{' */
        c = cur(p);
    } else if (c == ',') {
        p->i++;
        c = cur(p);
    }
    if (c == '}') {
        p->i++;
        return 0;
    }
    return 1;
}

static void keyset_init(keyset *ks, const st_index *ix, uint64_t seed)
{
    memset(ks, 0, sizeof *ks);
    ks->arena = ix->arena;
    st_strtab_init(&ks->t, keyset_get, ks, seed);
}

static void keyset_free(keyset *ks)
{
    free(ks->v);
    st_strtab_free(&ks->t);
}

static int parse_total_size(parser *p, const st_index_str *key)
{
    (void)key;
    size_t start = (cur(p), p->i);
    if (p->s[start] == '"' || p->s[start] == '{' || p->s[start] == '[' || p->s[start] == 't' ||
        p->s[start] == 'f' || p->s[start] == 'n')
        return schema(p, start, "metadata.total_size is not a number");
    int rc = st_json_scan_number(p->s, p->n, &p->i, 0, p->err);
    if (rc)
        return rc;
    uint64_t v = 0;
    for (size_t k = start; k < p->i; k++) {
        char c = p->s[k];
        if (c < '0' || c > '9')
            return schema(p, start, "metadata.total_size is not a non-negative integer");
        if (v > (UINT64_MAX - (uint64_t)(c - '0')) / 10)
            return schema(p, start, "metadata.total_size does not fit in 64 bits");
        v = v * 10 + (uint64_t)(c - '0');
    }
    p->ix->has_total_size = true;
    p->ix->total_size = v;
    return ST_OK;
}

static int parse_metadata(parser *p, uint64_t seed)
{
    if (cur(p) != '{')
        return schema(p, p->i, "\"metadata\" is not an object");
    keyset ks;
    keyset_init(&ks, p->ix, seed);
    int rc = ST_OK;
    bool first = true;
    while (!rc && next_member(p, &first)) {
        st_index_str key;
        if ((rc = read_key(p, &ks, "\"metadata\"", &key)))
            break;
        rc = key_is(p, &key, "total_size") ? parse_total_size(p, &key) : skip_value(p);
    }
    keyset_free(&ks);
    return rc;
}

static int parse_weight_map(parser *p)
{
    st_index *ix = p->ix;
    if (cur(p) != '{')
        return schema(p, p->i, "\"weight_map\" is not an object");
    bool first = true;
    int rc;
    while (next_member(p, &first)) {
        st_index_entry e;
        if ((rc = read_string(p, &e.name)))
            return rc;
        cur(p);
        p->i++; /* ':' */
        char qn[160];
        st_quote_name(qn, sizeof qn, ix->arena + e.name.off, e.name.len);
        if (cur(p) != '"')
            return schema(p, p->i, "weight_map value for tensor %s is not a string", qn);
        st_index_str shard;
        if ((rc = read_string(p, &shard)))
            return rc;
        const char *why = st_index_bad_shard_name(ix->arena + shard.off, shard.len);
        if (why) {
            char q[160];
            st_quote_name(q, sizeof q, ix->arena + shard.off, shard.len);
            return schema(p, shard.pos, "shard name %s for tensor %s %s", q, qn, why);
        }
        if (!grow((void **)&ix->shards, &ix->shards_cap, ix->nshards + 1, sizeof *ix->shards))
            return nomem(p);
        ix->shards[ix->nshards] = shard;
        size_t s = st_strtab_insert(&ix->shard_names, ix->nshards);
        if (s == SIZE_MAX - 1)
            return nomem(p);
        if (s == SIZE_MAX)
            s = ix->nshards++;
        e.shard = s;
        if (!grow((void **)&ix->entries, &ix->cap, ix->count + 1, sizeof *ix->entries))
            return nomem(p);
        ix->entries[ix->count] = e;
        size_t prev = st_strtab_insert(&ix->names, ix->count);
        if (prev == SIZE_MAX - 1)
            return nomem(p);
        if (prev != SIZE_MAX) {
            return st_fail(p->err, ST_E_DUPLICATE_KEY, e.name.pos,
                           "%s: tensor %s is listed twice in weight_map (index byte %" PRIu64 ")",
                           p->path, qn, e.name.pos);
        }
        ix->count++;
    }
    return ST_OK;
}

const char *st_index_bad_shard_name(const char *name, size_t len)
{
    if (len == 0)
        return "is empty";
    if (memchr(name, '\0', len))
        return "contains a NUL byte";
    if (memchr(name, '\\', len))
        return "contains a backslash";
    if (name[0] == '/')
        return "is an absolute path";
    size_t start = 0;
    for (size_t k = 0; k <= len; k++) {
        if (k < len && name[k] != '/')
            continue;
        size_t cl = k - start;
        if (cl == 0)
            return "has an empty path component";
        if ((cl == 1 && name[start] == '.') || (cl == 2 && name[start] == '.' && name[start + 1] == '.'))
            return "has a '.' or '..' component (it must stay inside the index's folder)";
        start = k + 1;
    }
    return NULL;
}

int st_index_parse(st_index *ix, const char *text, size_t n, const char *path, st_error *err)
{
    memset(ix, 0, sizeof *ix);
    parser p = {text, n, 0, path, ix, err};
    if (n > ST_INDEX_MAX_SIZE)
        return st_fail(err, ST_E_HEADER_TOO_LARGE, 0, "%s: index of %zu bytes is over the %llu-byte limit",
                       path, n, (unsigned long long)ST_INDEX_MAX_SIZE);
    size_t bad = st_utf8_invalid_at((const unsigned char *)text, n);
    if (bad != SIZE_MAX)
        return st_fail(err, ST_E_HEADER_UTF8, bad, "%s: index is not valid UTF-8 (byte %zu)", path, bad);
    int rc = st_json_check(text, n, 0, err);
    if (rc) {
        if (err) {
            char m[2 * ST_ERROR_MESSAGE_MAX];
            snprintf(m, sizeof m, "%s: index: %s", path, err->message);
            memcpy(err->message, m, ST_ERROR_MESSAGE_MAX - 1);
            err->message[ST_ERROR_MESSAGE_MAX - 1] = '\0';
        }
        return rc;
    }
    ix->arena = malloc(n + 1);
    if (!ix->arena)
        return nomem(&p);
    ix->arena_cap = n + 1;
    uint64_t seed = st_hash_seed(ix);
    st_strtab_init(&ix->names, entry_get, ix, seed);
    st_strtab_init(&ix->shard_names, shard_get, ix, seed ^ 0x9e3779b97f4a7c15ull);

    if (cur(&p) != '{')
        return schema(&p, p.i, "the index is not a JSON object");
    keyset ks;
    keyset_init(&ks, ix, seed ^ 1);
    bool first = true, have_map = false;
    while (!rc && next_member(&p, &first)) {
        st_index_str key;
        if ((rc = read_key(&p, &ks, "the index object", &key)))
            break;
        if (key_is(&p, &key, "weight_map")) {
            rc = parse_weight_map(&p);
            have_map = true;
        } else if (key_is(&p, &key, "metadata")) {
            rc = parse_metadata(&p, seed ^ 2);
        } else {
            rc = skip_value(&p);
        }
    }
    keyset_free(&ks);
    if (!rc && !have_map)
        rc = schema(&p, 0, "the index has no \"weight_map\" object");
    return rc;
}

void st_index_free(st_index *ix)
{
    free(ix->arena);
    free(ix->entries);
    free(ix->shards);
    st_strtab_free(&ix->names);
    st_strtab_free(&ix->shard_names);
    memset(ix, 0, sizeof *ix);
}
