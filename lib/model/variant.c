/*
 * Which file of a folder a model is: the one index, or the one
 * .safetensors file, leaving aside the weight variants diffusers and
 * transformers save next to the plain weights (diffusion_pytorch_model.fp16.safetensors,
 * model.non_ema.safetensors, ...) unless a variant is asked for. The names
 * are those diffusers' variant_compatible_siblings and _add_variant (and
 * transformers' _add_variant) give: a variant only ever follows one of the
 * weight-file stems below, so an unrelated "sd_xl_base_1.0.safetensors" is
 * never mistaken for the "0" variant of something.
 */
#include "model/model_internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* diffusers' weight-name stems (diffusion_pytorch_model, model,
 * pytorch_model); "weights" is ONNX's and holds no safetensors. */
static const char *const stems[] = {"diffusion_pytorch_model", "pytorch_model", "model"};

typedef enum {
    K_OTHER_FILE,   /* a .safetensors file that is no variant */
    K_OTHER_INDEX,  /* a *.safetensors.index.json that is no variant */
    K_VAR_FILE,     /* STEM.V.safetensors */
    K_VAR_SHARD,    /* STEM.V-00001-of-00002.safetensors, STEM-00001-of-00002.V.safetensors */
    K_VAR_INDEX,    /* STEM.safetensors.index.V.json and the older spellings */
    K_SKIP
} name_kind;

typedef struct entry {
    char *name;
    name_kind kind;
    const char *var;  /* in name */
    size_t var_len;
    int rank;         /* of a variant index: 0 current spelling, 1 and 2 older */
} entry;

static bool is_shard_tag(const char *s, size_t n)
{
    /* -00001-of-00002 */
    if (n != 15 || s[0] != '-' || memcmp(s + 6, "-of-", 4) != 0)
        return false;
    for (size_t i = 1; i < 15; i++)
        if ((i < 6 || i > 9) && (s[i] < '0' || s[i] > '9'))
            return false;
    return true;
}

static bool var_ok(const char *s, size_t n)
{
    if (n == 0 || n > ST_MODEL_VARIANT_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '+'))
            return false;
    }
    return true;
}

static bool ends(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n > k && memcmp(s + n - k, suffix, k) == 0;
}

/* What a directory entry's name is, and its variant. */
static void classify(entry *e)
{
    const char *nm = e->name;
    size_t n = strlen(nm);
    bool is_st = ends(nm, n, ".safetensors");
    bool is_json = ends(nm, n, ".json");
    e->kind = is_st ? K_OTHER_FILE : ends(nm, n, ".safetensors.index.json") ? K_OTHER_INDEX : K_SKIP;
    if (!is_st && !is_json)
        return;
    for (size_t s = 0; s < sizeof stems / sizeof stems[0]; s++) {
        size_t sl = strlen(stems[s]);
        if (n <= sl || memcmp(nm, stems[s], sl) != 0)
            continue;
        const char *r = nm + sl; /* what follows the stem */
        size_t rl = n - sl;
        const char *a, *b;
        if (is_st && r[0] == '-' && rl > 15 + 12 && is_shard_tag(r, 15) && r[15] == '.') {
            /* the older STEM-00001-of-00002.V.safetensors */
            a = r + 16;
            b = nm + n - 12;
            if (var_ok(a, (size_t)(b - a))) {
                e->kind = K_VAR_SHARD;
                e->var = a;
                e->var_len = (size_t)(b - a);
            }
            return;
        }
        if (r[0] != '.')
            continue;
        if (is_st) {
            a = r + 1;
            b = nm + n - 12; /* ".safetensors" */
            if (b - a > 15 && is_shard_tag(b - 15, 15)) {
                if (var_ok(a, (size_t)(b - 15 - a))) {
                    e->kind = K_VAR_SHARD;
                    e->var = a;
                    e->var_len = (size_t)(b - 15 - a);
                }
            } else if (b > a && var_ok(a, (size_t)(b - a))) {
                e->kind = K_VAR_FILE;
                e->var = a;
                e->var_len = (size_t)(b - a);
            }
            return;
        }
        /* An index: STEM.safetensors.index.V.json (today's _add_variant),
         * STEM.safetensors.V.index.json (diffusers' "legacy" spelling,
         * written by the releases of mid-2024), STEM.V.safetensors.index.json. */
        static const struct { const char *pre, *post; int rank; } forms[] = {
            {".safetensors.index.", ".json", 0},
            {".safetensors.", ".index.json", 1},
            {".", ".safetensors.index.json", 2},
        };
        for (size_t f = 0; f < sizeof forms / sizeof forms[0]; f++) {
            size_t pl = strlen(forms[f].pre), ql = strlen(forms[f].post);
            if (rl <= pl + ql || memcmp(r, forms[f].pre, pl) != 0 || !ends(r, rl, forms[f].post))
                continue;
            a = r + pl;
            size_t vl = rl - pl - ql;
            if (var_ok(a, vl) && !(vl == 5 && memcmp(a, "index", 5) == 0) &&
                !(vl == 11 && memcmp(a, "safetensors", 11) == 0)) {
                e->kind = K_VAR_INDEX;
                e->var = a;
                e->var_len = vl;
                e->rank = forms[f].rank;
                return;
            }
        }
        return;
    }
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(((const entry *)a)->name, ((const entry *)b)->name);
}

