/* `safetensors diff`: what differs between two files. Tensors are matched
 * by name; for common tensors of the same shape the values are compared
 * in double precision (st_convert to F64), chunk by chunk through
 * st_tensor_read, so memory stays a few buffers whatever the file size. */
#include "cli.h"

#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "Usage: " CLI_NAME " diff [--json] A B\n"
    "\n"
    "Compare two safetensors files: tensors only in one of them, dtype and\n"
    "shape changes, and for common tensors of the same shape whether their\n"
    "bytes are equal, the largest absolute difference max|a-b| and the cosine\n"
    "similarity of the values (computed in double precision; any numeric\n"
    "dtype, C64 is compared by bytes only); then metadata keys only in one\n"
    "file or with different values. Identical tensors are not listed.\n"
    "\n"
    "Options:\n"
    "  --json      one JSON object: a, b, identical, tensors (the differing\n"
    "              ones, each with a status), identical_tensors, metadata\n"
    "  -h, --help  show this help\n"
    "\n"
    "Exit status, as diff(1) and cmp(1): 0 the files hold the same tensors\n"
    "(names, dtypes, shapes, bytes) and metadata, 1 they differ, 2 usage or\n"
    "I/O error or an invalid input file.\n";

/* Elements compared per step: bounds the buffers (2 x 8 bytes x CHUNK
 * decoded, 2 x at most 8 bytes x CHUNK raw). A multiple of 8 so that
 * sub-byte dtypes start each step on a whole byte. */
#define CHUNK ((size_t)1 << 18)

typedef struct diff_job {
    st_file *a, *b;
    const char *pa, *pb;
    bool json;
    bool first_json_item;
    unsigned char *ra, *rb; /* raw bytes */
    double *da, *db;        /* decoded values */
    float *fa, *fb;         /* decoded as F32 */
    size_t same, changed, only_a, only_b;
    size_t meta_diffs;
} diff_job;

typedef struct tensor_cmp {
    bool bytes_equal;
    bool numeric; /* max_abs and cosine are meaningful */
    double max_abs;
    double cosine;
} tensor_cmp;

static int name_cmp(const st_tensor *x, const st_tensor *y)
{
    size_t m = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, m);
    if (c)
        return c < 0 ? -1 : 1;
    return x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
}

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

