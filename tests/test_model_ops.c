/* Operations of lib/sd over sharded models: st_model_hash (each shard's
 * digests equal st_hash_path's whatever the thread count, progress summed
 * over shards from one thread at a time, a stop request and a shard that
 * changed after opening stop it cleanly) and st_merge_models (the same
 * bytes as st_merge on the same paths, OUT never a shard, bad arguments). */
#include "safetensors.h"
#include "test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_root[256];

static void path_in(char *out, size_t cap, const char *rel)
{
    snprintf(out, cap, "%s/%s", g_root, rel);
}

/* A checkpoint-like file: `n` F32 tensors of `elems` values each, named
 * model.diffusion_model.tK.weight, values from seed. */
static void write_model(const char *rel, size_t n, size_t elems, unsigned seed)
{
    st_writer *w = st_writer_new();
    float **bufs = calloc(n, sizeof *bufs);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t k = 0; k < n; k++) {
        bufs[k] = malloc(elems * sizeof(float));
        for (size_t i = 0; i < elems; i++) {
            x = x * 1664525u + 1013904223u;
            bufs[k][i] = (float)(x >> 8) / 16777216.0f - 0.5f;
        }
        char name[64];
        snprintf(name, sizeof name, "model.diffusion_model.t%zu.weight", k);
        uint64_t shape[1] = {elems};
        CHECK(st_writer_add(w, name, strlen(name), ST_F32, shape, 1, bufs[k],
                            elems * sizeof(float), NULL) == ST_OK);
    }
    char p[512];
    path_in(p, sizeof p, rel);
    st_error err;
    CHECK(st_writer_write(w, p, &err) == ST_OK, "%s", err.message);
    st_writer_free(w);
    for (size_t k = 0; k < n; k++)
        free(bufs[k]);
    free(bufs);
}

static st_model *open_model(const char *rel)
{
    char p[512];
    path_in(p, sizeof p, rel);
    st_model *m = NULL;
    st_error err;
    int rc = st_model_open(p, 0, &m, &err);
    CHECK(rc == ST_OK, "%s: %s", p, err.message);
    return m;
}

static bool same_digests(const st_hashes *a, const st_hashes *b)
{
    return a->computed == b->computed && a->size == b->size &&
           memcmp(a->sha256, b->sha256, 32) == 0 && memcmp(a->autov1, b->autov1, 32) == 0 &&
           memcmp(a->autov3, b->autov3, 32) == 0 && a->autov3_offset == b->autov3_offset &&
           a->crc32 == b->crc32 && memcmp(a->blake3, b->blake3, 32) == 0;
}

typedef struct prog {
    atomic_int inside;  /* callers at once */
    int overlapped;
    uint64_t last, total;
    int calls, backwards, total_changed;
    int stop_after;     /* > 0: return non-zero on that call */
} prog;

static int on_progress(void *ctx, uint64_t done, uint64_t total)
{
    prog *p = ctx;
    if (atomic_fetch_add(&p->inside, 1) != 0)
        p->overlapped = 1;
    usleep(50); /* widen the window in which a second caller would overlap */
    if (done < p->last)
        p->backwards++;
    if (p->calls && total != p->total)
        p->total_changed++;
    p->last = done;
    p->total = total;
    p->calls++;
    int stop = p->stop_after > 0 && p->calls >= p->stop_after;
    atomic_fetch_sub(&p->inside, 1);
    return stop;
}

