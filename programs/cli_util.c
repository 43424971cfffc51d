/* Helpers shared by the commands of the `safetensors` tool: errors and
 * usage, JSON output, human-readable numbers, printable names, globbing and
 * the terminal's width. */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* usage and errors                                                          */
/* ------------------------------------------------------------------------ */

int cli_help(const char *usage)
{
    fputs(usage, stdout);
    return CLI_EXIT_OK;
}

int cli_usage_error(const char *usage, const char *fmt, ...)
{
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        fputs(CLI_NAME ": ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
    fputs(usage, stderr);
    return CLI_EXIT_ERROR;
}

void cli_errorf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(CLI_NAME ": ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

const char *cli_error_message(const st_error *err, char *buf, size_t cap)
{
    const char *msg = err->message[0] ? err->message : st_code_description(err->code);
    if (err->offset == ST_NO_OFFSET) {
        snprintf(buf, cap, "%s", msg);
        return buf;
    }
    /* The library's messages usually give the offset already; add it only
     * when they do not, so every verdict says where the problem is. */
    char num[32];
    snprintf(num, sizeof num, "%llu", (unsigned long long)err->offset);
    if (strstr(msg, num))
        snprintf(buf, cap, "%s", msg);
    else
        snprintf(buf, cap, "%s (at byte %s)", msg, num);
    return buf;
}

void cli_print_error(const char *path, const st_error *err)
{
    char msg[ST_ERROR_MESSAGE_MAX + 64];
    char *p = cli_printable(path, strlen(path));
    char *m = cli_printable_message(cli_error_message(err, msg, sizeof msg));
    fprintf(stderr, CLI_NAME ": %s: %s: %s\n", p ? p : "?", st_code_name(err->code),
            m ? m : "?");
    free(p);
    free(m);
}

int cli_open_file(const char *path, unsigned flags, st_file **out)
{
    st_error err;
    memset(&err, 0, sizeof err);
    *out = NULL;
    int rc = st_open(path, flags, out, &err);
    if (rc == ST_OK)
        return CLI_EXIT_OK;
    if (err.code == ST_OK)
        err.code = rc;
    cli_print_error(path, &err);
    return cli_exit_code(err.code);
}

/* A verdict on a file's contents, for every format: the safetensors
 * validation codes and the checkpoint ones. pickle_limit is a verdict too:
 * the limits bound what a file may demand (as header_too_large does for
 * safetensors), retrying cannot change the answer. unsafe is the refusal
 * of a file that names dangerous globals. unsupported stays an error of
 * this run: the file may be valid, this program cannot do it. */
bool cli_is_validation_code(int code)
{
    return (code >= ST_E_HEADER_TOO_SMALL && code <= ST_E_INCOMPLETE) ||
           (code >= ST_E_CKPT_FORMAT && code <= ST_E_CKPT_TENSOR) || code == ST_E_GGUF;
}

int cli_exit_code(int code)
{
    if (code == ST_OK)
        return CLI_EXIT_OK;
    return cli_is_validation_code(code) ? CLI_EXIT_INVALID : CLI_EXIT_ERROR;
}

void cli_getopt_reset(void)
{
    optind = 0;
    opterr = 1;
}

int cli_finish_stdout(int rc)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        int e = errno;
        cli_errorf("io: writing standard output: %s", strerror(e ? e : EIO));
        return CLI_EXIT_ERROR;
    }
    return rc;
}

/* ------------------------------------------------------------------------ */
/* UTF-8                                                                     */
/* ------------------------------------------------------------------------ */

/* Length of the well-formed UTF-8 sequence at p (1..4), or 0 when the bytes
 * there are not one (overlong forms, surrogates and values past U+10FFFF
 * are rejected, as RFC 3629 says). */

/* ------------------------------------------------------------------------ */
/* JSON                                                                      */
/* ------------------------------------------------------------------------ */

void cli_json_string(FILE *out, const char *s, size_t len)
{
    st_jv_write_string(out, s, len);
}

void cli_json_cstr(FILE *out, const char *s)
{
    if (s)
        cli_json_string(out, s, strlen(s));
    else
        fputs("null", out);
}

void cli_json_u64(FILE *out, uint64_t v)
{
    fprintf(out, "%llu", (unsigned long long)v);
}

void cli_json_shape(FILE *out, const uint64_t *shape, uint32_t rank)
{
    putc('[', out);
    for (uint32_t i = 0; i < rank; i++) {
        if (i)
            putc(',', out);
        cli_json_u64(out, shape[i]);
    }
    putc(']', out);
}

/* ------------------------------------------------------------------------ */
/* numbers                                                                   */
/* ------------------------------------------------------------------------ */