static bool var_is(const entry *e, const char *v)
{
    return e->var && e->var_len == strlen(v) && memcmp(e->var, v, e->var_len) == 0;
}

/* "fp16, non_ema" : the distinct variants present, for messages. */
static void list_variants(const entry *v, size_t n, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (!v[i].var)
            continue;
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = v[j].var && v[j].var_len == v[i].var_len &&
                   memcmp(v[j].var, v[i].var, v[i].var_len) == 0;
        if (seen)
            continue;
        int k = snprintf(buf + used, cap - used, "%s%.*s", used ? ", " : "", (int)v[i].var_len,
                         v[i].var);
        if (k < 0 || (size_t)k >= cap - used) {
            if (cap > 4)
                memcpy(buf + cap - 4, "...", 4);
            return;
        }
        used += (size_t)k;
    }
}

/* Among v[0..n) those of kind k (and variant var, or any non-variant when
 * var is NULL, and of the best rank for indexes): exactly one is chosen;
 * several are an error listing two of them. *chosen stays NULL when none. */
static int pick(const char *dir, const entry *v, size_t n, name_kind k, const char *var,
                const entry **chosen, st_error *err)
{
    const entry *first = NULL, *second = NULL;
    size_t count = 0;
    int best = 3;
    for (size_t i = 0; i < n; i++)
        if (v[i].kind == k && (!var || var_is(&v[i], var)) && v[i].rank < best)
            best = v[i].rank;
    for (size_t i = 0; i < n; i++) {
        if (v[i].kind != k || (var && !var_is(&v[i], var)) || v[i].rank != best)
            continue;
        if (!first)
            first = &v[i];
        else if (!second)
            second = &v[i];
        count++;
    }
    *chosen = NULL;
    if (count == 1) {
        *chosen = first;
        return ST_OK;
    }
    if (count == 0)
        return ST_OK;
    char vars[160];
    list_variants(v, n, vars, sizeof vars);
    const char *what = k == K_OTHER_INDEX || k == K_VAR_INDEX ? "index files"
                       : var                                   ? ".safetensors files"
                                                               : ".safetensors files and no index";
    return st_fail(err, ST_E_ARG, ST_NO_OFFSET,
                   "folder %s holds %zu %s%s%s (%s, %s%s): name the file to open%s%s%s", dir, count,
                   var ? var : "", var ? " " : "", what, first->name, second->name,
                   count > 2 ? ", ..." : "",
                   vars[0] ? ", or a weight variant with --variant (present: " : " (or a diffusers weight variant with --variant)",
                   vars, vars[0] ? ")" : "");
}

