/* Unit tests of the CLI's shared helpers (programs/cli_util.c): JSON string
 * escaping, human-readable numbers, printable names, eliding, globbing. */
#include "../programs/cli_util.c"

#include "test.h"

/* cli_json_string into a string, via a memory stream. */
static char *json_of(const char *s, size_t len)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f)
        return NULL;
    cli_json_string(f, s, len);
    fclose(f);
    return buf;
}

static int json_is(const char *s, size_t len, const char *want)
{
    char *got = json_of(s, len);
    int ok = got && strcmp(got, want) == 0;
    if (!ok)
        fprintf(stderr, "json: got %s want %s\n", got ? got : "(null)", want);
    free(got);
    return ok;
}

/* Every backslash starts a whole \xNN or \uXXXX escape. */
static int escapes_whole(const char *s)
{
    for (const char *p = s; *p; p++) {
        if (*p != '\\')
            continue;
        size_t k = p[1] == 'x' ? 2 : p[1] == 'u' ? 4 : 0;
        if (!k)
            return 0;
        for (size_t i = 0; i < k; i++)
            if (!strchr("0123456789abcdef", p[2 + i]) || !p[2 + i])
                return 0;
        p += 1 + k;
    }
    return 1;
}

static int glob(const char *pattern, const char *name)
{
    return cli_glob_match(pattern, name, strlen(name));
}

