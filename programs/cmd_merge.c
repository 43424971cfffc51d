/* `safetensors merge`: A1111's checkpoint merger; the work is st_merge
 * (lib/sd/merge.c), which opens an index or a folder as a sharded model
 * itself. This file parses options and prints. */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "Usage: " CLI_NAME " merge A B [C] -o OUT --alpha M [--mode weighted|add-diff]\n"
    "                   [--dtype TYPE] [--vae VAE] [--discard REGEX]\n"
    "\n"
    "Merge Stable Diffusion checkpoints as A1111's Checkpoint Merger does:\n"
    "  weighted   (1 - M) * A + M * B                  (A and B)\n"
    "  add-diff   A + M * (B - C)                      (A, B and C)\n"
    "Tensors whose name contains \"model\" and that B has are merged; A's other\n"
    "tensors are kept as they are; tensors only in B are left out. An\n"
    "inpainting (9 input channels) or instruct-pix2pix (8) A merges with a\n"
    "normal B on its first 4 channels. Computed in float32; each tensor keeps\n"
    "A's dtype unless --dtype. The metadata of A, B and C is carried over (in\n"
    "that order, later values win), with format=pt and A1111's sd_merge_recipe\n"
    "and sd_merge_models (the inputs' SHA-256, which takes a read of each).\n"
    "A, B, C and VAE may each be one file, or a sharded model: an index\n"
    "(*.safetensors.index.json) or a folder holding one, validated whole; OUT\n"
    "is one file, and a sharded input is recorded by each shard's SHA-256.\n"
    "OUT is written to a temporary file, synced, then renamed.\n"
    "\n"
    "Options:\n"
    "  -o, --output OUT  the merged file (required; not one of the inputs)\n"
    "  --alpha M         the multiplier M (required), e.g. 0.3\n"
    "  --mode MODE       weighted (default) or add-diff\n"
    "  --dtype TYPE      write floating tensors as f16, bf16, f32 or f64\n"
    "  --vae VAE         bake in a VAE: its tensor K replaces first_stage_model.K\n"
    "  --discard REGEX   leave out tensors whose name matches REGEX (POSIX ERE,\n"
    "                    searched anywhere in the name)\n"
    "  -q, --quiet        no progress line (shown when stderr is a terminal)\n"
    "  --progress         a progress line even when stderr is not a terminal\n"
    "  -h, --help        show this help\n"
    "\n"
    "Exit status: 0 success, 1 invalid input file, 2 usage or I/O error,\n"
    "incompatible models.\n";

enum { OPT_ALPHA = 256, OPT_MODE, OPT_DTYPE, OPT_VAE, OPT_DISCARD };

typedef struct merge_args {
    st_merge_options opt;
    bool has_alpha;
} merge_args;

static int on_option(void *ctx, int c, const char *arg)
{
    merge_args *a = ctx;
    switch (c) {
    case OPT_ALPHA: {
        char *end;
        errno = 0;
        a->opt.alpha = strtod(arg, &end);
        if (end == arg || *end || errno || !isfinite(a->opt.alpha))
            return cli_usage_error(usage, "merge: --alpha wants a number, got '%s'", arg);
        a->has_alpha = true;
        return 0;
    }
    case OPT_MODE:
        if (strcmp(arg, "weighted") == 0)
            a->opt.mode = ST_MERGE_WEIGHTED;
        else if (strcmp(arg, "add-diff") == 0)
            a->opt.mode = ST_MERGE_ADD_DIFF;
        else
            return cli_usage_error(usage, "merge: --mode wants weighted or add-diff, got '%s'",
                                   arg);
        return 0;
    case OPT_DTYPE:
        if (!cli_parse_dtype(arg, &a->opt.dtype) ||
            (a->opt.dtype != ST_F16 && a->opt.dtype != ST_BF16 && a->opt.dtype != ST_F32 &&
             a->opt.dtype != ST_F64))
            return cli_usage_error(usage, "merge: --dtype wants f16, bf16, f32 or f64, got '%s'",
                                   arg);
        a->opt.set_dtype = 1;
        return 0;
    case OPT_VAE: a->opt.vae_path = arg; return 0;
    case OPT_DISCARD: a->opt.discard = arg; return 0;
    default: return cli_usage_error(usage, NULL);
    }
}

