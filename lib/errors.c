/* Error codes, their stable names, and message formatting. */
#include "internal.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static const struct {
    int code;
    const char *name;
    const char *description;
} code_table[] = {
    {ST_OK, "ok", "success"},
    {ST_E_HEADER_TOO_SMALL, "header_too_small", "file is shorter than the 8-byte header length"},
    {ST_E_HEADER_TOO_LARGE, "header_too_large", "header length is over 100,000,000 bytes"},
    {ST_E_HEADER_LENGTH, "header_length", "header length runs past the end of the file"},
    {ST_E_HEADER_UTF8, "header_utf8", "header is not valid UTF-8"},
    {ST_E_HEADER_JSON, "header_json", "header is not valid JSON"},
    {ST_E_HEADER_SCHEMA, "header_schema", "header JSON does not describe tensors and metadata"},
    {ST_E_DUPLICATE_KEY, "duplicate_key", "a key is repeated in a JSON object of the header"},
    {ST_E_OFFSETS, "offsets", "tensor data offsets leave a hole, overlap or run backwards"},
    {ST_E_OVERFLOW, "overflow", "element or bit count overflows 64 bits"},
    {ST_E_MISALIGNED, "misaligned", "sub-byte tensor does not fill a whole number of bytes"},
    {ST_E_SIZE_MISMATCH, "size_mismatch", "tensor byte range does not match its shape and dtype"},
    {ST_E_INCOMPLETE, "incomplete", "tensor data does not end exactly at the end of the file"},
    {ST_E_IO, "io", "input/output error"},
    {ST_E_NOMEM, "nomem", "out of memory"},
    {ST_E_ARG, "invalid_argument", "invalid argument"},
    {ST_E_NOT_FOUND, "not_found", "not found"},
    {ST_E_SLICE, "slice", "slice out of range or not on a byte boundary"},
    {ST_E_RANGE, "range", "read past the end of the tensor"},
    {ST_E_UNSUPPORTED, "unsupported", "operation not supported"},
    {ST_E_CALLBACK, "callback", "a callback reported failure"},
    {ST_E_CKPT_FORMAT, "ckpt_format", "not a recognised checkpoint format"},
    {ST_E_ZIP, "zip", "malformed zip container"},
    {ST_E_PICKLE, "pickle", "malformed or unsupported pickle"},
    {ST_E_PICKLE_LIMIT, "pickle_limit", "pickle exceeds a safety limit"},
    {ST_E_UNSAFE, "unsafe", "pickle references a dangerous global"},
    {ST_E_CKPT_TENSOR, "ckpt_tensor", "checkpoint tensor does not fit its storage"},
};

const char *st_code_name(int code)
{
    for (size_t i = 0; i < sizeof code_table / sizeof code_table[0]; i++)
        if (code_table[i].code == code)
            return code_table[i].name;
    return "unknown";
}

const char *st_code_description(int code)
{
    for (size_t i = 0; i < sizeof code_table / sizeof code_table[0]; i++)
        if (code_table[i].code == code)
            return code_table[i].description;
    return "unknown error";
}

const char *st_version(void)
{
    return ST_VERSION_STRING;
}

int st_fail(st_error *err, int code, uint64_t offset, const char *fmt, ...)
{
    if (err) {
        err->code = code;
        err->offset = offset;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

void st_quote_name(char *dst, size_t cap, const char *name, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const size_t limit = 100;
    size_t o = 0;
    if (cap < 8) {
        if (cap)
            dst[0] = 0;
        return;
    }
    dst[o++] = '\'';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (i >= limit || o + 8 >= cap) {
            memcpy(dst + o, "...", 3);
            o += 3;
            break;
        }
        if (c < 0x20 || c == 0x7f || c == '\'' || c == '\\') {
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 15];
        } else {
            dst[o++] = (char)c;
        }
    }
    dst[o++] = '\'';
    dst[o] = 0;
}

int st_name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen ? 1 : 0;
}

uint64_t st_hash_bytes_seeded(uint64_t seed, const void *data, size_t len)
{
    /* 8 bytes per step, multiply-xorshift mixing; good enough for a table
     * whose keys an attacker chooses only because lookups compare names in
     * full and the table is sized to the tensor count. */
    const unsigned char *p = data;
    uint64_t h = (0x9e3779b97f4a7c15ull ^ seed) ^ (len * 0xff51afd7ed558ccdull);
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
        p += 8;
        len -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, p, len);
    h = (h ^ v ^ ((uint64_t)len << 56)) * 0x94d049bb133111ebull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h;
}

uint64_t st_hash_seed(const void *salt)
{
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        seed = ((uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 32) * 0x9e3779b97f4a7c15ull ^
               (uint64_t)(uintptr_t)salt;
    }
    return seed;
}
