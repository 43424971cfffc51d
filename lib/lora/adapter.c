/*
 * An adapter file as modules (one per patched layer) and the weight delta
 * each one makes. Formulas: kohya sd-scripts networks/merge_lora.py (LoRA,
 * LoCon), LyCORIS as ComfyUI comfy/weight_adapter applies it (LoHa: the
 * Hadamard product of two low-rank products; LoKr: the Kronecker product of
 * two factors, each whole or low-rank). Every shape is checked against the
 * target before anything is read or allocated.
 */
#include "lora/lora_internal.h"

#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *suffix;
    int part;
} suffixes[] = {
    {".lora_down.weight", LK_DOWN}, {".lora_up.weight", LK_UP}, {".lora_mid.weight", LK_MID},
    {".alpha", LK_ALPHA},           {".hada_w1_a", LK_HADA_W1A}, {".hada_w1_b", LK_HADA_W1B},
    {".hada_w2_a", LK_HADA_W2A},    {".hada_w2_b", LK_HADA_W2B}, {".hada_t1", LK_HADA_T1},
    {".hada_t2", LK_HADA_T2},       {".lokr_w1", LK_LOKR_W1},    {".lokr_w1_a", LK_LOKR_W1A},
    {".lokr_w1_b", LK_LOKR_W1B},    {".lokr_w2", LK_LOKR_W2},    {".lokr_w2_a", LK_LOKR_W2A},
    {".lokr_w2_b", LK_LOKR_W2B},    {".lokr_t2", LK_LOKR_T2},      {".dora_scale", LK_DORA},
    /* PEFT and diffusers' older layouts (their stems are renamed below) */
    {".lora_A.weight", LK_DOWN},    {".lora_B.weight", LK_UP},
    {".lora.down.weight", LK_DOWN}, {".lora.up.weight", LK_UP},
    {".lora_linear_layer.down.weight", LK_DOWN}, {".lora_linear_layer.up.weight", LK_UP},
    {"_lora.down.weight", LK_DOWN}, {"_lora.up.weight", LK_UP},
    /* XLabs' Flux LoRAs: "double_blocks.0.processor.qkv_lora1.down.weight"
     * (last: every other layout's ".down.weight" is matched above) */
    {".down.weight", LK_DOWN},      {".up.weight", LK_UP},
};

/*
 * A PEFT / diffusers module name as the kohya stem the name map knows
 * (ComfyUI comfy/lora.py does the same through its key tables):
 *   unet.X / X          -> lora_unet_X      (X a diffusers UNet module)
 *   text_encoder.X      -> lora_te_X        (lora_te1_X is tried too)
 *   text_encoder_2.X    -> lora_te2_X
 * with '.' -> '_'; the attention-processor layout "attn1.processor.to_q"
 * (from "to_q_lora.down.weight") is "attn1.to_q", "to_out" is "to_out.0".
 * Returns a malloc'ed string.
 */
static char *kohya_stem(const char *s, size_t len)
{
    static const char *const pre[][2] = {
        {"unet.", "lora_unet_"}, {"text_encoder_2.", "lora_te2_"}, {"text_encoder.", "lora_te_"},
        {"transformer.", "lora_transformer_"}, {"diffusion_model.", "lora_unet_"},
    };
    const char *to = "lora_unet_";
    for (size_t i = 0; i < sizeof pre / sizeof pre[0]; i++) {
        size_t l = strlen(pre[i][0]);
        if (len >= l && memcmp(s, pre[i][0], l) == 0) {
            s += l, len -= l, to = pre[i][1];
            break;
        }
    }
    size_t tl = strlen(to);
    char *out = malloc(tl + len + 4);
    if (!out)
        return NULL;
    memcpy(out, to, tl);
    size_t n = tl;
    static const char proc[] = ".processor.";
    for (size_t i = 0; i < len; i++) {
        if (len - i >= sizeof proc - 1 && memcmp(s + i, proc, sizeof proc - 1) == 0) {
            i += sizeof proc - 2; /* one separator for the whole ".processor." */
            out[n++] = '_';
            continue;
        }
        out[n++] = s[i] == '.' ? '_' : s[i];
    }
    out[n] = 0;
    if (n >= 7 && strcmp(out + n - 7, "_to_out") == 0)
        memcpy(out + n, "_0", 3);
    return out;
}

