/* Fuzz target: write -> read round trip.
 *
 * The input is read as a small program: a number of tensors (name bytes,
 * dtype, shape, data, sometimes a wrong byte count or a repeated name) and
 * metadata pairs (sometimes repeated keys), each added to an st_writer,
 * some by pointer and some by a read callback. The writer must accept
 * exactly what a model of its rules accepts (valid UTF-8 names that are not
 * "__metadata__" and not repeated, byte counts matching the shape). The
 * output of st_writer_serialize must equal that of st_writer_write_to, be
 * st_writer_output_size bytes long, open with st_open_memory, and give back
 * every tensor (dtype, shape, bytes) and the metadata (last value per key),
 * in the canonical order, with the header padded to a multiple of 8.
 * Any mismatch abort()s. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_T 12
#define MAX_M 6

typedef struct tensor_in {
    uint8_t name[24];
    size_t name_len;
    st_dtype dtype;
    uint64_t shape[4];
    uint32_t rank;
    uint8_t *data;
    uint64_t nbytes;
    int added;
} tensor_in;

typedef struct meta_in {
    uint8_t key[12], value[24];
    size_t key_len, value_len;
    int live; /* the last value for its key */
} meta_in;

typedef struct grow_buf {
    uint8_t *p;
    size_t len, cap;
} grow_buf;

static int sink(void *ctx, const void *buf, size_t len)
{
    grow_buf *g = ctx;
    if (g->len + len > g->cap) {
        size_t nc = (g->len + len) * 2;
        uint8_t *np = realloc(g->p, nc);
        if (!np)
            return 1;
        g->p = np;
        g->cap = nc;
    }
    memcpy(g->p + g->len, buf, len);
    g->len += len;
    return 0;
}

static int read_cb(void *ctx, uint64_t offset, void *buf, size_t len)
{
    const tensor_in *t = ctx;
    FUZZ_ASSERT(offset <= t->nbytes && len <= t->nbytes - offset, "callback range");
    memcpy(buf, t->data + offset, len);
    return 0;
}

static int rt_name_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t m = al < bl ? al : bl;
    int c = m ? memcmp(a, b, m) : 0;
    if (c)
        return c;
    return al < bl ? -1 : al > bl;
}

