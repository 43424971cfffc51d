/* `safetensors ls` and `safetensors info` on PyTorch checkpoints (read
 * only; the pickles run on the library's inert machine, nothing executes). */
#include "convert_ckpt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool ckpt_is_pickle_file(const char *path)
{
    st_format fmt = ST_FORMAT_UNKNOWN;
    return st_ckpt_detect(path, &fmt, NULL) == ST_OK &&
           (fmt == ST_FORMAT_ZIP_PICKLE || fmt == ST_FORMAT_LEGACY_PICKLE || fmt == ST_FORMAT_RAW_PICKLE ||
            fmt == ST_FORMAT_TORCHSCRIPT || fmt == ST_FORMAT_TAR_PICKLE);
}

static int open_ckpt(const char *path, st_ckpt **ck)
{
    st_error err;
    memset(&err, 0, sizeof err);
    int rc = st_ckpt_open(path, 0, NULL, ck, &err);
    if (rc == ST_OK)
        return CLI_EXIT_OK;
    if (err.code == ST_OK)
        err.code = rc;
    cli_print_error(path, &err);
    return cli_exit_code(err.code);
}

static int by_name(const void *pa, const void *pb)
{
    const st_ckpt_tensor *a = *(const st_ckpt_tensor *const *)pa, *b = *(const st_ckpt_tensor *const *)pb;
    size_t n = a->name_len < b->name_len ? a->name_len : b->name_len;
    int c = n ? memcmp(a->name, b->name, n) : 0;
    return c ? c : (a->name_len > b->name_len) - (a->name_len < b->name_len);
}

static int by_size(const void *pa, const void *pb)
{
    const st_ckpt_tensor *a = *(const st_ckpt_tensor *const *)pa, *b = *(const st_ckpt_tensor *const *)pb;
    if (a->nbytes != b->nbytes)
        return a->nbytes > b->nbytes ? -1 : 1;
    return by_name(pa, pb);
}

int ckpt_ls(const char *path, bool json, int sort, const char *glob)
{
    st_ckpt *ck;
    int rc = open_ckpt(path, &ck);
    if (rc)
        return rc;
    size_t total = st_ckpt_tensor_count(ck), n = 0;
    const st_ckpt_tensor **list = malloc((total ? total : 1) * sizeof *list);
    if (!list) {
        st_ckpt_close(ck);
        cli_errorf("nomem: out of memory");
        return CLI_EXIT_ERROR;
    }
    for (size_t i = 0; i < total; i++) {
        const st_ckpt_tensor *t = st_ckpt_tensor_at(ck, i);
        if (!glob || cli_glob_match(glob, t->name, t->name_len))
            list[n++] = t;
    }
    if (sort && n > 1)
        qsort(list, n, sizeof *list, sort == 1 ? by_name : by_size);
    if (json) {
        fputs("[", stdout);
        for (size_t i = 0; i < n; i++) {
            const st_ckpt_tensor *t = list[i];
            fputs(i ? ",\n {\"name\":" : "\n {\"name\":", stdout);
            cli_json_string(stdout, t->name, t->name_len);
            fputs(",\"dtype\":", stdout);
            cli_json_cstr(stdout, st_dtype_name(t->dtype));
            fputs(",\"shape\":", stdout);
            cli_json_shape(stdout, t->shape, t->rank);
            fputs(",\"bytes\":", stdout);
            cli_json_u64(stdout, t->nbytes);
            fputs(",\"storage\":", stdout);
            cli_json_cstr(stdout, t->storage_key);
            fputs(",\"storage_offset\":", stdout);
            cli_json_u64(stdout, t->storage_offset);
            printf(",\"contiguous\":%s}", t->contiguous ? "true" : "false");
        }
        fputs(n ? "\n]\n" : "]\n", stdout);
    } else {
        /* columns sized to the widest entry */
        size_t wn = 4, ws = 5;
        char **names = calloc(n ? n : 1, sizeof *names), **shapes = calloc(n ? n : 1, sizeof *shapes);
        uint64_t bytes = 0, params = 0;
        for (size_t i = 0; names && shapes && i < n; i++) {
            names[i] = cli_printable(list[i]->name, list[i]->name_len);
            shapes[i] = cli_shape_text(list[i]->shape, list[i]->rank);
            if (names[i] && cli_text_columns(names[i]) > wn)
                wn = cli_text_columns(names[i]);
            if (shapes[i] && strlen(shapes[i]) > ws)
                ws = strlen(shapes[i]);
            bytes += list[i]->nbytes;
            params += list[i]->nelements;
        }
        printf("%-*s  %-5s  %-*s  %s\n", (int)wn, "NAME", "DTYPE", (int)ws, "SHAPE", "SIZE");
        for (size_t i = 0; names && shapes && i < n; i++) {
            char sz[32];
            const char *nm = names[i] ? names[i] : "?";
            printf("%s%*s  %-5s  %-*s  %s\n", nm, (int)(wn - cli_text_columns(nm)), "",
                   st_dtype_name(list[i]->dtype), (int)ws, shapes[i] ? shapes[i] : "?",
                   cli_human_size(list[i]->nbytes, sz, sizeof sz));
            free(names[i]);
            free(shapes[i]);
        }
        char a[32], b[32];
        printf("%zu tensor%s, %s parameters, %s (%s checkpoint; data stays in it until converted)\n", n,
               n == 1 ? "" : "s", cli_grouped(params, a, sizeof a), cli_human_size(bytes, b, sizeof b),
               st_format_name(st_ckpt_format(ck)));
        free(names);
        free(shapes);
    }
    free(list);
    st_ckpt_close(ck);
    return CLI_EXIT_OK;
}

