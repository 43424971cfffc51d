/* A restricted pickle machine: protocols 0 to 5, building an inert object
 * graph. It never imports a module, resolves a name or calls anything.
 * Globals become PK_GLOBAL placeholders (each reported to a hook that
 * records it for the scanner); REDUCE/NEWOBJ/OBJ/INST build PK_OBJECT
 * placeholders, except for the few torch and standard-library callables
 * whose meaning is data (tensor rebuilds, OrderedDict, _codecs.encode),
 * which are interpreted here without running anything.
 *
 * Everything is bounded (st_ckpt_limits): values created, bytes allocated
 * (one arena with a budget), memo entries, MARK nesting, one string's
 * length, one integer's length. Every length read from the stream is
 * checked against the bytes left before anything is allocated, so a pickle
 * bomb fails fast with ST_E_PICKLE_LIMIT or ST_E_PICKLE. Work is linear in
 * the input: each opcode does O(1) work plus the items it consumes. */
#include "ckpt/ckpt_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IN_BUF (64u * 1024u)

typedef struct memo_slot {
    uint64_t key;
    pk_value *v; /* NULL: empty slot */
} memo_slot;

struct pk_machine {
    /* input */
    int fd;
    const unsigned char *mem;
    uint64_t start, pos, end;
    unsigned char *buf;
    uint64_t boff;
    size_t blen;
    /* state */
    st_arena arena;
    st_ckpt_limits lim;
    const pk_hooks *hooks;
    bool interpret;
    pk_value **stack;
    size_t sp, scap;
    size_t *marks;
    size_t nmarks, mcap;
    memo_slot *memo;
    size_t memo_n, memo_cap;
    uint64_t nobjects;
    uint64_t op_off;
    st_error *err;   /* the caller's, or own_err */
    st_error own_err;
};

