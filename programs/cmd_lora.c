/* `safetensors lora`: bake adapters into a model, extract one from a
 * fine-tune, resize one (st_lora_bake / st_lora_extract / st_lora_resize). */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "Usage: " CLI_NAME " lora bake MODEL -o OUT LORA[:STRENGTH]... [--dtype D]\n"
    "                        [--allow-unmatched] [--threads N]\n"
    "       " CLI_NAME " lora extract BASE TUNED -o LORA --rank R [--conv-rank R2]\n"
    "                        [--alpha A] [--conv-alpha A2] [--min-diff E]\n"
    "                        [--clamp-quantile Q] [--dtype D]\n"
    "       " CLI_NAME " lora resize LORA -o OUT --rank R [--conv-rank R2]\n"
    "                        [--dynamic sv_ratio|sv_fro|sv_cumulative=X] [--dtype D]\n"
    "\n"
    "bake     add each LoRA (kohya LoRA/LoCon, LyCORIS LoHa/LoKr) to a single-file\n"
    "         SD1.x / SD2.x / SDXL checkpoint: W += STRENGTH * alpha/rank * up @ down\n"
    "         (STRENGTH 1 if not given), in f32; output in the model's dtype unless\n"
    "         --dtype. A LoRA module that matches no model weight is an error\n"
    "         (--allow-unmatched: a warning with a count).\n"
    "extract  TUNED - BASE of every layer kohya's LoRA targets, truncated by SVD to\n"
    "         rank R (3x3 convs and ResNet layers only with --conv-rank), written\n"
    "         as a kohya LoRA with alpha = rank (or --alpha). Layers whose largest\n"
    "         |difference| is below --min-diff (default 0.01) are left out.\n"
    "         --clamp-quantile 0.99 clamps values as kohya's script does (off by\n"
    "         default). --dtype: f32 (default), f16, bf16.\n"
    "resize   re-factorize each layer of a kohya LoRA to rank R, or to the rank\n"
    "         a dynamic rule of kohya's resize_lora.py picks (R then is the cap);\n"
    "         prints each layer's retained energy.\n"
    "\n"
    "Options:\n"
    "  -o, --output FILE  the file to write (atomically)\n"
    "  -q, --quiet        no progress line (shown on a terminal); resize: no\n"
    "                     per-layer lines either\n"
    "  --progress         a progress line even when stderr is not a terminal\n"
    "  --threads N        bake: computing threads (default: one per CPU)\n"
    "  -h, --help         show this help\n"
    "\n"
    "Exit status: 0 success, 1 invalid input file (a LoRA that does not fit\n"
    "itself or the model), 2 usage or I/O error.\n";

static int lib_error(const char *path, const st_error *err)
{
    cli_print_error(path, err);
    return err->code == ST_E_LORA ? CLI_EXIT_INVALID : cli_exit_code(err->code);
}

static bool parse_uint(const char *s, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *s == '-' || end == s || *end || v > 65536)
        return false;
    *out = (unsigned)v;
    return true;
}

static bool parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v))
        return false;
    *out = v;
    return true;
}

enum { OPT_DTYPE = 1000, OPT_ALLOW, OPT_RANK, OPT_CONV_RANK, OPT_ALPHA, OPT_CONV_ALPHA,
       OPT_MIN_DIFF, OPT_CLAMP, OPT_DYNAMIC, OPT_THREADS };

static const struct option long_opts[] = {
    {"dtype", required_argument, NULL, OPT_DTYPE},
    {"allow-unmatched", no_argument, NULL, OPT_ALLOW},
    {"rank", required_argument, NULL, OPT_RANK},
    {"conv-rank", required_argument, NULL, OPT_CONV_RANK},
    {"alpha", required_argument, NULL, OPT_ALPHA},
    {"conv-alpha", required_argument, NULL, OPT_CONV_ALPHA},
    {"min-diff", required_argument, NULL, OPT_MIN_DIFF},
    {"clamp-quantile", required_argument, NULL, OPT_CLAMP},
    {"dynamic", required_argument, NULL, OPT_DYNAMIC},
    {"threads", required_argument, NULL, OPT_THREADS},
    {NULL, 0, NULL, 0},
};

