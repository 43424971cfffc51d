/* GGUF files in `info` and `ls` (validated by st_gguf_open first, as
 * `check` does): the metadata pairs and the tensors with their ggml type
 * and their shape as stored, in safetensors' order (ggml's reversed). */
#include "convert_gguf.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

bool gguf_is_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    char m[4];
    bool yes = read(fd, m, 4) == 4 && memcmp(m, "GGUF", 4) == 0;
    close(fd);
    return yes;
}

static int open_or_report(const char *path, st_gguf **g)
{
    st_error err;
    memset(&err, 0, sizeof err);
    int rc = st_gguf_open(path, g, &err);
    if (rc == ST_OK)
        return CLI_EXIT_OK;
    return cli_report(path, rc, &err);
}

static const char *value_type_name(int t)
{
    static const char *const names[] = {"u8",  "i8",  "u16",    "i16",   "u32", "i32", "f32",
                                        "bool", "str", "array", "u64",   "i64", "f64"};
    return t >= 0 && t < 13 ? names[t] : "?";
}

static void print_value(const st_gguf_kv *kv, bool json)
{
    switch (kv->type) {
    case ST_GGUF_STRING:
        if (!kv->str) {
            printf(json ? "null" : "(%zu bytes)", kv->str_len);
        } else if (json) {
            cli_json_string(stdout, kv->str, kv->str_len);
        } else {
            char *p = cli_printable(kv->str, kv->str_len);
            fputs(p ? p : "?", stdout);
            free(p);
        }
        break;
    case ST_GGUF_ARRAY:
        if (json)
            printf("{\"array\": \"%s\", \"count\": %" PRIu64 "}", value_type_name(kv->array_type),
                   kv->count);
        else
            printf("[%s x %" PRIu64 "]", value_type_name(kv->array_type), kv->count);
        break;
    case ST_GGUF_FLOAT32: case ST_GGUF_FLOAT64: printf("%.9g", kv->f); break;
    case ST_GGUF_BOOL: fputs(kv->u ? "true" : "false", stdout); break;
    case ST_GGUF_INT8: case ST_GGUF_INT16: case ST_GGUF_INT32: case ST_GGUF_INT64:
        printf("%" PRId64, kv->i);
        break;
    default: printf("%" PRIu64, kv->u); break;
    }
}

static void print_shape(const st_gguf_tensor *t, bool json)
{
    fputs("[", stdout);
    for (uint32_t d = 0; d < t->n_dims; d++)
        printf("%s%" PRIu64, d ? ", " : "", t->ne[t->n_dims - 1 - d]);
    fputs("]", stdout);
    (void)json;
}

int gguf_ls(const char *path, bool json)
{
    st_gguf *g = NULL;
    int rc = open_or_report(path, &g);
    if (rc != CLI_EXIT_OK)
        return rc;
    if (json)
        fputs("[", stdout);
    for (size_t i = 0; i < st_gguf_tensor_count(g); i++) {
        const st_gguf_tensor *t = st_gguf_tensor_at(g, i);
        if (json) {
            fputs(i ? ",\n {\"name\": " : "\n {\"name\": ", stdout);
            cli_json_string(stdout, t->name, t->name_len);
            printf(", \"type\": \"%s\", \"shape\": ", st_ggml_type_name(t->type));
            print_shape(t, true);
            printf(", \"bytes\": %" PRIu64 "}", t->size);
        } else {
            char *p = cli_printable(t->name, t->name_len);
            printf("%-8s ", st_ggml_type_name(t->type));
            print_shape(t, false);
            printf(" %s\n", p ? p : "?");
            free(p);
        }
    }
    if (json)
        fputs("\n]\n", stdout);
    st_gguf_close(g);
    return CLI_EXIT_OK;
}

int gguf_info(const char *path, bool json)
{
    st_gguf *g = NULL;
    int rc = open_or_report(path, &g);
    if (rc != CLI_EXIT_OK)
        return rc;
    size_t nt = st_gguf_tensor_count(g), nkv = st_gguf_kv_count(g);
    size_t by_type[64] = {0};
    uint64_t bytes = 0;
    for (size_t i = 0; i < nt; i++) {
        const st_gguf_tensor *t = st_gguf_tensor_at(g, i);
        if (t->type >= 0 && t->type < 64)
            by_type[t->type]++;
        bytes += t->size;
    }
    if (json) {
        printf("{\"file\": ");
        cli_json_cstr(stdout, path);
        printf(", \"format\": \"gguf\", \"version\": %u, \"alignment\": %u, \"tensors\": %zu, "
               "\"tensor_bytes\": %" PRIu64 ", \"types\": {",
               st_gguf_version(g), st_gguf_alignment(g), nt, bytes);
        bool first = true;
        for (int t = 0; t < 64; t++)
            if (by_type[t]) {
                printf("%s\"%s\": %zu", first ? "" : ", ", st_ggml_type_name(t), by_type[t]);
                first = false;
            }
        printf("}, \"metadata\": {");
        for (size_t i = 0; i < nkv; i++) {
            const st_gguf_kv *kv = st_gguf_kv_at(g, i);
            fputs(i ? ", " : "", stdout);
            cli_json_string(stdout, kv->key, kv->key_len);
            fputs(": ", stdout);
            print_value(kv, true);
        }
        printf("}}\n");
    } else {
        char *p = cli_printable(path, strlen(path));
        char a[32];
        printf("%s: GGUF v%u, %zu tensors (", p ? p : "?", st_gguf_version(g), nt);
        bool first = true;
        for (int t = 0; t < 64; t++)
            if (by_type[t]) {
                printf("%s%zu %s", first ? "" : ", ", by_type[t], st_ggml_type_name(t));
                first = false;
            }
        printf("), %s of tensor data, alignment %u\n", cli_human_size(bytes, a, sizeof a),
               st_gguf_alignment(g));
        free(p);
        printf("metadata (%zu):\n", nkv);
        for (size_t i = 0; i < nkv; i++) {
            const st_gguf_kv *kv = st_gguf_kv_at(g, i);
            char *k = cli_printable(kv->key, kv->key_len);
            printf("  %s (%s): ", k ? k : "?", value_type_name(kv->type));
            free(k);
            print_value(kv, false);
            putchar('\n');
        }
    }
    st_gguf_close(g);
    return CLI_EXIT_OK;
}