static int perr(pk_machine *m, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int perr(pk_machine *m, int code, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return st_fail(m->err, code, m->op_off, "%s (opcode at offset %llu)", msg,
                   (unsigned long long)m->op_off);
}

/* ---- input ---- */

static int in_fill(pk_machine *m)
{
    /* Refill the window at pos. */
    uint64_t left = m->end - m->pos;
    size_t n = left < IN_BUF ? (size_t)left : IN_BUF;
    if (n == 0)
        return perr(m, ST_E_PICKLE, "truncated pickle: no STOP before the end of the data");
    if (st_pread_full(m->fd, m->buf, n, m->pos))
        return st_fail(m->err, ST_E_IO, m->pos, "read error at offset %llu", (unsigned long long)m->pos);
    m->boff = m->pos;
    m->blen = n;
    return ST_OK;
}

static int in_read(pk_machine *m, void *dst, uint64_t n)
{
    if (n > m->end - m->pos)
        return perr(m, ST_E_PICKLE, "truncated pickle: %llu bytes wanted, %llu left",
                    (unsigned long long)n, (unsigned long long)(m->end - m->pos));
    unsigned char *d = dst;
    if (m->mem) {
        memcpy(d, m->mem + m->pos, (size_t)n);
        m->pos += n;
        return ST_OK;
    }
    while (n) {
        if (m->pos < m->boff || m->pos >= m->boff + m->blen) {
            if (n >= IN_BUF) { /* big blob: straight from the file */
                if (st_pread_full(m->fd, d, (size_t)n, m->pos))
                    return st_fail(m->err, ST_E_IO, m->pos, "read error");
                m->pos += n;
                return ST_OK;
            }
            int rc = in_fill(m);
            if (rc)
                return rc;
        }
        size_t at = (size_t)(m->pos - m->boff), k = m->blen - at;
        if (k > n)
            k = (size_t)n;
        memcpy(d, m->buf + at, k);
        d += k;
        m->pos += k;
        n -= k;
    }
    return ST_OK;
}

static int in_u8(pk_machine *m, unsigned *v)
{
    unsigned char b;
    int rc = in_read(m, &b, 1);
    *v = b;
    return rc;
}

static int in_le(pk_machine *m, unsigned bytes, uint64_t *v)
{
    unsigned char b[8];
    int rc = in_read(m, b, bytes);
    if (rc)
        return rc;
    uint64_t x = 0;
    for (unsigned i = bytes; i-- > 0;)
        x = x << 8 | b[i];
    *v = x;
    return ST_OK;
}

static void *palloc(pk_machine *m, size_t n)
{
    bool over = false;
    void *p = st_arena_alloc(&m->arena, n, &over);
    if (!p) {
        if (over)
            perr(m, ST_E_PICKLE_LIMIT, "object graph exceeds the memory limit of %llu bytes",
                 (unsigned long long)m->lim.max_memory);
        else
            perr(m, ST_E_NOMEM, "out of memory");
    }
    return p;
}

/* A line ending in '\n' (protocol 0 arguments); NUL-terminated copy. */
static int in_line(pk_machine *m, char **out, size_t *len)
{
    uint64_t start = m->pos;
    size_t n = 0;
    for (;;) {
        unsigned c;
        int rc = in_u8(m, &c);
        if (rc)
            return rc;
        if (c == '\n')
            break;
        if (++n > m->lim.max_string)
            return perr(m, ST_E_PICKLE_LIMIT, "text argument longer than %llu bytes",
                        (unsigned long long)m->lim.max_string);
    }
    char *p = palloc(m, n + 1);
    if (!p)
        return m->err ? m->err->code : ST_E_NOMEM;
    uint64_t save = m->pos;
    m->pos = start;
    int rc = in_read(m, p, n);
    m->pos = save;
    if (rc)
        return rc;
    p[n] = 0;
    *out = p;
    *len = n;
    return ST_OK;
}

/* ---- values ---- */

static int errcode(pk_machine *m)
{
    return m->err && m->err->code ? m->err->code : ST_E_NOMEM;
}

static pk_value *newv(pk_machine *m, pk_kind kind)
{
    if (++m->nobjects > m->lim.max_objects) {
        perr(m, ST_E_PICKLE_LIMIT, "more than %llu objects", (unsigned long long)m->lim.max_objects);
        return NULL;
    }
    pk_value *v = palloc(m, sizeof *v);
    if (!v)
        return NULL;
    memset(v, 0, sizeof *v);
    v->kind = (uint8_t)kind;
    return v;
}

static int seq_reserve(pk_machine *m, pk_value *v, size_t extra)
{
    size_t need;
    if (__builtin_add_overflow(v->u.seq.n * (v->kind == PK_DICT ? 2u : 1u), extra, &need))
        return perr(m, ST_E_PICKLE_LIMIT, "container too large");
    if (need <= v->u.seq.cap)
        return ST_OK;
    size_t cap = v->u.seq.cap ? v->u.seq.cap : 4;
    while (cap < need) {
        if (cap > SIZE_MAX / 2 / sizeof(pk_value *))
            return perr(m, ST_E_PICKLE_LIMIT, "container too large");
        cap *= 2;
    }
    pk_value **nv = palloc(m, cap * sizeof *nv);
    if (!nv)
        return errcode(m);
    size_t used = v->u.seq.n * (v->kind == PK_DICT ? 2u : 1u);
    if (used)
        memcpy(nv, v->u.seq.v, used * sizeof *nv);
    v->u.seq.v = nv;
    v->u.seq.cap = cap;
    return ST_OK;
}

static int seq_add(pk_machine *m, pk_value *v, pk_value *item)
{
    int rc = seq_reserve(m, v, 1);
    if (rc)
        return rc;
    v->u.seq.v[v->u.seq.n++] = item;
    return ST_OK;
}

static int dict_add(pk_machine *m, pk_value *d, pk_value *k, pk_value *val)
{
    int rc = seq_reserve(m, d, 2);
    if (rc)
        return rc;
    d->u.seq.v[2 * d->u.seq.n] = k;
    d->u.seq.v[2 * d->u.seq.n + 1] = val;
    d->u.seq.n++;
    return ST_OK;
}

static pk_value *make_seq(pk_machine *m, pk_kind kind, pk_value **items, size_t n)
{
    pk_value *v = newv(m, kind);
    if (!v || (n && seq_reserve(m, v, n)))
        return NULL;
    if (n)
        memcpy(v->u.seq.v, items, n * sizeof *items);
    v->u.seq.n = n;
    return v;
}

static pk_value *make_bytes(pk_machine *m, pk_kind kind, uint64_t n)
{
    if (n > m->lim.max_string) {
        perr(m, ST_E_PICKLE_LIMIT, "string of %llu bytes exceeds the limit of %llu",
             (unsigned long long)n, (unsigned long long)m->lim.max_string);
        return NULL;
    }
    if (n > m->end - m->pos) {
        perr(m, ST_E_PICKLE, "truncated pickle: a string of %llu bytes, %llu left",
             (unsigned long long)n, (unsigned long long)(m->end - m->pos));
        return NULL;
    }
    pk_value *v = newv(m, kind);
    if (!v)
        return NULL;
    char *p = palloc(m, (size_t)n + 1);
    if (!p)
        return NULL;
    if (in_read(m, p, n))
        return NULL;
    p[n] = 0;
    v->u.s.p = p;
    v->u.s.n = (size_t)n;
    return v;
}

bool pk_is_str(const pk_value *v, const char *s)
{
    return v && v->kind == PK_STR && v->u.s.n == strlen(s) && memcmp(v->u.s.p, s, v->u.s.n) == 0;
}

static bool is_global(const pk_value *v, const char *mod, const char *name)
{
    return v && v->kind == PK_GLOBAL && v->u.g.modn == strlen(mod) && v->u.g.namen == strlen(name) &&
           memcmp(v->u.g.mod, mod, v->u.g.modn) == 0 && memcmp(v->u.g.name, name, v->u.g.namen) == 0;
}

/* ---- stack ---- */

static int push(pk_machine *m, pk_value *v)
{
    if (!v)
        return errcode(m);
    if (m->sp == m->scap) {
        if (m->sp >= m->lim.max_objects)
            return perr(m, ST_E_PICKLE_LIMIT, "stack deeper than %llu", (unsigned long long)m->lim.max_objects);
        size_t cap = m->scap ? m->scap * 2 : 64;
        pk_value **ns = realloc(m->stack, cap * sizeof *ns);
        if (!ns)
            return perr(m, ST_E_NOMEM, "out of memory");
        m->stack = ns;
        m->scap = cap;
    }
    m->stack[m->sp++] = v;
    return ST_OK;
}

static size_t floor_sp(const pk_machine *m)
{
    return m->nmarks ? m->marks[m->nmarks - 1] : 0;
}

static int pop(pk_machine *m, pk_value **out)
{
    if (m->sp <= floor_sp(m))
        return perr(m, ST_E_PICKLE, "stack underflow");
    *out = m->stack[--m->sp];
    return ST_OK;
}

static int top(pk_machine *m, pk_value **out)
{
    if (m->sp <= floor_sp(m))
        return perr(m, ST_E_PICKLE, "stack underflow");
    *out = m->stack[m->sp - 1];
    return ST_OK;
}

/* Items since the last MARK: *items points into the stack, valid until
 * the next push. The mark is removed and sp reset to it. */
static int pop_mark(pk_machine *m, pk_value ***items, size_t *n)
{
    if (!m->nmarks)
        return perr(m, ST_E_PICKLE, "no MARK on the stack");
    size_t mk = m->marks[--m->nmarks];
    *items = m->stack ? m->stack + mk : NULL; /* NULL + 0 is undefined */
    *n = m->sp - mk;
    m->sp = mk;
    return ST_OK;
}

/* ---- memo ---- */

static memo_slot *memo_find(pk_machine *m, uint64_t key)
{
    if (!m->memo_cap)
        return NULL;
    size_t mask = m->memo_cap - 1, i = (size_t)(key * 0x9e3779b97f4a7c15ull >> 16) & mask;
    while (m->memo[i].v) {
        if (m->memo[i].key == key)
            return &m->memo[i];
        i = (i + 1) & mask;
    }
    return &m->memo[i];
}

static int memo_put(pk_machine *m, uint64_t key, pk_value *v)
{
    memo_slot *s = memo_find(m, key);
    if (s && s->v) {
        s->v = v;
        return ST_OK;
    }
    if (m->memo_n >= m->lim.max_memo)
        return perr(m, ST_E_PICKLE_LIMIT, "more than %llu memo entries", (unsigned long long)m->lim.max_memo);
    if ((m->memo_n + 1) * 2 > m->memo_cap) {
        size_t cap = m->memo_cap ? m->memo_cap * 2 : 256;
        memo_slot *old = m->memo;
        size_t oldcap = m->memo_cap;
        m->memo = calloc(cap, sizeof *m->memo);
        if (!m->memo) {
            m->memo = old;
            return perr(m, ST_E_NOMEM, "out of memory");
        }
        m->memo_cap = cap;
        for (size_t i = 0; i < oldcap; i++)
            if (old[i].v)
                *memo_find(m, old[i].key) = old[i];
        free(old);
    }
    s = memo_find(m, key);
    s->key = key;
    s->v = v;
    m->memo_n++;
    return ST_OK;
}

static int memo_get(pk_machine *m, uint64_t key)
{
    memo_slot *s = memo_find(m, key);
    if (!s || !s->v)
        return perr(m, ST_E_PICKLE, "memo key %llu was never stored", (unsigned long long)key);
    return push(m, s->v);
}

/* ---- numbers ---- */

static int parse_u64_text(pk_machine *m, const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0)
        return perr(m, ST_E_PICKLE, "empty number");
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9' || __builtin_mul_overflow(v, 10u, &v) ||
            __builtin_add_overflow(v, (uint64_t)(s[i] - '0'), &v))
            return perr(m, ST_E_PICKLE, "bad or too large index");
    }
    *out = v;
    return ST_OK;
}