int ckpt_info(const char *path, bool json)
{
    st_ckpt *ck;
    int rc = open_ckpt(path, &ck);
    if (rc)
        return rc;
    size_t n = st_ckpt_tensor_count(ck), ng = st_ckpt_global_count(ck);
    uint64_t bytes = 0, params = 0, dt_n[ST_DTYPE_COUNT] = {0}, dt_p[ST_DTYPE_COUNT] = {0},
             dt_b[ST_DTYPE_COUNT] = {0};
    for (size_t i = 0; i < n; i++) {
        const st_ckpt_tensor *t = st_ckpt_tensor_at(ck, i);
        bytes += t->nbytes;
        params += t->nelements;
        dt_n[t->dtype]++;
        dt_p[t->dtype] += t->nelements;
        dt_b[t->dtype] += t->nbytes;
    }
    size_t cls[3] = {0, 0, 0};
    for (size_t i = 0; i < ng; i++)
        cls[st_ckpt_global_at(ck, i)->safety]++;
    size_t nm = st_ckpt_metadata_count(ck);
    if (json) {
        fputs("{\"file\":", stdout);
        cli_json_cstr(stdout, path);
        fputs(",\"format\":", stdout);
        cli_json_cstr(stdout, st_format_name(st_ckpt_format(ck)));
        printf(",\"tensors\":%zu,\"parameters\":", n);
        cli_json_u64(stdout, params);
        fputs(",\"tensor_bytes\":", stdout);
        cli_json_u64(stdout, bytes);
        fputs(",\"dtypes\":{", stdout);
        bool first = true;
        for (int d = ST_DTYPE_COUNT - 1; d >= 0; d--) {
            if (!dt_n[d])
                continue;
            printf("%s\"%s\":{\"tensors\":%llu,\"parameters\":%llu,\"bytes\":%llu}", first ? "" : ",",
                   st_dtype_name((st_dtype)d), (unsigned long long)dt_n[d], (unsigned long long)dt_p[d],
                   (unsigned long long)dt_b[d]);
            first = false;
        }
        fputs("},\"metadata\":{", stdout);
        for (size_t i = 0; i < nm; i++) {
            const char *k, *v;
            size_t kl, vl;
            st_ckpt_metadata_at(ck, i, &k, &kl, &v, &vl);
            if (i)
                fputs(",", stdout);
            cli_json_string(stdout, k, kl);
            fputs(":", stdout);
            cli_json_string(stdout, v, vl);
        }
        printf("},\"globals\":{\"safe\":%zu,\"unknown\":%zu,\"dangerous\":%zu},\"code_files\":%zu,"
               "\"numpy_arrays\":%zu,\"verdict\":\"%s\"}\n",
               cls[0], cls[1], cls[2], st_ckpt_code_count(ck), st_ckpt_array_count(ck),
               st_safety_name(st_ckpt_safety(ck)));
    } else {
        char a[32], b[32];
        char *p = cli_printable(path, strlen(path));
        printf("File:         %s\n", p ? p : "?");
        free(p);
        printf("Format:       %s (PyTorch pickle; nothing in it was run)\n", st_format_name(st_ckpt_format(ck)));
        printf("Tensors:      %zu\n", n);
        printf("Parameters:   %s (%s)\n", cli_human_count(params, a, sizeof a), cli_grouped(params, b, sizeof b));
        printf("Tensor bytes: %s (%s bytes)\n", cli_human_size(bytes, a, sizeof a), cli_grouped(bytes, b, sizeof b));
        printf("Dtypes:\n  %-8s %9s %14s %12s\n", "DTYPE", "TENSORS", "PARAMETERS", "BYTES");
        for (int d = ST_DTYPE_COUNT - 1; d >= 0; d--)
            if (dt_n[d])
                printf("  %-8s %9llu %14llu %12s\n", st_dtype_name((st_dtype)d), (unsigned long long)dt_n[d],
                       (unsigned long long)dt_p[d], cli_human_size(dt_b[d], a, sizeof a));
        printf("Metadata:     %zu key%s (top-level scalars)\n", nm, nm == 1 ? "" : "s");
        for (size_t i = 0; i < nm; i++) {
            const char *k, *v;
            size_t kl, vl;
            st_ckpt_metadata_at(ck, i, &k, &kl, &v, &vl);
            char *pk = cli_printable(k, kl), *pv = cli_printable(v, vl);
            printf("  %s: %s\n", pk ? pk : "?", pv ? pv : "?");
            free(pk);
            free(pv);
        }
        printf("Globals:      %zu (%zu safe, %zu unknown, %zu dangerous)%s\n", ng, cls[0], cls[1], cls[2],
               cls[2] ? "  -- run 'safetensors scan'" : "");
        if (st_ckpt_code_count(ck))
            printf("Code:         %zu TorchScript file%s (torch.jit.load runs them; never run here)"
                   "  -- run 'safetensors scan'\n",
                   st_ckpt_code_count(ck), st_ckpt_code_count(ck) == 1 ? "" : "s");
        if (st_ckpt_array_count(ck))
            printf("numpy arrays: %zu\n", st_ckpt_array_count(ck));
    }
    st_ckpt_close(ck);
    return CLI_EXIT_OK;
}

