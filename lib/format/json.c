/*
 * The strict lexical layer of the header parser: UTF-8 validation, a full
 * RFC 8259 syntax check with the reference's nesting limit, and string
 * decoding. The syntax check is iterative (an explicit container stack of
 * at most ST_MAX_NESTING entries), so a hostile header cannot exhaust the C
 * stack however deeply it nests.
 *
 * Where RFC 8259 leaves room, serde_json (the reference's parser) decides:
 * lone surrogate escapes are errors, and a number whose value overflows an
 * IEEE double is an error ("number out of range") even in a field that is
 * otherwise ignored.
 */
#include "format/json.h"

#include <string.h>

/* ---- UTF-8 ------------------------------------------------------------- */

size_t st_utf8_invalid_at(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        /* ASCII runs dominate real headers: skip them 8 bytes at a time. */
        while (i + 8 <= n) {
            uint64_t v;
            memcpy(&v, s + i, 8);
            if (v & 0x8080808080808080ull)
                break;
            i += 8;
        }
        if (i >= n)
            break;
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned char lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            if (c == 0xe0)
                lo = 0xa0; /* overlong */
            else if (c == 0xed)
                hi = 0x9f; /* UTF-16 surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            if (c == 0xf0)
                lo = 0x90; /* overlong */
            else if (c == 0xf4)
                hi = 0x8f; /* above U+10FFFF */
        } else {
            return i;
        }
        if (n - i <= need)
            return i;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xc0) != 0x80)
                return i;
        i += need + 1;
    }
    return SIZE_MAX;
}

/* ---- helpers ------------------------------------------------------------ */