/* Integer from little-endian two's complement bytes (LONG1/LONG4). */
static pk_value *make_long(pk_machine *m, const unsigned char *b, size_t n)
{
    if (n <= 8) {
        pk_value *v = newv(m, PK_INT);
        if (!v)
            return NULL;
        uint64_t x = 0;
        for (size_t i = n; i-- > 0;)
            x = x << 8 | b[i];
        if (n && n < 8 && (b[n - 1] & 0x80))
            x |= ~(uint64_t)0 << (8 * n);
        v->u.i = (int64_t)x;
        return v;
    }
    pk_value *v = newv(m, PK_BIGINT);
    if (!v)
        return NULL;
    char *p = palloc(m, n);
    if (!p)
        return NULL;
    memcpy(p, b, n);
    v->u.s.p = p;
    v->u.s.n = n;
    return v;
}

/* Decimal text (protocol 0 INT/LONG) to a value. */
static pk_value *make_int_text(pk_machine *m, const char *s, size_t n)
{
    if (n && (s[n - 1] == 'L'))
        n--;
    bool neg = false;
    size_t i = 0;
    if (i < n && (s[i] == '-' || s[i] == '+'))
        neg = s[i++] == '-';
    if (i == n) {
        perr(m, ST_E_PICKLE, "bad integer text");
        return NULL;
    }
    size_t digits = n - i;
    if (digits > (size_t)m->lim.max_int_bytes * 3) {
        perr(m, ST_E_PICKLE_LIMIT, "integer of %zu digits exceeds the limit", digits);
        return NULL;
    }
    /* Magnitude as little-endian bytes, one more byte for the sign. */
    size_t cap = digits / 2 + 2;
    unsigned char *b = palloc(m, cap);
    if (!b)
        return NULL;
    memset(b, 0, cap);
    size_t used = 1;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            perr(m, ST_E_PICKLE, "bad integer text");
            return NULL;
        }
        unsigned carry = (unsigned)(s[i] - '0');
        for (size_t k = 0; k < used; k++) {
            unsigned x = b[k] * 10u + carry;
            b[k] = (unsigned char)x;
            carry = x >> 8;
        }
        if (carry && used < cap)
            b[used++] = (unsigned char)carry;
    }
    used = cap; /* leave room: top byte 0 keeps it positive */
    if (neg) {  /* two's complement */
        unsigned carry = 1;
        for (size_t k = 0; k < used; k++) {
            unsigned x = (unsigned)(unsigned char)~b[k] + carry;
            b[k] = (unsigned char)x;
            carry = x >> 8;
        }
    }
    /* trim redundant sign bytes */
    while (used > 1 && ((b[used - 1] == 0 && !(b[used - 2] & 0x80)) ||
                        (b[used - 1] == 0xff && (b[used - 2] & 0x80))))
        used--;
    return make_long(m, b, used);
}

/* ---- text decoding (protocol 0) ---- */

static size_t put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xc0 | cp >> 6); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12); o[1] = (char)(0x80 | (cp >> 6 & 63));
        o[2] = (char)(0x80 | (cp & 63)); return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18); o[1] = (char)(0x80 | (cp >> 12 & 63));
    o[2] = (char)(0x80 | (cp >> 6 & 63)); o[3] = (char)(0x80 | (cp & 63)); return 4;
}

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* UNICODE: raw-unicode-escape (\uXXXX, \UXXXXXXXX; other bytes Latin-1). */
static pk_value *decode_raw_unicode(pk_machine *m, const char *s, size_t n)
{
    if (n > SIZE_MAX / 4) {
        perr(m, ST_E_PICKLE_LIMIT, "string too large");
        return NULL;
    }
    char *o = palloc(m, n * 4 + 1);
    if (!o)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\\' && i + 1 < n && (s[i + 1] == 'u' || s[i + 1] == 'U')) {
            size_t w = s[i + 1] == 'u' ? 4 : 8;
            if (i + 2 + w > n) {
                perr(m, ST_E_PICKLE, "truncated \\u escape");
                return NULL;
            }
            uint32_t cp = 0;
            for (size_t j = 0; j < w; j++) {
                int h = hexval(s[i + 2 + j]);
                if (h < 0) {
                    perr(m, ST_E_PICKLE, "bad \\u escape");
                    return NULL;
                }
                cp = cp << 4 | (uint32_t)h;
            }
            if (cp > 0x10ffff) {
                perr(m, ST_E_PICKLE, "code point out of range");
                return NULL;
            }
            k += put_utf8(o + k, cp);
            i += 2 + w;
        } else {
            k += put_utf8(o + k, c);
            i++;
        }
    }
    o[k] = 0;
    pk_value *v = newv(m, PK_STR);
    if (v) {
        v->u.s.p = o;
        v->u.s.n = k;
    }
    return v;
}

/* STRING: a quoted Python 2 str repr with escapes. */
static pk_value *decode_string_repr(pk_machine *m, const char *s, size_t n)
{
    if (n < 2 || (s[0] != '\'' && s[0] != '"') || s[n - 1] != s[0]) {
        perr(m, ST_E_PICKLE, "STRING argument is not quoted");
        return NULL;
    }
    s++;
    n -= 2;
    char *o = palloc(m, n + 1);
    if (!o)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] != '\\') {
            o[k++] = s[i++];
            continue;
        }
        if (++i == n) {
            perr(m, ST_E_PICKLE, "trailing backslash in STRING");
            return NULL;
        }
        char c = s[i++];
        switch (c) {
        case 'n': o[k++] = '\n'; break;
        case 't': o[k++] = '\t'; break;
        case 'r': o[k++] = '\r'; break;
        case 'a': o[k++] = '\a'; break;
        case 'b': o[k++] = '\b'; break;
        case 'f': o[k++] = '\f'; break;
        case 'v': o[k++] = '\v'; break;
        case '\\': case '\'': case '"': o[k++] = c; break;
        case '\n': break;
        case 'x': {
            int h1 = i < n ? hexval(s[i]) : -1, h2 = i + 1 < n ? hexval(s[i + 1]) : -1;
            if (h1 < 0 || h2 < 0) {
                perr(m, ST_E_PICKLE, "bad \\x escape in STRING");
                return NULL;
            }
            o[k++] = (char)(h1 * 16 + h2);
            i += 2;
            break;
        }
        default:
            if (c >= '0' && c <= '7') {
                unsigned v = (unsigned)(c - '0');
                for (int j = 0; j < 2 && i < n && s[i] >= '0' && s[i] <= '7'; j++)
                    v = v * 8 + (unsigned)(s[i++] - '0');
                o[k++] = (char)(v & 0xff);
            } else {
                o[k++] = '\\';
                o[k++] = c;
            }
        }
    }
    o[k] = 0;
    pk_value *v = newv(m, PK_STR);
    if (v) {
        v->u.s.p = o;
        v->u.s.n = k;
    }
    return v;
}

