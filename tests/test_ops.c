/* The model operations through the C API (lib/sd/): st_merge, st_diff,
 * st_convert_file, st_install_*, st_name_glob_match. The CLI tests
 * (tests/sdops_test.py) check the same operations against numpy; these
 * check what a C program or the Python package sees: values, reports,
 * callbacks, error codes and that a failure leaves no output. */
#include "safetensors.h"

#include <dirent.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"

static char dir[256];

static char *path_of(const char *name)
{
    static char buf[256][512];
    static int k;
    char *p = buf[k++ % 256]; /* a ring: pointers stay valid for 255 calls */
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

/* Writes a file of F32 tensors name -> n values (value i: base + i * step). */
typedef struct spec {
    const char *name;
    uint64_t n;
    float base, step;
    st_dtype dtype; /* ST_F32 or ST_F16 (values written through st_convert) */
} spec;

static void write_file(const char *path, const spec *s, size_t count, const char *meta_key,
                       const char *meta_value)
{
    st_writer *w = st_writer_new();
    void **bufs = calloc(count, sizeof *bufs);
    for (size_t i = 0; i < count; i++) {
        float *v = malloc(s[i].n * sizeof *v);
        for (uint64_t j = 0; j < s[i].n; j++)
            v[j] = s[i].base + (float)j * s[i].step;
        size_t eb = st_dtype_bits(s[i].dtype) / 8;
        void *data = malloc(s[i].n * eb + 1);
        st_convert(s[i].dtype, data, ST_F32, v, s[i].n, 0, NULL);
        free(v);
        bufs[i] = data;
        uint64_t shape[1] = {s[i].n};
        CHECK(st_writer_add(w, s[i].name, strlen(s[i].name), s[i].dtype, shape, 1, data,
                            s[i].n * eb, NULL) == ST_OK);
    }
    if (meta_key)
        st_writer_set_metadata(w, meta_key, strlen(meta_key), meta_value, strlen(meta_value),
                               NULL);
    CHECK(st_writer_write(w, path, NULL) == ST_OK, "%s", path);
    st_writer_free(w);
    for (size_t i = 0; i < count; i++)
        free(bufs[i]);
    free(bufs);
}

static float value_at(st_file *f, const char *name, uint64_t i)
{
    const st_tensor *t = st_find(f, name, strlen(name));
    if (!t)
        return NAN;
    unsigned char raw[8];
    size_t eb = st_dtype_bits(t->dtype) / 8;
    float v = NAN;
    if (st_tensor_read(f, t, i * eb, raw, eb, NULL) == ST_OK)
        st_convert(ST_F32, &v, t->dtype, raw, 1, 0, NULL);
    return v;
}

static bool exists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}

/* No ".NAME.XXXXXX.tmp" left in folder. */
static bool no_temp_files_in(const char *folder)
{
    DIR *d = opendir(folder);
    struct dirent *e;
    bool clean = true;
    while (d && (e = readdir(d)))
        if (e->d_name[0] == '.' && strstr(e->d_name, ".tmp"))
            clean = false;
    if (d)
        closedir(d);
    return clean;
}

/* ... in the test folder. */
static bool no_temp_files(void)
{
    return no_temp_files_in(dir);
}

static int progress_calls;
static uint64_t progress_last, progress_total;
static int count_progress(void *ctx, uint64_t done, uint64_t total)
{
    (void)ctx;
    progress_calls++;
    progress_last = done;
    progress_total = total;
    return 0;
}

static int stop_progress(void *ctx, uint64_t done, uint64_t total)
{
    (void)ctx;
    (void)done;
    (void)total;
    return 1;
}

static int install_temps_open, install_temps_seen;
static void install_temp(void *ctx, const char *path, int created)
{
    (void)ctx;
    (void)path;
    install_temps_open += created ? 1 : -1;
    install_temps_seen += created ? 1 : 0;
}

