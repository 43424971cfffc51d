/* Property tests: random tensors and metadata (all 22 dtypes, ranks 0-6
 * with zero dimensions, names and strings with multibyte UTF-8, quotes,
 * backslashes, control characters, NUL, empty and long ones) are written
 * with st_writer_serialize, st_writer_write_to and st_writer_write, and
 * must
 *   - equal, byte for byte, an independent model of the reference writer's
 *     canonical layout built here (serde_json escaping, descending dtype
 *     then name bytes, metadata first with sorted keys, space padding);
 *   - read back (mmap, pread, memory) to the same names, dtypes, shapes,
 *     bytes and metadata;
 *   - re-serialize from what the reader returns to identical bytes.
 * Also: every canonical/ file of the corpus is what the writer makes of
 * the tensors the reader finds in the corresponding files/ case.
 * The PRNG seed is printed; ST_SEED overrides it (ST_ROUNDS the count). */
#include "safetensors.h"
#include "test.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_SEED 0x5afe7e4520261126ull
#define DEFAULT_ROUNDS 300
#define MAX_TENSORS 12
#define MAX_META 5

/* ---- PRNG (splitmix64) --------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint32_t below(uint32_t n)
{
    return (uint32_t)(rnd() % n);
}

/* ---- random strings ------------------------------------------------------- */

typedef struct {
    char *p;
    size_t len, cap;
} str;

static void s_put(str *s, const void *b, size_t n)
{
    if (s->len + n + 1 > s->cap) {
        s->cap = (s->len + n + 1) * 2;
        s->p = realloc(s->p, s->cap);
    }
    memcpy(s->p + s->len, b, n);
    s->len += n;
    s->p[s->len] = 0;
}

static void s_byte(str *s, unsigned c)
{
    char b = (char)c;
    s_put(s, &b, 1);
}