int main(void)
{
    /* JSON strings: escapes, NUL, valid and invalid UTF-8. */
    CHECK(json_is("abc", 3, "\"abc\""), "failed");
    CHECK(json_is("a\"b\\c", 5, "\"a\\\"b\\\\c\""), "failed");
    CHECK(json_is("a\0b", 3, "\"a\\u0000b\""), "failed");
    CHECK(json_is("\n\t\x01\x7f", 4, "\"\\n\\t\\u0001\\u007f\""), "failed");
    CHECK(json_is("\xc3\xa9", 2, "\"\xc3\xa9\""), "failed");                 /* é kept */
    CHECK(json_is("\xf0\x9f\x98\x80", 4, "\"\xf0\x9f\x98\x80\""), "failed"); /* emoji kept */
    CHECK(json_is("\xff", 1, "\"\\ufffd\""), "failed");
    CHECK(json_is("\xc3", 1, "\"\\ufffd\""), "failed");                      /* truncated */
    CHECK(json_is("\xc0\xaf", 2, "\"\\ufffd\\ufffd\""), "failed");           /* overlong */
    CHECK(json_is("\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\""), "failed"); /* surrogate */
    CHECK(json_is("\xf4\x90\x80\x80", 4, "\"\\ufffd\\ufffd\\ufffd\\ufffd\""), "failed"); /* > U+10FFFF */
    CHECK(json_is("", 0, "\"\""), "failed");

    /* Sizes and counts. */
    char b[64];
    CHECK(strcmp(cli_human_size(0, b, sizeof b), "0 B") == 0, "%s", b);
    CHECK(strcmp(cli_human_size(1023, b, sizeof b), "1023 B") == 0, "%s", b);
    CHECK(strcmp(cli_human_size(1024, b, sizeof b), "1.0 KiB") == 0, "%s", b);
    CHECK(strcmp(cli_human_size(2560, b, sizeof b), "2.5 KiB") == 0, "%s", b);
    CHECK(strcmp(cli_human_size(1048575, b, sizeof b), "1.0 MiB") == 0, "%s", b);
    CHECK(strcmp(cli_human_size(UINT64_MAX, b, sizeof b), "16.0 EiB") == 0, "%s", b);
    CHECK(strcmp(cli_human_count(999, b, sizeof b), "999") == 0, "%s", b);
    CHECK(strcmp(cli_human_count(859520964, b, sizeof b), "859.5M") == 0, "%s", b);
    CHECK(strcmp(cli_human_count(12300, b, sizeof b), "12.3K") == 0, "%s", b);
    CHECK(strcmp(cli_human_count(999999, b, sizeof b), "1.0M") == 0, "%s", b);
    CHECK(strcmp(cli_human_count(2567000000ull, b, sizeof b), "2.6B") == 0, "%s", b);
    CHECK(strcmp(cli_grouped(0, b, sizeof b), "0") == 0, "%s", b);
    CHECK(strcmp(cli_grouped(1234567, b, sizeof b), "1,234,567") == 0, "%s", b);
    CHECK(strcmp(cli_grouped(100, b, sizeof b), "100") == 0, "%s", b);
    CHECK(strcmp(cli_grouped(UINT64_MAX, b, sizeof b), "18,446,744,073,709,551,615") == 0, "%s", b);

    /* Shapes. */
    uint64_t shape[] = {320, 4, UINT64_MAX};
    char *s = cli_shape_text(shape, 3);
    CHECK(s && strcmp(s, "[320, 4, 18446744073709551615]") == 0, "%s", s);
    free(s);
    s = cli_shape_text(shape, 0);
    CHECK(s && strcmp(s, "[]") == 0, "failed");
    free(s);

    /* Printable names. */
    s = cli_printable("a\0b\\c\n\xc3\xa9\xff\xc2\x85", 11);
    CHECK(s && strcmp(s, "a\\x00b\\x5cc\\x0a\xc3\xa9\\xff\\xc2\\x85") == 0, "%s", s);
    free(s);

    /* Bidi controls, zero-width characters and the BOM cannot hide. */
    s = cli_printable("a\xe2\x80\xae" "b\xef\xbb\xbf\xe2\x80\x8b" "c\xc2\xad\xe2\x82\xac", 17);
    CHECK(s && strcmp(s, "a\\u202eb\\ufeff\\u200bc\\u00ad\xe2\x82\xac") == 0, "%s", s);
    free(s);

    /* Eliding keeps both ends and counts UTF-8 characters as one column. */
    char e1[] = "lora_unet_down_blocks_0_attentions_0.lora_down.weight";
    cli_elide_middle(e1, 20);
    CHECK(strcmp(e1, "lora_une...wn.weight") == 0, "%s", e1);
    CHECK(cli_text_columns(e1) == 20, "failed");
    char e2[] = "short";
    cli_elide_middle(e2, 20);
    CHECK(strcmp(e2, "short") == 0, "failed");
    char e3[] = "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"; /* 8 x é */
    cli_elide_middle(e3, 7);
    CHECK(cli_text_columns(e3) == 7, "%s", e3);
    CHECK(strcmp(e3, "\xc3\xa9\xc3\xa9...\xc3\xa9\xc3\xa9") == 0, "%s", e3);

    /* Escapes are never cut in half. */
    for (size_t w = 5; w < 40; w++) {
        char e4[] = "abcdefgh\\x00\\x01\\x02\\x03\\u202eqrstuvwxyz\\x04\\x05";
        cli_elide_middle(e4, w);
        CHECK(cli_text_columns(e4) <= w, "%zu: %s", w, e4);
        CHECK(escapes_whole(e4), "%zu: %s", w, e4);
    }
    char e5[] = "ab\\x00\\x01\\x02\\x03\\x04\\x05\\x06\\x07\\x08cd";
    cli_elide_middle(e5, 12);
    CHECK(strcmp(e5, "ab...cd") == 0, "%s", e5);

    /* Globs. */
    CHECK(glob("*", ""), "failed");
    CHECK(glob("*", "anything.at.all"), "failed");
    CHECK(glob("*.alpha", "lora_te_x.alpha"), "failed");
    CHECK(!glob("*.alpha", "lora_te_x.alpha2"), "failed");
    CHECK(glob("lora_*_down*", "lora_unet_a.lora_down.weight"), "failed");
    CHECK(glob("a?c", "abc"), "failed");
    CHECK(!glob("a?c", "ac"), "failed");
    CHECK(glob("[ab]x", "bx"), "failed");
    CHECK(!glob("[ab]x", "cx"), "failed");
    CHECK(glob("[a-c]x", "bx"), "failed");
    CHECK(glob("[!a-c]x", "dx"), "failed");
    CHECK(!glob("[!a-c]x", "ax"), "failed");
    CHECK(glob("[^a]x", "bx"), "failed");
    CHECK(glob("[]]", "]"), "failed");
    CHECK(glob("a[", "a["), "failed");          /* unclosed bracket is literal */
    CHECK(glob("\\*", "*"), "failed");
    CHECK(!glob("\\*", "x"), "failed");
    CHECK(glob("*a*b*c*", "xxaxxbxxcxx"), "failed");
    CHECK(!glob("*a*b*c*", "xxaxxcxxbxx"), "failed");
    CHECK(cli_glob_match("a?b", "a\0b", 3), "failed");      /* NUL inside a name */
    CHECK(cli_glob_match("*b", "a\0b", 3), "failed");
    CHECK(!cli_glob_match("a", "a\0b", 3), "failed");
    /* Pathological pattern: must stay fast (linear backtracking). */
    char name[4001];
    memset(name, 'a', 4000);
    name[4000] = 0;
    CHECK(!glob("*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b", name), "failed");

    /* Exit codes. */
    CHECK(cli_exit_code(ST_OK) == 0, "failed");
    CHECK(cli_exit_code(ST_E_HEADER_TOO_SMALL) == 1, "failed");
    CHECK(cli_exit_code(ST_E_INCOMPLETE) == 1, "failed");
    CHECK(cli_exit_code(ST_E_IO) == 2, "failed");
    CHECK(cli_exit_code(ST_E_ARG) == 2, "failed");
    /* checkpoint verdicts exit 1 like safetensors ones; unsupported stays 2 */
    for (int c = ST_E_CKPT_FORMAT; c <= ST_E_CKPT_TENSOR; c++)
        CHECK(cli_exit_code(c) == 1 && cli_is_validation_code(c), "checkpoint code %d exits 1", c);
    CHECK(cli_exit_code(ST_E_UNSUPPORTED) == 2 && !cli_is_validation_code(ST_E_UNSUPPORTED), "unsupported: 2");
    CHECK(cli_exit_code(ST_E_NOMEM) == 2 && cli_exit_code(ST_E_CALLBACK) == 2, "nomem, callback: 2");

    /* Messages gain the offset only when they lack it. */
    st_error err = {ST_E_OFFSETS, 120, "tensor 'x' begins at 8"};
    char m[600];
    CHECK(strcmp(cli_error_message(&err, m, sizeof m), "tensor 'x' begins at 8 (at byte 120)") == 0, "%s", m);
    err.offset = 8;
    CHECK(strcmp(cli_error_message(&err, m, sizeof m), "tensor 'x' begins at 8") == 0, "%s", m);
    err.offset = ST_NO_OFFSET;
    CHECK(strcmp(cli_error_message(&err, m, sizeof m), "tensor 'x' begins at 8") == 0, "%s", m);
    TEST_END();
}
