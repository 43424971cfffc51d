/* The canonical writer: exact bytes (order, escaping, padding, metadata),
 * rejections, streaming through callbacks, atomic file writes, and the
 * conformance corpus: every canonical/CASE file must be reproduced byte for
 * byte from the tensors and metadata of files/CASE. */
#include "safetensors.h"
#include "test.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers ---- */

static char *serialize(st_writer *w, size_t *len, int *rc)
{
    void *p = NULL;
    st_error err;
    *rc = st_writer_serialize(w, &p, len, &err);
    if (*rc)
        fprintf(stderr, "  serialize: %s\n", err.message);
    return p;
}

static uint64_t le64(const void *p)
{
    const unsigned char *b = p;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | b[i];
    return v;
}

/* Checks the framing of `out` and that the header, spaces stripped, equals
 * `json` (json_len bytes). */
static void check_header(const char *out, size_t len, const char *json, size_t json_len)
{
    CHECK(len >= 8, "output of %zu bytes", len);
    if (len < 8)
        return;
    uint64_t n = le64(out);
    CHECK(n % 8 == 0, "N = %llu", (unsigned long long)n);
    CHECK(n >= json_len && n - json_len < 8, "N = %llu for %zu bytes of JSON",
          (unsigned long long)n, json_len);
    CHECK(8 + n <= len, "N past the end");
    if (n < json_len || 8 + n > len)
        return;
    CHECK(memcmp(out + 8, json, json_len) == 0, "header differs:\n got  %.*s\n want %.*s",
          (int)n, out + 8, (int)json_len, json);
    int spaces = 1;
    for (uint64_t i = json_len; i < n; i++)
        spaces &= out[8 + i] == ' ';
    CHECK(spaces, "padding is not spaces");
}

static unsigned char pattern(uint64_t off, unsigned seed)
{
    uint64_t x = off * 0x9e3779b97f4a7c15ull + seed;
    return (unsigned char)(x >> 56 ^ x >> 29 ^ off);
}

typedef struct gen {
    unsigned seed;
    uint64_t fail_at;   /* fail a call whose range reaches this offset */
    uint64_t next;      /* offsets must come in order                  */
    int out_of_order;
    size_t max_len;
    int calls;
} gen;

static int gen_read(void *ctx, uint64_t off, void *buf, size_t len)
{
    gen *g = ctx;
    g->calls++;
    if (off != g->next)
        g->out_of_order = 1;
    g->next = off + len;
    if (len > g->max_len)
        g->max_len = len;
    if (off + len > g->fail_at)
        return -1;
    unsigned char *b = buf;
    for (size_t i = 0; i < len; i++)
        b[i] = pattern(off + i, g->seed);
    return 0;
}