/* ---- globals and calls ---- */

static pk_value *make_global(pk_machine *m, const char *mod, size_t modn, const char *name, size_t namen)
{
    pk_value *v = newv(m, PK_GLOBAL);
    if (!v)
        return NULL;
    bool over = false;
    v->u.g.mod = st_arena_strdup(&m->arena, mod, modn, &over);
    v->u.g.name = st_arena_strdup(&m->arena, name, namen, &over);
    if (!v->u.g.mod || !v->u.g.name) {
        perr(m, over ? ST_E_PICKLE_LIMIT : ST_E_NOMEM, "out of memory for a global's name");
        return NULL;
    }
    v->u.g.modn = modn;
    v->u.g.namen = namen;
    if (m->hooks && m->hooks->global &&
        m->hooks->global(m->hooks->ctx, mod, modn, name, namen, m->op_off, &v->u.g.id, m->err))
        return NULL;
    return v;
}

static pk_value *make_object(pk_machine *m, pk_value *cls, pk_value *args)
{
    pk_value *v = newv(m, PK_OBJECT);
    if (v) {
        v->u.o.cls = cls;
        v->u.o.args = args;
    }
    return v;
}

static bool get_int(const pk_value *v, int64_t *out)
{
    if (!v || (v->kind != PK_INT && v->kind != PK_BOOL))
        return false;
    *out = v->u.i;
    return true;
}

static bool is_seq(const pk_value *v)
{
    return v && (v->kind == PK_TUPLE || v->kind == PK_LIST);
}

/* torch._utils._rebuild_tensor(_v2)(storage, offset, size, stride, ...) */
static pk_value *rebuild_tensor(pk_machine *m, pk_value *args, const char *fn)
{
    int64_t off;
    pk_value **a = args->u.seq.v;
    if (args->u.seq.n < 4 || !a[0] || a[0]->kind != PK_STORAGE || !get_int(a[1], &off) || off < 0 ||
        !is_seq(a[2]) || !is_seq(a[3]) || a[2]->u.seq.n != a[3]->u.seq.n) {
        st_fail(m->err, ST_E_CKPT_TENSOR, m->op_off,
                "%s called with arguments that do not describe a tensor (opcode at offset %llu)", fn,
                (unsigned long long)m->op_off);
        return NULL;
    }
    size_t rank = a[2]->u.seq.n;
    if (rank > ST_MAX_RANK) {
        perr(m, ST_E_PICKLE_LIMIT, "tensor of rank %zu", rank);
        return NULL;
    }
    pk_value *t = newv(m, PK_TENSOR);
    uint64_t *shape = palloc(m, (rank ? rank : 1) * sizeof *shape);
    uint64_t *stride = palloc(m, (rank ? rank : 1) * sizeof *stride);
    if (!t || !shape || !stride)
        return NULL;
    for (size_t i = 0; i < rank; i++) {
        int64_t sz, st;
        if (!get_int(a[2]->u.seq.v[i], &sz) || !get_int(a[3]->u.seq.v[i], &st) || sz < 0 || st < 0) {
            st_fail(m->err, ST_E_CKPT_TENSOR, m->op_off,
                    "%s: size or stride %zu is not a non-negative integer (opcode at offset %llu)", fn, i,
                    (unsigned long long)m->op_off);
            return NULL;
        }
        shape[i] = (uint64_t)sz;
        stride[i] = (uint64_t)st;
    }
    t->u.t.storage = a[0];
    t->u.t.offset = (uint64_t)off;
    t->u.t.rank = (uint32_t)rank;
    t->u.t.shape = shape;
    t->u.t.stride = stride;
    return t;
}

static pk_value *call(pk_machine *m, pk_value *fn, pk_value *args, int depth);

static pk_value *interpret_call(pk_machine *m, pk_value *fn, pk_value *args, int depth)
{
    if (fn->kind != PK_GLOBAL || !args || args->kind != PK_TUPLE)
        return NULL;
    size_t n = args->u.seq.n;
    pk_value **a = args->u.seq.v;
    if (is_global(fn, "torch._utils", "_rebuild_tensor_v2") || is_global(fn, "torch._utils", "_rebuild_tensor"))
        return rebuild_tensor(m, args, fn->u.g.name);
    if ((is_global(fn, "torch._utils", "_rebuild_parameter") ||
         is_global(fn, "torch._utils", "_rebuild_parameter_with_state")) &&
        n >= 1 && a[0]->kind == PK_TENSOR)
        return a[0]; /* the Parameter's data, unwrapped */
    if ((is_global(fn, "torch._tensor", "_rebuild_from_type_v2") ||
         is_global(fn, "torch._utils", "_rebuild_from_type")) &&
        n >= 3 && a[0]->kind == PK_GLOBAL && a[2]->kind == PK_TUPLE && depth < 4)
        return call(m, a[0], a[2], depth + 1);
    if (is_global(fn, "collections", "OrderedDict") && n == 0)
        return newv(m, PK_DICT);
    /* protocol < 3 pickles b'' as bytes() */
    if ((is_global(fn, "builtins", "bytes") || is_global(fn, "__builtin__", "bytes")) && n == 0) {
        pk_value *v = newv(m, PK_BYTES);
        char *z = v ? palloc(m, 1) : NULL;
        if (!z)
            return NULL;
        z[0] = 0;
        v->u.s.p = z;
        return v;
    }
    /* TorchScript's typed containers: build_intlist(list) and friends
     * return their list; restore_type_tag(value, type) its value. */
    if (is_global(fn, "torch.jit._pickle", "restore_type_tag") && n == 2)
        return a[0];
    if ((is_global(fn, "torch.jit._pickle", "build_intlist") || is_global(fn, "torch.jit._pickle", "build_tensorlist") ||
         is_global(fn, "torch.jit._pickle", "build_doublelist") || is_global(fn, "torch.jit._pickle", "build_boollist") ||
         is_global(fn, "torch.jit._pickle", "build_genericlist")) &&
        n == 1 && a[0]->kind == PK_LIST)
        return a[0];
    if (is_global(fn, "_codecs", "encode") && n == 2 && a[0]->kind == PK_STR &&
        (pk_is_str(a[1], "latin1") || pk_is_str(a[1], "latin-1"))) {
        /* How protocol 2 pickles bytes: UTF-8 text of code points < 256. */
        const unsigned char *s = (const unsigned char *)a[0]->u.s.p;
        size_t len = a[0]->u.s.n, k = 0;
        char *o = palloc(m, len + 1);
        if (!o)
            return NULL;
        for (size_t i = 0; i < len; i++) {
            if (s[i] < 0x80)
                o[k++] = (char)s[i];
            else if ((s[i] == 0xc2 || s[i] == 0xc3) && i + 1 < len && (s[i + 1] & 0xc0) == 0x80) {
                o[k++] = (char)(((s[i] & 3) << 6) | (s[i + 1] & 63));
                i++;
            } else
                return make_object(m, fn, args); /* not encodable: stays inert */
        }
        pk_value *v = newv(m, PK_BYTES);
        if (v) {
            v->u.s.p = o;
            v->u.s.n = k;
        }
        return v;
    }
    return NULL;
}

