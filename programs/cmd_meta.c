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
    "                   (-o OUT | --in-place)\n"
    "\n"
    "Print the metadata of FILE, one \"key: value\" per pair in key order. Values\n"
    "that are JSON objects or arrays (kohya's ss_tag_frequency and\n"
    "ss_dataset_dirs, modelspec.*, sd_merge_recipe ...) are pretty-printed.\n"
    "With edits, write a copy of FILE with the changed metadata to OUT, or\n"
    "replace FILE (--in-place); edits apply in command-line order. The output\n"
    "is written to a temporary file, synced, then renamed: a failed run leaves\n"
    "no OUT and an untouched FILE.\n"
    "\n"
    "Options:\n"
    "  --json          print the metadata as one JSON object of strings ({}\n"
    "                  when there is none); --set-json reads this format\n"
    "  --set K=V       set key K to the string V (split at the first '=')\n"
    "  --unset K       remove key K (no error when it is absent)\n"
    "  --set-json F    set every pair of F, a JSON object of string values\n"
    "  -o, --output OUT  write the result to OUT (OUT may not be FILE)\n"
    "  --in-place      replace FILE with the result (atomic rename)\n"
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

static bool same_key(const meta_op *x, const meta_op *y)
{
    return x->key_len == y->key_len && memcmp(x->key, y->key, x->key_len) == 0;
}

static int cmp_op(const void *a, const void *b)
{
    const meta_op *x = a, *y = b;
    size_t m = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->key, y->key, m);
    if (c)
        return c;
    if (x->key_len != y->key_len)
        return x->key_len < y->key_len ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
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

static int edit(const char *path, meta_ops *ops, const char *out_path, bool in_place)
{
    cli_input in = {.path = path};
    int rc = cli_open_file(path, ST_OPEN_PREAD, &in.file);
    if (rc != CLI_EXIT_OK)
        return rc;
    char *real = NULL;
    if (in_place) {
        /* Replace the file a symbolic link points to, not the link. */
        real = realpath(path, NULL);
        if (!real) {
            cli_errorf("io: %s: %s", path, strerror(errno));
            st_close(in.file);
            return CLI_EXIT_ERROR;
        }
        out_path = real;
    } else if (cli_same_file(path, out_path)) {
        cli_errorf("invalid_argument: OUT '%s' is the input file; use --in-place to "
                   "replace it",
                   out_path);
        st_close(in.file);
        return CLI_EXIT_ERROR;
    }
    int ret = CLI_EXIT_ERROR;
    size_t nt = st_tensor_count(in.file), nm = st_metadata_count(in.file);
    st_writer *w = st_writer_new();
    cli_copy_src *src = calloc(nt ? nt : 1, sizeof *src);
    st_error err;
    memset(&err, 0, sizeof err);
    if (!w || !src)
        goto nomem;
    for (size_t i = 0; i < nt; i++) {
        src[i].in = &in;
        src[i].t = st_tensor_at(in.file, i);
        const st_tensor *t = src[i].t;
        rc = st_writer_add_stream(w, t->name, t->name_len, t->dtype, t->shape, t->rank,
                                  st_tensor_nbytes(t), cli_copy_read, &src[i], &err);
        if (rc != ST_OK)
            goto werr;
    }
    /* The input's pairs come first (seq 0) so that every edit follows them. */
    for (size_t i = 0; i < nm; i++) {
        const char *k, *v;
        size_t kl, vl;
        if (st_metadata_at(in.file, i, &k, &kl, &v, &vl) != ST_OK)
            continue;
        if (!push_op(ops, OP_SET, k, kl, v, vl))
            goto nomem;
        ops->v[ops->n - 1].seq = 0;
    }
    qsort(ops->v, ops->n, sizeof *ops->v, cmp_op);
    size_t set = 0, removed = 0, kept = 0;
    for (size_t i = 0; i < ops->n;) {
        size_t j = i;
        while (j + 1 < ops->n && same_key(&ops->v[i], &ops->v[j + 1]))
            j++;
        /* ops->v[j] is the last word on this key. */
        const meta_op *last = &ops->v[j];
        bool existed = ops->v[i].seq == 0;
        if (last->kind == OP_SET) {
            rc = st_writer_set_metadata(w, last->key, last->key_len, last->value,
                                        last->value_len, &err);
            if (rc != ST_OK)
                goto werr;
            if (last->seq == 0)
                kept++;
            else
                set++;
        } else if (existed) {
            removed++;
        }
        i = j + 1;
    }
    if (st_metadata_present(in.file))
        st_writer_set_metadata_present(w, 1);
    cli_input *inputs[] = {&in};
    ret = cli_write_output(w, out_path, inputs, 1);
    if (ret == CLI_EXIT_OK) {
        const char *shown = in_place ? path : out_path;
        char *p = cli_printable(shown, strlen(shown));
        printf("wrote %s: %zu metadata key%s (%zu set, %zu removed, %zu unchanged)\n",
               p ? p : "?", set + kept, set + kept == 1 ? "" : "s", set, removed, kept);
        free(p);
    }
    goto done;
werr:
    if (err.code == ST_OK)
        err.code = rc;
    cli_print_error(out_path, &err);
    ret = CLI_EXIT_ERROR;
    goto done;
nomem:
    cli_errorf("nomem: out of memory");
    ret = CLI_EXIT_ERROR;
done:
    st_writer_free(w);
    free(src);
    free(real);
    st_close(in.file);
    return ret;
}

