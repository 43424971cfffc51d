/* `safetensors meta`: show and edit a file's "__metadata__". Edits are
 * written with the library's writer (temporary file, fsync, rename), the
 * tensors streamed from the input, so a file of any size needs a fixed
 * amount of memory and the input is never modified (--in-place replaces
 * it atomically, only once the new file is complete). */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "Usage: " CLI_NAME " meta [--json] FILE\n"
    "       " CLI_NAME " meta FILE [--set K=V]... [--unset K]... [--set-json JSON]...\n"
    "                   (-o OUT | --in-place) [--pad SIZE]\n"
    "\n"
    "Print the metadata of FILE, one \"key: value\" per pair in key order. Values\n"
    "that are JSON objects or arrays (kohya's ss_tag_frequency and\n"
    "ss_dataset_dirs, modelspec.*, sd_merge_recipe ...) are pretty-printed.\n"
    "With edits, write a copy of FILE with the changed metadata to OUT, or\n"
    "replace FILE (--in-place); edits apply in command-line order. The output\n"
    "is written to a temporary file, synced, then renamed: a failed run leaves\n"
    "no OUT and an untouched FILE. When the new header fits in FILE's header\n"
    "(files written with --pad have room) the header keeps its size and no\n"
    "tensor byte moves: on XFS and btrfs the output shares FILE's data (a\n"
    "clone) and only the header is written, in milliseconds whatever the size.\n"
    "\n"
    "Options:\n"
    "  --json          print the metadata as one JSON object of strings ({}\n"
    "                  when there is none); --set-json reads this format\n"
    "  --set K=V       set key K to the string V (split at the first '=')\n"
    "  --unset K       remove key K (no error when it is absent)\n"
    "  --set-json F    set every pair of F, a JSON object of string values\n"
    "  -o, --output OUT  write the result to OUT (OUT may not be FILE)\n"
    "  --in-place      replace FILE with the result (atomic rename)\n"
    "  --pad SIZE      keep SIZE spare bytes (spaces) after the header JSON for\n"
    "                  later edits (4096, 64KiB, 1MB): valid, not canonical\n"
    "  -q, --quiet     no progress line (shown when stderr is a terminal)\n"
    "  --progress      a progress line even when stderr is not a terminal\n"
    "  -h, --help      show this help\n"
    "\n"
    "Exit status: 0 success, 1 invalid FILE, 2 usage or I/O error.\n";

typedef enum op_kind { OP_SET, OP_UNSET } op_kind;

/* One metadata change, or one pair of the input (seq 0). */
typedef struct meta_op {
    op_kind kind;
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
    size_t seq; /* order of application */
} meta_op;

typedef struct meta_ops {
    meta_op *v;
    size_t n, cap;
    char **owned; /* strings decoded from --set-json files */
    size_t nowned, capowned;
    size_t seq;
} meta_ops;

static bool push_op(meta_ops *ops, op_kind kind, const char *k, size_t kl, const char *v,
                    size_t vl)
{
    if (ops->n == ops->cap) {
        size_t cap = ops->cap ? ops->cap * 2 : 16;
        meta_op *nv = realloc(ops->v, cap * sizeof *nv);
        if (!nv)
            return false;
        ops->v = nv;
        ops->cap = cap;
    }
    ops->v[ops->n++] = (meta_op){kind, k, kl, v, vl, ++ops->seq};
    return true;
}

static bool own(meta_ops *ops, char *s)
{
    if (ops->nowned == ops->capowned) {
        size_t cap = ops->capowned ? ops->capowned * 2 : 16;
        char **nv = realloc(ops->owned, cap * sizeof *nv);
        if (!nv)
            return false;
        ops->owned = nv;
        ops->capowned = cap;
    }
    ops->owned[ops->nowned++] = s;
    return true;
}

static void free_ops(meta_ops *ops)
{
    for (size_t i = 0; i < ops->nowned; i++)
        free(ops->owned[i]);
    free(ops->owned);
    free(ops->v);
}

/* Reads a whole (small) file; JSON metadata is bounded by the header
 * limit, so anything larger is refused. */