static inline bool is_ws(unsigned char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

static inline bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Four hex digits at s[i..i+4) or -1. */
static long hex4(const unsigned char *s, size_t n, size_t i)
{
    if (n - i < 4)
        return -1;
    long v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hex_value(s[i + k]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

static int syntax_error(st_error *err, uint64_t base, size_t pos, const char *what)
{
    return st_fail(err, ST_E_HEADER_JSON, base + pos,
                   "invalid JSON at header byte %zu (file offset %llu): %s", pos,
                   (unsigned long long)(base + pos), what);
}

/* ---- strings -------------------------------------------------------------- */

/* Scans a string whose opening quote is at s[*pos]; leaves *pos after the
 * closing quote. Sets *has_escape when the string needs decoding. */
static int scan_string(const unsigned char *s, size_t n, size_t *pos, bool *has_escape,
                       uint64_t base, st_error *err)
{
    size_t i = *pos + 1;
    bool escaped = false;
    for (;;) {
        /* Fast path: 8 bytes at a time up to the first '"', '\\' or control
         * byte. The lowest flagged byte of each test is exact, so the count
         * of trailing zero bits finds it without a byte loop. */
        while (i + 8 <= n) {
            uint64_t v;
            memcpy(&v, s + i, 8);
            uint64_t quote = v ^ 0x2222222222222222ull;
            uint64_t bslash = v ^ 0x5c5c5c5c5c5c5c5cull;
#define HAS_ZERO(x) (((x) - 0x0101010101010101ull) & ~(x) & 0x8080808080808080ull)
            uint64_t ctrl = (v - 0x2020202020202020ull) & ~v & 0x8080808080808080ull;
            uint64_t mask = HAS_ZERO(quote) | HAS_ZERO(bslash) | ctrl;
#undef HAS_ZERO
            if (mask) {
                i += (size_t)__builtin_ctzll(mask) >> 3;
                break;
            }
            i += 8;
        }
        if (i >= n)
            return syntax_error(err, base, *pos, "unterminated string");
        unsigned char c = s[i];
        if (c == '"') {
            *pos = i + 1;
            if (has_escape)
                *has_escape = escaped;
            return ST_OK;
        }
        if (c < 0x20)
            return syntax_error(err, base, i, "control character in string (must be escaped)");
        if (c != '\\') {
            i++;
            continue;
        }
        escaped = true;
        if (i + 1 >= n)
            return syntax_error(err, base, i, "unterminated escape");
        unsigned char e = s[i + 1];
        switch (e) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            i += 2;
            break;
        case 'u': {
            long u = hex4(s, n, i + 2);
            if (u < 0)
                return syntax_error(err, base, i, "invalid \\u escape");
            if (u >= 0xdc00 && u <= 0xdfff)
                return syntax_error(err, base, i, "lone trailing surrogate in \\u escape");
            if (u >= 0xd800 && u <= 0xdbff) {
                long lo = -1;
                if (n - i >= 12 && s[i + 6] == '\\' && s[i + 7] == 'u')
                    lo = hex4(s, n, i + 8);
                if (lo < 0xdc00 || lo > 0xdfff)
                    return syntax_error(err, base, i, "lone leading surrogate in \\u escape");
                i += 12;
            } else {
                i += 6;
            }
            break;
        }
        default:
            return syntax_error(err, base, i, "invalid escape");
        }
    }
}

size_t st_json_decode_string(const char *src, size_t len, char *dst)
{
    /* Input was accepted by the syntax check, so every escape is complete
     * and surrogates are paired; the bounds checks stay anyway. */
    const unsigned char *s = (const unsigned char *)src;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = s[i];
        if (c != '\\' || i + 1 >= len) {
            dst[o++] = (char)c;
            i++;
            continue;
        }
        unsigned char e = s[i + 1];
        i += 2;
        switch (e) {
        case 'b': dst[o++] = '\b'; break;
        case 'f': dst[o++] = '\f'; break;
        case 'n': dst[o++] = '\n'; break;
        case 'r': dst[o++] = '\r'; break;
        case 't': dst[o++] = '\t'; break;
        case 'u': {
            long cp = hex4(s, len, i);
            if (cp < 0)
                cp = 0xfffd;
            else
                i += 4;
            if (cp >= 0xd800 && cp <= 0xdbff && i + 6 <= len && s[i] == '\\' && s[i + 1] == 'u') {
                long lo = hex4(s, len, i + 2);
                if (lo >= 0xdc00 && lo <= 0xdfff) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    i += 6;
                }
            }
            if (cp < 0x80) {
                dst[o++] = (char)cp;
            } else if (cp < 0x800) {
                dst[o++] = (char)(0xc0 | (cp >> 6));
                dst[o++] = (char)(0x80 | (cp & 0x3f));
            } else if (cp < 0x10000) {
                dst[o++] = (char)(0xe0 | (cp >> 12));
                dst[o++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                dst[o++] = (char)(0x80 | (cp & 0x3f));
            } else {
                dst[o++] = (char)(0xf0 | (cp >> 18));
                dst[o++] = (char)(0x80 | ((cp >> 12) & 0x3f));
                dst[o++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                dst[o++] = (char)(0x80 | (cp & 0x3f));
            }
            break;
        }
        default: dst[o++] = (char)e; break; /* '"', '\\', '/' */
        }
    }
    return o;
}

/* ---- numbers -------------------------------------------------------------- */

/* 2^1024 - 2^970, the smallest decimal that rounds to +inf as a double,
 * as 0.DIGITS x 10^309 (trailing zeros dropped). */
static const char double_overflow_digits[] =
    "1797693134862315807937289714053034150799341327100378269361737789804449682927647509466490"
    "1797758720709633028641669288791094655554785194040263065748867150582068190890200070838367"
    "6273854845817711531764475730270069855571366959622842914819860834936475292719074168444365"
    "510704342711559699508093042880177904174497792";

/* True when the number text (valid JSON grammar) would be +-inf as a double. */
static bool number_overflows_double(const unsigned char *s, size_t n)
{
    size_t i = 0;
    if (s[i] == '-')
        i++;
    /* Significant digits D and decimal exponent E with value 0.D x 10^E. */
    const unsigned char *digits[2] = {NULL, NULL};
    size_t dlen[2] = {0, 0};
    long long e = 0;
    size_t int_start = i;
    while (i < n && is_digit(s[i]))
        i++;
    size_t int_end = i;
    size_t frac_start = i, frac_end = i;
    if (i < n && s[i] == '.') {
        frac_start = ++i;
        while (i < n && is_digit(s[i]))
            i++;
        frac_end = i;
    }
    long long exp10 = 0;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        bool neg = false;
        if (s[i] == '+' || s[i] == '-')
            neg = s[i++] == '-';
        while (i < n && is_digit(s[i])) {
            if (exp10 < 1000000000)
                exp10 = exp10 * 10 + (s[i] - '0');
            i++;
        }
        if (neg)
            exp10 = -exp10;
    }
    /* Skip leading zeros of the integer part, then of the fraction. */
    size_t a = int_start;
    while (a < int_end && s[a] == '0')
        a++;
    if (a < int_end) {
        digits[0] = s + a;
        dlen[0] = int_end - a;
        digits[1] = s + frac_start;
        dlen[1] = frac_end - frac_start;
        e = (long long)(int_end - a);
    } else {
        size_t b = frac_start;
        while (b < frac_end && s[b] == '0')
            b++;
        if (b == frac_end)
            return false; /* zero */
        digits[0] = s + b;
        dlen[0] = frac_end - b;
        e = -(long long)(b - frac_start);
    }
    e += exp10;
    if (e != 309)
        return e > 309;
    /* Same magnitude as the boundary: compare digit strings. */
    size_t bl = sizeof double_overflow_digits - 1, k = 0;
    for (int part = 0; part < 2; part++) {
        for (size_t j = 0; j < dlen[part]; j++, k++) {
            char b = k < bl ? double_overflow_digits[k] : '0';
            if ((char)digits[part][j] != b)
                return (char)digits[part][j] > b;
        }
    }
    /* D is a prefix of (or equal to) the boundary. */
    for (; k < bl; k++)
        if (double_overflow_digits[k] != '0')
            return false;
    return true;
}

static int scan_number(const unsigned char *s, size_t n, size_t *pos, uint64_t base,
                       st_error *err)
{
    size_t start = *pos, i = *pos;
    if (s[i] == '-')
        i++;
    if (i >= n || !is_digit(s[i]))
        return syntax_error(err, base, start, "invalid number");
    if (s[i] == '0') {
        i++;
        if (i < n && is_digit(s[i]))
            return syntax_error(err, base, start, "invalid number (leading zero)");
    } else {
        while (i < n && is_digit(s[i]))
            i++;
    }
    bool simple_int = true;
    if (i < n && s[i] == '.') {
        simple_int = false;
        i++;
        if (i >= n || !is_digit(s[i]))
            return syntax_error(err, base, start, "invalid number (digit expected after '.')");
        while (i < n && is_digit(s[i]))
            i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        simple_int = false;
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= n || !is_digit(s[i]))
            return syntax_error(err, base, start, "invalid number (digit expected in exponent)");
        while (i < n && is_digit(s[i]))
            i++;
    }
    /* Integers of up to 19 digits can never overflow a double. */
    if ((!simple_int || i - start > 19) && number_overflows_double(s + start, i - start))
        return syntax_error(err, base, start, "number out of range");
    *pos = i;
    return ST_OK;
}

