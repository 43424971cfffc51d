/*
 * st_lora_resize: each kohya LoRA layer's up @ down re-factorized to a lower
 * rank, with kohya sd-scripts networks/resize_lora.py's rank rules
 * (rank_resize, index_sv_ratio / _fro / _cumulative). The SVD is exact and
 * cheap: up @ down has rank <= r, so it is the SVD of an r x r core between
 * the QR factors of up and down^T.
 *
 * The output's shapes depend on the ranks chosen, so every layer is
 * resized before writing; the new factors are kept in the output dtype
 * (never more than the input adapter's size plus one layer in f32).
 */
#include "lora/lora_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIN_SV 1e-6 /* kohya: a layer whose largest singular value is below is zero */

typedef struct out_layer {
    const lora_module *m;
    unsigned new_rank;
    float alpha;
    void *up, *down;         /* output dtype bytes                            */
    uint64_t up_shape[4], down_shape[4];
    uint32_t rank;           /* of both                                       */
    unsigned char alpha_bytes[8]; /* the writer reads them at write time       */
} out_layer;

void st_lora_resize_defaults(st_lora_resize_options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->rank = 4;
    opt->method = ST_LORA_RESIZE_RANK;
    opt->dtype = -1;
}

/* kohya's index functions over S (n values, descending), where the SVD of
 * the full matrix would have `full` values (the rest zero); 0-based. */
static size_t sv_index(const double *s, size_t n, size_t full, st_lora_resize_method method,
                       double target)
{
    long idx = 0;
    double total = 0;
    if (method == ST_LORA_RESIZE_SV_RATIO) {
        double min_sv = s[0] / target;
        long c = 0;
        for (size_t i = 0; i < n; i++)
            c += s[i] > min_sv;
        idx = c - 1;
    } else {
        bool fro = method == ST_LORA_RESIZE_SV_FRO;
        for (size_t i = 0; i < n; i++)
            total += fro ? s[i] * s[i] : s[i];
        double goal = fro ? target * target : target, cum = 0;
        idx = (long)full; /* searchsorted past the end */
        for (size_t i = 0; i < n; i++) {
            cum += fro ? s[i] * s[i] : s[i];
            if (cum / total >= goal) {
                idx = (long)i;
                break;
            }
        }
    }
    if (idx > (long)full - 1)
        idx = (long)full - 1;
    return idx < 0 ? 0 : (size_t)idx;
}

static void free_layers(out_layer *o, size_t n)
{
    for (size_t i = 0; o && i < n; i++)
        free(o[i].up), free(o[i].down);
    free(o);
}

static const char *py_float(double v, char *buf, size_t cap)
{
    if (v == floor(v) && fabs(v) < 1e15)
        snprintf(buf, cap, "%.1f", v);
    else
        snprintf(buf, cap, "%.17g", v);
    return buf;
}

