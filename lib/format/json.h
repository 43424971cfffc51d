/* Strict JSON lexing for safetensors headers (see json.c). */
#ifndef ST_JSON_H
#define ST_JSON_H

#include "common/internal.h"

/* Index of the first byte that starts an invalid UTF-8 sequence (as Rust's
 * str::from_utf8 judges: no overlongs, surrogates or code points above
 * U+10FFFF), or SIZE_MAX when all n bytes are valid. */
ST_INTERNAL size_t st_utf8_invalid_at(const unsigned char *s, size_t n);

/* Full syntax check of one JSON document (whitespace around it allowed),
 * nesting at most ST_MAX_NESTING deep. `base` is added to positions in
 * error offsets. Returns ST_OK or ST_E_HEADER_JSON. Input must be UTF-8. */
ST_INTERNAL int st_json_check(const char *s, size_t n, uint64_t base, st_error *err);

/* Scans the string starting at the quote s[*pos]; *pos ends after it. */
ST_INTERNAL int st_json_scan_string(const char *s, size_t n, size_t *pos, bool *has_escape,
                                    uint64_t base, st_error *err);

/* Scans the number starting at s[*pos]; *pos ends after it. */
ST_INTERNAL int st_json_scan_number(const char *s, size_t n, size_t *pos, uint64_t base,
                                    st_error *err);

/* Decodes the body of a checked JSON string (between the quotes, len bytes)
 * into dst, which needs room for len bytes. Returns the decoded length. */
ST_INTERNAL size_t st_json_decode_string(const char *src, size_t len, char *dst);

#endif