typedef struct args {
    const char *out;
    bool quiet, allow, have_dtype, have_rank;
    st_dtype dtype;
    unsigned rank, conv_rank, threads;
    double alpha, conv_alpha, min_diff, clamp, dyn_param;
    int dyn;
    bool have_min_diff;
    int first; /* argv index of the first operand */
    cli_common common; /* the progress flags */
} args;

static int on_option(void *ctx, int c, const char *v)
{
    args *a = ctx;
    switch (c) {
        case OPT_DTYPE:
            if (!cli_parse_dtype(v, &a->dtype))
                return cli_usage_error(usage, "unknown --dtype '%s'", v);
            a->have_dtype = true;
            break;
        case OPT_ALLOW: a->allow = true; break;
        case OPT_RANK:
            if (!parse_uint(v, &a->rank) || a->rank == 0)
                return cli_usage_error(usage, "--rank takes a number from 1 to 65536");
            a->have_rank = true;
            break;
        case OPT_CONV_RANK:
            if (!parse_uint(v, &a->conv_rank) || a->conv_rank == 0)
                return cli_usage_error(usage, "--conv-rank takes a number from 1 to 65536");
            break;
        case OPT_ALPHA:
            if (!parse_double(v, &a->alpha) || a->alpha <= 0)
                return cli_usage_error(usage, "--alpha takes a positive number");
            break;
        case OPT_CONV_ALPHA:
            if (!parse_double(v, &a->conv_alpha) || a->conv_alpha <= 0)
                return cli_usage_error(usage, "--conv-alpha takes a positive number");
            break;
        case OPT_MIN_DIFF:
            if (!parse_double(v, &a->min_diff) || a->min_diff < 0)
                return cli_usage_error(usage, "--min-diff takes a number >= 0");
            a->have_min_diff = true;
            break;
        case OPT_CLAMP:
            if (!parse_double(v, &a->clamp) || a->clamp <= 0 || a->clamp > 1)
                return cli_usage_error(usage, "--clamp-quantile takes a number in (0, 1]");
            break;
        case OPT_THREADS:
            if (!parse_uint(v, &a->threads) || a->threads == 0 || a->threads > 256)
                return cli_usage_error(usage, "--threads takes a number from 1 to 256");
            break;
        case OPT_DYNAMIC: {
            static const char *const names[] = {"sv_ratio", "sv_fro", "sv_cumulative"};
            const char *eq = strchr(v, '=');
            a->dyn = 0;
            for (int k = 0; k < 3 && eq; k++)
                if ((size_t)(eq - v) == strlen(names[k]) && strncmp(v, names[k], (size_t)(eq - v)) == 0)
                    a->dyn = k + 1;
            if (!a->dyn || !parse_double(eq + 1, &a->dyn_param) || a->dyn_param <= 0)
                return cli_usage_error(usage, "--dynamic takes sv_ratio=X, sv_fro=X or sv_cumulative=X (X > 0)");
            break;
        }
    default: return cli_usage_error(usage, NULL);
    }
    return 0;
}

/* Parses a subcommand's options: 0 to go on, or an exit code (help: -1). */
static int parse(int argc, char **argv, args *a)
{
    static const cli_command cmd = {usage, CLI_OPT_OUTPUT | CLI_OPT_PROGRESS, long_opts, NULL,
                                    on_option, false};
    memset(a, 0, sizeof *a);
    cli_common common;
    int ret = cli_parse_options(argc, argv, &cmd, &common, a);
    if (ret == 0)
        return -1; /* --help, already printed */
    if (ret > 0)
        return ret;
    a->out = common.output;
    a->quiet = common.quiet;
    a->common = common;
    a->first = common.first_arg;
    if (!a->out)
        return cli_usage_error(usage, "-o OUT is required");
    return 0;
}

