/* Fuzz target: PyTorch checkpoint import (zip container, TorchScript
 * archives, legacy stream, tar checkpoints, raw pickles, numpy arrays in
 * pickles) through the public st_ckpt_* API.
 *
 * fuzz-requires: lib/ckpt/checkpoint.c lib/ckpt/tar.c lib/ckpt/torchscript.c lib/ckpt/tscode.c
 *
 * The first byte picks the mode (scan only or full import, default or
 * tight limits); the rest is written to an anonymous memory file and
 * opened by path. Every open must succeed or fail cleanly (known code,
 * message, NULL handle). On success every tensor, global and metadata pair
 * is read back and checked: names NUL-terminated, dtype valid, byte count =
 * elements x dtype size, st_ckpt_tensor_read of the whole tensor (bounded)
 * and of the bytes just past its end (must fail), globals classified the
 * same way st_ckpt_classify does, the dangerous count matching; then
 * st_identify_tensors on the checkpoint's tensors and metadata (as the CLI's
 * identify does for checkpoints) must return ST_OK with fields in range. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile unsigned g_sink; /* reads the compiler cannot drop */

static int ckpt_read(void *ctx, size_t index, void *buf, size_t len)
{
    const st_ckpt *c = ctx;
    const st_ckpt_tensor *t = st_ckpt_tensor_at(c, index);
    return t ? st_ckpt_tensor_read(c, t, 0, buf, len, NULL) : -1;
}

