/* `safetensors info`: a summary of one file, read from its header only. */
#include "cli.h"
#include "convert_ckpt.h"
#include "convert_gguf.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "Usage: " CLI_NAME " info [--json] [--variant NAME] FILE\n"
    "\n"
    "Show a file's size, header size, tensor count, parameter count, the\n"
    "tensors and bytes per dtype, and its metadata. Only the header is read,\n"
    "so this is fast on files of any size. FILE may be an index (*.json) or a\n"
    "folder: sizes are then summed over its shards, which are listed.\n"
    "\n"
    "Options:\n"
    "  --json      machine-readable: file, file_size, header_size,\n"
    "              tensor_count, parameters, dtypes, metadata, tensors\n"
    "  --variant NAME  a folder's weight variant NAME (fp16, ema, non_ema,\n"
    "              ...) instead of its plain weights, as diffusers picks it\n"
    "  -h, --help  show this help\n"
    "\n"
    "Exit status: 0 success, 1 invalid file, 2 usage or I/O error.\n";

/* Metadata values longer than this are cut in the text output. */
#define VALUE_MAX 200

typedef struct dtype_stat {
    uint64_t tensors, parameters, bytes;
} dtype_stat;

/* One file or a sharded model (sizes are then summed over the shards). */
typedef struct view {
    const st_file *file;
    const st_model *model;
} view;

static uint64_t v_file_size(const view *v)
{
    if (v->file)
        return st_file_size(v->file);
    uint64_t s = 0;
    for (size_t i = 0; i < st_model_shard_count(v->model); i++)
        s += st_model_shard_size(v->model, i);
    return s;
}

static uint64_t v_header_size(const view *v)
{
    if (v->file)
        return st_header_size(v->file);
    uint64_t s = 0;
    for (size_t i = 0; i < st_model_shard_count(v->model); i++)
        s += st_model_shard_data_offset(v->model, i) - 8;
    return s;
}

static size_t v_count(const view *v)
{
    return v->file ? st_tensor_count(v->file) : st_model_tensor_count(v->model);
}

static const st_tensor *v_at(const view *v, size_t i)
{
    return v->file ? st_tensor_at(v->file, i) : st_model_tensor_at(v->model, i);
}

static int v_meta_present(const view *v)
{
    return v->file ? st_metadata_present(v->file) : st_model_metadata_present(v->model);
}

static size_t v_meta_count(const view *v)
{
    return v->file ? st_metadata_count(v->file) : st_model_metadata_count(v->model);
}

static int v_meta_at(const view *v, size_t i, const char **k, size_t *kl, const char **val,
                     size_t *vl)
{
    return v->file ? st_metadata_at(v->file, i, k, kl, val, vl)
                   : st_model_metadata_at(v->model, i, k, kl, val, vl);
}

static void gather(const view *f, dtype_stat *stats, uint64_t *params)
{
    size_t n = v_count(f);
    *params = 0;
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = v_at(f, i);
        dtype_stat *s = &stats[t->dtype];
        s->tensors++;
        s->parameters += t->nelements;
        s->bytes += st_tensor_nbytes(t);
        /* Bytes never exceed the file size and an element takes at least
         * half a byte, so these sums cannot overflow. */
        *params += t->nelements;
    }
}