/* "file.safetensors:0.8" -> path and strength; a suffix that is not a
 * number is part of the path. */
static int parse_lora_arg(char *s, st_lora_input *in)
{
    in->path = s;
    in->strength = 1.0f;
    char *colon = strrchr(s, ':');
    double v;
    if (colon && colon != s && parse_double(colon + 1, &v)) {
        *colon = 0;
        in->strength = (float)v;
    }
    return 0;
}

static int run_bake(int argc, char **argv)
{
    args a;
    int rc = parse(argc, argv, &a);
    if (rc)
        return rc < 0 ? CLI_EXIT_OK : rc;
    if (argc - a.first < 2)
        return cli_usage_error(usage, "bake needs a MODEL and at least one LORA");
    if (a.have_rank || a.conv_rank || a.dyn || a.alpha || a.have_min_diff || a.clamp)
        return cli_usage_error(usage, "bake takes --dtype, --allow-unmatched and --threads only");
    const char *model = argv[a.first];
    size_t n = (size_t)(argc - a.first - 1);
    st_lora_input *in = calloc(n, sizeof *in);
    if (!in) {
        cli_errorf("out of memory");
        return CLI_EXIT_ERROR;
    }
    for (size_t i = 0; i < n; i++)
        parse_lora_arg(argv[a.first + 1 + (int)i], &in[i]);
    st_lora_bake_options opt;
    st_lora_bake_defaults(&opt);
    opt.temp = cli_temp_hook;
    opt.dtype = a.have_dtype ? (int)a.dtype : -1;
    opt.allow_unmatched = a.allow;
    opt.threads = a.threads;
    cli_progress *line = cli_progress_new("lora bake", &a.common);
    opt.progress = line ? cli_progress_cb : NULL;
    opt.progress_ctx = line;
    st_lora_bake_report rep;
    st_error err;
    rc = st_lora_bake(model, a.out, in, n, &opt, &rep, &err);
    cli_progress_done(line);
    free(in);
    if (rc)
        return lib_error(model, &err);
    if (rep.unmatched) {
        cli_errorf("warning: %zu LoRA module(s) matched no model weight and were skipped", rep.unmatched);
        for (size_t i = 0; i < rep.unmatched_listed; i++) {
            char *p = cli_printable_message(rep.unmatched_names[i]);
            fprintf(stderr, "  %s\n", p ? p : "?");
            free(p);
        }
    }
    printf("baked %zu module(s) into %zu tensor(s): %s\n", rep.modules, rep.tensors_patched, a.out);
    return CLI_EXIT_OK;
}

static int run_extract(int argc, char **argv)
{
    args a;
    int rc = parse(argc, argv, &a);
    if (rc)
        return rc < 0 ? CLI_EXIT_OK : rc;
    if (argc - a.first != 2)
        return cli_usage_error(usage, "extract needs BASE and TUNED");
    if (!a.have_rank)
        return cli_usage_error(usage, "extract needs --rank R");
    if (a.dyn || a.allow || a.threads)
        return cli_usage_error(usage, "--dynamic, --allow-unmatched and --threads are not extract options");
    st_lora_extract_options opt;
    st_lora_extract_defaults(&opt);
    opt.temp = cli_temp_hook;
    opt.rank = a.rank;
    opt.conv_rank = a.conv_rank;
    opt.alpha = (float)a.alpha;
    opt.conv_alpha = (float)a.conv_alpha;
    if (a.have_min_diff)
        opt.min_diff = (float)a.min_diff;
    opt.clamp_quantile = (float)a.clamp;
    if (a.have_dtype) {
        if (a.dtype != ST_F32 && a.dtype != ST_F16 && a.dtype != ST_BF16)
            return cli_usage_error(usage, "extract writes f32, f16 or bf16");
        opt.dtype = a.dtype;
    }
    cli_progress *line = cli_progress_new("lora extract", &a.common);
    cli_progress_set_unit(line, "layers");
    opt.progress = line ? cli_progress_cb : NULL;
    opt.progress_ctx = line;
    st_lora_extract_report rep;
    st_error err;
    rc = st_lora_extract(argv[a.first], argv[a.first + 1], a.out, &opt, &rep, &err);
    cli_progress_done(line);
    if (rc)
        return lib_error(argv[a.first], &err);
    printf("extracted %zu layer(s) (%s), %zu left out below --min-diff %g: %s\n", rep.layers,
           st_family_name((st_model_family)rep.family), rep.skipped, (double)opt.min_diff, a.out);
    return CLI_EXIT_OK;
}