const char *cli_human_size(uint64_t bytes, char *buf, size_t cap)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (bytes < 1024) {
        snprintf(buf, cap, "%llu B", (unsigned long long)bytes);
        return buf;
    }
    double v = (double)bytes / 1024.0;
    size_t u = 0;
    /* 1023.96 KiB would print as "1024.0 KiB": move up a unit first. */
    while (v >= 1023.95 && u + 1 < sizeof units / sizeof units[0]) {
        v /= 1024.0;
        u++;
    }
    snprintf(buf, cap, "%.1f %s", v, units[u]);
    return buf;
}

const char *cli_human_count(uint64_t n, char *buf, size_t cap)
{
    static const char units[] = "KMBTQ";
    if (n < 1000) {
        snprintf(buf, cap, "%llu", (unsigned long long)n);
        return buf;
    }
    double v = (double)n / 1000.0;
    size_t u = 0;
    while (v >= 999.95 && u + 1 < sizeof units - 1) {
        v /= 1000.0;
        u++;
    }
    snprintf(buf, cap, "%.1f%c", v, units[u]);
    return buf;
}

const char *cli_grouped(uint64_t n, char *buf, size_t cap)
{
    char digits[32];
    int len = snprintf(digits, sizeof digits, "%llu", (unsigned long long)n);
    char tmp[48];
    size_t o = 0;
    for (int i = 0; i < len; i++) {
        if (i > 0 && (len - i) % 3 == 0)
            tmp[o++] = ',';
        tmp[o++] = digits[i];
    }
    tmp[o] = 0;
    snprintf(buf, cap, "%s", tmp);
    return buf;
}

char *cli_shape_text(const uint64_t *shape, uint32_t rank)
{
    /* Exact size first: the reader accepts any rank, so a hostile header
     * can hold millions of dimensions; the text stays proportional to it. */
    size_t cap = 3;
    for (uint32_t i = 0; i < rank; i++) {
        uint64_t v = shape[i];
        size_t digits = 1;
        while (v >= 10) {
            v /= 10;
            digits++;
        }
        cap += digits + (i ? 2 : 0);
    }
    char *s = malloc(cap);
    if (!s)
        return NULL;
    size_t o = 0;
    s[o++] = '[';
    for (uint32_t i = 0; i < rank; i++)
        o += (size_t)snprintf(s + o, cap - o, "%s%llu", i ? ", " : "",
                              (unsigned long long)shape[i]);
    s[o++] = ']';
    s[o] = 0;
    return s;
}

/* ------------------------------------------------------------------------ */
/* names and text                                                            */
/* ------------------------------------------------------------------------ */

/* Invisible or reordering characters a hostile name could use to look
 * like another on a terminal: zero-width ones, bidirectional controls
 * (U+202A..U+202E, U+2066..U+2069), the BOM. Shown as \uXXXX. */
static bool is_format_char(uint32_t cp)
{
    return (cp >= 0x200b && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202e) ||
           (cp >= 0x2060 && cp <= 0x2069) || cp == 0xfeff || cp == 0x00ad;
}

/* Length of the valid, printable UTF-8 sequence at p (1..4); 0 when the
 * byte there must be shown as \xNN; SIZE_MAX when the (3-byte) character
 * must be shown as \uXXXX. */
static size_t printable_len(const unsigned char *p, size_t n, bool keep_backslash)
{
    unsigned char c = p[0];
    if (c < 0x80)
        return c < 0x20 || c == 0x7f || (c == '\\' && !keep_backslash) ? 0 : 1;
    size_t k = st_utf8_seq_len(p, n);
    /* C1 controls (U+0080..U+009F) would move a terminal too. */
    if (k == 2 && c == 0xc2 && p[1] < 0xa0)
        return 0;
    if (k == 2 && c == 0xc2 && p[1] == 0xad)
        return SIZE_MAX;
    if (k == 3) {
        uint32_t cp = ((uint32_t)(c & 0x0f) << 12) | ((uint32_t)(p[1] & 0x3f) << 6) |
                      (uint32_t)(p[2] & 0x3f);
        if (is_format_char(cp))
            return SIZE_MAX;
    }
    return k;
}