typedef struct entry {
    const st_tensor *t;
    const char *stem;        /* the tensor's name, or a kohya_stem() copy     */
    size_t stem_len;
    int part;
} entry;

static int entry_cmp(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    int c = st_name_cmp(x->stem, x->stem_len, y->stem, y->stem_len);
    return c ? c : (x->part > y->part) - (x->part < y->part);
}

static void free_entries(entry *e, size_t n)
{
    for (size_t i = 0; e && i < n; i++)
        if (e[i].stem != e[i].t->name)
            free((char *)e[i].stem);
    free(e);
}

void lora_adapter_close(lora_adapter *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->nmods; i++)
        free(a->mods[i].stem);
    free(a->mods);
    st_close(a->file);
    memset(a, 0, sizeof *a);
}

int lora_adapter_open(const char *path, lora_adapter *a, st_error *err)
{
    memset(a, 0, sizeof *a);
    a->path = path;
    int rc = st_open(path, ST_OPEN_PREAD, &a->file, err);
    if (rc)
        return rc;
    st_identity id;
    rc = st_identify(a->file, &id, err);
    if (rc)
        goto fail;
    if (id.kind != ST_KIND_LORA) {
        rc = st_fail(err, ST_E_LORA, ST_NO_OFFSET, "%s: not a LoRA adapter (identified as %s)", path,
                     st_kind_name(id.kind));
        goto fail;
    }
    a->format = id.format;
    bool rename = id.format == ST_LORA_PEFT || id.format == ST_LORA_DIFFUSERS;
    size_t n = st_tensor_count(a->file);
    entry *e = calloc(n ? n : 1, sizeof *e);
    if (!e) {
        rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_tensor_at(a->file, i);
        int part = -1;
        size_t sl = 0;
        for (size_t k = 0; k < sizeof suffixes / sizeof suffixes[0]; k++) {
            size_t l = strlen(suffixes[k].suffix);
            if (t->name_len > l && memcmp(t->name + t->name_len - l, suffixes[k].suffix, l) == 0) {
                part = suffixes[k].part;
                sl = t->name_len - l;
                break;
            }
        }
        if (part < 0) {
            char nm[160];
            st_quote_name(nm, sizeof nm, t->name, t->name_len);
            free_entries(e, i);
            rc = st_fail(err, ST_E_LORA, t->header_offset,
                         "%s: tensor %s is no part of a LoRA/LoHa/LoKr module this can apply", path, nm);
            goto fail;
        }
        e[i] = (entry){t, t->name, sl, part};
        if (rename && !memchr(t->name, 0, sl)) {
            char *k = kohya_stem(t->name, sl);
            if (!k) {
                free_entries(e, i);
                rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
                goto fail;
            }
            e[i].stem = k;
            e[i].stem_len = strlen(k);
        }
    }
    qsort(e, n, sizeof *e, entry_cmp);
    a->mods = calloc(n ? n : 1, sizeof *a->mods);
    if (!a->mods) {
        free_entries(e, n);
        rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        lora_module *m = a->nmods ? &a->mods[a->nmods - 1] : NULL;
        if (!m || m->stem_len != e[i].stem_len || memcmp(m->stem, e[i].stem, e[i].stem_len)) {
            m = &a->mods[a->nmods];
            m->stem = malloc(e[i].stem_len + 1);
            if (!m->stem) {
                free_entries(e, n);
                rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
                goto fail;
            }
            a->nmods++;
            memcpy(m->stem, e[i].stem, e[i].stem_len);
            m->stem[e[i].stem_len] = 0;
            m->stem_len = e[i].stem_len;
        }
        if (m->part[e[i].part]) {
            char nm[160];
            st_quote_name(nm, sizeof nm, e[i].t->name, e[i].t->name_len);
            free_entries(e, n);
            rc = st_fail(err, ST_E_LORA, ST_NO_OFFSET, "%s: tensor %s repeats a part of module %s",
                         path, nm, m->stem);
            goto fail;
        }
        m->part[e[i].part] = e[i].t;
    }
    free_entries(e, n);
    return ST_OK;
fail:
    lora_adapter_close(a);
    return rc;
}