int gguf_check(const char *path, size_t *ntensors, st_error *err)
{
    st_gguf *g = NULL;
    int rc = st_gguf_open(path, &g, err);
    *ntensors = st_gguf_tensor_count(g);
    st_gguf_close(g);
    return rc;
}

int convert_from_gguf(const char *in_path, const char *out_path, st_dtype dtype, bool set_dtype,
                      const cli_common *common)
{
    if (set_dtype && dtype != ST_F32 && dtype != ST_F16 && dtype != ST_BF16) {
        cli_errorf("invalid_argument: a GGUF input is written as f32 (default), f16 or bf16");
        return CLI_EXIT_ERROR;
    }
    st_gguf_read_options o;
    memset(&o, 0, sizeof o);
    o.dtype = set_dtype ? dtype : ST_F32;
    cli_progress *line = cli_progress_new("convert", common);
    o.hooks = cli_output_hooks(line);
    st_gguf_read_report rep;
    st_error err;
    memset(&err, 0, sizeof err);
    int rc = st_gguf_to_safetensors(in_path, out_path, &o, &rep, &err);
    cli_progress_done(line);
    if (rc != ST_OK) {
        int code = cli_report(rep.failed_input == 0 ? in_path : NULL, rc, &err);
        return rep.failed_input == 0 ? code : CLI_EXIT_ERROR;
    }
    char *p = cli_printable(out_path, strlen(out_path));
    char a[32], b[32];
    printf("wrote %s: %zu tensors from GGUF as %s, %s (%s bytes)", p ? p : out_path, rep.tensors,
           st_dtype_name(o.dtype), cli_human_size(rep.output_size, a, sizeof a),
           cli_grouped(rep.output_size, b, sizeof b));
    if (rep.reshaped)
        printf("; %zu shape%s restored from comfy.gguf.orig_shape", rep.reshaped,
               rep.reshaped == 1 ? "" : "s");
    putchar('\n');
    free(p);
    return CLI_EXIT_OK;
}

/* `identify` of a GGUF file: the library's rules (st_identify_tensors) on
 * its tensors under their original names (the recorded prefix put back)
 * and shapes (comfy.gguf.orig_shape where recorded); block-quantized
 * tensors count as F16 for the precision. */
int gguf_identify(const char *path, st_identity *id, st_error *err)
{
    st_gguf *g = NULL;
    int rc = st_gguf_open(path, &g, err);
    if (rc != ST_OK)
        return rc;
    size_t n = st_gguf_tensor_count(g);
    const st_gguf_kv *pk = st_gguf_kv_find(g, "safetensors.name_prefix");
    const char *prefix = pk && pk->type == ST_GGUF_STRING && pk->str ? pk->str : "";
    size_t pl = strlen(prefix);
    st_tensor_desc *desc = calloc(n ? n : 1, sizeof *desc);
    uint64_t *shapes = calloc(n ? n : 1, 8 * sizeof *shapes);
    char **names = calloc(n ? n : 1, sizeof *names);
    const char *meta[2] = {"gguf.general.architecture", ""};
    const st_gguf_kv *ak = st_gguf_kv_find(g, "general.architecture");
    if (ak && ak->type == ST_GGUF_STRING && ak->str)
        meta[1] = ak->str;
    if (!desc || !shapes || !names)
        rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    for (size_t i = 0; i < n && rc == ST_OK; i++) {
        const st_gguf_tensor *t = st_gguf_tensor_at(g, i);
        names[i] = malloc(pl + t->name_len + 1);
        if (!names[i]) {
            rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
            break;
        }
        memcpy(names[i], prefix, pl);
        memcpy(names[i] + pl, t->name, t->name_len + 1);
        uint64_t *shape = shapes + 8 * i;
        uint32_t rank;
        int restored;
        if (st_gguf_tensor_shape(g, t, shape, &rank, &restored, NULL) != ST_OK) {
            /* a broken shape record: identify on the stored shape */
            rank = t->n_dims;
            for (uint32_t d = 0; d < rank; d++)
                shape[d] = t->ne[rank - 1 - d];
        }
        st_dtype dt = t->type == ST_GGML_F32 ? ST_F32 : t->type == ST_GGML_BF16 ? ST_BF16 : ST_F16;
        desc[i] = (st_tensor_desc){names[i], pl + t->name_len, dt, rank, shape};
    }
    if (rc == ST_OK)
        rc = st_identify_tensors(desc, n, meta, 1, NULL, NULL, id, err);
    for (size_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
    free(shapes);
    free(desc);
    st_gguf_close(g);
    return rc;
}
