/* Multi-file models: st_model_open on a file, an index and a folder; the
 * tensor table, lookups, reads through the bounded descriptor cache (also
 * from several threads), metadata union; and every hostile index the API
 * documents: missing shard, failing shard, tensor listed twice or in two
 * shards, wrong or dangling weight_map entries, names and links leading out
 * of the folder, total_size, syntax and schema errors, ambiguous folders. */
#include "safetensors.h"
#include "test.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_root[256];

static void path_in(char *out, size_t cap, const char *rel)
{
    snprintf(out, cap, "%s/%s", g_root, rel);
}

static void write_text(const char *rel, const char *text)
{
    char p[512];
    path_in(p, sizeof p, rel);
    FILE *f = fopen(p, "wb");
    if (!f) {
        perror(p);
        exit(2);
    }
    fwrite(text, 1, strlen(text), f);
    fclose(f);
}

/* A byte of tensor `name`'s data at position i: the same everywhere. */
static unsigned char val(const char *name, size_t i)
{
    uint32_t h = 2166136261u;
    for (const char *c = name; *c; c++)
        h = (h ^ (unsigned char)*c) * 16777619u;
    return (unsigned char)((h >> 8) + i * 7);
}

/* Writes a shard holding `names` (NULL-terminated), tensor k of 4 * (k+1)
 * F32 elements... sizes differ by name length to vary things. */
static void write_shard(const char *rel, const char *const *names, const char *meta_key,
                        const char *meta_val)
{
    st_writer *w = st_writer_new();
    unsigned char *bufs[64];
    size_t nb = 0;
    for (size_t k = 0; names[k]; k++) {
        uint64_t n = 2 + strlen(names[k]) % 5;
        unsigned char *b = malloc(n * 4);
        for (size_t i = 0; i < n * 4; i++)
            b[i] = val(names[k], i);
        bufs[nb++] = b;
        uint64_t shape[1] = {n};
        CHECK(st_writer_add(w, names[k], strlen(names[k]), ST_F32, shape, 1, b, n * 4, NULL) == ST_OK);
    }
    if (meta_key)
        st_writer_set_metadata(w, meta_key, strlen(meta_key), meta_val, strlen(meta_val), NULL);
    char p[512];
    path_in(p, sizeof p, rel);
    st_error err;
    CHECK(st_writer_write(w, p, &err) == ST_OK, "%s", err.message);
    st_writer_free(w);
    for (size_t i = 0; i < nb; i++)
        free(bufs[i]);
}

static uint64_t tensor_bytes(const char *name)
{
    return (2 + strlen(name) % 5) * 4;
}

static bool data_ok(const st_model *m, const st_tensor *t)
{
    unsigned char buf[64];
    uint64_t n = t->end - t->begin;
    if (n > sizeof buf)
        return false;
    st_error err;
    if (st_model_tensor_read(m, t, 0, buf, n, &err) != ST_OK) {
        fprintf(stderr, "read: %s\n", err.message);
        return false;
    }
    char name[128];
    snprintf(name, sizeof name, "%s", t->name);
    for (uint64_t i = 0; i < n; i++)
        if (buf[i] != val(name, i))
            return false;
    return true;
}

/* Opens rel (under the root) and returns the code; *msg gets the message. */
static int open_code(const char *rel, unsigned flags, char *msg, size_t cap)
{
    char p[512];
    path_in(p, sizeof p, rel);
    st_model *m = (st_model *)1;
    st_error err;
    memset(&err, 0, sizeof err);
    int rc = st_model_open(p, flags, &m, &err);
    if (rc == ST_OK)
        st_model_close(m);
    else
        CHECK(m == NULL);
    CHECK(rc == ST_OK || err.code == rc, "code %d vs err.code %d", rc, err.code);
    if (msg)
        snprintf(msg, cap, "%s", err.message);
    return rc;
}

static const char *const A[] = {"layer.0.weight", "layer.0.bias", "embed", NULL};
static const char *const B[] = {"layer.1.weight", "layer.1.bias", NULL};
static const char *const C[] = {"head.weight", NULL};

static void mkdir_in(const char *rel)
{
    char p[512];
    path_in(p, sizeof p, rel);
    mkdir(p, 0755);
}

static const char *good_index(char *buf, size_t cap, uint64_t total, const char *dir)
{
    snprintf(buf, cap,
             "{\n  \"metadata\": {\"total_size\": %llu, \"total_parameters\": 3},\n"
             "  \"weight_map\": {\n"
             "    \"embed\": \"%sm-1.safetensors\",\n"
             "    \"head.weight\": \"%sm-3.safetensors\",\n"
             "    \"layer.0.bias\": \"%sm-1.safetensors\",\n"
             "    \"layer.0.weight\": \"%sm-1.safetensors\",\n"
             "    \"layer.1.bias\": \"%sm-2.safetensors\",\n"
             "    \"layer.1.weight\": \"%sm-2.safetensors\"\n  }\n}\n",
             (unsigned long long)total, dir, dir, dir, dir, dir, dir);
    return buf;
}

