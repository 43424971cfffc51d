/*
 * Whole-model operations: split (a model into shards and an index, with
 * huggingface_hub's packing rules and transformers' or huggingface_hub's
 * index layout) and join (a model into one canonical file). Both go
 * through st_writer, so memory does not grow with tensor sizes; tensor
 * bytes move inside the kernel (copy_file_range) while the shards'
 * descriptors can be held open, and stream through reads otherwise.
 */
#include "common/outfile.h"
#include "model/model_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- sizes ---- */

/* A staged file stays until everything is written and renamed into
 * place: the temp hook hears of it so an interrupted run can remove it. */
static void staged_note(const st_output_hooks *h, const char *path, bool created)
{
    if (h->temp)
        h->temp(h->temp_ctx, path, created ? 1 : 0);
}

int st_parse_size(const char *text, uint64_t *out, st_error *err)
{
    if (!text || !out)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_parse_size: text and out are required");
    size_t n = strlen(text);
    while (n && (text[n - 1] == ' ' || text[n - 1] == '\t'))
        n--;
    while (n && (*text == ' ' || *text == '\t')) {
        text++;
        n--;
    }
    static const struct {
        const char *unit;
        double mul;
    } units[] = {
        {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0}, {"TiB", 1099511627776.0},
        {"KB", 1e3},     {"MB", 1e6},        {"GB", 1e9},           {"TB", 1e12},
    };
    double mul = 1;
    size_t num_len = n;
    for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
        size_t ul = strlen(units[u].unit);
        if (n > ul && strncasecmp(text + n - ul, units[u].unit, ul) == 0) {
            mul = units[u].mul;
            num_len = n - ul;
            break;
        }
    }
    char num[64];
    while (num_len && text[num_len - 1] == ' ')
        num_len--;
    if (num_len == 0 || num_len >= sizeof num)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "invalid size '%s' (e.g. 5GB, 500MB, 2GiB)", text);
    memcpy(num, text, num_len);
    num[num_len] = '\0';
    /* Digits, one optional point and an exponent: what Python's float()
     * reads, less the spellings (inf, nan, signs, '_') no size needs. */
    bool digit = false;
    for (size_t k = 0; k < num_len; k++) {
        char c = num[k];
        if (c >= '0' && c <= '9')
            digit = true;
        else if (c != '.' && c != 'e' && c != 'E' && !((c == '+' || c == '-') && k && (num[k - 1] == 'e' || num[k - 1] == 'E')))
            return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "invalid size '%s' (e.g. 5GB, 500MB, 2GiB)", text);
    }
    char *end;
    errno = 0;
    double v = strtod(num, &end);
    if (!digit || *end || errno || !(v > 0))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "invalid size '%s' (e.g. 5GB, 500MB, 2GiB)", text);
    if (mul == 1 && strchr(num, '.'))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "invalid size '%s': bytes must be whole", text);
    double bytes = v * mul; /* one rounding, as Python's value * multiplier */
    if (!(bytes < 18446744073709551616.0))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "size '%s' is too large", text);
    uint64_t r = (uint64_t)bytes; /* int() truncates */
    if (r == 0)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "size '%s' is less than one byte", text);
    *out = r;
    return ST_OK;
}

/* ---- streaming tensors out of a model ---- */

typedef struct job {
    st_progress_fn progress;
    void *progress_ctx;
    uint64_t done, total;
    struct timespec last;
    bool failed;       /* a read failed: err holds why */
    bool cancelled;    /* the progress callback asked to stop */
    st_error err;
} job;

typedef struct src {
    const st_model *m;
    const st_tensor *t;
    job *j;
    bool held;         /* added as a file range: its shard's fd is held */
} src;

/* The writer's progress over one output, as the job's: base + done. */
typedef struct out_progress {
    job *j;
    uint64_t base;
} out_progress;

static bool progress_due(job *j)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t ms = (int64_t)(now.tv_sec - j->last.tv_sec) * 1000 + (now.tv_nsec - j->last.tv_nsec) / 1000000;
    if (ms < 200)
        return false;
    j->last = now;
    return true;
}

