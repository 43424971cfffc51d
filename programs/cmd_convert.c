/* `safetensors convert`: rewrites a file in the canonical layout with the
 * library's writer (atomic: temporary file, fsync, rename), streaming each
 * tensor from the input so memory use stays small on large files. With
 * --dtype it also converts the floating tensors (st_convert), chunk by
 * chunk inside the writer's read callbacks: memory stays a few buffers
 * whatever the file size. */
#include "cli.h"
#include "convert_ckpt.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char usage[] =
    "Usage: " CLI_NAME " convert IN OUT\n"
    "       " CLI_NAME " convert IN OUT --dtype TYPE [--saturate]\n"
    "                   [--only GLOB]... [--exclude GLOB]...\n"
    "       " CLI_NAME " convert IN OUT [--ema drop|only] [--drop GLOB]...\n"
    "       " CLI_NAME " convert DIFFUSERS_DIR OUT --to single-file\n"
    "       " CLI_NAME " convert IN OUTDIR --to diffusers\n"
    "\n"
    "Rewrite IN as OUT in the canonical layout: tensors sorted by dtype (widest\n"
    "first) then name, compact header JSON with the metadata first, padded to a\n"
    "multiple of 8 bytes. Metadata is kept as it is; a header with an empty\n"
    "\"__metadata__\" keeps it. Without --dtype, tensor bytes are kept as they are.\n"
    "OUT is written to a temporary file in its folder, synced, then renamed:\n"
    "a failed run leaves no OUT. IN is never modified; OUT may not be IN.\n"
    "IN may be a sharded model (an index *.json or a folder): its shards are\n"
    "joined into OUT, as 'safetensors join' does.\n"
    "\n"
    "A PyTorch checkpoint IN (.ckpt .pt .pth .bin, zip or legacy; detected by\n"
    "content) is converted without running it: its tensors are written with\n"
    "metadata format=pt. IN is refused (exit 1) when its pickles name a\n"
    "dangerous global (see 'safetensors scan'); a malformed or truncated\n"
    "checkpoint is an error (exit 2).\n"
    "\n"
    "Options:\n"
    "  --dtype TYPE    convert the floating tensors to TYPE: f16, bf16, f32, f64,\n"
    "                  f8_e4m3, f8_e5m2, f8_e4m3fnuz, f8_e5m2fnuz, f8_e8m0 (also\n"
    "                  fp16/half, bfloat16, fp32/float, fp64/double; any case).\n"
    "                  Integer, BOOL and C64 tensors keep their dtype, and so do\n"
    "                  the block-scaled MX kinds (F4, F6_*, F8_E8M0) unless an\n"
    "                  --only pattern names them. Rounding is to nearest even;\n"
    "                  values too large for TYPE become Inf (or NaN for the F8\n"
    "                  kinds without Inf), as PyTorch's Tensor.to() does.\n"
    "  --only GLOB     convert only tensors whose name matches GLOB (repeatable;\n"
    "                  the others are copied unchanged)\n"
    "  --exclude GLOB  do not convert tensors whose name matches GLOB (repeatable)\n"
    "  --saturate      clamp values too large for TYPE to its largest finite value\n"
    "  --ema drop      leave out the EMA weights (model_ema.*): a pruned checkpoint\n"
    "  --ema only      write the EMA weights under the model's names and leave out\n"
    "                  model_ema.*: model.diffusion_model.input_blocks.0.0.weight\n"
    "                  gets model_ema.diffusion_modelinput_blocks00weight (LDM's\n"
    "                  LitEma naming: the name after \"model.\" without its dots);\n"
    "                  weights without an EMA twin are kept as they are\n"
    "  --drop GLOB     leave out tensors whose name matches GLOB (repeatable)\n"
    "  --allow-unsafe-globals\n"
    "                  convert a checkpoint whose pickles name a dangerous global\n"
    "                  anyway (nothing from it is ever run)\n"
    "  --to single-file  IN is a diffusers folder of Stable Diffusion 1.x: write\n"
    "                  it as one file with the names A1111/ComfyUI load\n"
    "  --to diffusers  IN is an SD1.x single file: write a diffusers folder\n"
    "                  (unet/ vae/ text_encoder/ scheduler/ and their configs;\n"
    "                  copy tokenizer/ from the base model)\n"
    "  -q, --quiet     no progress bar (it is shown only when stderr is a terminal)\n"
    "  -h, --help      show this help\n"
    "\n"
    "GLOB: * any run of characters (dots included), ? one character, [a-z] sets.\n"
    "Exit status: 0 success, 1 invalid IN, 2 usage or I/O error.\n";