static pk_value *call(pk_machine *m, pk_value *fn, pk_value *args, int depth)
{
    if (m->interpret) {
        if (m->err)
            m->err->code = 0;
        pk_value *v = interpret_call(m, fn, args, depth);
        if (v || (m->err && m->err->code))
            return v;
    }
    return make_object(m, fn, args);
}

/* ---- numpy arrays ---- */

/* numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b'): the empty
 * array that a BUILD then fills (numpy's ndarray.__setstate__). */
static bool is_reconstruct(const pk_value *v)
{
    if (v->kind != PK_OBJECT || !v->u.o.cls || !v->u.o.args || v->u.o.args->kind != PK_TUPLE ||
        v->u.o.args->u.seq.n < 1)
        return false;
    const pk_value *f = v->u.o.cls, *c = v->u.o.args->u.seq.v[0];
    return (is_global(f, "numpy.core.multiarray", "_reconstruct") || is_global(f, "numpy._core.multiarray", "_reconstruct")) &&
           is_global(c, "numpy", "ndarray");
}

static const struct {
    char kind;
    unsigned size;
    int dtype;
} np_types[] = {
    {'f', 2, ST_F16}, {'f', 4, ST_F32}, {'f', 8, ST_F64}, {'i', 1, ST_I8}, {'i', 2, ST_I16},
    {'i', 4, ST_I32}, {'i', 8, ST_I64}, {'u', 1, ST_U8}, {'u', 2, ST_U16}, {'u', 4, ST_U32},
    {'u', 8, ST_U64}, {'b', 1, ST_BOOL}, {'c', 8, ST_C64},
};

/* ndarray.__setstate__((version, shape, dtype, is_fortran, rawdata)) with
 * dtype = numpy.dtype(code, align, copy) whose own state is (version,
 * byteorder, ...). Read for what it is: a dtype, a shape, bytes. Anything
 * not of that form leaves the object inert (its state recorded). */
static int build_array(pk_machine *m, pk_value *v, pk_value *state)
{
    if (state->kind != PK_TUPLE || state->u.seq.n != 5)
        return 0;
    pk_value **a = state->u.seq.v, *shp = a[1], *dt = a[2], *data = a[4];
    int64_t fortran;
    if (!is_seq(shp) || !get_int(a[3], &fortran) || dt->kind != PK_OBJECT || !is_global(dt->u.o.cls, "numpy", "dtype") ||
        !dt->u.o.args || dt->u.o.args->kind != PK_TUPLE || dt->u.o.args->u.seq.n < 1 ||
        dt->u.o.args->u.seq.v[0]->kind != PK_STR)
        return 0;
    const pk_value *code = dt->u.o.args->u.seq.v[0], *dst = dt->u.o.state;
    char order = '|';
    if (dst && dst->kind == PK_TUPLE && dst->u.seq.n >= 2 && dst->u.seq.v[1]->kind == PK_STR &&
        dst->u.seq.v[1]->u.s.n == 1)
        order = dst->u.seq.v[1]->u.s.p[0];
    size_t rank = shp->u.seq.n;
    if (rank > ST_MAX_RANK)
        return perr(m, ST_E_PICKLE_LIMIT, "numpy array of rank %zu", rank);
    uint64_t *shape = palloc(m, (rank ? rank : 1) * sizeof *shape), numel = 1;
    if (!shape)
        return errcode(m);
    for (size_t i = 0; i < rank; i++) {
        int64_t d;
        if (!get_int(shp->u.seq.v[i], &d) || d < 0)
            return 0;
        shape[i] = (uint64_t)d;
        if (__builtin_mul_overflow(numel, shape[i], &numel))
            return perr(m, ST_E_PICKLE, "numpy array: element count overflows");
    }
    int dtype = -1;
    unsigned elem = 0;
    const char *why = NULL;
    const char *cs = code->u.s.p;
    size_t cn = code->u.s.n;
    if (cn >= 2 && cn <= 3) {
        unsigned size = 0;
        for (size_t i = 1; i < cn; i++)
            size = cs[i] >= '0' && cs[i] <= '9' ? size * 10 + (unsigned)(cs[i] - '0') : 1000;
        for (size_t i = 0; i < sizeof np_types / sizeof np_types[0]; i++)
            if (np_types[i].kind == cs[0] && np_types[i].size == size) {
                dtype = np_types[i].dtype;
                elem = size;
            }
    }
    if (dtype < 0)
        why = cn && cs[0] == 'O' ? "an object array (holds Python objects, not numbers)"
                                 : "a numpy dtype safetensors cannot hold";
    else if (order != '<' && order != '>' && order != '|' && order != '=')
        return 0;
    const unsigned char *bytes = NULL;
    if (dtype >= 0) {
        uint64_t nbytes;
        if (__builtin_mul_overflow(numel, (uint64_t)elem, &nbytes))
            return perr(m, ST_E_PICKLE, "numpy array: byte count overflows");
        if (data->kind == PK_BYTES) {
            if (data->u.s.n != nbytes)
                return perr(m, ST_E_PICKLE, "numpy array of %llu elements of %u bytes holds %zu bytes of data",
                            (unsigned long long)numel, elem, data->u.s.n);
            bytes = (const unsigned char *)data->u.s.p;
        } else if (m->interpret) {
            dtype = -1;
            why = "its data is not a bytes value";
        }
    }
    v->kind = PK_ARRAY;
    memset(&v->u, 0, sizeof v->u);
    v->u.arr.code = cs;
    v->u.arr.coden = cn;
    v->u.arr.order = order;
    v->u.arr.dtype = dtype;
    v->u.arr.elem = elem;
    v->u.arr.fortran = fortran != 0;
    v->u.arr.rank = (uint32_t)rank;
    v->u.arr.shape = shape;
    v->u.arr.numel = numel;
    v->u.arr.data = bytes;
    v->u.arr.offset = m->op_off;
    v->u.arr.why = why;
    if (m->hooks && m->hooks->array)
        return m->hooks->array(m->hooks->ctx, v, m->err);
    return 0;
}

/* ---- the machine ---- */

static int do_global(pk_machine *m, pk_value *mod, pk_value *name)
{
    if (!mod || !name || mod->kind != PK_STR || name->kind != PK_STR)
        return perr(m, ST_E_PICKLE, "STACK_GLOBAL on values that are not strings");
    return push(m, make_global(m, mod->u.s.p, mod->u.s.n, name->u.s.p, name->u.s.n));
}

