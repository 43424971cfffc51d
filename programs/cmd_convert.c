/* `safetensors convert`: rewrites a file in the canonical layout, with
 * dtype conversion and tensor selection (st_convert_file, lib/sd/), or
 * imports a PyTorch checkpoint (programs/convert_ckpt.c). This file parses
 * options and prints. */
#include "cli.h"
#include "convert_ckpt.h"
#include "convert_gguf.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char usage[] =
    "Usage: " CLI_NAME " convert IN OUT\n"
    "       " CLI_NAME " convert IN OUT --dtype TYPE [--saturate]\n"
    "                   [--only GLOB]... [--exclude GLOB]...\n"
    "       " CLI_NAME " convert IN OUT [--ema drop|only] [--drop GLOB]...\n"
    "       " CLI_NAME " convert DIFFUSERS_DIR OUT --to single-file [--variant NAME]\n"
    "       " CLI_NAME " convert IN OUTDIR --to diffusers\n"
    "       " CLI_NAME " convert IN OUT.gguf [--quant TYPE] [--arch A] [--threads N]\n"
    "\n"
    "Rewrite IN as OUT in the canonical layout: tensors sorted by dtype (widest\n"
    "first) then name, compact header JSON with the metadata first, padded to a\n"
    "multiple of 8 bytes. Metadata is kept as it is; a header with an empty\n"
    "\"__metadata__\" keeps it. Without --dtype, tensor bytes are kept as they are.\n"
    "OUT is written to a temporary file in its folder, synced, then renamed:\n"
    "a failed run leaves no OUT. IN is never modified; OUT may not be IN.\n"
    "IN may be a sharded model (an index *.json or a folder): its tensors and\n"
    "metadata become OUT, with the same options (without them, as 'safetensors\n"
    "join' does).\n"
    "\n"
    "A PyTorch checkpoint IN (.ckpt .pt .pth .bin: zip, legacy, tar or\n"
    "TorchScript; detected by content) is converted without running it: its\n"
    "tensors (and numpy arrays) are written with metadata format=pt. IN is\n"
    "refused (exit 1) when its pickles name a dangerous global or it holds\n"
    "TorchScript code (see 'safetensors scan'); a malformed or truncated\n"
    "checkpoint is invalid (exit 1).\n"
    "\n"
    "Options:\n"
    "  --dtype TYPE    convert the floating tensors to TYPE: f16, bf16, f32, f64,\n"
    "                  f8_e4m3, f8_e5m2, f8_e4m3fnuz, f8_e5m2fnuz, f8_e8m0 (also\n"
    "                  fp16/half, bfloat16, fp32/float, fp64/double; any case).\n"
    "                  Integer, BOOL and C64 tensors keep their dtype, and so do\n"
    "                  the block-scaled MX kinds (F4, F6_*, F8_E8M0) unless an\n"
    "                  --only pattern names them. Rounding is to nearest even;\n"
    "                  values too large for TYPE become Inf (or NaN for the F8\n"
    "                  kinds without Inf), as PyTorch's Tensor.to() does.\n"
    "  --only GLOB     convert only tensors whose name matches GLOB (repeatable;\n"
    "                  the others are copied unchanged)\n"
    "  --exclude GLOB  do not convert tensors whose name matches GLOB (repeatable)\n"
    "  --saturate      clamp values too large for TYPE to its largest finite value\n"
    "  --ema drop      leave out the EMA weights (model_ema.*): a pruned checkpoint\n"
    "  --ema only      write the EMA weights under the model's names and leave out\n"
    "                  model_ema.*: model.diffusion_model.input_blocks.0.0.weight\n"
    "                  gets model_ema.diffusion_modelinput_blocks00weight (LDM's\n"
    "                  LitEma naming: the name after \"model.\" without its dots);\n"
    "                  weights without an EMA twin are kept as they are\n"
    "  --drop GLOB     leave out tensors whose name matches GLOB (repeatable)\n"
    "  --quant TYPE    OUT.gguf (or --format gguf): an image model as GGUF v3,\n"
    "                  what city96's convert.py + patched llama-quantize make:\n"
    "                  f32, f16 (default), bf16, q8_0, q5_1, q5_0, q4_1, q4_0,\n"
    "                  q6_k, q5_k_m, q5_k_s, q4_k_m, q4_k_s, q3_k_l, q3_k_m,\n"
    "                  q3_k_s, q2_k; ggml's reference quantizers' bytes\n"
    "  --arch A        general.architecture instead of the detected one (flux,\n"
    "                  sd3, aura, hidream, cosmos, ltxv, hyvid, wan, sdxl, sd1,\n"
    "                  lumina2)\n"
    "  --threads N     quantization threads (default: every core)\n"
    "  --format F      gguf or safetensors, whatever OUT's name\n"
    "  --pad SIZE      leave SIZE spare bytes (spaces) after the header JSON, so\n"
    "                  later 'meta' edits rewrite only the header: valid, but not\n"
    "                  the canonical layout (4096, 64KiB, 1MB)\n"
    "  --allow-unsafe-globals\n"
    "                  convert a checkpoint whose pickles name a dangerous global\n"
    "                  anyway (nothing from it is ever run)\n"
    "  --to single-file  IN is a diffusers folder of Stable Diffusion 1.x, 2.x\n"
    "                  or SDXL (base, refiner), or holding a Flux transformer/:\n"
    "                  write it as one file with the names A1111/ComfyUI load\n"
    "  --to diffusers  IN is an SD1.x, SD2.x, SDXL or Flux transformer file:\n"
    "                  write a diffusers folder (unet/ vae/ text_encoder/\n"
    "                  [text_encoder_2/] scheduler/ and their configs; copy\n"
    "                  tokenizer/ from the base model; Flux: transformer/ only)\n"
    "  --variant NAME  IN is a folder: read its weight variant NAME (fp16, ema,\n"
    "                  non_ema, ...: diffusion_pytorch_model.NAME.safetensors or\n"
    "                  its index) instead of the plain weights, which are\n"
    "                  otherwise chosen and the variants ignored; with --to\n"
    "                  single-file a component without NAME gives its plain\n"
    "                  weights, as diffusers' pipeline loading does\n"
    "  -q, --quiet     no progress line (shown when stderr is a terminal)\n"
    "  --progress      a progress line even when stderr is not a terminal\n"
    "  -h, --help      show this help\n"
    "\n"
    "GLOB: * any run of characters (dots included), ? one character, [a-z] sets.\n"
    "Exit status: 0 success, 1 invalid IN, 2 usage or I/O error.\n";

