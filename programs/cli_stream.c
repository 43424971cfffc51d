/* Streaming tensors from input files into the library's writer, shared by
 * the commands that rewrite files (meta, merge): the writer pulls each
 * tensor's bytes through a callback while it writes, so memory use is a
 * fixed buffer whatever the file size. */
#include "cli.h"

#include <string.h>
#include <sys/stat.h>

int cli_input_fail(cli_input *in, int rc, const st_error *err)
{
    if (rc != ST_OK && !in->failed) {
        in->failed = true;
        in->err = *err;
        if (in->err.code == ST_OK)
            in->err.code = rc;
    }
    return rc;
}

int cli_copy_read(void *ctx, uint64_t offset, void *buf, size_t len)
{
    cli_copy_src *c = ctx;
    st_error err;
    memset(&err, 0, sizeof err);
    int rc = st_tensor_read(c->in->file, c->t, offset, buf, len, &err);
    return cli_input_fail(c->in, rc, &err);
}

int cli_write_output(st_writer *w, const char *out_path, cli_input *const *inputs,
                     size_t ninputs)
{
    st_error err;
    memset(&err, 0, sizeof err);
    int rc = st_writer_write(w, out_path, &err);
    if (rc == ST_OK)
        return CLI_EXIT_OK;
    for (size_t i = 0; i < ninputs; i++)
        if (inputs[i] && inputs[i]->failed) {
            /* An input that changed or cannot be read: an I/O error. */
            cli_print_error(inputs[i]->path, &inputs[i]->err);
            return CLI_EXIT_ERROR;
        }
    if (err.code == ST_OK)
        err.code = rc;
    cli_print_error(out_path, &err);
    return CLI_EXIT_ERROR;
}

bool cli_same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0)
        return false;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}
