/* Rewriting one safetensors file into another in the canonical layout:
 * tensors copied, or converted to another floating dtype chunk by chunk
 * inside the writer's read callbacks (memory stays a few buffers whatever
 * the file size), with the selections users ask of SD checkpoints: glob
 * patterns for what is converted and what is dropped, and the EMA rules
 * (drop model_ema.*, or write the EMA weights under the model's names). */
#include "sd/sd_input.h"

#include <stdlib.h>
#include <string.h>

/* Input bytes converted per step: bounds the scratch buffer. */
#define CONVERT_STEP_BYTES ((size_t)4 << 20)

#define EMA_PREFIX "model_ema."
#define MODEL_PREFIX "model."

typedef struct convert_job convert_job;

/* Where one output tensor's bytes come from. */
typedef struct source {
    convert_job *job;
    st_op_source copy; /* the input tensor whose bytes are written */
    st_dtype to;       /* the output dtype (the input's when copied) */
} source;

struct convert_job {
    st_op_input in;         /* IN: its file, or ... */
    const st_model *model;  /* ... the model it names (an index, a folder) */
    source *sources;        /* one per input tensor */
    unsigned flags;         /* st_convert flags */
    unsigned char *scratch; /* CONVERT_STEP_BYTES of input, for conversions */
};

/* Converts elements [e, e + ne) of the source tensor into out (ne * output
 * element size bytes), reading the input through the scratch buffer. For
 * sub-byte inputs e is a multiple of 8 (whole bytes). */
static int convert_elements(source *s, uint64_t e, size_t ne, unsigned char *out)
{
    convert_job *job = s->job;
    const st_tensor *t = s->copy.t;
    unsigned fbits = st_dtype_bits(t->dtype), tbits = st_dtype_bits(s->to);
    size_t step = CONVERT_STEP_BYTES * 8 / fbits; /* elements per step, a multiple of 8 */
    while (ne) {
        size_t k = ne < step ? ne : step;
        size_t in_bytes = (size_t)(((uint64_t)k * fbits + 7) / 8);
        st_error err;
        int rc = sd_in_read(&job->in, job->model, t, e * fbits / 8, job->scratch, in_bytes);
        if (rc != ST_OK)
            return rc;
        rc = st_convert(s->to, out, t->dtype, job->scratch, k, job->flags, &err);
        if (rc != ST_OK)
            return st_op_input_fail(&job->in, rc, &err);
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
    unsigned fbits = st_dtype_bits(s->copy.t->dtype);
    size_t ob = st_dtype_bits(s->to) / 8;
    uint64_t total = s->copy.t->nelements;
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
    return ST_OK;
}

static bool name_matches(const char *const *pats, size_t n, const st_tensor *named)
{
    for (size_t i = 0; i < n; i++)
        if (st_name_glob_match(pats[i], named->name, named->name_len))
            return true;
    return false;
}

/* The block-scaled MX kinds: their values mean little without the scales,
 * so they are converted only when an `only` pattern asks. */
static bool is_mx_kind(st_dtype d)
{
    return d == ST_F4 || d == ST_F6_E2M3 || d == ST_F6_E3M2 || d == ST_F8_E8M0;
}

/* Whether the dtype conversion applies to the tensor t, written under
 * named's name (the same tensor, or with ST_EMA_ONLY the weight an EMA twin
 * replaces): only/exclude match the name in the output. */
static bool wants_conversion(const st_convert_file_options *o, const st_tensor *t,
                             const st_tensor *named)
{
    if (!o->set_dtype || !st_dtype_is_float(t->dtype) || t->dtype == o->dtype)
        return false;
    if (!st_convert_supported(t->dtype, o->dtype))
        return false;
    if (o->nexclude && name_matches(o->exclude, o->nexclude, named))
        return false;
    if (o->nonly)
        return name_matches(o->only, o->nonly, named);
    return !is_mx_kind(t->dtype);
}

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
static const st_tensor *ema_twin(const convert_job *job, const st_tensor *t, char *buf,
                                 size_t cap)
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
    return sd_in_find(&job->in, job->model, buf, o);
}

/* Decides whether input tensor t is written: returns false to leave it
 * out; else true with *data set to the tensor whose bytes (dtype, shape)
 * are written under t's name: t itself, or its EMA twin for ST_EMA_ONLY. */