static int resize_one(const lora_adapter *a, const lora_module *m, const st_lora_resize_options *opt,
                      out_layer *o, unsigned *old_rank_out, st_error *err)
{
    const st_tensor *dn = m->part[LK_DOWN], *up = m->part[LK_UP];
    char nm[200];
    st_quote_name(nm, sizeof nm, m->stem, m->stem_len);
    if (!dn || !up || dn->rank < 2 || up->rank < 2 || m->part[LK_MID])
        return st_fail(err, ST_E_LORA, ST_NO_OFFSET,
                       "%s: module %s is not a plain lora_down/lora_up pair", a->path, nm);
    uint64_t r = dn->shape[0], rows = up->shape[0];
    uint64_t cols = dn->nelements / (r ? r : 1);
    if (r == 0 || up->shape[1] != r || up->nelements / (rows ? rows : 1) != r || rows == 0 || cols == 0)
        return st_fail(err, ST_E_LORA, dn->header_offset,
                       "%s: module %s: lora_up and lora_down do not fit (rank 0 or shapes)", a->path, nm);
    if (r > rows || r > cols)
        return st_fail(err, ST_E_LORA, dn->header_offset,
                       "%s: module %s: rank %llu is larger than the layer (%llu x %llu)", a->path, nm,
                       (unsigned long long)r, (unsigned long long)rows, (unsigned long long)cols);
    double scale = 1.0;
    if (m->part[LK_ALPHA]) {
        double alpha;
        int rc = lora_load_scalar(a->file, a->path, m->part[LK_ALPHA], &alpha, err);
        if (rc)
            return rc;
        if (!isfinite(alpha))
            return st_fail(err, ST_E_LORA, m->part[LK_ALPHA]->header_offset,
                           "%s: module %s: alpha is not a finite number", a->path, nm);
        scale = alpha / (double)r;
    }
    bool conv = dn->rank == 4;
    unsigned cap = conv && opt->conv_rank ? opt->conv_rank : opt->rank;
    float *u = NULL, *d = NULL, *U = NULL, *Vt = NULL;
    double *s = malloc(r * sizeof *s);
    int rc = s ? ST_OK : st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    if (rc == ST_OK)
        rc = lora_load_f32(a->file, a->path, up, &u, err);
    if (rc == ST_OK)
        rc = lora_load_f32(a->file, a->path, dn, &d, err);
    if (rc == ST_OK) {
        for (uint64_t i = 0; i < rows * r && rc == ST_OK; i++)
            if (!isfinite(u[i]))
                rc = st_fail(err, ST_E_LORA, up->header_offset, "%s: %s has NaN/Inf", a->path, nm);
        for (uint64_t i = 0; i < r * cols && rc == ST_OK; i++)
            if (!isfinite(d[i]))
                rc = st_fail(err, ST_E_LORA, dn->header_offset, "%s: %s has NaN/Inf", a->path, nm);
    }
    if (rc == ST_OK) {
        U = lora_alloc_f32(rows * r, nm, err);
        Vt = U ? lora_alloc_f32(r * cols, nm, err) : NULL;
        rc = U && Vt ? ST_OK : ST_E_NOMEM;
    }
    if (rc == ST_OK)
        rc = lora_svd_product(u, d, rows, cols, r, s, U, Vt, err);
    if (rc)
        goto out;
    size_t full = rows < cols ? rows : cols;
    size_t nr;
    if (opt->method == ST_LORA_RESIZE_RANK)
        nr = cap;
    else
        nr = sv_index(s, r, full, opt->method, opt->param) + 1;
    if (s[0] <= MIN_SV)
        nr = 1;
    else if (nr > cap)
        nr = cap;
    if (nr > r)
        nr = r; /* kohya pads with zero singular values; this keeps the layer's own rank */
    double sum = 0, sum_k = 0, fro = 0, fro_k = 0;
    for (size_t i = 0; i < r; i++) {
        sum += fabs(s[i]), fro += s[i] * s[i];
        if (i < nr)
            sum_k += fabs(s[i]), fro_k += s[i] * s[i];
    }
    st_lora_layer_info info = {m->stem, (unsigned)r, (unsigned)nr, (float)(scale * (double)nr),
                               sum > 0 ? sum_k / sum : NAN, fro > 0 ? sqrt(fro_k) / sqrt(fro) : NAN,
                               s[nr - 1] > 0 ? s[0] / s[nr - 1] : INFINITY};
    /* up = U[:, :nr] S, down = V^T[:nr] */
    for (uint64_t i = 0; i < rows; i++)
        for (size_t j = 0; j < nr; j++)
            U[i * nr + j] = U[i * r + j] * (float)s[j];
    st_dtype od = opt->dtype >= 0 ? (st_dtype)opt->dtype : dn->dtype;
    size_t esz = st_dtype_bits(od) / 8;
    o->m = m;
    o->new_rank = (unsigned)nr;
    o->alpha = info.new_alpha;
    o->up = malloc(rows * nr * esz);
    o->down = malloc(nr * cols * esz);
    if (!o->up || !o->down) {
        rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
        goto out;
    }
    rc = st_convert(od, o->up, ST_F32, U, rows * nr, 0, err);
    if (rc == ST_OK)
        rc = st_convert(od, o->down, ST_F32, Vt, nr * cols, 0, err);
    o->rank = conv ? 4 : 2;
    o->up_shape[0] = rows, o->up_shape[1] = nr, o->up_shape[2] = o->up_shape[3] = 1;
    for (uint32_t k = 0; k < dn->rank && k < 4; k++)
        o->down_shape[k] = dn->shape[k];
    o->down_shape[0] = nr;
    if (!conv)
        o->down_shape[1] = cols;
    *old_rank_out = (unsigned)r;
    if (rc == ST_OK && opt->layer && opt->layer(opt->layer_ctx, &info))
        rc = st_fail(err, ST_E_CALLBACK, ST_NO_OFFSET, "stopped by the layer callback");
out:
    free(s), free(u), free(d), free(U), free(Vt);
    return rc;
}

