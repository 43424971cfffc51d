/* The restricted pickle machine (lib/ckpt/pickle.c) on its own: every protocol
 * gives the same inert graph, limits fail fast with pickle_limit, malformed
 * and truncated input fails cleanly (no crash under ASan, whatever the
 * cut or mutation), globals are reported and never resolved, and the
 * global classifier. */
#include "ckpt/ckpt_internal.h"
#include "test.h"

#include <stdint.h>
#include <string.h>

/* pickle.dumps(obj, protocol=P) for P in 0..5, made by CPython 3 with
 * obj = {'a': [1, -2, 3.5, 'x', b'y', (None, True, False)], 'big': 2**70,
 *        'neg': -2**70, 'u': '\u00e9\u20ac', 'i': 100000, 'n': -1,
 *        'od': collections.OrderedDict([('k', 1)])} */
static const struct {
    int proto;
    size_t len;
    const char *data;
} fixtures[] = {
    {0, 277,
     "\x28\x64\x70\x30\x0a\x56\x61\x0a\x70\x31\x0a\x28\x6c\x70\x32\x0a\x49\x31\x0a\x61\x49\x2d\x32\x0a"
     "\x61\x46\x33\x2e\x35\x0a\x61\x56\x78\x0a\x70\x33\x0a\x61\x63\x5f\x63\x6f\x64\x65\x63\x73\x0a\x65"
     "\x6e\x63\x6f\x64\x65\x0a\x70\x34\x0a\x28\x56\x79\x0a\x70\x35\x0a\x56\x6c\x61\x74\x69\x6e\x31\x0a"
     "\x70\x36\x0a\x74\x70\x37\x0a\x52\x70\x38\x0a\x61\x28\x4e\x49\x30\x31\x0a\x49\x30\x30\x0a\x74\x70"
     "\x39\x0a\x61\x73\x56\x62\x69\x67\x0a\x70\x31\x30\x0a\x4c\x31\x31\x38\x30\x35\x39\x31\x36\x32\x30"
     "\x37\x31\x37\x34\x31\x31\x33\x30\x33\x34\x32\x34\x4c\x0a\x73\x56\x6e\x65\x67\x0a\x70\x31\x31\x0a"
     "\x4c\x2d\x31\x31\x38\x30\x35\x39\x31\x36\x32\x30\x37\x31\x37\x34\x31\x31\x33\x30\x33\x34\x32\x34"
     "\x4c\x0a\x73\x56\x75\x0a\x70\x31\x32\x0a\x56\xe9\x5c\x75\x32\x30\x61\x63\x0a\x70\x31\x33\x0a\x73"
     "\x56\x69\x0a\x70\x31\x34\x0a\x49\x31\x30\x30\x30\x30\x30\x0a\x73\x56\x6e\x0a\x70\x31\x35\x0a\x49"
     "\x2d\x31\x0a\x73\x56\x6f\x64\x0a\x70\x31\x36\x0a\x63\x63\x6f\x6c\x6c\x65\x63\x74\x69\x6f\x6e\x73"
     "\x0a\x4f\x72\x64\x65\x72\x65\x64\x44\x69\x63\x74\x0a\x70\x31\x37\x0a\x28\x74\x52\x70\x31\x38\x0a"
     "\x56\x6b\x0a\x70\x31\x39\x0a\x49\x31\x0a\x73\x73\x2e"},
    {1, 270,
     "\x7d\x71\x00\x28\x58\x01\x00\x00\x00\x61\x71\x01\x5d\x71\x02\x28\x4b\x01\x4a\xfe\xff\xff\xff\x47"
     "\x40\x0c\x00\x00\x00\x00\x00\x00\x58\x01\x00\x00\x00\x78\x71\x03\x63\x5f\x63\x6f\x64\x65\x63\x73"
     "\x0a\x65\x6e\x63\x6f\x64\x65\x0a\x71\x04\x28\x58\x01\x00\x00\x00\x79\x71\x05\x58\x06\x00\x00\x00"
     "\x6c\x61\x74\x69\x6e\x31\x71\x06\x74\x71\x07\x52\x71\x08\x28\x4e\x49\x30\x31\x0a\x49\x30\x30\x0a"
     "\x74\x71\x09\x65\x58\x03\x00\x00\x00\x62\x69\x67\x71\x0a\x4c\x31\x31\x38\x30\x35\x39\x31\x36\x32"
     "\x30\x37\x31\x37\x34\x31\x31\x33\x30\x33\x34\x32\x34\x4c\x0a\x58\x03\x00\x00\x00\x6e\x65\x67\x71"
     "\x0b\x4c\x2d\x31\x31\x38\x30\x35\x39\x31\x36\x32\x30\x37\x31\x37\x34\x31\x31\x33\x30\x33\x34\x32"
     "\x34\x4c\x0a\x58\x01\x00\x00\x00\x75\x71\x0c\x58\x05\x00\x00\x00\xc3\xa9\xe2\x82\xac\x71\x0d\x58"
     "\x01\x00\x00\x00\x69\x71\x0e\x4a\xa0\x86\x01\x00\x58\x01\x00\x00\x00\x6e\x71\x0f\x4a\xff\xff\xff"
     "\xff\x58\x02\x00\x00\x00\x6f\x64\x71\x10\x63\x63\x6f\x6c\x6c\x65\x63\x74\x69\x6f\x6e\x73\x0a\x4f"
     "\x72\x64\x65\x72\x65\x64\x44\x69\x63\x74\x0a\x71\x11\x29\x52\x71\x12\x58\x01\x00\x00\x00\x6b\x71"
     "\x13\x4b\x01\x73\x75\x2e"},
    {2, 235,
     "\x80\x02\x7d\x71\x00\x28\x58\x01\x00\x00\x00\x61\x71\x01\x5d\x71\x02\x28\x4b\x01\x4a\xfe\xff\xff"
     "\xff\x47\x40\x0c\x00\x00\x00\x00\x00\x00\x58\x01\x00\x00\x00\x78\x71\x03\x63\x5f\x63\x6f\x64\x65"
     "\x63\x73\x0a\x65\x6e\x63\x6f\x64\x65\x0a\x71\x04\x58\x01\x00\x00\x00\x79\x71\x05\x58\x06\x00\x00"
     "\x00\x6c\x61\x74\x69\x6e\x31\x71\x06\x86\x71\x07\x52\x71\x08\x4e\x88\x89\x87\x71\x09\x65\x58\x03"
     "\x00\x00\x00\x62\x69\x67\x71\x0a\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x40\x58\x03\x00\x00\x00"
     "\x6e\x65\x67\x71\x0b\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\xc0\x58\x01\x00\x00\x00\x75\x71\x0c"
     "\x58\x05\x00\x00\x00\xc3\xa9\xe2\x82\xac\x71\x0d\x58\x01\x00\x00\x00\x69\x71\x0e\x4a\xa0\x86\x01"
     "\x00\x58\x01\x00\x00\x00\x6e\x71\x0f\x4a\xff\xff\xff\xff\x58\x02\x00\x00\x00\x6f\x64\x71\x10\x63"
     "\x63\x6f\x6c\x6c\x65\x63\x74\x69\x6f\x6e\x73\x0a\x4f\x72\x64\x65\x72\x65\x64\x44\x69\x63\x74\x0a"
     "\x71\x11\x29\x52\x71\x12\x58\x01\x00\x00\x00\x6b\x71\x13\x4b\x01\x73\x75\x2e"},
    {3, 195,
     "\x80\x03\x7d\x71\x00\x28\x58\x01\x00\x00\x00\x61\x71\x01\x5d\x71\x02\x28\x4b\x01\x4a\xfe\xff\xff"
     "\xff\x47\x40\x0c\x00\x00\x00\x00\x00\x00\x58\x01\x00\x00\x00\x78\x71\x03\x43\x01\x79\x71\x04\x4e"
     "\x88\x89\x87\x71\x05\x65\x58\x03\x00\x00\x00\x62\x69\x67\x71\x06\x8a\x09\x00\x00\x00\x00\x00\x00"
     "\x00\x00\x40\x58\x03\x00\x00\x00\x6e\x65\x67\x71\x07\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\xc0"
     "\x58\x01\x00\x00\x00\x75\x71\x08\x58\x05\x00\x00\x00\xc3\xa9\xe2\x82\xac\x71\x09\x58\x01\x00\x00"
     "\x00\x69\x71\x0a\x4a\xa0\x86\x01\x00\x58\x01\x00\x00\x00\x6e\x71\x0b\x4a\xff\xff\xff\xff\x58\x02"
     "\x00\x00\x00\x6f\x64\x71\x0c\x63\x63\x6f\x6c\x6c\x65\x63\x74\x69\x6f\x6e\x73\x0a\x4f\x72\x64\x65"
     "\x72\x65\x64\x44\x69\x63\x74\x0a\x71\x0d\x29\x52\x71\x0e\x58\x01\x00\x00\x00\x6b\x71\x0f\x4b\x01"
     "\x73\x75\x2e"},
    {4, 162,
     "\x80\x04\x95\x97\x00\x00\x00\x00\x00\x00\x00\x7d\x94\x28\x8c\x01\x61\x94\x5d\x94\x28\x4b\x01\x4a"
     "\xfe\xff\xff\xff\x47\x40\x0c\x00\x00\x00\x00\x00\x00\x8c\x01\x78\x94\x43\x01\x79\x94\x4e\x88\x89"
     "\x87\x94\x65\x8c\x03\x62\x69\x67\x94\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x40\x8c\x03\x6e\x65"
     "\x67\x94\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\xc0\x8c\x01\x75\x94\x8c\x05\xc3\xa9\xe2\x82\xac"
     "\x94\x8c\x01\x69\x94\x4a\xa0\x86\x01\x00\x8c\x01\x6e\x94\x4a\xff\xff\xff\xff\x8c\x02\x6f\x64\x94"
     "\x8c\x0b\x63\x6f\x6c\x6c\x65\x63\x74\x69\x6f\x6e\x73\x94\x8c\x0b\x4f\x72\x64\x65\x72\x65\x64\x44"
     "\x69\x63\x74\x94\x93\x94\x29\x52\x94\x8c\x01\x6b\x94\x4b\x01\x73\x75\x2e"},
    {5, 162,
     "\x80\x05\x95\x97\x00\x00\x00\x00\x00\x00\x00\x7d\x94\x28\x8c\x01\x61\x94\x5d\x94\x28\x4b\x01\x4a"
     "\xfe\xff\xff\xff\x47\x40\x0c\x00\x00\x00\x00\x00\x00\x8c\x01\x78\x94\x43\x01\x79\x94\x4e\x88\x89"
     "\x87\x94\x65\x8c\x03\x62\x69\x67\x94\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x40\x8c\x03\x6e\x65"
     "\x67\x94\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\xc0\x8c\x01\x75\x94\x8c\x05\xc3\xa9\xe2\x82\xac"
     "\x94\x8c\x01\x69\x94\x4a\xa0\x86\x01\x00\x8c\x01\x6e\x94\x4a\xff\xff\xff\xff\x8c\x02\x6f\x64\x94"
     "\x8c\x0b\x63\x6f\x6c\x6c\x65\x63\x74\x69\x6f\x6e\x73\x94\x8c\x0b\x4f\x72\x64\x65\x72\x65\x64\x44"
     "\x69\x63\x74\x94\x93\x94\x29\x52\x94\x8c\x01\x6b\x94\x4b\x01\x73\x75\x2e"},
};

