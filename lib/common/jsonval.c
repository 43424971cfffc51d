/* JSON values inside metadata strings, for the operations that look into
 * them (meta, merge) and the CLI that prints them: a syntax check, a
 * pretty-printer, object member iteration, string decoding and writing. Metadata values are strings the file's
 * author chose, so every function here is bounded: nesting is limited,
 * nothing recurses without a depth check, nothing allocates more than the
 * input's size. */
#include "common/jsonval.h"

#include <stdlib.h>
#include <string.h>

#define JV_MAX_DEPTH 64

static size_t skip_ws(const char *s, size_t n, size_t i)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* s[i] is '"'; returns the index after the closing quote, or 0 on error. */
static size_t scan_string(const char *s, size_t n, size_t i)
{
    i++;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"')
            return i + 1;
        if (c < 0x20)
            return 0;
        if (c == '\\') {
            if (i + 1 >= n)
                return 0;
            char e = s[i + 1];
            if (e == 'u') {
                if (i + 5 >= n)
                    return 0;
                for (size_t k = 2; k < 6; k++)
                    if (!is_hex(s[i + k]))
                        return 0;
                i += 6;
                continue;
            }
            if (!strchr("\"\\/bfnrt", e) || e == 0)
                return 0;
            i += 2;
            continue;
        }
        i++;
    }
    return 0;
}

static size_t scan_number(const char *s, size_t n, size_t i)
{
    size_t start = i;
    if (i < n && s[i] == '-')
        i++;
    if (i < n && s[i] == '0') {
        i++;
    } else {
        size_t d = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d)
            return 0;
    }
    if (i < n && s[i] == '.') {
        i++;
        size_t d = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d)
            return 0;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t d = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d)
            return 0;
    }
    return i > start ? i : 0;
}

/* Scans one value at s[i] (no leading whitespace); returns the index after
 * it or 0 on error. Containers recurse at most JV_MAX_DEPTH deep. */
static size_t scan_value(const char *s, size_t n, size_t i, int depth)
{
    if (i >= n)
        return 0;
    char c = s[i];
    if (c == '"')
        return scan_string(s, n, i);
    if (c == '{' || c == '[') {
        if (depth >= JV_MAX_DEPTH)
            return 0;
        char close = c == '{' ? '}' : ']';
        i = skip_ws(s, n, i + 1);
        if (i < n && s[i] == close)
            return i + 1;
        for (;;) {
            if (c == '{') {
                if (i >= n || s[i] != '"')
                    return 0;
                i = scan_string(s, n, i);
                if (!i)
                    return 0;
                i = skip_ws(s, n, i);
                if (i >= n || s[i] != ':')
                    return 0;
                i = skip_ws(s, n, i + 1);
            }
            i = scan_value(s, n, i, depth + 1);
            if (!i)
                return 0;
            i = skip_ws(s, n, i);
            if (i >= n)
                return 0;
            if (s[i] == close)
                return i + 1;
            if (s[i] != ',')
                return 0;
            i = skip_ws(s, n, i + 1);
        }
    }
    static const char *const words[] = {"true", "false", "null"};
    for (size_t w = 0; w < 3; w++) {
        size_t l = strlen(words[w]);
        if (n - i >= l && memcmp(s + i, words[w], l) == 0)
            return i + l;
    }
    return scan_number(s, n, i);
}

bool st_jv_valid(const char *s, size_t n)
{
    size_t i = skip_ws(s, n, 0);
    i = scan_value(s, n, i, 0);
    return i && skip_ws(s, n, i) == n;
}

bool st_jv_is_container(const char *s, size_t n)
{
    size_t i = skip_ws(s, n, 0);
    return i < n && (s[i] == '{' || s[i] == '[') && st_jv_valid(s, n);
}

static void indent(FILE *out, int level)
{
    for (int i = 0; i < level; i++)
        fputs("  ", out);
}

/* Prints the value at s[i] (already checked) pretty; returns the index
 * after it. */
static size_t pretty_value(FILE *out, const char *s, size_t n, size_t i, int level)
{
    char c = s[i];
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        i = skip_ws(s, n, i + 1);
        if (s[i] == close) {
            putc(c, out);
            putc(close, out);
            return i + 1;
        }
        putc(c, out);
        putc('\n', out);
        for (;;) {
            indent(out, level + 1);
            if (c == '{') {
                size_t e = scan_string(s, n, i);
                fwrite(s + i, 1, e - i, out);
                fputs(": ", out);
                i = skip_ws(s, n, skip_ws(s, n, e) + 1);
            }
            i = skip_ws(s, n, pretty_value(out, s, n, i, level + 1));
            if (s[i] == close) {
                putc('\n', out);
                indent(out, level);
                putc(close, out);
                return i + 1;
            }
            fputs(",\n", out);
            i = skip_ws(s, n, i + 1);
        }
    }
    size_t e = scan_value(s, n, i, JV_MAX_DEPTH);
    fwrite(s + i, 1, e - i, out);
    return e;
}