static uint64_t total_abc(void)
{
    uint64_t t = 0;
    for (const char *const *v[] = {A, B, C}, *const **p = v; p < v + 3; p++)
        for (size_t k = 0; (*p)[k]; k++)
            t += tensor_bytes((*p)[k]);
    return t;
}

static void test_single(void)
{
    mkdir_in("single");
    write_shard("single/one.safetensors", A, "format", "pt");
    char p[512];
    path_in(p, sizeof p, "single/one.safetensors");
    st_model *m = NULL;
    st_error err;
    CHECK(st_model_open(p, 0, &m, &err) == ST_OK, "%s", err.message);
    if (!m)
        return;
    CHECK(st_model_index_path(m) == NULL);
    CHECK_EQ_INT(st_model_shard_count(m), 1);
    CHECK(strcmp(st_model_shard_name(m, 0), "one.safetensors") == 0);
    CHECK(strcmp(st_model_shard_path(m, 0), p) == 0);
    CHECK_EQ_INT(st_model_tensor_count(m), 3);
    struct stat sb;
    stat(p, &sb);
    CHECK_EQ_INT(st_model_shard_size(m, 0), sb.st_size);
    const st_tensor *t = st_model_find(m, "embed", 5);
    CHECK(t && data_ok(m, t));
    CHECK(st_model_find(m, "nope", 4) == NULL);
    CHECK(st_model_metadata_present(m) == 1);
    CHECK(strcmp(st_model_metadata_get(m, "format", 6, NULL), "pt") == 0);
    /* name order */
    CHECK(strcmp(st_model_tensor_by_name_order(m, 0)->name, "embed") == 0);
    CHECK(strcmp(st_model_tensor_by_name_order(m, 2)->name, "layer.0.weight") == 0);
    CHECK(st_model_tensor_by_name_order(m, 3) == NULL);
    /* reads past the end, foreign tensors */
    unsigned char b[8];
    CHECK(st_model_tensor_read(m, t, t->end - t->begin - 2, b, 4, &err) == ST_E_RANGE);
    st_tensor fake = *t;
    CHECK(st_model_tensor_read(m, &fake, 0, b, 4, &err) == ST_E_ARG);
    CHECK(st_model_tensor_shard(m, &fake) == SIZE_MAX);
    st_model_close(m);

    /* the folder holding it */
    path_in(p, sizeof p, "single");
    CHECK(st_model_open(p, 0, &m, &err) == ST_OK, "%s", err.message);
    CHECK(m && st_model_tensor_count(m) == 3);
    st_model_close(m);
}

static void test_index(void)
{
    mkdir_in("sharded");
    write_shard("sharded/m-1.safetensors", A, "format", "pt");
    write_shard("sharded/m-2.safetensors", B, "format", "other"); /* first shard wins */
    write_shard("sharded/m-3.safetensors", C, "extra", "x");
    char text[2048];
    write_text("sharded/model.safetensors.index.json", good_index(text, sizeof text, total_abc(), ""));
    char p[512];
    path_in(p, sizeof p, "sharded/model.safetensors.index.json");
    st_model *m = NULL;
    st_error err;
    CHECK(st_model_open(p, 0, &m, &err) == ST_OK, "%s", err.message);
    if (!m)
        return;
    CHECK(strcmp(st_model_index_path(m), p) == 0);
    CHECK_EQ_INT(st_model_shard_count(m), 3);
    CHECK(strcmp(st_model_shard_name(m, 0), "m-1.safetensors") == 0);
    CHECK(strcmp(st_model_shard_name(m, 2), "m-3.safetensors") == 0);
    CHECK(st_model_shard_name(m, 3) == NULL);
    CHECK_EQ_INT(st_model_tensor_count(m), 6);
    CHECK_EQ_INT(st_model_total_size(m), total_abc());
    for (size_t i = 0; i < 6; i++) {
        const st_tensor *t = st_model_tensor_at(m, i);
        CHECK(t && data_ok(m, t), "tensor %zu", i);
        CHECK(st_model_find(m, t->name, t->name_len) == t);
    }
    const st_tensor *h = st_model_find(m, "head.weight", 11);
    CHECK(h && st_model_tensor_shard(m, h) == 2);
    CHECK(st_model_tensor_shard(m, st_model_find(m, "layer.1.bias", 12)) == 1);
    CHECK(st_model_tensor_at(m, 0) && st_model_tensor_shard(m, st_model_tensor_at(m, 0)) == 0);
    CHECK(strcmp(st_model_tensor_by_name_order(m, 0)->name, "embed") == 0);
    CHECK(strcmp(st_model_tensor_by_name_order(m, 1)->name, "head.weight") == 0);
    CHECK_EQ_INT(st_model_metadata_count(m), 2);
    CHECK(strcmp(st_model_metadata_get(m, "format", 6, NULL), "pt") == 0);
    CHECK(strcmp(st_model_metadata_get(m, "extra", 5, NULL), "x") == 0);
    const char *k;
    size_t kl;
    CHECK(st_model_metadata_at(m, 0, &k, &kl, NULL, NULL) == ST_OK && strcmp(k, "extra") == 0);
    CHECK(st_model_metadata_at(m, 2, &k, &kl, NULL, NULL) == ST_E_NOT_FOUND);
    st_model_close(m);

    /* the folder: one index beside the shards */
    CHECK(open_code("sharded", 0, NULL, 0) == ST_OK);
    /* shards in a subfolder */
    mkdir_in("sub");
    mkdir_in("sub/w");
    write_shard("sub/w/m-1.safetensors", A, NULL, NULL);
    write_shard("sub/w/m-2.safetensors", B, NULL, NULL);
    write_shard("sub/w/m-3.safetensors", C, NULL, NULL);
    write_text("sub/x.safetensors.index.json", good_index(text, sizeof text, total_abc(), "w/"));
    CHECK(open_code("sub/x.safetensors.index.json", 0, NULL, 0) == ST_OK);
}

