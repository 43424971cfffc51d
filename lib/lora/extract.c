/*
 * st_lora_extract: tuned - base as a kohya LoRA (sd-scripts
 * networks/extract_lora_from_models.py). Two passes over the layers: the
 * first finds which differ by more than min_diff (so the output's tensor
 * list is known before writing), the second computes each layer's truncated
 * SVD when the writer asks for its first tensor, one layer at a time.
 */
#include "lora/lora_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct layer {
    const lora_target *tg;
    uint64_t rows, cols;
    unsigned rank;
    float alpha;
} layer;

typedef struct extract {
    const char *base_path, *tuned_path;
    const st_file *base, *tuned;
    const st_lora_extract_options *opt;
    layer *layers;
    size_t nlayers;
    size_t cached;           /* layer whose up/down are in the buffers below  */
    unsigned char *up, *down;
    size_t done;
    st_error err;
} extract;

typedef struct part_ctx {
    extract *x;
    size_t layer;
    int part;                /* 0 down, 1 up, 2 alpha                         */
} part_ctx;

void st_lora_extract_defaults(st_lora_extract_options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->rank = 4;
    opt->min_diff = 0.01f;
    opt->dtype = ST_F32;
}

static int float_cmp(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* kohya: hi = quantile(cat(U, Vh), q) (linear interpolation), clamp both
 * to [-hi, hi]. */
static int clamp_quantile(float *u, size_t nu, float *v, size_t nv, double q, st_error *err)
{
    size_t n = nu + nv;
    float *all = malloc(n * sizeof *all);
    if (!all)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    memcpy(all, u, nu * sizeof *u);
    memcpy(all + nu, v, nv * sizeof *v);
    qsort(all, n, sizeof *all, float_cmp);
    double pos = q * (double)(n - 1);
    size_t lo = (size_t)floor(pos);
    size_t hi_i = lo + 1 < n ? lo + 1 : lo;
    float hi = (float)(all[lo] + (pos - (double)lo) * (all[hi_i] - all[lo]));
    free(all);
    for (size_t i = 0; i < nu; i++)
        u[i] = u[i] > hi ? hi : u[i] < -hi ? -hi : u[i];
    for (size_t i = 0; i < nv; i++)
        v[i] = v[i] > hi ? hi : v[i] < -hi ? -hi : v[i];
    return ST_OK;
}

static int load_diff(extract *x, const layer *l, float **out, double *maxabs, st_error *err)
{
    const st_tensor *tb = st_tensor_at(x->base, l->tg->tensor);
    const st_tensor *tt = st_find(x->tuned, tb->name, tb->name_len);
    float *a = lora_alloc_f32(l->rows * l->cols, tb->name, err);
    float *b = a ? lora_alloc_f32(l->rows * l->cols, tb->name, err) : NULL;
    int rc = a && b ? ST_OK : ST_E_NOMEM;
    if (rc == ST_OK)
        rc = lora_load_rows_f32(x->base, x->base_path, tb, l->tg->row0, l->rows, a, err);
    if (rc == ST_OK)
        rc = lora_load_rows_f32(x->tuned, x->tuned_path, tt, l->tg->row0, l->rows, b, err);
    double mx = 0;
    bool finite = true;
    for (uint64_t i = 0; rc == ST_OK && i < l->rows * l->cols; i++) {
        float d = b[i] - a[i];
        a[i] = d;
        if (!isfinite(d))
            finite = false;
        else if (fabsf(d) > mx)
            mx = fabsf(d);
    }
    free(b);
    if (rc == ST_OK && !finite) {
        char nm[160];
        st_quote_name(nm, sizeof nm, tb->name, tb->name_len);
        rc = st_fail(err, ST_E_LORA, tt->header_offset, "%s: %s: the difference has NaN or infinite values",
                     x->tuned_path, nm);
    }
    if (rc) {
        free(a);
        return rc;
    }
    *out = a;
    *maxabs = mx;
    return ST_OK;
}

static int compute_layer(extract *x, size_t li, st_error *err)
{
    const layer *l = &x->layers[li];
    free(x->up), free(x->down);
    x->up = x->down = NULL;
    x->cached = SIZE_MAX;
    float *d = NULL;
    double mx;
    int rc = load_diff(x, l, &d, &mx, err);
    if (rc)
        return rc;
    size_t r = l->rank;
    float *up = lora_alloc_f32(l->rows * r, "up", err);
    float *dn = up ? lora_alloc_f32(r * l->cols, "down", err) : NULL;
    rc = up && dn ? ST_OK : ST_E_NOMEM;
    if (rc == ST_OK)
        rc = lora_svd_truncated(d, l->rows, l->cols, r, up, dn, err);
    free(d);
    double q = x->opt->clamp_quantile;
    if (rc == ST_OK && q > 0 && q < 1)
        rc = clamp_quantile(up, l->rows * r, dn, r * l->cols, q, err);
    if (rc == ST_OK && l->alpha != (float)r) {
        /* effective weight is (alpha / r) up @ down: keep it equal to U S V^T */
        float k = (float)r / l->alpha;
        for (uint64_t i = 0; i < l->rows * r; i++)
            up[i] *= k;
    }
    size_t esz = st_dtype_bits((st_dtype)x->opt->dtype) / 8;
    if (rc == ST_OK) {
        x->up = malloc(l->rows * r * esz);
        x->down = malloc(r * l->cols * esz);
        if (!x->up || !x->down)
            rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    }
    if (rc == ST_OK)
        rc = st_convert((st_dtype)x->opt->dtype, x->up, ST_F32, up, l->rows * r, 0, err);
    if (rc == ST_OK)
        rc = st_convert((st_dtype)x->opt->dtype, x->down, ST_F32, dn, r * l->cols, 0, err);
    free(up), free(dn);
    if (rc == ST_OK)
        x->cached = li;
    return rc;
}

static int read_part(void *vctx, uint64_t offset, void *buf, size_t len)
{
    part_ctx *c = vctx;
    extract *x = c->x;
    const layer *l = &x->layers[c->layer];
    if (c->part == 2) {
        float a = l->alpha;
        unsigned char tmp[8];
        if (st_convert((st_dtype)x->opt->dtype, tmp, ST_F32, &a, 1, 0, &x->err))
            return -1;
        memcpy(buf, tmp + offset, len);
        return 0;
    }
    if (x->cached != c->layer) {
        if (compute_layer(x, c->layer, &x->err))
            return -1;
        x->done++;
        if (x->opt->progress && x->opt->progress(x->opt->progress_ctx, x->done, x->nlayers)) {
            st_fail(&x->err, ST_E_CALLBACK, ST_NO_OFFSET, "stopped by the progress callback");
            return -1;
        }
    }
    memcpy(buf, (c->part ? x->up : x->down) + offset, len);
    return 0;
}

static const char *py_float(double v, char *buf, size_t cap)
{
    if (v == floor(v) && fabs(v) < 1e15)
        snprintf(buf, cap, "%.1f", v);
    else
        snprintf(buf, cap, "%.9g", v);
    return buf;
}

static int set_meta(st_writer *w, const char *k, const char *v, st_error *err)
{
    return st_writer_set_metadata(w, k, strlen(k), v, strlen(v), err);
}

int st_lora_extract(const char *base_path, const char *tuned_path, const char *out_path,
                    const st_lora_extract_options *opt_in, st_lora_extract_report *report,
                    st_error *err)
{
    st_lora_extract_options defaults;
    st_lora_extract_defaults(&defaults);
    const st_lora_extract_options *opt = opt_in ? opt_in : &defaults;
    if (report)
        memset(report, 0, sizeof *report);
    if (!base_path || !tuned_path || !out_path)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_lora_extract: two models and an output are needed");
    if (opt->rank == 0 || !(opt->min_diff >= 0) || !(opt->clamp_quantile >= 0) ||
        !(opt->clamp_quantile <= 1) || !isfinite(opt->alpha) || !isfinite(opt->conv_alpha) ||
        opt->alpha < 0 || opt->conv_alpha < 0 ||
        (opt->dtype != ST_F32 && opt->dtype != ST_F16 && opt->dtype != ST_BF16))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET,
                       "st_lora_extract: rank must be >= 1, alpha >= 0, min_diff >= 0, clamp in [0, 1], dtype F32/F16/BF16");
    st_file *base = NULL, *tuned = NULL;
    lora_map *map = NULL;
    extract x = {0};
    part_ctx *ctxs = NULL;
    st_writer *w = NULL;
    int rc = st_open(base_path, ST_OPEN_PREAD, &base, err); /* RSS: models never mapped */
    if (rc == ST_OK)
        rc = st_open(tuned_path, ST_OPEN_PREAD, &tuned, err);
    if (rc == ST_OK)
        rc = lora_map_build(base, &map, err);
    if (rc)
        goto out;
    x.base_path = base_path, x.tuned_path = tuned_path;
    x.base = base, x.tuned = tuned, x.opt = opt, x.cached = SIZE_MAX;
    size_t nm = lora_map_count(map);
    x.layers = calloc(nm ? nm : 1, sizeof *x.layers);
    ctxs = calloc(nm ? nm * 3 : 1, sizeof *ctxs);
    if (!x.layers || !ctxs) {
        rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
        goto out;
    }
    int family = lora_map_family(map);
    size_t skipped = 0;
    for (size_t i = 0; i < nm; i++) {
        const lora_target *tg = lora_map_at(map, i);
        const st_tensor *t = st_tensor_at(base, tg->tensor);
        if (!tg->canonical || !tg->kind || (tg->kind == LORA_LAYER_RESNET && !opt->conv_rank))
            continue;
        bool conv3 = t->rank == 4 && (t->shape[2] != 1 || t->shape[3] != 1);
        if (conv3 && !opt->conv_rank)
            continue;
        const st_tensor *tt = st_find(tuned, t->name, t->name_len);
        char name[160];
        st_quote_name(name, sizeof name, t->name, t->name_len);
        if (!tt || tt->rank != t->rank || memcmp(tt->shape, t->shape, t->rank * sizeof *t->shape)) {
            rc = st_fail(err, ST_E_LORA, tt ? tt->header_offset : ST_NO_OFFSET,
                         "%s: %s %s in %s", tuned_path, name,
                         tt ? "has another shape than" : "is missing, but present", base_path);
            goto out;
        }
        layer l = {tg, tg->rows == UINT64_MAX ? t->shape[0] : tg->rows, t->nelements / t->shape[0],
                   conv3 ? opt->conv_rank : opt->rank, 0};
        if (l.rank > l.rows)
            l.rank = (unsigned)l.rows;
        if (l.rank > l.cols)
            l.rank = (unsigned)l.cols;
        float a = conv3 ? opt->conv_alpha : opt->alpha;
        l.alpha = a > 0 ? a : (float)l.rank;
        float *d;
        double mx;
        rc = load_diff(&x, &l, &d, &mx, err);
        if (rc)
            goto out;
        free(d);
        if (mx < opt->min_diff) {
            skipped++;
            continue;
        }
        x.layers[x.nlayers++] = l;
    }
    w = st_writer_new();
    if (!w) {
        rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
        goto out;
    }
    st_dtype od = (st_dtype)opt->dtype;
    size_t esz = st_dtype_bits(od) / 8;
    for (size_t i = 0; i < x.nlayers && rc == ST_OK; i++) {
        const layer *l = &x.layers[i];
        const st_tensor *t = st_tensor_at(base, l->tg->tensor);
        const char *stem = l->tg->stem;
        char key[600];
        uint64_t r = l->rank;
        uint64_t dshape[4] = {r, l->cols, 1, 1}, ushape[4] = {l->rows, r, 1, 1};
        uint32_t drank = 2, urank = 2;
        if (t->rank == 4) {
            dshape[1] = t->shape[1], dshape[2] = t->shape[2], dshape[3] = t->shape[3];
            drank = urank = 4;
        }
        for (int p = 0; p < 3 && rc == ST_OK; p++) {
            static const char *const suffix[] = {".lora_down.weight", ".lora_up.weight", ".alpha"};
            snprintf(key, sizeof key, "%s%s", stem, suffix[p]);
            ctxs[i * 3 + p] = (part_ctx){&x, i, p};
            const uint64_t *shape = p == 0 ? dshape : p == 1 ? ushape : NULL;
            uint32_t rank = p == 0 ? drank : p == 1 ? urank : 0;
            uint64_t nb = p == 0 ? r * l->cols * esz : p == 1 ? l->rows * r * esz : esz;
            rc = st_writer_add_stream(w, key, strlen(key), od, shape, rank, nb, read_part,
                                      &ctxs[i * 3 + p], err);
        }
    }
    char buf[64], buf2[64], args[200] = "{}";
    const char *version = family == ST_FAMILY_SDXL ? "sdxl_base_v1-0" : family == ST_FAMILY_SD2 ? "sd_v2" : "sd_v1";
    if (opt->conv_rank)
        snprintf(args, sizeof args, "{\"conv_dim\": \"%u\", \"conv_alpha\": \"%s\"}", opt->conv_rank,
                 py_float(opt->conv_alpha > 0 ? opt->conv_alpha : opt->conv_rank, buf2, sizeof buf2));
    if (rc == ST_OK)
        rc = set_meta(w, "ss_v2", family == ST_FAMILY_SD2 ? "True" : "False", err);
    if (rc == ST_OK)
        rc = set_meta(w, "ss_base_model_version", version, err);
    if (rc == ST_OK)
        rc = set_meta(w, "ss_network_module", "networks.lora", err);
    snprintf(buf, sizeof buf, "%u", opt->rank);
    if (rc == ST_OK)
        rc = set_meta(w, "ss_network_dim", buf, err);
    if (rc == ST_OK)
        rc = set_meta(w, "ss_network_alpha", py_float(opt->alpha > 0 ? opt->alpha : opt->rank, buf, sizeof buf), err);
    if (rc == ST_OK)
        rc = set_meta(w, "ss_network_args", args, err);
    if (rc == ST_OK) {
        {
            st_output_hooks h = {.temp = opt->temp, .temp_ctx = opt->temp_ctx};
            st_writer_set_hooks(w, &h);
        }
        rc = st_writer_write(w, out_path, err);
        if (rc == ST_E_CALLBACK && x.err.code) {
            rc = x.err.code;
            if (err)
                *err = x.err;
        }
    }
    if (rc == ST_OK && report) {
        report->layers = x.nlayers;
        report->skipped = skipped;
        report->family = family;
    }
out:
    st_writer_free(w);
    free(ctxs);
    free(x.layers), free(x.up), free(x.down);
    lora_map_free(map);
    st_close(base);
    st_close(tuned);
    return rc;
}
