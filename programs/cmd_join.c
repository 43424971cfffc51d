/* `safetensors join`: a sharded model into one canonical file. */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "Usage: " CLI_NAME " join [-q] IN OUT.safetensors\n"
    "\n"
    "Write every tensor of IN (an index.json, a folder holding one, or a\n"
    "single file) and the shards' metadata into one canonical file: the\n"
    "bytes `convert` writes for the same tensors and metadata. IN is\n"
    "validated whole first (every shard, the index's weight_map and\n"
    "total_size). OUT is replaced atomically; on failure it is untouched.\n"
    "\n"
    "Options:\n"
    "  -q, --quiet  no progress line\n"
    "  -h, --help   show this help\n"
    "\n"
    "Exit status: 0 success, 1 invalid input, 2 usage or I/O error.\n";

int cmd_join(int argc, char **argv)
{
    static const struct option opts[] = {
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool quiet = false;
    int c;
    while ((c = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
        switch (c) {
        case 'q': quiet = true; break;
        case 'h': return cli_help(usage);
        default: return cli_usage_error(usage, NULL);
        }
    }
    if (argc - optind != 2)
        return cli_usage_error(usage, "join: give IN and OUT");
    const char *in = argv[optind], *out = argv[optind + 1];
    st_model *m = NULL;
    st_error err;
    int rc = st_model_open(in, 0, &m, &err);
    if (rc) {
        cli_print_error(in, &err);
        return cli_exit_code(rc);
    }
    for (size_t i = 0; i < st_model_shard_count(m); i++) {
        if (cli_same_file(st_model_shard_path(m, i), out)) {
            st_model_close(m);
            cli_errorf("%s: is a shard of the input; write the joined file elsewhere", out);
            return CLI_EXIT_ERROR;
        }
    }
    bool bar = !quiet && isatty(STDERR_FILENO) == 1;
    rc = st_model_join(m, out, bar ? cli_model_progress : NULL, NULL, &err);
    st_model_close(m);
    if (rc) {
        cli_print_error(out, &err);
        return CLI_EXIT_ERROR;
    }
    return CLI_EXIT_OK;
}