static void test_merge(void)
{
    spec a[] = {{"model.diffusion_model.w", 1000, 1.0f, 0.5f, ST_F32},
                {"model.diffusion_model.h", 64, -2.0f, 0.25f, ST_F16},
                {"cond_stage_model.transformer.text_model.embeddings.position_ids", 8, 0, 1,
                 ST_F32},
                {"first_stage_model.x", 4, 3.0f, 0.0f, ST_F32},
                {"alphas_cumprod", 10, 0.5f, 0.01f, ST_F32}};
    spec b[] = {{"model.diffusion_model.w", 1000, -1.0f, 0.25f, ST_F32},
                {"model.diffusion_model.h", 64, 4.0f, -0.5f, ST_F16},
                {"cond_stage_model.transformer.text_model.embeddings.position_ids", 8, 5, 1,
                 ST_F32},
                {"only_in_b.model", 3, 0, 0, ST_F32}};
    write_file(path_of("a.safetensors"), a, 5, "ss_note", "from a");
    write_file(path_of("b.safetensors"), b, 4, "ss_note", "from b");
    const char *in[] = {path_of("a.safetensors"), path_of("b.safetensors")};
    st_merge_options o;
    memset(&o, 0, sizeof o);
    o.mode = ST_MERGE_WEIGHTED;
    o.alpha = 0.25;
    o.hooks.progress = count_progress;
    st_merge_report r;
    st_error err;
    progress_calls = 0;
    int rc = st_merge(in, 2, path_of("m.safetensors"), &o, &r, &err);
    CHECK(rc == ST_OK, "%s", err.message);
    CHECK_EQ_INT(r.tensors, 5);
    CHECK_EQ_INT(r.merged, 2); /* w and h; position_ids never, alphas has no "model" */
    CHECK_EQ_INT(r.written, 5);
    CHECK(progress_calls >= 1 && progress_last == progress_total && progress_total == r.output_size);
    st_file *m = NULL;
    CHECK(st_open(path_of("m.safetensors"), 0, &m, NULL) == ST_OK);
    if (m) {
        float wa = 0.75f, wb = 0.25f;
        for (uint64_t i = 0; i < 1000; i += 111) {
            float exp = wa * (1.0f + (float)i * 0.5f) + wb * (-1.0f + (float)i * 0.25f);
            CHECK(value_at(m, "model.diffusion_model.w", i) == exp, "w[%llu]",
                  (unsigned long long)i);
        }
        const st_tensor *h = st_find(m, "model.diffusion_model.h", 23);
        CHECK(h && h->dtype == ST_F16, "A's dtype kept");
        CHECK(value_at(m, "cond_stage_model.transformer.text_model.embeddings.position_ids", 3) ==
              3.0f, "position_ids are A's");
        CHECK(!st_find(m, "only_in_b.model", 15), "tensors only in B are left out");
        size_t vl;
        const char *v = st_metadata_get(m, "ss_note", 7, &vl);
        CHECK(v && vl == 6 && memcmp(v, "from b", 6) == 0, "later metadata wins");
        CHECK(st_metadata_get(m, "sd_merge_recipe", 15, &vl) != NULL);
        v = st_metadata_get(m, "sd_merge_models", 15, &vl);
        CHECK(v && vl > 2 && v[0] == '{', "sd_merge_models is a JSON object");
        st_close(m);
    }

    /* --dtype: floating tensors written as BF16 */
    o.set_dtype = 1;
    o.dtype = ST_BF16;
    o.hooks.progress = NULL;
    CHECK(st_merge(in, 2, path_of("m16.safetensors"), &o, &r, &err) == ST_OK, "%s", err.message);
    if (st_open(path_of("m16.safetensors"), 0, &m, NULL) == ST_OK) {
        CHECK(st_find(m, "model.diffusion_model.w", 23)->dtype == ST_BF16);
        st_close(m);
    }
    o.set_dtype = 0;

    /* OUT = an input: refused, the input untouched */
    struct stat before, after;
    stat(in[0], &before);
    CHECK(st_merge(in, 2, in[0], &o, &r, &err) == ST_E_ARG);
    stat(in[0], &after);
    CHECK(before.st_size == after.st_size && before.st_mtime == after.st_mtime);

    /* a progress callback that stops the write: ST_E_CALLBACK, no output */
    o.hooks.progress = stop_progress;
    CHECK(st_merge(in, 2, path_of("stopped.safetensors"), &o, &r, &err) == ST_E_CALLBACK);
    CHECK(!exists(path_of("stopped.safetensors")) && no_temp_files());
    o.hooks.progress = NULL;

    /* a missing input: its code, and which input it was */
    const char *missing[] = {in[0], path_of("nope.safetensors")};
    CHECK(st_merge(missing, 2, path_of("x.safetensors"), &o, &r, &err) == ST_E_IO);
    CHECK_EQ_INT(r.failed_input, 1);
    CHECK(!exists(path_of("x.safetensors")));

    /* incompatible shapes: ST_E_ARG naming the tensor, no output */
    spec bad[] = {{"model.diffusion_model.w", 999, 0, 1, ST_F32}};
    write_file(path_of("bad.safetensors"), bad, 1, NULL, NULL);
    const char *inb[] = {in[0], path_of("bad.safetensors")};
    rc = st_merge(inb, 2, path_of("x.safetensors"), &o, &r, &err);
    CHECK(rc == ST_E_ARG && strstr(err.message, "model.diffusion_model.w") &&
              strstr(err.message, "shapes differ"),
          "%s", err.message);
    CHECK(!exists(path_of("x.safetensors")) && no_temp_files());

    /* option checks */
    CHECK(st_merge(in, 3, path_of("x.safetensors"), &o, &r, &err) == ST_E_ARG);
    o.mode = ST_MERGE_ADD_DIFF;
    CHECK(st_merge(in, 2, path_of("x.safetensors"), &o, &r, &err) == ST_E_ARG);
    o.mode = ST_MERGE_WEIGHTED;
    o.alpha = INFINITY;
    CHECK(st_merge(in, 2, path_of("x.safetensors"), &o, &r, &err) == ST_E_ARG);
    o.alpha = 0.5;
    o.discard = "a(";
    CHECK(st_merge(in, 2, path_of("x.safetensors"), &o, &r, &err) == ST_E_ARG);
    o.discard = "alphas_";
    CHECK(st_merge(in, 2, path_of("d.safetensors"), &o, &r, &err) == ST_OK);
    CHECK_EQ_INT(r.discarded, 1);
    CHECK_EQ_INT(r.written, 4);

    /* add-diff: A + M (B - C) */
    const char *in3[] = {in[0], in[1], in[0]};
    memset(&o, 0, sizeof o);
    o.mode = ST_MERGE_ADD_DIFF;
    o.alpha = 1.0;
    CHECK(st_merge(in3, 3, path_of("ad.safetensors"), &o, &r, &err) == ST_OK, "%s", err.message);
    if (st_open(path_of("ad.safetensors"), 0, &m, NULL) == ST_OK) {
        float av = 1.0f + 10 * 0.5f, bv = -1.0f + 10 * 0.25f;
        CHECK(value_at(m, "model.diffusion_model.w", 10) == av + 1.0f * (bv - av));
        st_close(m);
    }
}