static char *read_small_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        cli_errorf("io: %s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n == cap) {
            if (cap >= ST_MAX_HEADER_SIZE) {
                cli_errorf("invalid_argument: %s: larger than a header may be", path);
                free(buf);
                buf = NULL;
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) {
                cli_errorf("io: %s: read error", path);
                free(buf);
                buf = NULL;
            }
            break;
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

/* Adds one OP_SET per pair of a --set-json file. Returns an exit code. */
static int load_set_json(meta_ops *ops, const char *path)
{
    size_t n;
    char *text = read_small_file(path, &n);
    if (!text)
        return CLI_EXIT_ERROR;
    if (!own(ops, text)) {
        free(text);
        cli_errorf("nomem: out of memory");
        return CLI_EXIT_ERROR;
    }
    size_t i = 0;
    while (i < n && (text[i] == ' ' || text[i] == '\n' || text[i] == '\t' || text[i] == '\r'))
        i++;
    if (!st_jv_valid(text, n) || i >= n || text[i] != '{') {
        cli_errorf("invalid_argument: %s: not a JSON object", path);
        return CLI_EXIT_ERROR;
    }
    size_t pos = 0;
    st_span k, v;
    while (st_jv_object_next(text, n, &pos, &k, &v)) {
        if (v.s[0] != '"') {
            char *kp = cli_printable(k.s, k.n);
            cli_errorf("invalid_argument: %s: the value of %s is not a string (metadata "
                       "values are strings; put JSON in a string)",
                       path, kp ? kp : "?");
            free(kp);
            return CLI_EXIT_ERROR;
        }
        size_t kl, vl;
        char *kd = st_jv_string_decode(k.s, k.n, &kl);
        if (kd && !own(ops, kd)) {
            free(kd);
            kd = NULL;
        }
        char *vd = kd ? st_jv_string_decode(v.s, v.n, &vl) : NULL;
        if (vd && !own(ops, vd)) {
            free(vd);
            vd = NULL;
        }
        if (!kd || !vd || !push_op(ops, OP_SET, kd, kl, vd, vl)) {
            cli_errorf("nomem: out of memory");
            return CLI_EXIT_ERROR;
        }
    }
    return CLI_EXIT_OK;
}

/* Prints "key: value"; JSON containers pretty-printed, continuation lines
 * indented. Everything goes through the printable filters (a value is the
 * file author's text and may hold terminal escapes). */
static void print_pair(const char *k, size_t kl, const char *v, size_t vl)
{
    char *kp = cli_printable(k, kl);
    printf("%s:", kp ? kp : "?");
    free(kp);
    if (st_jv_is_container(v, vl)) {
        char *buf = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&buf, &len);
        if (m) {
            st_jv_pretty(m, v, vl, 0);
            fclose(m);
        }
        if (buf) {
            char *line = buf;
            bool first = true;
            for (;;) {
                char *nl = strchr(line, '\n');
                if (nl)
                    *nl = 0;
                char *lp = cli_printable_message(line);
                printf("%s%s\n", first ? " " : "  ", lp ? lp : "?");
                free(lp);
                first = false;
                if (!nl)
                    break;
                line = nl + 1;
            }
            free(buf);
            return;
        }
    }
    char *vp = cli_printable(v, vl);
    printf(" %s\n", vp ? vp : "?");
    free(vp);
}

static int show(const char *path, bool json)
{
    st_file *f;
    int rc = cli_open_file(path, ST_OPEN_PREAD, &f);
    if (rc != CLI_EXIT_OK)
        return rc;
    size_t n = st_metadata_count(f);
    if (json)
        putchar('{');
    else if (n == 0)
        printf("%s\n", st_metadata_present(f) ? "(empty metadata)" : "(no metadata)");
    for (size_t i = 0; i < n; i++) {
        const char *k, *v;
        size_t kl, vl;
        if (st_metadata_at(f, i, &k, &kl, &v, &vl) != ST_OK)
            continue;
        if (json) {
            fputs(i ? ",\n " : "\n ", stdout);
            cli_json_string(stdout, k, kl);
            fputs(": ", stdout);
            cli_json_string(stdout, v, vl);
        } else {
            print_pair(k, kl, v, vl);
        }
    }
    if (json)
        fputs(n ? "\n}\n" : "}\n", stdout);
    st_close(f);
    return CLI_EXIT_OK;
}