/* Flattened [d0, rest] of a tensor. */
static uint64_t rest_of(const st_tensor *t)
{
    return t->rank && t->shape[0] ? t->nelements / t->shape[0] : 0;
}

static int bad(const lora_adapter *a, const lora_module *m, const char *what, st_error *err)
{
    char nm[200];
    st_quote_name(nm, sizeof nm, m->stem, m->stem_len);
    const st_tensor *t = NULL;
    for (int k = 0; k < LK_COUNT && !t; k++)
        t = m->part[k];
    return st_fail(err, ST_E_LORA, t ? t->header_offset : ST_NO_OFFSET, "%s: module %s: %s", a->path,
                   nm, what);
}

/* Loads a [d0 x rest] factor after checking its dims. */
static int load2(const lora_adapter *a, const st_tensor *t, float **out, st_error *err)
{
    return lora_load_f32(a->file, a->path, t, out, err);
}

static int get_scale(const lora_adapter *a, const lora_module *m, uint64_t rank, double *scale,
                     st_error *err)
{
    *scale = 1.0;
    if (!m->part[LK_ALPHA])
        return ST_OK;
    double alpha;
    int rc = lora_load_scalar(a->file, a->path, m->part[LK_ALPHA], &alpha, err);
    if (rc)
        return rc;
    if (!isfinite(alpha))
        return bad(a, m, "alpha is not a finite number", err);
    *scale = alpha / (double)rank;
    return ST_OK;
}

void lora_factors_free(lora_factors *f)
{
    free(f->up);
    free(f->down);
    f->up = f->down = NULL;
}

/* LyCORIS LoCon with a Tucker core (ComfyUI comfy/weight_adapter/lora.py):
 * down [r, in, 1, 1], mid [r2, r, kh, kw], up [out, r2, 1, 1];
 * down'[i, q, k, l] = sum_j mid[i, j, k, l] down[j, q], W += s up @ down',
 * s = alpha / r. */
static int locon_mid_factors(const lora_adapter *a, const lora_module *m, float strength,
                             uint64_t rows, uint64_t cols, const uint64_t *tshape, uint32_t trank,
                             lora_factors *f, st_error *err)
{
    const st_tensor *dn = m->part[LK_DOWN], *up = m->part[LK_UP], *mid = m->part[LK_MID];
    if (trank != 4 || mid->rank != 4 || dn->rank < 2 || up->rank < 2)
        return bad(a, m, "lora_mid needs a 4-D convolution weight and 4-D factors", err);
    uint64_t r = dn->shape[0], r2 = mid->shape[0], in = tshape[1], kk = tshape[2] * tshape[3];
    if (r == 0 || r2 == 0 || rest_of(dn) != in || mid->shape[1] != r || mid->shape[2] != tshape[2] ||
        mid->shape[3] != tshape[3] || up->shape[0] != rows || up->shape[1] != r2 || rest_of(up) != r2 ||
        in * kk != cols)
        return bad(a, m, "lora_down, lora_mid and lora_up do not fit each other or the weight", err);
    if (r > in || r2 > rows || r2 > cols)
        return bad(a, m, "rank is larger than the layer", err);
    double scale;
    int rc = get_scale(a, m, r, &scale, err);
    if (rc || !f)
        return rc;
    float *u = NULL, *d = NULL, *t = NULL, *d2 = lora_alloc_f32(r2 * cols, m->stem, err);
    rc = d2 ? ST_OK : ST_E_NOMEM;
    if (rc == ST_OK)
        rc = load2(a, up, &u, err);
    if (rc == ST_OK)
        rc = load2(a, dn, &d, err);
    if (rc == ST_OK)
        rc = load2(a, mid, &t, err);
    if (rc == ST_OK) {
        memset(d2, 0, r2 * cols * sizeof *d2);
        for (uint64_t i = 0; i < r2; i++)
            for (uint64_t j = 0; j < r; j++)
                for (uint64_t q = 0; q < in; q++) {
                    float dq = d[j * in + q];
                    const float *tk = t + (i * r + j) * kk;
                    float *out = d2 + i * cols + q * kk;
                    for (uint64_t k = 0; k < kk; k++)
                        out[k] += tk[k] * dq;
                }
        *f = (lora_factors){u, d2, r2, (float)(strength * scale)};
        u = d2 = NULL;
    }
    free(u), free(d), free(t), free(d2);
    return rc;
}