static int read_file(const char *path, char **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    size_t cap = 1 << 16, n = 0;
    char *p = malloc(cap);
    size_t k;
    while ((k = fread(p + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap)
            p = realloc(p, cap *= 2);
    }
    fclose(f);
    *data = p;
    *len = n;
    return 0;
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

/* ---- exact output ---- */

static void test_basic(void)
{
    st_writer *w = st_writer_new();
    float a[4] = {1, 2, 3, 4};
    uint64_t s22[2] = {2, 2}, s2[1] = {2};
    int16_t b[2] = {-1, 7};
    CHECK_EQ_INT(st_writer_add(w, "b", 1, ST_I16, s2, 1, b, 4, NULL), ST_OK);
    CHECK_EQ_INT(st_writer_add(w, "a", 1, ST_F32, s22, 2, a, 16, NULL), ST_OK);
    size_t len;
    int rc;
    char *out = serialize(w, &len, &rc);
    CHECK_EQ_INT(rc, ST_OK);
    const char *json = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                       "\"b\":{\"dtype\":\"I16\",\"shape\":[2],\"data_offsets\":[16,20]}}";
    check_header(out, len, json, strlen(json));
    uint64_t n = le64(out);
    CHECK_EQ_INT(len, 8 + n + 20);
    CHECK(memcmp(out + 8 + n, a, 16) == 0 && memcmp(out + 8 + n + 16, b, 4) == 0,
          "data differs");
    CHECK_EQ_INT(st_writer_output_size(w), len);
    free(out);

    /* An empty writer: "{}" padded to 8. */
    st_writer *e = st_writer_new();
    out = serialize(e, &len, &rc);
    CHECK_EQ_INT(rc, ST_OK);
    CHECK(len == 16 && le64(out) == 8 && memcmp(out + 8, "{}      ", 8) == 0,
          "empty file is wrong");
    free(out);
    st_writer_free(e);
    st_writer_free(w);
    st_writer_free(NULL);
}

/* serde_json's escaping, written out independently of the library. */
static size_t expect_escape(unsigned c, char *dst)
{
    switch (c) {
    case '"': return (size_t)sprintf(dst, "\\\"");
    case '\\': return (size_t)sprintf(dst, "\\\\");
    case 8: return (size_t)sprintf(dst, "\\b");
    case 12: return (size_t)sprintf(dst, "\\f");
    case 10: return (size_t)sprintf(dst, "\\n");
    case 13: return (size_t)sprintf(dst, "\\r");
    case 9: return (size_t)sprintf(dst, "\\t");
    }
    if (c < 0x20)
        return (size_t)sprintf(dst, "\\u%04x", c);
    dst[0] = (char)c;
    dst[1] = 0;
    return 1;
}

static void test_escaping(void)
{
    int bad = 0;
    for (unsigned c = 0; c < 0x80; c++) {
        st_writer *w = st_writer_new();
        char name[3] = {'x', (char)c, 'y'};
        uint64_t s0 = 0;
        int rc = st_writer_add(w, name, 3, ST_U8, &s0, 1, NULL, 0, NULL);
        rc |= st_writer_set_metadata(w, name, 3, name + 1, 1, NULL);
        size_t len;
        char *out = rc ? NULL : serialize(w, &len, &rc);
        char esc[8], json[256];
        expect_escape(c, esc);
        int jl = snprintf(json, sizeof json,
                          "{\"__metadata__\":{\"x%sy\":\"%s\"},"
                          "\"x%sy\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}",
                          esc, esc, esc);
        int before = test_failed_;
        if (out)
            check_header(out, len, json, (size_t)jl);
        if (rc || test_failed_ != before) {
            bad++;
            fprintf(stderr, "  byte 0x%02x\n", c);
        }
        free(out);
        st_writer_free(w);
    }
    CHECK_EQ_INT(bad, 0);

    /* UTF-8 and DEL pass through raw; a NUL inside a name is \u0000. */
    st_writer *w = st_writer_new();
    uint64_t s0 = 0;
    CHECK_EQ_INT(st_writer_add(w, "\xc3\xa9\x7f\xf0\x9f\x98\x80", 7, ST_U8, &s0, 1, NULL, 0, NULL),
                 ST_OK);
    CHECK_EQ_INT(st_writer_add(w, "n\0ul", 4, ST_U8, &s0, 1, NULL, 0, NULL), ST_OK);
    size_t len;
    int rc;
    char *out = serialize(w, &len, &rc);
    const char *json = "{\"n\\u0000ul\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]},"
                       "\"\xc3\xa9\x7f\xf0\x9f\x98\x80\":{\"dtype\":\"U8\",\"shape\":[0],"
                       "\"data_offsets\":[0,0]}}";
    check_header(out, len, json, strlen(json));
    free(out);
    st_writer_free(w);
}

static void test_order(void)
{
    st_writer *w = st_writer_new();
    static const struct {
        const char *name;
        size_t len;
        st_dtype dt;
    } t[] = {
        {"b", 1, ST_F32},     {"ab", 2, ST_F32},  {"a\0", 2, ST_F32}, {"a", 1, ST_F32},
        {"", 0, ST_F32},      {"\x7f", 1, ST_F32}, {"\xc3\xa9", 2, ST_F32},
        {"z", 1, ST_BOOL},    {"m", 1, ST_U64},   {"c", 1, ST_F16},   {"A", 1, ST_BF16},
        {"f", 1, ST_F4},      {"e", 1, ST_F6_E3M2}, {"d", 1, ST_F6_E2M3},
    };
    uint64_t shape[1] = {8};
    static unsigned char data[64];
    int ok = 1;
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        uint64_t nb = 8 * st_dtype_bits(t[i].dt) / 8;
        ok &= st_writer_add(w, t[i].name, t[i].len, t[i].dt, shape, 1, data, nb, NULL) == ST_OK;
    }
    CHECK(ok, "adds failed");
    size_t len;
    int rc;
    char *out = serialize(w, &len, &rc);
    /* U64 (21) > F32 (17) > BF16 (14) > F16 (13) > F6_E3M2 (3) > F6_E2M3 (2)
     * > F4 (1) > BOOL (0); within F32: "" < "a" < "a\0" < "ab" < "b" <
     * "\x7f" < "\xc3\xa9" (bytewise, shorter prefix first). */
    const char *json =
        "{\"m\":{\"dtype\":\"U64\",\"shape\":[8],\"data_offsets\":[0,64]},"
        "\"\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[64,96]},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[96,128]},"
        "\"a\\u0000\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[128,160]},"
        "\"ab\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[160,192]},"
        "\"b\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[192,224]},"
        "\"\x7f\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[224,256]},"
        "\"\xc3\xa9\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[256,288]},"
        "\"A\":{\"dtype\":\"BF16\",\"shape\":[8],\"data_offsets\":[288,304]},"
        "\"c\":{\"dtype\":\"F16\",\"shape\":[8],\"data_offsets\":[304,320]},"
        "\"e\":{\"dtype\":\"F6_E3M2\",\"shape\":[8],\"data_offsets\":[320,326]},"
        "\"d\":{\"dtype\":\"F6_E2M3\",\"shape\":[8],\"data_offsets\":[326,332]},"
        "\"f\":{\"dtype\":\"F4\",\"shape\":[8],\"data_offsets\":[332,336]},"
        "\"z\":{\"dtype\":\"BOOL\",\"shape\":[8],\"data_offsets\":[336,344]}}";
    CHECK_EQ_INT(rc, ST_OK);
    check_header(out, len, json, strlen(json));
    free(out);
    st_writer_free(w);
}

/* ---- padding: every header length mod 8 ---- */

static void test_padding(void)
{
    int residues = 0;
    for (size_t l = 1; l <= 16; l++) {
        char name[32], json[128];
        memset(name, 'n', l);
        st_writer *w = st_writer_new();
        uint64_t s1 = 1;
        unsigned char byte = 0x5a;
        CHECK_EQ_INT(st_writer_add(w, name, l, ST_U8, &s1, 1, &byte, 1, NULL), ST_OK);
        int jl = snprintf(json, sizeof json,
                          "{\"%.*s\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
                          (int)l, name);
        residues |= 1 << (jl % 8);
        size_t len;
        int rc;
        char *out = serialize(w, &len, &rc);
        check_header(out, len, json, (size_t)jl);
        uint64_t n = le64(out);
        CHECK_EQ_INT(n, ((size_t)jl + 7) / 8 * 8);
        CHECK(len == 8 + n + 1 && (unsigned char)out[len - 1] == 0x5a, "data byte");
        free(out);
        st_writer_free(w);
    }
    CHECK_EQ_INT(residues, 0xff);
}

/* ---- metadata ---- */

static void test_metadata(void)
{
    st_writer *w = st_writer_new();
    size_t len;
    int rc;
    char *out;
    st_writer_set_metadata_present(w, 1);
    out = serialize(w, &len, &rc);
    check_header(out, len, "{\"__metadata__\":{}}", 19);
    free(out);
    st_writer_set_metadata_present(w, 0);
    out = serialize(w, &len, &rc);
    check_header(out, len, "{}", 2);
    free(out);

    CHECK_EQ_INT(st_writer_set_metadata(w, "zz", 2, "1", 1, NULL), ST_OK);
    CHECK_EQ_INT(st_writer_set_metadata(w, "a", 1, "2", 1, NULL), ST_OK);
    CHECK_EQ_INT(st_writer_set_metadata(w, "", 0, "", 0, NULL), ST_OK);
    CHECK_EQ_INT(st_writer_set_metadata(w, "a\0", 2, "n", 1, NULL), ST_OK);
    CHECK_EQ_INT(st_writer_set_metadata(w, "zz", 2, "replaced", 8, NULL), ST_OK);
    uint64_t s0 = 0;
    CHECK_EQ_INT(st_writer_add(w, "w", 1, ST_F32, &s0, 1, NULL, 0, NULL), ST_OK);
    out = serialize(w, &len, &rc);
    const char *json = "{\"__metadata__\":{\"\":\"\",\"a\":\"2\",\"a\\u0000\":\"n\","
                       "\"zz\":\"replaced\"},"
                       "\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}";
    check_header(out, len, json, strlen(json));
    free(out);
    /* present = 0 never drops pairs. */
    st_writer_set_metadata_present(w, 0);
    out = serialize(w, &len, &rc);
    check_header(out, len, json, strlen(json));
    free(out);

    /* Many keys: the O(1) table grows. */
    st_writer *m = st_writer_new();
    int ok = 1;
    for (int i = 0; i < 3000; i++) {
        char k[16];
        int kl = snprintf(k, sizeof k, "k%04d", (i * 7) % 3000);
        ok &= st_writer_set_metadata(m, k, (size_t)kl, k, (size_t)kl, NULL) == ST_OK;
    }
    CHECK(ok, "metadata adds failed");
    out = serialize(m, &len, &rc);
    CHECK_EQ_INT(rc, ST_OK);
    CHECK(out && memmem(out, len, "\"k0000\":\"k0000\",\"k0001\":\"k0001\"", 30) != NULL,
          "sorted keys");
    CHECK(out && memmem(out, len, "\"k2999\":\"k2999\"}}", 17) != NULL, "last key");
    free(out);
    st_writer_free(m);
    st_writer_free(w);
}

/* ---- rejections ---- */

static void test_rejections(void)
{
    st_writer *w = st_writer_new();
    st_error err;
    uint64_t s4[1] = {4}, s3[1] = {3};
    unsigned char d[16] = {0};
    CHECK_EQ_INT(st_writer_add(w, "x", 1, ST_F32, s4, 1, d, 16, &err), ST_OK);
    CHECK_EQ_INT(st_writer_add(w, "x", 1, ST_F32, s4, 1, d, 16, &err), ST_E_ARG);
    CHECK(strstr(err.message, "'x'") && strstr(err.message, "already"), "%s", err.message);
    CHECK_EQ_INT(st_writer_add(w, "x", 1, ST_U8, s4, 1, d, 4, &err), ST_E_ARG);
    CHECK_EQ_INT(st_writer_add(w, "__metadata__", 12, ST_U8, s4, 1, d, 4, &err), ST_E_ARG);
    CHECK(strstr(err.message, "__metadata__") != NULL, "%s", err.message);
    CHECK_EQ_INT(st_writer_add(w, "__metadata__x", 13, ST_U8, s4, 1, d, 4, &err), ST_OK);
    CHECK_EQ_INT(st_writer_add(w, "y", 1, ST_DTYPE_COUNT, s4, 1, d, 4, &err), ST_E_ARG);
    CHECK_EQ_INT(st_writer_add(w, "y", 1, (st_dtype)-1, s4, 1, d, 4, &err), ST_E_ARG);
    CHECK_EQ_INT(st_writer_add(w, "y", 1, ST_F32, s4, 1, d, 15, &err), ST_E_SIZE_MISMATCH);
    CHECK(strstr(err.message, "'y'") != NULL, "%s", err.message);
    CHECK_EQ_INT(st_writer_add(w, "y", 1, ST_F32, s4, 1, d, 17, &err), ST_E_SIZE_MISMATCH);
    CHECK_EQ_INT(st_writer_add(w, "y", 1, ST_F4, s3, 1, d, 1, &err), ST_E_MISALIGNED);
    CHECK_EQ_INT(st_writer_add(w, "y", 1, ST_F6_E2M3, s3, 1, d, 2, &err), ST_E_MISALIGNED);
    uint64_t big[3] = {1ull << 32, 1ull << 32, 2};
    CHECK_EQ_INT(st_writer_add(w, "y", 1, ST_U8, big, 3, d, 0, &err), ST_E_OVERFLOW);
    uint64_t bits_big[1] = {1ull << 62};
    CHECK_EQ_INT(st_writer_add(w, "y", 1, ST_F64, bits_big, 1, d, 0, &err), ST_E_OVERFLOW);
    CHECK_EQ_INT(st_writer_add(w, "y", 1, ST_U8, s4, 1, NULL, 4, &err), ST_E_ARG);
    CHECK_EQ_INT(st_writer_add(w, "y", 1, ST_U8, NULL, 1, d, 4, &err), ST_E_ARG);
    CHECK_EQ_INT(st_writer_add(w, NULL, 1, ST_U8, s4, 1, d, 4, &err), ST_E_ARG);
    CHECK_EQ_INT(st_writer_add(NULL, "y", 1, ST_U8, s4, 1, d, 4, &err), ST_E_ARG);
    CHECK_EQ_INT(st_writer_add_stream(w, "y", 1, ST_U8, s4, 1, 4, NULL, NULL, &err), ST_E_ARG);
    /* Rank limit. */
    uint64_t *ones = malloc((ST_MAX_RANK + 1) * sizeof *ones);
    for (int i = 0; i <= ST_MAX_RANK; i++)
        ones[i] = 1;
    CHECK_EQ_INT(st_writer_add(w, "r", 1, ST_U8, ones, ST_MAX_RANK + 1, d, 1, &err), ST_E_ARG);
    CHECK_EQ_INT(st_writer_add(w, "r", 1, ST_U8, ones, ST_MAX_RANK, d, 1, &err), ST_OK);
    free(ones);
    /* Names and metadata must be UTF-8 (Rust Strings in the reference). */
    static const char *bad_utf8[] = {"\xff", "\xc0\x80", "\xed\xa0\x80", "\xe2\x82",
                                     "\xf4\x90\x80\x80", "\x80", "a\xc3", "\xf8\x88\x80\x80\x80"};
    for (size_t i = 0; i < sizeof bad_utf8 / sizeof bad_utf8[0]; i++) {
        size_t l = strlen(bad_utf8[i]);
        CHECK_EQ_INT(st_writer_add(w, bad_utf8[i], l, ST_U8, s4, 1, d, 4, &err), ST_E_ARG);
        CHECK_EQ_INT(st_writer_set_metadata(w, bad_utf8[i], l, "v", 1, &err), ST_E_ARG);
        CHECK_EQ_INT(st_writer_set_metadata(w, "k", 1, bad_utf8[i], l, &err), ST_E_ARG);
    }
    CHECK_EQ_INT(st_writer_add(w, "\xf4\x8f\xbf\xbf", 4, ST_U8, s4, 1, d, 4, &err), ST_OK);
    /* Nothing rejected reached the output. */
    size_t len;
    int rc;
    char *out = serialize(w, &len, &rc);
    CHECK_EQ_INT(rc, ST_OK);
    CHECK(out && !memmem(out, len, "\"y\"", 3), "a rejected tensor was written");
    free(out);
    st_writer_free(w);

    /* The header limit, exactly: {"__metadata__":{"k":"V"}} is 25 bytes
     * plus V, so V = 100,000,000 - 25 gives N = 100,000,000 (allowed, no
     * padding) and one byte more is refused. */
    size_t big_len = ST_MAX_HEADER_SIZE - 24;
    char *v = malloc(big_len);
    memset(v, 'v', big_len);
    st_writer *h = st_writer_new();
    CHECK_EQ_INT(st_writer_set_metadata(h, "k", 1, v, big_len - 1, &err), ST_OK);
    CHECK_EQ_INT(st_writer_output_size(h), 8 + ST_MAX_HEADER_SIZE);
    CHECK_EQ_INT(st_writer_set_metadata(h, "k", 1, v, big_len, &err), ST_OK);
    free(v);
    void *p = NULL;
    size_t pl = 0;
    CHECK_EQ_INT(st_writer_serialize(h, &p, &pl, &err), ST_E_HEADER_TOO_LARGE);
    CHECK(p == NULL, "no output");
    CHECK_EQ_INT(st_writer_output_size(h), 0);
    CHECK_EQ_INT(st_writer_write(h, "/nonexistent-folder/x", &err), ST_E_HEADER_TOO_LARGE);
    st_writer_free(h);
}

/* ---- streaming ---- */

typedef struct sink_state {
    unsigned char *buf;
    size_t len, cap;
    size_t max_chunk;
    int fail_after;
} sink_state;

static int sink(void *ctx, const void *p, size_t n)
{
    sink_state *s = ctx;
    if (s->fail_after-- == 0)
        return 1;
    if (n > s->max_chunk)
        s->max_chunk = n;
    if (s->len + n > s->cap)
        return 1;
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    return 0;
}

static void test_streaming(const char *dir)
{
    /* 5 MiB + 3 through a callback, plus pointer tensors around it. */
    const uint64_t big = 5 * 1024 * 1024 + 3;
    gen g = {.seed = 7, .fail_at = UINT64_MAX};
    st_writer *w = st_writer_new();
    uint64_t sb[1] = {big}, s8[1] = {8};
    unsigned char small[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    CHECK_EQ_INT(st_writer_add_stream(w, "big", 3, ST_U8, sb, 1, big, gen_read, &g, NULL), ST_OK);
    CHECK_EQ_INT(st_writer_add(w, "a", 1, ST_U8, s8, 1, small, 8, NULL), ST_OK);
    CHECK_EQ_INT(st_writer_add(w, "c", 1, ST_I8, s8, 1, small, 8, NULL), ST_OK);
    char path[4096];
    snprintf(path, sizeof path, "%s/big.safetensors", dir);
    st_error err;
    CHECK_EQ_INT(st_writer_write(w, path, &err), ST_OK);
    CHECK(!g.out_of_order, "callback offsets not consecutive");
    CHECK(g.max_len <= 4u << 20, "callback asked for %zu bytes at once", g.max_len);
    CHECK(g.calls >= 2, "%d calls", g.calls);
    char *data;
    size_t len;
    CHECK(read_file(path, &data, &len) == 0, "read back");
    uint64_t n = le64(data);
    CHECK_EQ_INT(len, 8 + n + big + 16);
    CHECK_EQ_INT(st_writer_output_size(w), len);
    /* I8 (5) sorts before U8 (4); within U8 "a" < "big". */
    const unsigned char *body = (const unsigned char *)data + 8 + n;
    CHECK(memcmp(body, small, 8) == 0 && memcmp(body + 8, small, 8) == 0, "pointer data");
    int bad = 0;
    for (uint64_t i = 0; i < big; i++)
        bad += body[16 + i] != pattern(i, 7);
    CHECK_EQ_INT(bad, 0);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 07777) == 0644, "mode %o",
          (unsigned)(st.st_mode & 07777));

    /* The same through a sink, and through serialize. */
    g.next = 0;
    sink_state s = {malloc(len), 0, len, 0, -1};
    CHECK_EQ_INT(st_writer_write_to(w, sink, &s, &err), ST_OK);
    CHECK(s.len == len && memcmp(s.buf, data, len) == 0, "sink output differs");
    CHECK(s.max_chunk <= 4u << 20, "chunk of %zu", s.max_chunk);
    g.next = 0;
    void *mem;
    size_t ml;
    CHECK_EQ_INT(st_writer_serialize(w, &mem, &ml, &err), ST_OK);
    CHECK(ml == len && memcmp(mem, data, len) == 0, "serialize output differs");
    free(mem);
    /* A failing sink. */
    g.next = 0;
    s.len = 0;
    s.fail_after = 2;
    CHECK_EQ_INT(st_writer_write_to(w, sink, &s, &err), ST_E_CALLBACK);
    free(s.buf);

    /* An existing target keeps its mode. */
    CHECK(chmod(path, 0600) == 0, "chmod");
    g.next = 0;
    CHECK_EQ_INT(st_writer_write(w, path, &err), ST_OK);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 07777) == 0600, "mode %o",
          (unsigned)(st.st_mode & 07777));
    free(data);
    st_writer_free(w);
    unlink(path);
}

