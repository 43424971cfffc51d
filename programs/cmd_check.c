/* `safetensors check`: validates files with the library's strict reader. */
#include "cli.h"
#include "convert_gguf.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "Usage: " CLI_NAME " check [--json] [--pread] [--variant NAME] FILE...\n"
    "\n"
    "Validate each FILE: framing, header JSON, schema, duplicate keys, tensor\n"
    "offsets and sizes, and that the data ends exactly at the end of the file.\n"
    "Prints 'FILE: OK (N tensors)' or 'FILE: CODE: message' per file.\n"
    "A FILE that is an index (*.json) or a folder is checked as a sharded\n"
    "model: the index, every shard, and that they agree.\n"
    "\n"
    "Options:\n"
    "  --json    one JSON object per line and file:\n"
    "            {\"file\", \"valid\", \"error\", \"message\", \"tensors\"}\n"
    "  --pread   read with pread instead of mapping the file\n"
    "  --variant NAME  a folder's weight variant NAME (fp16, ema, non_ema,\n"
    "            ...) instead of its plain weights, as diffusers picks it\n"
    "  -h, --help  show this help\n"
    "\n"
    "Exit status: 0 all valid, 1 any invalid, 2 usage error or a file that\n"
    "cannot be read (code \"io\").\n";

/* One file's verdict, printed as text or as a JSON line. */
static int check_one(const char *path, unsigned flags, bool json, const char *variant)
{
    st_file *f = NULL;
    st_error err;
    memset(&err, 0, sizeof err);
    size_t ntensors = 0;
    int rc;
    if (gguf_is_file(path)) {
        rc = gguf_check(path, &ntensors, &err);
    } else if (cli_is_model_path(path)) {
        st_model *m = NULL;
        rc = st_model_open_variant(path, variant, 0, &m, &err);
        ntensors = st_model_tensor_count(m);
        st_model_close(m);
    } else {
        rc = st_open(path, flags, &f, &err);
        ntensors = rc == ST_OK ? st_tensor_count(f) : 0;
        st_close(f);
    }

    char msg[ST_ERROR_MESSAGE_MAX + 64];
    if (rc != ST_OK) {
        if (err.code == ST_OK)
            err.code = rc;
        cli_error_message(&err, msg, sizeof msg);
    }
    if (json) {
        fputs("{\"file\": ", stdout);
        cli_json_string(stdout, path, strlen(path));
        fprintf(stdout, ", \"valid\": %s, \"error\": ", rc == ST_OK ? "true" : "false");
        if (rc == ST_OK) {
            fputs("null, \"message\": null, \"tensors\": ", stdout);
            cli_json_u64(stdout, ntensors);
        } else {
            cli_json_cstr(stdout, st_code_name(err.code));
            fputs(", \"message\": ", stdout);
            cli_json_cstr(stdout, msg);
            fputs(", \"tensors\": null", stdout);
        }
        fputs("}\n", stdout);
        /* A file that could not be read is an error of this run, not a
         * verdict: it is also said on stderr. */
        if (rc != ST_OK && !cli_is_validation_code(err.code))
            cli_print_error(path, &err);
    } else if (rc == ST_OK) {
        char *p = cli_printable(path, strlen(path));
        printf("%s: OK (%zu tensor%s)\n", p ? p : "?", ntensors, ntensors == 1 ? "" : "s");
        free(p);
    } else if (cli_is_validation_code(err.code)) {
        char *p = cli_printable(path, strlen(path));
        char *m = cli_printable_message(msg);
        printf("%s: %s: %s\n", p ? p : "?", st_code_name(err.code), m ? m : "?");
        free(p);
        free(m);
    } else {
        cli_print_error(path, &err);
    }
    /* Flush per file so a long run shows progress and lines interleave
     * correctly with stderr. */
    fflush(stdout);
    return cli_exit_code(rc == ST_OK ? ST_OK : err.code);
}

static int on_option(void *ctx, int c, const char *arg)
{
    (void)arg;
    if (c != 'p')
        return cli_usage_error(usage, NULL);
    *(unsigned *)ctx = ST_OPEN_PREAD;
    return 0;
}

int cmd_check(int argc, char **argv)
{
    static const struct option opts[] = {
        {"pread", no_argument, NULL, 'p'},
        {NULL, 0, NULL, 0},
    };
    static const cli_command cmd = {usage, CLI_OPT_JSON | CLI_OPT_VARIANT, opts, NULL, on_option, false};
    unsigned flags = ST_OPEN_MMAP;
    cli_common common;
    int ret = cli_parse_options(argc, argv, &cmd, &common, &flags);
    if (ret >= 0)
        return ret;
    if (common.first_arg >= argc)
        return cli_usage_error(usage, "check: no FILE given");
    /* Worst outcome wins: an I/O error (2) outranks an invalid file (1). */
    int worst = CLI_EXIT_OK;
    for (int i = common.first_arg; i < argc; i++) {
        int rc = check_one(argv[i], flags, common.json, common.variant);
        if (rc > worst)
            worst = rc;
    }
    return worst;
}
