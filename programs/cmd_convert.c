/* `safetensors convert`: rewrites a file in the canonical layout with the
 * library's writer (atomic: temporary file, fsync, rename), streaming each
 * tensor from the input so memory use stays small on large files. */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char usage[] =
    "Usage: " CLI_NAME " convert IN OUT\n"
    "\n"
    "Rewrite IN as OUT in the canonical layout: tensors sorted by dtype (widest\n"
    "first) then name, compact header JSON with the metadata first, padded to a\n"
    "multiple of 8 bytes. Tensor bytes and metadata are kept as they are; a\n"
    "header with an empty \"__metadata__\" keeps it.\n"
    "OUT is written to a temporary file in its folder, synced, then renamed:\n"
    "a failed run leaves no OUT. IN is never modified; OUT may not be IN.\n"
    "\n"
    "Options:\n"
    "  -h, --help  show this help\n"
    "\n"
    "Exit status: 0 success, 1 invalid IN, 2 usage or I/O error.\n";

/* Everything a conversion needs; later options (--dtype, --only,
 * --exclude, --ema, --drop) add their settings here and act in
 * plan_tensor(). */
typedef struct convert_opts {
    int reserved;
} convert_opts;

typedef struct convert_job convert_job;

/* Where one output tensor's bytes come from. */
typedef struct source {
    convert_job *job;
    const st_tensor *src;
} source;

struct convert_job {
    st_file *in;
    source *sources; /* one per input tensor */
    st_error read_err; /* first read failure, reported instead of "callback" */
    bool read_failed;
};

/* What to write for one input tensor. */
typedef struct out_tensor {
    const char *name;
    size_t name_len;
    st_dtype dtype;
    const uint64_t *shape;
    uint32_t rank;
    uint64_t nbytes;
    st_read_fn read; /* produces the output bytes */
    void *ctx;
} out_tensor;

/* Copies a tensor's bytes unchanged from the input (pread). */
static int copy_read(void *ctx, uint64_t offset, void *buf, size_t len)
{
    source *s = ctx;
    st_error err;
    int rc = st_tensor_read(s->job->in, s->src, offset, buf, len, &err);
    if (rc != ST_OK && !s->job->read_failed) {
        s->job->read_err = err;
        s->job->read_failed = true;
    }
    return rc;
}

/* The per-tensor hook: fills *out and returns 1 to write the tensor,
 * returns 0 to leave it out. Today every tensor is copied as it is. */
static int plan_tensor(const convert_opts *opts, source *s, out_tensor *out)
{
    (void)opts;
    const st_tensor *t = s->src;
    out->name = t->name;
    out->name_len = t->name_len;
    out->dtype = t->dtype;
    out->shape = t->shape;
    out->rank = t->rank;
    out->nbytes = st_tensor_nbytes(t);
    out->read = copy_read;
    out->ctx = s;
    return 1;
}

/* 1 when both paths name the same file (OUT may not exist yet). */
static bool same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0)
        return false;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static int run(const convert_opts *opts, const char *in_path, const char *out_path)
{
    convert_job job;
    memset(&job, 0, sizeof job);
    int rc = cli_open_file(in_path, ST_OPEN_PREAD, &job.in);
    if (rc != CLI_EXIT_OK)
        return rc;
    st_error err;
    memset(&err, 0, sizeof err);
    /* Checked after opening IN so that a missing IN is reported as such. */
    if (same_file(in_path, out_path)) {
        char *p = cli_printable(out_path, strlen(out_path));
        cli_errorf("%s: invalid_argument: OUT is the input file (IN is never overwritten)",
                   p ? p : "?");
        free(p);
        st_close(job.in);
        return CLI_EXIT_ERROR;
    }

    int ret = CLI_EXIT_ERROR;
    size_t n = st_tensor_count(job.in);
    st_writer *w = st_writer_new();
    job.sources = calloc(n ? n : 1, sizeof *job.sources);
    if (!w || !job.sources) {
        cli_errorf("nomem: out of memory");
        goto done;
    }
    size_t written = 0;
    for (size_t i = 0; i < n; i++) {
        source *s = &job.sources[i];
        s->job = &job;
        s->src = st_tensor_at(job.in, i);
        out_tensor o;
        if (!plan_tensor(opts, s, &o))
            continue;
        rc = st_writer_add_stream(w, o.name, o.name_len, o.dtype, o.shape, o.rank, o.nbytes,
                                  o.read, o.ctx, &err);
        if (rc != ST_OK) {
            if (err.code == ST_OK)
                err.code = rc;
            cli_print_error(out_path, &err);
            goto done;
        }
        written++;
    }
    size_t nmeta = st_metadata_count(job.in);
    for (size_t i = 0; i < nmeta; i++) {
        const char *k, *v;
        size_t kl, vl;
        rc = st_metadata_at(job.in, i, &k, &kl, &v, &vl);
        if (rc == ST_OK)
            rc = st_writer_set_metadata(w, k, kl, v, vl, &err);
        if (rc != ST_OK) {
            if (err.code == ST_OK)
                err.code = rc;
            cli_print_error(out_path, &err);
            goto done;
        }
    }
    /* An empty "__metadata__" object stays; an absent one stays absent. */
    if (st_metadata_present(job.in))
        st_writer_set_metadata_present(w, 1);

    uint64_t size = st_writer_output_size(w);
    rc = st_writer_write(w, out_path, &err);
    if (rc != ST_OK) {
        if (job.read_failed)
            cli_print_error(in_path, &job.read_err);
        else {
            if (err.code == ST_OK)
                err.code = rc;
            cli_print_error(out_path, &err);
        }
        /* IN was valid, so whatever failed here (a read of IN that
         * changed underneath, the write of OUT) is an I/O error: exit 2. */
        goto done;
    }
    char a[32], b[32];
    char *p = cli_printable(out_path, strlen(out_path));
    printf("wrote %s: %zu tensor%s, %zu metadata key%s, %s (%s bytes)\n", p ? p : "?",
           written, written == 1 ? "" : "s", nmeta, nmeta == 1 ? "" : "s",
           cli_human_size(size, a, sizeof a), cli_grouped(size, b, sizeof b));
    free(p);
    ret = CLI_EXIT_OK;
done:
    st_writer_free(w);
    free(job.sources);
    st_close(job.in);
    return ret;
}

int cmd_convert(int argc, char **argv)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    convert_opts co;
    memset(&co, 0, sizeof co);
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'h': return cli_help(usage);
        default: return cli_usage_error(usage, NULL);
        }
    }
    if (argc - optind != 2)
        return cli_usage_error(usage, "convert: expected IN and OUT");
    return run(&co, argv[optind], argv[optind + 1]);
}
