/* Fuzz target: the JSON-in-metadata helpers (lib/common/jsonval.c) that
 * `meta` and `merge` run on metadata values a file's author chose: syntax
 * check, pretty-printer, object members, string decoding and writing.
 *
 * Properties: pretty-printing succeeds exactly on valid text and its
 * output is valid JSON again; object members are spans inside the input,
 * each key a string that decodes; a decoded string is no longer than its
 * raw form; st_jv_write_string always writes valid JSON. *
 * fuzz-min-seconds: 60 (one of the CLI's own parsers: at least this long
 * in `make test`) */
#include "fuzz_util.h"
#include "common/jsonval.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    bool valid = st_jv_valid(s, size);
    char *out = NULL;
    size_t out_len = 0;
    FILE *o = open_memstream(&out, &out_len);
    FUZZ_ASSERT(o != NULL);
    bool printed = st_jv_pretty(o, s, size, 0);
    fclose(o);
    FUZZ_ASSERT(printed == valid, "pretty %d valid %d", printed, valid);
    if (printed)
        FUZZ_ASSERT(st_jv_valid(out, out_len), "pretty-printed text is not valid JSON");
    free(out);
    if (st_jv_is_container(s, size))
        FUZZ_ASSERT(valid);

    size_t pos = 0, members = 0;
    st_span k, v;
    while (st_jv_object_next(s, size, &pos, &k, &v) && members < 100000) {
        FUZZ_ASSERT(k.s >= s && k.s + k.n <= s + size && v.s >= s && v.s + v.n <= s + size);
        FUZZ_ASSERT(pos <= size);
        size_t dl = 0;
        char *d = st_jv_string_decode(k.s, k.n, &dl);
        FUZZ_ASSERT(d != NULL, "a member key that does not decode");
        FUZZ_ASSERT(dl <= k.n);
        free(d);
        members++;
    }
    size_t dl = 0;
    char *d = st_jv_string_decode(s, size, &dl);
    if (d) {
        FUZZ_ASSERT(dl <= size && d[dl] == 0);
        free(d);
    }

    out = NULL;
    o = open_memstream(&out, &out_len);
    FUZZ_ASSERT(o != NULL);
    st_jv_write_string(o, s, size);
    fclose(o);
    FUZZ_ASSERT(st_jv_valid(out, out_len), "written string is not valid JSON");
    free(out);
    return 0;
}
