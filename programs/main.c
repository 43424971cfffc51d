/* `safetensors`: the command-line tool. Dispatches to one function per
 * command; to add a command, write programs/cmd_NAME.c with
 * `int cmd_NAME(int argc, char **argv)`, declare it in cli.h and add a row
 * to the table below. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary; /* one line, shown by `safetensors --help` */
} command;

static const command commands[] = {
    {"check", cmd_check, "validate files (exit 1 if any is invalid)"},
    {"info", cmd_info, "sizes, parameter counts, dtypes and metadata of a file"},
    {"ls", cmd_ls, "list the tensors of a file: name, dtype, shape, size"},
    {"convert", cmd_convert, "rewrite a file in the canonical layout"},
    {"hash", cmd_hash, "sha256, autov1-3, crc32, blake3 of files (Civitai's hashes)"},
    {"meta", cmd_meta, "show or edit metadata (--set, --unset, --set-json)"},
    {"diff", cmd_diff, "compare two files: tensors, dtypes, shapes, values, metadata"},
    {"merge", cmd_merge, "merge checkpoints as A1111 does (weighted sum, add difference)"},
    {"install", cmd_install, "place a model where a UI looks for it (A1111, ComfyUI, ...)"},
    {"identify", cmd_identify, "what a model file is: kind, family, variant, format"},
    {"scan", cmd_scan, "list what pickles (.ckpt .pt .bin) would run; nothing is run"},
    {"split", cmd_split, "write a model as shards + index.json (transformers' layout)"},
    {"join", cmd_join, "write a sharded model (index.json or folder) as one file"},
    {"lora", cmd_lora, "bake LoRAs into a model, extract one from a fine-tune, resize one"},
};

#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: " CLI_NAME " COMMAND [OPTIONS] [ARGS]\n"
            "       " CLI_NAME " help COMMAND\n"
            "       " CLI_NAME " --help | --version\n"
            "\n"
            "Inspect, validate and rewrite safetensors files.\n"
            "\n"
            "Commands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out,
            "\n"
            "Run '" CLI_NAME " COMMAND --help' for a command's options.\n"
            "Exit status (every command, every input format):\n"
            "  0  success\n"
            "  1  an input file is invalid (safetensors or checkpoint: malformed,\n"
            "     over a limit, refused as unsafe); scan: dangerous; diff: differ\n"
            "  2  usage or I/O error, out of memory, unsupported operation\n");
}

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

/* Runs a command with argv[0] set to "safetensors NAME", so that getopt's
 * messages ("safetensors ls: unrecognized option ...") name it. */
static int run_command(const command *cmd, int argc, char **argv)
{
    char prog[64];
    snprintf(prog, sizeof prog, CLI_NAME " %s", cmd->name);
    char *saved = argv[0];
    argv[0] = prog;
    cli_getopt_reset();
    int rc = cmd->run(argc, argv);
    argv[0] = saved;
    return rc;
}

int main(int argc, char **argv)
{
    cli_signals_init();
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_ERROR;
    }
    const char *arg = argv[1];
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
        usage(stdout);
        return cli_finish_stdout(CLI_EXIT_OK);
    }
    if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0) {
        printf(CLI_NAME " %s (libsafetensors %s)\n", ST_VERSION_STRING, st_version());
        return cli_finish_stdout(CLI_EXIT_OK);
    }
    if (strcmp(arg, "help") == 0) {
        if (argc == 2) {
            usage(stdout);
            return cli_finish_stdout(CLI_EXIT_OK);
        }
        const command *cmd = find_command(argv[2]);
        if (!cmd || argc > 3) {
            if (!cmd)
                cli_errorf("unknown command '%s'", argv[2]);
            else
                cli_errorf("help takes one command name");
            usage(stderr);
            return CLI_EXIT_ERROR;
        }
        char *help_argv[] = {argv[2], (char *)"--help", NULL};
        return cli_finish_stdout(run_command(cmd, 2, help_argv));
    }
    const command *cmd = find_command(arg);
    if (!cmd) {
        if (arg[0] == '-')
            cli_errorf("unknown option '%s'", arg);
        else
            cli_errorf("unknown command '%s'", arg);
        usage(stderr);
        return CLI_EXIT_ERROR;
    }
    return cli_finish_stdout(run_command(cmd, argc - 1, argv + 1));
}