/* kohya LoRA / LoCon, PEFT, diffusers: W += s up @ down. */
static int lora_factors_of(const lora_adapter *a, const lora_module *m, float strength,
                           uint64_t rows, uint64_t cols, const uint64_t *tshape, uint32_t trank,
                           lora_factors *f, st_error *err)
{
    const st_tensor *dn = m->part[LK_DOWN], *up = m->part[LK_UP];
    if (!dn || !up)
        return bad(a, m, "has lora_down without lora_up or the reverse", err);
    if (m->part[LK_MID])
        return locon_mid_factors(a, m, strength, rows, cols, tshape, trank, f, err);
    if (dn->rank < 2 || up->rank < 2)
        return bad(a, m, "lora_down and lora_up must have at least 2 dimensions", err);
    uint64_t r = dn->shape[0];
    char msg[200];
    if (r == 0)
        return bad(a, m, "rank 0", err);
    if (up->shape[0] != rows || up->shape[1] != r || rest_of(up) != r) {
        snprintf(msg, sizeof msg, "lora_up shape [%llu, %llu, ...] does not fit %llu rows and rank %llu",
                 (unsigned long long)up->shape[0], (unsigned long long)up->shape[1],
                 (unsigned long long)rows, (unsigned long long)r);
        return bad(a, m, msg, err);
    }
    if (rest_of(dn) != cols || (trank >= 2 && dn->shape[1] != tshape[1]) ||
        (trank == 4 && dn->rank == 4 && (dn->shape[2] != tshape[2] || dn->shape[3] != tshape[3]))) {
        snprintf(msg, sizeof msg, "lora_down [%llu, %llu, ...] does not fit the weight's %llu inputs",
                 (unsigned long long)dn->shape[0], (unsigned long long)dn->shape[1],
                 (unsigned long long)cols);
        return bad(a, m, msg, err);
    }
    if (r > rows || r > cols) {
        snprintf(msg, sizeof msg, "rank %llu is larger than the layer (%llu x %llu)",
                 (unsigned long long)r, (unsigned long long)rows, (unsigned long long)cols);
        return bad(a, m, msg, err);
    }
    double scale;
    int rc = get_scale(a, m, r, &scale, err);
    if (rc || !f)
        return rc;
    float *u = NULL, *d = NULL;
    rc = load2(a, up, &u, err);
    if (rc == ST_OK)
        rc = load2(a, dn, &d, err);
    if (rc == ST_OK) {
        *f = (lora_factors){u, d, r, (float)(strength * scale)};
        u = d = NULL;
    }
    free(u), free(d);
    return rc;
}

static int apply_lora(const lora_adapter *a, const lora_module *m, float strength, float *w,
                      uint64_t rows, uint64_t cols, const uint64_t *tshape, uint32_t trank,
                      st_error *err)
{
    lora_factors f = {0};
    int rc = lora_factors_of(a, m, strength, rows, cols, tshape, trank, w ? &f : NULL, err);
    if (rc == ST_OK && w)
        lora_gemm_acc(rows, cols, f.k, f.scale, f.up, f.down, w);
    lora_factors_free(&f);
    return rc;
}

int lora_module_factors(const lora_adapter *a, const lora_module *m, float strength, uint64_t rows,
                        uint64_t cols, const uint64_t *tshape, uint32_t trank, lora_factors *f,
                        st_error *err)
{
    memset(f, 0, sizeof *f);
    if (m->part[LK_DORA] || (!m->part[LK_DOWN] && !m->part[LK_UP]))
        return ST_OK;
    return lora_factors_of(a, m, strength, rows, cols, tshape, trank, f, err);
}