static int run(pk_machine *m, pk_value **result)
{
    int rc;
    for (;;) {
        m->op_off = m->pos;
        unsigned op;
        if ((rc = in_u8(m, &op)))
            return rc;
        pk_value *v = NULL, *a = NULL, *b = NULL, **items = NULL, *pair[2];
        size_t n = 0, len = 0;
        uint64_t u;
        char *line, *line2;
        switch (op) {
        case 0x80: /* PROTO */
            if ((rc = in_u8(m, &op)))
                return rc;
            if (op > 5)
                return perr(m, ST_E_PICKLE, "unsupported pickle protocol %u", op);
            break;
        case 0x95: /* FRAME: framing is only a hint for buffering */
            if ((rc = in_le(m, 8, &u)))
                return rc;
            if (u > m->end - m->pos)
                return perr(m, ST_E_PICKLE, "frame runs past the end of the pickle");
            break;
        case '.': /* STOP */
            if ((rc = pop(m, result)))
                return rc;
            return ST_OK;
        case '(': /* MARK */
            if (m->nmarks >= m->lim.max_depth)
                return perr(m, ST_E_PICKLE_LIMIT, "MARKs nested deeper than %u", m->lim.max_depth);
            if (m->nmarks == m->mcap) {
                size_t cap = m->mcap ? m->mcap * 2 : 32;
                size_t *nm = realloc(m->marks, cap * sizeof *nm);
                if (!nm)
                    return perr(m, ST_E_NOMEM, "out of memory");
                m->marks = nm;
                m->mcap = cap;
            }
            m->marks[m->nmarks++] = m->sp;
            break;
        case '0': /* POP */
            if (m->sp > floor_sp(m))
                m->sp--;
            else if ((rc = pop_mark(m, &items, &n)))
                return rc;
            break;
        case '1': /* POP_MARK */
            if ((rc = pop_mark(m, &items, &n)))
                return rc;
            break;
        case '2': /* DUP */
            if ((rc = top(m, &v)) || (rc = push(m, v)))
                return rc;
            break;
        case 'N':
            if ((rc = push(m, newv(m, PK_NONE))))
                return rc;
            break;
        case 0x88: case 0x89: /* NEWTRUE NEWFALSE */
            if (!(v = newv(m, PK_BOOL)))
                return errcode(m);
            v->u.i = op == 0x88;
            if ((rc = push(m, v)))
                return rc;
            break;
        case 'I': /* INT (text); "00"/"01" are False/True */
            if ((rc = in_line(m, &line, &len)))
                return rc;
            if (len == 2 && line[0] == '0' && (line[1] == '0' || line[1] == '1')) {
                if (!(v = newv(m, PK_BOOL)))
                    return errcode(m);
                v->u.i = line[1] == '1';
            } else if (!(v = make_int_text(m, line, len)))
                return errcode(m);
            if ((rc = push(m, v)))
                return rc;
            break;
        case 'L': /* LONG (text) */
            if ((rc = in_line(m, &line, &len)))
                return rc;
            if ((rc = push(m, make_int_text(m, line, len))))
                return rc;
            break;
        case 'J': case 'K': case 'M': { /* BININT BININT1 BININT2 */
            unsigned w = op == 'J' ? 4 : op == 'K' ? 1 : 2;
            if ((rc = in_le(m, w, &u)))
                return rc;
            if (!(v = newv(m, PK_INT)))
                return errcode(m);
            v->u.i = w == 4 ? (int64_t)(int32_t)(uint32_t)u : (int64_t)u;
            if ((rc = push(m, v)))
                return rc;
            break;
        }
        case 0x8a: case 0x8b: { /* LONG1 LONG4 */
            if ((rc = in_le(m, op == 0x8a ? 1 : 4, &u)))
                return rc;
            if (op == 0x8b && (u & 0x80000000u))
                return perr(m, ST_E_PICKLE, "LONG4 with a negative length");
            if (u > m->lim.max_int_bytes)
                return perr(m, ST_E_PICKLE_LIMIT, "integer of %llu bytes exceeds the limit of %u",
                            (unsigned long long)u, m->lim.max_int_bytes);
            unsigned char tmp[65536];
            if (u > sizeof tmp)
                return perr(m, ST_E_PICKLE_LIMIT, "integer of %llu bytes exceeds the limit",
                            (unsigned long long)u);
            if ((rc = in_read(m, tmp, u)))
                return rc;
            if ((rc = push(m, make_long(m, tmp, (size_t)u))))
                return rc;
            break;
        }
        case 'F': /* FLOAT (text) */
            if ((rc = in_line(m, &line, &len)))
                return rc;
            if (!(v = newv(m, PK_FLOAT)))
                return errcode(m);
            {
                char *endp;
                v->u.f = strtod(line, &endp);
                if (endp == line || *endp)
                    return perr(m, ST_E_PICKLE, "bad FLOAT text");
            }
            if ((rc = push(m, v)))
                return rc;
            break;
        case 'G': /* BINFLOAT, big-endian */ {
            unsigned char fb[8];
            if ((rc = in_read(m, fb, 8)))
                return rc;
            uint64_t x = 0;
            for (int i = 0; i < 8; i++)
                x = x << 8 | fb[i];
            if (!(v = newv(m, PK_FLOAT)))
                return errcode(m);
            memcpy(&v->u.f, &x, 8);
            if ((rc = push(m, v)))
                return rc;
            break;
        }
        case 'S': /* STRING */
            if ((rc = in_line(m, &line, &len)))
                return rc;
            if ((rc = push(m, decode_string_repr(m, line, len))))
                return rc;
            break;
        case 'V': /* UNICODE */
            if ((rc = in_line(m, &line, &len)))
                return rc;
            if ((rc = push(m, decode_raw_unicode(m, line, len))))
                return rc;
            break;
        case 'T': case 'U': case 'X': case 0x8c: case 0x8d: /* BINSTRING SHORT_BINSTRING BINUNICODE(8) */
        case 'B': case 'C': case 0x8e: case 0x96: { /* BINBYTES SHORT_BINBYTES BINBYTES8 BYTEARRAY8 */
            unsigned w = (op == 'U' || op == 0x8c || op == 'C') ? 1 : (op == 0x8d || op == 0x8e || op == 0x96) ? 8 : 4;
            if ((rc = in_le(m, w, &u)))
                return rc;
            if (op == 'T' && (u & 0x80000000u))
                return perr(m, ST_E_PICKLE, "BINSTRING with a negative length");
            bool text = op == 'T' || op == 'U' || op == 'X' || op == 0x8c || op == 0x8d;
            if ((rc = push(m, make_bytes(m, text ? PK_STR : PK_BYTES, u))))
                return rc;
            break;
        }
        case ')':
            if ((rc = push(m, newv(m, PK_TUPLE))))
                return rc;
            break;
        case ']':
            if ((rc = push(m, newv(m, PK_LIST))))
                return rc;
            break;
        case '}':
            if ((rc = push(m, newv(m, PK_DICT))))
                return rc;
            break;
        case 0x8f: /* EMPTY_SET */
            if ((rc = push(m, newv(m, PK_SET))))
                return rc;
            break;
        case 't': case 'l': case 0x91: /* TUPLE LIST FROZENSET */
            if ((rc = pop_mark(m, &items, &n)))
                return rc;
            if ((rc = push(m, make_seq(m, op == 't' ? PK_TUPLE : op == 'l' ? PK_LIST : PK_SET, items, n))))
                return rc;
            break;
        case 0x85: case 0x86: case 0x87: { /* TUPLE1..3 */
            size_t k = op - 0x84u;
            if (m->sp < floor_sp(m) + k)
                return perr(m, ST_E_PICKLE, "stack underflow");
            m->sp -= k;
            if ((rc = push(m, make_seq(m, PK_TUPLE, m->stack + m->sp, k))))
                return rc;
            break;
        }
        case 'd': /* DICT */
            if ((rc = pop_mark(m, &items, &n)))
                return rc;
            if (n % 2)
                return perr(m, ST_E_PICKLE, "DICT with an odd number of items");
            if (!(v = newv(m, PK_DICT)))
                return errcode(m);
            for (size_t i = 0; i < n; i += 2)
                if ((rc = dict_add(m, v, items[i], items[i + 1])))
                    return rc;
            if ((rc = push(m, v)))
                return rc;
            break;
        case 'a': /* APPEND */
            if ((rc = pop(m, &a)) || (rc = top(m, &v)))
                return rc;
            items = &a;
            n = 1;
            goto append;
        case 'e': /* APPENDS */
            if ((rc = pop_mark(m, &items, &n)) || (rc = top(m, &v)))
                return rc;
        append:
            if (v->kind == PK_OBJECT) { /* list-like object: keep the items */
                if (!v->u.o.list && !(v->u.o.list = newv(m, PK_LIST)))
                    return errcode(m);
                v = v->u.o.list;
            }
            if (v->kind != PK_LIST)
                return perr(m, ST_E_PICKLE, "APPEND to a value that is not a list");
            if ((rc = seq_reserve(m, v, n)))
                return rc;
            for (size_t i = 0; i < n; i++)
                v->u.seq.v[v->u.seq.n++] = items[i];
            break;
        case 0x90: /* ADDITEMS */
            if ((rc = pop_mark(m, &items, &n)) || (rc = top(m, &v)))
                return rc;
            if (v->kind != PK_SET)
                return perr(m, ST_E_PICKLE, "ADDITEMS to a value that is not a set");
            for (size_t i = 0; i < n; i++)
                if ((rc = seq_add(m, v, items[i])))
                    return rc;
            break;
        case 's': /* SETITEM */
            if ((rc = pop(m, &b)) || (rc = pop(m, &a)) || (rc = top(m, &v)))
                return rc;
            pair[0] = a;
            pair[1] = b;
            items = pair;
            n = 2;
            goto setitems;
        case 'u': /* SETITEMS */
            if ((rc = pop_mark(m, &items, &n)) || (rc = top(m, &v)))
                return rc;
            if (n % 2)
                return perr(m, ST_E_PICKLE, "SETITEMS with an odd number of items");
        setitems:
            if (v->kind == PK_OBJECT) {
                if (!v->u.o.dict && !(v->u.o.dict = newv(m, PK_DICT)))
                    return errcode(m);
                v = v->u.o.dict;
            }
            if (v->kind != PK_DICT)
                return perr(m, ST_E_PICKLE, "SETITEM on a value that is not a dict");
            for (size_t i = 0; i < n; i += 2)
                if ((rc = dict_add(m, v, items[i], items[i + 1])))
                    return rc;
            break;
        case 'p': /* PUT */
            if ((rc = in_line(m, &line, &len)) || (rc = parse_u64_text(m, line, len, &u)) ||
                (rc = top(m, &v)) || (rc = memo_put(m, u, v)))
                return rc;
            break;
        case 'q': case 'r': /* BINPUT LONG_BINPUT */
            if ((rc = in_le(m, op == 'q' ? 1 : 4, &u)) || (rc = top(m, &v)) || (rc = memo_put(m, u, v)))
                return rc;
            break;
        case 0x94: /* MEMOIZE */
            if ((rc = top(m, &v)) || (rc = memo_put(m, m->memo_n, v)))
                return rc;
            break;
        case 'g': /* GET */
            if ((rc = in_line(m, &line, &len)) || (rc = parse_u64_text(m, line, len, &u)) ||
                (rc = memo_get(m, u)))
                return rc;
            break;
        case 'h': case 'j': /* BINGET LONG_BINGET */
            if ((rc = in_le(m, op == 'h' ? 1 : 4, &u)) || (rc = memo_get(m, u)))
                return rc;
            break;
        case 'c': /* GLOBAL */
            if ((rc = in_line(m, &line, &len)) || (rc = in_line(m, &line2, &n)))
                return rc;
            if ((rc = push(m, make_global(m, line, len, line2, n))))
                return rc;
            break;
        case 0x93: /* STACK_GLOBAL */
            if ((rc = pop(m, &b)) || (rc = pop(m, &a)) || (rc = do_global(m, a, b)))
                return rc;
            break;
        case 0x82: case 0x83: case 0x84: { /* EXT1 EXT2 EXT4: copyreg's registry */
            if ((rc = in_le(m, op == 0x82 ? 1 : op == 0x83 ? 2 : 4, &u)))
                return rc;
            char code[32];
            int cl = snprintf(code, sizeof code, "%llu", (unsigned long long)u);
            if ((rc = push(m, make_global(m, "copyreg._extension_registry", 27, code, (size_t)cl))))
                return rc;
            break;
        }
        case 'i': /* INST module\nname\n, args since MARK */
            if ((rc = in_line(m, &line, &len)) || (rc = in_line(m, &line2, &n)))
                return rc;
            if (!(a = make_global(m, line, len, line2, n)))
                return errcode(m);
            if ((rc = pop_mark(m, &items, &n)))
                return rc;
            if (!(b = make_seq(m, PK_TUPLE, items, n)))
                return errcode(m);
            if ((rc = push(m, make_object(m, a, b))))
                return rc;
            break;
        case 'o': /* OBJ: MARK cls args... */
            if ((rc = pop_mark(m, &items, &n)))
                return rc;
            if (n < 1)
                return perr(m, ST_E_PICKLE, "OBJ without a class");
            a = items[0];
            if (!(b = make_seq(m, PK_TUPLE, items + 1, n - 1)))
                return errcode(m);
            if ((rc = push(m, make_object(m, a, b))))
                return rc;
            break;
        case 0x81: /* NEWOBJ cls args */
            if ((rc = pop(m, &b)) || (rc = pop(m, &a)))
                return rc;
            if ((rc = push(m, make_object(m, a, b))))
                return rc;
            break;
        case 0x92: /* NEWOBJ_EX cls args kwargs */
            if ((rc = pop(m, &v)) || (rc = pop(m, &b)) || (rc = pop(m, &a)))
                return rc;
            if (!(a = make_object(m, a, b)))
                return errcode(m);
            a->u.o.state = v;
            if ((rc = push(m, a)))
                return rc;
            break;
        case 'R': /* REDUCE callable args */
            if ((rc = pop(m, &b)) || (rc = pop(m, &a)))
                return rc;
            if ((rc = push(m, call(m, a, b, 0))))
                return rc;
            break;
        case 'b': /* BUILD: state recorded on placeholders, else ignored */
            if ((rc = pop(m, &b)) || (rc = top(m, &v)))
                return rc;
            if (v->kind == PK_OBJECT) {
                v->u.o.state = b;
                if (is_reconstruct(v) && (rc = build_array(m, v, b)))
                    return rc;
            }
            break;
        case 'P': /* PERSID */
            if ((rc = in_line(m, &line, &len)))
                return rc;
            if (!(a = newv(m, PK_STR)))
                return errcode(m);
            a->u.s.p = line;
            a->u.s.n = len;
            goto persid;
        case 'Q': /* BINPERSID */
            if ((rc = pop(m, &a)))
                return rc;
        persid:
            if (m->interpret && m->hooks && m->hooks->persid_value) {
                if (!(v = newv(m, PK_NONE)))
                    return errcode(m);
                if ((rc = m->hooks->persid_value(m->hooks->ctx, a, v, m->err)))
                    return rc;
            } else if (m->interpret && m->hooks && m->hooks->persid) {
                if (!(v = newv(m, PK_STORAGE)))
                    return errcode(m);
                if ((rc = m->hooks->persid(m->hooks->ctx, a, &v->u.st.index, m->err)))
                    return rc;
            } else {
                if (!(v = newv(m, PK_PERSID)))
                    return errcode(m);
                v->u.pid.pid = a;
            }
            if ((rc = push(m, v)))
                return rc;
            break;
        case 0x97: /* NEXT_BUFFER */
            return perr(m, ST_E_PICKLE, "out-of-band buffers (protocol 5 NEXT_BUFFER) are not supported");
        case 0x98: /* READONLY_BUFFER */
            if ((rc = top(m, &v)))
                return rc;
            break;
        default:
            return perr(m, ST_E_PICKLE, "unknown opcode 0x%02x", op);
        }
    }
}