int st_lora_resize(const char *lora_path, const char *out_path, const st_lora_resize_options *opt_in,
                   st_error *err)
{
    st_lora_resize_options defaults;
    st_lora_resize_defaults(&defaults);
    const st_lora_resize_options *opt = opt_in ? opt_in : &defaults;
    if (!lora_path || !out_path || opt->rank == 0 ||
        (opt->method != ST_LORA_RESIZE_RANK && !(opt->param > 0 && isfinite(opt->param))) ||
        opt->method > ST_LORA_RESIZE_SV_CUMULATIVE ||
        (opt->dtype >= 0 && (opt->dtype != ST_F32 && opt->dtype != ST_F16 && opt->dtype != ST_BF16)))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET,
                       "st_lora_resize: needs a rank >= 1, a positive finite parameter for a dynamic "
                       "method, and dtype F32, F16 or BF16");
    lora_adapter a;
    int rc = lora_adapter_open(lora_path, &a, err);
    if (rc)
        return rc;
    out_layer *o = NULL;
    size_t no = 0;
    st_writer *w = NULL;
    unsigned max_old = 0;
    if (a.format != ST_LORA_KOHYA) {
        rc = st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET, "%s: resizing %s adapters is not supported (kohya LoRA is)",
                     lora_path, st_lora_format_name(a.format));
        goto out;
    }
    o = calloc(a.nmods ? a.nmods : 1, sizeof *o);
    w = st_writer_new();
    if (!o || !w) {
        rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < a.nmods && rc == ST_OK; i++) {
        unsigned old = 0;
        rc = resize_one(&a, &a.mods[i], opt, &o[no], &old, err);
        no++;
        if (old > max_old)
            max_old = old;
        if (rc == ST_OK && opt->progress && opt->progress(opt->progress_ctx, i + 1, a.nmods))
            rc = st_fail(err, ST_E_CALLBACK, ST_NO_OFFSET, "stopped by the progress callback");
    }
    float last_alpha = 0;
    for (size_t i = 0; i < no && rc == ST_OK; i++) {
        const out_layer *l = &o[i];
        const lora_module *m = l->m;
        st_dtype od = opt->dtype >= 0 ? (st_dtype)opt->dtype : m->part[LK_DOWN]->dtype;
        size_t esz = st_dtype_bits(od) / 8;
        char key[4096];
        if (m->stem_len + 20 > sizeof key) {
            rc = st_fail(err, ST_E_LORA, ST_NO_OFFSET, "%s: a module name is too long", lora_path);
            break;
        }
        uint64_t cols = m->part[LK_DOWN]->nelements / m->part[LK_DOWN]->shape[0];
        snprintf(key, sizeof key, "%s.lora_up.weight", m->stem);
        rc = st_writer_add(w, key, strlen(key), od, l->up_shape, l->rank, l->up,
                           l->up_shape[0] * l->new_rank * esz, err);
        snprintf(key, sizeof key, "%s.lora_down.weight", m->stem);
        if (rc == ST_OK)
            rc = st_writer_add(w, key, strlen(key), od, l->down_shape, l->rank, l->down,
                               (uint64_t)l->new_rank * cols * esz, err);
        if (rc == ST_OK && m->part[LK_ALPHA]) {
            /* alpha keeps its dtype when no output dtype is given (kohya casts it too) */
            st_dtype ad = opt->dtype >= 0 ? od : m->part[LK_ALPHA]->dtype;
            if (!st_dtype_is_float(ad) || st_dtype_bits(ad) < 8)
                ad = od;
            unsigned char *tmp = o[i].alpha_bytes;
            rc = st_convert(ad, tmp, ST_F32, &l->alpha, 1, 0, err);
            snprintf(key, sizeof key, "%s.alpha", m->stem);
            if (rc == ST_OK)
                rc = st_writer_add(w, key, strlen(key), ad, NULL, 0, tmp, st_dtype_bits(ad) / 8, err);
        }
        last_alpha = l->alpha;
    }
    /* metadata: the input's, with kohya's updates (sshs_* hashes would be stale) */
    for (size_t i = 0; rc == ST_OK && i < st_metadata_count(a.file); i++) {
        const char *k, *v;
        size_t kl, vl;
        st_metadata_at(a.file, i, &k, &kl, &v, &vl);
        if ((kl == 15 && memcmp(k, "sshs_model_hash", 15) == 0) ||
            (kl == 16 && memcmp(k, "sshs_legacy_hash", 16) == 0))
            continue;
        rc = st_writer_set_metadata(w, k, kl, v, vl, err);
    }
    if (rc == ST_OK) {
        const char *old_comment = st_metadata_get(a.file, "ss_training_comment", 19, NULL);
        char comment[1024], dim[32], alpha[64];
        static const char *const mname[] = {"", "sv_ratio", "sv_fro", "sv_cumulative"};
        if (opt->method == ST_LORA_RESIZE_RANK) {
            char conv[64] = "";
            if (opt->conv_rank && opt->conv_rank != opt->rank)
                snprintf(conv, sizeof conv, " (conv: %u)", opt->conv_rank);
            snprintf(comment, sizeof comment, "dimension is resized from %u to %u%s; %s", max_old,
                     opt->rank, conv, old_comment ? old_comment : "");
            snprintf(dim, sizeof dim, "%u", opt->rank);
            py_float(last_alpha, alpha, sizeof alpha);
        } else {
            snprintf(comment, sizeof comment, "Dynamic resize with %s: %g from %u; %s",
                     mname[opt->method], opt->param, max_old, old_comment ? old_comment : "");
            snprintf(dim, sizeof dim, "Dynamic");
            snprintf(alpha, sizeof alpha, "Dynamic");
        }
        rc = st_writer_set_metadata(w, "ss_training_comment", 19, comment, strlen(comment), err);
        if (rc == ST_OK)
            rc = st_writer_set_metadata(w, "ss_network_dim", 14, dim, strlen(dim), err);
        if (rc == ST_OK)
            rc = st_writer_set_metadata(w, "ss_network_alpha", 16, alpha, strlen(alpha), err);
    }
    if (rc == ST_OK) {
        st_output_hooks h = {.temp = opt->temp, .temp_ctx = opt->temp_ctx};
        st_writer_set_hooks(w, &h);
        rc = st_writer_write(w, out_path, err);
    }
out:
    st_writer_free(w);
    free_layers(o, no);
    lora_adapter_close(&a);
    return rc;
}