/* w1a @ w1b as a fresh [rows x cols] array. */
static int product(const lora_adapter *a, const lora_module *m, const st_tensor *ta,
                   const st_tensor *tb, uint64_t rows, uint64_t cols, float **out, st_error *err)
{
    *out = NULL;
    if (!ta || !tb || ta->rank != 2 || tb->rank < 2)
        return bad(a, m, "a low-rank factor is missing or not a matrix", err);
    uint64_t r = ta->shape[1];
    if (r == 0 || tb->shape[0] != r || ta->shape[0] != rows || rest_of(tb) != cols)
        return bad(a, m, "factor shapes do not fit each other or the weight", err);
    if (r > rows || r > cols)
        return bad(a, m, "rank is larger than the layer", err);
    float *fa = NULL, *fb = NULL, *c = lora_alloc_f32(rows * cols, m->stem, err);
    int rc = c ? ST_OK : ST_E_NOMEM;
    if (rc == ST_OK)
        rc = load2(a, ta, &fa, err);
    if (rc == ST_OK)
        rc = load2(a, tb, &fb, err);
    if (rc == ST_OK) {
        memset(c, 0, rows * cols * sizeof *c);
        lora_gemm_acc(rows, cols, r, 1.0f, fa, fb, c);
        *out = c;
        c = NULL;
    }
    free(fa), free(fb), free(c);
    return rc;
}

/* LyCORIS's Tucker form (use_tucker, conv layers): wa [R1, out], wb [R2, in],
 * core [R1, R2, kh, kw]; m[p, r, k, l] = sum_ij core[i, j, k, l] wb[j, r] wa[i, p]
 * (the einsum "i j k l, j r, i p -> p r k l" of LyCORIS and ComfyUI). Note the
 * factors are stored transposed against the plain form's [out, R] @ [R, in].
 * Returns a fresh [out x in*kh*kw] array. */
static int tucker(const lora_adapter *a, const lora_module *m, const st_tensor *tc,
                  const st_tensor *ta, const st_tensor *tb, uint64_t out, uint64_t in, uint64_t kh,
                  uint64_t kw, float **res, st_error *err)
{
    *res = NULL;
    if (!tc || !ta || !tb || tc->rank != 4 || ta->rank != 2 || tb->rank != 2)
        return bad(a, m, "a Tucker core needs a 4-D core and two matrices", err);
    uint64_t r1 = tc->shape[0], r2 = tc->shape[1], kk = kh * kw, cols = in * kk;
    if (r1 == 0 || r2 == 0 || ta->shape[0] != r1 || ta->shape[1] != out || tb->shape[0] != r2 ||
        tb->shape[1] != in || tc->shape[2] != kh || tc->shape[3] != kw)
        return bad(a, m, "Tucker core and factors do not fit each other or the weight", err);
    if (r1 > out || r2 > in)
        return bad(a, m, "rank is larger than the layer", err);
    float *fc = NULL, *fa = NULL, *fb = NULL, *mid = lora_alloc_f32(r1 * cols, m->stem, err);
    float *wat = mid ? lora_alloc_f32(out * r1, m->stem, err) : NULL;
    float *c = wat ? lora_alloc_f32(out * cols, m->stem, err) : NULL;
    int rc = c ? ST_OK : ST_E_NOMEM;
    if (rc == ST_OK)
        rc = load2(a, tc, &fc, err);
    if (rc == ST_OK)
        rc = load2(a, ta, &fa, err);
    if (rc == ST_OK)
        rc = load2(a, tb, &fb, err);
    if (rc == ST_OK) {
        /* mid[i, r, kl] = sum_j core[i, j, kl] wb[j, r]: the small contraction first,
         * so the large one is a single GEMM with wa transposed. */
        memset(mid, 0, r1 * cols * sizeof *mid);
        for (uint64_t i = 0; i < r1; i++)
            for (uint64_t j = 0; j < r2; j++) {
                const float *ck = fc + (i * r2 + j) * kk;
                for (uint64_t r = 0; r < in; r++) {
                    float v = fb[j * in + r];
                    float *dst = mid + i * cols + r * kk;
                    for (uint64_t k = 0; k < kk; k++)
                        dst[k] += v * ck[k];
                }
            }
        for (uint64_t i = 0; i < r1; i++)
            for (uint64_t p = 0; p < out; p++)
                wat[p * r1 + i] = fa[i * out + p];
        memset(c, 0, out * cols * sizeof *c);
        lora_gemm_acc(out, cols, r1, 1.0f, wat, mid, c);
        *res = c;
        c = NULL;
    }
    free(fc), free(fa), free(fb), free(mid), free(wat), free(c);
    return rc;
}

