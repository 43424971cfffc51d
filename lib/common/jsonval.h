/* JSON values inside metadata strings (jsonval.c): bounded syntax check,
 * pretty-printing, object members, string decoding and writing. Shared by
 * the model operations and the CLI. Not installed. */
#ifndef ST_JSONVAL_H
#define ST_JSONVAL_H

#include "common/internal.h"

#include <stdio.h>


/* A byte range of a JSON text. */
typedef struct st_span {
    const char *s;
    size_t n;
} st_span;

/* True when s is one JSON value (whitespace around it allowed), nested at
 * most 64 deep. */
ST_INTERNAL bool st_jv_valid(const char *s, size_t n);

/* True when s is a valid JSON object or array (a value worth
 * pretty-printing: kohya's ss_tag_frequency, modelspec.*, ...). */
ST_INTERNAL bool st_jv_is_container(const char *s, size_t n);

/* Pretty-prints a valid JSON value, two spaces per level, continuation
 * lines indented `level` levels. Strings are written as they are in s.
 * Returns false (printing nothing) when s is not valid. */
ST_INTERNAL bool st_jv_pretty(FILE *out, const char *s, size_t n, int level);

/* Iterates the members of a JSON object: start with *pos = 0; each call
 * sets key (the raw string, quotes included) and value (raw JSON) and
 * returns true, false at the end or on a syntax error. */
ST_INTERNAL bool st_jv_object_next(const char *s, size_t n, size_t *pos, st_span *key, st_span *value);

/* Decodes a raw JSON string (quotes included) to a malloc'ed
 * NUL-terminated UTF-8 string; NULL when s is not one string or on
 * out-of-memory. A lone surrogate escape becomes U+FFFD. */
ST_INTERNAL char *st_jv_string_decode(const char *s, size_t n, size_t *out_len);

/* The shortest decimal text that reads back as v (Python's float repr). */
ST_INTERNAL const char *st_format_double(double v, char *buf, size_t cap);

/* Length of the valid UTF-8 sequence starting at p (1 for ASCII), or 0
 * when p does not start one (as Rust's str::from_utf8 judges); n >= 1. */
ST_INTERNAL size_t st_utf8_seq_len(const unsigned char *p, size_t n);

/* Writes bytes as a JSON string, quotes included. Valid UTF-8 is kept as
 * is; ", \ and control characters (NUL included) are escaped; each byte of
 * an invalid UTF-8 sequence becomes U+FFFD, so the output is valid JSON. */
ST_INTERNAL void st_jv_write_string(FILE *out, const char *s, size_t len);

#endif
