/* `safetensors identify`: what a Stable Diffusion file is (st_identify). */
#include "cli.h"
#include "convert_ckpt.h"
#include "convert_gguf.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "Usage: " CLI_NAME " identify [--json] [--variant NAME] FILE...\n"
    "\n"
    "Tell what each FILE is from its header alone (tensor names, shapes,\n"
    "dtypes, metadata), with the rules the UIs use (ComfyUI, A1111, kohya):\n"
    "  kind        checkpoint, diffusion_model, vae, text_encoder, lora,\n"
    "              embedding, controlnet or unknown\n"
    "  family      sd1, sd2, sdxl, sdxl_refiner, sd3, flux, stable_cascade;\n"
    "              clip_l, clip_g, t5xxl for text encoders; for adapters the\n"
    "              base model they fit\n"
    "  variant     inpainting, instruct_pix2pix, depth, dev, schnell, fill,\n"
    "              v_prediction\n"
    "  format      of a LoRA: kohya, lycoris_loha, lycoris_lokr, peft, diffusers\n"
    "  ema, precision (dominant float dtype), parameters per component,\n"
    "  confidence, and the reasons: the keys and shapes the verdict rests on.\n"
    "\n"
    "Options:\n"
    "  --json      one JSON object per line and file\n"
    "  --variant NAME  a folder's weight variant NAME (fp16, ema, non_ema,\n"
    "              ...) instead of its plain weights, as diffusers picks it\n"
    "  -h, --help  show this help\n"
    "\n"
    "Exit status: 0 success, 1 invalid file, 2 usage or I/O error.\n";

static const unsigned variant_bits[] = {
    ST_VARIANT_INPAINTING, ST_VARIANT_INSTRUCT_PIX2PIX, ST_VARIANT_DEPTH,       ST_VARIANT_DEV,
    ST_VARIANT_SCHNELL,    ST_VARIANT_FILL,             ST_VARIANT_V_PREDICTION,
};
#define NVARIANTS (sizeof variant_bits / sizeof variant_bits[0])

typedef struct component {
    const char *name;
    uint64_t value;
} component;

static size_t components(const st_identity *id, component out[6])
{
    const component all[6] = {
        {"diffusion_model", id->params.diffusion_model},
        {"text_encoder", id->params.text_encoder},
        {"vae", id->params.vae},
        {"ema", id->params.ema},
        {"controlnet", id->params.controlnet},
        {"other", id->params.other},
    };
    size_t n = 0;
    for (size_t i = 0; i < 6; i++)
        if (all[i].value)
            out[n++] = all[i];
    return n;
}

static void print_text(const char *path, const st_identity *id)
{
    char *p = cli_printable(path, strlen(path));
    printf("%s\n", p ? p : path);
    free(p);
    printf("  kind        %s", st_kind_name(id->kind));
    if (id->kind == ST_KIND_LORA)
        printf(" (%s)", st_lora_format_name(id->format));
    printf("\n  family      %s\n", st_family_name(id->family));
    printf("  variant     ");
    bool any = false;
    for (size_t i = 0; i < NVARIANTS; i++)
        if (id->variants & variant_bits[i]) {
            printf("%s%s", any ? ", " : "", st_variant_name(variant_bits[i]));
            any = true;
        }
    printf("%s\n", any ? "" : "-");
    printf("  ema         %s\n", id->ema ? "yes" : "no");
    printf("  precision   %s\n",
           id->precision >= 0 ? st_dtype_name((st_dtype)id->precision) : "-");
    char buf[32];
    printf("  parameters  %s", cli_human_count(id->params.total, buf, sizeof buf));
    component comp[6];
    size_t n = components(id, comp);
    for (size_t i = 0; i < n; i++)
        printf("%s%s %s", i ? ", " : " (", comp[i].name,
               cli_human_count(comp[i].value, buf, sizeof buf));
    printf("%s\n", n ? ")" : "");
    printf("  confidence  %s\n", st_confidence_name(id->confidence));
    printf("  reasons\n");
    for (size_t i = 0; i < id->reason_count; i++) {
        char *r = cli_printable(id->reasons[i], strlen(id->reasons[i]));
        printf("    - %s\n", r ? r : id->reasons[i]);
        free(r);
    }
}