/* A fresh folder with the three good shards and `index` as the index. */
static int hostile(const char *dir, const char *index, unsigned flags, char *msg, size_t cap)
{
    char rel[256];
    mkdir_in(dir);
    snprintf(rel, sizeof rel, "%s/m-1.safetensors", dir);
    write_shard(rel, A, NULL, NULL);
    snprintf(rel, sizeof rel, "%s/m-2.safetensors", dir);
    write_shard(rel, B, NULL, NULL);
    snprintf(rel, sizeof rel, "%s/m-3.safetensors", dir);
    write_shard(rel, C, NULL, NULL);
    snprintf(rel, sizeof rel, "%s/model.safetensors.index.json", dir);
    write_text(rel, index);
    return open_code(rel, flags, msg, cap);
}

static char *replace(const char *s, const char *from, const char *to)
{
    static char out[4096];
    const char *at = strstr(s, from);
    if (!at) {
        fprintf(stderr, "replace: %s not found\n", from);
        snprintf(out, sizeof out, "%s", s);
        return out;
    }
    snprintf(out, sizeof out, "%.*s%s%s", (int)(at - s), s, to, at + strlen(from));
    return out;
}

static void test_hostile(void)
{
    char good[2048], msg[600];
    good_index(good, sizeof good, total_abc(), "");
    CHECK(hostile("h0", good, 0, msg, sizeof msg) == ST_OK, "%s", msg);

    /* missing shard */
    CHECK(hostile("h1", replace(good, "\"m-3.safetensors\"", "\"m-9.safetensors\""), 0, msg, sizeof msg) == ST_E_IO);
    CHECK(strstr(msg, "m-9.safetensors") && strstr(msg, "missing"), "%s", msg);

    /* a shard failing validation: truncated */
    CHECK(hostile("h2", good, 0, msg, sizeof msg) == ST_OK);
    char p[512];
    path_in(p, sizeof p, "h2/m-2.safetensors");
    struct stat sb;
    stat(p, &sb);
    CHECK(truncate(p, sb.st_size - 1) == 0);
    CHECK(open_code("h2/model.safetensors.index.json", 0, msg, sizeof msg) == ST_E_INCOMPLETE);
    CHECK(strstr(msg, "m-2.safetensors") != NULL, "%s", msg);
    write_text("h2/m-2.safetensors", "xy");
    CHECK(open_code("h2/model.safetensors.index.json", 0, msg, sizeof msg) == ST_E_HEADER_TOO_SMALL);
    CHECK(strstr(msg, "m-2.safetensors") != NULL, "%s", msg);

    /* a FIFO as a shard, or as the index: refused, not waited on */
    CHECK(hostile("h2f", good, 0, msg, sizeof msg) == ST_OK);
    path_in(p, sizeof p, "h2f/m-2.safetensors");
    unlink(p);
    CHECK(mkfifo(p, 0644) == 0);
    CHECK(open_code("h2f/model.safetensors.index.json", 0, msg, sizeof msg) == ST_E_IO);
    CHECK(strstr(msg, "regular") != NULL, "%s", msg);
    CHECK(open_code("h2f/m-2.safetensors", 0, msg, sizeof msg) == ST_E_IO);
    path_in(p, sizeof p, "h2f/fifo.json");
    CHECK(mkfifo(p, 0644) == 0);
    CHECK(open_code("h2f/fifo.json", 0, msg, sizeof msg) == ST_E_IO);

    /* a tensor listed twice */
    CHECK(hostile("h3", replace(good, "\"embed\": \"m-1.safetensors\",", "\"embed\": \"m-1.safetensors\", \"embed\": \"m-1.safetensors\","), 0, msg, sizeof msg) == ST_E_DUPLICATE_KEY);
    CHECK(strstr(msg, "embed") && strstr(msg, "twice"), "%s", msg);
    /* ... also with an escape spelling the same name */
    CHECK(hostile("h3b", replace(good, "\"embed\": \"m-1.safetensors\",", "\"embed\": \"m-1.safetensors\", \"\\u0065mbed\": \"m-1.safetensors\","), 0, msg, sizeof msg) == ST_E_DUPLICATE_KEY);

    /* a tensor in two shards (and the index names one) */
    mkdir_in("h4");
    const char *dup[] = {"head.weight", "embed", NULL};
    CHECK(hostile("h4", good, 0, msg, sizeof msg) == ST_OK);
    write_shard("h4/m-3.safetensors", dup, NULL, NULL);
    CHECK(open_code("h4/model.safetensors.index.json", 0, msg, sizeof msg) == ST_E_DUPLICATE_KEY);
    CHECK(strstr(msg, "two shards") && strstr(msg, "m-1.safetensors") && strstr(msg, "m-3.safetensors"), "%s", msg);

    /* weight_map names the wrong shard */
    CHECK(hostile("h5", replace(good, "\"head.weight\": \"m-3.safetensors\"", "\"head.weight\": \"m-2.safetensors\""), 0, msg, sizeof msg) == ST_E_HEADER_SCHEMA);
    CHECK(strstr(msg, "head.weight") != NULL, "%s", msg);
    /* weight_map lists a tensor no shard holds */
    CHECK(hostile("h6", replace(good, "\"embed\":", "\"ghost\": \"m-1.safetensors\", \"embed\":"), 0, msg, sizeof msg) == ST_E_HEADER_SCHEMA);
    CHECK(strstr(msg, "ghost") && strstr(msg, "does not hold"), "%s", msg);
    /* a shard's tensor missing from weight_map */
    CHECK(hostile("h7", replace(good, "\"embed\": \"m-1.safetensors\",", ""), 0, msg, sizeof msg) == ST_E_HEADER_SCHEMA);
    CHECK(strstr(msg, "embed") && strstr(msg, "not listed"), "%s", msg);

    /* names leading out of the folder */
    static const char *const bad_names[] = {
        "../h0/m-3.safetensors", "/etc/passwd", "./m-3.safetensors", "a//m-3.safetensors",
        "sub\\\\m-3.safetensors", "", "x/../m-3.safetensors", "m-3.safetensors/", "..",
        "m-3.safetensors\\u0000", NULL};
    for (size_t i = 0; bad_names[i]; i++) {
        char to[128];
        snprintf(to, sizeof to, "\"head.weight\": \"%s\"", bad_names[i]);
        char dir[16];
        snprintf(dir, sizeof dir, "h8_%zu", i);
        CHECK(hostile(dir, replace(good, "\"head.weight\": \"m-3.safetensors\"", to), 0, msg, sizeof msg) == ST_E_HEADER_SCHEMA, "%s: %s", bad_names[i], msg);
    }
    /* a symbolic link out of the folder */
    CHECK(hostile("h9", good, 0, msg, sizeof msg) == ST_OK);
    path_in(p, sizeof p, "h9/m-3.safetensors");
    unlink(p);
    char target[512];
    path_in(target, sizeof target, "h0/m-3.safetensors");
    CHECK(symlink(target, p) == 0);
    CHECK(open_code("h9/model.safetensors.index.json", 0, msg, sizeof msg) == ST_E_HEADER_SCHEMA);
    CHECK(strstr(msg, "outside") != NULL, "%s", msg);
    /* ... a link inside the folder is fine */
    unlink(p);
    write_shard("h9/real-3.safetensors", C, NULL, NULL);
    CHECK(symlink("real-3.safetensors", p) == 0);
    CHECK(open_code("h9/model.safetensors.index.json", 0, msg, sizeof msg) == ST_OK, "%s", msg);
    /* ... and the Hugging Face cache layout: snapshots/REV/x -> ../../blobs/H */
    mkdir_in("hf");
    mkdir_in("hf/blobs");
    mkdir_in("hf/snapshots");
    mkdir_in("hf/snapshots/abc");
    write_shard("hf/blobs/b1", A, NULL, NULL);
    write_shard("hf/blobs/b2", B, NULL, NULL);
    write_shard("hf/blobs/b3", C, NULL, NULL);
    for (int i = 1; i <= 3; i++) {
        char l[64], t[64];
        snprintf(l, sizeof l, "hf/snapshots/abc/m-%d.safetensors", i);
        snprintf(t, sizeof t, "../../blobs/b%d", i);
        path_in(p, sizeof p, l);
        CHECK(symlink(t, p) == 0);
    }
    write_text("hf/snapshots/abc/model.safetensors.index.json", good);
    CHECK(open_code("hf/snapshots/abc", 0, msg, sizeof msg) == ST_OK, "%s", msg);
    /* ... but not into another repo's blobs */
    mkdir_in("hf2");
    mkdir_in("hf2/snapshots");
    mkdir_in("hf2/snapshots/abc");
    for (int i = 1; i <= 3; i++) {
        char l[64], t[64];
        snprintf(l, sizeof l, "hf2/snapshots/abc/m-%d.safetensors", i);
        snprintf(t, sizeof t, "../../../hf/blobs/b%d", i);
        path_in(p, sizeof p, l);
        CHECK(symlink(t, p) == 0);
    }
    write_text("hf2/snapshots/abc/model.safetensors.index.json", good);
    CHECK(open_code("hf2/snapshots/abc", 0, msg, sizeof msg) == ST_E_HEADER_SCHEMA, "%s", msg);

    /* total_size */
    char wrong[2048];
    good_index(wrong, sizeof wrong, total_abc() + 1, "");
    CHECK(hostile("h10", wrong, 0, msg, sizeof msg) == ST_E_HEADER_SCHEMA);
    CHECK(strstr(msg, "total_size") != NULL, "%s", msg);
    CHECK(hostile("h10", wrong, ST_MODEL_IGNORE_TOTAL_SIZE, msg, sizeof msg) == ST_OK);
    char num[64];
    snprintf(num, sizeof num, "\"total_size\": %llu", (unsigned long long)total_abc());
    CHECK(hostile("h11", replace(good, num, "\"total_size\": 1.5"), 0, msg, sizeof msg) == ST_E_HEADER_SCHEMA);
    CHECK(hostile("h11", replace(good, num, "\"total_size\": -3"), 0, msg, sizeof msg) == ST_E_HEADER_SCHEMA);
    CHECK(hostile("h11", replace(good, num, "\"total_size\": \"7\""), 0, msg, sizeof msg) == ST_E_HEADER_SCHEMA);
    CHECK(hostile("h11", replace(good, num, "\"total_size\": 99999999999999999999"), 0, msg, sizeof msg) == ST_E_HEADER_SCHEMA);
    CHECK(hostile("h11", replace(good, num, "\"total_size\": 1, \"total_size\": 2"), 0, msg, sizeof msg) == ST_E_DUPLICATE_KEY);
    /* no metadata at all is fine; other metadata values of any kind too */
    CHECK(hostile("h11", replace(good, "\"metadata\": {", "\"other\": [1, {\"a\": []}], \"metadata\": {\"x\": {\"y\": [null]}, "), 0, msg, sizeof msg) == ST_OK, "%s", msg);

    /* schema and syntax */
    CHECK(hostile("h12", "[]", 0, msg, sizeof msg) == ST_E_HEADER_SCHEMA);
    CHECK(hostile("h12", "{\"metadata\": {}}", 0, msg, sizeof msg) == ST_E_HEADER_SCHEMA);
    CHECK(strstr(msg, "weight_map") != NULL, "%s", msg);
    CHECK(hostile("h12", "{\"weight_map\": []}", 0, msg, sizeof msg) == ST_E_HEADER_SCHEMA);
    CHECK(hostile("h12", "{\"weight_map\": {\"embed\": 3}}", 0, msg, sizeof msg) == ST_E_HEADER_SCHEMA);
    CHECK(hostile("h12", "{\"metadata\": [], \"weight_map\": {}}", 0, msg, sizeof msg) == ST_E_HEADER_SCHEMA);
    CHECK(hostile("h12", "{\"weight_map\": {}, \"weight_map\": {}}", 0, msg, sizeof msg) == ST_E_DUPLICATE_KEY);
    CHECK(hostile("h12", "{\"weight_map\": {}", 0, msg, sizeof msg) == ST_E_HEADER_JSON);
    CHECK(hostile("h12", "{\"weight_map\": {},}", 0, msg, sizeof msg) == ST_E_HEADER_JSON);
    CHECK(hostile("h12", "", 0, msg, sizeof msg) == ST_E_HEADER_JSON);
    CHECK(hostile("h12", "{\"weight_map\": {\"\xff\": \"m-1.safetensors\"}}", 0, msg, sizeof msg) == ST_E_HEADER_UTF8);
    /* an empty weight_map is an empty model */
    CHECK(hostile("h12", "{\"weight_map\": {}}", 0, msg, sizeof msg) == ST_OK);
    char deep[600];
    memset(deep, '[', 300);
    snprintf(deep + 300, sizeof deep - 300, "%s", "");
    CHECK(hostile("h12", deep, 0, msg, sizeof msg) == ST_E_HEADER_JSON);

    /* folders */
    mkdir_in("empty");
    CHECK(open_code("empty", 0, msg, sizeof msg) == ST_E_NOT_FOUND);
    mkdir_in("two");
    write_text("two/a.safetensors.index.json", "{\"weight_map\": {}}");
    write_text("two/b.safetensors.index.json", "{\"weight_map\": {}}");
    CHECK(open_code("two", 0, msg, sizeof msg) == ST_E_ARG);
    CHECK(strstr(msg, "a.safetensors.index.json") != NULL, "%s", msg);
    mkdir_in("twofiles");
    write_shard("twofiles/a.safetensors", A, NULL, NULL);
    write_shard("twofiles/b.safetensors", B, NULL, NULL);
    CHECK(open_code("twofiles", 0, msg, sizeof msg) == ST_E_ARG);
    CHECK(open_code("does-not-exist", 0, msg, sizeof msg) == ST_E_IO);
    CHECK(open_code("single", 7, msg, sizeof msg) == ST_E_ARG);
}

