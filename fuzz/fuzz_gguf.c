/* Fuzz target: the GGUF reader (st_gguf_open, lib/gguf/gguf_read.c) on
 * arbitrary bytes (through a memory file), and for files it accepts, the
 * accessors and a dequantization of each tensor's first block.
 *
 * Properties: every failure is a documented code with a message; an
 * accepted file's tensors lie inside it, aligned, with sizes that match
 * their type and dimensions; keys and names are NUL-terminated where their
 * length says; no key twice; every tensor whose type can be dequantized
 * reads. Seeds (fuzz/seeds.py): GGUF files written by the library. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = fz_memfd(data, size);
    if (fd < 0)
        return 0;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    st_gguf *g = NULL;
    st_error err;
    memset(&err, 0, sizeof err);
    int rc = st_gguf_open(path, &g, &err);
    close(fd);
    if (rc != ST_OK) {
        fz_check_error(rc, &err);
        FUZZ_ASSERT(g == NULL);
        return 0;
    }
    uint64_t data_off = st_gguf_data_offset(g);
    uint32_t align = st_gguf_alignment(g);
    FUZZ_ASSERT(align && (align & (align - 1)) == 0);
    for (size_t i = 0; i < st_gguf_kv_count(g); i++) {
        const st_gguf_kv *kv = st_gguf_kv_at(g, i);
        FUZZ_ASSERT(kv && kv->key && kv->key[kv->key_len] == 0 && kv->key_len > 0);
        FUZZ_ASSERT(st_gguf_kv_find(g, kv->key) == kv, "key %s twice", kv->key);
        if (kv->type == ST_GGUF_STRING && kv->str)
            FUZZ_ASSERT(kv->str[kv->str_len] == 0 && kv->str_len <= size);
        if (kv->type == ST_GGUF_ARRAY && kv->count && kv->array_type != ST_GGUF_STRING &&
            kv->array_type != ST_GGUF_FLOAT32 && kv->array_type != ST_GGUF_FLOAT64 &&
            kv->array_type != ST_GGUF_BOOL) {
            int64_t v;
            FUZZ_ASSERT(st_gguf_kv_array_int(g, kv, kv->count - 1, &v, &err) == ST_OK,
                        "%s", err.message);
        }
    }
    static float out[256];
    static unsigned char scratch[256 * 8];
    for (size_t i = 0; i < st_gguf_tensor_count(g); i++) {
        const st_gguf_tensor *t = st_gguf_tensor_at(g, i);
        FUZZ_ASSERT(t->name[t->name_len] == 0 && t->n_dims >= 1 && t->n_dims <= 4);
        FUZZ_ASSERT(t->offset % align == 0);
        FUZZ_ASSERT(data_off + t->offset + t->size <= size, "tensor %s outside the file", t->name);
        uint32_t blk = st_ggml_block_elements(t->type);
        FUZZ_ASSERT(blk && t->ne[0] % blk == 0);
        FUZZ_ASSERT(t->size == t->nelements / blk * st_ggml_block_bytes(t->type));
        if (t->nelements && st_ggml_can_dequantize(t->type)) {
            rc = st_gguf_tensor_read_f32(g, t, 0, out, blk, scratch, sizeof scratch, &err);
            FUZZ_ASSERT(rc == ST_OK, "%s", err.message);
        }
    }
    st_gguf_close(g);
    return 0;
}