static bool select_tensor(const st_convert_file_options *o, const convert_job *job,
                          const st_tensor *t, const st_tensor **data,
                          st_convert_file_report *rep)
{
    *data = t;
    if (o->ema != ST_EMA_KEEP && is_ema_name(t)) {
        rep->ema_dropped++;
        return false;
    }
    if (o->ndrop && name_matches(o->drop, o->ndrop, t)) {
        rep->dropped++;
        return false;
    }
    if (o->ema == ST_EMA_ONLY) {
        char buf[1024];
        const st_tensor *twin = ema_twin(job, t, buf, sizeof buf);
        if (twin) {
            *data = twin;
            rep->ema_used++;
        }
    }
    return true;
}

/* ST_EMA_ONLY needs twins whose shape is the weight's, and at least one. */
static int check_ema(const st_convert_file_options *o, const convert_job *job, const char *in_path,
                     st_error *err)
{
    if (o->ema != ST_EMA_ONLY)
        return ST_OK;
    size_t n = sd_in_count(&job->in, job->model), twins = 0;
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = sd_in_at(&job->in, job->model, i);
        char buf[1024];
        const st_tensor *e = ema_twin(job, t, buf, sizeof buf);
        if (!e)
            continue;
        twins++;
        if (!st_op_same_shape(e, t)) {
            char qa[160], qb[160];
            st_quote_name(qa, sizeof qa, t->name, t->name_len);
            st_quote_name(qb, sizeof qb, e->name, e->name_len);
            return st_fail(err, ST_E_ARG, ST_NO_OFFSET,
                           "%s: EMA weight %s has another shape than %s", in_path, qb, qa);
        }
    }
    if (twins == 0)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET,
                       "%s: no EMA weights (model_ema.* twins of model.*) to keep", in_path);
    return ST_OK;
}

static int check_options(const char *in_path, const char *out_path,
                         const st_convert_file_options *o, st_error *err)
{
    if (!in_path || !out_path || !o)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_convert_file: NULL argument");
    if (o->ema != ST_EMA_KEEP && o->ema != ST_EMA_DROP && o->ema != ST_EMA_ONLY)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_convert_file: unknown EMA mode %d",
                       o->ema);
    if (o->set_dtype && (st_dtype_bits(o->dtype) < 8 || !st_dtype_is_float(o->dtype) ||
                         !st_convert_supported(ST_F32, o->dtype)))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "cannot convert to %s",
                       st_dtype_name(o->dtype) ? st_dtype_name(o->dtype) : "that dtype");
    if ((o->nonly && !o->only) || (o->nexclude && !o->exclude) || (o->ndrop && !o->drop))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_convert_file: NULL pattern list");
    return ST_OK;
}

/* st_read_fn of a tensor copied unchanged from a model's shard. */
static int model_copy_read(void *ctx, uint64_t offset, void *buf, size_t len)
{
    source *s = ctx;
    return sd_in_read(&s->job->in, s->job->model, s->copy.t, offset, buf, len);
}

/* Adds input tensor i to the writer as planned (or leaves it out). */
static int add_tensor(convert_job *job, const st_convert_file_options *o, size_t i,
                      st_writer *w, st_convert_file_report *rep, st_error *err)
{
    source *s = &job->sources[i];
    s->job = job;
    s->copy.in = &job->in;
    const st_tensor *named = sd_in_at(&job->in, job->model, i);
    if (!select_tensor(o, job, named, &s->copy.t, rep))
        return ST_OK;
    const st_tensor *t = s->copy.t;
    s->to = t->dtype;
    uint64_t nbytes = st_tensor_nbytes(t);
    /* a file's copied tensors may move inside the kernel (st_op_add_copy) */
    st_read_fn read = job->model ? model_copy_read : st_op_copy_read;
    void *ctx = job->model ? (void *)s : (void *)&s->copy;
    if (wants_conversion(o, t, named)) {
        uint64_t nb;
        /* output targets are whole bytes per element */
        if (!__builtin_mul_overflow(t->nelements, (uint64_t)(st_dtype_bits(o->dtype) / 8), &nb)) {
            s->to = o->dtype;
            nbytes = nb;
            read = convert_read;
            ctx = s;
        }
    }
    if (s->to != t->dtype) {
        rep->converted++;
        rep->from_count[t->dtype]++;
    } else if (o->set_dtype && s->to == o->dtype) {
        rep->already++;
    }
    /* an EMA twin's bytes go under the weight's name */
    int rc = read == st_op_copy_read
                 ? st_op_add_copy(w, named->name, named->name_len, &s->copy, err)
                 : st_writer_add_stream(w, named->name, named->name_len, s->to, t->shape, t->rank,
                                        nbytes, read, ctx, err);
    if (rc == ST_OK)
        rep->written++;
    return rc;
}

