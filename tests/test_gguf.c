/* The GGUF reader through the library's API (tests/gguf_test.py drives the
 * CLI): a file holding every value type and five tensor types built here
 * byte by byte from ggml's docs/gguf.md, read back through every accessor;
 * element reads against values computed from the block layouts; misuse of
 * the accessors; and every truncation and many single-byte corruptions of
 * that file, each of which must open cleanly or fail with ST_E_GGUF (and
 * then read cleanly), never crash — run it under ASan to mean it. */
#include "safetensors.h"
#include "test.h"

#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

typedef struct buf {
    unsigned char *p;
    size_t len, cap;
} buf;

static void put(buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *q = realloc(b->p, cap);
        if (!q) {
            perror("realloc");
            exit(2);
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

/* GGUF is little-endian whatever the host: bytes are built one by one. */
static void put_le(buf *b, uint64_t v, unsigned bytes)
{
    unsigned char x[8];
    for (unsigned i = 0; i < bytes; i++)
        x[i] = (unsigned char)(v >> (8 * i));
    put(b, x, bytes);
}

static void put_str(buf *b, const char *s, size_t n)
{
    put_le(b, n, 8);
    put(b, s, n);
}

static void put_key(buf *b, const char *key, uint32_t type)
{
    put_str(b, key, strlen(key));
    put_le(b, type, 4);
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static void put_tensor_info(buf *b, const char *name, uint32_t n_dims, const uint64_t *ne,
                            uint32_t type, uint64_t offset)
{
    put_str(b, name, strlen(name));
    put_le(b, n_dims, 4);
    for (uint32_t d = 0; d < n_dims; d++)
        put_le(b, ne[d], 8);
    put_le(b, type, 4);
    put_le(b, offset, 8);
}

#define ALIGN 64
#define NKV 17
#define NT 5
#define LONG_LEN 5000

/* Expected element values of the tensors, in file order. */
static float want_f32[8], want_q8[64], want_q4[32], want_f16[32], want_bf16[32];

/* The test file; *header_end receives the offset of the data section. */
static void build(buf *b, uint32_t version, size_t *header_end)
{
    b->len = 0;
    put(b, "GGUF", 4);
    put_le(b, version, 4);
    put_le(b, NT, 8);
    put_le(b, NKV, 8);

    put_key(b, "general.alignment", ST_GGUF_UINT32);
    put_le(b, ALIGN, 4);
    put_key(b, "u8", ST_GGUF_UINT8);
    put_le(b, 200, 1);
    put_key(b, "i8", ST_GGUF_INT8);
    put_le(b, (uint8_t)-5, 1);
    put_key(b, "u16", ST_GGUF_UINT16);
    put_le(b, 65000, 2);
    put_key(b, "i16", ST_GGUF_INT16);
    put_le(b, (uint16_t)-300, 2);
    put_key(b, "u32", ST_GGUF_UINT32);
    put_le(b, 4000000000u, 4);
    put_key(b, "i32", ST_GGUF_INT32);
    put_le(b, (uint32_t)-70000, 4);
    put_key(b, "f32", ST_GGUF_FLOAT32);
    put_le(b, f32_bits(1.5f), 4);
    put_key(b, "b", ST_GGUF_BOOL);
    put_le(b, 1, 1);
    put_key(b, "u64", ST_GGUF_UINT64);
    put_le(b, (uint64_t)1 << 40, 8);
    put_key(b, "i64", ST_GGUF_INT64);
    put_le(b, (uint64_t)-((int64_t)1 << 40), 8);
    put_key(b, "f64", ST_GGUF_FLOAT64);
    double d = 2.25;
    uint64_t du;
    memcpy(&du, &d, 8);
    put_le(b, du, 8);
    put_key(b, "s", ST_GGUF_STRING);
    put_str(b, "hello", 5);
    put_key(b, "long", ST_GGUF_STRING);
    char *lng = malloc(LONG_LEN);
    if (!lng)
        exit(2);
    memset(lng, 'x', LONG_LEN);
    put_str(b, lng, LONG_LEN);
    free(lng);
    put_key(b, "arr", ST_GGUF_ARRAY);
    put_le(b, ST_GGUF_INT32, 4);
    put_le(b, 3, 8);
    put_le(b, 3, 4);
    put_le(b, (uint32_t)-1, 4);
    put_le(b, 7, 4);
    put_key(b, "arrf", ST_GGUF_ARRAY);
    put_le(b, ST_GGUF_FLOAT32, 4);
    put_le(b, 1, 8);
    put_le(b, f32_bits(1.0f), 4);
    put_key(b, "arrs", ST_GGUF_ARRAY);
    put_le(b, ST_GGUF_STRING, 4);
    put_le(b, 2, 8);
    put_str(b, "a", 1);
    put_str(b, "bc", 2);

    uint64_t ne_f32[2] = {4, 2}, ne_q8[1] = {64}, ne32[1] = {32};
    put_tensor_info(b, "t.f32", 2, ne_f32, ST_GGML_F32, 0);
    put_tensor_info(b, "t.q8", 1, ne_q8, ST_GGML_Q8_0, 64);
    put_tensor_info(b, "t.q4", 1, ne32, ST_GGML_Q4_0, 192);
    put_tensor_info(b, "t.f16", 1, ne32, ST_GGML_F16, 256);
    put_tensor_info(b, "t.bf16", 1, ne32, ST_GGML_BF16, 320);
    while (b->len % ALIGN)
        put_le(b, 0, 1);
    *header_end = b->len;

    /* data, each tensor at its offset, padding zero */
    size_t base = b->len;
    for (int i = 0; i < 8; i++) {
        want_f32[i] = (float)i * 0.75f - 2.0f;
        put_le(b, f32_bits(want_f32[i]), 4);
    }
    while (b->len < base + 64)
        put_le(b, 0, 1);
    for (int blk = 0; blk < 2; blk++) { /* Q8_0: fp16 d, 32 int8; y = d * q */
        put_le(b, blk ? 0x3400 : 0x3800, 2); /* 0.25, 0.5 */
        for (int j = 0; j < 32; j++) {
            int q = blk ? 100 - 7 * j : j - 16;
            put_le(b, (uint8_t)(int8_t)q, 1);
            want_q8[blk * 32 + j] = (blk ? 0.25f : 0.5f) * (float)q;
        }
    }
    while (b->len < base + 192)
        put_le(b, 0, 1);
    /* Q4_0: fp16 d, 16 bytes; y[j] = (lo - 8) d, y[j + 16] = (hi - 8) d */
    put_le(b, 0xB400, 2); /* -0.25 */
    for (int j = 0; j < 16; j++) {
        int lo = j, hi = (5 * j + 3) & 15;
        put_le(b, (unsigned)(lo | hi << 4), 1);
        want_q4[j] = (float)(lo - 8) * -0.25f;
        want_q4[j + 16] = (float)(hi - 8) * -0.25f;
    }
    while (b->len < base + 256)
        put_le(b, 0, 1);
    /* F16 and BF16: small halves, exact in both */
    static const uint16_t h[8] = {0x0000, 0x3C00, 0xC000, 0x3800, 0x7BFF, 0x0001, 0x8000, 0x4600};
    static const float hv[8] = {0.0f, 1.0f, -2.0f, 0.5f, 65504.0f, 5.9604645e-08f, -0.0f, 6.0f};
    for (int j = 0; j < 32; j++) {
        put_le(b, h[j % 8], 2);
        want_f16[j] = hv[j % 8];
    }
    for (int j = 0; j < 32; j++) {
        want_bf16[j] = (float)(j - 10) * 0.5f;
        put_le(b, f32_bits(want_bf16[j]) >> 16, 2);
    }
}

static int write_file(const char *path, const unsigned char *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(p, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static bool same_floats(const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], 4) != 0)
            return false;
    return true;
}

static void test_accessors(const char *path, uint32_t version, size_t header_end)
{
    st_gguf *g = NULL;
    st_error err = {0};
    int rc = st_gguf_open(path, &g, &err);
    CHECK(rc == ST_OK && g, "open v%u: %s", version, err.message);
    if (rc != ST_OK)
        return;
    CHECK_EQ_INT(st_gguf_version(g), version);
    CHECK_EQ_INT(st_gguf_alignment(g), ALIGN);
    CHECK_EQ_INT(st_gguf_data_offset(g), header_end);
    CHECK_EQ_INT(st_gguf_kv_count(g), NKV);
    CHECK_EQ_INT(st_gguf_tensor_count(g), NT);
    CHECK(st_gguf_kv_at(g, NKV) == NULL && st_gguf_tensor_at(g, NT) == NULL);
    CHECK(st_gguf_kv_find(g, "nope") == NULL && st_gguf_kv_find(g, "") == NULL);

    const st_gguf_kv *kv = st_gguf_kv_at(g, 0);
    CHECK(kv && !strcmp(kv->key, "general.alignment") && kv->type == ST_GGUF_UINT32 &&
          kv->u == ALIGN);
    kv = st_gguf_kv_find(g, "u8");
    CHECK(kv && kv->type == ST_GGUF_UINT8 && kv->u == 200 && kv->count == 1);
    kv = st_gguf_kv_find(g, "i8");
    CHECK(kv && kv->type == ST_GGUF_INT8 && kv->i == -5);
    kv = st_gguf_kv_find(g, "u16");
    CHECK(kv && kv->u == 65000);
    kv = st_gguf_kv_find(g, "i16");
    CHECK(kv && kv->i == -300);
    kv = st_gguf_kv_find(g, "u32");
    CHECK(kv && kv->u == 4000000000u);
    kv = st_gguf_kv_find(g, "i32");
    CHECK(kv && kv->i == -70000);
    kv = st_gguf_kv_find(g, "f32");
    CHECK(kv && kv->type == ST_GGUF_FLOAT32 && kv->f == 1.5);
    kv = st_gguf_kv_find(g, "b");
    CHECK(kv && kv->type == ST_GGUF_BOOL && kv->u == 1);
    kv = st_gguf_kv_find(g, "u64");
    CHECK(kv && kv->u == (uint64_t)1 << 40);
    kv = st_gguf_kv_find(g, "i64");
    CHECK(kv && kv->i == -((int64_t)1 << 40));
    kv = st_gguf_kv_find(g, "f64");
    CHECK(kv && kv->type == ST_GGUF_FLOAT64 && kv->f == 2.25);
    kv = st_gguf_kv_find(g, "s");
    CHECK(kv && kv->type == ST_GGUF_STRING && kv->str && kv->str_len == 5 &&
          !strcmp(kv->str, "hello"));
    kv = st_gguf_kv_find(g, "long");
    CHECK(kv && kv->type == ST_GGUF_STRING && kv->str == NULL && kv->str_len == LONG_LEN,
          "a string over 4096 bytes is known by its length only");

    const st_gguf_kv *arr = st_gguf_kv_find(g, "arr");
    CHECK(arr && arr->type == ST_GGUF_ARRAY && arr->array_type == ST_GGUF_INT32 &&
          arr->count == 3);
    int64_t v = 0;
    CHECK(arr && st_gguf_kv_array_int(g, arr, 0, &v, &err) == ST_OK && v == 3);
    CHECK(arr && st_gguf_kv_array_int(g, arr, 1, &v, &err) == ST_OK && v == -1);
    CHECK(arr && st_gguf_kv_array_int(g, arr, 2, &v, &err) == ST_OK && v == 7);
    CHECK(st_gguf_kv_array_int(g, arr, 3, &v, &err) == ST_E_ARG, "past the array's end");
    CHECK(st_gguf_kv_array_int(g, arr, UINT64_MAX, &v, &err) == ST_E_ARG);
    CHECK(st_gguf_kv_array_int(g, st_gguf_kv_find(g, "arrf"), 0, &v, &err) == ST_E_ARG,
          "an array of floats is not read as integers");
    CHECK(st_gguf_kv_array_int(g, st_gguf_kv_find(g, "arrs"), 0, &v, &err) == ST_E_ARG,
          "nor one of strings");
    CHECK(st_gguf_kv_array_int(g, st_gguf_kv_find(g, "u32"), 0, &v, &err) == ST_E_ARG,
          "nor a scalar");
    CHECK(st_gguf_kv_array_int(g, NULL, 0, &v, &err) == ST_E_ARG);
    kv = st_gguf_kv_find(g, "arrs");
    CHECK(kv && kv->array_type == ST_GGUF_STRING && kv->count == 2);

    static const struct {
        const char *name;
        int type;
        uint32_t n_dims;
        uint64_t ne0, ne1, offset, size;
        const float *want;
    } T[NT] = {
        {"t.f32", ST_GGML_F32, 2, 4, 2, 0, 32, want_f32},
        {"t.q8", ST_GGML_Q8_0, 1, 64, 1, 64, 68, want_q8},
        {"t.q4", ST_GGML_Q4_0, 1, 32, 1, 192, 18, want_q4},
        {"t.f16", ST_GGML_F16, 1, 32, 1, 256, 64, want_f16},
        {"t.bf16", ST_GGML_BF16, 1, 32, 1, 320, 64, want_bf16},
    };
    float out[64];
    unsigned char scratch[256];
    for (size_t i = 0; i < NT; i++) {
        const st_gguf_tensor *t = st_gguf_tensor_at(g, i);
        CHECK(t && !strcmp(t->name, T[i].name) && t->name_len == strlen(T[i].name), "%zu", i);
        if (!t)
            continue;
        CHECK(t->type == T[i].type && t->n_dims == T[i].n_dims, "%s", T[i].name);
        CHECK(t->ne[0] == T[i].ne0 && (T[i].n_dims < 2 || t->ne[1] == T[i].ne1), "%s", T[i].name);
        CHECK_EQ_INT(t->nelements, T[i].ne0 * T[i].ne1);
        CHECK_EQ_INT(t->offset, T[i].offset);
        CHECK_EQ_INT(t->size, T[i].size);
        memset(out, 0x55, sizeof out);
        rc = st_gguf_tensor_read_f32(g, t, 0, out, t->nelements, scratch, sizeof scratch, &err);
        CHECK(rc == ST_OK && same_floats(out, T[i].want, (size_t)t->nelements),
              "%s read: %s", T[i].name, err.message);
    }

    /* a part of a tensor: its second Q8_0 block alone */
    const st_gguf_tensor *q8 = st_gguf_tensor_at(g, 1);
    rc = st_gguf_tensor_read_f32(g, q8, 32, out, 32, scratch, 34, &err);
    CHECK(rc == ST_OK && same_floats(out, want_q8 + 32, 32), "second block: %s", err.message);
    CHECK(st_gguf_tensor_read_f32(g, q8, 16, out, 32, scratch, sizeof scratch, &err) ==
              ST_E_RANGE, "a start inside a block");
    CHECK(st_gguf_tensor_read_f32(g, q8, 0, out, 48, scratch, sizeof scratch, &err) ==
              ST_E_RANGE, "a count that is not whole blocks");
    CHECK(st_gguf_tensor_read_f32(g, q8, 32, out, 64, scratch, sizeof scratch, &err) ==
              ST_E_RANGE, "past the tensor's end");
    CHECK(st_gguf_tensor_read_f32(g, q8, UINT64_MAX - 31, out, 64, scratch, sizeof scratch,
                                  &err) == ST_E_RANGE, "first + n overflowing");
    CHECK(st_gguf_tensor_read_f32(g, q8, 0, out, 64, scratch, 67, &err) == ST_E_ARG,
          "scratch one byte short");
    CHECK(strstr(err.message, "68") != NULL, "the bytes needed are named: %s", err.message);
    st_gguf_tensor copy = *q8;
    CHECK(st_gguf_tensor_read_f32(g, &copy, 0, out, 64, scratch, sizeof scratch, &err) ==
              ST_E_ARG, "a tensor that is not this file's");
    CHECK(st_gguf_tensor_read_f32(g, q8, 0, NULL, 64, scratch, sizeof scratch, &err) ==
              ST_E_ARG);
    st_gguf_close(g);
    st_gguf_close(NULL);
}

/* A GGUF that opened: what the reader promises about it holds, and every
 * tensor reads to the end or fails with a code, never out of bounds. */
static bool opened_sane(st_gguf *g, uint64_t file_size, unsigned char *scratch,
                        size_t scratch_len, float *out)
{
    uint32_t al = st_gguf_alignment(g);
    uint64_t data = st_gguf_data_offset(g);
    if (!al || (al & (al - 1)) || data > file_size || data % al)
        return false;
    for (size_t i = 0; i < st_gguf_tensor_count(g); i++) {
        const st_gguf_tensor *t = st_gguf_tensor_at(g, i);
        if (!t || t->n_dims < 1 || t->n_dims > 4 || t->offset % al ||
            t->size > file_size - data || t->offset > file_size - data - t->size)
            return false;
        uint32_t blk = st_ggml_block_elements(t->type);
        if (!blk || t->nelements % blk || t->nelements / blk * st_ggml_block_bytes(t->type) !=
                                              t->size)
            return false;
        /* read a bounded number of elements (a flipped dimension may make
         * a tensor large, never larger than the file) */
        uint64_t n = t->nelements < 256 ? t->nelements : 256;
        n -= n % blk;
        st_error e = {0};
        int rc = st_gguf_tensor_read_f32(g, t, 0, out, n, scratch, scratch_len, &e);
        if (rc != ST_OK && rc != ST_E_UNSUPPORTED)
            return false;
    }
    for (size_t i = 0; i < st_gguf_kv_count(g); i++) {
        const st_gguf_kv *kv = st_gguf_kv_at(g, i);
        if (!kv || !kv->key || strlen(kv->key) != kv->key_len)
            return false;
        if (kv->type == ST_GGUF_ARRAY && kv->count) {
            int64_t v;
            st_error e = {0};
            int rc = st_gguf_kv_array_int(g, kv, kv->count - 1, &v, &e);
            if (rc != ST_OK && rc != ST_E_ARG)
                return false;
        }
    }
    return true;
}

/* Small files crafted for one rule each: the refusals carry ST_E_GGUF, the
 * file's name and a byte offset; the edge cases gguf.md allows open. */
typedef struct crafted {
    const char *what;
    int valid;
    uint64_t nt, nkv;
    void (*body)(buf *b);
} crafted;

static void kv_u8(buf *b, const char *key)
{
    put_key(b, key, ST_GGUF_UINT8);
    put_le(b, 1, 1);
}

static void c_str_array_huge(buf *b)
{
    put_key(b, "k", ST_GGUF_ARRAY);
    put_le(b, ST_GGUF_STRING, 4);
    put_le(b, (uint64_t)1 << 28, 8);
}
static void c_str_len_max(buf *b)
{
    put_key(b, "k", ST_GGUF_STRING);
    put_le(b, UINT64_MAX, 8);
}
static void c_key_len_max(buf *b)
{
    put_le(b, UINT64_MAX, 8);
    put_le(b, 0, 8);
}
static void c_nested_array(buf *b)
{
    put_key(b, "k", ST_GGUF_ARRAY);
    put_le(b, ST_GGUF_ARRAY, 4);
    put_le(b, 1, 8);
}
static void c_empty_key(buf *b)
{
    kv_u8(b, "");
}
static void c_key_twice(buf *b)
{
    kv_u8(b, "k");
    kv_u8(b, "k");
}
static void c_key_twice_far(buf *b)
{
    char key[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "key.%d", (i * 7919) % 5000);
        kv_u8(b, key);
    }
    kv_u8(b, "key.1234"); /* pair 5001: past any window of recent keys */
}
static void c_align(buf *b, uint32_t type, uint64_t v, unsigned bytes)
{
    put_key(b, "general.alignment", type);
    put_le(b, v, bytes);
}
static void c_align0(buf *b)
{
    c_align(b, ST_GGUF_UINT32, 0, 4);
}
static void c_align_big(buf *b)
{
    c_align(b, ST_GGUF_UINT32, (uint64_t)1 << 31, 4);
}
static void c_align_u64(buf *b)
{
    c_align(b, ST_GGUF_UINT64, 32, 8);
}
static void c_pad_data(buf *b, size_t bytes)
{
    while (b->len % 32)
        put_le(b, 0xAA, 1); /* padding need not be zeros */
    for (size_t i = 0; i < bytes; i++)
        put_le(b, 0, 1);
}
static void one_tensor(buf *b, const char *name, uint32_t n_dims, uint64_t ne0, uint64_t ne1,
                       uint32_t type, uint64_t off)
{
    uint64_t ne[4] = {ne0, ne1, 1, 1};
    if (n_dims > 4) { /* the count alone is what is tested */
        put_str(b, name, strlen(name));
        put_le(b, n_dims, 4);
        for (int d = 0; d < 4; d++)
            put_le(b, 1, 8);
        put_le(b, type, 4);
        put_le(b, off, 8);
        return;
    }
    put_tensor_info(b, name, n_dims, ne, type, off);
}
static void c_ndims_max(buf *b)
{
    one_tensor(b, "a", UINT32_MAX, 0, 0, ST_GGML_F32, 0);
    c_pad_data(b, 128);
}
static void c_ndims_5(buf *b)
{
    one_tensor(b, "a", 5, 0, 0, ST_GGML_F32, 0);
    c_pad_data(b, 128);
}
static void c_offset_max(buf *b)
{
    one_tensor(b, "a", 1, 8, 1, ST_GGML_F32, UINT64_MAX - 31);
    c_pad_data(b, 128);
}
static void c_size_overflow(buf *b)
{
    one_tensor(b, "a", 1, (uint64_t)1 << 62, 1, ST_GGML_F32, 0);
    c_pad_data(b, 128);
}
static void c_dims_overflow(buf *b)
{
    one_tensor(b, "a", 2, (uint64_t)1 << 33, (uint64_t)1 << 33, ST_GGML_F32, 0);
    c_pad_data(b, 128);
}
static void c_partial_block(buf *b)
{
    one_tensor(b, "a", 1, 48, 1, ST_GGML_Q8_0, 0);
    c_pad_data(b, 128);
}
static void c_unknown_type(buf *b)
{
    one_tensor(b, "a", 1, 32, 1, 1000, 0);
    c_pad_data(b, 128);
}
static void c_empty_name(buf *b)
{
    one_tensor(b, "", 1, 8, 1, ST_GGML_F32, 0);
    c_pad_data(b, 128);
}
static void c_misaligned(buf *b)
{
    one_tensor(b, "a", 1, 8, 1, ST_GGML_F32, 16);
    c_pad_data(b, 128);
}
static void c_overlap(buf *b)
{
    one_tensor(b, "a", 1, 16, 1, ST_GGML_F32, 32);
    one_tensor(b, "b", 1, 16, 1, ST_GGML_F32, 0);
    c_pad_data(b, 128);
}
static void c_past_end(buf *b)
{
    one_tensor(b, "a", 1, 64, 1, ST_GGML_F32, 0);
    c_pad_data(b, 255);
}
static void c_zero_dim(buf *b)
{
    one_tensor(b, "a", 2, 0, 4, ST_GGML_F32, 0);
    one_tensor(b, "b", 1, 0, 1, ST_GGML_Q4_K, 0);
    c_pad_data(b, 0);
}
static void c_exact_end(buf *b)
{
    one_tensor(b, "a", 2, 64, 2, ST_GGML_F32, 0);
    one_tensor(b, "b", 1, 256, 1, ST_GGML_Q4_K, 512);
    c_pad_data(b, 512 + 144);
}

static void test_crafted(const char *dir)
{
    static const crafted C[] = {
        {"an array of strings longer than the file", 0, 0, 1, c_str_array_huge},
        {"a string of 2^64-1 bytes", 0, 0, 1, c_str_len_max},
        {"a key of 2^64-1 bytes", 0, 0, 1, c_key_len_max},
        {"an array of arrays", 0, 0, 1, c_nested_array},
        {"an empty key", 0, 0, 1, c_empty_key},
        {"a key twice", 0, 0, 2, c_key_twice},
        {"a key twice, 5000 pairs apart", 0, 0, 5001, c_key_twice_far},
        {"alignment 0", 0, 0, 1, c_align0},
        {"alignment 2^31", 0, 0, 1, c_align_big},
        {"alignment as UINT64", 0, 0, 1, c_align_u64},
        {"2^32-1 dimensions", 0, 1, 0, c_ndims_max},
        {"5 dimensions", 0, 1, 0, c_ndims_5},
        {"an offset of 2^64-32", 0, 1, 0, c_offset_max},
        {"a size overflowing", 0, 1, 0, c_size_overflow},
        {"dimensions overflowing", 0, 1, 0, c_dims_overflow},
        {"a row not filling its blocks", 0, 1, 0, c_partial_block},
        {"an unknown tensor type", 0, 1, 0, c_unknown_type},
        {"an empty tensor name", 0, 1, 0, c_empty_name},
        {"a misaligned offset", 0, 1, 0, c_misaligned},
        {"overlapping tensors", 0, 2, 0, c_overlap},
        {"data one byte short", 0, 1, 0, c_past_end},
        {"zero-element tensors", 1, 2, 0, c_zero_dim},
        {"data ending at the file's end", 1, 2, 0, c_exact_end},
    };
    char path[256];
    snprintf(path, sizeof path, "%s/crafted.gguf", dir);
    buf b = {0};
    for (size_t i = 0; i < sizeof C / sizeof C[0]; i++) {
        b.len = 0;
        put(&b, "GGUF", 4);
        put_le(&b, 3, 4);
        put_le(&b, C[i].nt, 8);
        put_le(&b, C[i].nkv, 8);
        C[i].body(&b);
        if (write_file(path, b.p, b.len) != 0)
            exit(2);
        st_gguf *g = NULL;
        st_error err = {0};
        int rc = st_gguf_open(path, &g, &err);
        if (C[i].valid) {
            CHECK(rc == ST_OK && g && st_gguf_tensor_count(g) == C[i].nt, "%s: %s", C[i].what,
                  err.message);
        } else {
            CHECK(rc == ST_E_GGUF && !g && strstr(err.message, path) &&
                      strstr(err.message, " byte ") && err.offset != ST_NO_OFFSET,
                  "%s: rc %d offset %llu %s", C[i].what, rc, (unsigned long long)err.offset,
                  err.message);
        }
        st_gguf_close(g);
    }
    unlink(path);
    free(b.p);
}

static void test_corruptions(const char *path, const buf *good, size_t header_end)
{
    unsigned char *m = malloc(good->len);
    float *out = malloc(256 * sizeof(float));
    size_t scratch_len = 256 * 8; /* F64 is the widest type per element */
    unsigned char *scratch = malloc(scratch_len);
    if (!m || !out || !scratch)
        exit(2);

    /* every truncation: the tensor data runs past the end or the header
     * does; ST_E_GGUF with the file's name, never anything else */
    int trunc_bad = 0, msg_bad = 0;
    for (size_t len = 0; len < good->len; len++) {
        if (write_file(path, good->p, len) != 0)
            exit(2);
        st_gguf *g = NULL;
        st_error err = {0};
        int rc = st_gguf_open(path, &g, &err);
        if (rc != ST_E_GGUF || g) {
            trunc_bad++;
            if (trunc_bad < 5)
                fprintf(stderr, "truncated to %zu: rc %d %s\n", len, rc, err.message);
            st_gguf_close(g);
        } else if (!strstr(err.message, path)) {
            msg_bad++;
        }
    }
    CHECK(trunc_bad == 0, "%d truncations not refused as GGUF errors", trunc_bad);
    CHECK(msg_bad == 0, "%d truncation messages do not name the file", msg_bad);

    /* single-byte corruptions of the header (the long string's body only
     * sampled: its bytes are all alike) */
    static const int how[] = {0x00, 0xFF, 0x80, 0x01, 0x7F, -1 /* x ^ 1 */, -2 /* x ^ 0x40 */};
    int unclean = 0, opened = 0, refused = 0;
    for (size_t pos = 0; pos < header_end; pos++) {
        if (pos > 0 && pos + 1 < header_end && good->p[pos - 1] == 'x' && good->p[pos] == 'x' &&
            good->p[pos + 1] == 'x' && pos % 97)
            continue;
        for (size_t h = 0; h < sizeof how / sizeof how[0]; h++) {
            memcpy(m, good->p, good->len);
            m[pos] = how[h] >= 0 ? (unsigned char)how[h]
                                 : (unsigned char)(m[pos] ^ (how[h] == -1 ? 0x01 : 0x40));
            if (!memcmp(m, good->p, good->len))
                continue;
            if (write_file(path, m, good->len) != 0)
                exit(2);
            st_gguf *g = NULL;
            st_error err = {0};
            int rc = st_gguf_open(path, &g, &err);
            if (rc == ST_OK) {
                opened++;
                if (!opened_sane(g, good->len, scratch, scratch_len, out)) {
                    unclean++;
                    fprintf(stderr, "byte %zu -> %02x: opened but not sane\n", pos, m[pos]);
                }
                st_gguf_close(g);
            } else {
                refused++;
                if (rc != ST_E_GGUF || g || !err.message[0]) {
                    unclean++;
                    fprintf(stderr, "byte %zu -> %02x: rc %d %s\n", pos, m[pos], rc,
                            err.message);
                }
            }
        }
    }
    CHECK(unclean == 0, "%d corruptions handled uncleanly", unclean);
    CHECK(opened > 0 && refused > 0, "both outcomes seen: %d opened, %d refused", opened, refused);
    printf("# %d corrupted headers opened (still consistent), %d refused\n", opened, refused);

    /* a count far past what the file could hold is refused before any
     * allocation sized by it */
    static const size_t count_at[] = {8, 16};
    for (size_t k = 0; k < 2; k++) {
        memcpy(m, good->p, good->len);
        for (int i = 0; i < 8; i++)
            m[count_at[k] + (size_t)i] = i == 7 ? 0x7F : 0xFF;
        if (write_file(path, m, good->len) != 0)
            exit(2);
        st_gguf *g = NULL;
        st_error err = {0};
        CHECK(st_gguf_open(path, &g, &err) == ST_E_GGUF && !g, "huge count: %s", err.message);
    }
    free(m);
    free(out);
    free(scratch);
}

int main(void)
{
    char dir[] = "/tmp/test_gguf.XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 2;
    }
    char path[sizeof dir + 32];
    snprintf(path, sizeof path, "%s/t.gguf", dir);

    buf b = {0};
    size_t header_end = 0;
    for (uint32_t version = 2; version <= 3; version++) {
        build(&b, version, &header_end);
        CHECK(write_file(path, b.p, b.len) == 0);
        test_accessors(path, version, header_end);
    }
    CHECK_EQ_INT(b.len, header_end + 384);

    st_gguf *g = NULL;
    st_error err = {0};
    snprintf(path, sizeof path, "%s/missing.gguf", dir);
    CHECK(st_gguf_open(path, &g, &err) != ST_OK && !g && strstr(err.message, "missing.gguf"),
          "a missing file: %s", err.message);
    CHECK(st_gguf_open(NULL, &g, &err) != ST_OK && !g);

    test_crafted(dir);

    snprintf(path, sizeof path, "%s/mutated.gguf", dir);
    build(&b, 3, &header_end);
    test_corruptions(path, &b, header_end);

    unlink(path);
    rmdir(dir);
    free(b.p);
    TEST_END();
}