/* ---- weight variants in a folder (st_model_open_variant) ---- */

static int open_variant(const char *rel, const char *variant, unsigned flags, size_t *count,
                        char *used, char *msg, size_t cap)
{
    char p[512];
    path_in(p, sizeof p, rel);
    st_model *m = (st_model *)1;
    st_error err;
    memset(&err, 0, sizeof err);
    int rc = st_model_open_variant(p, variant, flags, &m, &err);
    *count = 0;
    used[0] = '\0';
    msg[0] = '\0';
    if (rc == ST_OK) {
        *count = st_model_tensor_count(m);
        if (st_model_variant(m))
            snprintf(used, 80, "%s", st_model_variant(m));
        st_model_close(m);
    } else {
        CHECK(m == NULL);
        CHECK(err.code == rc, "code %d vs err.code %d", rc, err.code);
        snprintf(msg, cap, "%s", err.message);
    }
    return rc;
}

static void test_variants(void)
{
    char msg[ST_ERROR_MESSAGE_MAX], used[80];
    size_t n;
    mkdir_in("var");
    write_shard("var/diffusion_pytorch_model.safetensors", A, NULL, NULL);
    write_shard("var/diffusion_pytorch_model.fp16.safetensors", B, NULL, NULL);
    write_shard("var/diffusion_pytorch_model.non_ema.safetensors", C, NULL, NULL);
    /* today's sharded variant */
    write_shard("var/diffusion_pytorch_model.bf16-00001-of-00002.safetensors", A, NULL, NULL);
    write_shard("var/diffusion_pytorch_model.bf16-00002-of-00002.safetensors", B, NULL, NULL);
    write_text("var/diffusion_pytorch_model.safetensors.index.bf16.json",
               "{\"weight_map\": {\"embed\": \"diffusion_pytorch_model.bf16-00001-of-00002.safetensors\","
               "\"layer.0.weight\": \"diffusion_pytorch_model.bf16-00001-of-00002.safetensors\","
               "\"layer.0.bias\": \"diffusion_pytorch_model.bf16-00001-of-00002.safetensors\","
               "\"layer.1.weight\": \"diffusion_pytorch_model.bf16-00002-of-00002.safetensors\","
               "\"layer.1.bias\": \"diffusion_pytorch_model.bf16-00002-of-00002.safetensors\"}}");
    /* the older spellings */
    write_shard("var/diffusion_pytorch_model-00001-of-00001.old.safetensors", C, NULL, NULL);
    write_text("var/diffusion_pytorch_model.safetensors.old.index.json",
               "{\"weight_map\": {\"head.weight\": \"diffusion_pytorch_model-00001-of-00001.old.safetensors\"}}");
    write_shard("var/diffusion_pytorch_model.dv-00001-of-00001.safetensors", B, NULL, NULL);
    write_text("var/diffusion_pytorch_model.dv.safetensors.index.json",
               "{\"weight_map\": {\"layer.1.weight\": \"diffusion_pytorch_model.dv-00001-of-00001.safetensors\","
               "\"layer.1.bias\": \"diffusion_pytorch_model.dv-00001-of-00001.safetensors\"}}");

    /* no variant asked: the plain file, whatever variants lie beside it */
    CHECK(open_variant("var", NULL, 0, &n, used, msg, sizeof msg) == ST_OK, "%s", msg);
    CHECK(n == 3 && used[0] == '\0', "%zu %s", n, used);
    CHECK(open_code("var", 0, msg, sizeof msg) == ST_OK, "%s", msg);
    CHECK(open_variant("var", "fp16", 0, &n, used, msg, sizeof msg) == ST_OK, "%s", msg);
    CHECK(n == 2 && strcmp(used, "fp16") == 0, "%zu %s", n, used);
    CHECK(open_variant("var", "non_ema", 0, &n, used, msg, sizeof msg) == ST_OK && n == 1);
    CHECK(open_variant("var", "bf16", 0, &n, used, msg, sizeof msg) == ST_OK && n == 5, "%s", msg);
    CHECK(open_variant("var", "old", 0, &n, used, msg, sizeof msg) == ST_OK && n == 1, "%s", msg);
    CHECK(open_variant("var", "dv", 0, &n, used, msg, sizeof msg) == ST_OK && n == 2, "%s", msg);
    /* absent: an error naming it and what is there, or the plain weights */
    CHECK(open_variant("var", "ema", 0, &n, used, msg, sizeof msg) == ST_E_NOT_FOUND);
    CHECK(strstr(msg, "ema") && strstr(msg, "fp16") && strstr(msg, "non_ema") && strstr(msg, "bf16"), "%s", msg);
    CHECK(open_variant("var", "ema", ST_MODEL_VARIANT_FALLBACK, &n, used, msg, sizeof msg) == ST_OK);
    CHECK(n == 3 && used[0] == '\0', "%zu %s", n, used);
    /* names that cannot be variants */
    CHECK(open_variant("var", "a.b", 0, &n, used, msg, sizeof msg) == ST_E_ARG);
    CHECK(open_variant("var", "", 0, &n, used, msg, sizeof msg) == ST_E_ARG);
    CHECK(open_variant("var", "../fp16", 0, &n, used, msg, sizeof msg) == ST_E_ARG);
    char longv[ST_MODEL_VARIANT_MAX + 2];
    memset(longv, 'v', sizeof longv - 1);
    longv[sizeof longv - 1] = '\0';
    CHECK(open_variant("var", longv, 0, &n, used, msg, sizeof msg) == ST_E_ARG);
    longv[ST_MODEL_VARIANT_MAX] = '\0';
    CHECK(open_variant("var", longv, 0, &n, used, msg, sizeof msg) == ST_E_NOT_FOUND);
    CHECK(open_variant("var", NULL, 4, &n, used, msg, sizeof msg) == ST_E_ARG);
    /* a file named directly is opened as named */
    CHECK(open_variant("var/diffusion_pytorch_model.fp16.safetensors", "bf16", 0, &n, used, msg, sizeof msg) == ST_OK);
    CHECK(n == 2 && used[0] == '\0');

    /* only variants: none is chosen without asking */
    mkdir_in("onlyvar");
    write_shard("onlyvar/model.fp16.safetensors", A, NULL, NULL);
    write_shard("onlyvar/pytorch_model.ema.safetensors", B, NULL, NULL);
    CHECK(open_variant("onlyvar", NULL, 0, &n, used, msg, sizeof msg) == ST_E_NOT_FOUND);
    CHECK(strstr(msg, "fp16") && strstr(msg, "ema"), "%s", msg);
    CHECK(open_variant("onlyvar", "fp16", 0, &n, used, msg, sizeof msg) == ST_OK && n == 3);
    CHECK(open_variant("onlyvar", "ema", 0, &n, used, msg, sizeof msg) == ST_OK && n == 2);
    /* two files of one variant */
    write_shard("onlyvar/diffusion_pytorch_model.fp16.safetensors", B, NULL, NULL);
    CHECK(open_variant("onlyvar", "fp16", 0, &n, used, msg, sizeof msg) == ST_E_ARG);
    CHECK(strstr(msg, "diffusion_pytorch_model.fp16.safetensors") && strstr(msg, "model.fp16.safetensors"), "%s", msg);
    /* variant shards without their index */
    mkdir_in("noidx");
    write_shard("noidx/model.fp16-00001-of-00002.safetensors", A, NULL, NULL);
    write_shard("noidx/model.safetensors", B, NULL, NULL);
    CHECK(open_variant("noidx", "fp16", 0, &n, used, msg, sizeof msg) == ST_E_NOT_FOUND);
    CHECK(strstr(msg, "index") != NULL, "%s", msg);
    CHECK(open_variant("noidx", NULL, 0, &n, used, msg, sizeof msg) == ST_OK && n == 2);
    /* dotted names of other stems are plain files: still ambiguous */
    mkdir_in("dotted");
    write_shard("dotted/sd_xl_base_1.0.safetensors", A, NULL, NULL);
    write_shard("dotted/my_model.fp16.safetensors", B, NULL, NULL);
    CHECK(open_variant("dotted", NULL, 0, &n, used, msg, sizeof msg) == ST_E_ARG);
    CHECK(strstr(msg, "sd_xl_base_1.0.safetensors") && strstr(msg, "my_model.fp16.safetensors") &&
          strstr(msg, "--variant"), "%s", msg);
    CHECK(open_variant("dotted", "fp16", 0, &n, used, msg, sizeof msg) == ST_E_NOT_FOUND);
}