typedef struct convert_args {
    st_convert_file_options opt;
    const char **only, **exclude, **drop;
    bool selecting;             /* --only, --exclude or --saturate given */
    bool allow_unsafe_globals;  /* checkpoints: convert despite dangerous globals */
    int layout;                 /* --to: TO_SAME, TO_SINGLE or TO_DIFFUSERS */
    bool failed;                /* out of memory while parsing */
    gguf_args gguf;             /* --quant, --arch, --threads, --format */
} convert_args;

enum { OPT_DTYPE = 256, OPT_ONLY, OPT_EXCLUDE, OPT_SATURATE, OPT_EMA, OPT_DROP, OPT_UNSAFE, OPT_TO,
       OPT_PAD, OPT_QUANT, OPT_ARCH, OPT_THREADS, OPT_FORMAT };
enum { TO_SAME = 0, TO_SINGLE, TO_DIFFUSERS };

static bool push_pattern(const char ***list, size_t *n, const char *pat)
{
    const char **l = realloc(*list, (*n + 1) * sizeof *l);
    if (!l)
        return false;
    l[(*n)++] = pat;
    *list = l;
    return true;
}

static int on_option(void *ctx, int c, const char *arg)
{
    convert_args *a = ctx;
    st_convert_file_options *o = &a->opt;
    bool ok = true;
    switch (c) {
    case OPT_UNSAFE: a->allow_unsafe_globals = true; return 0;
    case OPT_QUANT: a->gguf.quant = arg; return 0;
    case OPT_ARCH: a->gguf.arch = arg; return 0;
    case OPT_THREADS: {
        char *end;
        long n = strtol(arg, &end, 10);
        if (*end || end == arg || n < 1 || n > 256)
            return cli_usage_error(usage, "convert: --threads takes 1..256");
        a->gguf.threads = (unsigned)n;
        return 0;
    }
    case OPT_FORMAT:
        if (strcmp(arg, "gguf") == 0)
            a->gguf.to_gguf = true;
        else if (strcmp(arg, "safetensors") != 0)
            return cli_usage_error(usage, "convert: --format takes gguf or safetensors");
        return 0;
    case OPT_PAD:
        if (!cli_parse_pad(arg, &o->pad))
            return cli_usage_error(usage, "convert: --pad wants a size (4096, 64KiB, 1MB), got '%s'",
                                   arg);
        return 0;
    case OPT_DTYPE:
        if (!cli_parse_dtype(arg, &o->dtype))
            return cli_usage_error(usage, "convert: unknown or unsupported --dtype '%s'", arg);
        o->set_dtype = 1;
        return 0;
    case OPT_ONLY: a->selecting = true; ok = push_pattern(&a->only, &o->nonly, arg); break;
    case OPT_EXCLUDE: a->selecting = true; ok = push_pattern(&a->exclude, &o->nexclude, arg); break;
    case OPT_DROP: ok = push_pattern(&a->drop, &o->ndrop, arg); break;
    case OPT_EMA:
        if (strcmp(arg, "drop") == 0)
            o->ema = ST_EMA_DROP;
        else if (strcmp(arg, "only") == 0)
            o->ema = ST_EMA_ONLY;
        else
            return cli_usage_error(usage, "convert: --ema wants drop or only, got '%s'", arg);
        return 0;
    case OPT_TO:
        if (strcmp(arg, "single-file") == 0)
            a->layout = TO_SINGLE;
        else if (strcmp(arg, "diffusers") == 0)
            a->layout = TO_DIFFUSERS;
        else
            return cli_usage_error(usage, "convert: --to wants single-file or diffusers, got '%s'", arg);
        return 0;
    case OPT_SATURATE:
        a->selecting = true;
        o->convert_flags |= ST_CONVERT_SATURATE;
        return 0;
    default: return cli_usage_error(usage, NULL);
    }
    if (!ok) {
        cli_errorf("nomem: out of memory");
        return 1;
    }
    return 0;
}