/* st_identify_tensors reads a few small tensors (SD2's v-prediction
 * marker); a checkpoint serves them through its materialising reader. */
struct identify_ctx {
    const st_ckpt *ck;
    const st_ckpt_tensor *const *tensors;
};

static int identify_read(void *ctx, size_t index, void *buf, size_t len)
{
    const struct identify_ctx *c = ctx;
    return st_ckpt_tensor_read(c->ck, c->tensors[index], 0, buf, len, NULL);
}

int ckpt_identify(const char *path, st_identity *id, st_error *err)
{
    st_ckpt *ck = NULL;
    int rc = st_ckpt_open(path, 0, NULL, &ck, err);
    if (rc != ST_OK)
        return rc;
    size_t n = st_ckpt_tensor_count(ck), nmeta = st_ckpt_metadata_count(ck);
    st_tensor_desc *desc = calloc(n ? n : 1, sizeof *desc);
    const st_ckpt_tensor **tensors = calloc(n ? n : 1, sizeof *tensors);
    const char **meta = calloc(2 * nmeta + 1, sizeof *meta);
    if (!desc || !tensors || !meta) {
        rc = ST_E_NOMEM;
        if (err) {
            err->code = rc;
            err->offset = ST_NO_OFFSET;
            snprintf(err->message, sizeof err->message, "out of memory");
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            const st_ckpt_tensor *t = st_ckpt_tensor_at(ck, i);
            tensors[i] = t;
            desc[i] = (st_tensor_desc){t->name, t->name_len, t->dtype, t->rank, t->shape};
        }
        for (size_t i = 0; i < nmeta; i++)
            st_ckpt_metadata_at(ck, i, &meta[2 * i], NULL, &meta[2 * i + 1], NULL);
        struct identify_ctx ctx = {ck, tensors};
        rc = st_identify_tensors(desc, n, meta, nmeta, identify_read, &ctx, id, err);
    }
    free(desc);
    free(tensors);
    free(meta);
    st_ckpt_close(ck);
    return rc;
}