bool st_jv_pretty(FILE *out, const char *s, size_t n, int level)
{
    if (!st_jv_valid(s, n))
        return false;
    pretty_value(out, s, n, skip_ws(s, n, 0), level);
    return true;
}

bool st_jv_object_next(const char *s, size_t n, size_t *pos, st_span *key, st_span *value)
{
    size_t i = *pos;
    if (i == 0) {
        i = skip_ws(s, n, 0);
        if (i >= n || s[i] != '{')
            return false;
        i = skip_ws(s, n, i + 1);
    } else {
        i = skip_ws(s, n, i);
        if (i >= n || s[i] != ',')
            return false;
        i = skip_ws(s, n, i + 1);
    }
    if (i >= n || s[i] != '"')
        return false;
    size_t e = scan_string(s, n, i);
    if (!e)
        return false;
    key->s = s + i;
    key->n = e - i;
    i = skip_ws(s, n, e);
    if (i >= n || s[i] != ':')
        return false;
    i = skip_ws(s, n, i + 1);
    e = scan_value(s, n, i, 1);
    if (!e)
        return false;
    value->s = s + i;
    value->n = e - i;
    *pos = e;
    return true;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return c - 'A' + 10;
}

static unsigned hex4(const char *p)
{
    return (unsigned)(hexval(p[0]) << 12 | hexval(p[1]) << 8 | hexval(p[2]) << 4 | hexval(p[3]));
}

static size_t put_utf8(char *d, unsigned cp)
{
    if (cp < 0x80) {
        d[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        d[0] = (char)(0xc0 | cp >> 6);
        d[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        d[0] = (char)(0xe0 | cp >> 12);
        d[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        d[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    d[0] = (char)(0xf0 | cp >> 18);
    d[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    d[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    d[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

char *st_jv_string_decode(const char *s, size_t n, size_t *out_len)
{
    if (n < 2 || s[0] != '"' || scan_string(s, n, 0) != n)
        return NULL;
    /* Escapes never grow: "\uXXXX" (6 bytes) gives at most 3, a surrogate
     * pair (12) gives 4. */
    char *d = malloc(n);
    if (!d)
        return NULL;
    size_t o = 0;
    for (size_t i = 1; i + 1 < n;) {
        char c = s[i];
        if (c != '\\') {
            d[o++] = c;
            i++;
            continue;
        }
        char e = s[i + 1];
        i += 2;
        switch (e) {
        case 'b': d[o++] = '\b'; break;
        case 'f': d[o++] = '\f'; break;
        case 'n': d[o++] = '\n'; break;
        case 'r': d[o++] = '\r'; break;
        case 't': d[o++] = '\t'; break;
        case 'u': {
            unsigned cp = hex4(s + i);
            i += 4;
            if (cp >= 0xd800 && cp < 0xdc00 && i + 6 < n && s[i] == '\\' && s[i + 1] == 'u') {
                unsigned lo = hex4(s + i + 2);
                if (lo >= 0xdc00 && lo < 0xe000) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    i += 6;
                }
            }
            /* A lone surrogate has no UTF-8 form: U+FFFD, as Python's
             * json module would keep it unencodable. */
            if (cp >= 0xd800 && cp < 0xe000)
                cp = 0xfffd;
            o += put_utf8(d + o, cp);
            break;
        }
        default: d[o++] = e; break; /* " \ / */
        }
    }
    d[o] = 0;
    *out_len = o;
    return d;
}

/* Shortest "%.*g" text that reads back as the same double: what Python's
 * repr prints for a float (without its trailing ".0" rule). */
const char *st_format_double(double v, char *buf, size_t cap)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    return buf;
}

size_t st_utf8_seq_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return len;
}

void st_jv_write_string(FILE *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    putc('"', out);
    size_t i = 0;
    while (i < len) {
        unsigned char c = p[i];
        if (c >= 0x80) {
            size_t n = st_utf8_seq_len(p + i, len - i);
            if (n == 0) {
                fputs("\\ufffd", out);
                i++;
            } else {
                fwrite(p + i, 1, n, out);
                i += n;
            }
            continue;
        }
        switch (c) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\r': fputs("\\r", out); break;
        case '\t': fputs("\\t", out); break;
        case '\b': fputs("\\b", out); break;
        case '\f': fputs("\\f", out); break;
        default:
            if (c < 0x20 || c == 0x7f) {
                fputs("\\u00", out);
                putc(hex[c >> 4], out);
                putc(hex[c & 15], out);
            } else {
                putc(c, out);
            }
        }
        i++;
    }
    putc('"', out);
}