static int report(job *j, bool final)
{
    if (!j->progress || (!final && !progress_due(j)))
        return 0;
    if (j->progress(j->progress_ctx, j->done, j->total) != 0) {
        j->cancelled = true;
        return 1;
    }
    return 0;
}

static int read_src(void *ctx, uint64_t offset, void *buf, size_t len)
{
    src *s = ctx;
    if (st_model_tensor_read(s->m, s->t, offset, buf, len, &s->j->err) != ST_OK) {
        s->j->failed = true;
        return 1;
    }
    return 0;
}

static int writer_progress(void *ctx, uint64_t done, uint64_t total)
{
    out_progress *p = ctx;
    (void)total;
    p->j->done = p->base + done < p->j->total ? p->base + done : p->j->total;
    return report(p->j, false);
}

/* The hooks a writer of the job gets: the temporary file, and progress
 * through op when the job reports any. */
static st_output_hooks writer_hooks(const st_output_hooks *temp_only, out_progress *op)
{
    st_output_hooks h = *temp_only;
    if (op->j->progress) {
        h.progress = writer_progress;
        h.progress_ctx = op;
    }
    return h;
}

/* The writer's error, or the read error / cancellation behind it. */
static int job_error(job *j, int rc, st_error *err)
{
    if (j->failed) {
        if (err)
            *err = j->err;
        return j->err.code;
    }
    if (j->cancelled)
        return st_fail(err, ST_E_CALLBACK, ST_NO_OFFSET, "stopped by the progress callback");
    return rc;
}

static void job_init(job *j, st_progress_fn progress, void *ctx, uint64_t total)
{
    memset(j, 0, sizeof *j);
    j->progress = progress;
    j->progress_ctx = ctx;
    j->total = total;
    clock_gettime(CLOCK_MONOTONIC, &j->last);
}

/* Adds tensors[0..n) of the model to w: as file ranges while shard
 * descriptors can be held, else read through srcs[k]. */
static int add_tensors(st_writer *w, const st_model *m, const st_tensor *const *tensors, size_t n,
                       src *srcs, job *j, st_error *err)
{
    bool kernel = st_kernel_copy_allowed();
    for (size_t k = 0; k < n; k++)
        srcs[k] = (src){m, tensors[k], j, false};
    for (size_t k = 0; k < n; k++) {
        const st_tensor *t = tensors[k];
        int fd, rc;
        uint64_t off;
        if (kernel && st_model_tensor_file_range(m, t, &fd, &off) == ST_OK) {
            srcs[k].held = true;
            rc = st_writer_add_file_range(w, t->name, t->name_len, t->dtype, t->shape, t->rank,
                                          fd, off, t->end - t->begin, err);
        } else {
            rc = st_writer_add_stream(w, t->name, t->name_len, t->dtype, t->shape, t->rank,
                                      t->end - t->begin, read_src, &srcs[k], err);
        }
        if (rc)
            return rc;
    }
    return ST_OK;
}

/* Lets go of the descriptors add_tensors held. */
static void release_tensors(src *srcs, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (srcs[k].held) {
            st_model_tensor_file_release(srcs[k].m, srcs[k].t);
            srcs[k].held = false;
        }
}

static int add_metadata(st_writer *w, const st_model *m, bool add_format, st_error *err)
{
    size_t n = st_model_metadata_count(m);
    for (size_t i = 0; i < n; i++) {
        const char *k, *v;
        size_t kl, vl;
        st_model_metadata_at(m, i, &k, &kl, &v, &vl);
        int rc = st_writer_set_metadata(w, k, kl, v, vl, err);
        if (rc)
            return rc;
    }
    if (add_format && !st_model_metadata_get(m, "format", 6, NULL))
        return st_writer_set_metadata(w, "format", 6, "pt", 2, err);
    st_writer_set_metadata_present(w, st_model_metadata_present(m));
    return ST_OK;
}

/* ---- join ---- */

