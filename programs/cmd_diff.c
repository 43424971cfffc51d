/* `safetensors diff`: what differs between two files or models. The
 * comparison is st_diff, or st_model_diff when either side is a sharded
 * model (lib/sd/diff.c); this file parses options and prints. */
#include "cli.h"

#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "Usage: " CLI_NAME " diff [--json] A B\n"
    "\n"
    "Compare two safetensors files or models (A and B may each be a file, a\n"
    "sharded model's index *.json or its folder): tensors only in one of\n"
    "them, dtype and shape changes, and for common tensors of the same shape\n"
    "whether their bytes are equal, the largest absolute difference max|a-b|\n"
    "and the cosine similarity of the values (computed in double precision;\n"
    "any numeric dtype, C64 is compared by bytes only); then metadata keys\n"
    "only in one side or with different values. Identical tensors are not\n"
    "listed.\n"
    "\n"
    "Options:\n"
    "  --json      one JSON object: a, b, identical, tensors (the differing\n"
    "              ones, each with a status), identical_tensors, metadata\n"
    "  -q, --quiet  no progress line (shown when stderr is a terminal)\n"
    "  --progress   a progress line even when stderr is not a terminal\n"
    "  -h, --help  show this help\n"
    "\n"
    "Exit status, as diff(1) and cmp(1): 0 the files hold the same tensors\n"
    "(names, dtypes, shapes, bytes) and metadata, 1 they differ, 2 usage or\n"
    "I/O error or an invalid input file.\n";

typedef struct diff_job {
    bool json;
    bool first_json_item;
    cli_progress *bar;
    size_t identical;   /* identical tensors so far (reported to on_tensor) */
    bool meta_started;  /* the tensor list is closed, the metadata begun */
} diff_job;

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
                           const st_tensor_diff *c, bool shaped)
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

static int on_tensor(void *ctx, const st_tensor_diff *d)
{
    diff_job *job = ctx;
    if (d->status == ST_DIFF_SAME) {
        job->identical++; /* counted for the JSON, not listed */
        return 0;
    }
    if (d->status == ST_DIFF_ONLY_A)
        report_only(job, d->a, true);
    else if (d->status == ST_DIFF_ONLY_B)
        report_only(job, d->b, false);
    else
        report_changed(job, d->a, d->b, d, d->same_shape);
    return 0;
}

static void report_meta(diff_job *job, const char *status, const char *k, size_t kl)
{
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

/* st_diff reports metadata after every tensor: the first metadata report
 * (or the end) closes the tensor list and opens the metadata one. */
static void start_metadata(diff_job *job)
{
    if (job->meta_started)
        return;
    job->meta_started = true;
    if (!job->json)
        return;
    fputs(job->first_json_item ? "],\n" : "\n ],\n", stdout);
    printf(" \"identical_tensors\": %zu,\n \"metadata\": [", job->identical);
    job->first_json_item = true;
}

static int on_metadata(void *ctx, int status, const char *k, size_t kl)
{
    diff_job *job = ctx;
    start_metadata(job);
    const char *what = status == ST_DIFF_ONLY_A   ? (job->json ? "only_in_a" : "only in A")
                       : status == ST_DIFF_ONLY_B ? (job->json ? "only_in_b" : "only in B")
                                                  : "changed";
    report_meta(job, what, k, kl);
    return 0;
}

/* The two sides: files, or (when either is a sharded model) models. */
typedef struct sides {
    st_file *fa, *fb;
    st_model *ma, *mb;
} sides;

static void close_sides(sides *s)
{
    st_close(s->fa);
    st_close(s->fb);
    st_model_close(s->ma);
    st_model_close(s->mb);
}

static int open_sides(sides *s, const char *pa, const char *pb)
{
    memset(s, 0, sizeof *s);
    if (cli_is_model_path(pa) || cli_is_model_path(pb)) {
        if (cli_open_model(pa, &s->ma) != CLI_EXIT_OK || cli_open_model(pb, &s->mb) != CLI_EXIT_OK)
            return CLI_EXIT_ERROR;
        return CLI_EXIT_OK;
    }
    if (cli_open_file(pa, ST_OPEN_PREAD, &s->fa) != CLI_EXIT_OK ||
        cli_open_file(pb, ST_OPEN_PREAD, &s->fb) != CLI_EXIT_OK)
        return CLI_EXIT_ERROR;
    return CLI_EXIT_OK;
}

static int run(diff_job *job, const char *pa, const char *pb)
{
    sides sd;
    int rc = open_sides(&sd, pa, pb);
    if (rc != CLI_EXIT_OK) {
        close_sides(&sd);
        return CLI_EXIT_ERROR;
    }
    if (job->json) {
        fputs("{\"a\": ", stdout);
        cli_json_cstr(stdout, pa);
        fputs(", \"b\": ", stdout);
        cli_json_cstr(stdout, pb);
        fputs(",\n \"tensors\": [", stdout);
        job->first_json_item = true;
    }
    /* Tensors first, then (in JSON, a second list) the metadata: the
     * metadata callback opens its list on its first call. */
    st_diff_options opt;
    memset(&opt, 0, sizeof opt);
    opt.on_tensor = on_tensor;
    opt.on_metadata = on_metadata;
    opt.report_identical = 1;
    opt.ctx = job;
    opt.progress = cli_progress_cb;
    opt.progress_ctx = job->bar;
    st_diff_summary sum;
    st_error err;
    memset(&err, 0, sizeof err);
    rc = sd.ma ? st_model_diff(sd.ma, sd.mb, &opt, &sum, &err)
               : st_diff(sd.fa, sd.fb, &opt, &sum, &err);
    if (rc != ST_OK) {
        if (job->json)
            fputs("]}\n", stdout);
        close_sides(&sd);
        cli_report(sum.failed_input == 1 ? pb : sum.failed_input == 0 ? pa : NULL, rc, &err);
        return CLI_EXIT_ERROR;
    }
    start_metadata(job);
    bool identical = sum.identical_files;
    if (job->json) {
        fputs(job->first_json_item ? "],\n" : "\n ],\n", stdout);
        printf(" \"identical\": %s}\n", identical ? "true" : "false");
    } else {
        size_t common = sum.identical + sum.changed;
        printf("%zu common tensor%s: %zu identical, %zu differ; %zu only in A, %zu only in B; "
               "%zu metadata difference%s\n",
               common, common == 1 ? "" : "s", sum.identical, sum.changed, sum.only_a,
               sum.only_b, sum.metadata, sum.metadata == 1 ? "" : "s");
    }
    close_sides(&sd);
    return identical ? CLI_EXIT_OK : 1;
}

int cmd_diff(int argc, char **argv)
{
    static const cli_command cmd = {usage, CLI_OPT_JSON | CLI_OPT_PROGRESS, NULL, NULL, NULL,
                                    false};
    cli_common common;
    int ret = cli_parse_options(argc, argv, &cmd, &common, NULL);
    if (ret >= 0)
        return ret;
    if (argc - common.first_arg != 2)
        return cli_usage_error(usage, "diff: expected two files or models A and B");
    diff_job job;
    memset(&job, 0, sizeof job);
    job.json = common.json;
    cli_progress *bar = cli_progress_new("diff", &common);
    job.bar = bar;
    ret = run(&job, argv[common.first_arg], argv[common.first_arg + 1]);
    cli_progress_done(bar);
    return ret;
}