static int read_failed(const char *path, int rc, st_error *err)
{
    if (err->code == ST_OK)
        err->code = rc;
    cli_print_error(path, err);
    return CLI_EXIT_ERROR;
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

/* Compares two tensors of the same shape. Returns an exit code (0 or 2). */
static int compare_values(diff_job *job, const st_tensor *ta, const st_tensor *tb, tensor_cmp *out)
{
    bool same_dtype = ta->dtype == tb->dtype;
    out->bytes_equal = same_dtype;
    out->numeric = decodable(ta->dtype) && decodable(tb->dtype);
    stats acc;
    memset(&acc, 0, sizeof acc);
    unsigned ba = st_dtype_bits(ta->dtype), bb = st_dtype_bits(tb->dtype);
    uint64_t n = ta->nelements;
    st_error err;
    memset(&err, 0, sizeof err);
    for (uint64_t e = 0; e < n;) {
        size_t k = n - e < CHUNK ? (size_t)(n - e) : CHUNK;
        size_t la = (size_t)(((uint64_t)k * ba + 7) / 8), lb = (size_t)(((uint64_t)k * bb + 7) / 8);
        int rc = st_tensor_read(job->a, ta, e * ba / 8, job->ra, la, &err);
        if (rc != ST_OK)
            return read_failed(job->pa, rc, &err);
        rc = st_tensor_read(job->b, tb, e * bb / 8, job->rb, lb, &err);
        if (rc != ST_OK)
            return read_failed(job->pb, rc, &err);
        if (out->bytes_equal && memcmp(job->ra, job->rb, la) != 0)
            out->bytes_equal = false;
        if (out->numeric) {
            if (fits_f32(ta->dtype) && fits_f32(tb->dtype)) {
                /* the common case (F16, BF16, F32): no widening pass */
                if (st_convert(ST_F32, job->fa, ta->dtype, job->ra, k, 0, &err) != ST_OK ||
                    st_convert(ST_F32, job->fb, tb->dtype, job->rb, k, 0, &err) != ST_OK)
                    out->numeric = false;
                else
                    accumulate_f32(&acc, job->fa, job->fb, k);
            } else if (decode(ta->dtype, job->ra, k, job->da, job->fa, &err) != ST_OK ||
                       decode(tb->dtype, job->rb, k, job->db, job->fa, &err) != ST_OK) {
                out->numeric = false;
            } else {
                accumulate_f64(&acc, job->da, job->db, k);
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
    /* NaN (printed as null / n/a) when a norm is zero, as numpy's
     * dot / (norm * norm) gives. */
    out->cosine = dot / (sqrt(na) * sqrt(nb));
    return CLI_EXIT_OK;
}

static void json_number(double v)
{
    if (isfinite(v))
        printf("%.17g", v);
    else
        fputs("null", stdout);
}

static void json_sep(diff_job *job)
{
    fputs(job->first_json_item ? "\n  " : ",\n  ", stdout);
    job->first_json_item = false;
}

static void print_name(const st_tensor *t)
{
    char *p = cli_printable(t->name, t->name_len);
    fputs(p ? p : "?", stdout);
    free(p);
}

static void print_shape(const st_tensor *t)
{
    char *s = cli_shape_text(t->shape, t->rank);
    fputs(s ? s : "?", stdout);
    free(s);
}

static void report_only(diff_job *job, const st_tensor *t, bool in_a)
{
    if (job->json) {
        json_sep(job);
        fputs("{\"name\": ", stdout);
        cli_json_string(stdout, t->name, t->name_len);
        printf(", \"status\": \"%s\", \"dtype\": \"%s\", \"shape\": ",
               in_a ? "only_in_a" : "only_in_b", st_dtype_name(t->dtype));
        cli_json_shape(stdout, t->shape, t->rank);
        fputs("}", stdout);
        return;
    }
    fputs(in_a ? "only in A: " : "only in B: ", stdout);
    print_name(t);
    printf("  %s ", st_dtype_name(t->dtype));
    print_shape(t);
    putchar('\n');
}

static void report_changed(diff_job *job, const st_tensor *ta, const st_tensor *tb,
                           const tensor_cmp *c, bool shaped)
{
    if (job->json) {
        json_sep(job);
        fputs("{\"name\": ", stdout);
        cli_json_string(stdout, ta->name, ta->name_len);
        printf(", \"status\": \"changed\", \"dtype_a\": \"%s\", \"dtype_b\": \"%s\", "
               "\"shape_a\": ",
               st_dtype_name(ta->dtype), st_dtype_name(tb->dtype));
        cli_json_shape(stdout, ta->shape, ta->rank);
        fputs(", \"shape_b\": ", stdout);
        cli_json_shape(stdout, tb->shape, tb->rank);
        if (shaped) {
            printf(", \"bytes_equal\": %s, \"max_abs_diff\": ", c->bytes_equal ? "true" : "false");
            if (c->numeric)
                json_number(c->max_abs);
            else
                fputs("null", stdout);
            fputs(", \"cosine\": ", stdout);
            if (c->numeric)
                json_number(c->cosine);
            else
                fputs("null", stdout);
        }
        fputs("}", stdout);
        return;
    }
    const char *what = !shaped ? "shape:     " : ta->dtype != tb->dtype ? "dtype:     "
                                                                        : "values:    ";
    fputs(what, stdout);
    print_name(ta);
    if (ta->dtype != tb->dtype)
        printf("  %s -> %s", st_dtype_name(ta->dtype), st_dtype_name(tb->dtype));
    else
        printf("  %s", st_dtype_name(ta->dtype));
    putchar(' ');
    print_shape(ta);
    if (!shaped) {
        fputs(" -> ", stdout);
        print_shape(tb);
    } else if (c->numeric) {
        if (isfinite(c->max_abs))
            printf("  max|a-b| %.6g", c->max_abs);
        else
            printf("  max|a-b| %s", isnan(c->max_abs) ? "nan" : "inf");
        if (isfinite(c->cosine))
            printf("  cosine %.9f", c->cosine);
        else
            fputs("  cosine n/a", stdout);
    } else {
        fputs("  (bytes differ)", stdout);
    }
    putchar('\n');
}

static int diff_tensors(diff_job *job)
{
    size_t na = st_tensor_count(job->a), nb = st_tensor_count(job->b);
    size_t i = 0, j = 0;
    while (i < na || j < nb) {
        const st_tensor *ta = i < na ? st_tensor_by_name_order(job->a, i) : NULL;
        const st_tensor *tb = j < nb ? st_tensor_by_name_order(job->b, j) : NULL;
        int c = !ta ? 1 : !tb ? -1 : name_cmp(ta, tb);
        if (c < 0) {
            report_only(job, ta, true);
            job->only_a++;
            i++;
            continue;
        }
        if (c > 0) {
            report_only(job, tb, false);
            job->only_b++;
            j++;
            continue;
        }
        i++;
        j++;
        tensor_cmp cmp;
        memset(&cmp, 0, sizeof cmp);
        if (!cli_same_shape(ta, tb)) {
            report_changed(job, ta, tb, &cmp, false);
            job->changed++;
            continue;
        }
        int rc = compare_values(job, ta, tb, &cmp);
        if (rc != CLI_EXIT_OK)
            return rc;
        if (cmp.bytes_equal) {
            job->same++;
            continue;
        }
        report_changed(job, ta, tb, &cmp, true);
        job->changed++;
    }
    return CLI_EXIT_OK;
}

static int key_cmp(const char *a, size_t al, const char *b, size_t bl)
{
    size_t m = al < bl ? al : bl;
    int c = memcmp(a, b, m);
    if (c)
        return c < 0 ? -1 : 1;
    return al < bl ? -1 : al > bl;
}

static void report_meta(diff_job *job, const char *status, const char *k, size_t kl)
{
    job->meta_diffs++;
    if (job->json) {
        json_sep(job);
        fputs("{\"key\": ", stdout);
        cli_json_string(stdout, k, kl);
        printf(", \"status\": \"%s\"}", status);
        return;
    }
    char *p = cli_printable(k, kl);
    printf("metadata %s: %s\n", status, p ? p : "?");
    free(p);
}

static void diff_metadata(diff_job *job)
{
    size_t na = st_metadata_count(job->a), nb = st_metadata_count(job->b);
    size_t i = 0, j = 0;
    while (i < na || j < nb) {
        const char *ka = NULL, *va = NULL, *kb = NULL, *vb = NULL;
        size_t kal = 0, val = 0, kbl = 0, vbl = 0;
        if (i < na)
            st_metadata_at(job->a, i, &ka, &kal, &va, &val);
        if (j < nb)
            st_metadata_at(job->b, j, &kb, &kbl, &vb, &vbl);
        int c = i >= na ? 1 : j >= nb ? -1 : key_cmp(ka, kal, kb, kbl);
        if (c < 0) {
            report_meta(job, job->json ? "only_in_a" : "only in A", ka, kal);
            i++;
        } else if (c > 0) {
            report_meta(job, job->json ? "only_in_b" : "only in B", kb, kbl);
            j++;
        } else {
            if (val != vbl || memcmp(va, vb, val) != 0)
                report_meta(job, "changed", ka, kal);
            i++;
            j++;
        }
    }
}

static int run(diff_job *job)
{
    int rc = cli_open_file(job->pa, ST_OPEN_PREAD, &job->a);
    if (rc != CLI_EXIT_OK)
        return CLI_EXIT_ERROR;
    rc = cli_open_file(job->pb, ST_OPEN_PREAD, &job->b);
    if (rc != CLI_EXIT_OK) {
        st_close(job->a);
        return CLI_EXIT_ERROR;
    }
    job->ra = malloc(CHUNK * 8);
    job->rb = malloc(CHUNK * 8);
    job->da = malloc(CHUNK * sizeof(double));
    job->db = malloc(CHUNK * sizeof(double));
    job->fa = malloc(CHUNK * sizeof(float));
    job->fb = malloc(CHUNK * sizeof(float));
    int ret = CLI_EXIT_ERROR;
    if (!job->ra || !job->rb || !job->da || !job->db || !job->fa || !job->fb) {
        cli_errorf("nomem: out of memory");
        goto done;
    }
    if (job->json) {
        fputs("{\"a\": ", stdout);
        cli_json_cstr(stdout, job->pa);
        fputs(", \"b\": ", stdout);
        cli_json_cstr(stdout, job->pb);
        fputs(",\n \"tensors\": [", stdout);
        job->first_json_item = true;
    }
    rc = diff_tensors(job);
    if (rc != CLI_EXIT_OK) {
        if (job->json)
            fputs("]}\n", stdout);
        ret = rc;
        goto done;
    }
    if (job->json) {
        fputs(job->first_json_item ? "],\n" : "\n ],\n", stdout);
        printf(" \"identical_tensors\": %zu,\n \"metadata\": [", job->same);
        job->first_json_item = true;
    }
    diff_metadata(job);
    bool identical = !job->changed && !job->only_a && !job->only_b && !job->meta_diffs;
    if (job->json) {
        fputs(job->first_json_item ? "],\n" : "\n ],\n", stdout);
        printf(" \"identical\": %s}\n", identical ? "true" : "false");
    } else {
        printf("%zu common tensor%s: %zu identical, %zu differ; %zu only in A, %zu only in B; "
               "%zu metadata difference%s\n",
               job->same + job->changed, job->same + job->changed == 1 ? "" : "s", job->same,
               job->changed, job->only_a, job->only_b, job->meta_diffs,
               job->meta_diffs == 1 ? "" : "s");
    }
    ret = identical ? CLI_EXIT_OK : 1;
done:
    free(job->ra);
    free(job->rb);
    free(job->da);
    free(job->db);
    free(job->fa);
    free(job->fb);
    st_close(job->a);
    st_close(job->b);
    return ret;
}

int cmd_diff(int argc, char **argv)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0},
    };
    diff_job job;
    memset(&job, 0, sizeof job);
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'h': return cli_help(usage);
        case 'j': job.json = true; break;
        default: return cli_usage_error(usage, NULL);
        }
    }
    if (argc - optind != 2)
        return cli_usage_error(usage, "diff: expected two files A and B");
    job.pa = argv[optind];
    job.pb = argv[optind + 1];
    return run(&job);
}