static void identify_ckpt(const st_ckpt *c)
{
    size_t n = st_ckpt_tensor_count(c), nm = st_ckpt_metadata_count(c);
    st_tensor_desc *d = malloc((n ? n : 1) * sizeof *d);
    const char **meta = malloc((nm ? 2 * nm : 1) * sizeof *meta);
    FUZZ_ASSERT(d && meta, "oom");
    for (size_t i = 0; i < n; i++) {
        const st_ckpt_tensor *t = st_ckpt_tensor_at(c, i);
        d[i] = (st_tensor_desc){t->name, t->name_len, t->dtype, t->rank, t->shape};
    }
    for (size_t i = 0; i < nm; i++)
        st_ckpt_metadata_at(c, i, &meta[2 * i], NULL, &meta[2 * i + 1], NULL);
    st_identity id;
    st_error err;
    int rc = st_identify_tensors(d, n, meta, nm, ckpt_read, (void *)c, &id, &err);
    FUZZ_ASSERT(rc == ST_OK || rc == ST_E_NOMEM, "st_identify_tensors: %d", rc);
    if (rc == ST_OK) {
        FUZZ_ASSERT(st_kind_name(id.kind) && st_family_name(id.family) &&
                        st_confidence_name(id.confidence),
                    "identity out of range");
        FUZZ_ASSERT(id.reason_count <= ST_IDENTIFY_MAX_REASONS, "reasons");
    }
    free(d);
    free(meta);
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
        lim.max_objects = 8192;
        lim.max_memo = 256;
        lim.max_string = 4096;
        lim.max_int_bytes = 16;
        lim.max_depth = 32;
        lim.max_visits = 8192;
        lim.max_tensors = 256;
    }
    unsigned flags = (mode & 1) ? ST_CKPT_SCAN : 0;
    int fd = fz_memfd(data + 1, size - 1);
    if (fd < 0)
        return 0;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    st_format fmt = ST_FORMAT_UNKNOWN;
    st_error err;
    int rc = st_ckpt_detect(path, &fmt, &err);
    FUZZ_ASSERT(rc == ST_OK, "detect: %s", err.message);
    FUZZ_ASSERT((unsigned)fmt <= ST_FORMAT_TAR_PICKLE && st_format_name(fmt), "format %d", fmt);

    st_ckpt *c = NULL;
    memset(&err, 0, sizeof err);
    rc = st_ckpt_open(path, flags, (mode & 2) ? &lim : NULL, &c, &err);
    if (rc) {
        FUZZ_ASSERT(c == NULL, "handle on failure");
        fz_check_error(rc, &err);
        close(fd);
        return 0;
    }
    FUZZ_ASSERT(c != NULL, "no handle");
    (void)st_ckpt_format(c);
    const st_error *se = st_ckpt_scan_error(c);
    if (se)
        FUZZ_ASSERT(memchr(se->message, 0, sizeof se->message), "scan error message");

    size_t nt = st_ckpt_tensor_count(c);
    uint64_t budget = 8u << 20; /* bytes read back per input */
    for (size_t i = 0; i < nt; i++) {
        const st_ckpt_tensor *t = st_ckpt_tensor_at(c, i);
        FUZZ_ASSERT(t && t->name && t->name[t->name_len] == 0, "tensor name");
        FUZZ_ASSERT((unsigned)t->dtype < ST_DTYPE_COUNT, "dtype");
        FUZZ_ASSERT(t->storage_key != NULL, "storage key");
        unsigned __int128 ne = 1;
        for (uint32_t k = 0; k < t->rank; k++)
            ne *= t->shape[k];
        FUZZ_ASSERT(ne == t->nelements, "nelements");
        FUZZ_ASSERT(ne * st_dtype_bits(t->dtype) / 8 == t->nbytes, "nbytes");
        if (t->nbytes <= budget) {
            budget -= t->nbytes;
            uint8_t *b = malloc(t->nbytes ? t->nbytes : 1);
            FUZZ_ASSERT(b, "oom");
            rc = st_ckpt_tensor_read(c, t, 0, b, t->nbytes, &err);
            if (rc)
                fz_check_error(rc, &err);
            free(b);
        }
        uint8_t one;
        rc = st_ckpt_tensor_read(c, t, t->nbytes, &one, 1, &err);
        FUZZ_ASSERT(rc != ST_OK, "read past the end of a tensor succeeded");
    }
    FUZZ_ASSERT(st_ckpt_tensor_at(c, nt) == NULL, "tensor past the end");

    size_t ng = st_ckpt_global_count(c), dangerous = 0;
    for (size_t i = 0; i < ng; i++) {
        const st_ckpt_global *g = st_ckpt_global_at(c, i);
        FUZZ_ASSERT(g && g->module && g->name && g->pickle, "global");
        FUZZ_ASSERT(g->module[g->module_len] == 0 && g->name[g->name_len] == 0, "global strings");
        FUZZ_ASSERT(g->count >= 1, "global count");
        FUZZ_ASSERT(g->safety == st_ckpt_classify(g->module, g->module_len, g->name, g->name_len),
                    "global safety differs from st_ckpt_classify");
        dangerous += g->safety == ST_SAFETY_DANGEROUS;
    }
    FUZZ_ASSERT(dangerous == st_ckpt_dangerous_count(c), "dangerous count");
    for (size_t i = 0; i < st_ckpt_metadata_count(c); i++) {
        const char *k, *v;
        size_t kl, vl;
        FUZZ_ASSERT(st_ckpt_metadata_at(c, i, &k, &kl, &v, &vl) == ST_OK, "metadata_at");
        FUZZ_ASSERT(k[kl] == 0 && v[vl] == 0, "metadata strings");
    }
    /* TorchScript code, operators, numpy arrays */
    size_t nc = st_ckpt_code_count(c), no = st_ckpt_op_count(c);
    uint64_t calls = 0, counted = 0;
    for (size_t i = 0; i < nc; i++) {
        const st_ckpt_code *cd = st_ckpt_code_at(c, i);
        FUZZ_ASSERT(cd && cd->path && cd->path[cd->path_len] == 0, "code path");
        calls += cd->calls;
    }
    for (size_t i = 0; i < no; i++) {
        const st_ckpt_op *o = st_ckpt_op_at(c, i);
        FUZZ_ASSERT(o && o->name[o->name_len] == 0 && o->count >= 1 && o->first_code < nc, "operator");
        counted += o->count;
    }
    FUZZ_ASSERT(counted <= calls, "operator calls %llu > calls %llu", (unsigned long long)counted,
                (unsigned long long)calls);
    FUZZ_ASSERT(st_ckpt_code_at(c, nc) == NULL && st_ckpt_op_at(c, no) == NULL, "past the end");
    st_safety verdict = st_ckpt_safety(c);
    FUZZ_ASSERT((verdict == ST_SAFETY_DANGEROUS) ==
                    (dangerous > 0 || nc > 0 || st_ckpt_format(c) == ST_FORMAT_TORCHSCRIPT),
                "verdict");
    for (size_t i = 0; i < st_ckpt_array_count(c); i++) {
        const st_ckpt_array *a = st_ckpt_array_at(c, i);
        FUZZ_ASSERT(a && a->numpy_dtype && a->pickle && (a->dtype >= 0 || a->refused), "array");
        FUZZ_ASSERT(a->dtype < (int)ST_DTYPE_COUNT, "array dtype");
        FUZZ_ASSERT(!a->name || a->name[a->name_len] == 0, "array name");
        for (uint32_t k = 0; k < a->rank; k++)
            g_sink ^= (unsigned)a->shape[k];
    }
    identify_ckpt(c);
    st_ckpt_close(c);
    close(fd);
    return 0;
}