typedef struct diff_seen {
    int tensors, only_a, only_b, changed, same, meta;
} diff_seen;

static int on_tensor(void *ctx, const st_tensor_diff *d)
{
    diff_seen *s = ctx;
    s->tensors++;
    s->only_a += d->status == ST_DIFF_ONLY_A;
    s->only_b += d->status == ST_DIFF_ONLY_B;
    s->changed += d->status == ST_DIFF_CHANGED;
    s->same += d->status == ST_DIFF_SAME;
    return 0;
}

static int on_meta(void *ctx, int status, const char *k, size_t kl)
{
    diff_seen *s = ctx;
    (void)status;
    (void)k;
    (void)kl;
    s->meta++;
    return 0;
}

static void test_diff(void)
{
    spec a[] = {{"same", 100, 1, 1, ST_F32}, {"changed", 100, 1, 1, ST_F32},
                {"only_a", 5, 0, 0, ST_F32}, {"reshaped", 6, 0, 0, ST_F32}};
    spec b[] = {{"same", 100, 1, 1, ST_F32}, {"changed", 100, 1.5f, 1, ST_F32},
                {"only_b", 5, 0, 0, ST_F32}, {"reshaped", 7, 0, 0, ST_F32}};
    write_file(path_of("da.safetensors"), a, 4, "k", "1");
    write_file(path_of("db.safetensors"), b, 4, "k", "2");
    st_file *fa = NULL, *fb = NULL;
    CHECK(st_open(path_of("da.safetensors"), ST_OPEN_PREAD, &fa, NULL) == ST_OK);
    CHECK(st_open(path_of("db.safetensors"), ST_OPEN_PREAD, &fb, NULL) == ST_OK);
    if (!fa || !fb)
        return;
    diff_seen seen;
    memset(&seen, 0, sizeof seen);
    st_diff_options o;
    memset(&o, 0, sizeof o);
    o.on_tensor = on_tensor;
    o.on_metadata = on_meta;
    o.ctx = &seen;
    st_diff_summary s;
    st_error err;
    CHECK(st_diff(fa, fb, &o, &s, &err) == ST_OK);
    CHECK(!s.identical_files);
    CHECK_EQ_INT(s.identical, 1);
    CHECK_EQ_INT(s.changed, 2);
    CHECK_EQ_INT(s.only_a, 1);
    CHECK_EQ_INT(s.only_b, 1);
    CHECK_EQ_INT(s.metadata, 1);
    CHECK(seen.tensors == 4 && seen.same == 0 && seen.changed == 2 && seen.meta == 1);
    st_tensor_diff d;
    CHECK(st_tensor_compare(fa, st_find(fa, "changed", 7), fb, st_find(fb, "changed", 7), &d,
                            &err) == ST_OK);
    CHECK(d.status == ST_DIFF_CHANGED && d.numeric && d.max_abs == 0.5 && d.cosine > 0.99 &&
          d.cosine < 1.0);
    /* a file against itself */
    CHECK(st_diff(fa, fa, NULL, &s, &err) == ST_OK && s.identical_files && s.identical == 4);
    st_close(fa);
    st_close(fb);
}