/* Everything a conversion needs; later options (--dtype, --only,
 * --exclude, --ema, --drop) add their settings here and act in
 * plan_tensor(). */
typedef struct convert_opts {
    bool convert;        /* --dtype given */
    st_dtype to;         /* its dtype */
    unsigned flags;      /* st_convert flags (ST_CONVERT_SATURATE) */
    const char **only;   /* --only patterns */
    size_t nonly;
    const char **exclude;/* --exclude patterns */
    size_t nexclude;
    bool quiet;
    /* --ema / --drop: which tensors are kept, under which name (select_tensor) */
    int ema;             /* EMA_KEEP, EMA_DROP or EMA_ONLY */
    const char **drop;   /* --drop patterns */
    size_t ndrop;
    bool allow_unsafe_globals; /* checkpoints: convert despite dangerous globals */
    int layout;          /* --to: TO_SAME, TO_SINGLE or TO_DIFFUSERS */
} convert_opts;

enum { TO_SAME = 0, TO_SINGLE, TO_DIFFUSERS };

enum { EMA_KEEP = 0, EMA_DROP, EMA_ONLY };

typedef struct convert_job convert_job;

/* Where one output tensor's bytes come from. */
typedef struct source {
    convert_job *job;
    const st_tensor *src;
    st_dtype to;      /* the output dtype (src->dtype when copied) */
} source;

/* Input bytes converted per step: bounds the scratch buffer. */
#define CONVERT_STEP_BYTES ((size_t)4 << 20)

