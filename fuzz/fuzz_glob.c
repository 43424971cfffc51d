/* Fuzz target: name globs (st_name_glob_match, lib/common/glob.c), the
 * patterns of convert --only/--exclude/--drop and ls. The input is split at
 * its first NUL into a pattern and a name (which may hold NUL).
 *
 * Properties: "*" matches every name; a pattern without special characters
 * matches exactly itself; when P matches N, "*" P matches N and P "*"
 * matches N followed by anything (unless P ends in a lone backslash, which
 * would escape the added star). No input is slow: the matcher is linear in
 * pattern x name. *
 * fuzz-min-seconds: 60 (one of the CLI's own parsers: at least this long
 * in `make test`) */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool plain(const char *p)
{
    for (; *p; p++)
        if (*p == '*' || *p == '?' || *p == '[' || *p == '\\')
            return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t plen = nul ? (size_t)(nul - data) : size;
    char *pat = malloc(plen + 3);
    FUZZ_ASSERT(pat != NULL);
    memcpy(pat, data, plen);
    pat[plen] = 0;
    const char *name = nul ? (const char *)nul + 1 : "";
    size_t nlen = nul ? size - plen - 1 : 0;

    int m = st_name_glob_match(pat, name, nlen);
    FUZZ_ASSERT(m == 0 || m == 1);
    FUZZ_ASSERT(st_name_glob_match("*", name, nlen) == 1);
    if (plain(pat))
        FUZZ_ASSERT(m == (plen == nlen && memcmp(pat, name, nlen) == 0),
                    "a plain pattern matches exactly itself");
    if (m) {
        /* P matches N => P* matches N + anything, *P matches anything + N */
        char *ext = malloc(nlen + 2);
        FUZZ_ASSERT(ext != NULL);
        memcpy(ext, name, nlen);
        ext[nlen] = 'x';
        memmove(pat + 1, pat, plen + 1);
        pat[0] = '*';
        FUZZ_ASSERT(st_name_glob_match(pat, name, nlen) == 1, "*P must match N");
        memmove(pat, pat + 1, plen + 1);
        size_t slashes = 0;
        while (slashes < plen && pat[plen - 1 - slashes] == '\\')
            slashes++;
        pat[plen] = '*';
        pat[plen + 1] = 0;
        if (slashes % 2 == 0)
            FUZZ_ASSERT(st_name_glob_match(pat, ext, nlen + 1) == 1, "P* must match N+x");
        free(ext);
    }
    free(pat);
    return 0;
}
