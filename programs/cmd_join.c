/* `safetensors join`: a sharded model into one canonical file. */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "Usage: " CLI_NAME " join [-q] [--variant NAME] IN OUT.safetensors\n"
    "\n"
    "Write every tensor of IN (an index.json, a folder holding one, or a\n"
    "single file) and the shards' metadata into one canonical file: the\n"
    "bytes `convert` writes for the same tensors and metadata. IN is\n"
    "validated whole first (every shard, the index's weight_map and\n"
    "total_size). OUT is replaced atomically; on failure it is untouched.\n"
    "\n"
    "Options:\n"
    "  --variant NAME  IN a folder: its weight variant NAME (fp16, ema, ...)\n"
    "               instead of its plain weights, as diffusers picks them\n"
    "  -q, --quiet  no progress line (--progress: one even into a pipe)\n"
    "  -h, --help   show this help\n"
    "\n"
    "Exit status: 0 success, 1 invalid input, 2 usage or I/O error.\n";

int cmd_join(int argc, char **argv)
{
    static const struct option opts[] = {{NULL, 0, NULL, 0}};
    static const cli_command cmd = {usage, CLI_OPT_PROGRESS | CLI_OPT_VARIANT, opts, NULL, NULL,
                                    false};
    cli_common common;
    int ret = cli_parse_options(argc, argv, &cmd, &common, NULL);
    if (ret >= 0)
        return ret;
    if (argc - common.first_arg != 2)
        return cli_usage_error(usage, "join: give IN and OUT");
    const char *in = argv[common.first_arg], *out = argv[common.first_arg + 1];
    st_model *m = NULL;
    int rc = cli_open_model_variant(in, common.variant, &m);
    if (rc != CLI_EXIT_OK)
        return rc;
    for (size_t i = 0; i < st_model_shard_count(m); i++) {
        if (cli_same_file(st_model_shard_path(m, i), out)) {
            st_model_close(m);
            cli_errorf("%s: is a shard of the input; write the joined file elsewhere", out);
            return CLI_EXIT_ERROR;
        }
    }
    cli_progress *line = cli_progress_new("join", &common);
    st_output_hooks hooks = cli_output_hooks(line);
    st_error err;
    rc = st_model_join(m, out, &hooks, &err);
    cli_progress_done(line);
    st_model_close(m);
    if (rc) {
        cli_print_error(out, &err);
        return CLI_EXIT_ERROR;
    }
    return CLI_EXIT_OK;
}