static int edit(const char *path, meta_ops *ops, const char *out_path, bool in_place,
                uint64_t pad, const cli_common *common)
{
    st_meta_change *ch = calloc(ops->n ? ops->n : 1, sizeof *ch);
    if (!ch) {
        cli_errorf("nomem: out of memory");
        return CLI_EXIT_ERROR;
    }
    for (size_t i = 0; i < ops->n; i++) {
        const meta_op *o = &ops->v[i];
        ch[i] = (st_meta_change){o->key, o->key_len, o->kind == OP_SET ? o->value : NULL,
                                 o->value_len};
    }
    st_meta_edit_options opt;
    memset(&opt, 0, sizeof opt);
    opt.in_place = in_place;
    opt.pad = pad;
    cli_progress *line = cli_progress_new("meta", common);
    opt.hooks = cli_output_hooks(line);
    st_meta_edit_report rep;
    st_error err;
    memset(&err, 0, sizeof err);
    int rc = st_metadata_edit(path, out_path, ch, ops->n, &opt, &rep, &err);
    cli_progress_done(line);
    free(ch);
    if (rc != ST_OK)
        return rep.failed_input == 0 ? cli_report(path, rc, &err)
                                     : (cli_report(in_place ? path : out_path, rc, &err),
                                        CLI_EXIT_ERROR);
    const char *shown = in_place ? path : out_path;
    char *p = cli_printable(shown, strlen(shown));
    printf("wrote %s: %zu metadata key%s (%zu set, %zu removed, %zu unchanged)\n", p ? p : "?",
           rep.set + rep.kept, rep.set + rep.kept == 1 ? "" : "s", rep.set, rep.removed,
           rep.kept);
    if (rep.header_only)
        printf("only the header was written: the tensors are shared with the input (cloned)\n");
    free(p);
    return CLI_EXIT_OK;
}

typedef struct meta_args {
    meta_ops ops;
    bool in_place;
    size_t nedits;
    uint64_t pad;
} meta_args;

enum { OPT_SET = 256, OPT_UNSET, OPT_SET_JSON, OPT_IN_PLACE, OPT_PAD };

static int on_option(void *ctx, int c, const char *arg)
{
    meta_args *a = ctx;
    switch (c) {
    case OPT_IN_PLACE: a->in_place = true; return 0;
    case OPT_PAD:
        if (!cli_parse_pad(arg, &a->pad))
            return cli_usage_error(usage, "meta: --pad wants a size (4096, 64KiB, 1MB), got '%s'",
                                   arg);
        return 0;
    case OPT_SET: {
        const char *eq = strchr(arg, '=');
        if (!eq)
            return cli_usage_error(usage, "meta: --set wants KEY=VALUE, got '%s'", arg);
        a->nedits++;
        if (!push_op(&a->ops, OP_SET, arg, (size_t)(eq - arg), eq + 1, strlen(eq + 1)))
            break;
        return 0;
    }
    case OPT_UNSET:
        a->nedits++;
        if (!push_op(&a->ops, OP_UNSET, arg, strlen(arg), NULL, 0))
            break;
        return 0;
    case OPT_SET_JSON:
        a->nedits++;
        return load_set_json(&a->ops, arg) == CLI_EXIT_OK ? 0 : 1;
    default: return cli_usage_error(usage, NULL);
    }
    cli_errorf("nomem: out of memory");
    return 1;
}

int cmd_meta(int argc, char **argv)
{
    static const struct option opts[] = {
        {"set", required_argument, NULL, OPT_SET},
        {"unset", required_argument, NULL, OPT_UNSET},
        {"set-json", required_argument, NULL, OPT_SET_JSON},
        {"in-place", no_argument, NULL, OPT_IN_PLACE},
        {"pad", required_argument, NULL, OPT_PAD},
        {NULL, 0, NULL, 0},
    };
    static const cli_command cmd = {usage, CLI_OPT_JSON | CLI_OPT_OUTPUT | CLI_OPT_PROGRESS, opts,
                                    NULL, on_option,
                                    false};
    meta_args a;
    memset(&a, 0, sizeof a);
    cli_common common;
    int ret = cli_parse_options(argc, argv, &cmd, &common, &a);
    const char *out = common.output;
    if (ret >= 0)
        goto done;
    if (argc - common.first_arg != 1)
        ret = cli_usage_error(usage, "meta: expected one FILE");
    else if (out && a.in_place)
        ret = cli_usage_error(usage, "meta: -o and --in-place exclude each other");
    else if (!out && !a.in_place)
        ret = a.nedits ? cli_usage_error(usage, "meta: edits need -o OUT or --in-place")
                       : show(argv[common.first_arg], common.json);
    else if (common.json)
        ret = cli_usage_error(usage, "meta: --json only applies to printing");
    else
        ret = edit(argv[common.first_arg], &a.ops, out, a.in_place, a.pad, &common);
done:
    free_ops(&a.ops);
    return ret;
}