struct convert_job {
    const char *in_path;
    st_file *in;
    source *sources; /* one per input tensor */
    st_error read_err; /* first read failure, reported instead of "callback" */
    bool read_failed;
    unsigned flags;    /* st_convert flags */
    unsigned char *scratch; /* CONVERT_STEP_BYTES of input, for conversions */
    /* progress */
    bool progress;
    uint64_t done, total;
    double last_draw;
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

static double monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A one-line progress bar on stderr (a terminal), redrawn at most 10 times
 * a second; `final` clears it. */
static void progress(convert_job *job, uint64_t add, bool final)
{
    if (!job->progress)
        return;
    job->done += add;
    double t = monotonic_seconds();
    if (!final && t - job->last_draw < 0.1)
        return;
    job->last_draw = t;
    if (final) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
        return;
    }
    unsigned pct = job->total ? (unsigned)(job->done * 100 / job->total) : 100;
    char a[32], b[32], bar[41];
    unsigned fill = pct * 40 / 100;
    for (unsigned i = 0; i < 40; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[40] = 0;
    fprintf(stderr, "\r\033[Kconverting [%s] %3u%% %s / %s", bar, pct,
            cli_human_size(job->done, a, sizeof a), cli_human_size(job->total, b, sizeof b));
    fflush(stderr);
}

static int note_read_error(convert_job *job, int rc, const st_error *err)
{
    if (rc != ST_OK && !job->read_failed) {
        job->read_err = *err;
        job->read_failed = true;
    }
    return rc;
}

/* Copies a tensor's bytes unchanged from the input (pread). */
static int copy_read(void *ctx, uint64_t offset, void *buf, size_t len)
{
    source *s = ctx;
    st_error err;
    int rc = st_tensor_read(s->job->in, s->src, offset, buf, len, &err);
    if (rc == ST_OK)
        progress(s->job, len, false);
    return note_read_error(s->job, rc, &err);
}

/* Converts elements [e, e + ne) of the source tensor into out (ne * output
 * element size bytes), reading the input through the scratch buffer. For
 * sub-byte inputs e is a multiple of 8 (whole bytes). */
static int convert_elements(source *s, uint64_t e, size_t ne, unsigned char *out)
{
    convert_job *job = s->job;
    unsigned fbits = st_dtype_bits(s->src->dtype), tbits = st_dtype_bits(s->to);
    size_t step = CONVERT_STEP_BYTES * 8 / fbits; /* elements per step, a multiple of 8 */
    while (ne) {
        size_t k = ne < step ? ne : step;
        size_t in_bytes = (size_t)(((uint64_t)k * fbits + 7) / 8);
        st_error err;
        int rc = st_tensor_read(job->in, s->src, e * fbits / 8, job->scratch, in_bytes, &err);
        if (rc != ST_OK)
            return note_read_error(job, rc, &err);
        rc = st_convert(s->to, out, s->src->dtype, job->scratch, k, job->flags, &err);
        if (rc != ST_OK)
            return note_read_error(job, rc, &err);
        out += (size_t)k * (tbits / 8);
        e += k;
        ne -= k;
    }
    return ST_OK;
}

/* The writer asks for output bytes [offset, offset + len) in pieces of any
 * size and alignment: whole elements are converted straight into buf; an
 * element cut by a piece boundary goes through a small buffer. */
static int convert_read(void *ctx, uint64_t offset, void *buf, size_t len)
{
    source *s = ctx;
    unsigned fbits = st_dtype_bits(s->src->dtype);
    size_t ob = st_dtype_bits(s->to) / 8;
    uint64_t total = s->src->nelements;
    /* sub-byte inputs start each conversion on a whole byte: groups of 8 */
    uint64_t group = fbits < 8 ? 8 : 1;
    unsigned char *out = buf;
    size_t left = len;
    while (left) {
        uint64_t e = offset / ob;
        size_t skip = (size_t)(offset % ob);
        uint64_t ne = (skip + left) / ob;
        if (skip == 0 && e % group == 0 && ne > 0) {
            if (e + ne < total)
                ne -= ne % group;
        }
        if (skip == 0 && e % group == 0 && ne > 0) {
            int rc = convert_elements(s, e, (size_t)ne, out);
            if (rc != ST_OK)
                return rc;
            size_t bytes = (size_t)ne * ob;
            out += bytes;
            offset += bytes;
            left -= bytes;
            continue;
        }
        /* a cut element, or the start of a group: one group via tmp */
        unsigned char tmp[64];
        uint64_t g = e - e % group;
        uint64_t gn = total - g < group ? total - g : group;
        int rc = convert_elements(s, g, (size_t)gn, tmp);
        if (rc != ST_OK)
            return rc;
        size_t from = (size_t)(offset - g * ob);
        size_t avail = (size_t)gn * ob - from;
        size_t take = avail < left ? avail : left;
        memcpy(out, tmp + from, take);
        out += take;
        offset += take;
        left -= take;
    }
    progress(s->job, len, false);
    return ST_OK;
}

static bool name_matches(const char *const *pats, size_t n, const st_tensor *named)
{
    for (size_t i = 0; i < n; i++)
        if (cli_glob_match(pats[i], named->name, named->name_len))
            return true;
    return false;
}

/* The block-scaled MX kinds: their values mean little without the scales,
 * so they are converted only when an --only pattern asks. */
static bool is_mx_kind(st_dtype d)
{
    return d == ST_F4 || d == ST_F6_E2M3 || d == ST_F6_E3M2 || d == ST_F8_E8M0;
}

/* Whether --dtype applies to the tensor t, written under named's name
 * (the same tensor, or with --ema only the weight an EMA twin replaces):
 * --only/--exclude match the name in the output. */
static bool wants_conversion(const convert_opts *opts, const st_tensor *t,
                             const st_tensor *named)
{
    if (!opts->convert || !st_dtype_is_float(t->dtype) || t->dtype == opts->to)
        return false;
    if (!st_convert_supported(t->dtype, opts->to))
        return false;
    if (opts->nexclude && name_matches(opts->exclude, opts->nexclude, named))
        return false;
    if (opts->nonly)
        return name_matches(opts->only, opts->nonly, named);
    return !is_mx_kind(t->dtype);
}

/* ---- --ema and --drop: which tensors are written, under which name ---- */

#define EMA_PREFIX "model_ema."
#define MODEL_PREFIX "model."

static bool is_ema_name(const st_tensor *t)
{
    return t->name_len >= sizeof EMA_PREFIX - 1 &&
           memcmp(t->name, EMA_PREFIX, sizeof EMA_PREFIX - 1) == 0;
}

/* The EMA twin of a model weight, as LDM's LitEma names it (CompVis
 * ldm/modules/ema.py: the shadow of parameter NAME of `model` is the
 * buffer NAME with every '.' removed, under the LatentDiffusion's
 * `model_ema.`): model.diffusion_model.input_blocks.0.0.weight ->
 * model_ema.diffusion_modelinput_blocks00weight. NULL when there is none. */
static const st_tensor *ema_twin(const st_file *in, const st_tensor *t, char *buf, size_t cap)
{
    size_t pl = sizeof MODEL_PREFIX - 1, el = sizeof EMA_PREFIX - 1;
    if (t->name_len <= pl || memcmp(t->name, MODEL_PREFIX, pl) != 0 ||
        t->name_len - pl + el > cap)
        return NULL;
    memcpy(buf, EMA_PREFIX, el);
    size_t o = el;
    for (size_t i = pl; i < t->name_len; i++)
        if (t->name[i] != '.')
            buf[o++] = t->name[i];
    return st_find(in, buf, o);
}

typedef struct select_stats {
    size_t dropped;     /* by --drop */
    size_t ema_dropped; /* model_ema.* left out */
    size_t ema_used;    /* model.* weights replaced by their EMA */
} select_stats;

/* Decides whether input tensor t is written: returns 0 to leave it out;
 * else 1 with *data set to the tensor whose bytes (dtype, shape) are
 * written under t's name: t itself, or its EMA twin for --ema only. */
static int select_tensor(const convert_opts *opts, const st_file *in, const st_tensor *t,
                         const st_tensor **data, select_stats *st)
{
    *data = t;
    if (opts->ema != EMA_KEEP && is_ema_name(t)) {
        st->ema_dropped++;
        return 0;
    }
    for (size_t i = 0; i < opts->ndrop; i++)
        if (cli_glob_match(opts->drop[i], t->name, t->name_len)) {
            st->dropped++;
            return 0;
        }
    if (opts->ema == EMA_ONLY) {
        char buf[1024];
        const st_tensor *twin = ema_twin(in, t, buf, sizeof buf);
        if (twin) {
            *data = twin;
            st->ema_used++;
        }
    }
    return 1;
}

/* --ema only needs twins whose shape is the weight's. Returns false
 * (after saying why) when one does not, or when IN has no EMA at all. */
static bool check_ema(const convert_opts *opts, const st_file *in, const char *in_path)
{
    if (opts->ema != EMA_ONLY)
        return true;
    size_t n = st_tensor_count(in), twins = 0;
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_tensor_at(in, i);
        char buf[1024];
        const st_tensor *e = ema_twin(in, t, buf, sizeof buf);
        if (!e)
            continue;
        twins++;
        bool same = e->rank == t->rank;
        for (uint32_t d = 0; same && d < t->rank; d++)
            same = e->shape[d] == t->shape[d];
        if (!same) {
            char *a = cli_printable(t->name, t->name_len), *b = cli_printable(e->name, e->name_len);
            cli_errorf("invalid_argument: %s: EMA weight %s has another shape than %s", in_path,
                       b ? b : "?", a ? a : "?");
            free(a);
            free(b);
            return false;
        }
    }
    if (twins == 0) {
        cli_errorf("invalid_argument: %s: no EMA weights (model_ema.* twins of model.*) to "
                   "keep",
                   in_path);
        return false;
    }
    return true;
}