static void print_report(const st_convert_file_options *o, const st_convert_file_report *r,
                         const char *out_path)
{
    char a[32], b[32];
    if (o->ema == ST_EMA_ONLY)
        printf("ema: %zu model.* weight%s replaced by their EMA; ", r->ema_used,
               r->ema_used == 1 ? "" : "s");
    if (o->ema != ST_EMA_KEEP)
        printf("%zu model_ema.* tensor%s left out\n", r->ema_dropped,
               r->ema_dropped == 1 ? "" : "s");
    if (o->ndrop)
        printf("dropped %zu tensor%s matching --drop\n", r->dropped, r->dropped == 1 ? "" : "s");
    if (o->set_dtype) {
        /* what changed: "converted 64 tensors to F16 (60 F32, 4 BF16)" */
        printf("converted %zu tensor%s to %s", r->converted, r->converted == 1 ? "" : "s",
               st_dtype_name(o->dtype));
        const char *sep = " (";
        for (int d = 0; d < ST_DTYPE_COUNT; d++)
            if (r->from_count[d]) {
                printf("%s%zu %s", sep, r->from_count[d], st_dtype_name((st_dtype)d));
                sep = ", ";
            }
        printf("%s", r->converted ? ")" : "");
        printf("; %zu kept as they were", r->kept);
        if (r->already)
            printf(" (%zu already %s)", r->already, st_dtype_name(o->dtype));
        printf("\n");
        printf("size: %s -> ", cli_human_size(r->input_size, a, sizeof a));
        printf("%s", cli_human_size(r->output_size, b, sizeof b));
        if (r->input_size)
            printf(" (%+.1f%%)", ((double)r->output_size - (double)r->input_size) * 100.0 /
                                     (double)r->input_size);
        printf("\n");
    }
    char *p = cli_printable(out_path, strlen(out_path));
    printf("wrote %s: %zu tensor%s, %zu metadata key%s, %s (%s bytes)\n", p ? p : "?",
           r->written, r->written == 1 ? "" : "s", r->metadata, r->metadata == 1 ? "" : "s",
           cli_human_size(r->output_size, a, sizeof a), cli_grouped(r->output_size, b, sizeof b));
    free(p);
}

