/* One option parser for every command: the flags commands share (--help,
 * --json, --quiet, --progress, -o/--output, --variant) are handled here, the rest are
 * handed to the command's callback. Saves each command the getopt_long
 * boilerplate and keeps the shared flags spelled the same everywhere. */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

enum { OPT_JSON = 0x10000, OPT_PROGRESS, OPT_VARIANT };

static const struct option common_table[] = {
    {"help", no_argument, NULL, 'h'},
    {"json", no_argument, NULL, OPT_JSON},
    {"quiet", no_argument, NULL, 'q'},
    {"progress", no_argument, NULL, OPT_PROGRESS},
    {"output", required_argument, NULL, 'o'},
    {"variant", required_argument, NULL, OPT_VARIANT},
};

static bool wanted(int val, unsigned which)
{
    switch (val) {
    case 'h': return true;
    case OPT_JSON: return which & CLI_OPT_JSON;
    case 'q': case OPT_PROGRESS: return which & CLI_OPT_PROGRESS;
    case 'o': return which & CLI_OPT_OUTPUT;
    case OPT_VARIANT: return which & CLI_OPT_VARIANT;
    default: return false;
    }
}

int cli_parse_options(int argc, char **argv, const cli_command *cmd, cli_common *common,
                      void *ctx)
{
    memset(common, 0, sizeof *common);
    size_t nextra = 0;
    if (cmd->options)
        while (cmd->options[nextra].name)
            nextra++;
    size_t ncommon = sizeof common_table / sizeof common_table[0];
    struct option *table = calloc(nextra + ncommon + 1, sizeof *table);
    char shortopts[64];
    if (!table) {
        cli_errorf("nomem: out of memory");
        return CLI_EXIT_ERROR;
    }
    size_t n = 0;
    for (size_t i = 0; i < ncommon; i++)
        if (wanted(common_table[i].val, cmd->which))
            table[n++] = common_table[i];
    for (size_t i = 0; i < nextra; i++)
        table[n++] = cmd->options[i];
    snprintf(shortopts, sizeof shortopts, "+h%s%s%s", cmd->which & CLI_OPT_PROGRESS ? "q" : "",
             cmd->which & CLI_OPT_OUTPUT ? "o:" : "", cmd->shortopts ? cmd->shortopts : "");
    /* '+' keeps getopt from permuting only where a command asks for it. */
    const char *spec = cmd->in_order ? shortopts : shortopts + 1;
    int ret = -1, c;
    cli_getopt_reset();
    while (ret < 0 && (c = getopt_long(argc, argv, spec, table, NULL)) != -1) {
        switch (c) {
        case 'h': ret = cli_help(cmd->usage); break;
        case OPT_JSON: common->json = true; break;
        case 'q': common->quiet = true; common->progress = false; break;
        case OPT_PROGRESS: common->progress = true; common->quiet = false; break;
        case 'o': common->output = optarg; break;
        case OPT_VARIANT: common->variant = optarg; break;
        case '?': ret = cli_usage_error(cmd->usage, NULL); break;
        default:
            if (!cmd->on_option || cmd->on_option(ctx, c, optarg) != 0)
                ret = cmd->on_option ? CLI_EXIT_ERROR : cli_usage_error(cmd->usage, NULL);
        }
    }
    free(table);
    common->first_arg = optind;
    return ret;
}

int cli_report(const char *path, int rc, const st_error *err)
{
    st_error e = *err;
    if (e.code == ST_OK)
        e.code = rc;
    if (path) {
        cli_print_error(path, &e);
    } else {
        char msg[ST_ERROR_MESSAGE_MAX + 64];
        char *m = cli_printable_message(cli_error_message(&e, msg, sizeof msg));
        cli_errorf("%s: %s", st_code_name(e.code), m ? m : "?");
        free(m);
    }
    return cli_exit_code(e.code);
}