/* Byte size by the format's rule; 0 = ok, else the code the writer gives. */
static int model_size(st_dtype dt, const uint64_t *shape, uint32_t rank, uint64_t *nbytes)
{
    unsigned __int128 ne = 1;
    for (uint32_t k = 0; k < rank; k++) {
        ne *= shape[k];
        if (ne > UINT64_MAX)
            return ST_E_OVERFLOW;
    }
    unsigned __int128 bits = ne * st_dtype_bits(dt);
    if (bits > UINT64_MAX)
        return ST_E_OVERFLOW;
    if (bits % 8)
        return ST_E_MISALIGNED;
    *nbytes = (uint64_t)(bits / 8);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz r;
    fz_init(&r, data, size);
    tensor_in ts[MAX_T];
    meta_in ms[MAX_M];
    memset(ts, 0, sizeof ts);
    memset(ms, 0, sizeof ms);
    st_writer *w = st_writer_new();
    FUZZ_ASSERT(w, "oom");
    st_error err;

    size_t nt = (size_t)fz_below(&r, MAX_T + 1);
    for (size_t i = 0; i < nt; i++) {
        tensor_in *t = &ts[i];
        uint8_t op = fz_byte(&r);
        if ((op & 7) == 0 && i > 0) {
            /* Repeat an earlier name. */
            const tensor_in *o = &ts[fz_below(&r, i)];
            memcpy(t->name, o->name, o->name_len);
            t->name_len = o->name_len;
        } else if ((op & 63) == 1) {
            memcpy(t->name, "__metadata__", 12);
            t->name_len = 12;
        } else {
            t->name_len = (size_t)fz_below(&r, sizeof t->name + 1);
            for (size_t k = 0; k < t->name_len; k++) {
                uint8_t c = fz_byte(&r);
                /* Mostly printable ASCII, so most names are valid. */
                t->name[k] = (op & 8) ? c : (uint8_t)(0x20 + c % 95);
            }
        }
        t->dtype = (st_dtype)fz_below(&r, ST_DTYPE_COUNT + ((op & 0xf0) == 0xf0));
        t->rank = (uint32_t)fz_below(&r, 5);
        for (uint32_t k = 0; k < t->rank; k++)
            t->shape[k] = (op & 0x30) == 0x30 ? fz_rand(&r) : fz_below(&r, 7);
        int want = (unsigned)t->dtype < ST_DTYPE_COUNT
                       ? model_size(t->dtype, t->shape, t->rank, &t->nbytes)
                       : ST_E_ARG;
        if (want == 0 && t->nbytes > 65536) {
            /* Too big to hold: give a wrong size instead. */
            t->nbytes = fz_below(&r, 16);
            want = ST_E_SIZE_MISMATCH;
        } else if (want == 0 && (op & 0x40) && fz_below(&r, 4) == 0)
            t->nbytes += 1 + fz_below(&r, 3), want = ST_E_SIZE_MISMATCH;
        if (want == ST_E_OVERFLOW || want == ST_E_MISALIGNED || want == ST_E_ARG)
            t->nbytes = fz_below(&r, 16);
        t->data = malloc(t->nbytes ? t->nbytes : 1);
        FUZZ_ASSERT(t->data, "oom");
        for (uint64_t k = 0; k < t->nbytes; k++)
            t->data[k] = fz_byte(&r);

        int dup = 0;
        for (size_t j = 0; j < i; j++)
            if (ts[j].added && rt_name_cmp(ts[j].name, ts[j].name_len, t->name, t->name_len) == 0)
                dup = 1;
        int bad_name = !fz_utf8_ok(t->name, t->name_len) || dup ||
                       (t->name_len == 12 && memcmp(t->name, "__metadata__", 12) == 0);

        int rc;
        if (op & 0x80)
            rc = st_writer_add_stream(w, (const char *)t->name, t->name_len, t->dtype, t->shape,
                                      t->rank, t->nbytes, read_cb, t, &err);
        else
            rc = st_writer_add(w, (const char *)t->name, t->name_len, t->dtype, t->shape,
                               t->rank, t->data, t->nbytes, &err);
        if (rc)
            fz_check_error(rc, &err);
        if (bad_name || want == ST_E_ARG) {
            /* Which of two faults is reported first is the writer's choice. */
            FUZZ_ASSERT(rc == ST_E_ARG || (want && rc == want), "bad name/dtype: rc %d", rc);
        } else if (want) {
            FUZZ_ASSERT(rc == want, "size verdict %s, model %s", st_code_name(rc),
                        st_code_name(want));
        } else {
            FUZZ_ASSERT(rc == ST_OK, "valid tensor rejected: %s", err.message);
            t->added = 1;
        }
    }

    size_t nm = (size_t)fz_below(&r, MAX_M + 1);
    for (size_t i = 0; i < nm; i++) {
        meta_in *m = &ms[i];
        uint8_t op = fz_byte(&r);
        if ((op & 3) == 0 && i > 0) {
            const meta_in *o = &ms[fz_below(&r, i)];
            memcpy(m->key, o->key, o->key_len);
            m->key_len = o->key_len;
        } else {
            m->key_len = (size_t)fz_below(&r, sizeof m->key + 1);
            for (size_t k = 0; k < m->key_len; k++) {
                uint8_t c = fz_byte(&r);
                m->key[k] = (op & 4) ? c : (uint8_t)(0x20 + c % 95);
            }
        }
        m->value_len = (size_t)fz_below(&r, sizeof m->value + 1);
        for (size_t k = 0; k < m->value_len; k++) {
            uint8_t c = fz_byte(&r);
            m->value[k] = (op & 8) ? c : (uint8_t)(0x20 + c % 95);
        }
        int ok = fz_utf8_ok(m->key, m->key_len) && fz_utf8_ok(m->value, m->value_len);
        int rc = st_writer_set_metadata(w, (const char *)m->key, m->key_len,
                                        (const char *)m->value, m->value_len, &err);
        if (!ok) {
            FUZZ_ASSERT(rc == ST_E_ARG, "bad metadata accepted");
            continue;
        }
        FUZZ_ASSERT(rc == ST_OK, "metadata rejected: %s", err.message);
        for (size_t j = 0; j < i; j++)
            if (ms[j].live && rt_name_cmp(ms[j].key, ms[j].key_len, m->key, m->key_len) == 0)
                ms[j].live = 0;
        m->live = 1;
    }
    int force_meta = fz_below(&r, 3) == 0;
    if (force_meta)
        st_writer_set_metadata_present(w, 1);

    void *buf = NULL;
    size_t len = 0;
    int rc = st_writer_serialize(w, &buf, &len, &err);
    FUZZ_ASSERT(rc == ST_OK, "serialize: %s", err.message);
    FUZZ_ASSERT(len == st_writer_output_size(w), "output size %zu vs %llu", len,
                (unsigned long long)st_writer_output_size(w));
    /* write_to allocates a 1 MiB staging buffer, which costs ASan more
     * than everything else here: compare with it on one input in eight. */
    if (fz_below(&r, 8) == 0) {
        grow_buf g = {0};
        rc = st_writer_write_to(w, sink, &g, &err);
        FUZZ_ASSERT(rc == ST_OK, "write_to: %s", err.message);
        FUZZ_ASSERT(g.len == len && memcmp(g.p, buf, len) == 0, "write_to != serialize");
        free(g.p);
    }

    st_file *f = NULL;
    rc = st_open_memory(buf, len, 0, &f, &err);
    FUZZ_ASSERT(rc == ST_OK, "writer output rejected by the reader: %s", err.message);
    FUZZ_ASSERT(st_header_size(f) % 8 == 0, "header not padded to 8");

    size_t added = 0;
    for (size_t i = 0; i < nt; i++) {
        const tensor_in *t = &ts[i];
        if (!t->added)
            continue;
        added++;
        const st_tensor *o = st_find(f, (const char *)t->name, t->name_len);
        FUZZ_ASSERT(o, "tensor lost");
        FUZZ_ASSERT(o->dtype == t->dtype && o->rank == t->rank, "dtype/rank changed");
        FUZZ_ASSERT(t->rank == 0 || memcmp(o->shape, t->shape, t->rank * sizeof *t->shape) == 0,
                    "shape changed");
        FUZZ_ASSERT(st_tensor_nbytes(o) == t->nbytes, "size changed");
        FUZZ_ASSERT(t->nbytes == 0 || memcmp(st_tensor_data(f, o), t->data, t->nbytes) == 0,
                    "bytes changed");
    }
    FUZZ_ASSERT(st_tensor_count(f) == added, "tensor count %zu vs %zu", st_tensor_count(f), added);
    /* Canonical order: descending dtype, then name bytes. */
    for (size_t i = 1; i < added; i++) {
        const st_tensor *a = st_tensor_at(f, i - 1), *b = st_tensor_at(f, i);
        FUZZ_ASSERT(a->dtype > b->dtype ||
                        (a->dtype == b->dtype &&
                         rt_name_cmp((const uint8_t *)a->name, a->name_len, (const uint8_t *)b->name,
                                  b->name_len) < 0),
                    "not in canonical order");
    }

    size_t live = 0;
    int any_meta_call = 0;
    for (size_t i = 0; i < nm; i++) {
        const meta_in *m = &ms[i];
        if (fz_utf8_ok(m->key, m->key_len) && fz_utf8_ok(m->value, m->value_len))
            any_meta_call = 1;
        if (!m->live)
            continue;
        live++;
        size_t vl = 0;
        const char *v = st_metadata_get(f, (const char *)m->key, m->key_len, &vl);
        FUZZ_ASSERT(v && vl == m->value_len && memcmp(v, m->value, vl) == 0, "metadata value");
    }
    FUZZ_ASSERT(st_metadata_count(f) == live, "metadata count");
    FUZZ_ASSERT(!!st_metadata_present(f) == (live > 0 || force_meta || any_meta_call),
                "metadata presence");

    /* Serializing the read-back file again gives the same bytes. */
    st_writer *w2 = st_writer_new();
    FUZZ_ASSERT(w2, "oom");
    for (size_t i = 0; i < st_tensor_count(f); i++) {
        const st_tensor *o = st_tensor_at(f, i);
        rc = st_writer_add(w2, o->name, o->name_len, o->dtype, o->shape, o->rank,
                           st_tensor_data(f, o), st_tensor_nbytes(o), &err);
        FUZZ_ASSERT(rc == ST_OK, "re-add: %s", err.message);
    }
    for (size_t i = 0; i < st_metadata_count(f); i++) {
        const char *k, *v;
        size_t kl, vl;
        st_metadata_at(f, i, &k, &kl, &v, &vl);
        FUZZ_ASSERT(st_writer_set_metadata(w2, k, kl, v, vl, &err) == ST_OK, "re-set metadata");
    }
    st_writer_set_metadata_present(w2, st_metadata_present(f));
    void *buf2 = NULL;
    size_t len2 = 0;
    rc = st_writer_serialize(w2, &buf2, &len2, &err);
    FUZZ_ASSERT(rc == ST_OK && len2 == len && memcmp(buf, buf2, len) == 0,
                "second serialization differs");
    free(buf2);
    st_writer_free(w2);

    st_close(f);
    free(buf);
    st_writer_free(w);
    for (size_t i = 0; i < nt; i++)
        free(ts[i].data);
    return 0;
}
