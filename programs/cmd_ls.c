/* `safetensors ls`: the tensors of a file as a table or a JSON array. */
#include "cli.h"
#include "convert_ckpt.h"
#include "convert_gguf.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "Usage: " CLI_NAME " ls [--json] [--sort name|offset|size] [--variant NAME]\n"
    "                    FILE [GLOB]\n"
    "\n"
    "List the tensors of FILE: name, dtype, shape and size. GLOB keeps the\n"
    "names it matches ('*' any run of characters, '.' included, '?' one,\n"
    "'[a-z]' a set), e.g. '*lora_down*'. Long names are shortened in the\n"
    "middle to fit a terminal; they are printed whole into a pipe or file.\n"
    "FILE may be an index (*.json) or a folder: the tensors of every shard\n"
    "(offset order is then shard order; data_offsets are within the shard).\n"
    "\n"
    "Options:\n"
    "  --sort KEY  offset (file order, the default), name, or size (largest\n"
    "              first)\n"
    "  --json      a JSON array of {name, dtype, shape, data_offsets, bytes}\n"
    "  --variant NAME  a folder's weight variant NAME (fp16, ema, non_ema,\n"
    "              ...) instead of its plain weights, as diffusers picks it\n"
    "  -h, --help  show this help\n"
    "\n"
    "Exit status: 0 success, 1 invalid file, 2 usage or I/O error.\n";

enum sort_key { SORT_OFFSET, SORT_NAME, SORT_SIZE };

/* Largest first; ties in name order so the listing is deterministic. */
static int by_size_desc(const void *pa, const void *pb)
{
    const st_tensor *a = *(const st_tensor *const *)pa;
    const st_tensor *b = *(const st_tensor *const *)pb;
    uint64_t sa = st_tensor_nbytes(a), sb = st_tensor_nbytes(b);
    if (sa != sb)
        return sa > sb ? -1 : 1;
    size_t n = a->name_len < b->name_len ? a->name_len : b->name_len;
    int c = n ? memcmp(a->name, b->name, n) : 0;
    if (c)
        return c;
    return a->name_len < b->name_len ? -1 : a->name_len > b->name_len;
}

typedef struct row {
    const st_tensor *t;
    char *name;  /* printable, maybe shortened */
    char *shape; /* "[320, 4]" */
    char size[32];
} row;

#define SEP 2 /* spaces between columns */
#define SHAPE_MAX_TTY 28

static int print_table(const st_tensor **list, size_t n, size_t total)
{
    row *rows = calloc(n ? n : 1, sizeof *rows);
    if (!rows)
        goto nomem;
    bool tty = cli_stdout_is_tty();
    size_t wname = 4, wdtype = 5, wshape = 5, wsize = 4;
    uint64_t bytes = 0, params = 0;
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = list[i];
        rows[i].t = t;
        rows[i].name = cli_printable(t->name, t->name_len);
        rows[i].shape = cli_shape_text(t->shape, t->rank);
        if (!rows[i].name || !rows[i].shape)
            goto nomem;
        if (tty)
            cli_elide_middle(rows[i].shape, SHAPE_MAX_TTY);
        cli_human_size(st_tensor_nbytes(t), rows[i].size, sizeof rows[i].size);
        size_t w = cli_text_columns(rows[i].name);
        if (w > wname)
            wname = w;
        w = strlen(st_dtype_name(t->dtype));
        if (w > wdtype)
            wdtype = w;
        w = cli_text_columns(rows[i].shape);
        if (w > wshape)
            wshape = w;
        w = strlen(rows[i].size);
        if (w > wsize)
            wsize = w;
        bytes += st_tensor_nbytes(t);
        params += t->nelements;
    }
    if (tty) {
        /* Fit the terminal: the name column takes what the others leave. */
        size_t width = (size_t)cli_terminal_width();
        size_t rest = wdtype + wshape + wsize + 3 * SEP;
        size_t room = width > rest + 20 ? width - rest - 1 : 20;
        if (wname > room) {
            wname = room;
            for (size_t i = 0; i < n; i++)
                cli_elide_middle(rows[i].name, wname);
        }
    }
    printf("%-*s%*s%-*s%*s%-*s%*s%*s\n", (int)wname, "NAME", SEP, "", (int)wdtype, "DTYPE",
           SEP, "", (int)wshape, "SHAPE", SEP, "", (int)wsize, "SIZE");
    for (size_t i = 0; i < n; i++) {
        /* printf pads by bytes; pad by columns for UTF-8 names. */
        size_t cols = cli_text_columns(rows[i].name);
        size_t pad = (cols < wname ? wname - cols : 0) + SEP;
        size_t spad = wshape - cli_text_columns(rows[i].shape) + SEP;
        printf("%s%*s%-*s%*s%s%*s%*s\n", rows[i].name, (int)pad, "", (int)wdtype,
               st_dtype_name(rows[i].t->dtype), SEP, "", rows[i].shape, (int)spad, "",
               (int)wsize, rows[i].size);
    }
    char a[32], b[32];
    if (n == total)
        printf("%zu tensor%s, %s parameters, %s\n", n, n == 1 ? "" : "s",
               cli_human_count(params, a, sizeof a), cli_human_size(bytes, b, sizeof b));
    else
        printf("%zu of %zu tensors, %s parameters, %s\n", n, total,
               cli_human_count(params, a, sizeof a), cli_human_size(bytes, b, sizeof b));
    for (size_t i = 0; i < n; i++) {
        free(rows[i].name);
        free(rows[i].shape);
    }
    free(rows);
    return CLI_EXIT_OK;