int st_model_join(const st_model *m, const char *out_path, const st_output_hooks *hooks, st_error *err)
{
    st_progress_fn progress = hooks ? hooks->progress : NULL;
    void *progress_ctx = hooks ? hooks->progress_ctx : NULL;
    st_output_hooks temp_only = {.temp = hooks ? hooks->temp : NULL, .temp_ctx = hooks ? hooks->temp_ctx : NULL};
    if (!m || !out_path)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_model_join: model and path are required");
    size_t n = st_model_tensor_count(m);
    st_writer *w = st_writer_new();
    const st_tensor **ts = malloc((n + 1) * sizeof *ts);
    src *srcs = malloc((n + 1) * sizeof *srcs);
    if (!w || !ts || !srcs) {
        st_writer_free(w);
        free(ts);
        free(srcs);
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    }
    for (size_t i = 0; i < n; i++)
        ts[i] = st_model_tensor_at(m, i);
    job j;
    job_init(&j, progress, progress_ctx, st_model_total_size(m));
    int rc = add_tensors(w, m, ts, n, srcs, &j, err);
    if (!rc)
        rc = add_metadata(w, m, false, err);
    out_progress op = {&j, 0};
    if (!rc) {
        st_output_hooks wh = writer_hooks(&temp_only, &op);
        st_writer_set_hooks(w, &wh);
        rc = st_writer_write(w, out_path, err);
        if (rc)
            rc = job_error(&j, rc, err);
        else if ((j.done = j.total, report(&j, true)))
            rc = st_fail(err, ST_E_CALLBACK, ST_NO_OFFSET, "stopped by the progress callback");
    }
    release_tensors(srcs, n);
    st_writer_free(w);
    free(ts);
    free(srcs);
    return rc;
}

/* ---- split: the plan ---- */

typedef struct plan {
    size_t *shard_of;  /* by name-order position: shard id */
    size_t *pos_of;    /* shard id -> position in the shard list */
    size_t nshards;
} plan;

/* huggingface_hub's split_state_dict_into_shards_factory, on sizes in
 * name order (safetensors' load order). */
static int make_plan(const st_model *m, uint64_t max, plan *p, st_error *err)
{
    size_t n = st_model_tensor_count(m);
    p->shard_of = malloc((n + 1) * sizeof *p->shard_of);
    p->pos_of = malloc((n + 1) * sizeof *p->pos_of);
    if (!p->shard_of || !p->pos_of)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    size_t ids = 0, listed = 0;
    size_t cur = SIZE_MAX; /* the shard being filled, once it has an id */
    uint64_t cur_size = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t sz = st_tensor_nbytes(st_model_tensor_by_name_order(m, i));
        if (sz > max) {
            p->shard_of[i] = ids;
            p->pos_of[ids++] = listed++;
            continue;
        }
        if (cur != SIZE_MAX && cur_size > max - sz) {
            p->pos_of[cur] = listed++;
            cur = SIZE_MAX;
            cur_size = 0;
        }
        if (cur == SIZE_MAX)
            cur = ids++;
        p->shard_of[i] = cur;
        cur_size += sz;
    }
    if (cur != SIZE_MAX)
        p->pos_of[cur] = listed++;
    p->nshards = listed;
    /* Shard lists hold positions from here on. */
    for (size_t i = 0; i < n; i++)
        p->shard_of[i] = p->pos_of[p->shard_of[i]];
    return ST_OK;
}

/* ---- split: the index text, as Python's json.dumps(indent=2) ---- */

typedef struct text {
    char *s;
    size_t len, cap;
    bool failed;
} text;

static void put(text *t, const char *s, size_t n)
{
    if (t->failed)
        return;
    if (n > t->cap - t->len) {
        size_t c = t->cap ? t->cap : 4096;
        while (c - t->len < n) {
            if (c > SIZE_MAX / 2) {
                t->failed = true;
                return;
            }
            c *= 2;
        }
        char *ns = realloc(t->s, c);
        if (!ns) {
            t->failed = true;
            return;
        }
        t->s = ns;
        t->cap = c;
    }
    memcpy(t->s + t->len, s, n);
    t->len += n;
}

