/* A safetensors image model written as GGUF v3 (ggml's docs/gguf.md), in
 * one streaming pass: the layout of city96's convert.py followed by its
 * patched llama-quantize (gguf_policy.c chooses each tensor's type), with
 * ggml's own quantizers (quants.c). The header is computed first (every
 * size is known from the types), then the tensors are read, converted to
 * F32 and quantized a slice at a time, so memory stays a few slices
 * whatever the model's size. The output goes through the atomic output
 * file. Little-endian host assumed, as everywhere in the library. */
#include "common/outfile.h"
#include "format/stream.h"
#include "gguf/gguf_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Elements per slice: a multiple of every block size (256) and of 8 (sub-
 * byte source dtypes); 8 MiB of F32. */
#define SLICE ((uint64_t)1 << 21)

typedef struct gg_tensor {
    const st_tensor *src;
    char *name;              /* prefix stripped */
    size_t name_len;
    uint32_t n_dims;
    uint64_t ne[ST_GGUF_MAX_DIMS];
    uint64_t n;              /* elements */
    int type;
    uint64_t size, offset;   /* bytes, and offset in the data section */
    bool orig_shape;         /* stored reshaped: its shape goes in the metadata */
    bool skip;               /* left out (convert.py's ignored keys) */
} gg_tensor;

typedef struct gg_buf {
    unsigned char *p;
    size_t len, cap;
    bool failed;
} gg_buf;

static void put(gg_buf *b, const void *p, size_t n)
{
    if (b->failed)
        return;
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2) {
                b->failed = true;
                return;
            }
            cap *= 2;
        }
        unsigned char *q = realloc(b->p, cap);
        if (!q) {
            b->failed = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void put_u32(gg_buf *b, uint32_t v)
{
    unsigned char x[4];
    for (int i = 0; i < 4; i++)
        x[i] = (unsigned char)(v >> (8 * i));
    put(b, x, 4);
}

static void put_u64(gg_buf *b, uint64_t v)
{
    unsigned char x[8];
    for (int i = 0; i < 8; i++)
        x[i] = (unsigned char)(v >> (8 * i));
    put(b, x, 8);
}

static void put_str(gg_buf *b, const char *s, size_t n)
{
    put_u64(b, n);
    put(b, s, n);
}

static void put_kv_str(gg_buf *b, const char *key, const char *v, size_t vn)
{
    put_str(b, key, strlen(key));
    put_u32(b, ST_GGUF_STRING);
    put_str(b, v, vn);
}

static void put_kv_u32(gg_buf *b, const char *key, uint32_t v)
{
    put_str(b, key, strlen(key));
    put_u32(b, ST_GGUF_UINT32);
    put_u32(b, v);
}

/* ---- the input's names ---- */

static const char *const prefixes_mixed[] = {"model.diffusion_model.", "model."};

/* convert.py's strip_prefix: a prefix some name starts with ("mixed"
 * state dicts: only the names holding it are kept), else "net." when every
 * name starts with it; every occurrence is removed, as str.replace does. */
static const char *find_prefix(const st_file *f)
{
    size_t n = st_tensor_count(f);
    for (size_t p = 0; p < 2; p++) {
        size_t l = strlen(prefixes_mixed[p]);
        for (size_t i = 0; i < n; i++) {
            const st_tensor *t = st_tensor_at(f, i);
            if (t->name_len >= l && memcmp(t->name, prefixes_mixed[p], l) == 0)
                return prefixes_mixed[p];
        }
    }
    bool all = n > 0;
    for (size_t i = 0; i < n && all; i++) {
        const st_tensor *t = st_tensor_at(f, i);
        all = t->name_len >= 4 && memcmp(t->name, "net.", 4) == 0;
    }
    return all ? "net." : "";
}

/* name with every occurrence of prefix removed (NULL when out of memory);
 * *kept is false when a prefix is in use and the name does not hold it. */
static char *strip(const st_tensor *t, const char *prefix, bool *kept, size_t *out_len)
{
    size_t pl = strlen(prefix);
    char *s = malloc(t->name_len + 1);
    if (!s)
        return NULL;
    size_t o = 0;
    *kept = pl == 0;
    for (size_t i = 0; i < t->name_len;) {
        if (pl && t->name_len - i >= pl && memcmp(t->name + i, prefix, pl) == 0) {
            *kept = true;
            i += pl;
        } else {
            s[o++] = t->name[i++];
        }
    }
    s[o] = 0;
    *out_len = o;
    return s;
}

typedef struct name_set {
    gg_tensor *t;
    size_t n;
} name_set;

static bool set_has(const void *ctx, const char *name)
{
    const name_set *s = ctx;
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->t[i].name, name) == 0)
            return true;
    return false;
}