nomem:
    if (rows) {
        for (size_t i = 0; i < n; i++) {
            free(rows[i].name);
            free(rows[i].shape);
        }
    }
    free(rows);
    cli_errorf("nomem: out of memory");
    return CLI_EXIT_ERROR;
}

static void print_json(const st_tensor **list, size_t n)
{
    FILE *o = stdout;
    putc('[', o);
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = list[i];
        fputs(i ? ",\n {\"name\": " : "\n {\"name\": ", o);
        cli_json_string(o, t->name, t->name_len);
        fprintf(o, ", \"dtype\": \"%s\", \"shape\": ", st_dtype_name(t->dtype));
        cli_json_shape(o, t->shape, t->rank);
        fputs(", \"data_offsets\": [", o);
        cli_json_u64(o, t->begin);
        putc(',', o);
        cli_json_u64(o, t->end);
        fputs("], \"bytes\": ", o);
        cli_json_u64(o, st_tensor_nbytes(t));
        putc('}', o);
    }
    fputs(n ? "\n]\n" : "]\n", o);
}

static int on_option(void *ctx, int c, const char *arg)
{
    enum sort_key *sort = ctx;
    if (c != 's')
        return cli_usage_error(usage, NULL);
    if (strcmp(arg, "name") == 0)
        *sort = SORT_NAME;
    else if (strcmp(arg, "offset") == 0)
        *sort = SORT_OFFSET;
    else if (strcmp(arg, "size") == 0)
        *sort = SORT_SIZE;
    else
        return cli_usage_error(usage, "ls: --sort takes name, offset or size, not '%s'", arg);
    return 0;
}

int cmd_ls(int argc, char **argv)
{
    static const struct option opts[] = {
        {"sort", required_argument, NULL, 's'},
        {NULL, 0, NULL, 0},
    };
    static const cli_command cmd = {usage, CLI_OPT_JSON | CLI_OPT_VARIANT, opts, NULL, on_option, false};
    enum sort_key sort = SORT_OFFSET;
    cli_common common;
    int ret = cli_parse_options(argc, argv, &cmd, &common, &sort);
    if (ret >= 0)
        return ret;
    bool json = common.json;
    int nargs = argc - common.first_arg;
    if (nargs < 1 || nargs > 2)
        return cli_usage_error(usage, "ls: expected FILE and an optional GLOB");
    const char *path = argv[common.first_arg];
    const char *glob = nargs == 2 ? argv[common.first_arg + 1] : NULL;

    if (gguf_is_file(path)) /* GGUF: programs/gguf_show.c */
        return gguf_ls(path, json);
    if (ckpt_is_pickle_file(path)) /* PyTorch checkpoints: programs/ckpt_show.c */
        return ckpt_ls(path, json, sort == SORT_NAME ? 1 : sort == SORT_SIZE ? 2 : 0, glob);
    st_file *f = NULL;
    st_model *m = NULL;
    int rc = cli_is_model_path(path) ? cli_open_model_variant(path, common.variant, &m)
                                     : cli_open_file(path, ST_OPEN_PREAD, &f);
    if (rc != CLI_EXIT_OK)
        return rc;
    size_t total = m ? st_model_tensor_count(m) : st_tensor_count(f);
    const st_tensor **list = malloc((total ? total : 1) * sizeof *list);
    if (!list) {
        st_close(f);
        st_model_close(m);
        cli_errorf("nomem: out of memory");
        return CLI_EXIT_ERROR;
    }
    size_t n = 0;
    for (size_t i = 0; i < total; i++) {
        const st_tensor *t = m ? (sort == SORT_NAME ? st_model_tensor_by_name_order(m, i)
                                                    : st_model_tensor_at(m, i))
                           : sort == SORT_NAME ? st_tensor_by_name_order(f, i) : st_tensor_at(f, i);
        if (!glob || cli_glob_match(glob, t->name, t->name_len))
            list[n++] = t;
    }
    if (sort == SORT_SIZE && n > 1)
        qsort(list, n, sizeof *list, by_size_desc);
    ret = CLI_EXIT_OK;
    if (json)
        print_json(list, n);
    else
        ret = print_table(list, n, total);
    free(list);
    st_close(f);
    st_model_close(m);
    return ret;
}