static void puts_(text *t, const char *s)
{
    put(t, s, strlen(s));
}

/* A JSON string with ensure_ascii: every code point outside ' '..'~' is
 * escaped (as \uXXXX, lower-case hex, surrogate pairs above U+FFFF) but
 * for the short escapes Python uses. Input is valid UTF-8. */
static void put_json_string(text *t, const char *s, size_t n)
{
    put(t, "\"", 1);
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        uint32_t cp;
        size_t len = 1;
        if (c < 0x80) {
            cp = c;
        } else if (c < 0xe0) {
            cp = (c & 0x1fu) << 6 | (u[i + 1] & 0x3fu);
            len = 2;
        } else if (c < 0xf0) {
            cp = (c & 0x0fu) << 12 | (u[i + 1] & 0x3fu) << 6 | (u[i + 2] & 0x3fu);
            len = 3;
        } else {
            cp = (c & 0x07u) << 18 | (u[i + 1] & 0x3fu) << 12 | (u[i + 2] & 0x3fu) << 6 |
                 (u[i + 3] & 0x3fu);
            len = 4;
        }
        if (i + len > n)
            break; /* cannot happen on valid UTF-8 */
        i += len;
        char esc[16];
        switch (cp) {
        case '"': puts_(t, "\\\""); continue;
        case '\\': puts_(t, "\\\\"); continue;
        case '\n': puts_(t, "\\n"); continue;
        case '\r': puts_(t, "\\r"); continue;
        case '\t': puts_(t, "\\t"); continue;
        case '\b': puts_(t, "\\b"); continue;
        case '\f': puts_(t, "\\f"); continue;
        default: break;
        }
        if (cp >= 0x20 && cp <= 0x7e) {
            char ch = (char)cp;
            put(t, &ch, 1);
        } else if (cp < 0x10000) {
            snprintf(esc, sizeof esc, "\\u%04x", (unsigned)cp);
            puts_(t, esc);
        } else {
            uint32_t v = cp - 0x10000;
            snprintf(esc, sizeof esc, "\\u%04x\\u%04x", (unsigned)(0xd800 + (v >> 10)),
                     (unsigned)(0xdc00 + (v & 0x3ff)));
            puts_(t, esc);
        }
    }
    put(t, "\"", 1);
}

static void put_u64(text *t, uint64_t v)
{
    char b[24];
    snprintf(b, sizeof b, "%" PRIu64, v);
    puts_(t, b);
}

static void shard_file_name(char *out, size_t cap, const char *prefix, size_t k, size_t n)
{
    if (n == 1)
        snprintf(out, cap, "%s.safetensors", prefix);
    else
        snprintf(out, cap, "%s-%05zu-of-%05zu.safetensors", prefix, k + 1, n);
}