static void s_codepoint(str *s, uint32_t cp)
{
    unsigned char o[4];
    size_t n;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        o[0] = (unsigned char)(0xc0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        o[0] = (unsigned char)(0xe0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        o[0] = (unsigned char)(0xf0 | (cp >> 18));
        o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
        o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        o[3] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    s_put(s, o, n);
}

/* One random piece of a string, of a random kind. */
static void s_piece(str *s)
{
    static const char *const words[] = {"model", ".", "layers", "weight", "bias", "lora_up",
                                        "__metadata__", "dtype", "shape", "data_offsets", "/"};
    switch (below(9)) {
    case 0: /* printable ASCII */
    case 1: {
        uint32_t n = 1 + below(8);
        for (uint32_t i = 0; i < n; i++)
            s_byte(s, 0x20 + below(95));
        break;
    }
    case 2: /* a word */
    {
        const char *w = words[below(sizeof words / sizeof words[0])];
        s_put(s, w, strlen(w));
        break;
    }
    case 3: /* multibyte UTF-8: 2, 3 and 4 bytes, no surrogates */
    {
        uint32_t n = 1 + below(4);
        for (uint32_t i = 0; i < n; i++) {
            uint32_t cp;
            switch (below(3)) {
            case 0: cp = 0x80 + below(0x800 - 0x80); break;
            case 1:
                cp = 0x800 + below(0x10000 - 0x800);
                if (cp >= 0xd800 && cp < 0xe000)
                    cp = 0xe000 + (cp & 0x7ff);
                break;
            default: cp = 0x10000 + below(0x110000 - 0x10000); break;
            }
            s_codepoint(s, cp);
        }
        break;
    }
    case 4: /* quotes and backslashes */
    {
        static const char q[] = "\"\\\"\\/'";
        uint32_t n = 1 + below(4);
        for (uint32_t i = 0; i < n; i++)
            s_byte(s, (unsigned char)q[below(sizeof q - 1)]);
        break;
    }
    case 5: /* control characters, DEL */
    {
        uint32_t n = 1 + below(3);
        for (uint32_t i = 0; i < n; i++)
            s_byte(s, below(4) ? below(0x20) : 0x7f);
        break;
    }
    case 6: /* NUL */
        s_byte(s, 0);
        break;
    case 7: /* long */
    {
        uint32_t n = 200 + below(800);
        for (uint32_t i = 0; i < n; i++)
            s_byte(s, 'a' + below(26));
        break;
    }
    default: /* digits */
        s_byte(s, '0' + below(10));
        break;
    }
}

static str random_string(void)
{
    str s = {0};
    s_put(&s, "", 0);
    if (below(10) == 0)
        return s; /* empty */
    uint32_t pieces = 1 + below(4);
    for (uint32_t i = 0; i < pieces; i++)
        s_piece(&s);
    return s;
}

/* ---- a random file -------------------------------------------------------- */

typedef struct {
    str name;
    st_dtype dtype;
    uint32_t rank;
    uint64_t shape[6];
    uint64_t nelements, nbytes;
    unsigned char *data;
} gtensor;

typedef struct {
    str key, value;
} gmeta;

typedef struct {
    gtensor t[MAX_TENSORS];
    size_t nt;
    gmeta m[MAX_META];
    size_t nm;
    int meta_present; /* st_writer_set_metadata_present(1) with no pairs */
} gfile;

static int bytes_eq(const char *a, size_t al, const char *b, size_t bl)
{
    return al == bl && (al == 0 || memcmp(a, b, al) == 0);
}

static int name_cmp(const char *a, size_t al, const char *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return al < bl ? -1 : al > bl ? 1 : 0;
}

static void gen_file(gfile *g)
{
    memset(g, 0, sizeof *g);
    g->nt = below(MAX_TENSORS + 1);
    for (size_t i = 0; i < g->nt; i++) {
        gtensor *t = &g->t[i];
        for (;;) {
            t->name = random_string();
            int clash = bytes_eq(t->name.p, t->name.len, "__metadata__", 12);
            for (size_t j = 0; j < i && !clash; j++)
                clash = bytes_eq(t->name.p, t->name.len, g->t[j].name.p, g->t[j].name.len);
            if (!clash)
                break;
            free(t->name.p);
        }
        t->dtype = (st_dtype)below(ST_DTYPE_COUNT);
        t->rank = below(7);
        t->nelements = 1;
        for (uint32_t d = 0; d < t->rank; d++) {
            uint32_t r = below(20);
            t->shape[d] = r == 0 ? 0 : r < 17 ? 1 + below(4) : 1 + below(t->rank <= 2 ? 300 : 8);
            t->nelements *= t->shape[d];
        }
        /* sub-byte dtypes need whole bytes: F4 an even count, F6 a
         * multiple of 4 */
        unsigned bits = st_dtype_bits(t->dtype);
        if (t->nelements * bits % 8) {
            uint64_t k = bits == 4 ? 2 : 4;
            if (t->rank == 0) {
                t->rank = 1;
                t->shape[0] = k;
            } else {
                t->shape[t->rank - 1] *= k;
            }
            t->nelements *= k;
        }
        t->nbytes = t->nelements * bits / 8;
        t->data = malloc(t->nbytes ? t->nbytes : 1);
        for (uint64_t b = 0; b < t->nbytes; b++)
            t->data[b] = (unsigned char)rnd();
    }
    g->nm = below(MAX_META + 1);
    for (size_t i = 0; i < g->nm; i++) {
        gmeta *m = &g->m[i];
        for (;;) {
            m->key = random_string();
            int clash = 0;
            for (size_t j = 0; j < i && !clash; j++)
                clash = bytes_eq(m->key.p, m->key.len, g->m[j].key.p, g->m[j].key.len);
            if (!clash)
                break;
            free(m->key.p);
        }
        m->value = random_string();
    }
    g->meta_present = g->nm == 0 && below(3) == 0;
}

static void free_file(gfile *g)
{
    for (size_t i = 0; i < g->nt; i++) {
        free(g->t[i].name.p);
        free(g->t[i].data);
    }
    for (size_t i = 0; i < g->nm; i++) {
        free(g->m[i].key.p);
        free(g->m[i].value.p);
    }
}

/* ---- the model of the canonical layout ------------------------------------ */

static void json_str(str *o, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    s_byte(o, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': s_put(o, "\\\"", 2); break;
        case '\\': s_put(o, "\\\\", 2); break;
        case '\b': s_put(o, "\\b", 2); break;
        case '\f': s_put(o, "\\f", 2); break;
        case '\n': s_put(o, "\\n", 2); break;
        case '\r': s_put(o, "\\r", 2); break;
        case '\t': s_put(o, "\\t", 2); break;
        default:
            if (c < 0x20) {
                char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                s_put(o, e, 6);
            } else {
                s_byte(o, c);
            }
        }
    }
    s_byte(o, '"');
}

static const gfile *sort_ctx;

static int cmp_tensor_idx(const void *a, const void *b)
{
    const gtensor *x = &sort_ctx->t[*(const size_t *)a], *y = &sort_ctx->t[*(const size_t *)b];
    if (x->dtype != y->dtype)
        return x->dtype > y->dtype ? -1 : 1;
    return name_cmp(x->name.p, x->name.len, y->name.p, y->name.len);
}

static int cmp_meta_idx(const void *a, const void *b)
{
    const gmeta *x = &sort_ctx->m[*(const size_t *)a], *y = &sort_ctx->m[*(const size_t *)b];
    return name_cmp(x->key.p, x->key.len, y->key.p, y->key.len);
}

/* The file the reference writer would produce; order[] receives the
 * tensors' canonical order. */
static str model_file(const gfile *g, size_t *order)
{
    size_t morder[MAX_META];
    for (size_t i = 0; i < g->nt; i++)
        order[i] = i;
    for (size_t i = 0; i < g->nm; i++)
        morder[i] = i;
    sort_ctx = g;
    qsort(order, g->nt, sizeof *order, cmp_tensor_idx);
    qsort(morder, g->nm, sizeof *morder, cmp_meta_idx);
    str h = {0};
    s_byte(&h, '{');
    int first = 1;
    if (g->nm || g->meta_present) {
        s_put(&h, "\"__metadata__\":{", 16);
        for (size_t i = 0; i < g->nm; i++) {
            if (i)
                s_byte(&h, ',');
            json_str(&h, g->m[morder[i]].key.p, g->m[morder[i]].key.len);
            s_byte(&h, ':');
            json_str(&h, g->m[morder[i]].value.p, g->m[morder[i]].value.len);
        }
        s_byte(&h, '}');
        first = 0;
    }
    uint64_t off = 0;
    char num[64];
    for (size_t i = 0; i < g->nt; i++) {
        const gtensor *t = &g->t[order[i]];
        if (!first)
            s_byte(&h, ',');
        first = 0;
        json_str(&h, t->name.p, t->name.len);
        s_put(&h, ":{\"dtype\":\"", 11);
        s_put(&h, st_dtype_name(t->dtype), strlen(st_dtype_name(t->dtype)));
        s_put(&h, "\",\"shape\":[", 11);
        for (uint32_t d = 0; d < t->rank; d++) {
            int n = snprintf(num, sizeof num, "%s%llu", d ? "," : "",
                             (unsigned long long)t->shape[d]);
            s_put(&h, num, (size_t)n);
        }
        int n = snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}",
                         (unsigned long long)off, (unsigned long long)(off + t->nbytes));
        s_put(&h, num, (size_t)n);
        off += t->nbytes;
    }
    s_byte(&h, '}');
    while (h.len % 8)
        s_byte(&h, ' ');
    str f = {0};
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
    s_put(&f, len8, 8);
    s_put(&f, h.p, h.len);
    for (size_t i = 0; i < g->nt; i++)
        if (g->t[order[i]].nbytes)
            s_put(&f, g->t[order[i]].data, g->t[order[i]].nbytes);
    free(h.p);
    return f;
}