/* ---- the plan ---- */

typedef struct gg_job {
    st_file *in;
    gg_tensor *t;
    size_t n;
    const char *arch;
    const char *prefix;
    gg_buf header;
    uint64_t data_size;
} gg_job;

static void job_free(gg_job *j)
{
    for (size_t i = 0; i < j->n; i++)
        free(j->t[i].name);
    free(j->t);
    free(j->header.p);
    st_close(j->in);
}

static uint64_t align_up(uint64_t v)
{
    return (v + ST_GGUF_ALIGNMENT - 1) / ST_GGUF_ALIGNMENT * ST_GGUF_ALIGNMENT;
}

/* Shapes as stored: SD1/SDXL rows of 256, more than four dimensions folded
 * into the first, scalars as [1]; the original goes in the metadata. */
static void store_shape(gg_tensor *g, const st_tensor *t, bool shape_fix)
{
    uint64_t n = t->nelements;
    uint64_t d[ST_GGUF_MAX_DIMS];
    uint32_t k;
    if (t->rank == 0) {
        d[0] = 1;
        k = 1;
        g->orig_shape = true;
    } else if (t->rank > ST_GGUF_MAX_DIMS) {
        uint64_t lead = 1;
        for (uint32_t i = 0; i + 3 < t->rank; i++)
            lead *= t->shape[i];
        d[0] = lead;
        d[1] = t->shape[t->rank - 3];
        d[2] = t->shape[t->rank - 2];
        d[3] = t->shape[t->rank - 1];
        k = 4;
        g->orig_shape = true;
    } else if (shape_fix && t->rank > 1 && n >= ST_GGUF_REARRANGE_THRESHOLD && n % 256 == 0 &&
               t->shape[t->rank - 1] % 256 != 0) {
        d[0] = n / 256;
        d[1] = 256;
        k = 2;
        g->orig_shape = true;
    } else {
        for (uint32_t i = 0; i < t->rank; i++)
            d[i] = t->shape[i];
        k = t->rank;
    }
    g->n_dims = k;
    for (uint32_t i = 0; i < k; i++)
        g->ne[i] = d[k - 1 - i]; /* ggml order: innermost first */
    g->n = n;
}

static int plan(gg_job *j, const char *in_path, const st_gguf_write_options *o,
                st_gguf_write_report *rep, st_error *err)
{
    size_t nt = st_tensor_count(j->in);
    j->t = calloc(nt ? nt : 1, sizeof *j->t);
    if (!j->t)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    j->prefix = find_prefix(j->in);
    rep->prefix = j->prefix;
    /* names first (convert.py's order: sorted by the original name) */
    for (size_t i = 0; i < nt; i++) {
        const st_tensor *t = st_tensor_by_name_order(j->in, i);
        bool kept;
        size_t len;
        char *name = strip(t, j->prefix, &kept, &len);
        if (!name)
            return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
        if (!kept || memchr(name, 0, len)) {
            free(name);
            rep->ignored++;
            continue;
        }
        j->t[j->n].src = t;
        j->t[j->n].name = name;
        j->t[j->n].name_len = len;
        j->n++;
    }
    name_set names = {j->t, j->n};
    gg_names gn = {set_has, &names};
    int rc = st_gguf_detect_arch(&gn, o->arch, &j->arch, err);
    if (rc != ST_OK)
        return rc;
    rep->arch = j->arch;
    bool fix = st_gguf_shape_fix(j->arch);
    gg_state state = {0, 0};
    uint64_t off = 0;
    for (size_t i = 0; i < j->n; i++) {
        gg_tensor *g = &j->t[i];
        const st_tensor *t = g->src;
        if (st_gguf_ignored(j->arch, g->name)) {
            g->skip = true;
            rep->ignored++;
            continue;
        }
        char q[160];
        st_quote_name(q, sizeof q, t->name, t->name_len);
        if (g->name_len > ST_GGUF_MAX_NAME) {
            return st_fail(err, ST_E_UNSUPPORTED, t->header_offset,
                           "%s: tensor %s: GGUF names are at most %u bytes (ggml's limit), "
                           "this one has %zu", in_path, q, ST_GGUF_MAX_NAME, g->name_len);
        }
        st_dtype dt = t->dtype;
        bool floating = dt == ST_F64 || dt == ST_F32 || dt == ST_F16 || dt == ST_BF16 ||
                        ((dt == ST_F8_E4M3 || dt == ST_F8_E5M2 || dt == ST_F8_E4M3FNUZ ||
                          dt == ST_F8_E5M2FNUZ) &&
                         st_convert_supported(dt, ST_F32));
        if (!floating)
            return st_fail(err, ST_E_UNSUPPORTED, t->header_offset,
                           "%s: tensor %s is %s: a GGUF image model holds floating tensors "
                           "(F64, F32, F16, BF16, F8)", in_path, q, st_dtype_name(dt));
        store_shape(g, t, fix);
        int fallback = 0;
        g->type = st_gguf_choose_type(&state, j->arch, o->ftype, g->name, dt, g->ne, g->n_dims,
                                      &fallback);
        uint64_t row = st_ggml_row_bytes(g->type, g->ne[0]);
        uint64_t rows = g->ne[0] ? g->n / g->ne[0] : 0;
        if ((g->ne[0] && !row) || (row && rows > UINT64_MAX / row))
            return st_fail(err, ST_E_OVERFLOW, t->header_offset, "%s: tensor %s is too large",
                           in_path, q);
        g->size = row * rows;
        off = align_up(off);
        g->offset = off;
        if (g->size > UINT64_MAX - off - ST_GGUF_ALIGNMENT)
            return st_fail(err, ST_E_OVERFLOW, t->header_offset, "%s: the model is too large",
                           in_path);
        off += g->size;
        rep->fallback_f16 += fallback != 0;
        rep->quantized += st_ggml_block_elements(g->type) > 1;
        rep->reshaped += g->orig_shape;
        if (g->type >= 0 && g->type < ST_GGUF_TYPE_SLOTS)
            rep->by_type[g->type]++;
        rep->tensors++;
    }
    j->data_size = align_up(off);
    return ST_OK;
}