static void test_convert_file(void)
{
    spec s[] = {{"model.diffusion_model.a.weight", 50, 0.5f, 0.125f, ST_F32},
                {"model.diffusion_model.b.bias", 10, 1, 1, ST_F32},
                {"model_ema.diffusion_modelaweight", 50, 9.0f, 0.0f, ST_F32},
                {"model_ema.decay", 1, 0.999f, 0, ST_F32},
                {"cond_stage_model.t", 4, 2, 0, ST_F16}};
    write_file(path_of("c.safetensors"), s, 5, "format", "pt");
    st_convert_file_options o;
    memset(&o, 0, sizeof o);
    o.set_dtype = 1;
    o.dtype = ST_F16;
    const char *excl[] = {"*.bias"};
    o.exclude = excl;
    o.nexclude = 1;
    st_convert_file_report r;
    st_error err;
    CHECK(st_convert_file(path_of("c.safetensors"), path_of("c16.safetensors"), &o, &r, &err) ==
              ST_OK,
          "%s", err.message);
    CHECK_EQ_INT(r.written, 5);
    CHECK_EQ_INT(r.converted, 3);
    CHECK_EQ_INT(r.already, 1);
    CHECK_EQ_INT(r.from_count[ST_F32], 3);
    CHECK_EQ_INT(r.metadata, 1);
    st_file *f = NULL;
    if (st_open(path_of("c16.safetensors"), 0, &f, NULL) == ST_OK) {
        CHECK(st_find(f, "model.diffusion_model.a.weight", 30)->dtype == ST_F16);
        CHECK(st_find(f, "model.diffusion_model.b.bias", 28)->dtype == ST_F32, "excluded");
        CHECK(value_at(f, "model.diffusion_model.a.weight", 4) == 1.0f);
        st_close(f);
    }
    /* EMA only: the twin's values under the weight's name, model_ema.* out */
    memset(&o, 0, sizeof o);
    o.ema = ST_EMA_ONLY;
    CHECK(st_convert_file(path_of("c.safetensors"), path_of("ema.safetensors"), &o, &r, &err) ==
              ST_OK,
          "%s", err.message);
    CHECK(r.ema_used == 1 && r.ema_dropped == 2 && r.written == 3);
    if (st_open(path_of("ema.safetensors"), 0, &f, NULL) == ST_OK) {
        CHECK(value_at(f, "model.diffusion_model.a.weight", 7) == 9.0f);
        CHECK(!st_find(f, "model_ema.decay", 15));
        st_close(f);
    }
    /* drop globs */
    memset(&o, 0, sizeof o);
    const char *drop[] = {"cond_stage_model.*", "model_ema.*"};
    o.drop = drop;
    o.ndrop = 2;
    CHECK(st_convert_file(path_of("c.safetensors"), path_of("dr.safetensors"), &o, &r, &err) ==
          ST_OK);
    CHECK(r.dropped == 3 && r.written == 2);
    /* a plain rewrite of a canonical file is byte-identical to it */
    memset(&o, 0, sizeof o);
    CHECK(st_convert_file(path_of("c.safetensors"), path_of("same.safetensors"), &o, &r, &err) ==
          ST_OK);
    FILE *x = fopen(path_of("c.safetensors"), "rb"), *y = fopen(path_of("same.safetensors"), "rb");
    int cx = 0, cy = 0;
    bool equal = x && y;
    while (equal && (cx = fgetc(x)) != EOF) {
        cy = fgetc(y);
        equal = cx == cy;
    }
    CHECK(equal && fgetc(y) == EOF, "canonical in, identical out");
    if (x)
        fclose(x);
    if (y)
        fclose(y);
    /* EMA only without twins of the same shape / without any */
    o.ema = ST_EMA_ONLY;
    CHECK(st_convert_file(path_of("dr.safetensors"), path_of("x.safetensors"), &o, &r, &err) ==
          ST_E_ARG);
    CHECK(strstr(err.message, "no EMA weights") != NULL, "%s", err.message);
    /* OUT = IN, invalid IN */
    memset(&o, 0, sizeof o);
    CHECK(st_convert_file(path_of("c.safetensors"), path_of("c.safetensors"), &o, &r, &err) ==
          ST_E_ARG);
    FILE *g = fopen(path_of("junk.safetensors"), "wb");
    fputs("not a safetensors file at all", g);
    fclose(g);
    int rc = st_convert_file(path_of("junk.safetensors"), path_of("x.safetensors"), &o, &r, &err);
    CHECK(rc >= 1 && rc <= 12 && r.failed_input == 0, "a verdict on IN: %d", rc);
    CHECK(!exists(path_of("x.safetensors")) && no_temp_files());
}