/* Budgets proportional to the input: a pickle of P bytes may build at most
 * max(16 MiB, 64 x P) of object graph, so a 2 KB "billion laughs" stops at
 * 16 MiB instead of the fixed 256 MiB default; the configured limits stay
 * the ceiling. Real checkpoints' graphs are a few times their pickle. */
#define PK_MEMORY_FLOOR ((uint64_t)16 << 20)
#define PK_PER_BYTE 64u

uint64_t pk_scaled_limit(uint64_t configured, uint64_t floor, uint64_t pickle_bytes)
{
    uint64_t scaled = pickle_bytes > UINT64_MAX / PK_PER_BYTE ? UINT64_MAX
                                                              : pickle_bytes * PK_PER_BYTE;
    if (scaled < floor)
        scaled = floor;
    return scaled < configured ? scaled : configured;
}

static int start(pk_machine **out, const st_ckpt_limits *limits, const pk_hooks *hooks, bool interpret,
                 uint64_t pickle_bytes, st_error *err)
{
    pk_machine *m = calloc(1, sizeof *m);
    if (!m)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    if (limits)
        m->lim = *limits;
    else
        st_ckpt_default_limits(&m->lim);
    m->lim.max_memory = pk_scaled_limit(m->lim.max_memory, PK_MEMORY_FLOOR, pickle_bytes);
    m->arena.limit = m->lim.max_memory;
    m->hooks = hooks;
    m->interpret = interpret;
    m->err = err ? err : &m->own_err;
    *out = m;
    return ST_OK;
}