static void test_hash(void)
{
    st_model *m = open_model("a");
    if (!m)
        return;
    size_t n = st_model_shard_count(m);
    CHECK(n >= 4, "%zu shards", n);
    unsigned algos = ST_HASH_SHA256 | ST_HASH_AUTOV1 | ST_HASH_AUTOV3 | ST_HASH_CRC32 |
                     ST_HASH_BLAKE3;
    st_hashes *want = calloc(n, sizeof *want), *got = calloc(n, sizeof *got);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK(st_hash_path(st_model_shard_path(m, i), algos, NULL, &want[i], NULL) == ST_OK);
        total += st_model_shard_size(m, i);
    }
    const unsigned threads[] = {1, 2, 3, 0, 64};
    for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
        prog p;
        memset(&p, 0, sizeof p);
        st_hash_options o = {.threads = threads[t], .chunk_size = 64 << 10,
                             .progress = on_progress, .progress_ctx = &p};
        memset(got, 0, n * sizeof *got);
        size_t failed = 0;
        st_error err;
        memset(&err, 0, sizeof err);
        int rc = st_model_hash(m, algos, &o, got, &failed, &err);
        CHECK(rc == ST_OK, "threads %u: %s", threads[t], err.message);
        CHECK(failed == SIZE_MAX);
        for (size_t i = 0; i < n; i++)
            CHECK(same_digests(&got[i], &want[i]), "threads %u, shard %zu", threads[t], i);
        CHECK(p.calls > (int)n, "threads %u: %d progress calls", threads[t], p.calls);
        CHECK(!p.overlapped, "threads %u: progress called from two threads at once", threads[t]);
        CHECK(p.backwards == 0 && p.total_changed == 0, "threads %u", threads[t]);
        CHECK(p.last == total && p.total == total, "threads %u: %llu of %llu, want %llu",
              threads[t], (unsigned long long)p.last, (unsigned long long)p.total,
              (unsigned long long)total);
    }

    /* the caller stops it: every shard stops, ST_E_CALLBACK */
    for (unsigned t = 1; t <= 3; t++) {
        prog p;
        memset(&p, 0, sizeof p);
        p.stop_after = 3;
        st_hash_options o = {.threads = t, .chunk_size = 64 << 10, .progress = on_progress,
                             .progress_ctx = &p};
        size_t failed = 0;
        st_error err;
        memset(&err, 0, sizeof err);
        CHECK_EQ_INT(st_model_hash(m, ST_HASH_SHA256, &o, got, &failed, &err), ST_E_CALLBACK);
        CHECK(failed == SIZE_MAX);
        CHECK(p.last < total, "threads %u: stopped after all %llu bytes", t,
              (unsigned long long)p.last);
        CHECK(p.calls == 3, "threads %u: %d calls after the stop", t, p.calls - 3);
    }

    CHECK_EQ_INT(st_model_hash(m, 0, NULL, got, NULL, NULL), ST_E_ARG);
    CHECK_EQ_INT(st_model_hash(NULL, ST_HASH_SHA256, NULL, got, NULL, NULL), ST_E_ARG);
    CHECK_EQ_INT(st_model_hash(m, ST_HASH_SHA256, NULL, NULL, NULL, NULL), ST_E_ARG);

    /* a shard cut short after the model was opened: ST_E_IO naming it */
    size_t victim = n / 2;
    const char *vp = st_model_shard_path(m, victim);
    CHECK(truncate(vp, (off_t)(st_model_shard_size(m, victim) - 100)) == 0);
    for (unsigned t = 1; t <= 3; t++) {
        size_t failed = 0;
        st_error err;
        memset(&err, 0, sizeof err);
        st_hash_options o = {.threads = t};
        CHECK_EQ_INT(st_model_hash(m, ST_HASH_SHA256, &o, got, &failed, &err), ST_E_IO);
        CHECK(failed == victim, "threads %u: failed shard %zu", t, failed);
        CHECK(err.code == ST_E_IO && strstr(err.message, vp), "%s", err.message);
    }
    free(want);
    free(got);
    st_model_close(m);
}

static bool same_bytes(const char *p1, const char *p2)
{
    FILE *a = fopen(p1, "rb"), *b = fopen(p2, "rb");
    bool same = a && b;
    while (same) {
        int x = fgetc(a), y = fgetc(b);
        if (x != y)
            same = false;
        if (x == EOF || y == EOF)
            break;
    }
    if (a)
        fclose(a);
    if (b)
        fclose(b);
    return same;
}