static void test_glob(void)
{
    CHECK(st_name_glob_match("*.weight", "a.b.weight", 10));
    CHECK(!st_name_glob_match("*.weight", "a.b.bias", 8));
    CHECK(st_name_glob_match("a?c", "a\0c", 3), "? matches a NUL byte");
    CHECK(st_name_glob_match("[a-c]x", "bx", 2));
    CHECK(!st_name_glob_match("[!a-c]x", "bx", 2));
    CHECK(st_name_glob_match("\\*", "*", 1));
    /* many stars against a long near-miss: linear, so this returns */
    char name[4096];
    memset(name, 'a', sizeof name);
    CHECK(!st_name_glob_match("*a*a*a*a*a*a*a*a*b", name, sizeof name));
}

static void test_install(void)
{
    char root[512];
    snprintf(root, sizeof root, "%s/ui", dir);
    mkdir(root, 0755);
    CHECK(strcmp(st_install_folder(ST_UI_COMFYUI, ST_KIND_LORA), "models/loras") == 0);
    CHECK(strcmp(st_install_folder(ST_UI_A1111, ST_KIND_CHECKPOINT), "models/Stable-diffusion") ==
          0);
    CHECK(st_install_folder(ST_UI_A1111, ST_KIND_TEXT_ENCODER) == NULL);
    int ui = -1;
    CHECK(st_ui_from_name("forge", &ui) == ST_OK && ui == ST_UI_FORGE);
    CHECK(st_ui_from_name("invoke", &ui) == ST_E_NOT_FOUND);
    st_model_kind k;
    CHECK(st_install_kind_from_name("vae", &k) == ST_OK && k == ST_KIND_VAE);

    spec s[] = {{"w", 4, 0, 1, ST_F32}};
    write_file(path_of("thing.safetensors"), s, 1, NULL, NULL);
    FILE *side = fopen(path_of("thing.preview.png"), "wb");
    fputs("png", side);
    fclose(side);
    st_install_plan *plan = NULL;
    st_error err;
    /* the kind cannot be told from one tensor named w */
    CHECK(st_install_plan_new(path_of("thing.safetensors"), ST_UI_COMFYUI, root, ST_KIND_UNKNOWN,
                              &plan, &err) == ST_E_UNSUPPORTED);
    CHECK(st_install_plan_new(path_of("thing.safetensors"), ST_UI_COMFYUI, root, ST_KIND_LORA,
                              &plan, &err) == ST_OK,
          "%s", err.message);
    if (plan) {
        CHECK_EQ_INT(st_install_plan_count(plan), 2);
        CHECK(strstr(st_install_plan_dir(plan), "/ui/models/loras") != NULL);
        CHECK(!st_install_plan_item(plan, 0)->exists);
        CHECK(st_install_execute(plan, ST_INSTALL_COPY, &err) == ST_OK, "%s", err.message);
        st_install_plan_free(plan);
    }
    char dst[600];
    snprintf(dst, sizeof dst, "%s/models/loras/thing.preview.png", root);
    CHECK(exists(dst), "sidecar copied");
    /* again: the destinations exist, the plan says so and execution refuses */
    plan = NULL;
    CHECK(st_install_plan_new(path_of("thing.safetensors"), ST_UI_COMFYUI, root, ST_KIND_LORA,
                              &plan, &err) == ST_OK);
    if (plan) {
        CHECK(st_install_plan_item(plan, 0)->exists);
        CHECK(st_install_execute(plan, ST_INSTALL_LINK, &err) == ST_E_IO);
        st_install_plan_free(plan);
    }
    /* hooks: progress over the bytes copied, the temporary file told; a
     * stop from the callback takes everything back */
    char root2[512];
    snprintf(root2, sizeof root2, "%s/ui2", dir);
    mkdir(root2, 0755);
    struct stat sst;
    CHECK(stat(path_of("thing.safetensors"), &sst) == 0);
    uint64_t want_total = (uint64_t)sst.st_size + 3; /* + the 3-byte sidecar */
    plan = NULL;
    CHECK(st_install_plan_new(path_of("thing.safetensors"), ST_UI_COMFYUI, root2, ST_KIND_LORA,
                              &plan, &err) == ST_OK);
    if (plan) {
        st_output_hooks h = {stop_progress, NULL, install_temp, NULL};
        install_temps_open = install_temps_seen = 0;
        st_install_plan_set_hooks(plan, &h);
        CHECK(st_install_execute(plan, ST_INSTALL_COPY, &err) == ST_E_CALLBACK);
        CHECK(install_temps_seen == 1 && install_temps_open == 0, "temps seen %d open %d",
              install_temps_seen, install_temps_open);
        snprintf(dst, sizeof dst, "%s/models/loras/thing.safetensors", root2);
        CHECK(!exists(dst), "a stopped install leaves nothing");
        CHECK(no_temp_files_in(st_install_plan_dir(plan)));
        h.progress = count_progress;
        progress_calls = 0;
        install_temps_open = install_temps_seen = 0;
        st_install_plan_set_hooks(plan, &h);
        CHECK(st_install_execute(plan, ST_INSTALL_COPY, &err) == ST_OK, "%s", err.message);
        CHECK(progress_calls == 2 && progress_last == want_total && progress_total == want_total,
              "calls %d last %llu total %llu", progress_calls,
              (unsigned long long)progress_last, (unsigned long long)progress_total);
        CHECK(install_temps_seen == 2 && install_temps_open == 0);
        CHECK(exists(dst));
        st_install_plan_free(plan);
    }

    char missing[600];
    snprintf(missing, sizeof missing, "%s/no-such-root", dir);
    CHECK(st_install_plan_new(path_of("thing.safetensors"), ST_UI_COMFYUI, missing, ST_KIND_LORA,
                              &plan, &err) == ST_E_IO);
    CHECK(strstr(err.message, "no such folder") != NULL, "%s", err.message);
}