/* Renders a value as Python-like text, for comparisons. */
typedef struct sbuf {
    char s[4096];
    size_t n;
} sbuf;

static void put(sbuf *b, const char *s, size_t n)
{
    if (b->n + n < sizeof b->s) {
        memcpy(b->s + b->n, s, n);
        b->n += n;
        b->s[b->n] = 0;
    }
}
static void puts_(sbuf *b, const char *s) { put(b, s, strlen(s)); }

static void render(sbuf *b, const pk_value *v, int depth)
{
    char tmp[64];
    if (depth > 20) {
        puts_(b, "...");
        return;
    }
    switch (v->kind) {
    case PK_NONE: puts_(b, "None"); break;
    case PK_BOOL: puts_(b, v->u.i ? "True" : "False"); break;
    case PK_INT: snprintf(tmp, sizeof tmp, "%lld", (long long)v->u.i); puts_(b, tmp); break;
    case PK_FLOAT: snprintf(tmp, sizeof tmp, "%g", v->u.f); puts_(b, tmp); break;
    case PK_BIGINT:
        puts_(b, "bigint:");
        for (size_t i = 0; i < v->u.s.n; i++) {
            snprintf(tmp, sizeof tmp, "%02x", (unsigned char)v->u.s.p[i]);
            puts_(b, tmp);
        }
        break;
    case PK_STR: puts_(b, "'"); put(b, v->u.s.p, v->u.s.n); puts_(b, "'"); break;
    case PK_BYTES: puts_(b, "b'"); put(b, v->u.s.p, v->u.s.n); puts_(b, "'"); break;
    case PK_TUPLE: case PK_LIST: case PK_SET:
        puts_(b, v->kind == PK_TUPLE ? "(" : v->kind == PK_LIST ? "[" : "{");
        for (size_t i = 0; i < v->u.seq.n; i++) {
            if (i)
                puts_(b, ", ");
            render(b, v->u.seq.v[i], depth + 1);
        }
        puts_(b, v->kind == PK_TUPLE ? ")" : v->kind == PK_LIST ? "]" : "}");
        break;
    case PK_DICT:
        puts_(b, "{");
        for (size_t i = 0; i < v->u.seq.n; i++) {
            if (i)
                puts_(b, ", ");
            render(b, v->u.seq.v[2 * i], depth + 1);
            puts_(b, ": ");
            render(b, v->u.seq.v[2 * i + 1], depth + 1);
        }
        puts_(b, "}");
        break;
    case PK_GLOBAL: puts_(b, "<"); puts_(b, v->u.g.mod); puts_(b, "."); puts_(b, v->u.g.name); puts_(b, ">"); break;
    case PK_OBJECT:
        puts_(b, "obj(");
        render(b, v->u.o.cls, depth + 1);
        if (v->u.o.args) {
            puts_(b, ", ");
            render(b, v->u.o.args, depth + 1);
        }
        if (v->u.o.state) {
            puts_(b, ", state=");
            render(b, v->u.o.state, depth + 1);
        }
        if (v->u.o.list) {
            puts_(b, ", list=");
            render(b, v->u.o.list, depth + 1);
        }
        if (v->u.o.dict) {
            puts_(b, ", dict=");
            render(b, v->u.o.dict, depth + 1);
        }
        puts_(b, ")");
        break;
    case PK_PERSID: puts_(b, "pid("); render(b, v->u.pid.pid, depth + 1); puts_(b, ")"); break;
    default: puts_(b, "?"); break;
    }
}