static int print_layer(void *ctx, const st_lora_layer_info *l)
{
    (void)ctx;
    char *p = cli_printable(l->name, strlen(l->name));
    printf("%-75s | rank %u -> %u, alpha %g, sum(S) retained %.1f%%, fro retained %.1f%%, max(S) ratio %.1f\n",
           p ? p : l->name, l->old_rank, l->new_rank, (double)l->new_alpha, 100 * l->sum_retained,
           100 * l->fro_retained, l->max_ratio);
    free(p);
    return 0;
}

static int run_resize(int argc, char **argv)
{
    args a;
    int rc = parse(argc, argv, &a);
    if (rc)
        return rc < 0 ? CLI_EXIT_OK : rc;
    if (argc - a.first != 1)
        return cli_usage_error(usage, "resize needs one LORA");
    if (!a.have_rank)
        return cli_usage_error(usage, "resize needs --rank R (the cap of --dynamic)");
    if (a.allow || a.alpha || a.have_min_diff || a.clamp || a.threads)
        return cli_usage_error(usage, "resize takes --rank, --conv-rank, --dynamic, --dtype");
    st_lora_resize_options opt;
    st_lora_resize_defaults(&opt);
    opt.temp = cli_temp_hook;
    opt.rank = a.rank;
    opt.conv_rank = a.conv_rank;
    opt.method = (st_lora_resize_method)a.dyn;
    opt.param = a.dyn_param;
    if (a.have_dtype) {
        if (a.dtype != ST_F32 && a.dtype != ST_F16 && a.dtype != ST_BF16)
            return cli_usage_error(usage, "resize writes f32, f16 or bf16");
        opt.dtype = a.dtype;
    }
    if (!a.quiet)
        opt.layer = print_layer;
    cli_progress *line = cli_progress_new("lora resize", &a.common);
    cli_progress_set_unit(line, "layers");
    opt.progress = line ? cli_progress_cb : NULL;
    opt.progress_ctx = line;
    st_error err;
    rc = st_lora_resize(argv[a.first], a.out, &opt, &err);
    cli_progress_done(line);
    if (rc)
        return lib_error(argv[a.first], &err);
    return CLI_EXIT_OK;
}

int cmd_lora(int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_error(usage, "lora needs a subcommand: bake, extract or resize");
    const char *sub = argv[1];
    if (strcmp(sub, "-h") == 0 || strcmp(sub, "--help") == 0)
        return cli_help(usage);
    /* the subcommand's own argv: argv[0] stays the program's name */
    char *saved = argv[1];
    argv[1] = argv[0];
    int rc;
    if (strcmp(sub, "bake") == 0)
        rc = run_bake(argc - 1, argv + 1);
    else if (strcmp(sub, "extract") == 0)
        rc = run_extract(argc - 1, argv + 1);
    else if (strcmp(sub, "resize") == 0)
        rc = run_resize(argc - 1, argv + 1);
    else
        rc = cli_usage_error(usage, "unknown lora subcommand '%s' (bake, extract, resize)", sub);
    argv[1] = saved;
    return rc;
}