static void test_merge(void)
{
    st_model *a = open_model("m/model.safetensors.index.json");
    st_model *b = open_model("b.safetensors");
    st_model *v = open_model("v");
    if (!a || !b || !v)
        return;
    char pa[512], pb[512], pv[512], o1[512], o2[512];
    path_in(pa, sizeof pa, "m/model.safetensors.index.json");
    path_in(pb, sizeof pb, "b.safetensors");
    path_in(pv, sizeof pv, "v");
    path_in(o1, sizeof o1, "o1/out.safetensors");
    path_in(o2, sizeof o2, "o2/out.safetensors");
    const st_model *in[2] = {a, b};
    st_merge_options o;
    memset(&o, 0, sizeof o);
    o.alpha = 0.25;
    st_merge_report r1, r2;
    st_error err;
    memset(&err, 0, sizeof err);
    CHECK(st_merge_models(in, 2, v, o1, &o, &r1, &err) == ST_OK, "%s", err.message);
    const char *paths[2] = {pa, pb};
    o.vae_path = pv;
    CHECK(st_merge(paths, 2, o2, &o, &r2, &err) == ST_OK, "%s", err.message);
    CHECK(same_bytes(o1, o2), "st_merge_models and st_merge on the same inputs differ");
    CHECK(r1.merged == r2.merged && r1.written == r2.written && r1.merged > 0);
    CHECK_EQ_INT(r1.failed_input, -1);

    /* the output carries the VAE's name and A's shard list */
    st_file *f = NULL;
    CHECK(st_open(o1, 0, &f, NULL) == ST_OK);
    const char *recipe = f ? st_metadata_get(f, "sd_merge_recipe", 15, NULL) : NULL;
    CHECK(recipe && strstr(recipe, "\"bake_in_vae\": \"vae.safetensors\"") &&
              strstr(recipe, "\"primary_model_hash\": [\""),
          "%s", recipe ? recipe : "(none)");
    st_close(f);

    /* OUT naming a shard of A, or its index */
    for (size_t which = 0; which < 2; which++) {
        const char *target = which ? st_model_index_path(a) : st_model_shard_path(a, 1);
        struct stat before, after;
        CHECK(stat(target, &before) == 0);
        memset(&err, 0, sizeof err);
        CHECK_EQ_INT(st_merge_models(in, 2, NULL, target, &o, &r1, &err), ST_E_ARG);
        CHECK(strstr(err.message, "never overwritten"), "%s", err.message);
        CHECK(stat(target, &after) == 0 && after.st_size == before.st_size &&
              after.st_mtim.tv_nsec == before.st_mtim.tv_nsec);
    }
    const st_model *none[2] = {a, NULL};
    CHECK_EQ_INT(st_merge_models(none, 2, NULL, o1, &o, NULL, NULL), ST_E_ARG);
    CHECK_EQ_INT(st_merge_models(in, 3, NULL, o1, &o, NULL, NULL), ST_E_ARG);
    CHECK_EQ_INT(st_merge_models(NULL, 2, NULL, o1, &o, NULL, NULL), ST_E_ARG);
    st_model_close(a);
    st_model_close(b);
    st_model_close(v);
}

static void run(const char *cmd)
{
    if (system(cmd) != 0)
        fprintf(stderr, "failed: %s\n", cmd);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(g_root, sizeof g_root, "%s/st_model_ops.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_root)) {
        perror("mkdtemp");
        return 2;
    }
    char p[512], q[512];
    /* "a": shards of different sizes, some spanning several hash chunks */
    write_model("whole.safetensors", 9, 40000, 1);
    write_model("b.safetensors", 9, 40000, 2);
    path_in(p, sizeof p, "whole.safetensors");
    st_model *w = NULL;
    CHECK(st_model_open(p, 0, &w, NULL) == ST_OK);
    st_split_options so = {.max_shard_size = 400000};
    path_in(q, sizeof q, "a");
    CHECK(st_model_split(w, q, &so, NULL, NULL) == ST_OK);
    path_in(q, sizeof q, "m");
    CHECK(st_model_split(w, q, &so, NULL, NULL) == ST_OK);
    st_model_close(w);
    /* "v": a VAE folder holding one file (no index) */
    path_in(q, sizeof q, "v");
    mkdir(q, 0755);
    write_model("v/vae.safetensors", 2, 100, 3);
    path_in(q, sizeof q, "o1");
    mkdir(q, 0755);
    path_in(q, sizeof q, "o2");
    mkdir(q, 0755);

    test_hash();
    test_merge();

    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_root);
    run(cmd);
    TEST_END();
}