static int build_header(gg_job *j, const st_gguf_write_options *o, st_error *err)
{
    gg_buf *b = &j->header;
    size_t nkv = 4 + (j->prefix[0] ? 1 : 0), nt = 0;
    for (size_t i = 0; i < j->n; i++) {
        nkv += !j->t[i].skip && j->t[i].orig_shape;
        nt += !j->t[i].skip;
    }
    put_u32(b, ST_GGUF_MAGIC);
    put_u32(b, ST_GGUF_VERSION);
    put_u64(b, nt);
    put_u64(b, nkv);
    /* gguf-py's order: the architecture first, then convert.py's keys */
    put_kv_str(b, "general.architecture", j->arch, strlen(j->arch));
    put_kv_u32(b, "general.quantization_version", ST_GGUF_QUANT_VERSION);
    put_kv_u32(b, "general.file_type", (uint32_t)o->ftype);
    put_kv_u32(b, "general.alignment", ST_GGUF_ALIGNMENT);
    if (j->prefix[0])
        put_kv_str(b, "safetensors.name_prefix", j->prefix, strlen(j->prefix));
    char key[64 + ST_GGUF_MAX_NAME];
    for (size_t i = 0; i < j->n; i++) {
        const gg_tensor *g = &j->t[i];
        if (g->skip || !g->orig_shape)
            continue;
        /* ComfyUI-GGUF's loader wants an ARRAY of INT32 */
        snprintf(key, sizeof key, "comfy.gguf.orig_shape.%s", g->name);
        put_str(b, key, strlen(key));
        put_u32(b, ST_GGUF_ARRAY);
        put_u32(b, ST_GGUF_INT32);
        put_u64(b, g->src->rank);
        for (uint32_t d = 0; d < g->src->rank; d++) {
            if (g->src->shape[d] > INT32_MAX)
                return st_fail(err, ST_E_UNSUPPORTED, g->src->header_offset,
                               "tensor %s: dimension %llu does not fit the INT32 shape record",
                               g->name, (unsigned long long)g->src->shape[d]);
            put_u32(b, (uint32_t)g->src->shape[d]);
        }
    }
    for (size_t i = 0; i < j->n; i++) {
        const gg_tensor *g = &j->t[i];
        if (g->skip)
            continue;
        put_str(b, g->name, g->name_len);
        put_u32(b, g->n_dims);
        for (uint32_t d = 0; d < g->n_dims; d++)
            put_u64(b, g->ne[d]);
        put_u32(b, (uint32_t)g->type);
        put_u64(b, g->offset);
    }
    static const unsigned char zeros[ST_GGUF_ALIGNMENT];
    put(b, zeros, (size_t)(align_up(b->len) - b->len));
    if (b->failed)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory building the GGUF header");
    return ST_OK;
}

/* ---- the data ---- */

typedef struct gg_bufs {
    unsigned char *raw;
    float *f32;
    unsigned char *out;
} gg_bufs;