/* ---- atomicity ---- */

static void test_atomic(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/target.safetensors", dir);
    const char original[] = "original contents, not a safetensors file";
    FILE *f = fopen(path, "wb");
    fwrite(original, 1, sizeof original, f);
    fclose(f);
    CHECK_EQ_INT(count_entries(dir), 1);

    /* The callback fails after more than a buffer's worth was written. */
    const uint64_t big = 3 * 1024 * 1024;
    gen g = {.seed = 3, .fail_at = 2 * 1024 * 1024 + 17};
    st_writer *w = st_writer_new();
    uint64_t sb[1] = {big};
    CHECK_EQ_INT(st_writer_add_stream(w, "t\n", 2, ST_U8, sb, 1, big, gen_read, &g, NULL), ST_OK);
    st_error err;
    CHECK_EQ_INT(st_writer_write(w, path, &err), ST_E_CALLBACK);
    CHECK(strstr(err.message, "'t\\x0a'") != NULL, "%s", err.message);
    char *data;
    size_t len;
    CHECK(read_file(path, &data, &len) == 0, "read back");
    CHECK(len == sizeof original && memcmp(data, original, len) == 0, "target changed");
    free(data);
    CHECK_EQ_INT(count_entries(dir), 1);

    /* A folder that does not exist. */
    char nope[4200];
    snprintf(nope, sizeof nope, "%s/no-such-folder/x.safetensors", dir);
    g.fail_at = UINT64_MAX;
    g.next = 0;
    CHECK_EQ_INT(st_writer_write(w, nope, &err), ST_E_IO);
    CHECK(strstr(err.message, "no-such-folder") && strstr(err.message, "No such file"), "%s",
          err.message);

    /* A target that is a folder: rename fails, nothing is left behind. */
    char sub[4200];
    snprintf(sub, sizeof sub, "%s/sub", dir);
    CHECK(mkdir(sub, 0755) == 0, "mkdir");
    g.next = 0;
    CHECK_EQ_INT(st_writer_write(w, sub, &err), ST_E_IO);
    CHECK(strstr(err.message, "sub") != NULL, "%s", err.message);
    CHECK_EQ_INT(count_entries(dir), 2);
    CHECK_EQ_INT(count_entries(sub), 0);
    rmdir(sub);

    /* A write error mid-stream (the file size limit stands in for a full
     * disk: write() fails with EFBIG once 1 MiB is written). */
    struct rlimit old_lim, lim;
    if (getrlimit(RLIMIT_FSIZE, &old_lim) == 0) {
        void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
        lim = old_lim;
        lim.rlim_cur = 1024 * 1024;
        CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0, "setrlimit");
        g.next = 0;
        CHECK_EQ_INT(st_writer_write(w, path, &err), ST_E_IO);
        CHECK(strstr(err.message, "target.safetensors") && strstr(err.message, "too large"),
              "%s", err.message);
        CHECK(setrlimit(RLIMIT_FSIZE, &old_lim) == 0, "restore rlimit");
        signal(SIGXFSZ, old_handler);
        CHECK(read_file(path, &data, &len) == 0, "read back");
        CHECK(len == sizeof original && memcmp(data, original, len) == 0, "target changed");
        free(data);
        CHECK_EQ_INT(count_entries(dir), 1);
    }

    /* A symbolic link is replaced by the file, its target left alone. */
    char link[4200], other[4200];
    snprintf(link, sizeof link, "%s/link.safetensors", dir);
    snprintf(other, sizeof other, "%s/other", dir);
    f = fopen(other, "wb");
    fwrite(original, 1, sizeof original, f);
    fclose(f);
    CHECK(symlink("other", link) == 0, "symlink");
    st_writer *e0 = st_writer_new();
    CHECK_EQ_INT(st_writer_write(e0, link, &err), ST_OK);
    struct stat lst;
    CHECK(lstat(link, &lst) == 0 && S_ISREG(lst.st_mode) && lst.st_size == 16, "link replaced");
    CHECK(read_file(other, &data, &len) == 0 && len == sizeof original, "link target kept");
    free(data);
    st_writer_free(e0);
    unlink(link);
    unlink(other);

    /* Bad arguments. */
    CHECK_EQ_INT(st_writer_write(w, "", &err), ST_E_ARG);
    CHECK_EQ_INT(st_writer_write(w, NULL, &err), ST_E_ARG);
    snprintf(sub, sizeof sub, "%s/", dir);
    CHECK_EQ_INT(st_writer_write(w, sub, &err), ST_E_ARG);

    /* Success replaces the target, leaving no temporary file. */
    g.next = 0;
    CHECK_EQ_INT(st_writer_write(w, path, &err), ST_OK);
    CHECK(read_file(path, &data, &len) == 0, "read back");
    CHECK_EQ_INT(len, st_writer_output_size(w));
    free(data);
    CHECK_EQ_INT(count_entries(dir), 1);
    st_writer_free(w);
    unlink(path);

    /* A relative path (no folder part) writes into the current folder. */
    char cwd[4096];
    if (getcwd(cwd, sizeof cwd) && chdir(dir) == 0) {
        st_writer *e = st_writer_new();
        CHECK_EQ_INT(st_writer_write(e, "rel.safetensors", &err), ST_OK);
        CHECK(access("rel.safetensors", F_OK) == 0, "relative write");
        unlink("rel.safetensors");
        st_writer_free(e);
        CHECK(chdir(cwd) == 0, "chdir back");
    }
}