static int copy_metadata(const convert_job *job, st_writer *w, st_convert_file_report *rep,
                         st_error *err)
{
    size_t nmeta = sd_in_meta_count(&job->in, job->model);
    for (size_t i = 0; i < nmeta; i++) {
        const char *k, *v;
        size_t kl, vl;
        int rc = sd_in_meta_at(&job->in, job->model, i, &k, &kl, &v, &vl);
        if (rc == ST_OK)
            rc = st_writer_set_metadata(w, k, kl, v, vl, err);
        if (rc != ST_OK)
            return rc;
    }
    rep->metadata = nmeta;
    /* An empty "__metadata__" object stays; an absent one stays absent. */
    if (sd_in_meta_present(&job->in, job->model))
        st_writer_set_metadata_present(w, 1);
    return ST_OK;
}

int st_convert_file(const char *in_path, const char *out_path,
                    const st_convert_file_options *opt, st_convert_file_report *report,
                    st_error *err)
{
    st_convert_file_report rep;
    memset(&rep, 0, sizeof rep);
    rep.failed_input = -1;
    convert_job job;
    memset(&job, 0, sizeof job);
    st_model *owned = NULL;
    st_writer *w = NULL;
    int rc = check_options(in_path, out_path, opt, err);
    if (rc != ST_OK)
        goto done;
    job.in.path = in_path;
    if (sd_is_model_path(in_path))
        rc = st_model_open_variant(in_path, opt->variant, 0, &owned, err);
    else
        rc = st_open(in_path, ST_OPEN_PREAD, &job.in.file, err);
    job.model = owned;
    if (rc != ST_OK) {
        rep.failed_input = 0;
        goto done;
    }
    if (owned)
        for (size_t s = 0; s < st_model_shard_count(owned); s++)
            rep.input_size += st_model_shard_size(owned, s);
    else
        rep.input_size = st_file_size(job.in.file);
    /* Checked after opening IN so that a missing IN is reported as such. */
    if (sd_in_is_file_of(&job.in, job.model, out_path)) {
        rc = st_fail(err, ST_E_ARG, ST_NO_OFFSET, "OUT '%s' is %s (IN is never overwritten)",
                     out_path, owned ? "a file of the input model" : "the input file");
        goto done;
    }
    size_t n = sd_in_count(&job.in, job.model);
    w = st_writer_new();
    job.sources = calloc(n ? n : 1, sizeof *job.sources);
    job.flags = opt->convert_flags;
    if (opt->set_dtype)
        job.scratch = malloc(CONVERT_STEP_BYTES);
    if (!w || !job.sources || (opt->set_dtype && !job.scratch)) {
        rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
        goto done;
    }
    rc = check_ema(opt, &job, in_path, err);
    for (size_t i = 0; i < n && rc == ST_OK; i++)
        rc = add_tensor(&job, opt, i, w, &rep, err);
    if (rc == ST_OK)
        rc = copy_metadata(&job, w, &rep, err);
    if (rc != ST_OK)
        goto done;
    rep.kept = rep.written - rep.converted;
    st_writer_set_header_padding(w, opt->pad);
    rep.output_size = st_writer_output_size(w);
    st_writer_set_hooks(w, &opt->hooks);
    /* Nothing converted or left out: when the input is already in the
     * canonical layout the output is the input's bytes, so a file system
     * that shares extents can clone it (as cp does there). */
    if (!owned && rep.converted == 0 && rep.ema_used == 0 && rep.written == n) {
        rc = st_op_clone_write(w, job.in.file, out_path, &opt->hooks, err);
        if (rc != ST_E_UNSUPPORTED)
            goto done;
    }
    rc = st_op_write(w, out_path, &job.in, 1, &rep.failed_input, err);
done:
    st_writer_free(w);
    free(job.scratch);
    free(job.sources);
    st_close(job.in.file);
    st_model_close(owned);
    if (report)
        *report = rep;
    return rc;
}
