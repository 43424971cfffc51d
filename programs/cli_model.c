/* Multi-file models in the commands: which arguments name one, and opening
 * it with the same error printing as cli_open_file. */
#include "cli.h"

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
    st_error err;
    memset(&err, 0, sizeof err);
    int rc = st_model_open(path, 0, out, &err);
    if (rc == ST_OK)
        return CLI_EXIT_OK;
    if (err.code == ST_OK)
        err.code = rc;
    cli_print_error(path, &err);
    return cli_exit_code(err.code);
}