/* ---- conformance corpus ---- */

typedef struct tsrc {
    const st_file *file;
    const st_tensor *t;
    int failed;
} tsrc;

static int tensor_read_cb(void *ctx, uint64_t off, void *buf, size_t len)
{
    tsrc *s = ctx;
    if (st_tensor_read(s->file, s->t, off, buf, len, NULL) != ST_OK) {
        s->failed = 1;
        return 1;
    }
    return 0;
}

/* Rebuilds CASE with pointer data (stream = 0) or callbacks (stream = 1). */
static int rebuild(const st_file *f, int stream, st_writer **out, void ***bufs, tsrc **srcs)
{
    size_t n = st_tensor_count(f);
    st_writer *w = st_writer_new();
    *bufs = calloc(n + 1, sizeof **bufs);
    *srcs = calloc(n + 1, sizeof **srcs);
    st_error err;
    if (st_metadata_present(f))
        st_writer_set_metadata_present(w, 1);
    for (size_t i = 0; i < st_metadata_count(f); i++) {
        const char *k, *v;
        size_t kl, vl;
        if (st_metadata_at(f, i, &k, &kl, &v, &vl) ||
            st_writer_set_metadata(w, k, kl, v, vl, &err)) {
            fprintf(stderr, "  metadata %zu: %s\n", i, err.message);
            *out = w;
            return -1;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_tensor_at(f, i);
        uint64_t nb = st_tensor_nbytes(t);
        int rc;
        if (stream) {
            (*srcs)[i] = (tsrc){f, t, 0};
            rc = st_writer_add_stream(w, t->name, t->name_len, t->dtype, t->shape, t->rank, nb,
                                      tensor_read_cb, &(*srcs)[i], &err);
        } else {
            (*bufs)[i] = malloc(nb ? nb : 1);
            rc = st_tensor_read(f, t, 0, (*bufs)[i], nb, &err);
            if (!rc)
                rc = st_writer_add(w, t->name, t->name_len, t->dtype, t->shape, t->rank,
                                   (*bufs)[i], nb, &err);
        }
        if (rc) {
            fprintf(stderr, "  tensor %zu: %s\n", i, err.message);
            *out = w;
            return -1;
        }
    }
    *out = w;
    return 0;
}

static void test_corpus(const char *tmpdir)
{
    const char *conf = test_conformance_dir();
    char cdir[4096];
    snprintf(cdir, sizeof cdir, "%s/canonical", conf);
    DIR *d = opendir(cdir);
    CHECK(d != NULL, "no corpus at %s", cdir);
    if (!d)
        return;
    int cases = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 12 || strcmp(e->d_name + l - 12, ".safetensors"))
            continue;
        cases++;
        char in[8192], canon[8192], outp[8192];
        snprintf(in, sizeof in, "%s/files/%s", conf, e->d_name);
        snprintf(canon, sizeof canon, "%s/%s", cdir, e->d_name);
        snprintf(outp, sizeof outp, "%s/%s", tmpdir, e->d_name);
        char *want;
        size_t want_len;
        if (read_file(canon, &want, &want_len)) {
            CHECK(0, "cannot read %s", canon);
            continue;
        }
        st_file *f = NULL;
        st_error err;
        int rc = st_open(in, cases % 2 ? ST_OPEN_PREAD : ST_OPEN_MMAP, &f, &err);
        CHECK(rc == ST_OK, "%s: %s", in, rc ? err.message : "");
        if (rc) {
            free(want);
            continue;
        }
        for (int stream = 0; stream < 2; stream++) {
            st_writer *w;
            void **bufs;
            tsrc *srcs;
            int brc = rebuild(f, stream, &w, &bufs, &srcs);
            CHECK(brc == 0, "%s: rebuild failed", e->d_name);
            if (!brc) {
                void *got = NULL;
                size_t got_len = 0;
                rc = st_writer_serialize(w, &got, &got_len, &err);
                CHECK(rc == ST_OK, "%s: %s", e->d_name, rc ? err.message : "");
                CHECK(got_len == want_len && memcmp(got, want, want_len) == 0,
                      "%s (%s): output differs from the canonical file (%zu vs %zu bytes)",
                      e->d_name, stream ? "stream" : "pointer", got_len, want_len);
                CHECK_EQ_INT(st_writer_output_size(w), want_len);
                free(got);
                /* Through a real file for some cases (each costs two fsyncs). */
                if (stream && cases % 5 == 1) {
                    rc = st_writer_write(w, outp, &err);
                    CHECK(rc == ST_OK, "%s: %s", outp, rc ? err.message : "");
                    char *back;
                    size_t back_len;
                    CHECK(read_file(outp, &back, &back_len) == 0, "read back");
                    CHECK(back_len == want_len && memcmp(back, want, want_len) == 0,
                          "%s: written file differs", e->d_name);
                    free(back);
                    unlink(outp);
                }
            }
            for (size_t i = 0; i < st_tensor_count(f); i++)
                free(bufs[i]);
            free(bufs);
            free(srcs);
            st_writer_free(w);
        }
        st_close(f);
        free(want);
    }
    closedir(d);
    CHECK(cases >= 50, "only %d canonical cases", cases);
}

