/* Fuzz target: the restricted pickle machine (lib/ckpt/pickle.c) on arbitrary
 * bytes, through its internal entry point pk_run_memory.
 *
 * fuzz-requires: lib/ckpt/pickle.c lib/ckpt/ckpt_internal.h
 *
 * The first input byte picks the mode: interpret torch calls or not (scan
 * mode), the default limits or tight ones (small memory, memo, depth,
 * string and integer limits, so the limit paths are reached quickly), and
 * whether persistent ids become storages through a hook. The rest is the
 * pickle. Every run must end with ST_OK or a clean error (a known code, a
 * message), never a crash, leak, hang or unbounded allocation; globals are
 * reported to the hook with NUL-free lengths inside the input; on success
 * the result is walked (cycles guarded by depth) to touch every value,
 * numpy arrays' data bytes included. */
#include "fuzz_util.h"
#include "ckpt/ckpt_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile unsigned g_sink; /* reads the compiler cannot drop */

typedef struct hook_ctx {
    uint32_t globals, storages;
} hook_ctx;

static int on_global(void *ctx, const char *mod, size_t modn, const char *name, size_t namen,
                     uint64_t off, uint32_t *id, st_error *err)
{
    (void)err;
    hook_ctx *h = ctx;
    FUZZ_ASSERT(mod && name, "NULL global");
    FUZZ_ASSERT(modn < (1u << 30) && namen < (1u << 30), "global lengths");
    FUZZ_ASSERT(off < (1ull << 40), "global offset");
    /* Touch the bytes (ASan checks they are readable). */
    for (size_t i = 0; i < modn; i++)
        g_sink += (unsigned char)mod[i];
    for (size_t i = 0; i < namen; i++)
        g_sink += (unsigned char)name[i];
    (void)st_ckpt_classify(mod, modn, name, namen);
    *id = h->globals++;
    return ST_OK;
}

static int on_persid(void *ctx, pk_value *pid, uint32_t *storage_index, st_error *err)
{
    (void)err;
    hook_ctx *h = ctx;
    FUZZ_ASSERT(pid != NULL, "NULL persistent id");
    *storage_index = h->storages++;
    return ST_OK;
}

/* Touches the reachable values: depth-bounded (graphs may be cyclic) and
 * visit-bounded (shared references make a small graph an exponential tree;
 * an unbounded walk here once timed out on an 87-byte pickle). */
static size_t g_visits;

static size_t walk(const pk_value *v, int depth)
{
    if (!v || depth > 64 || g_visits >= 200000)
        return 0;
    g_visits++;
    size_t n = 1;
    switch (v->kind) {
    case PK_STR:
    case PK_BYTES:
    case PK_BIGINT:
        for (size_t i = 0; i < v->u.s.n; i++)
            g_sink += (unsigned char)v->u.s.p[i];
        break;
    case PK_TUPLE:
    case PK_LIST:
    case PK_SET:
        for (size_t i = 0; i < v->u.seq.n; i++)
            n += walk(v->u.seq.v[i], depth + 1);
        break;
    case PK_DICT:
        for (size_t i = 0; i < 2 * v->u.seq.n; i++)
            n += walk(v->u.seq.v[i], depth + 1);
        break;
    case PK_OBJECT:
        n += walk(v->u.o.cls, depth + 1) + walk(v->u.o.args, depth + 1) +
             walk(v->u.o.state, depth + 1) + walk(v->u.o.list, depth + 1) +
             walk(v->u.o.dict, depth + 1);
        break;
    case PK_PERSID:
        n += walk(v->u.pid.pid, depth + 1);
        break;
    case PK_TENSOR:
        n += walk(v->u.t.storage, depth + 1);
        for (uint32_t i = 0; i < v->u.t.rank; i++)
            n += (size_t)(v->u.t.shape[i] & 1) + (size_t)(v->u.t.stride[i] & 1);
        break;
    case PK_ARRAY: /* shape and every data byte must be readable */
        FUZZ_ASSERT(v->u.arr.code && (v->u.arr.dtype >= 0 || v->u.arr.why), "array");
        for (uint32_t i = 0; i < v->u.arr.rank; i++)
            g_sink += (unsigned)v->u.arr.shape[i];
        if (v->u.arr.data)
            for (uint64_t i = 0; i < v->u.arr.numel * v->u.arr.elem; i++)
                g_sink += v->u.arr.data[i];
        break;
    default:
        break;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    st_ckpt_limits lim;
    st_ckpt_default_limits(&lim);
    if (mode & 2) {
        lim.max_memory = 1 << 20;
        lim.max_objects = 4096;
        lim.max_memo = 64;
        lim.max_string = 1024;
        lim.max_int_bytes = 16;
        lim.max_depth = 16;
        lim.max_visits = 4096;
        lim.max_tensors = 64;
    }
    hook_ctx hc = {0, 0};
    pk_hooks hooks = {&hc, on_global, (mode & 4) ? on_persid : NULL, NULL, NULL};
    pk_machine *m = NULL;
    pk_value *v = NULL;
    uint64_t stop_end = 0;
    st_error err;
    memset(&err, 0, sizeof err);
    int rc = pk_run_memory(data + 1, size - 1, &lim, (mode & 8) ? NULL : &hooks, (mode & 1) != 0,
                           &m, &v, &stop_end, &err);
    if (rc == ST_OK) {
        FUZZ_ASSERT(stop_end >= 1 && stop_end <= size - 1, "stop_end %llu of %zu",
                    (unsigned long long)stop_end, size - 1);
        FUZZ_ASSERT(data[stop_end] == '.', "STOP opcode not at stop_end - 1");
        g_visits = 0;
        walk(v, 0);
    } else {
        fz_check_error(rc, &err);
        FUZZ_ASSERT(rc == ST_E_PICKLE || rc == ST_E_PICKLE_LIMIT || rc == ST_E_NOMEM ||
                        rc == ST_E_CKPT_TENSOR || rc == ST_E_UNSAFE || rc == ST_E_CKPT_FORMAT,
                    "pickle error %s", st_code_name(rc));
    }
    pk_free(m);
    return 0;
}
