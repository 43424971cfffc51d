/* What differs between two safetensors files, or two models (sharded or
 * single files, st_model): tensors matched by name, values of common
 * tensors of the same shape compared in double precision (st_convert),
 * chunk by chunk through reads, so memory stays a few buffers whatever the
 * size. Results go to the caller's callbacks in name order; printing is the
 * caller's business. */
#include "format/stream.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Elements compared per step: bounds the buffers (2 x 8 bytes x CHUNK
 * decoded, 2 x at most 8 bytes x CHUNK raw). A multiple of 8 so that
 * sub-byte dtypes start each step on a whole byte. */
#define CHUNK ((size_t)1 << 18)

typedef struct diff_buffers {
    unsigned char *ra, *rb; /* raw bytes */
    double *da, *db;        /* decoded values */
    float *fa, *fb;         /* decoded as F32 */
} diff_buffers;

static bool decodable(st_dtype d)
{
    return d != ST_C64 && st_convert_supported(d, ST_F64);
}

/* Kinds whose every value a float32 holds exactly: decoded to F32 (the
 * conversion engine's fast paths) and widened here, rather than converted
 * to F64 directly. */
static bool fits_f32(st_dtype d)
{
    switch (d) {
    case ST_F64: case ST_I32: case ST_U32: case ST_I64: case ST_U64: case ST_C64:
        return false;
    default:
        return true;
    }
}

/* Decodes k elements of dtype d at raw into out (as doubles); tmp holds k
 * floats. */
static int decode(st_dtype d, const void *raw, size_t k, double *out, float *tmp, st_error *err)
{
    if (!fits_f32(d))
        return st_convert(ST_F64, out, d, raw, k, 0, err);
    int rc = st_convert(ST_F32, tmp, d, raw, k, 0, err);
    if (rc != ST_OK)
        return rc;
    for (size_t i = 0; i < k; i++)
        out[i] = tmp[i];
    return ST_OK;
}

/* Running sums of a comparison, in LANES interleaved parts so that the
 * additions do not wait on each other. */
#define LANES 4
typedef struct stats {
    double max[LANES], dot[LANES], na[LANES], nb[LANES];
    bool nan;
} stats;

#define ACCUMULATE(T, NAME)                                                                  \
    static void NAME(stats *s, const T *x, const T *y, size_t k)                             \
    {                                                                                        \
        size_t i = 0;                                                                        \
        int nan = 0;                                                                         \
        for (; i < k; i++) {                                                                 \
            size_t l = i % LANES;                                                            \
            double a = x[i], b = y[i];                                                       \
            double d = fabs(a - b);                                                          \
            s->max[l] = d > s->max[l] ? d : s->max[l];                                       \
            nan |= d != d;                                                                   \
            s->dot[l] += a * b;                                                              \
            s->na[l] += a * a;                                                               \
            s->nb[l] += b * b;                                                               \
        }                                                                                    \
        s->nan = s->nan || nan;                                                              \
    }
ACCUMULATE(float, accumulate_f32)
ACCUMULATE(double, accumulate_f64)

/* One side of a diff: a file or a model, read through the same calls. */
typedef struct side {
    const st_file *f;
    const st_model *m;
} side;

static size_t side_count(const side *s)
{
    return s->f ? st_tensor_count(s->f) : st_model_tensor_count(s->m);
}

static const st_tensor *side_by_name(const side *s, size_t i)
{
    return s->f ? st_tensor_by_name_order(s->f, i) : st_model_tensor_by_name_order(s->m, i);
}

static int side_read(const side *s, const st_tensor *t, uint64_t off, void *buf, size_t len,
                     st_error *err)
{
    return s->f ? st_tensor_read(s->f, t, off, buf, len, err)
                : st_model_tensor_read(s->m, t, off, buf, len, err);
}

static size_t side_meta_count(const side *s)
{
    return s->f ? st_metadata_count(s->f) : st_model_metadata_count(s->m);
}