static void test_meta_edit(void)
{
    spec s[] = {{"t", 16, 1, 1, ST_F32}};
    write_file(path_of("me.safetensors"), s, 1, "keep", "1");
    st_meta_change ch[] = {{"a", 1, "x", 1}, {"keep", 4, NULL, 0}, {"a", 1, "y", 1},
                           {"gone", 4, NULL, 0}};
    st_meta_edit_report r;
    st_error err;
    CHECK(st_metadata_edit(path_of("me.safetensors"), path_of("me2.safetensors"), ch, 4, NULL,
                           &r, &err) == ST_OK,
          "%s", err.message);
    CHECK(r.set == 1 && r.removed == 1 && r.kept == 0);
    st_file *f = NULL;
    if (st_open(path_of("me2.safetensors"), 0, &f, NULL) == ST_OK) {
        size_t vl;
        const char *v = st_metadata_get(f, "a", 1, &vl);
        CHECK(v && vl == 1 && v[0] == 'y', "the last word on a key wins");
        CHECK(!st_metadata_get(f, "keep", 4, &vl));
        CHECK(value_at(f, "t", 5) == 6.0f, "tensors unchanged");
        st_close(f);
    }
    /* OUT = IN without in_place: refused; in place: replaced */
    CHECK(st_metadata_edit(path_of("me.safetensors"), path_of("me.safetensors"), ch, 1, NULL, &r,
                           &err) == ST_E_ARG);
    st_meta_edit_options o;
    memset(&o, 0, sizeof o);
    o.in_place = 1;
    CHECK(st_metadata_edit(path_of("me.safetensors"), NULL, ch, 1, &o, &r, &err) == ST_OK);
    if (st_open(path_of("me.safetensors"), 0, &f, NULL) == ST_OK) {
        size_t vl;
        CHECK(st_metadata_get(f, "a", 1, &vl) && st_metadata_get(f, "keep", 4, &vl));
        st_close(f);
    }
    CHECK(no_temp_files());
    /* a value that is not UTF-8: ST_E_ARG, no output */
    st_meta_change bad[] = {{"k", 1, "\xff", 1}};
    CHECK(st_metadata_edit(path_of("me.safetensors"), path_of("me3.safetensors"), bad, 1, NULL,
                           &r, &err) == ST_E_ARG);
    CHECK(!exists(path_of("me3.safetensors")));
}