/* ---- random round trips through the reader ---- */

static uint64_t rng = 0x853c49e6748fea9bull;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* A random valid UTF-8 name: ASCII (control bytes and NUL included), two-,
 * three- and four-byte sequences. */
static size_t random_name(char *dst, size_t max)
{
    size_t n = 0, want = rnd() % 12;
    while (n < want && n + 4 <= max) {
        switch (rnd() % 4) {
        case 0: dst[n++] = (char)(rnd() % 0x80); break;
        case 1: dst[n++] = (char)('a' + rnd() % 26); break;
        case 2: dst[n++] = (char)0xc3; dst[n++] = (char)(0x80 + rnd() % 0x40); break;
        default:
            if (rnd() % 2) {
                memcpy(dst + n, "\xe2\x82\xac", 3);
                n += 3;
            } else {
                memcpy(dst + n, "\xf0\x9f\x98\x80", 4);
                n += 4;
            }
        }
    }
    return n;
}

static void test_roundtrip(int rounds)
{
    int bad = 0;
    for (int r = 0; r < rounds; r++) {
        st_writer *w = st_writer_new();
        enum { MAXT = 12 };
        char names[MAXT][64];
        size_t name_len[MAXT];
        st_dtype dts[MAXT];
        uint64_t shapes[MAXT][4];
        uint32_t ranks[MAXT];
        unsigned char *datas[MAXT];
        uint64_t nbs[MAXT];
        size_t nt = 0;
        size_t want_t = rnd() % MAXT;
        for (size_t tries = 0; nt < want_t && tries < 50; tries++) {
            size_t i = nt;
            name_len[i] = random_name(names[i], sizeof names[i]);
            dts[i] = (st_dtype)(rnd() % ST_DTYPE_COUNT);
            ranks[i] = (uint32_t)(rnd() % 5);
            uint64_t nel = 1;
            for (uint32_t d = 0; d < ranks[i]; d++) {
                shapes[i][d] = rnd() % 5;
                nel *= shapes[i][d];
            }
            if (nel * st_dtype_bits(dts[i]) % 8)
                continue;
            nbs[i] = nel * st_dtype_bits(dts[i]) / 8;
            datas[i] = malloc(nbs[i] + 1);
            for (uint64_t b = 0; b < nbs[i]; b++)
                datas[i][b] = (unsigned char)rnd();
            int rc = st_writer_add(w, names[i], name_len[i], dts[i], shapes[i], ranks[i],
                                   datas[i], nbs[i], NULL);
            if (rc == ST_OK) {
                nt++;
            } else {
                /* only a duplicate random name or "__metadata__" may fail */
                int dup = 0;
                for (size_t j = 0; j < i; j++)
                    dup |= name_len[j] == name_len[i] &&
                           memcmp(names[j], names[i], name_len[i]) == 0;
                if (!dup || rc != ST_E_ARG)
                    bad++;
                free(datas[i]);
            }
        }
        char mk[64], mv[64];
        size_t mkl = random_name(mk, sizeof mk), mvl = random_name(mv, sizeof mv);
        int with_meta = rnd() % 2;
        if (with_meta)
            st_writer_set_metadata(w, mk, mkl, mv, mvl, NULL);
        void *out = NULL;
        size_t len = 0;
        st_file *f = NULL;
        st_error err;
        int rc = st_writer_serialize(w, &out, &len, &err);
        if (!rc)
            rc = st_open_memory(out, len, 0, &f, &err);
        if (rc) {
            fprintf(stderr, "  round %d: %s\n", r, err.message);
            bad++;
        } else {
            bad += st_tensor_count(f) != nt;
            bad += st_metadata_present(f) != with_meta;
            if (with_meta) {
                size_t vl = 0;
                const char *v = st_metadata_get(f, mk, mkl, &vl);
                bad += !v || vl != mvl || memcmp(v, mv, mvl) != 0;
            }
            for (size_t i = 0; i < nt; i++) {
                const st_tensor *t = st_find(f, names[i], name_len[i]);
                if (!t || t->dtype != dts[i] || t->rank != ranks[i] ||
                    (ranks[i] && memcmp(t->shape, shapes[i], ranks[i] * 8) != 0) ||
                    st_tensor_nbytes(t) != nbs[i]) {
                    bad++;
                    continue;
                }
                unsigned char *back = malloc(nbs[i] + 1);
                bad += st_tensor_read(f, t, 0, back, nbs[i], NULL) != ST_OK ||
                       memcmp(back, datas[i], nbs[i]) != 0;
                free(back);
            }
            /* File order is the writer's order: dtype descending, then name. */
            for (size_t i = 1; i < st_tensor_count(f); i++) {
                const st_tensor *a = st_tensor_at(f, i - 1), *b = st_tensor_at(f, i);
                size_t m = a->name_len < b->name_len ? a->name_len : b->name_len;
                int c = memcmp(a->name, b->name, m);
                int ok = a->dtype > b->dtype ||
                         (a->dtype == b->dtype && (c < 0 || (c == 0 && a->name_len < b->name_len)));
                bad += !ok;
            }
        }
        st_close(f);
        free(out);
        for (size_t i = 0; i < nt; i++)
            free(datas[i]);
        st_writer_free(w);
    }
    CHECK_EQ_INT(bad, 0);
}

int main(void)
{
    char tmpl[] = "/tmp/st-writer-test.XXXXXX";
    char *dir = mkdtemp(tmpl);
    CHECK(dir != NULL, "mkdtemp");
    if (!dir)
        TEST_END();
    test_basic();
    test_escaping();
    test_order();
    test_padding();
    test_metadata();
    test_rejections();
    test_streaming(dir);
    test_atomic(dir);
    test_corpus(dir);
    test_roundtrip(500);
    CHECK_EQ_INT(count_entries(dir), 0);
    rmdir(dir);
    TEST_END();
}
