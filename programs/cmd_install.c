/* `safetensors install`: puts a model file where a UI looks for files of
 * its kind, with its sidecar files. The plan and the all-or-nothing
 * execution are library calls (st_install_*, lib/sd/install.c); this file
 * parses options and prints. */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char usage[] =
    "Usage: " CLI_NAME " install FILE --ui UI --root DIR [--copy | --move | --link]\n"
    "                   [--as KIND] [--dry-run]\n"
    "\n"
    "Put a model where a UI looks for its kind, as `identify` tells it:\n"
    "  a1111    checkpoint: models/Stable-diffusion, lora: models/Lora,\n"
    "           vae: models/VAE, embedding: embeddings,\n"
    "           controlnet: models/ControlNet\n"
    "  forge    as a1111, and diffusion_model: models/Stable-diffusion,\n"
    "           text_encoder: models/text_encoder\n"
    "  comfyui  models/ + checkpoints, diffusion_models, text_encoders, vae,\n"
    "           loras, embeddings, controlnet\n"
    "  sdnext   models/ + Stable-diffusion, UNET, Text-encoder, VAE, Lora,\n"
    "           embeddings, control/controlnet\n"
    "Sidecar files next to FILE with the same stem go along: .yaml, .json,\n"
    ".civitai.info, .preview.png, .preview.jpg, .preview.jpeg, .preview.webp.\n"
    "FILE must pass `check`. Nothing is overwritten: if a destination exists,\n"
    "nothing is done. Missing folders under DIR are created.\n"
    "\n"
    "Options:\n"
    "  --ui UI       a1111, forge, comfyui or sdnext\n"
    "  --root DIR    the UI's installation folder (must exist)\n"
    "  --copy        copy (default): temporary file, fsync, rename\n"
    "  --move        move (a rename on the same file system, else copy+delete)\n"
    "  --link        symbolic links to the files' absolute paths (the files\n"
    "                stay where they are; works across file systems)\n"
    "  --as KIND     install as KIND instead of what identify says\n"
    "  -n, --dry-run say what would be done, change nothing\n"
    "  --progress    a progress line on stderr even when it is not a terminal\n"
    "  -q, --quiet   no progress line\n"
    "  -h, --help    show this help\n"
    "\n"
    "Exit status: 0 success, 1 FILE is not a valid safetensors file, 2 usage\n"
    "or I/O error, unknown kind, or a destination exists.\n";

enum { OPT_UI = 256, OPT_ROOT, OPT_COPY, OPT_MOVE, OPT_LINK, OPT_AS };

typedef struct install_args {
    int ui;
    const char *root;
    int method;
    int methods;
    bool dry_run;
    st_model_kind kind; /* ST_KIND_UNKNOWN: identify */
} install_args;

static int on_option(void *ctx, int c, const char *arg)
{
    install_args *a = ctx;
    switch (c) {
    case 'n': a->dry_run = true; return 0;
    case OPT_UI:
        if (st_ui_from_name(arg, &a->ui) != ST_OK)
            return cli_usage_error(usage, "install: --ui wants a1111, forge, comfyui or sdnext, "
                                          "got '%s'",
                                   arg);
        return 0;
    case OPT_ROOT: a->root = arg; return 0;
    case OPT_COPY: a->method = ST_INSTALL_COPY; a->methods++; return 0;
    case OPT_MOVE: a->method = ST_INSTALL_MOVE; a->methods++; return 0;
    case OPT_LINK: a->method = ST_INSTALL_LINK; a->methods++; return 0;
    case OPT_AS:
        if (st_install_kind_from_name(arg, &a->kind) != ST_OK)
            return cli_usage_error(usage, "install: --as wants checkpoint, diffusion_model, vae, "
                                          "text_encoder, lora, embedding or controlnet, got '%s'",
                                   arg);
        return 0;
    default: return cli_usage_error(usage, NULL);
    }
}

static void say_path(const char *prefix, const char *p)
{
    char *q = cli_printable(p, strlen(p));
    printf("%s%s", prefix, q ? q : "?");
    free(q);
}