static void side_meta_at(const side *s, size_t i, const char **k, size_t *kl, const char **v,
                         size_t *vl)
{
    if (s->f)
        st_metadata_at(s->f, i, k, kl, v, vl);
    else
        st_model_metadata_at(s->m, i, k, kl, v, vl);
}

static int compare_with(diff_buffers *bf, const side *a, const st_tensor *ta, const side *b,
                        const st_tensor *tb, st_tensor_diff *out, int *failed, st_error *err)
{
    bool same_dtype = ta->dtype == tb->dtype;
    out->bytes_equal = same_dtype;
    out->numeric = decodable(ta->dtype) && decodable(tb->dtype);
    stats acc;
    memset(&acc, 0, sizeof acc);
    unsigned ba = st_dtype_bits(ta->dtype), bb = st_dtype_bits(tb->dtype);
    uint64_t n = ta->nelements;
    st_error scratch;
    for (uint64_t e = 0; e < n;) {
        size_t k = n - e < CHUNK ? (size_t)(n - e) : CHUNK;
        size_t la = (size_t)(((uint64_t)k * ba + 7) / 8), lb = (size_t)(((uint64_t)k * bb + 7) / 8);
        int rc = side_read(a, ta, e * ba / 8, bf->ra, la, err);
        if (rc != ST_OK) {
            *failed = 0;
            return rc;
        }
        rc = side_read(b, tb, e * bb / 8, bf->rb, lb, err);
        if (rc != ST_OK) {
            *failed = 1;
            return rc;
        }
        if (out->bytes_equal && memcmp(bf->ra, bf->rb, la) != 0)
            out->bytes_equal = 0;
        if (out->numeric) {
            if (fits_f32(ta->dtype) && fits_f32(tb->dtype)) {
                /* the common case (F16, BF16, F32): no widening pass */
                if (st_convert(ST_F32, bf->fa, ta->dtype, bf->ra, k, 0, &scratch) != ST_OK ||
                    st_convert(ST_F32, bf->fb, tb->dtype, bf->rb, k, 0, &scratch) != ST_OK)
                    out->numeric = 0;
                else
                    accumulate_f32(&acc, bf->fa, bf->fb, k);
            } else if (decode(ta->dtype, bf->ra, k, bf->da, bf->fa, &scratch) != ST_OK ||
                       decode(tb->dtype, bf->rb, k, bf->db, bf->fa, &scratch) != ST_OK) {
                out->numeric = 0;
            } else {
                accumulate_f64(&acc, bf->da, bf->db, k);
            }
        }
        e += k;
    }
    double max_abs = 0, dot = 0, na = 0, nb = 0;
    bool nan_seen = acc.nan;
    for (int l = 0; l < LANES; l++) {
        max_abs = acc.max[l] > max_abs ? acc.max[l] : max_abs;
        dot += acc.dot[l];
        na += acc.na[l];
        nb += acc.nb[l];
    }
    out->max_abs = nan_seen ? NAN : max_abs;
    /* NaN when a norm is zero, as numpy's dot / (norm * norm) gives. */
    out->cosine = dot / (sqrt(na) * sqrt(nb));
    return ST_OK;
}

static int buffers_init(diff_buffers *bf, st_error *err)
{
    bf->ra = malloc(CHUNK * 8);
    bf->rb = malloc(CHUNK * 8);
    bf->da = malloc(CHUNK * sizeof(double));
    bf->db = malloc(CHUNK * sizeof(double));
    bf->fa = malloc(CHUNK * sizeof(float));
    bf->fb = malloc(CHUNK * sizeof(float));
    if (!bf->ra || !bf->rb || !bf->da || !bf->db || !bf->fa || !bf->fb)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    return ST_OK;
}

static void buffers_free(diff_buffers *bf)
{
    free(bf->ra);
    free(bf->rb);
    free(bf->da);
    free(bf->db);
    free(bf->fa);
    free(bf->fb);
}