static int apply_loha(const lora_adapter *a, const lora_module *m, float strength, float *w,
                      uint64_t rows, uint64_t cols, const uint64_t *tshape, uint32_t trank,
                      st_error *err)
{
    const st_tensor *t1 = m->part[LK_HADA_T1], *t2 = m->part[LK_HADA_T2];
    if ((t1 != NULL) != (t2 != NULL))
        return bad(a, m, "has one of hada_t1 and hada_t2 without the other", err);
    if (t1 && (trank != 4 || tshape[1] * tshape[2] * tshape[3] != cols))
        return bad(a, m, "hada_t1/t2 need a 4-D convolution weight", err);
    const st_tensor *b1 = m->part[LK_HADA_W1B];
    if (!b1 || b1->rank < 1 || b1->shape[0] == 0)
        return bad(a, m, "hada_w1_b missing or rank 0", err);
    double scale;
    int rc = get_scale(a, m, b1->shape[0], &scale, err);
    float *p1 = NULL, *p2 = NULL;
    if (rc == ST_OK && t1) {
        rc = tucker(a, m, t1, m->part[LK_HADA_W1A], b1, rows, tshape[1], tshape[2], tshape[3], &p1,
                    err);
        if (rc == ST_OK)
            rc = tucker(a, m, t2, m->part[LK_HADA_W2A], m->part[LK_HADA_W2B], rows, tshape[1],
                        tshape[2], tshape[3], &p2, err);
    }
    if (rc == ST_OK && !t1)
        rc = product(a, m, m->part[LK_HADA_W1A], b1, rows, cols, &p1, err);
    if (rc == ST_OK && !t1)
        rc = product(a, m, m->part[LK_HADA_W2A], m->part[LK_HADA_W2B], rows, cols, &p2, err);
    if (rc == ST_OK) {
        float s = (float)(strength * scale);
        for (uint64_t i = 0; i < rows * cols; i++)
            w[i] += s * p1[i] * p2[i];
    }
    free(p1), free(p2);
    return rc;
}

/* One Kronecker factor: whole (lokr_wN) or low-rank (lokr_wN_a @ lokr_wN_b). */
static int lokr_factor(const lora_adapter *a, const lora_module *m, int whole, int fa, int fb,
                       float **out, uint64_t *d0, uint64_t *d1, uint64_t *dim, st_error *err)
{
    const st_tensor *t = m->part[whole];
    if (t) {
        if (t->rank < 2 || t->nelements == 0)
            return bad(a, m, "a LoKr factor is not a matrix", err);
        *d0 = t->shape[0];
        *d1 = rest_of(t);
        return load2(a, t, out, err);
    }
    const st_tensor *ta = m->part[fa], *tb = m->part[fb];
    if (!ta || !tb || ta->rank != 2 || tb->rank < 2 || ta->shape[0] == 0 || tb->shape[0] == 0)
        return bad(a, m, "a LoKr factor is missing", err);
    *d0 = ta->shape[0];
    *d1 = rest_of(tb);
    *dim = tb->shape[0];
    if (*d1 > UINT32_MAX || *d0 > UINT32_MAX)
        return bad(a, m, "a LoKr factor is too large", err);
    return product(a, m, ta, tb, *d0, *d1, out, err);
}