/* Records globals, as the checkpoint layer does. */
typedef struct seen {
    char names[16][64];
    int n;
} seen;

static int on_global(void *ctx, const char *mod, size_t modn, const char *name, size_t namen, uint64_t off,
                     uint32_t *id, st_error *err)
{
    (void)off;
    (void)err;
    seen *s = ctx;
    if (s->n < 16)
        snprintf(s->names[s->n], sizeof s->names[0], "%.*s.%.*s", (int)modn, mod, (int)namen, name);
    *id = (uint32_t)s->n++;
    return ST_OK;
}

/* Runs a pickle from memory; returns the code, renders the result. */
static int run_pk(const void *data, size_t len, const st_ckpt_limits *lim, bool interpret, sbuf *out, seen *sn,
                  st_error *err)
{
    pk_hooks h = {sn, on_global, NULL, NULL, NULL};
    pk_machine *m = NULL;
    pk_value *v = NULL;
    memset(err, 0, sizeof *err);
    int rc = pk_run_memory(data, len, lim, sn ? &h : NULL, interpret, &m, &v, NULL, err);
    if (out) {
        out->n = 0;
        out->s[0] = 0;
        if (!rc)
            render(out, v, 0);
    }
    pk_free(m);
    return rc;
}

#define RUN(lit, lim, sb, sn, err) run_pk(lit, sizeof(lit) - 1, lim, true, sb, sn, err)