static uint64_t file_size_of(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* --pad and the two layouts of st_metadata_edit. */
static void test_header_padding(void)
{
    spec s[] = {{"w", 64, 1, 0.5f, ST_F32}, {"h", 10, -1, 1, ST_F16}};
    write_file(path_of("pad0.safetensors"), s, 2, "k", "v");
    st_convert_file_options co;
    memset(&co, 0, sizeof co);
    co.pad = 1000;
    st_convert_file_report cr;
    st_error err;
    CHECK(st_convert_file(path_of("pad0.safetensors"), path_of("pad1.safetensors"), &co, &cr,
                          &err) == ST_OK,
          "%s", err.message);
    st_file *f0 = NULL, *f1 = NULL;
    CHECK(st_open(path_of("pad0.safetensors"), 0, &f0, NULL) == ST_OK);
    CHECK(st_open(path_of("pad1.safetensors"), 0, &f1, NULL) == ST_OK);
    if (!f0 || !f1) {
        st_close(f0);
        st_close(f1);
        return;
    }
    uint64_t n0 = st_data_offset(f0) - 8, n1 = st_data_offset(f1) - 8;
    CHECK(n1 >= n0 + 1000 - 7 && n1 % 8 == 0, "n0 %llu n1 %llu", (unsigned long long)n0,
          (unsigned long long)n1);
    CHECK(cr.output_size == file_size_of(path_of("pad1.safetensors")));
    CHECK(value_at(f1, "w", 3) == 2.5f && value_at(f1, "h", 2) == 1.0f);
    st_close(f0);
    st_close(f1);

    /* a key that fits in the room: the size kept, tensors where they were */
    st_meta_change ch[] = {{"added", 5, "value", 5}};
    st_meta_edit_report r;
    CHECK(st_metadata_edit(path_of("pad1.safetensors"), path_of("pad2.safetensors"), ch, 1, NULL,
                           &r, &err) == ST_OK,
          "%s", err.message);
    CHECK(r.header_only || r.kept_layout, "the header keeps its size");
    CHECK(file_size_of(path_of("pad2.safetensors")) == file_size_of(path_of("pad1.safetensors")));
    CHECK(r.output_size == file_size_of(path_of("pad2.safetensors")));
    st_file *f2 = NULL;
    if (st_open(path_of("pad2.safetensors"), 0, &f2, NULL) == ST_OK) {
        CHECK(st_data_offset(f2) - 8 == n1);
        size_t vl;
        CHECK(st_metadata_get(f2, "added", 5, &vl) != NULL);
        CHECK(value_at(f2, "w", 63) == 32.5f);
        st_close(f2);
    }
    /* asking for more room than is left: a rewrite with the new room */
    st_meta_edit_options mo;
    memset(&mo, 0, sizeof mo);
    mo.pad = 4096;
    CHECK(st_metadata_edit(path_of("pad1.safetensors"), path_of("pad3.safetensors"), ch, 1, &mo,
                           &r, &err) == ST_OK);
    CHECK(!r.header_only && !r.kept_layout);
    if (st_open(path_of("pad3.safetensors"), 0, &f2, NULL) == ST_OK) {
        CHECK(st_data_offset(f2) - 8 >= n0 + 4096);
        st_close(f2);
    }
    /* a canonical file and a growing header: the canonical rewrite */
    CHECK(st_metadata_edit(path_of("pad0.safetensors"), path_of("pad4.safetensors"), ch, 1, NULL,
                           &r, &err) == ST_OK);
    CHECK(!r.header_only && !r.kept_layout);
    /* room beyond the header limit */
    st_writer *w = st_writer_new();
    uint64_t shape[1] = {1};
    float one = 1;
    CHECK(st_writer_add(w, "x", 1, ST_F32, shape, 1, &one, 4, NULL) == ST_OK);
    st_writer_set_header_padding(w, ST_MAX_HEADER_SIZE);
    CHECK(st_writer_write(w, path_of("pad5.safetensors"), &err) == ST_E_HEADER_TOO_LARGE);
    CHECK(!exists(path_of("pad5.safetensors")));
    st_writer_set_header_padding(w, 0);
    CHECK(st_writer_write(w, path_of("pad5.safetensors"), &err) == ST_OK);
    CHECK(file_size_of(path_of("pad5.safetensors")) == 8 + 56 + 4, "%llu",
          (unsigned long long)file_size_of(path_of("pad5.safetensors")));
    st_writer_free(w);
    CHECK(no_temp_files());
}

static void test_hash_progress(void)
{
    spec s[] = {{"t", 1 << 20, 0, 1, ST_F32}};
    write_file(path_of("hp.safetensors"), s, 1, NULL, NULL);
    struct stat st;
    stat(path_of("hp.safetensors"), &st);
    st_hash_options o = {.chunk_size = 64 * 1024, .progress = count_progress};
    st_hashes h;
    st_error err;
    progress_calls = 0;
    CHECK(st_hash_path(path_of("hp.safetensors"), ST_HASH_SHA256, &o, &h, &err) == ST_OK);
    CHECK(progress_calls >= 64, "one report per chunk: %d", progress_calls);
    CHECK(progress_last == (uint64_t)st.st_size && progress_total == (uint64_t)st.st_size);
    o.progress = stop_progress;
    CHECK(st_hash_path(path_of("hp.safetensors"), ST_HASH_SHA256, &o, &h, &err) == ST_E_CALLBACK);
    o.threads = 1;
    CHECK(st_hash_path(path_of("hp.safetensors"), ST_HASH_SHA256, &o, &h, &err) == ST_E_CALLBACK);
}

static bool same_bytes(const char *a, const char *b)
{
    FILE *x = fopen(a, "rb"), *y = fopen(b, "rb");
    bool equal = x && y;
    int cx;
    while (equal && (cx = fgetc(x)) != EOF)
        equal = cx == fgetc(y);
    equal = equal && fgetc(y) == EOF;
    if (x)
        fclose(x);
    if (y)
        fclose(y);
    return equal;
}

/* Unchanged bytes moved by the kernel (copy_file_range), by the buffered
 * fallback, and read into memory: the same output every way. */
static void test_file_range(void)
{
    spec s[] = {{"a", 300000, 1, 0.5f, ST_F32}, {"b", 7, 2, 1, ST_F16}};
    write_file(path_of("fr.safetensors"), s, 2, "k", "v");
    st_file *f = NULL;
    CHECK(st_open(path_of("fr.safetensors"), ST_OPEN_PREAD, &f, NULL) == ST_OK);
    if (!f)
        return;
    st_error err;
    const char *outs[] = {"fr_kernel.safetensors", "fr_buffered.safetensors"};
    for (int mode = 0; mode < 2; mode++) {
        if (mode)
            setenv("ST_NO_COPY_FILE_RANGE", "1", 1);
        st_writer *w = st_writer_new();
        for (size_t i = 0; i < st_tensor_count(f); i++) {
            const st_tensor *t = st_tensor_at(f, i);
            int fd;
            uint64_t off;
            CHECK(st_tensor_file_range(f, t, &fd, &off) == ST_OK);
            CHECK(st_writer_add_file_range(w, t->name, t->name_len, t->dtype, t->shape, t->rank,
                                           fd, off, st_tensor_nbytes(t), &err) == ST_OK);
        }
        st_writer_set_metadata(w, "k", 1, "v", 1, NULL);
        CHECK(st_writer_write(w, path_of(outs[mode]), &err) == ST_OK, "%s", err.message);
        if (mode == 0) {
            void *mem = NULL;
            size_t len = 0;
            CHECK(st_writer_serialize(w, &mem, &len, &err) == ST_OK);
            FILE *g = fopen(path_of("fr_mem.safetensors"), "wb");
            if (g && mem)
                fwrite(mem, 1, len, g);
            if (g)
                fclose(g);
            free(mem);
        }
        st_writer_free(w);
        unsetenv("ST_NO_COPY_FILE_RANGE");
    }
    CHECK(same_bytes(path_of("fr.safetensors"), path_of("fr_kernel.safetensors")));
    CHECK(same_bytes(path_of("fr.safetensors"), path_of("fr_buffered.safetensors")));
    CHECK(same_bytes(path_of("fr.safetensors"), path_of("fr_mem.safetensors")));
    /* a range past the end of its file: ST_E_IO, no output, no temp file */
    const st_tensor *t = st_tensor_at(f, 0);
    int fd;
    uint64_t off;
    st_tensor_file_range(f, t, &fd, &off);
    for (int mode = 0; mode < 2; mode++) {
        if (mode)
            setenv("ST_NO_COPY_FILE_RANGE", "1", 1);
        st_writer *w = st_writer_new();
        uint64_t shape[1] = {1u << 20};
        CHECK(st_writer_add_file_range(w, "x", 1, ST_F32, shape, 1, fd, off, 4u << 20, &err) ==
              ST_OK);
        CHECK(st_writer_write(w, path_of("fr_short.safetensors"), &err) == ST_E_IO,
              "mode %d: %s", mode, err.message);
        CHECK(!exists(path_of("fr_short.safetensors")) && no_temp_files());
        st_writer_free(w);
        unsetenv("ST_NO_COPY_FILE_RANGE");
    }
    st_file *m = NULL;
    CHECK(st_open(path_of("fr.safetensors"), ST_OPEN_MMAP, &m, NULL) == ST_OK);
    if (m) {
        CHECK(st_tensor_file_range(m, st_tensor_at(m, 0), &fd, &off) == ST_E_UNSUPPORTED);
        st_close(m);
    }
    st_close(f);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/st_ops_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_merge();
    test_diff();
    test_convert_file();
    test_glob();
    test_install();
    test_header_padding();
    test_meta_edit();
    test_hash_progress();
    test_file_range();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    TEST_END();
}
