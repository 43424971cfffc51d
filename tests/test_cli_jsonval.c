/* Unit tests of the CLI's JSON-in-metadata helpers (lib/common/jsonval.c):
 * syntax check and its depth limit, pretty-printing, object members,
 * string decoding, shortest float text. */
#include "common/jsonval.h"

#include "test.h"

static bool valid(const char *s)
{
    return st_jv_valid(s, strlen(s));
}

static char *pretty(const char *s)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f)
        return NULL;
    if (!st_jv_pretty(f, s, strlen(s), 0)) {
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    return buf;
}

static bool decodes_to(const char *raw, const char *want, size_t want_len)
{
    size_t n = 0;
    char *d = st_jv_string_decode(raw, strlen(raw), &n);
    bool ok = d && n == want_len && memcmp(d, want, n) == 0;
    free(d);
    return ok;
}

int main(void)
{
    /* syntax */
    const char *good[] = {"{}", "[]", " {\"a\": [1, -2.5e3, true, false, null, \"x\"]} ",
                          "\"\\u00e9\\n\"", "0", "-0.0", "{\"a\":{\"b\":{}}}", "[[],[[]]]"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        CHECK(valid(good[i]), "valid: %s", good[i]);
    const char *bad[] = {"", "{", "{\"a\"}", "{\"a\":1,}", "[1,]", "01", "1.", "-", "tru",
                         "\"a", "\"\\x\"", "\"\\u12g4\"", "{} {}", "{a:1}", "[1 2]",
                         "\"tab\there\"", "1e", "NaN"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(!valid(bad[i]), "invalid: %s", bad[i]);
    /* depth: 64 nested containers pass, 65 do not (no deep recursion on
     * hostile metadata) */
    char deep[200];
    memset(deep, '[', 64);
    memset(deep + 64, ']', 64);
    deep[128] = 0;
    CHECK(valid(deep), "64 levels");
    memset(deep, '[', 65);
    memset(deep + 65, ']', 65);
    deep[130] = 0;
    CHECK(!valid(deep), "65 levels refused");
    static char huge[200001];
    memset(huge, '[', 100000);
    memset(huge + 100000, ']', 100000);
    CHECK(!st_jv_valid(huge, 200000), "100000 levels refused quickly");

    CHECK(st_jv_is_container(" {\"a\": 1}", 9), "object is a container");
    CHECK(!st_jv_is_container("\"x\"", 3), "string is not");
    CHECK(!st_jv_is_container("{bad", 4), "invalid is not");

    /* pretty-printing */
    char *p = pretty("{\"a\":[1,{\"b\":null}],\"c\":{},\"d\":[]}");
    CHECK(p && strcmp(p, "{\n  \"a\": [\n    1,\n    {\n      \"b\": null\n    }\n  ],\n"
                         "  \"c\": {},\n  \"d\": []\n}") == 0,
          "pretty: %s", p ? p : "(null)");
    free(p);
    p = pretty("{ \"x\" :\t\"s p\" }");
    CHECK(p && strcmp(p, "{\n  \"x\": \"s p\"\n}") == 0, "pretty keeps strings: %s",
          p ? p : "(null)");
    free(p);
    CHECK(pretty("{") == NULL, "pretty refuses invalid JSON");

    /* members */
    const char *obj = "{\"k1\": \"v\", \"k2\" : {\"n\": [1,2]} , \"k3\":3}";
    size_t pos = 0, count = 0;
    st_span k, v;
    const char *keys[] = {"\"k1\"", "\"k2\"", "\"k3\""};
    const char *vals[] = {"\"v\"", "{\"n\": [1,2]}", "3"};
    while (st_jv_object_next(obj, strlen(obj), &pos, &k, &v)) {
        if (count < 3) {
            CHECK(k.n == strlen(keys[count]) && memcmp(k.s, keys[count], k.n) == 0, "key %zu",
                  count);
            CHECK(v.n == strlen(vals[count]) && memcmp(v.s, vals[count], v.n) == 0, "value %zu",
                  count);
        }
        count++;
    }
    CHECK(count == 3, "three members, got %zu", count);
    pos = 0;
    CHECK(!st_jv_object_next("[1]", 3, &pos, &k, &v), "an array has no members");
    pos = 0;
    CHECK(!st_jv_object_next("{}", 2, &pos, &k, &v), "empty object");

    /* string decoding */
    CHECK(decodes_to("\"a\\\"b\\\\c\\/d\\n\"", "a\"b\\c/d\n", 8), "simple escapes");
    CHECK(decodes_to("\"\\u00e9\\u20ac\"", "\xc3\xa9\xe2\x82\xac", 5), "BMP escapes");
    CHECK(decodes_to("\"\\ud83d\\ude00\"", "\xf0\x9f\x98\x80", 4), "surrogate pair");
    CHECK(decodes_to("\"\\ud83dx\"", "\xef\xbf\xbdx", 4), "lone surrogate -> U+FFFD");
    CHECK(decodes_to("\"\\u0000\"", "\0", 1), "NUL kept with its length");
    CHECK(decodes_to("\"\"", "", 0), "empty string");
    size_t n;
    CHECK(st_jv_string_decode("\"a\" ", 4, &n) == NULL, "one string only");
    CHECK(st_jv_string_decode("x", 1, &n) == NULL, "not a string");

    /* shortest float text */
    char buf[40];
    CHECK(strcmp(st_format_double(0.3, buf, sizeof buf), "0.3") == 0, "0.3: %s", buf);
    CHECK(strcmp(st_format_double(1.0, buf, sizeof buf), "1") == 0, "1: %s", buf);
    CHECK(strcmp(st_format_double(1.0 / 3, buf, sizeof buf), "0.3333333333333333") == 0,
          "1/3: %s", buf);
    CHECK(strcmp(st_format_double(-2.5e-7, buf, sizeof buf), "-2.5e-07") == 0, "small: %s",
          buf);
    TEST_END();
}