int st_json_scan_number(const char *s, size_t n, size_t *pos, uint64_t base, st_error *err)
{
    return scan_number((const unsigned char *)s, n, pos, base, err);
}

int st_json_scan_string(const char *s, size_t n, size_t *pos, bool *has_escape,
                        uint64_t base, st_error *err)
{
    return scan_string((const unsigned char *)s, n, pos, has_escape, base, err);
}

/* ---- syntax ------------------------------------------------------------- */

static size_t skip_ws(const unsigned char *s, size_t n, size_t i)
{
    while (i < n && is_ws(s[i]))
        i++;
    return i;
}

int st_json_check(const char *text, size_t n, uint64_t base, st_error *err)
{
    const unsigned char *s = (const unsigned char *)text;
    unsigned char stack[ST_MAX_NESTING]; /* '{' or '[' */
    size_t depth = 0;
    size_t i = skip_ws(s, n, 0);
    int rc;

value:
    if (i >= n)
        return syntax_error(err, base, i, depth ? "unexpected end of header" : "empty header");
    switch (s[i]) {
    case '{':
    case '[':
        if (depth == ST_MAX_NESTING)
            return syntax_error(err, base, i, "nesting deeper than 127 arrays and objects");
        stack[depth++] = s[i];
        i = skip_ws(s, n, i + 1);
        if (i < n && s[i] == (stack[depth - 1] == '{' ? '}' : ']')) {
            depth--;
            i++;
            goto after_value;
        }
        if (stack[depth - 1] == '{')
            goto key;
        goto value;
    case '"':
        if ((rc = scan_string(s, n, &i, NULL, base, err)))
            return rc;
        goto after_value;
    case 't':
        if (n - i < 4 || memcmp(s + i, "true", 4))
            return syntax_error(err, base, i, "invalid literal");
        i += 4;
        goto after_value;
    case 'f':
        if (n - i < 5 || memcmp(s + i, "false", 5))
            return syntax_error(err, base, i, "invalid literal");
        i += 5;
        goto after_value;
    case 'n':
        if (n - i < 4 || memcmp(s + i, "null", 4))
            return syntax_error(err, base, i, "invalid literal");
        i += 4;
        goto after_value;
    default:
        if (s[i] == '-' || is_digit(s[i])) {
            if ((rc = scan_number(s, n, &i, base, err)))
                return rc;
            goto after_value;
        }
        return syntax_error(err, base, i, "expected a value");
    }

key:
    if (i >= n)
        return syntax_error(err, base, i, "unexpected end of header");
    if (s[i] != '"')
        return syntax_error(err, base, i, "expected a string key");
    if ((rc = scan_string(s, n, &i, NULL, base, err)))
        return rc;
    i = skip_ws(s, n, i);
    if (i >= n || s[i] != ':')
        return syntax_error(err, base, i, "expected ':' after object key");
    i = skip_ws(s, n, i + 1);
    goto value;

after_value:
    i = skip_ws(s, n, i);
    if (depth == 0) {
        if (i != n)
            return syntax_error(err, base, i, "trailing characters after the header object");
        return ST_OK;
    }
    if (i >= n)
        return syntax_error(err, base, i, "unexpected end of header");
    if (s[i] == ',') {
        i = skip_ws(s, n, i + 1);
        if (stack[depth - 1] == '{')
            goto key;
        goto value;
    }
    if (s[i] == (stack[depth - 1] == '{' ? '}' : ']')) {
        depth--;
        i++;
        goto after_value;
    }
    return syntax_error(err, base, i,
                        stack[depth - 1] == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
}