int cmd_merge(int argc, char **argv)
{
    static const struct option opts[] = {
        {"alpha", required_argument, NULL, OPT_ALPHA},
        {"mode", required_argument, NULL, OPT_MODE},
        {"dtype", required_argument, NULL, OPT_DTYPE},
        {"vae", required_argument, NULL, OPT_VAE},
        {"discard", required_argument, NULL, OPT_DISCARD},
        {NULL, 0, NULL, 0},
    };
    static const cli_command cmd = {usage, CLI_OPT_OUTPUT | CLI_OPT_PROGRESS, opts, NULL,
                                    on_option, false};
    merge_args a;
    memset(&a, 0, sizeof a);
    cli_common common;
    int ret = cli_parse_options(argc, argv, &cmd, &common, &a);
    if (ret >= 0)
        return ret;
    size_t nin = (size_t)(argc - common.first_arg);
    bool add_diff = a.opt.mode == ST_MERGE_ADD_DIFF;
    if (nin < 2 || nin > 3)
        return cli_usage_error(usage, "merge: expected A B, or A B C with --mode add-diff");
    if (add_diff && nin != 3)
        return cli_usage_error(usage, "merge: add-diff needs three models A B C");
    if (!add_diff && nin != 2)
        return cli_usage_error(usage, "merge: a weighted sum takes two models (C is for "
                                      "--mode add-diff)");
    if (!common.output)
        return cli_usage_error(usage, "merge: -o OUT is required");
    if (!a.has_alpha)
        return cli_usage_error(usage, "merge: --alpha M is required");
    const char *const *inputs = (const char *const *)argv + common.first_arg;
    cli_progress *bar = cli_progress_new("merge", &common);
    a.opt.hooks = cli_output_hooks(bar);
    st_merge_report rep;
    st_error err;
    memset(&err, 0, sizeof err);
    int rc = st_merge(inputs, nin, common.output, &a.opt, &rep, &err);
    cli_progress_done(bar);
    if (rc != ST_OK) {
        const char *path = rep.failed_input < 0 ? NULL
                           : rep.failed_input == 3 ? a.opt.vae_path
                                                   : inputs[rep.failed_input];
        int code = cli_report(path, rc, &err);
        /* a file that cannot be read is an I/O error, a bad one a verdict */
        return code;
    }
    char num[40], s1[32], s2[32];
    printf("merged %zu tensor%s (%s, alpha %s)%s%s; %zu kept from A\n", rep.merged,
           rep.merged == 1 ? "" : "s", add_diff ? "add difference" : "weighted sum",
           st_format_double(a.opt.alpha, num, sizeof num), rep.inpainting ? ", inpainting" : "",
           rep.pix2pix ? ", instruct-pix2pix" : "", rep.tensors - rep.merged);
    if (a.opt.vae_path)
        printf("baked in %zu VAE tensor%s\n", rep.baked, rep.baked == 1 ? "" : "s");
    if (a.opt.discard)
        printf("discarded %zu tensor%s\n", rep.discarded, rep.discarded == 1 ? "" : "s");
    char *p = cli_printable(common.output, strlen(common.output));
    printf("wrote %s: %zu tensor%s, %s (%s bytes)\n", p ? p : "?", rep.written,
           rep.written == 1 ? "" : "s", cli_human_size(rep.output_size, s1, sizeof s1),
           cli_grouped(rep.output_size, s2, sizeof s2));
    free(p);
    return CLI_EXIT_OK;
}