int st_model_find_in_folder(const char *dir, const char *variant, unsigned flags, char **found,
                            char *used_variant, st_error *err)
{
    *found = NULL;
    used_variant[0] = '\0';
    if (variant && !var_ok(variant, strlen(variant)))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET,
                       "weight variant \"%.*s\" is not a variant name (1 to %d of A-Z a-z 0-9 _ - +)",
                       ST_MODEL_VARIANT_MAX + 1, variant, ST_MODEL_VARIANT_MAX);
    DIR *d = opendir(dir);
    if (!d)
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot read folder %s: %s", dir, strerror(errno));
    entry *v = NULL;
    size_t n = 0, cap = 0;
    int rc = ST_OK;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') /* also the writer's temporary files */
            continue;
        entry e = {.name = de->d_name};
        classify(&e);
        if (e.kind == K_SKIP)
            continue;
        struct stat sb;
        if (fstatat(dirfd(d), de->d_name, &sb, 0) != 0 || !S_ISREG(sb.st_mode))
            continue;
        if (n == cap) {
            size_t nc = cap ? 2 * cap : 16;
            entry *nv = nc < SIZE_MAX / sizeof *nv ? realloc(v, nc * sizeof *nv) : NULL;
            if (!nv) {
                rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory (folder listing)");
                break;
            }
            v = nv;
            cap = nc;
        }
        e.name = strdup(de->d_name);
        if (!e.name) {
            rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory (folder listing)");
            break;
        }
        classify(&e); /* again: var must point into the copy */
        v[n++] = e;
    }
    closedir(d);
    if (!rc && n > 1)
        qsort(v, n, sizeof *v, name_cmp);
    const entry *c = NULL;
    char vars[160];
    if (!rc)
        list_variants(v, n, vars, sizeof vars);
    if (!rc && variant) {
        rc = pick(dir, v, n, K_VAR_INDEX, variant, &c, err);
        if (!rc && !c)
            rc = pick(dir, v, n, K_VAR_FILE, variant, &c, err);
        if (!rc && !c) {
            bool shards = false;
            for (size_t i = 0; i < n; i++)
                shards = shards || (v[i].kind == K_VAR_SHARD && var_is(&v[i], variant));
            if (shards)
                rc = st_fail(err, ST_E_NOT_FOUND, ST_NO_OFFSET,
                             "folder %s holds shards of weight variant %s but no index of them "
                             "(such as diffusion_pytorch_model.safetensors.index.%s.json)",
                             dir, variant, variant);
            else if (!(flags & ST_MODEL_VARIANT_FALLBACK))
                rc = st_fail(err, ST_E_NOT_FOUND, ST_NO_OFFSET,
                             "folder %s has no weight variant %s (no file such as "
                             "diffusion_pytorch_model.%s.safetensors or model.%s.safetensors, nor "
                             "an index of them); variants present: %s",
                             dir, variant, variant, variant, vars[0] ? vars : "none");
        }
        if (c)
            memcpy(used_variant, variant, strlen(variant) + 1);
    }
    if (!rc && !c) {
        rc = pick(dir, v, n, K_OTHER_INDEX, NULL, &c, err);
        if (!rc && !c)
            rc = pick(dir, v, n, K_OTHER_FILE, NULL, &c, err);
        if (!rc && !c) {
            if (vars[0])
                rc = st_fail(err, ST_E_NOT_FOUND, ST_NO_OFFSET,
                             "folder %s holds only weight variants (%s) and no plain weights: "
                             "choose a variant (--variant)",
                             dir, vars);
            else
                rc = st_fail(err, ST_E_NOT_FOUND, ST_NO_OFFSET,
                             "folder %s holds no *.safetensors.index.json and no *.safetensors file",
                             dir);
        }
    }
    if (!rc) {
        *found = st_model_join_path(dir, c->name);
        if (!*found)
            rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory (path)");
    }
    for (size_t i = 0; i < n; i++)
        free(v[i].name);
    free(v);
    return rc;
}