static int build_index(const st_model *m, const plan *p, const char *prefix, unsigned style,
                       text *t, st_error *err)
{
    size_t n = st_model_tensor_count(m);
    uint64_t params = 0;
    for (size_t i = 0; i < n; i++)
        params += st_model_tensor_at(m, i)->nelements;
    char fname[512];
    puts_(t, "{\n  \"metadata\": {\n");
    if (style == ST_SPLIT_TRANSFORMERS) {
        puts_(t, "    \"total_parameters\": ");
        put_u64(t, params);
        puts_(t, ",\n    \"total_size\": ");
        put_u64(t, st_model_total_size(m));
    } else {
        /* {"total_size": S, **metadata}: a "total_size" pair of the model
         * replaces the value in place. */
        size_t vl;
        const char *v = st_model_metadata_get(m, "total_size", 10, &vl);
        puts_(t, "    \"total_size\": ");
        if (v)
            put_json_string(t, v, vl);
        else
            put_u64(t, st_model_total_size(m));
        for (size_t i = 0; i < st_model_metadata_count(m); i++) {
            const char *k, *val;
            size_t kl, vl2;
            st_model_metadata_at(m, i, &k, &kl, &val, &vl2);
            if (kl == 10 && memcmp(k, "total_size", 10) == 0)
                continue;
            puts_(t, ",\n    ");
            put_json_string(t, k, kl);
            puts_(t, ": ");
            put_json_string(t, val, vl2);
        }
    }
    puts_(t, "\n  },\n  \"weight_map\": {");
    bool first = true;
    if (style == ST_SPLIT_TRANSFORMERS) {
        for (size_t i = 0; i < n; i++) {
            const st_tensor *x = st_model_tensor_by_name_order(m, i);
            puts_(t, first ? "\n    " : ",\n    ");
            first = false;
            put_json_string(t, x->name, x->name_len);
            puts_(t, ": ");
            shard_file_name(fname, sizeof fname, prefix, p->shard_of[i], p->nshards);
            put_json_string(t, fname, strlen(fname));
        }
    } else {
        for (size_t s = 0; s < p->nshards; s++) {
            shard_file_name(fname, sizeof fname, prefix, s, p->nshards);
            for (size_t i = 0; i < n; i++) {
                if (p->shard_of[i] != s)
                    continue;
                const st_tensor *x = st_model_tensor_by_name_order(m, i);
                puts_(t, first ? "\n    " : ",\n    ");
                first = false;
                put_json_string(t, x->name, x->name_len);
                puts_(t, ": ");
                put_json_string(t, fname, strlen(fname));
            }
        }
    }
    puts_(t, first ? "}\n}" : "\n  }\n}");
    if (style == ST_SPLIT_TRANSFORMERS)
        puts_(t, "\n");
    if (t->failed)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory for the index");
    return ST_OK;
}

/* ---- split: writing ---- */