int main(void)
{
    sbuf b;
    st_error err;
    const char *want =
        "{'a': [1, -2, 3.5, 'x', b'y', (None, True, False)], 'big': bigint:000000000000000040, "
        "'neg': bigint:0000000000000000c0, 'u': '\xc3\xa9\xe2\x82\xac', 'i': 100000, 'n': -1, 'od': {'k': 1}}";
    /* 1. every protocol, the same graph; every strict prefix fails cleanly */
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++) {
        seen sn = {0};
        int rc = run_pk(fixtures[i].data, fixtures[i].len, NULL, true, &b, &sn, &err);
        CHECK(rc == ST_OK, "protocol %d: %s", fixtures[i].proto, err.message);
        CHECK(strcmp(b.s, want) == 0, "protocol %d:\n got  %s\n want %s", fixtures[i].proto, b.s, want);
        CHECK(sn.n >= 1 && strcmp(sn.names[sn.n - 1], "collections.OrderedDict") == 0,
              "protocol %d: the OrderedDict global reported", fixtures[i].proto);
        int bad = 0;
        for (size_t cut = 0; cut < fixtures[i].len; cut++) {
            rc = run_pk(fixtures[i].data, cut, NULL, true, NULL, NULL, &err);
            bad += rc == ST_OK;
        }
        CHECK(bad == 0, "protocol %d: %d truncations accepted", fixtures[i].proto, bad);
    }
    /* 2. mutations never crash (ASan/UBSan build checks memory) */
    {
        unsigned char buf[512];
        uint32_t x = 12345;
        int ok = 0;
        for (int it = 0; it < 20000; it++) {
            size_t f = (size_t)it % (sizeof fixtures / sizeof fixtures[0]);
            size_t len = fixtures[f].len;
            memcpy(buf, fixtures[f].data, len);
            for (int k = 0; k < 1 + it % 4; k++) {
                x = x * 1103515245u + 12345u;
                buf[(x >> 8) % len] = (unsigned char)(x >> 20);
            }
            st_ckpt_limits lim;
            st_ckpt_default_limits(&lim);
            lim.max_memory = 1 << 20;
            ok += run_pk(buf, len, &lim, it % 2, NULL, NULL, &err) == ST_OK;
        }
        CHECK(ok >= 0, "mutations ran");
    }
    /* 3. limits */
    st_ckpt_limits lim;
    st_ckpt_default_limits(&lim);
    {
        st_ckpt_limits l = lim;
        l.max_memo = 100;
        unsigned char p[2 + 1 + 200 * 2 + 1];
        size_t n = 0;
        p[n++] = 0x80, p[n++] = 2, p[n++] = 'N';
        for (int i = 0; i < 200; i++)
            p[n++] = 'q', p[n++] = (unsigned char)i;
        p[n++] = '.';
        CHECK_EQ_INT(run_pk(p, n, &l, true, NULL, NULL, &err), ST_E_PICKLE_LIMIT);
        CHECK(strstr(err.message, "memo") != NULL, "%s", err.message);
        /* the same key over and over is one entry */
        for (size_t i = 3; i + 1 < n; i += 2)
            p[i + 1] = 7;
        CHECK_EQ_INT(run_pk(p, n, &l, true, NULL, NULL, &err), ST_OK);
    }
    {
        st_ckpt_limits l = lim;
        l.max_depth = 50;
        char p[64];
        memset(p, '(', sizeof p);
        p[60] = 'N', p[61] = '.';
        CHECK_EQ_INT(run_pk(p, 62, &l, true, NULL, NULL, &err), ST_E_PICKLE_LIMIT);
    }
    {
        st_ckpt_limits l = lim;
        l.max_objects = 1000;
        static char p[3000];
        memset(p, 'N', sizeof p);
        p[sizeof p - 1] = '.';
        CHECK_EQ_INT(run_pk(p, sizeof p, &l, true, NULL, NULL, &err), ST_E_PICKLE_LIMIT);
        /* DUP makes no object but grows the stack: bounded too */
        p[0] = 'N';
        memset(p + 1, '2', sizeof p - 2);
        CHECK_EQ_INT(run_pk(p, sizeof p, &l, true, NULL, NULL, &err), ST_E_PICKLE_LIMIT);
    }
    {
        st_ckpt_limits l = lim;
        l.max_memory = 64 * 1024;
        /* a list appended to itself 100k times: the arena budget stops it */
        static char p[200010];
        size_t n = 0;
        p[n++] = ']', p[n++] = 'q', p[n++] = 0;
        while (n + 4 < sizeof p)
            p[n++] = 'h', p[n++] = 0, p[n++] = 'a';
        p[n++] = '.';
        CHECK_EQ_INT(run_pk(p, n, &l, true, NULL, NULL, &err), ST_E_PICKLE_LIMIT);
        CHECK(strstr(err.message, "memory") != NULL, "%s", err.message);
    }
    CHECK_EQ_INT(RUN("\x80\x02\x8b\xff\xff\xff\x7f", NULL, NULL, NULL, &err), ST_E_PICKLE_LIMIT);
    CHECK_EQ_INT(RUN("\x80\x02\x8b\x01\x01\x00\x00\x00.", NULL, NULL, NULL, &err), ST_E_PICKLE_LIMIT);
    CHECK_EQ_INT(RUN("\x80\x02\x8b\x00\x01\x00\x00\x00.", NULL, NULL, NULL, &err), ST_E_PICKLE); /* 256: allowed, truncated */
    CHECK_EQ_INT(RUN("\x80\x02\x8b\xff\xff\xff\xff.", NULL, NULL, NULL, &err), ST_E_PICKLE);
    CHECK_EQ_INT(RUN("\x80\x04\x8e\x00\x00\x00\x00\x00\x00\x00\x40xx.", NULL, NULL, NULL, &err), ST_E_PICKLE_LIMIT);
    {
        st_ckpt_limits l = lim;
        l.max_string = UINT64_MAX;
        CHECK_EQ_INT(RUN("\x80\x04\x8e\x00\x00\x00\x00\x00\x00\x00\x40xx.", &l, NULL, NULL, &err), ST_E_PICKLE);
        CHECK(strstr(err.message, "truncated") != NULL, "%s", err.message);
    }
    CHECK_EQ_INT(RUN("\x80\x02X\xf0\xff\xff\xff" "abc.", NULL, NULL, NULL, &err), ST_E_PICKLE_LIMIT);
    {
        static char p[4000];
        p[0] = 'L';
        memset(p + 1, '9', 3000);
        p[3001] = 'L', p[3002] = '\n', p[3003] = '.';
        CHECK_EQ_INT(run_pk(p, 3004, NULL, true, NULL, NULL, &err), ST_E_PICKLE_LIMIT);
    }
    /* 4. malformed */
    CHECK_EQ_INT(RUN("\x80\x06N.", NULL, NULL, NULL, &err), ST_E_PICKLE);       /* protocol 6 */
    CHECK_EQ_INT(RUN("\x80\x02\xffN.", NULL, NULL, NULL, &err), ST_E_PICKLE);   /* unknown opcode */
    CHECK_EQ_INT(RUN("0.", NULL, NULL, NULL, &err), ST_E_PICKLE);               /* POP on empty */
    CHECK_EQ_INT(RUN(".", NULL, NULL, NULL, &err), ST_E_PICKLE);                /* STOP on empty */
    CHECK_EQ_INT(RUN("h\x05.", NULL, NULL, NULL, &err), ST_E_PICKLE);           /* memo miss */
    CHECK_EQ_INT(RUN("(N(Nd.", NULL, NULL, NULL, &err), ST_E_PICKLE);           /* odd DICT */
    CHECK_EQ_INT(RUN("NNa.", NULL, NULL, NULL, &err), ST_E_PICKLE);             /* APPEND to None */
    CHECK_EQ_INT(RUN("(K\x01K\x02\x93.", NULL, NULL, NULL, &err), ST_E_PICKLE); /* STACK_GLOBAL ints */
    CHECK_EQ_INT(RUN("\x80\x05N\x97.", NULL, NULL, NULL, &err), ST_E_PICKLE);   /* NEXT_BUFFER */
    CHECK_EQ_INT(RUN("(N(t.", NULL, NULL, NULL, &err), ST_OK);                  /* leftovers are fine */
    CHECK_EQ_INT(RUN("S'abc\n.", NULL, NULL, NULL, &err), ST_E_PICKLE);         /* unquoted STRING */
    CHECK_EQ_INT(RUN("\x80\x02\x95\xff\x00\x00\x00\x00\x00\x00\x00N.", NULL, NULL, NULL, &err), ST_E_PICKLE);
    /* protocol 0 text forms */
    RUN("(S'a\\n\\x41\\'b'\np0\nV\\u20acx\nI-7\nF-0.5\nt.", NULL, &b, NULL, &err);
    CHECK(strcmp(b.s, "('a\nA'b', '\xe2\x82\xacx', -7, -0.5)") == 0, "text forms: %s", b.s);
    RUN("I00\nI01\nL-129L\n\x87.", NULL, &b, NULL, &err);
    CHECK(strcmp(b.s, "(False, True, -129)") == 0, "INT bools, LONG text: %s", b.s);
    RUN("\x8a\x02\x7f\xff\x8a\x01\x80\x8a\x00\x87.", NULL, &b, NULL, &err);
    CHECK(strcmp(b.s, "(-129, -128, 0)") == 0, "LONG1 signs: %s", b.s);
    /* 5. globals are placeholders: nothing resolved, everything reported */
    {
        seen sn = {0};
        static const char evil[] = "cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'id'\ntR.";
        int rc = run_pk(evil, sizeof evil - 1, NULL, true, &b, &sn, &err);
        CHECK_EQ_INT(rc, ST_OK);
        CHECK(sn.n == 2 && strcmp(sn.names[0], "builtins.getattr") == 0 && strcmp(sn.names[1], "builtins.__import__") == 0,
              "globals reported: %d", sn.n);
        CHECK(strcmp(b.s, "obj(obj(<builtins.getattr>, (obj(<builtins.__import__>, ('os')), 'system')), ('id'))") == 0,
              "inert graph: %s", b.s);
        sn.n = 0;
        run_pk("\x80\x02\x82\x05\x83\x01\x01\x86.", 8, NULL, true, &b, &sn, &err);
        CHECK(sn.n == 2 && strcmp(sn.names[0], "copyreg._extension_registry.5") == 0, "EXT1 reported: %s", sn.names[0]);
        sn.n = 0;
        rc = RUN("(i__main__\nThing\n}(X\x01\x00\x00\x00" "kK\x01ub(c__main__\nOther\nK\x02oK\x03" "a.", NULL, &b, &sn, &err);
        CHECK_EQ_INT(rc, ST_OK);
        CHECK(strstr(b.s, "obj(<__main__.Other>, (2), list=[3])") != NULL, "OBJ with APPEND: %s", b.s);
        rc = RUN("(i__main__\nThing\n}(X\x01\x00\x00\x00" "kK\x01ub.", NULL, &b, &sn, &err);
        CHECK(strcmp(b.s, "obj(<__main__.Thing>, (), state={'k': 1})") == 0, "INST + BUILD: %s", b.s);
        rc = RUN("\x80\x02X\x01\x00\x00\x00" "k\x85Q.", NULL, &b, NULL, &err);
        CHECK(rc == ST_OK && strcmp(b.s, "pid(('k'))") == 0, "persistent id without a hook: %s", b.s);
        /* a global seen before an error is still reported (scanning) */
        sn.n = 0;
        rc = RUN("cos\nsystem\n\xff", NULL, NULL, &sn, &err);
        CHECK(rc == ST_E_PICKLE && sn.n == 1 && strcmp(sn.names[0], "os.system") == 0, "global before an error");
    }
    /* 6. the classifier */
    struct { const char *m, *n; st_safety s; } cl[] = {
        {"os", "system", ST_SAFETY_DANGEROUS}, {"nt", "system", ST_SAFETY_DANGEROUS},
        {"posix", "system", ST_SAFETY_DANGEROUS}, {"subprocess", "call", ST_SAFETY_DANGEROUS},
        {"builtins", "exec", ST_SAFETY_DANGEROUS}, {"__builtin__", "eval", ST_SAFETY_DANGEROUS},
        {"builtins", "__import__", ST_SAFETY_DANGEROUS}, {"builtins", "getattr", ST_SAFETY_DANGEROUS},
        {"builtins", "compile", ST_SAFETY_DANGEROUS}, {"builtins", "apply", ST_SAFETY_DANGEROUS},
        {"builtins", "open", ST_SAFETY_DANGEROUS}, {"io", "open", ST_SAFETY_DANGEROUS},
        {"runpy", "_run_code", ST_SAFETY_DANGEROUS}, {"socket", "socket", ST_SAFETY_DANGEROUS},
        {"shutil", "rmtree", ST_SAFETY_DANGEROUS}, {"pickle", "loads", ST_SAFETY_DANGEROUS},
        {"_pickle", "loads", ST_SAFETY_DANGEROUS}, {"webbrowser", "open", ST_SAFETY_DANGEROUS},
        {"operator", "attrgetter", ST_SAFETY_DANGEROUS}, {"functools", "partial", ST_SAFETY_DANGEROUS},
        {"torch.storage", "_load_from_bytes", ST_SAFETY_DANGEROUS}, {"importlib.util", "x", ST_SAFETY_DANGEROUS},
        {"builtins", "eval.__call__", ST_SAFETY_DANGEROUS}, {"torch", "x.__class__", ST_SAFETY_DANGEROUS},
        {"osx", "system", ST_SAFETY_UNKNOWN}, {"operator", "add", ST_SAFETY_UNKNOWN},
        {"torch._utils", "_rebuild_tensor_v2", ST_SAFETY_SAFE}, {"torch._utils", "_rebuild_parameter", ST_SAFETY_SAFE},
        {"torch._utils", "_rebuild_tensor_v2.x", ST_SAFETY_UNKNOWN},
        {"torch", "FloatStorage", ST_SAFETY_SAFE}, {"torch", "ComplexFloatStorage", ST_SAFETY_SAFE},
        {"torch", "BFloat16Storage", ST_SAFETY_SAFE}, {"torch", "float16", ST_SAFETY_SAFE},
        {"collections", "OrderedDict", ST_SAFETY_SAFE}, {"numpy.core.multiarray", "_reconstruct", ST_SAFETY_SAFE},
        {"numpy", "dtype", ST_SAFETY_SAFE}, {"_codecs", "encode", ST_SAFETY_SAFE},
        {"builtins", "set", ST_SAFETY_SAFE}, {"pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint", ST_SAFETY_UNKNOWN},
    };
    for (size_t i = 0; i < sizeof cl / sizeof cl[0]; i++) {
        st_safety s = st_ckpt_classify(cl[i].m, strlen(cl[i].m), cl[i].n, strlen(cl[i].n));
        CHECK(s == cl[i].s, "classify %s.%s = %s", cl[i].m, cl[i].n, st_safety_name(s));
    }
    CHECK(strcmp(st_code_name(ST_E_PICKLE_LIMIT), "pickle_limit") == 0, "code name");
    CHECK(strcmp(st_format_name(ST_FORMAT_LEGACY_PICKLE), "legacy-pickle") == 0, "format name");
    TEST_END();
}
