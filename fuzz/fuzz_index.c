/* Fuzz target: the index.json parser and st_model_open over it.
 *
 * The input is an index file's text. st_index_parse must accept or reject
 * it without a crash, leak or undefined behaviour; on success every entry
 * is NUL-terminated inside the arena, found again by name, its shard name
 * passes the path rules, and the shard list has no repeats. Then the same
 * text is written as the index of a folder holding three fixed shards and
 * st_model_open must agree with the parser (a parse error stays an error)
 * and, when it opens the model, every tensor is found by name in its shard
 * and reads back. */
#include "fuzz_util.h"
#include "model/model_internal.h"

#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char g_dir[64];
static char g_index[128];

static void cleanup(void)
{
    char p[160];
    for (int i = 1; i <= 3; i++) {
        snprintf(p, sizeof p, "%s/m-%d.safetensors", g_dir, i);
        unlink(p);
    }
    unlink(g_index);
    rmdir(g_dir);
}

static void shard(int i, const char *const *names)
{
    st_writer *w = st_writer_new();
    static const unsigned char bytes[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    for (size_t k = 0; names[k]; k++) {
        uint64_t shape[1] = {2};
        st_writer_add(w, names[k], strlen(names[k]), ST_F32, shape, 1, bytes, 8, NULL);
    }
    char p[160];
    snprintf(p, sizeof p, "%s/m-%d.safetensors", g_dir, i);
    FUZZ_ASSERT(st_writer_write(w, p, NULL) == ST_OK, "shard");
    st_writer_free(w);
}

static void setup(void)
{
    if (g_dir[0])
        return;
    snprintf(g_dir, sizeof g_dir, "/tmp/fuzz_index.XXXXXX");
    FUZZ_ASSERT(mkdtemp(g_dir), "mkdtemp");
    snprintf(g_index, sizeof g_index, "%s/model.safetensors.index.json", g_dir);
    static const char *const a[] = {"a", "b.weight", NULL}, *const b[] = {"c", NULL},
                             *const c[] = {"d", "e", NULL};
    shard(1, a);
    shard(2, b);
    shard(3, c);
    atexit(cleanup);
}

static void check_parsed(const st_index *ix)
{
    for (size_t i = 0; i < ix->count; i++) {
        const st_index_entry *e = &ix->entries[i];
        FUZZ_ASSERT(e->name.off + e->name.len < ix->arena_len, "name outside arena");
        FUZZ_ASSERT(ix->arena[e->name.off + e->name.len] == 0, "name not terminated");
        FUZZ_ASSERT(e->shard < ix->nshards, "shard index");
        FUZZ_ASSERT(st_strtab_find(&ix->names, ix->arena + e->name.off, e->name.len) == i,
                    "name not found");
    }
    for (size_t s = 0; s < ix->nshards; s++) {
        const st_index_str *n = &ix->shards[s];
        FUZZ_ASSERT(st_index_bad_shard_name(ix->arena + n->off, n->len) == NULL, "bad name kept");
        FUZZ_ASSERT(st_strtab_find(&ix->shard_names, ix->arena + n->off, n->len) == s,
                    "shard repeated");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    st_index ix;
    st_error err;
    int prc = st_index_parse(&ix, (const char *)data, size, "fuzz", &err);
    if (prc == ST_OK)
        check_parsed(&ix);
    else
        FUZZ_ASSERT(err.code == prc, "code");
    st_index_free(&ix);

    FILE *f = fopen(g_index, "wb");
    FUZZ_ASSERT(f, "index file");
    fwrite(data, 1, size, f);
    fclose(f);
    st_model *m = NULL;
    int rc = st_model_open(g_index, 0, &m, &err);
    if (prc != ST_OK) {
        FUZZ_ASSERT(rc == prc, "model open %d, parse %d", rc, prc);
        return 0;
    }
    if (rc != ST_OK) {
        FUZZ_ASSERT(m == NULL && err.code == rc, "failed open");
        return 0;
    }
    FUZZ_ASSERT(st_model_tensor_count(m) <= 5, "count");
    for (size_t i = 0; i < st_model_tensor_count(m); i++) {
        const st_tensor *t = st_model_tensor_at(m, i);
        FUZZ_ASSERT(st_model_find(m, t->name, t->name_len) == t, "find");
        unsigned char b[8];
        FUZZ_ASSERT(st_model_tensor_read(m, t, 0, b, 8, &err) == ST_OK && b[7] == 8, "read");
        FUZZ_ASSERT(st_model_tensor_shard(m, t) < st_model_shard_count(m), "shard");
    }
    st_model_close(m);
    return 0;
}