static char *printable(const char *s, size_t len, bool keep_backslash)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    /* Two passes, so the result takes what it needs and no more (ls keeps
     * one per tensor, and a file may have many). */
    size_t need = 1;
    for (size_t i = 0; i < len;) {
        size_t n = printable_len(p + i, len - i, keep_backslash);
        if (n == SIZE_MAX) {
            need += 6;
            i += p[i] == 0xc2 ? 2 : 3;
        } else {
            need += n ? n : 4;
            i += n ? n : 1;
        }
    }
    char *out = malloc(need);
    if (!out)
        return NULL;
    size_t o = 0, i = 0;
    while (i < len) {
        size_t n = printable_len(p + i, len - i, keep_backslash);
        if (n == SIZE_MAX) {
            size_t k = p[i] == 0xc2 ? 2 : 3;
            uint32_t cp = k == 2 ? 0xad
                                 : ((uint32_t)(p[i] & 0x0f) << 12) |
                                       ((uint32_t)(p[i + 1] & 0x3f) << 6) |
                                       (uint32_t)(p[i + 2] & 0x3f);
            o += (size_t)snprintf(out + o, need - o, "\\u%04x", (unsigned)cp);
            i += k;
        } else if (n == 0) {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[p[i] >> 4];
            out[o++] = hex[p[i] & 15];
            i++;
        } else {
            memcpy(out + o, p + i, n);
            o += n;
            i += n;
        }
    }
    out[o] = 0;
    return out;
}

char *cli_printable(const char *s, size_t len)
{
    return printable(s, len, false);
}

char *cli_printable_message(const char *s)
{
    return printable(s, strlen(s), true);
}

size_t cli_text_columns(const char *s)
{
    size_t cols = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p & 0xc0) != 0x80)
            cols++;
    return cols;
}

/* Byte index where the column `col` starts in printable string s. */
static size_t column_to_byte(const char *s, size_t col)
{
    size_t cols = 0, i = 0;
    for (; s[i]; i++) {
        if (((unsigned char)s[i] & 0xc0) != 0x80) {
            if (cols == col)
                return i;
            cols++;
        }
    }
    return i;
}

void cli_elide_middle(char *s, size_t cols)
{
    size_t have = cli_text_columns(s);
    if (have <= cols || cols < 5)
        return;
    size_t keep = cols - 3;
    size_t head = keep / 2, tail = keep - head;
    size_t hb = column_to_byte(s, head);
    size_t tb = column_to_byte(s, have - tail);
    /* In a printable string every backslash starts an escape (\xNN or
     * \uXXXX): cut before or after one, never inside, so no half escape
     * is left to misread. This only shortens the kept ends. */
    for (size_t j = 0; j < hb; j++) {
        if (s[j] != '\\')
            continue;
        size_t end = j + (s[j + 1] == 'x' ? 4 : 6);
        if (end > hb) {
            hb = j;
            break;
        }
        j = end - 1;
    }
    for (size_t j = hb; j < tb; j++) {
        if (s[j] != '\\')
            continue;
        size_t end = j + (s[j + 1] == 'x' ? 4 : 6);
        if (end > tb) {
            tb = end;
            break;
        }
        j = end - 1;
    }
    size_t tlen = strlen(s + tb);
    memcpy(s + hb, "...", 3);
    memmove(s + hb + 3, s + tb, tlen + 1);
}

bool cli_glob_match(const char *pattern, const char *name, size_t name_len)
{
    return st_name_glob_match(pattern, name, name_len) != 0;
}

/* ------------------------------------------------------------------------ */
/* terminal                                                                  */
/* ------------------------------------------------------------------------ */

bool cli_stdout_is_tty(void)
{
    return isatty(STDOUT_FILENO) == 1;
}

int cli_terminal_width(void)
{
    struct winsize ws;
    if (isatty(STDOUT_FILENO) == 1 && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 &&
        ws.ws_col >= 20)
        return ws.ws_col;
    const char *env = getenv("COLUMNS");
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (*end == 0 && v >= 20 && v <= 10000)
            return (int)v;
    }
    return 80;
}

bool cli_parse_pad(const char *arg, uint64_t *out)
{
    if (strcmp(arg, "0") == 0) {
        *out = 0;
        return true;
    }
    return st_parse_size(arg, out, NULL) == ST_OK && *out <= ST_MAX_HEADER_SIZE;
}

/* --dtype names (convert, merge): a floating dtype the engine can write. */
bool cli_parse_dtype(const char *arg, st_dtype *out)
{
    static const struct {
        const char *name;
        st_dtype d;
    } aliases[] = {
        {"fp16", ST_F16}, {"half", ST_F16}, {"float16", ST_F16},
        {"bfloat16", ST_BF16}, {"fp32", ST_F32}, {"float", ST_F32},
        {"float32", ST_F32}, {"fp64", ST_F64}, {"double", ST_F64},
        {"float64", ST_F64},
    };
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strcasecmp(arg, aliases[i].name) == 0) {
            *out = aliases[i].d;
            return true;
        }
    for (int d = 0; d < ST_DTYPE_COUNT; d++) {
        const char *name = st_dtype_name((st_dtype)d);
        if (name && strcasecmp(arg, name) == 0 && st_dtype_is_float((st_dtype)d) &&
            st_convert_supported(ST_F32, (st_dtype)d)) {
            *out = (st_dtype)d;
            return true;
        }
    }
    return false;
}