static int finish(pk_machine *m, int rc, pk_machine **out_machine, pk_value **result, uint64_t *stop_end)
{
    if (stop_end)
        *stop_end = m->pos;
    free(m->stack);
    free(m->marks);
    free(m->memo);
    free(m->buf);
    m->stack = NULL, m->marks = NULL, m->memo = NULL, m->buf = NULL;
    if (rc && result)
        *result = NULL;
    if (out_machine)
        *out_machine = m;
    else
        pk_free(m);
    return rc;
}

int pk_run(int fd, uint64_t begin, uint64_t end, const st_ckpt_limits *limits, const pk_hooks *hooks,
           bool interpret, pk_machine **out_machine, pk_value **result, uint64_t *stop_end, st_error *err)
{
    pk_machine *m;
    if (out_machine)
        *out_machine = NULL;
    int rc = start(&m, limits, hooks, interpret, end > begin ? end - begin : 0, err);
    if (rc)
        return rc;
    m->fd = fd;
    m->start = m->pos = begin;
    m->end = end;
    if (end - begin > m->lim.max_pickle_bytes)
        m->end = begin + m->lim.max_pickle_bytes;
    m->buf = malloc(IN_BUF);
    m->boff = UINT64_MAX;
    if (!m->buf)
        rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    else
        rc = run(m, result);
    return finish(m, rc, out_machine, result, stop_end);
}

int pk_run_memory(const void *data, size_t len, const st_ckpt_limits *limits, const pk_hooks *hooks,
                  bool interpret, pk_machine **out_machine, pk_value **result, uint64_t *stop_end,
                  st_error *err)
{
    pk_machine *m;
    if (out_machine)
        *out_machine = NULL;
    int rc = start(&m, limits, hooks, interpret, len, err);
    if (rc)
        return rc;
    m->fd = -1;
    m->mem = data;
    m->start = m->pos = 0;
    m->end = len;
    rc = run(m, result);
    return finish(m, rc, out_machine, result, stop_end);
}

void pk_free(pk_machine *m)
{
    if (!m)
        return;
    free(m->stack);
    free(m->marks);
    free(m->memo);
    free(m->buf);
    st_arena_free(&m->arena);
    free(m);
}

void st_ckpt_default_limits(st_ckpt_limits *l)
{
    l->max_pickle_bytes = 1ull << 30;
    l->max_memory = 256ull << 20;
    l->max_objects = 16ull << 20;
    l->max_memo = 1ull << 20;
    l->max_string = 256ull << 20;
    l->max_int_bytes = 256;
    l->max_depth = 1000;
    l->max_visits = 4ull << 20;
    l->max_tensors = 4ull << 20;
}
