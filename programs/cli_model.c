/* Multi-file models in the commands: which arguments name one, and opening
 * it with the same error printing as cli_open_file. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

bool cli_is_model_path(const char *path)
{
    size_t n = strlen(path);
    if (n >= 5 && strcmp(path + n - 5, ".json") == 0)
        return true;
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

int cli_open_model(const char *path, st_model **out)
{
    return cli_open_model_variant(path, NULL, out);
}

int cli_open_model_variant(const char *path, const char *variant, st_model **out)
{
    st_error err;
    memset(&err, 0, sizeof err);
    int rc = st_model_open_variant(path, variant, 0, out, &err);
    if (rc == ST_OK)
        return CLI_EXIT_OK;
    if (err.code == ST_OK)
        err.code = rc;
    cli_print_error(path, &err);
    return cli_exit_code(err.code);
}

static int read_model_tensor(void *ctx, size_t index, void *buf, size_t len)
{
    const st_model *m = ctx;
    return st_model_tensor_read(m, st_model_tensor_at(m, index), 0, buf, len, NULL);
}

int cli_identify_model(const st_model *m, st_identity *id, st_error *err)
{
    size_t n = st_model_tensor_count(m), nm = st_model_metadata_count(m);
    st_tensor_desc *d = malloc((n + 1) * sizeof *d);
    const char **meta = malloc((2 * nm + 1) * sizeof *meta);
    int rc;
    if (!d || !meta) {
        rc = ST_E_NOMEM;
        err->code = rc;
        snprintf(err->message, sizeof err->message, "out of memory");
    } else {
        for (size_t i = 0; i < n; i++) {
            const st_tensor *t = st_model_tensor_at(m, i);
            d[i] = (st_tensor_desc){t->name, t->name_len, t->dtype, t->rank, t->shape};
        }
        for (size_t i = 0; i < nm; i++)
            st_model_metadata_at(m, i, &meta[2 * i], NULL, &meta[2 * i + 1], NULL);
        rc = st_identify_tensors(d, n, meta, nm, read_model_tensor, (void *)m, id, err);
    }
    free(d);
    free(meta);
    return rc;
}