static void say_items(const st_install_plan *plan, const char *verb)
{
    for (size_t i = 0; i < st_install_plan_count(plan); i++) {
        const st_install_item *it = st_install_plan_item(plan, i);
        printf("%s ", verb);
        say_path("", it->src);
        say_path(" -> ", it->dst);
        putchar('\n');
    }
}

static int run(const install_args *a, const char *file, const cli_common *common)
{
    static const char *const verbs[] = {"would copy", "would move", "would link"};
    static const char *const done_verbs[] = {"copied", "moved", "linked"};
    st_install_plan *plan = NULL;
    st_error err;
    memset(&err, 0, sizeof err);
    int rc = st_install_plan_new(file, a->ui, a->root, a->kind, &plan, &err);
    if (rc != ST_OK) {
        int code = cli_report(file, rc, &err);
        if (cli_is_validation_code(rc))
            cli_errorf("%s: not installed (the file fails `check`)", file);
        return code;
    }
    int ret = CLI_EXIT_ERROR;
    /* Every destination first: all or nothing. */
    bool clash = false;
    for (size_t i = 0; i < st_install_plan_count(plan); i++) {
        const st_install_item *it = st_install_plan_item(plan, i);
        if (it->exists) {
            char *p = cli_printable(it->dst, strlen(it->dst));
            cli_errorf("%s exists", p ? p : "?");
            free(p);
            clash = true;
        }
    }
    if (clash) {
        cli_errorf("nothing installed (files are never overwritten)");
        goto done;
    }
    st_model_kind kind = st_install_plan_kind(plan);
    const st_identity *id = st_install_plan_identity(plan);
    printf("%s (%s", file, st_kind_name(kind));
    if (a->kind == ST_KIND_UNKNOWN && id->family != ST_FAMILY_UNKNOWN)
        printf(", %s", st_family_name(id->family));
    printf(") -> %s\n", st_ui_name(a->ui));
    if (a->dry_run) {
        struct stat st;
        if (lstat(st_install_plan_dir(plan), &st) != 0) {
            say_path("would create ", st_install_plan_dir(plan));
            putchar('\n');
        }
        say_items(plan, verbs[a->method]);
        ret = CLI_EXIT_OK;
        goto done;
    }
    cli_progress *line = cli_progress_new("install", common);
    st_output_hooks hooks = cli_output_hooks(line);
    st_install_plan_set_hooks(plan, &hooks);
    rc = st_install_execute(plan, a->method, &err);
    cli_progress_done(line);
    if (rc != ST_OK) {
        ret = cli_report(NULL, rc, &err);
        goto done;
    }
    say_items(plan, done_verbs[a->method]);
    ret = CLI_EXIT_OK;
done:
    st_install_plan_free(plan);
    return ret;
}

int cmd_install(int argc, char **argv)
{
    static const struct option opts[] = {
        {"ui", required_argument, NULL, OPT_UI},
        {"root", required_argument, NULL, OPT_ROOT},
        {"copy", no_argument, NULL, OPT_COPY},
        {"move", no_argument, NULL, OPT_MOVE},
        {"link", no_argument, NULL, OPT_LINK},
        {"as", required_argument, NULL, OPT_AS},
        {"dry-run", no_argument, NULL, 'n'},
        {NULL, 0, NULL, 0},
    };
    static const cli_command cmd = {usage, CLI_OPT_PROGRESS, opts, "n", on_option, false};
    install_args a;
    memset(&a, 0, sizeof a);
    a.ui = -1;
    a.method = ST_INSTALL_COPY;
    cli_common common;
    int ret = cli_parse_options(argc, argv, &cmd, &common, &a);
    if (ret >= 0)
        return ret;
    if (argc - common.first_arg != 1)
        return cli_usage_error(usage, "install: expected one FILE");
    if (a.ui < 0 || !a.root)
        return cli_usage_error(usage, "install: --ui and --root are required");
    if (a.methods > 1)
        return cli_usage_error(usage, "install: choose one of --copy, --move, --link");
    return run(&a, argv[common.first_arg], &common);
}