/* ---- many shards: the descriptor cache, threads, replaced shards ---- */

#define NSH 24
#define THREADS 6

typedef struct job {
    const st_model *m;
    int bad;
} job;

static void *reader(void *arg)
{
    job *j = arg;
    size_t n = st_model_tensor_count(j->m);
    for (int round = 0; round < 20; round++)
        for (size_t i = 0; i < n; i++) {
            const st_tensor *t = st_model_tensor_at(j->m, (i * 7 + (size_t)round) % n);
            if (!data_ok(j->m, t))
                j->bad++;
        }
    return NULL;
}

static size_t open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    size_t n = 0;
    if (!d)
        return 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static void test_many(void)
{
    mkdir_in("many");
    char idx[8192];
    size_t o = (size_t)snprintf(idx, sizeof idx, "{\"weight_map\": {");
    for (int s = 0; s < NSH; s++) {
        char n1[32], n2[32], rel[64];
        snprintf(n1, sizeof n1, "t%02d.a", s);
        snprintf(n2, sizeof n2, "t%02d.bb", s);
        const char *names[] = {n1, n2, NULL};
        snprintf(rel, sizeof rel, "many/s-%02d.safetensors", s);
        write_shard(rel, names, NULL, NULL);
        o += (size_t)snprintf(idx + o, sizeof idx - o, "%s\"%s\": \"s-%02d.safetensors\", \"%s\": \"s-%02d.safetensors\"",
                              s ? ", " : "", n1, s, n2, s);
    }
    snprintf(idx + o, sizeof idx - o, "}}");
    write_text("many/model.safetensors.index.json", idx);
    size_t before = open_fds();
    char p[512];
    path_in(p, sizeof p, "many");
    st_model *m = NULL;
    st_error err;
    CHECK(st_model_open(p, 0, &m, &err) == ST_OK, "%s", err.message);
    if (!m)
        return;
    CHECK_EQ_INT(st_model_tensor_count(m), 2 * NSH);
    pthread_t th[THREADS];
    job jobs[THREADS];
    for (int i = 0; i < THREADS; i++) {
        jobs[i].m = m;
        jobs[i].bad = 0;
        pthread_create(&th[i], NULL, reader, &jobs[i]);
    }
    int bad = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        bad += jobs[i].bad;
    }
    CHECK_EQ_INT(bad, 0);
    size_t during = open_fds();
    CHECK(during <= before + ST_MODEL_MAX_OPEN, "%zu fds open, %zu before", during, before);
    CHECK(during > before, "descriptors are kept for later reads");

    /* A shard replaced after opening: the next reopen notices. Shard 0 was
     * used least recently after this loop reads the others. */
    for (int s = 1; s < NSH; s++)
        CHECK(data_ok(m, st_model_tensor_at(m, 2 * (size_t)s)));
    const char *other[] = {"t00.a", "t00.bb", "zzz", NULL};
    write_shard("many/s-00.safetensors", other, NULL, NULL);
    unsigned char b[8];
    CHECK(st_model_tensor_read(m, st_model_tensor_at(m, 0), 0, b, 4, &err) == ST_E_IO);
    CHECK(strstr(err.message, "s-00.safetensors") != NULL, "%s", err.message);
    st_model_close(m);
    CHECK_EQ_INT(open_fds(), before);
}