static int write_tensor(gg_job *j, const gg_tensor *g, gg_bufs *bf, st_outfile *of,
                        const st_gguf_write_options *o, uint64_t *done, uint64_t total,
                        bool *input_failed, st_error *err)
{
    const st_tensor *t = g->src;
    unsigned bits = st_dtype_bits(t->dtype);
    for (uint64_t e = 0; e < g->n;) {
        uint64_t k = g->n - e < SLICE ? g->n - e : SLICE;
        size_t raw = (size_t)((k * bits + 7) / 8);
        int rc = st_tensor_read(j->in, t, e * bits / 8, bf->raw, raw, err);
        if (rc != ST_OK) {
            *input_failed = true;
            return rc;
        }
        rc = st_convert(ST_F32, bf->f32, t->dtype, bf->raw, (size_t)k, 0, err);
        if (rc != ST_OK)
            return rc;
        /* k is a whole number of the type's blocks: the row length is
         * (the policy checked it) and SLICE is a multiple of 256 */
        rc = st_ggml_quantize(g->type, bf->f32, bf->out, 1, k, o->threads, err);
        if (rc != ST_OK)
            return rc;
        rc = st_outfile_write(of, bf->out, (size_t)st_ggml_row_bytes(g->type, k), err);
        if (rc != ST_OK)
            return rc;
        e += k;
        *done += st_ggml_row_bytes(g->type, k);
        if (o->hooks.progress && o->hooks.progress(o->hooks.progress_ctx, *done, total) != 0)
            return st_fail(err, ST_E_CALLBACK, ST_NO_OFFSET, "stopped by the progress callback");
    }
    static const unsigned char zeros[ST_GGUF_ALIGNMENT];
    size_t pad = (size_t)(align_up(g->size) - g->size);
    *done += pad;
    return pad ? st_outfile_write(of, zeros, pad, err) : ST_OK;
}

int st_gguf_from_safetensors(const char *in_path, const char *out_path,
                             const st_gguf_write_options *opt, st_gguf_write_report *report,
                             st_error *err)
{
    st_gguf_write_report rep;
    memset(&rep, 0, sizeof rep);
    rep.failed_input = -1;
    rep.arch = rep.prefix = "";
    gg_job j;
    memset(&j, 0, sizeof j);
    gg_bufs bf = {NULL, NULL, NULL};
    st_outfile of;
    memset(&of, 0, sizeof of);
    of.fd = -1;
    int rc;
    if (!in_path || !out_path || !opt || st_gguf_ftype_base(opt->ftype) < 0) {
        rc = st_fail(err, ST_E_ARG, ST_NO_OFFSET,
                     "st_gguf_from_safetensors: paths and a known file type are required");
        goto done;
    }
    rc = st_open(in_path, ST_OPEN_PREAD, &j.in, err);
    if (rc != ST_OK) {
        rep.failed_input = 0;
        goto done;
    }
    rep.input_size = st_file_size(j.in);
    if (st_op_same_file(in_path, out_path)) {
        rc = st_fail(err, ST_E_ARG, ST_NO_OFFSET,
                     "OUT '%s' is the input file (inputs are never overwritten)", out_path);
        goto done;
    }
    rc = plan(&j, in_path, opt, &rep, err);
    if (rc == ST_OK)
        rc = build_header(&j, opt, err);
    if (rc != ST_OK) {
        rep.failed_input = rc == ST_E_NOMEM ? -1 : 0;
        goto done;
    }
    rep.output_size = j.header.len + j.data_size;
    bf.raw = malloc(SLICE * 8);
    bf.f32 = malloc(SLICE * sizeof(float));
    bf.out = malloc(SLICE * sizeof(float));
    if (!bf.raw || !bf.f32 || !bf.out) {
        rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
        goto done;
    }
    rc = st_outfile_open(&of, out_path, rep.output_size, opt->hooks.temp, opt->hooks.temp_ctx,
                         err);
    if (rc != ST_OK)
        goto done;
    rc = st_outfile_write(&of, j.header.p, j.header.len, err);
    uint64_t done_bytes = j.header.len;
    bool input_failed = false;
    for (size_t i = 0; i < j.n && rc == ST_OK; i++)
        if (!j.t[i].skip)
            rc = write_tensor(&j, &j.t[i], &bf, &of, opt, &done_bytes, rep.output_size,
                              &input_failed, err);
    if (input_failed)
        rep.failed_input = 0;
    if (rc == ST_OK)
        rc = st_outfile_commit(&of, err);
    else
        st_outfile_abort(&of);
done:
    free(bf.raw);
    free(bf.f32);
    free(bf.out);
    job_free(&j);
    if (report)
        *report = rep;
    return rc;
}