static int write_staged_text(const char *path, const text *t, st_error *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot create %s: %s", path, strerror(errno));
    size_t off = 0;
    while (off < t->len) {
        ssize_t w = write(fd, t->s + off, t->len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            unlink(path);
            return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot write %s: %s", path, strerror(e));
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = errno;
        unlink(path);
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot write %s: %s", path, strerror(e));
    }
    return ST_OK;
}

static bool prefix_ok(const char *prefix)
{
    if (!*prefix || strlen(prefix) > 200 || prefix[0] == '.')
        return false;
    for (const char *c = prefix; *c; c++)
        if (*c == '/' || (unsigned char)*c < 0x20)
            return false;
    return true;
}

int st_model_split(const st_model *m, const char *outdir, const st_split_options *opt,
                   const st_output_hooks *hooks, st_error *err)
{
    st_progress_fn progress = hooks ? hooks->progress : NULL;
    void *progress_ctx = hooks ? hooks->progress_ctx : NULL;
    st_output_hooks temp_only = {.temp = hooks ? hooks->temp : NULL, .temp_ctx = hooks ? hooks->temp_ctx : NULL};
    if (!m || !outdir)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_model_split: model and folder are required");
    uint64_t max = opt && opt->max_shard_size ? opt->max_shard_size : ST_SPLIT_DEFAULT_MAX;
    const char *prefix = opt && opt->prefix ? opt->prefix : "model";
    unsigned style = opt ? opt->style : ST_SPLIT_TRANSFORMERS;
    if (style > ST_SPLIT_HUB)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_model_split: unknown style %u", style);
    if (!prefix_ok(prefix))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET,
                       "st_model_split: prefix '%s' must be a plain file name start", prefix);
    bool made = mkdir(outdir, 0755) == 0;
    if (!made && errno != EEXIST)
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot create folder %s: %s", outdir,
                       strerror(errno));
    struct stat sb;
    if (stat(outdir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "%s is not a folder", outdir);

    plan p = {0};
    text idx = {0};
    size_t n = st_model_tensor_count(m);
    const st_tensor **ts = malloc((n + 1) * sizeof *ts);
    src *srcs = malloc((n + 1) * sizeof *srcs);
    char **staged = NULL, **final = NULL;
    size_t nstaged = 0;
    int rc = (ts && srcs) ? make_plan(m, max, &p, err)
                          : st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    size_t nfiles = p.nshards + (p.nshards > 1);
    if (!rc && p.nshards == 0)
        nfiles = 1; /* an empty model: one empty file rather than nothing */
    if (!rc) {
        staged = calloc(nfiles + 1, sizeof *staged);
        final = calloc(nfiles + 1, sizeof *final);
        if (!staged || !final)
            rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    }
    size_t nsh = p.nshards ? p.nshards : 1;
    for (size_t k = 0; k < nfiles && !rc; k++) {
        char fname[512];
        if (k < nsh)
            shard_file_name(fname, sizeof fname, prefix, k, nsh);
        else
            snprintf(fname, sizeof fname, "%s.safetensors.index.json", prefix);
        size_t need = strlen(outdir) + strlen(fname) + 48;
        final[k] = malloc(need);
        staged[k] = malloc(need);
        if (!final[k] || !staged[k]) {
            rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
            break;
        }
        snprintf(final[k], need, "%s/%s", outdir, fname);
        snprintf(staged[k], need, "%s/.%s.%ld.split", outdir, fname, (long)getpid());
    }
    job j;
    job_init(&j, progress, progress_ctx, st_model_total_size(m));
    out_progress op = {&j, 0};
    for (size_t s = 0; s < nsh && !rc; s++) {
        size_t cnt = 0;
        for (size_t i = 0; i < n; i++)
            if (p.shard_of[i] == s)
                ts[cnt++] = st_model_tensor_by_name_order(m, i);
        st_writer *w = st_writer_new();
        if (!w) {
            rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
            break;
        }
        rc = add_tensors(w, m, ts, cnt, srcs, &j, err);
        if (!rc)
            rc = add_metadata(w, m, true, err);
        if (!rc) {
            st_output_hooks wh = writer_hooks(&temp_only, &op);
            st_writer_set_hooks(w, &wh);
            rc = st_writer_write(w, staged[s], err);
            staged_note(&temp_only, staged[s], rc == ST_OK);
            if (rc)
                rc = job_error(&j, rc, err);
            else
                nstaged++;
            op.base += st_writer_output_size(w);
        }
        release_tensors(srcs, cnt);
        st_writer_free(w);
    }
    if (!rc && nfiles > nsh) {
        rc = build_index(m, &p, prefix, style, &idx, err);
        if (!rc)
            rc = write_staged_text(staged[nsh], &idx, err);
        if (!rc)
            staged_note(&temp_only, staged[nsh], true);
        if (!rc)
            nstaged++;
    }
    j.done = j.total;
    if (!rc && report(&j, true))
        rc = st_fail(err, ST_E_CALLBACK, ST_NO_OFFSET, "stopped by the progress callback");
    /* Everything is written: move it into place, the index last. */
    for (size_t k = 0; k < nstaged && !rc; k++)
        if (rename(staged[k], final[k]) == 0)
            staged_note(&temp_only, staged[k], false);
        else
            rc = st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot rename %s to %s: %s", staged[k],
                         final[k], strerror(errno));
    if (!rc) {
        int dfd = open(outdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            if (fsync(dfd) != 0 && errno != EINVAL && errno != EROFS)
                rc = st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot fsync folder %s: %s", outdir,
                             strerror(errno));
            close(dfd);
        }
    } else {
        for (size_t k = 0; k < nstaged; k++) {
            unlink(staged[k]); /* those already renamed are gone from here */
            staged_note(&temp_only, staged[k], false);
        }
        if (made)
            rmdir(outdir); /* only when this call created it (and it is empty) */
    }
    for (size_t k = 0; k < nfiles && staged && final; k++) {
        free(staged[k]);
        free(final[k]);
    }
    free(staged);
    free(final);
    free(idx.s);
    free(p.shard_of);
    free(p.pos_of);
    free(ts);
    free(srcs);
    return rc;
}