/* ---- writing and reading ------------------------------------------------------ */

/* st_writer_add_stream source: a generated tensor's bytes. */
static int gt_read(void *ctx, uint64_t offset, void *buf, size_t len)
{
    const gtensor *t = ctx;
    if (offset > t->nbytes || len > t->nbytes - offset)
        return 1;
    memcpy(buf, t->data + offset, len);
    return 0;
}

static int failing_read(void *ctx, uint64_t offset, void *buf, size_t len)
{
    (void)ctx;
    (void)offset;
    memset(buf, 0, len);
    return 1;
}

static st_writer *make_writer(const gfile *g, const char *label)
{
    st_writer *w = st_writer_new();
    CHECK(w != NULL, "%s: st_writer_new", label);
    if (!w)
        return NULL;
    /* add in a random order: the output must not depend on it */
    size_t perm[MAX_TENSORS];
    for (size_t i = 0; i < g->nt; i++)
        perm[i] = i;
    for (size_t i = g->nt; i > 1; i--) {
        size_t j = below((uint32_t)i), tmp = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = tmp;
    }
    for (size_t k = 0; k < g->nt; k++) {
        const gtensor *t = &g->t[perm[k]];
        st_error err;
        int rc;
        /* half of the tensors streamed through a callback */
        if (below(2))
            rc = st_writer_add(w, t->name.p, t->name.len, t->dtype, t->shape, t->rank, t->data,
                               t->nbytes, &err);
        else
            rc = st_writer_add_stream(w, t->name.p, t->name.len, t->dtype, t->shape, t->rank,
                                      t->nbytes, gt_read, (void *)(uintptr_t)t, &err);
        CHECK(rc == ST_OK, "%s: st_writer_add #%zu: %s", label, perm[k], rc ? err.message : "");
    }
    for (size_t i = 0; i < g->nm; i++) {
        st_error err;
        /* first a throwaway value for some keys: a later set replaces it */
        if (below(4) == 0)
            st_writer_set_metadata(w, g->m[i].key.p, g->m[i].key.len, "x", 1, &err);
        int rc = st_writer_set_metadata(w, g->m[i].key.p, g->m[i].key.len, g->m[i].value.p,
                                        g->m[i].value.len, &err);
        CHECK(rc == ST_OK, "%s: st_writer_set_metadata #%zu: %s", label, i,
              rc ? err.message : "");
    }
    if (g->meta_present)
        st_writer_set_metadata_present(w, 1);
    return w;
}

