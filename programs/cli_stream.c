/* Streaming tensors from input files into the library's writer, shared by
 * the commands that rewrite files (meta, merge): the writer pulls each
 * tensor's bytes through a callback while it writes, so memory use is a
 * fixed buffer whatever the file size. */
#include "cli.h"

#include <string.h>
#include <sys/stat.h>

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
    return st_op_same_file(a, b);
}