int cmd_meta(int argc, char **argv)
{
    enum { OPT_SET = 256, OPT_UNSET, OPT_SET_JSON, OPT_IN_PLACE, OPT_JSON };
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {"json", no_argument, NULL, OPT_JSON},
        {"set", required_argument, NULL, OPT_SET},
        {"unset", required_argument, NULL, OPT_UNSET},
        {"set-json", required_argument, NULL, OPT_SET_JSON},
        {"output", required_argument, NULL, 'o'},
        {"in-place", no_argument, NULL, OPT_IN_PLACE},
        {NULL, 0, NULL, 0},
    };
    meta_ops ops;
    memset(&ops, 0, sizeof ops);
    bool json = false, in_place = false;
    const char *out = NULL;
    size_t nedits = 0;
    int c, ret;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            ret = cli_help(usage);
            goto out;
        case OPT_JSON: json = true; break;
        case 'o': out = optarg; break;
        case OPT_IN_PLACE: in_place = true; break;
        case OPT_SET: {
            const char *eq = strchr(optarg, '=');
            if (!eq) {
                ret = cli_usage_error(usage, "meta: --set wants KEY=VALUE, got '%s'", optarg);
                goto out;
            }
            nedits++;
            if (!push_op(&ops, OP_SET, optarg, (size_t)(eq - optarg), eq + 1, strlen(eq + 1)))
                goto nomem;
            break;
        }
        case OPT_UNSET:
            nedits++;
            if (!push_op(&ops, OP_UNSET, optarg, strlen(optarg), NULL, 0))
                goto nomem;
            break;
        case OPT_SET_JSON:
            nedits++;
            ret = load_set_json(&ops, optarg);
            if (ret != CLI_EXIT_OK)
                goto out;
            break;
        default:
            ret = cli_usage_error(usage, NULL);
            goto out;
        }
    }
    if (argc - optind != 1) {
        ret = cli_usage_error(usage, "meta: expected one FILE");
        goto out;
    }
    if (out && in_place) {
        ret = cli_usage_error(usage, "meta: -o and --in-place exclude each other");
        goto out;
    }
    if (!out && !in_place) {
        if (nedits) {
            ret = cli_usage_error(usage, "meta: edits need -o OUT or --in-place");
            goto out;
        }
        ret = show(argv[optind], json);
        goto out;
    }
    if (json) {
        ret = cli_usage_error(usage, "meta: --json only applies to printing");
        goto out;
    }
    ret = edit(argv[optind], &ops, out, in_place);
    goto out;
nomem:
    cli_errorf("nomem: out of memory");
    ret = CLI_EXIT_ERROR;
out:
    free_ops(&ops);
    return ret;
}