static int sink(void *ctx, const void *buf, size_t len)
{
    s_put(ctx, buf, len);
    return 0;
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        fclose(f);
        return NULL;
    }
    unsigned char *b = malloc((size_t)st.st_size + 1);
    *len = fread(b, 1, (size_t)st.st_size, f);
    fclose(f);
    return b;
}

enum { MODE_MMAP, MODE_PREAD, MODE_MEMORY, MODE_COUNT };
static const char *const mode_name[MODE_COUNT] = {"mmap", "pread", "memory"};

static int open_mode(int mode, const char *path, const void *bytes, size_t len, st_file **f,
                     st_error *err)
{
    switch (mode) {
    case MODE_MMAP: return st_open(path, ST_OPEN_MMAP, f, err);
    case MODE_PREAD: return st_open(path, ST_OPEN_PREAD, f, err);
    default: return st_open_memory(bytes, len, 0, f, err);
    }
}

/* A writer holding what the reader returns; *bufs receives allocations
 * to free after the write (pread mode copies tensor bytes). */
static st_writer *writer_from_reader(st_file *f, const char *label, void ***bufs)
{
    st_writer *w = st_writer_new();
    size_t n = st_tensor_count(f);
    *bufs = calloc(n + 1, sizeof **bufs);
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_tensor_at(f, i);
        uint64_t nb = st_tensor_nbytes(t);
        const void *data = st_tensor_data(f, t);
        st_error err;
        if (!data) {
            void *b = malloc(nb ? nb : 1);
            CHECK(st_tensor_read(f, t, 0, b, (size_t)nb, &err) == ST_OK, "%s: read back", label);
            (*bufs)[i] = b;
            data = b;
        }
        int rc = st_writer_add(w, t->name, t->name_len, t->dtype, t->shape, t->rank, data, nb,
                               &err);
        CHECK(rc == ST_OK, "%s: re-add tensor %zu: %s", label, i, rc ? err.message : "");
    }
    for (size_t i = 0; i < st_metadata_count(f); i++) {
        const char *k, *v;
        size_t kl, vl;
        st_error err;
        CHECK(st_metadata_at(f, i, &k, &kl, &v, &vl) == ST_OK, "%s: metadata_at", label);
        CHECK(st_writer_set_metadata(w, k, kl, v, vl, &err) == ST_OK, "%s: re-set metadata",
              label);
    }
    st_writer_set_metadata_present(w, st_metadata_present(f));
    return w;
}