static int apply_lokr(const lora_adapter *a, const lora_module *m, float strength, float *w,
                      uint64_t rows, uint64_t cols, const uint64_t *tshape, uint32_t trank,
                      st_error *err)
{
    const st_tensor *t2 = m->part[LK_LOKR_T2];
    if (t2 && (trank != 4 || m->part[LK_LOKR_W2] || !m->part[LK_LOKR_W2A] || !m->part[LK_LOKR_W2B] ||
               m->part[LK_LOKR_W2A]->rank != 2 || m->part[LK_LOKR_W2B]->rank != 2))
        return bad(a, m, "lokr_t2 needs a 4-D convolution weight and lokr_w2_a/lokr_w2_b matrices", err);
    /* Shapes first: the two factors' products must tile the weight. */
    const st_tensor *w1 = m->part[LK_LOKR_W1], *w2 = m->part[LK_LOKR_W2];
    const st_tensor *w1a = m->part[LK_LOKR_W1A], *w1b = m->part[LK_LOKR_W1B];
    const st_tensor *w2a = m->part[LK_LOKR_W2A], *w2b = m->part[LK_LOKR_W2B];
    uint64_t a0 = w1 ? (w1->rank ? w1->shape[0] : 0) : (w1a && w1a->rank ? w1a->shape[0] : 0);
    uint64_t a1 = w1 ? rest_of(w1) : (w1b ? rest_of(w1b) : 0);
    uint64_t c0 = w2 ? (w2->rank ? w2->shape[0] : 0) : (w2a && w2a->rank ? w2a->shape[0] : 0);
    uint64_t c1 = w2 ? rest_of(w2) : (w2b ? rest_of(w2b) : 0);
    if (t2) { /* the Tucker form's factors are [R, out] and [R, in] */
        c0 = w2a->shape[1];
        c1 = w2b->shape[1] * tshape[2] * tshape[3];
    }
    if (!a0 || !a1 || !c0 || !c1 || rows % a0 || rows / a0 != c0 || cols % a1 || cols / a1 != c1)
        return bad(a, m, "LoKr factors do not tile the weight's shape", err);
    float *f1 = NULL, *f2 = NULL;
    uint64_t d0, d1, e0, e1, dim = 0;
    int rc = lokr_factor(a, m, LK_LOKR_W1, LK_LOKR_W1A, LK_LOKR_W1B, &f1, &d0, &d1, &dim, err);
    if (rc == ST_OK && t2) {
        e0 = c0;
        e1 = c1;
        dim = w2b->shape[0];
        rc = tucker(a, m, t2, w2a, w2b, c0, w2b->shape[1], tshape[2], tshape[3], &f2, err);
    } else if (rc == ST_OK)
        rc = lokr_factor(a, m, LK_LOKR_W2, LK_LOKR_W2A, LK_LOKR_W2B, &f2, &e0, &e1, &dim, err);
    double scale = 1.0;
    if (rc == ST_OK && dim)
        rc = get_scale(a, m, dim, &scale, err);
    if (rc == ST_OK) {
        float s = (float)(strength * scale);
        for (uint64_t i1 = 0; i1 < d0; i1++)
            for (uint64_t i2 = 0; i2 < e0; i2++) {
                float *row = w + (i1 * e0 + i2) * cols;
                const float *r2 = f2 + i2 * e1;
                for (uint64_t j1 = 0; j1 < d1; j1++) {
                    float v = s * f1[i1 * d1 + j1];
                    float *dst = row + j1 * e1;
                    for (uint64_t j2 = 0; j2 < e1; j2++)
                        dst[j2] += v * r2[j2];
                }
            }
    }
    free(f1), free(f2);
    return rc;
}

static int apply_delta(const lora_adapter *a, const lora_module *m, float strength, float *w,
                       uint64_t rows, uint64_t cols, const uint64_t *tshape, uint32_t trank,
                       st_error *err);