/* huggingface_hub's parse_size_to_int: value * unit in double, truncated. */
static void test_sizes(void)
{
    static const struct {
        const char *text;
        uint64_t want;
    } ok[] = {
        {"5GB", 5000000000ull}, {"5gb", 5000000000ull}, {" 5 GB ", 5000000000ull},
        {"1.5GB", 1500000000ull}, {"0.1GB", 100000000ull}, {"10MB", 10000000ull},
        {"2KB", 2000ull}, {"1TB", 1000000000000ull}, {"2GiB", 2147483648ull},
        {"1KiB", 1024ull}, {"1e3", 1000ull}, {"700", 700ull}, {"0.0015MB", 1500ull},
        {"1.1e1KB", 11000ull}, {"0.3KB", 300ull},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint64_t v = 0;
        st_error err;
        CHECK(st_parse_size(ok[i].text, &v, &err) == ST_OK && v == ok[i].want, "%s -> %llu",
              ok[i].text, (unsigned long long)v);
    }
    static const char *const bad[] = {"", "GB", "5XB", "-1GB", "0", "1.5", "inf", "nanGB",
                                      "1e400GB", "5 G B", "0.0000001KB", "+5GB", "5GBs", "0x10"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 0;
        CHECK(st_parse_size(bad[i], &v, NULL) == ST_E_ARG, "%s accepted as %llu", bad[i],
              (unsigned long long)v);
    }
}

static void rm_rf(const char *path)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", path);
}

int main(void)
{
    snprintf(g_root, sizeof g_root, "/tmp/st_model_test.XXXXXX");
    if (!mkdtemp(g_root)) {
        perror("mkdtemp");
        return 2;
    }
    test_single();
    test_index();
    test_hostile();
    test_variants();
    test_many();
    test_sizes();
    rm_rf(g_root);
    TEST_END();
}