static void free_bufs(void **bufs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(bufs[i]);
    free(bufs);
}

/* The reader must return exactly the generated file. */
static void check_read(const gfile *g, const size_t *order, st_file *f, const char *label)
{
    CHECK(st_tensor_count(f) == g->nt, "%s: %zu tensors, wrote %zu", label, st_tensor_count(f),
          g->nt);
    uint64_t off = 0;
    for (size_t i = 0; i < g->nt; i++) {
        const gtensor *e = &g->t[order[i]];
        const st_tensor *t = st_find(f, e->name.p, e->name.len);
        CHECK(t != NULL, "%s: tensor %zu (%zu-byte name) not found", label, order[i],
              e->name.len);
        if (!t)
            continue;
        CHECK(bytes_eq(t->name, t->name_len, e->name.p, e->name.len), "%s: name", label);
        CHECK(t->dtype == e->dtype, "%s: dtype %d, wrote %d", label, (int)t->dtype,
              (int)e->dtype);
        int shape_ok = t->rank == e->rank;
        for (uint32_t d = 0; shape_ok && d < e->rank; d++)
            shape_ok = t->shape[d] == e->shape[d];
        CHECK(shape_ok, "%s: tensor %zu shape", label, order[i]);
        CHECK(t->nelements == e->nelements, "%s: nelements", label);
        /* canonical order fixes every tensor's offsets */
        CHECK(t->begin == off && t->end == off + e->nbytes,
              "%s: tensor %zu at [%llu,%llu), canonical [%llu,%llu)", label, order[i],
              (unsigned long long)t->begin, (unsigned long long)t->end,
              (unsigned long long)off, (unsigned long long)(off + e->nbytes));
        off += e->nbytes;
        unsigned char *b = malloc(e->nbytes ? e->nbytes : 1);
        st_error err;
        int rc = st_tensor_read(f, t, 0, b, (size_t)e->nbytes, &err);
        CHECK(rc == ST_OK && (e->nbytes == 0 || memcmp(b, e->data, e->nbytes) == 0),
              "%s: tensor %zu bytes via st_tensor_read", label, order[i]);
        free(b);
        const void *p = st_tensor_data(f, t);
        if (p && e->nbytes)
            CHECK(memcmp(p, e->data, e->nbytes) == 0, "%s: tensor %zu bytes via data", label,
                  order[i]);
    }
    CHECK(st_metadata_count(f) == g->nm, "%s: %zu metadata pairs, wrote %zu", label,
          st_metadata_count(f), g->nm);
    CHECK(st_metadata_present(f) == (g->nm || g->meta_present), "%s: metadata present %d",
          label, st_metadata_present(f));
    for (size_t i = 0; i < g->nm; i++) {
        size_t vl = 0;
        const char *v = st_metadata_get(f, g->m[i].key.p, g->m[i].key.len, &vl);
        CHECK(v && bytes_eq(v, vl, g->m[i].value.p, g->m[i].value.len),
              "%s: metadata pair %zu", label, i);
    }
}

