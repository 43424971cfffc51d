/* `safetensors split`: a model into shards and an index, as transformers'
 * save_pretrained (or huggingface_hub) would write it. */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "Usage: " CLI_NAME " split [--max-shard-size SIZE] [--prefix NAME] [--hub]\n"
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
    "  -q, --quiet            no progress line\n"
    "  -h, --help             show this help\n"
    "\n"
    "Exit status: 0 success, 1 invalid input, 2 usage or I/O error.\n";

int cli_model_progress(void *ctx, uint64_t done, uint64_t total)
{
    (void)ctx;
    char a[32], b[32];
    fprintf(stderr, "\r%s / %s", cli_human_size(done, a, sizeof a), cli_human_size(total, b, sizeof b));
    if (done >= total)
        fputc('\n', stderr);
    return 0;
}

int cmd_split(int argc, char **argv)
{
    static const struct option opts[] = {
        {"max-shard-size", required_argument, NULL, 's'},
        {"prefix", required_argument, NULL, 'p'},
        {"hub", no_argument, NULL, 'H'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    st_split_options so = {0, NULL, ST_SPLIT_TRANSFORMERS};
    bool quiet = false;
    st_error err;
    int c;
    while ((c = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            if (st_parse_size(optarg, &so.max_shard_size, &err) != ST_OK)
                return cli_usage_error(usage, "%s", err.message);
            break;
        case 'p': so.prefix = optarg; break;
        case 'H': so.style = ST_SPLIT_HUB; break;
        case 'q': quiet = true; break;
        case 'h': return cli_help(usage);
        default: return cli_usage_error(usage, NULL);
        }
    }
    if (argc - optind != 2)
        return cli_usage_error(usage, "split: give IN and OUTDIR");
    const char *in = argv[optind], *outdir = argv[optind + 1];
    st_model *m = NULL;
    int rc = st_model_open(in, 0, &m, &err);
    if (rc) {
        cli_print_error(in, &err);
        return cli_exit_code(rc);
    }
    bool bar = !quiet && isatty(STDERR_FILENO) == 1;
    rc = st_model_split(m, outdir, &so, bar ? cli_model_progress : NULL, NULL, &err);
    st_model_close(m);
    if (rc) {
        cli_print_error(outdir, &err);
        return CLI_EXIT_ERROR;
    }
    return CLI_EXIT_OK;
}