/* --to: between a single SD1.x/SDXL file and a diffusers folder (lib/model/). */
static int convert_layout(convert_args *a, const cli_common *common, const char *in_path,
                          const char *out_path)
{
    const st_convert_file_options *o = &a->opt;
    if (o->set_dtype || o->ema != ST_EMA_KEEP || o->ndrop || o->pad) {
        cli_errorf("unsupported: --to does not combine with --dtype, --ema, --drop or --pad; "
                   "run them as separate steps");
        return CLI_EXIT_ERROR;
    }
    st_error err;
    int rc;
    cli_progress *line = cli_progress_new("convert", common);
    st_output_hooks hooks = cli_output_hooks(line);
    if (a->layout == TO_SINGLE) {
        rc = st_diffusers_to_single_variant(in_path, common->variant, out_path, &hooks, &err);
        cli_progress_done(line);
        if (rc) {
            cli_print_error(in_path, &err);
            return cli_exit_code(rc);
        }
        return CLI_EXIT_OK;
    }
    st_model *m = NULL;
    rc = cli_open_model_variant(in_path, common->variant, &m);
    if (rc != CLI_EXIT_OK) {
        cli_progress_done(line);
        return rc;
    }
    /* v-prediction is not in the weights' names: identify's verdict
     * (markers in keys or metadata, ComfyUI's SD2 test) goes into the
     * scheduler config */
    unsigned flags = 0;
    st_identity *id = calloc(1, sizeof *id);
    st_error iderr;
    memset(&iderr, 0, sizeof iderr);
    if (id && cli_identify_model(m, id, &iderr) == ST_OK && (id->variants & ST_VARIANT_V_PREDICTION))
        flags |= ST_DIFFUSERS_V_PREDICTION;
    free(id);
    size_t left = 0;
    rc = st_single_to_diffusers(m, out_path, flags, &hooks, &left, &err);
    cli_progress_done(line);
    st_model_close(m);
    if (rc) {
        cli_print_error(in_path, &err);
        return cli_exit_code(rc);
    }
    if (flags & ST_DIFFUSERS_V_PREDICTION)
        printf("v-prediction: the scheduler's prediction_type is v_prediction\n");
    if (left)
        printf("left out %zu buffer%s diffusers does not keep (noise schedule, EMA counters, "
               "OpenCLIP logit_scale)\n",
               left, left == 1 ? "" : "s");
    return CLI_EXIT_OK;
}

/* A sharded model (index or folder) with nothing to change: joined into
 * one canonical file (the shards' bytes moved by the kernel), which is what
 * st_convert_file writes for the same tensors and metadata. */
static int convert_model(const cli_common *common, const char *in_path, const char *out_path)
{
    st_model *m = NULL;
    int rc = cli_open_model_variant(in_path, common->variant, &m);
    if (rc != CLI_EXIT_OK)
        return rc;
    for (size_t i = 0; i < st_model_shard_count(m); i++) {
        if (cli_same_file(st_model_shard_path(m, i), out_path)) {
            st_model_close(m);
            cli_errorf("%s: invalid_argument: OUT is a shard of the input (IN is never overwritten)",
                       out_path);
            return CLI_EXIT_ERROR;
        }
    }
    cli_progress *line = cli_progress_new("convert", common);
    st_output_hooks hooks = cli_output_hooks(line);
    st_error err;
    rc = st_model_join(m, out_path, &hooks, &err);
    cli_progress_done(line);
    st_model_close(m);
    if (rc) {
        cli_print_error(out_path, &err);
        return CLI_EXIT_ERROR;
    }
    return CLI_EXIT_OK;
}