static void print_json(const char *path, const st_identity *id)
{
    FILE *o = stdout;
    fputs("{\"file\": ", o);
    cli_json_string(o, path, strlen(path));
    fputs(", \"kind\": ", o);
    cli_json_cstr(o, st_kind_name(id->kind));
    fputs(", \"family\": ", o);
    cli_json_cstr(o, st_family_name(id->family));
    fputs(", \"variant\": [", o);
    bool any = false;
    for (size_t i = 0; i < NVARIANTS; i++)
        if (id->variants & variant_bits[i]) {
            if (any)
                fputs(", ", o);
            cli_json_cstr(o, st_variant_name(variant_bits[i]));
            any = true;
        }
    fputs("], \"format\": ", o);
    cli_json_cstr(o, id->kind == ST_KIND_LORA ? st_lora_format_name(id->format) : NULL);
    fputs(", \"ema\": ", o);
    fputs(id->ema ? "true" : "false", o);
    fputs(", \"precision\": ", o);
    cli_json_cstr(o, id->precision >= 0 ? st_dtype_name((st_dtype)id->precision) : NULL);
    fputs(", \"parameters\": {\"total\": ", o);
    cli_json_u64(o, id->params.total);
    component comp[6];
    size_t n = components(id, comp);
    for (size_t i = 0; i < n; i++) {
        fprintf(o, ", \"%s\": ", comp[i].name);
        cli_json_u64(o, comp[i].value);
    }
    fputs("}, \"confidence\": ", o);
    cli_json_cstr(o, st_confidence_name(id->confidence));
    fputs(", \"reasons\": [", o);
    for (size_t i = 0; i < id->reason_count; i++) {
        if (i)
            fputs(", ", o);
        cli_json_string(o, id->reasons[i], strlen(id->reasons[i]));
    }
    fputs("]}\n", o);
}

static void print_open_error(const char *path, st_error *err, int rc, bool json)
{
    if (err->code == ST_OK)
        err->code = rc;
    if (json) {
        char msg[ST_ERROR_MESSAGE_MAX + 64];
        fputs("{\"file\": ", stdout);
        cli_json_string(stdout, path, strlen(path));
        fputs(", \"error\": ", stdout);
        cli_json_cstr(stdout, st_code_name(err->code));
        fputs(", \"message\": ", stdout);
        cli_json_cstr(stdout, cli_error_message(err, msg, sizeof msg));
        fputs("}\n", stdout);
    }
    cli_print_error(path, err);
}

/* A sharded model: its whole tensor table and metadata, identified as one. */
static int identify_model(const char *path, const char *variant, st_identity *id, st_error *err)
{
    st_model *m = NULL;
    int rc = st_model_open_variant(path, variant, 0, &m, err);
    if (rc)
        return rc;
    rc = cli_identify_model(m, id, err);
    st_model_close(m);
    return rc;
}

static int identify_one(const char *path, bool json, const char *variant)
{
    st_error err;
    memset(&err, 0, sizeof err);
    st_identity *id = malloc(sizeof *id);
    if (!id) {
        cli_errorf("out of memory");
        return CLI_EXIT_ERROR;
    }
    int rc;
    if (gguf_is_file(path)) {
        rc = gguf_identify(path, id, &err);
    } else if (ckpt_is_pickle_file(path)) {
        /* PyTorch checkpoints: read by the inert pickle machine. */
        rc = ckpt_identify(path, id, &err);
    } else if (cli_is_model_path(path)) {
        rc = identify_model(path, variant, id, &err);
    } else {
        st_file *f = NULL;
        rc = st_open(path, ST_OPEN_PREAD, &f, &err);
        if (rc == ST_OK) {
            rc = st_identify(f, id, &err);
            st_close(f);
        }
    }
    if (rc == ST_OK) {
        if (json)
            print_json(path, id);
        else
            print_text(path, id);
    } else {
        print_open_error(path, &err, rc, json);
    }
    fflush(stdout);
    free(id);
    return rc == ST_OK ? CLI_EXIT_OK : cli_exit_code(rc);
}

int cmd_identify(int argc, char **argv)
{
    static const cli_command cmd = {usage, CLI_OPT_JSON | CLI_OPT_VARIANT, NULL, NULL, NULL, false};
    cli_common common;
    int ret = cli_parse_options(argc, argv, &cmd, &common, NULL);
    if (ret >= 0)
        return ret;
    bool json = common.json;
    int first = common.first_arg;
    if (first >= argc)
        return cli_usage_error(usage, "identify: no FILE given");
    int worst = CLI_EXIT_OK;
    for (int i = first; i < argc; i++) {
        int rc = identify_one(argv[i], json, common.variant);
        if (rc > worst)
            worst = rc;
    }
    return worst;
}