static void print_json(const char *path, const view *f)
{
    dtype_stat stats[ST_DTYPE_COUNT];
    memset(stats, 0, sizeof stats);
    uint64_t params;
    gather(f, stats, &params);
    FILE *o = stdout;
    fputs("{\"file\": ", o);
    cli_json_string(o, path, strlen(path));
    fputs(", \"file_size\": ", o);
    cli_json_u64(o, v_file_size(f));
    fputs(", \"header_size\": ", o);
    cli_json_u64(o, v_header_size(f));
    if (f->model) {
        fputs(", \"shards\": [", o);
        for (size_t i = 0; i < st_model_shard_count(f->model); i++) {
            const char *sn = st_model_shard_name(f->model, i);
            fputs(i ? ", " : "", o);
            cli_json_string(o, sn, strlen(sn));
        }
        fputs("]", o);
    }
    fputs(", \"tensor_count\": ", o);
    cli_json_u64(o, v_count(f));
    fputs(", \"parameters\": ", o);
    cli_json_u64(o, params);
    fputs(",\n \"dtypes\": {", o);
    bool first = true;
    for (int d = 0; d < ST_DTYPE_COUNT; d++) {
        if (!stats[d].tensors)
            continue;
        fprintf(o, "%s\"%s\": {\"tensors\": ", first ? "" : ", ", st_dtype_name((st_dtype)d));
        cli_json_u64(o, stats[d].tensors);
        fputs(", \"parameters\": ", o);
        cli_json_u64(o, stats[d].parameters);
        fputs(", \"bytes\": ", o);
        cli_json_u64(o, stats[d].bytes);
        putc('}', o);
        first = false;
    }
    fputs("},\n \"metadata\": ", o);
    if (!v_meta_present(f)) {
        fputs("null", o);
    } else {
        putc('{', o);
        size_t n = v_meta_count(f);
        for (size_t i = 0; i < n; i++) {
            const char *k, *v;
            size_t kl, vl;
            if (v_meta_at(f, i, &k, &kl, &v, &vl) != ST_OK)
                break;
            if (i)
                fputs(",\n  ", o);
            cli_json_string(o, k, kl);
            fputs(": ", o);
            cli_json_string(o, v, vl);
        }
        putc('}', o);
    }
    fputs(",\n \"tensors\": [", o);
    size_t n = v_count(f);
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = v_at(f, i);
        fputs(i ? ",\n  {\"name\": " : "\n  {\"name\": ", o);
        cli_json_string(o, t->name, t->name_len);
        fprintf(o, ", \"dtype\": \"%s\", \"shape\": ", st_dtype_name(t->dtype));
        cli_json_shape(o, t->shape, t->rank);
        fputs(", \"data_offsets\": [", o);
        cli_json_u64(o, t->begin);
        putc(',', o);
        cli_json_u64(o, t->end);
        fputs("]}", o);
    }
    fputs(n ? "\n ]}\n" : "]}\n", o);
}

/* Prints "  key: value": the value made printable and cut after VALUE_MAX
 * bytes (at a character boundary) with its full length given, wrapped to
 * the terminal's width (80 columns into a pipe) with indented continuation
 * lines. Newlines in values (training comments, JSON dumps) show as \x0a,
 * so each line of output belongs to one key. */
static void print_pair(const char *k, size_t kl, const char *v, size_t vl, size_t width)
{
    size_t shown = vl;
    if (vl > VALUE_MAX) {
        shown = VALUE_MAX;
        while (shown > 0 && ((unsigned char)v[shown] & 0xc0) == 0x80)
            shown--;
    }
    char *pk = cli_printable(k, kl);
    char *pv = cli_printable(v, shown);
    char tail[64] = "";
    if (shown < vl) {
        char num[32];
        snprintf(tail, sizeof tail, "... (%s bytes)", cli_grouped(vl, num, sizeof num));
    }
    size_t tl = strlen(pv ? pv : "?") + strlen(tail);
    char *text = malloc(tl + 1);
    if (!pk || !pv || !text) {
        printf("  %s: (out of memory)\n", pk ? pk : "?");
        free(pk);
        free(pv);
        free(text);
        return;
    }
    snprintf(text, tl + 1, "%s%s", pv, tail);
    /* Lines may break after a space of the value, or before the tail
     * (kept whole); elsewhere only when a word is longer than a line. */
    const char *tail_at = text + strlen(pv);
    printf("  %s: ", pk);
    size_t col = 4 + cli_text_columns(pk);
    const char *p = text;
    while (*p) {
        /* Columns left on this line (the last column is left free so
         * terminals do not wrap on their own); at least 20 so a long key
         * still gets its value on the same line. */
        size_t room = width > col + 21 ? width - col - 1 : 20;
        size_t n = 0, cols = 0, brk = 0;
        while (p[n] && cols < room) {
            if (p + n == tail_at && n > 0)
                brk = n;
            if (p[n] == '\\' && p + n < tail_at) {
                /* An escape (\xNN or \uXXXX) is not split across lines. */
                size_t esc = p[n + 1] == 'x' ? 4 : 6;
                if (cols + esc > room && n > 0)
                    break;
                n += esc;
                cols += esc;
                continue;
            }
            n++;
            while (((unsigned char)p[n] & 0xc0) == 0x80)
                n++;
            cols++;
            if (p[n - 1] == ' ' && p + n <= tail_at)
                brk = n;
        }
        if (p[n] && p + n != tail_at && brk > room / 2)
            n = brk;
        size_t out = n;
        if (p[n] && out > 1 && p[out - 1] == ' ')
            out--; /* no trailing blank where the line breaks */
        fwrite(p, 1, out, stdout);
        putchar('\n');
        p += n;
        if (*p) {
            fputs("      ", stdout);
            col = 6;
        }
    }
    if (!*text)
        putchar('\n');
    free(pk);
    free(pv);
    free(text);
}