int st_tensor_compare(const st_file *a, const st_tensor *ta, const st_file *b,
                      const st_tensor *tb, st_tensor_diff *out, st_error *err)
{
    if (!a || !ta || !b || !tb || !out)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_tensor_compare: NULL argument");
    memset(out, 0, sizeof *out);
    out->status = ST_DIFF_CHANGED;
    out->a = ta;
    out->b = tb;
    out->same_shape = st_op_same_shape(ta, tb);
    if (!out->same_shape)
        return ST_OK;
    diff_buffers bf;
    memset(&bf, 0, sizeof bf);
    int failed = -1;
    side sa = {a, NULL}, sb = {b, NULL};
    int rc = buffers_init(&bf, err);
    if (rc == ST_OK)
        rc = compare_with(&bf, &sa, ta, &sb, tb, out, &failed, err);
    buffers_free(&bf);
    if (rc == ST_OK && out->bytes_equal)
        out->status = ST_DIFF_SAME;
    return rc;
}

static int tensor_name_cmp(const st_tensor *x, const st_tensor *y)
{
    return st_name_cmp(x->name, x->name_len, y->name, y->name_len);
}

static int diff_tensors(const side *A, const side *B, const st_diff_options *opt,
                        diff_buffers *bf, st_diff_summary *sum, st_error *err)
{
    size_t na = side_count(A), nb = side_count(B);
    uint64_t total = 0, done = 0;
    for (size_t i = 0; i < na; i++)
        total += st_tensor_nbytes(side_by_name(A, i));
    size_t i = 0, j = 0;
    while (i < na || j < nb) {
        const st_tensor *ta = i < na ? side_by_name(A, i) : NULL;
        const st_tensor *tb = j < nb ? side_by_name(B, j) : NULL;
        int c = !ta ? 1 : !tb ? -1 : tensor_name_cmp(ta, tb);
        st_tensor_diff d;
        memset(&d, 0, sizeof d);
        if (c < 0) {
            d.status = ST_DIFF_ONLY_A;
            d.a = ta;
            sum->only_a++;
            i++;
        } else if (c > 0) {
            d.status = ST_DIFF_ONLY_B;
            d.b = tb;
            sum->only_b++;
            j++;
        } else {
            i++;
            j++;
            d.status = ST_DIFF_CHANGED;
            d.a = ta;
            d.b = tb;
            d.same_shape = st_op_same_shape(ta, tb);
            if (d.same_shape) {
                int rc = compare_with(bf, A, ta, B, tb, &d, &sum->failed_input, err);
                if (rc != ST_OK)
                    return rc;
                done += st_tensor_nbytes(ta);
                if (opt && opt->progress && opt->progress(opt->progress_ctx, done, total) != 0)
                    return st_fail(err, ST_E_CALLBACK, ST_NO_OFFSET,
                                   "stopped by the progress callback");
            }
            if (d.same_shape && d.bytes_equal) {
                d.status = ST_DIFF_SAME;
                sum->identical++;
                if (!opt || !opt->report_identical)
                    continue;
            } else {
                sum->changed++;
            }
        }
        if (opt && opt->on_tensor && opt->on_tensor(opt->ctx, &d) != 0)
            return st_fail(err, ST_E_CALLBACK, ST_NO_OFFSET, "diff callback failed");
    }
    return ST_OK;
}