static int run(convert_args *a, const cli_common *common, const char *in_path,
               const char *out_path)
{
    st_convert_file_options *o = &a->opt;
    bool to_gguf = a->gguf.to_gguf || gguf_path(out_path);
    if (!to_gguf && (a->gguf.quant || a->gguf.arch || a->gguf.threads)) {
        cli_errorf("invalid_argument: --quant, --arch and --threads write GGUF: name OUT *.gguf "
                   "or add --format gguf");
        return CLI_EXIT_ERROR;
    }
    if (to_gguf) {
        if (o->set_dtype || o->ema != ST_EMA_KEEP || o->ndrop || o->pad || a->layout != TO_SAME ||
            common->variant) {
            cli_errorf("unsupported: a GGUF output takes --quant, --arch and --threads only");
            return CLI_EXIT_ERROR;
        }
        return convert_to_gguf(in_path, out_path, &a->gguf, common);
    }
    if (common->variant && !cli_is_model_path(in_path) && access(in_path, F_OK) == 0) {
        cli_errorf("invalid_argument: --variant chooses the weight files of a folder; IN is not one");
        return CLI_EXIT_ERROR;
    }
    if (a->layout != TO_SAME)
        return convert_layout(a, common, in_path, out_path);
    if (gguf_is_file(in_path)) {
        if (o->ema != ST_EMA_KEEP || o->ndrop || o->pad || a->selecting) {
            cli_errorf("unsupported: a GGUF input takes --dtype only (f32, f16, bf16)");
            return CLI_EXIT_ERROR;
        }
        return convert_from_gguf(in_path, out_path, o->dtype, o->set_dtype != 0, common);
    }
    bool model = cli_is_model_path(in_path);
    if (model && !o->set_dtype && o->ema == ST_EMA_KEEP && !o->ndrop && !o->pad)
        return convert_model(common, in_path, out_path);
    /* Pickle-based checkpoints go to programs/convert_ckpt.c. */
    st_format fmt = ST_FORMAT_UNKNOWN;
    if (!model && st_ckpt_detect(in_path, &fmt, NULL) == ST_OK && fmt != ST_FORMAT_SAFETENSORS &&
        fmt != ST_FORMAT_UNKNOWN) {
        if (o->set_dtype || o->ema != ST_EMA_KEEP || o->ndrop) {
            cli_errorf("unsupported: --dtype, --ema and --drop work on safetensors input; "
                       "convert the checkpoint first, then that file");
            return CLI_EXIT_ERROR;
        }
        return convert_ckpt(in_path, out_path, a->allow_unsafe_globals, o->pad, common);
    }
    o->only = a->only;
    o->exclude = a->exclude;
    o->drop = a->drop;
    o->variant = common->variant;
    cli_progress *line = cli_progress_new("convert", common);
    o->hooks = cli_output_hooks(line);
    st_convert_file_report rep;
    st_error err;
    memset(&err, 0, sizeof err);
    int rc = st_convert_file(in_path, out_path, o, &rep, &err);
    cli_progress_done(line);
    if (rc != ST_OK) {
        /* IN valid but failing later (a read of IN that changed underneath,
         * the write of OUT) is an I/O error: exit 2. */
        int code = cli_report(rep.failed_input == 0 ? in_path : NULL, rc, &err);
        return rep.failed_input == 0 && rep.written == 0 ? code : CLI_EXIT_ERROR;
    }
    print_report(o, &rep, out_path);
    return CLI_EXIT_OK;
}

int cmd_convert(int argc, char **argv)
{
    static const struct option opts[] = {
        {"dtype", required_argument, NULL, OPT_DTYPE},
        {"only", required_argument, NULL, OPT_ONLY},
        {"exclude", required_argument, NULL, OPT_EXCLUDE},
        {"saturate", no_argument, NULL, OPT_SATURATE},
        {"ema", required_argument, NULL, OPT_EMA},
        {"drop", required_argument, NULL, OPT_DROP},
        {"allow-unsafe-globals", no_argument, NULL, OPT_UNSAFE},
        {"to", required_argument, NULL, OPT_TO},
        {"pad", required_argument, NULL, OPT_PAD},
        {"quant", required_argument, NULL, OPT_QUANT},
        {"arch", required_argument, NULL, OPT_ARCH},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"format", required_argument, NULL, OPT_FORMAT},
        {NULL, 0, NULL, 0},
    };
    static const cli_command cmd = {usage, CLI_OPT_PROGRESS | CLI_OPT_VARIANT, opts, NULL, on_option,
                                    false};
    convert_args a;
    memset(&a, 0, sizeof a);
    cli_common common;
    int ret = cli_parse_options(argc, argv, &cmd, &common, &a);
    if (ret < 0 && a.selecting && !a.opt.set_dtype)
        ret = cli_usage_error(usage, "convert: --only, --exclude and --saturate need --dtype");
    if (ret < 0 && argc - common.first_arg != 2)
        ret = cli_usage_error(usage, "convert: expected IN and OUT");
    if (ret < 0)
        ret = run(&a, &common, argv[common.first_arg], argv[common.first_arg + 1]);
    free(a.only);
    free(a.exclude);
    free(a.drop);
    return ret;
}