/* "5.4 KiB (5,508 bytes)", or "10 bytes" when that says it all. */
static void print_size(const char *label, uint64_t bytes)
{
    char a[48], b[48];
    if (bytes < 1024)
        printf("%s%s byte%s\n", label, cli_grouped(bytes, b, sizeof b), bytes == 1 ? "" : "s");
    else
        printf("%s%s (%s bytes)\n", label, cli_human_size(bytes, a, sizeof a),
               cli_grouped(bytes, b, sizeof b));
}

static void print_text(const char *path, const view *f)
{
    dtype_stat stats[ST_DTYPE_COUNT];
    memset(stats, 0, sizeof stats);
    uint64_t params;
    gather(f, stats, &params);
    char a[48], b[48];
    char *p = cli_printable(path, strlen(path));
    printf("File:         %s\n", p ? p : "?");
    free(p);
    print_size("File size:    ", v_file_size(f));
    print_size("Header size:  ", v_header_size(f));
    if (f->model) {
        size_t ns = st_model_shard_count(f->model);
        printf("Shards:       %zu\n", ns);
        for (size_t i = 0; i < ns; i++) {
            char *sn = cli_printable(st_model_shard_name(f->model, i), strlen(st_model_shard_name(f->model, i)));
            printf("  %s  %s\n", sn ? sn : "?", cli_human_size(st_model_shard_size(f->model, i), a, sizeof a));
            free(sn);
        }
    }
    printf("Tensors:      %s\n", cli_grouped(v_count(f), a, sizeof a));
    if (params < 1000)
        printf("Parameters:   %s\n", cli_grouped(params, a, sizeof a));
    else
        printf("Parameters:   %s (%s)\n", cli_human_count(params, a, sizeof a),
               cli_grouped(params, b, sizeof b));
    bool any = false;
    for (int d = 0; d < ST_DTYPE_COUNT; d++) {
        if (!stats[d].tensors)
            continue;
        if (!any)
            printf("Dtypes:\n  %-14s %8s %12s %12s\n", "DTYPE", "TENSORS", "PARAMETERS", "BYTES");
        any = true;
        char c[48];
        printf("  %-14s %8s %12s %12s\n", st_dtype_name((st_dtype)d),
               cli_grouped(stats[d].tensors, a, sizeof a),
               cli_human_count(stats[d].parameters, b, sizeof b),
               cli_human_size(stats[d].bytes, c, sizeof c));
    }
    if (!v_meta_present(f)) {
        printf("Metadata:     none\n");
        return;
    }
    size_t n = v_meta_count(f);
    printf("Metadata:     %zu key%s\n", n, n == 1 ? "" : "s");
    size_t width = cli_stdout_is_tty() ? (size_t)cli_terminal_width() : 80;
    for (size_t i = 0; i < n; i++) {
        const char *k, *v;
        size_t kl, vl;
        if (v_meta_at(f, i, &k, &kl, &v, &vl) != ST_OK)
            break;
        print_pair(k, kl, v, vl, width);
    }
}

int cmd_info(int argc, char **argv)
{
    static const cli_command cmd = {usage, CLI_OPT_JSON | CLI_OPT_VARIANT, NULL, NULL, NULL, false};
    cli_common common;
    int ret = cli_parse_options(argc, argv, &cmd, &common, NULL);
    if (ret >= 0)
        return ret;
    bool json = common.json;
    int first = common.first_arg;
    if (argc - first != 1)
        return cli_usage_error(usage, "info: expected one FILE");
    const char *path = argv[first];
    if (gguf_is_file(path)) /* GGUF: programs/gguf_show.c */
        return gguf_info(path, json);
    if (ckpt_is_pickle_file(path)) /* PyTorch checkpoints: programs/ckpt_show.c */
        return ckpt_info(path, json);
    st_file *f = NULL;
    st_model *m = NULL;
    /* pread: only the header is read, whatever the file's size. */
    int rc = cli_is_model_path(path) ? cli_open_model_variant(path, common.variant, &m)
                                     : cli_open_file(path, ST_OPEN_PREAD, &f);
    if (rc != CLI_EXIT_OK)
        return rc;
    view v = {f, m};
    if (json)
        print_json(path, &v);
    else
        print_text(path, &v);
    st_close(f);
    st_model_close(m);
    return CLI_EXIT_OK;
}