static size_t round_trip(const gfile *g, const char *dir, const char *label)
{
    size_t order[MAX_TENSORS];
    str model = model_file(g, order);
    size_t failures_before = (size_t)test_failed_;

    /* serialize */
    st_writer *w = make_writer(g, label);
    if (!w) {
        free(model.p);
        return 1;
    }
    void *out = NULL;
    size_t out_len = 0;
    st_error err;
    int rc = st_writer_serialize(w, &out, &out_len, &err);
    CHECK(rc == ST_OK, "%s: serialize: %s", label, rc ? err.message : "");
    if (rc != ST_OK) {
        st_writer_free(w);
        free(model.p);
        return 1;
    }
    CHECK(st_writer_output_size(w) == out_len, "%s: output size %llu, serialized %zu", label,
          (unsigned long long)st_writer_output_size(w), out_len);
    CHECK(bytes_eq(out, out_len, model.p, model.len),
          "%s: output (%zu bytes) differs from the canonical model (%zu bytes)", label, out_len,
          model.len);
    uint64_t n = 0;
    for (int i = 7; i >= 0 && out_len >= 8; i--)
        n = n << 8 | ((unsigned char *)out)[i];
    CHECK(n % 8 == 0, "%s: header length %llu not a multiple of 8", label,
          (unsigned long long)n);

    /* the streaming sink gives the same bytes */
    str streamed = {0};
    rc = st_writer_write_to(w, sink, &streamed, &err);
    CHECK(rc == ST_OK && bytes_eq(streamed.p, streamed.len, out, out_len),
          "%s: st_writer_write_to differs", label);
    free(streamed.p);

    /* write to a file (replacing the previous round's) */
    char path[512];
    snprintf(path, sizeof path, "%s/out.safetensors", dir);
    rc = st_writer_write(w, path, &err);
    CHECK(rc == ST_OK, "%s: st_writer_write: %s", label, rc ? err.message : "");
    size_t flen = 0;
    unsigned char *fbytes = slurp(path, &flen);
    CHECK(fbytes && bytes_eq((char *)fbytes, flen, out, out_len),
          "%s: written file differs from serialized bytes", label);
    free(fbytes);
    st_writer_free(w);

    /* A write whose data callback fails leaves the previous file as it
     * was and no temporary file behind. */
    if (below(8) == 0) {
        st_writer *wf = make_writer(g, label);
        uint64_t shape1[1] = {16};
        rc = st_writer_add_stream(wf, "\xff-not-utf8", 12, ST_U8, shape1, 1, 16, failing_read,
                                  NULL, &err);
        CHECK(rc == ST_E_ARG, "%s: a name that is not UTF-8 was accepted", label);
        rc = st_writer_add_stream(wf, "zz_failing_stream", 17, ST_U8, shape1, 1, 16,
                                  failing_read, NULL, &err);
        CHECK(rc == ST_OK, "%s: add_stream: %s", label, rc ? err.message : "");
        rc = st_writer_write(wf, path, &err);
        CHECK(rc == ST_E_CALLBACK, "%s: failing callback: %s", label, st_code_name(rc));
        st_writer_free(wf);
        fbytes = slurp(path, &flen);
        CHECK(fbytes && bytes_eq((char *)fbytes, flen, out, out_len),
              "%s: failed write changed the existing file", label);
        free(fbytes);
        size_t entries = 0;
        DIR *dd = opendir(dir);
        struct dirent *de;
        while (dd && (de = readdir(dd)) != NULL)
            entries += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
        if (dd)
            closedir(dd);
        CHECK(entries == 1, "%s: %zu files in the output folder after a failed write", label,
              entries);
    }

    /* read back three ways; re-serialize from each */
    for (int mode = 0; mode < MODE_COUNT; mode++) {
        char ml[300];
        snprintf(ml, sizeof ml, "%s [%s]", label, mode_name[mode]);
        st_file *f = NULL;
        rc = open_mode(mode, path, out, out_len, &f, &err);
        CHECK(rc == ST_OK, "%s: open: %s: %s", ml, st_code_name(rc), rc ? err.message : "");
        if (rc != ST_OK)
            continue;
        check_read(g, order, f, ml);
        void **bufs;
        st_writer *w2 = writer_from_reader(f, ml, &bufs);
        void *again = NULL;
        size_t again_len = 0;
        rc = st_writer_serialize(w2, &again, &again_len, &err);
        CHECK(rc == ST_OK && bytes_eq(again, again_len, out, out_len),
              "%s: re-serialized output differs (%zu vs %zu bytes)", ml, again_len, out_len);
        free(again);
        st_writer_free(w2);
        free_bufs(bufs, st_tensor_count(f));
        st_close(f);
    }
    free(out);
    free(model.p);
    return (size_t)test_failed_ - failures_before;
}