/* The per-tensor hook: fills *out and returns 1 to write the tensor,
 * returns 0 to leave it out. Tensors are copied as they are, or converted
 * to --dtype. */
static int plan_tensor(const convert_opts *opts, source *s, const st_tensor *named,
                       out_tensor *out)
{
    const st_tensor *t = s->src;
    out->name = t->name;
    out->name_len = t->name_len;
    out->dtype = t->dtype;
    out->shape = t->shape;
    out->rank = t->rank;
    out->nbytes = st_tensor_nbytes(t);
    out->read = copy_read;
    out->ctx = s;
    s->to = t->dtype;
    if (wants_conversion(opts, t, named)) {
        uint64_t nb;
        /* output targets are whole bytes per element */
        if (!__builtin_mul_overflow(t->nelements, (uint64_t)(st_dtype_bits(opts->to) / 8), &nb)) {
            s->to = opts->to;
            out->dtype = opts->to;
            out->nbytes = nb;
            out->read = convert_read;
        }
    }
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

/* --to: between a single SD1.x file and a diffusers folder. */
static int convert_layout(const convert_opts *opts, const char *in_path, const char *out_path)
{
    if (opts->convert || opts->ema != EMA_KEEP || opts->ndrop) {
        cli_errorf("unsupported: --to does not combine with --dtype, --ema or --drop; "
                   "run them as separate steps");
        return CLI_EXIT_ERROR;
    }
    st_error err;
    bool bar = !opts->quiet && isatty(STDERR_FILENO) == 1;
    int rc;
    if (opts->layout == TO_SINGLE) {
        rc = st_diffusers_to_single(in_path, out_path, bar ? cli_model_progress : NULL, NULL, &err);
        if (rc) {
            cli_print_error(in_path, &err);
            return cli_exit_code(rc);
        }
        return CLI_EXIT_OK;
    }
    st_model *m = NULL;
    rc = cli_open_model(in_path, &m);
    if (rc != CLI_EXIT_OK)
        return rc;
    size_t left = 0;
    rc = st_single_to_diffusers(m, out_path, bar ? cli_model_progress : NULL, NULL, &left, &err);
    st_model_close(m);
    if (rc) {
        cli_print_error(in_path, &err);
        return cli_exit_code(rc);
    }
    if (left)
        printf("left out %zu noise-schedule/EMA buffer%s (diffusers' scheduler computes them)\n",
               left, left == 1 ? "" : "s");
    return CLI_EXIT_OK;
}

static int convert_model(const convert_opts *opts, const char *in_path, const char *out_path)
{
    if (opts->convert || opts->ema != EMA_KEEP || opts->ndrop) {
        cli_errorf("unsupported: --dtype, --ema and --drop work on one file; "
                   "join the model first ('safetensors join'), then convert that file");
        return CLI_EXIT_ERROR;
    }
    st_model *m = NULL;
    int rc = cli_open_model(in_path, &m);
    if (rc != CLI_EXIT_OK)
        return rc;
    for (size_t i = 0; i < st_model_shard_count(m); i++) {
        if (cli_same_file(st_model_shard_path(m, i), out_path)) {
            st_model_close(m);
            cli_errorf("%s: invalid_argument: OUT is a shard of the input (IN is never overwritten)",
                       out_path);
            return CLI_EXIT_ERROR;
        }
    }
    st_error err;
    bool bar = !opts->quiet && isatty(STDERR_FILENO) == 1;
    rc = st_model_join(m, out_path, bar ? cli_model_progress : NULL, NULL, &err);
    st_model_close(m);
    if (rc) {
        cli_print_error(out_path, &err);
        return CLI_EXIT_ERROR;
    }
    return CLI_EXIT_OK;
}

static int run(const convert_opts *opts, const char *in_path, const char *out_path)
{
    convert_job job;
    memset(&job, 0, sizeof job);
    job.in_path = in_path;
    if (opts->layout != TO_SAME)
        return convert_layout(opts, in_path, out_path);
    /* A sharded model (index or folder): joined into one canonical file,
     * which is what convert writes for the same tensors and metadata. */
    if (cli_is_model_path(in_path))
        return convert_model(opts, in_path, out_path);
    /* Pickle-based checkpoints go to programs/convert_ckpt.c. */
    st_format fmt = ST_FORMAT_UNKNOWN;
    if (st_ckpt_detect(in_path, &fmt, NULL) == ST_OK && fmt != ST_FORMAT_SAFETENSORS &&
        fmt != ST_FORMAT_UNKNOWN) {
        if (opts->convert || opts->ema != EMA_KEEP || opts->ndrop) {
            cli_errorf("unsupported: --dtype, --ema and --drop work on safetensors input; "
                       "convert the checkpoint first, then that file");
            return CLI_EXIT_ERROR;
        }
        return convert_ckpt(in_path, out_path, opts->allow_unsafe_globals);
    }
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
    job.flags = opts->flags;
    if (opts->convert)
        job.scratch = malloc(CONVERT_STEP_BYTES);
    if (!w || !job.sources || (opts->convert && !job.scratch)) {
        cli_errorf("nomem: out of memory");
        goto done;
    }
    size_t written = 0, converted = 0, already = 0;
    size_t from_count[ST_DTYPE_COUNT] = {0};
    select_stats sel = {0, 0, 0};
    if (!check_ema(opts, job.in, in_path))
        goto done;
    for (size_t i = 0; i < n; i++) {
        source *s = &job.sources[i];
        s->job = &job;
        const st_tensor *named = st_tensor_at(job.in, i);
        if (!select_tensor(opts, job.in, named, &s->src, &sel))
            continue;
        out_tensor o;
        if (!plan_tensor(opts, s, named, &o))
            continue;
        o.name = named->name; /* an EMA twin's bytes go under the weight's name */
        o.name_len = named->name_len;
        if (o.dtype != s->src->dtype) {
            converted++;
            from_count[s->src->dtype]++;
        } else if (opts->convert && o.dtype == opts->to) {
            already++;
        }
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
    job.total = size;
    job.progress = !opts->quiet && isatty(STDERR_FILENO) == 1;
    rc = st_writer_write(w, out_path, &err);
    progress(&job, 0, true);
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
    if (opts->ema == EMA_ONLY)
        printf("ema: %zu model.* weight%s replaced by their EMA; ", sel.ema_used,
               sel.ema_used == 1 ? "" : "s");
    if (opts->ema != EMA_KEEP)
        printf("%zu model_ema.* tensor%s left out\n", sel.ema_dropped,
               sel.ema_dropped == 1 ? "" : "s");
    if (opts->ndrop)
        printf("dropped %zu tensor%s matching --drop\n", sel.dropped, sel.dropped == 1 ? "" : "s");
    if (opts->convert) {
        /* what changed: "converted 64 tensors to F16 (60 F32, 4 BF16)" */
        printf("converted %zu tensor%s to %s", converted, converted == 1 ? "" : "s",
               st_dtype_name(opts->to));
        const char *sep = " (";
        for (int d = 0; d < ST_DTYPE_COUNT; d++)
            if (from_count[d]) {
                printf("%s%zu %s", sep, from_count[d], st_dtype_name((st_dtype)d));
                sep = ", ";
            }
        printf("%s", converted ? ")" : "");
        size_t kept = written - converted;
        printf("; %zu kept as they were", kept);
        if (already)
            printf(" (%zu already %s)", already, st_dtype_name(opts->to));
        printf("\n");
        uint64_t before = st_file_size(job.in);
        printf("size: %s -> ", cli_human_size(before, a, sizeof a));
        printf("%s", cli_human_size(size, b, sizeof b));
        if (before)
            printf(" (%+.1f%%)", ((double)size - (double)before) * 100.0 / (double)before);
        printf("\n");
    }
    char *p = cli_printable(out_path, strlen(out_path));
    printf("wrote %s: %zu tensor%s, %zu metadata key%s, %s (%s bytes)\n", p ? p : "?",
           written, written == 1 ? "" : "s", nmeta, nmeta == 1 ? "" : "s",
           cli_human_size(size, a, sizeof a), cli_grouped(size, b, sizeof b));
    free(p);
    ret = CLI_EXIT_OK;
done:
    st_writer_free(w);
    free(job.scratch);
    free(job.sources);
    st_close(job.in);
    return ret;
}

static bool push_pattern(const char ***list, size_t *n, const char *pat)
{
    const char **l = realloc(*list, (*n + 1) * sizeof *l);
    if (!l)
        return false;
    l[(*n)++] = pat;
    *list = l;
    return true;
}

int cmd_convert(int argc, char **argv)
{
    enum { OPT_DTYPE = 256, OPT_ONLY, OPT_EXCLUDE, OPT_SATURATE, OPT_EMA, OPT_DROP, OPT_TO };
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {"dtype", required_argument, NULL, OPT_DTYPE},
        {"only", required_argument, NULL, OPT_ONLY},
        {"exclude", required_argument, NULL, OPT_EXCLUDE},
        {"saturate", no_argument, NULL, OPT_SATURATE},
        {"ema", required_argument, NULL, OPT_EMA},
        {"drop", required_argument, NULL, OPT_DROP},
        {"quiet", no_argument, NULL, 'q'},
        {"allow-unsafe-globals", no_argument, NULL, 'U'},
        {"to", required_argument, NULL, OPT_TO},
        {NULL, 0, NULL, 0},
    };
    convert_opts co;
    memset(&co, 0, sizeof co);
    int c, ret;
    bool selecting = false;
    while ((c = getopt_long(argc, argv, "hq", opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            ret = cli_help(usage);
            goto out;
        case 'q':
            co.quiet = true;
            break;
        case 'U':
            co.allow_unsafe_globals = true;
            break;
        case OPT_DTYPE:
            if (!cli_parse_dtype(optarg, &co.to)) {
                ret = cli_usage_error(usage, "convert: unknown or unsupported --dtype '%s'",
                                      optarg);
                goto out;
            }
            co.convert = true;
            break;
        case OPT_ONLY:
        case OPT_EXCLUDE:
            selecting = true;
            if (!(c == OPT_ONLY ? push_pattern(&co.only, &co.nonly, optarg)
                                : push_pattern(&co.exclude, &co.nexclude, optarg))) {
                cli_errorf("nomem: out of memory");
                ret = CLI_EXIT_ERROR;
                goto out;
            }
            break;
        case OPT_EMA:
            if (strcmp(optarg, "drop") == 0) {
                co.ema = EMA_DROP;
            } else if (strcmp(optarg, "only") == 0) {
                co.ema = EMA_ONLY;
            } else {
                ret = cli_usage_error(usage, "convert: --ema wants drop or only, got '%s'", optarg);
                goto out;
            }
            break;
        case OPT_DROP:
            if (!push_pattern(&co.drop, &co.ndrop, optarg)) {
                cli_errorf("nomem: out of memory");
                ret = CLI_EXIT_ERROR;
                goto out;
            }
            break;
        case OPT_TO:
            if (strcmp(optarg, "single-file") == 0) {
                co.layout = TO_SINGLE;
            } else if (strcmp(optarg, "diffusers") == 0) {
                co.layout = TO_DIFFUSERS;
            } else {
                ret = cli_usage_error(usage, "convert: --to wants single-file or diffusers, got '%s'",
                                      optarg);
                goto out;
            }
            break;
        case OPT_SATURATE:
            selecting = true;
            co.flags |= ST_CONVERT_SATURATE;
            break;
        default:
            ret = cli_usage_error(usage, NULL);
            goto out;
        }
    }
    if (selecting && !co.convert) {
        ret = cli_usage_error(usage, "convert: --only, --exclude and --saturate need --dtype");
        goto out;
    }
    if (argc - optind != 2) {
        ret = cli_usage_error(usage, "convert: expected IN and OUT");
        goto out;
    }
    ret = run(&co, argv[optind], argv[optind + 1]);
out:
    free(co.only);
    free(co.exclude);
    free(co.drop);
    return ret;
}