/*
 * DoRA as ComfyUI's comfy/weight_adapter/base.py weight_decompose applies it
 * (and LyCORIS / kohya train it): W' = (W + s dW) * m / (norm + eps), then
 * W + strength (W' - W). A dora_scale with one value per output row (LyCORIS)
 * divides by the norms of the ORIGINAL weight's rows — ComfyUI's choice, kept
 * so a bake matches what it renders; one per input column (kohya, PEFT:
 * [1, in] or [1, in, 1, 1]) divides by the column norms of W + s dW.
 */
static int apply_dora(const lora_adapter *a, const lora_module *m, float strength, float *w,
                      uint64_t rows, uint64_t cols, const uint64_t *tshape, uint32_t trank,
                      st_error *err)
{
    const st_tensor *d = m->part[LK_DORA];
    uint64_t in = trank >= 2 ? tshape[1] : cols;
    if (in == 0 || cols % in)
        return bad(a, m, "dora_scale needs a weight with input columns", err);
    uint64_t kk = cols / in;
    bool on_out = d->rank >= 1 && d->shape[0] == rows && d->nelements == rows;
    bool on_in = d->rank >= 2 && d->shape[0] == 1 && d->shape[1] == in && d->nelements == in;
    if (!on_out && !on_in)
        return bad(a, m, "dora_scale fits neither the weight's rows nor its input columns", err);
    int rc = apply_delta(a, m, 1.0f, NULL, rows, cols, tshape, trank, err);
    if (rc || !w)
        return rc;
    float *mag = NULL, *w0 = lora_alloc_f32(rows * cols, m->stem, err);
    double *norm = w0 ? calloc(on_out ? rows : in, sizeof *norm) : NULL;
    rc = norm ? ST_OK : (w0 ? st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory") : ST_E_NOMEM);
    if (rc == ST_OK)
        rc = load2(a, d, &mag, err);
    if (rc == ST_OK) {
        memcpy(w0, w, rows * cols * sizeof *w);
        rc = apply_delta(a, m, 1.0f, w, rows, cols, tshape, trank, err);
    }
    if (rc == ST_OK) {
        const float *src = on_out ? w0 : w;
        for (uint64_t i = 0; i < rows; i++)
            for (uint64_t c = 0; c < cols; c++) {
                double v = src[i * cols + c];
                norm[on_out ? i : c / kk] += v * v;
            }
        for (uint64_t i = 0; i < rows; i++)
            for (uint64_t c = 0; c < cols; c++) {
                uint64_t k = on_out ? i : c / kk;
                double f = mag[k] / (sqrt(norm[k]) + FLT_EPSILON);
                double wc = w[i * cols + c] * f, o = w0[i * cols + c];
                w[i * cols + c] = (float)(o + strength * (wc - o));
            }
    }
    free(mag), free(w0), free(norm);
    return rc;
}

int lora_module_apply(const lora_adapter *a, const lora_module *m, float strength, float *w,
                      uint64_t rows, uint64_t cols, const uint64_t *tshape, uint32_t trank,
                      st_error *err)
{
    if (m->part[LK_DORA])
        return apply_dora(a, m, strength, w, rows, cols, tshape, trank, err);
    return apply_delta(a, m, strength, w, rows, cols, tshape, trank, err);
}

static int apply_delta(const lora_adapter *a, const lora_module *m, float strength, float *w,
                       uint64_t rows, uint64_t cols, const uint64_t *tshape, uint32_t trank,
                       st_error *err)
{
    if (!w && !m->part[LK_DOWN] && !m->part[LK_UP])
        return ST_OK; /* LyCORIS modules are checked when applied */
    if (m->part[LK_DOWN] || m->part[LK_UP])
        return apply_lora(a, m, strength, w, rows, cols, tshape, trank, err);
    if (m->part[LK_HADA_W1A] || m->part[LK_HADA_W1B])
        return apply_loha(a, m, strength, w, rows, cols, tshape, trank, err);
    if (m->part[LK_LOKR_W1] || m->part[LK_LOKR_W1A] || m->part[LK_LOKR_W2] || m->part[LK_LOKR_W2A])
        return apply_lokr(a, m, strength, w, rows, cols, tshape, trank, err);
    return bad(a, m, "has an alpha but no weights", err);
}