/* ---- the corpus' canonical files ------------------------------------------------ */

static void canonical_corpus(void)
{
    char dirpath[4096];
    snprintf(dirpath, sizeof dirpath, "%s/canonical", test_conformance_dir());
    DIR *d = opendir(dirpath);
    CHECK(d != NULL, "no %s", dirpath);
    if (!d)
        return;
    struct dirent *de;
    size_t count = 0;
    while ((de = readdir(d)) != NULL) {
        size_t nl = strlen(de->d_name);
        if (nl < 13 || strcmp(de->d_name + nl - 12, ".safetensors") != 0)
            continue;
        char in[4096 + 300], canon[4096 + 300];
        snprintf(in, sizeof in, "%s/files/%s", test_conformance_dir(), de->d_name);
        snprintf(canon, sizeof canon, "%s/%s", dirpath, de->d_name);
        size_t clen = 0;
        unsigned char *cbytes = slurp(canon, &clen);
        st_file *f = NULL;
        st_error err;
        int rc = st_open(in, ST_OPEN_PREAD, &f, &err);
        CHECK(rc == ST_OK, "canonical %s: input does not open: %s", de->d_name,
              rc ? err.message : "");
        if (rc == ST_OK && cbytes) {
            void **bufs;
            st_writer *w = writer_from_reader(f, de->d_name, &bufs);
            void *out = NULL;
            size_t out_len = 0;
            rc = st_writer_serialize(w, &out, &out_len, &err);
            CHECK(rc == ST_OK && bytes_eq(out, out_len, (char *)cbytes, clen),
                  "canonical %s: writer output (%zu bytes) differs from the reference's "
                  "(%zu bytes)",
                  de->d_name, out_len, clen);
            free(out);
            st_writer_free(w);
            free_bufs(bufs, st_tensor_count(f));
            count++;
        }
        st_close(f);
        free(cbytes);
    }
    closedir(d);
    printf("canonical corpus files reproduced: %zu\n", count);
    CHECK(count >= 50, "only %zu canonical files", count);
}

int main(void)
{
    uint64_t seed = DEFAULT_SEED;
    const char *s = getenv("ST_SEED");
    if (s && *s)
        seed = strtoull(s, NULL, 0);
    long rounds = DEFAULT_ROUNDS;
    s = getenv("ST_ROUNDS");
    if (s && *s)
        rounds = strtol(s, NULL, 0);
    printf("seed 0x%016llx (set ST_SEED to repeat), %ld rounds\n", (unsigned long long)seed,
           rounds);
    rng_state = seed;

    char dir[] = "/tmp/st-roundtrip-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    size_t dtype_seen[ST_DTYPE_COUNT] = {0}, zero_dims = 0, scalars = 0, failed_rounds = 0;
    for (long r = 0; r < rounds; r++) {
        gfile g;
        gen_file(&g);
        for (size_t i = 0; i < g.nt; i++) {
            dtype_seen[g.t[i].dtype]++;
            zero_dims += g.t[i].nelements == 0;
            scalars += g.t[i].rank == 0;
        }
        char label[64];
        snprintf(label, sizeof label, "round %ld", r);
        if (round_trip(&g, dir, label)) {
            failed_rounds++;
            if (failed_rounds <= 5)
                fprintf(stderr, "FAIL %s (seed 0x%016llx): %zu tensors, %zu metadata pairs\n",
                        label, (unsigned long long)seed, g.nt, g.nm);
        }
        free_file(&g);
    }
    for (int d = 0; d < ST_DTYPE_COUNT; d++)
        CHECK(dtype_seen[d] > 0, "dtype %s never generated", st_dtype_name((st_dtype)d));
    CHECK(zero_dims > 0 && scalars > 0, "no zero-size tensors or scalars generated");
    printf("%ld rounds, %zu failed; %zu zero-size tensors, %zu scalars\n", rounds, failed_rounds,
           zero_dims, scalars);

    canonical_corpus();

    char path[512];
    snprintf(path, sizeof path, "%s/out.safetensors", dir);
    unlink(path);
    rmdir(dir);
    TEST_END();
}