static int diff_metadata(const side *A, const side *B, const st_diff_options *opt,
                         st_diff_summary *sum, st_error *err)
{
    size_t na = side_meta_count(A), nb = side_meta_count(B);
    size_t i = 0, j = 0;
    while (i < na || j < nb) {
        const char *ka = NULL, *va = NULL, *kb = NULL, *vb = NULL;
        size_t kal = 0, val = 0, kbl = 0, vbl = 0;
        if (i < na)
            side_meta_at(A, i, &ka, &kal, &va, &val);
        if (j < nb)
            side_meta_at(B, j, &kb, &kbl, &vb, &vbl);
        int c = i >= na ? 1 : j >= nb ? -1 : st_name_cmp(ka, kal, kb, kbl);
        int status;
        const char *k = ka;
        size_t kl = kal;
        if (c < 0) {
            status = ST_DIFF_ONLY_A;
            i++;
        } else if (c > 0) {
            status = ST_DIFF_ONLY_B;
            k = kb;
            kl = kbl;
            j++;
        } else {
            i++;
            j++;
            if (val == vbl && memcmp(va, vb, val) == 0)
                continue;
            status = ST_DIFF_CHANGED;
        }
        sum->metadata++;
        if (opt && opt->on_metadata && opt->on_metadata(opt->ctx, status, k, kl) != 0)
            return st_fail(err, ST_E_CALLBACK, ST_NO_OFFSET, "diff callback failed");
    }
    return ST_OK;
}

static int diff_metadata_sides(const side *a, const side *b, const st_diff_options *opt,
                               st_diff_summary *summary, st_error *err)
{
    st_diff_summary sum;
    memset(&sum, 0, sizeof sum);
    sum.failed_input = -1;
    int rc = diff_metadata(a, b, opt, &sum, err);
    sum.identical_files = rc == ST_OK && !sum.metadata;
    if (summary)
        *summary = sum;
    return rc;
}

static int diff_sides(const side *a, const side *b, const st_diff_options *opt,
                      st_diff_summary *summary, st_error *err)
{
    st_diff_summary sum;
    memset(&sum, 0, sizeof sum);
    sum.failed_input = -1;
    diff_buffers bf;
    memset(&bf, 0, sizeof bf);
    int rc = buffers_init(&bf, err);
    if (rc == ST_OK)
        rc = diff_tensors(a, b, opt, &bf, &sum, err);
    buffers_free(&bf);
    if (rc == ST_OK)
        rc = diff_metadata(a, b, opt, &sum, err);
    sum.identical_files = rc == ST_OK && !sum.changed && !sum.only_a && !sum.only_b &&
                          !sum.metadata;
    if (summary)
        *summary = sum;
    return rc;
}

static int null_inputs(st_diff_summary *summary, const char *what, st_error *err)
{
    if (summary) {
        memset(summary, 0, sizeof *summary);
        summary->failed_input = -1;
    }
    return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "%s: NULL input", what);
}

int st_diff_metadata(const st_file *a, const st_file *b, const st_diff_options *opt,
                     st_diff_summary *summary, st_error *err)
{
    if (!a || !b)
        return null_inputs(summary, "st_diff_metadata", err);
    side sa = {a, NULL}, sb = {b, NULL};
    return diff_metadata_sides(&sa, &sb, opt, summary, err);
}

int st_diff(const st_file *a, const st_file *b, const st_diff_options *opt,
            st_diff_summary *summary, st_error *err)
{
    if (!a || !b)
        return null_inputs(summary, "st_diff", err);
    side sa = {a, NULL}, sb = {b, NULL};
    return diff_sides(&sa, &sb, opt, summary, err);
}

int st_model_diff(const st_model *a, const st_model *b, const st_diff_options *opt,
                  st_diff_summary *summary, st_error *err)
{
    if (!a || !b)
        return null_inputs(summary, "st_model_diff", err);
    side sa = {NULL, a}, sb = {NULL, b};
    return diff_sides(&sa, &sb, opt, summary, err);
}

int st_model_diff_metadata(const st_model *a, const st_model *b, const st_diff_options *opt,
                           st_diff_summary *summary, st_error *err)
{
    if (!a || !b)
        return null_inputs(summary, "st_model_diff_metadata", err);
    side sa = {NULL, a}, sb = {NULL, b};
    return diff_metadata_sides(&sa, &sb, opt, summary, err);
}
