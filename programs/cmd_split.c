/* `safetensors split`: a model into shards and an index, as transformers'
 * save_pretrained (or huggingface_hub) would write it. */
#include "cli.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "Usage: " CLI_NAME " split [--max-shard-size SIZE] [--prefix NAME] [--hub]\n"
    "                         [--variant NAME]\n"
    "                         IN OUTDIR\n"
    "\n"
    "Write the tensors of IN (a .safetensors file, an index.json or a folder)\n"
    "into OUTDIR as shards of at most SIZE bytes of tensor data each, packed as\n"
    "huggingface_hub does (tensors in name order, a new shard when the next\n"
    "tensor would not fit, a larger tensor alone), named\n"
    "NAME-00001-of-0000N.safetensors, with the index\n"
    "NAME.safetensors.index.json.\n"
    "A model that fits in one shard is written as NAME.safetensors alone.\n"
    "\n"
    "Options:\n"
    "  --max-shard-size SIZE  default 5GB; units KB MB GB TB (powers of 1000)\n"
    "                         and KiB MiB GiB TiB (powers of 1024)\n"
    "  --prefix NAME          file name start (default \"model\")\n"
    "  --hub                  the index as huggingface_hub writes it (shard\n"
    "                         order, no total_parameters) instead of\n"
    "                         transformers' (sorted keys)\n"
    "  --variant NAME         IN a folder: its weight variant NAME (fp16, ema,\n"
    "                         ...) instead of its plain weights\n"
    "  -q, --quiet            no progress line (--progress: one even into a\n"
    "                         pipe)\n"
    "  -h, --help             show this help\n"
    "\n"
    "Exit status: 0 success, 1 invalid input, 2 usage or I/O error.\n";

enum { OPT_MAX = 256, OPT_PREFIX, OPT_HUB };

static int on_option(void *ctx, int c, const char *arg)
{
    st_split_options *so = ctx;
    st_error err;
    switch (c) {
    case OPT_MAX:
        if (st_parse_size(arg, &so->max_shard_size, &err) != ST_OK)
            return cli_usage_error(usage, "%s", err.message);
        return 0;
    case OPT_PREFIX: so->prefix = arg; return 0;
    case OPT_HUB: so->style = ST_SPLIT_HUB; return 0;
    default: return cli_usage_error(usage, NULL);
    }
}

int cmd_split(int argc, char **argv)
{
    static const struct option opts[] = {
        {"max-shard-size", required_argument, NULL, OPT_MAX},
        {"prefix", required_argument, NULL, OPT_PREFIX},
        {"hub", no_argument, NULL, OPT_HUB},
        {NULL, 0, NULL, 0},
    };
    static const cli_command cmd = {usage, CLI_OPT_PROGRESS | CLI_OPT_VARIANT, opts, NULL,
                                    on_option, false};
    st_split_options so = {0, NULL, ST_SPLIT_TRANSFORMERS};
    cli_common common;
    int ret = cli_parse_options(argc, argv, &cmd, &common, &so);
    if (ret >= 0)
        return ret;
    if (argc - common.first_arg != 2)
        return cli_usage_error(usage, "split: give IN and OUTDIR");
    const char *in = argv[common.first_arg], *outdir = argv[common.first_arg + 1];
    st_model *m = NULL;
    int rc = cli_open_model_variant(in, common.variant, &m);
    if (rc != CLI_EXIT_OK)
        return rc;
    cli_progress *line = cli_progress_new("split", &common);
    st_output_hooks hooks = cli_output_hooks(line);
    st_error err;
    rc = st_model_split(m, outdir, &so, &hooks, &err);
    cli_progress_done(line);
    st_model_close(m);
    if (rc) {
        cli_print_error(outdir, &err);
        return CLI_EXIT_ERROR;
    }
    return CLI_EXIT_OK;
}
