/* Glob patterns over tensor names (byte strings that may hold NUL), for
 * the selections operations take (convert --only/--exclude/--drop, ls
 * filters). Linear-time backtracking: no pattern can make it slow. */
#include "common/internal.h"

#include <stdint.h>

/* Matches one bracket expression starting after '[' at pattern[*pi];
 * sets *pi past the closing ']'. Returns -1 when the bracket is not closed
 * (then '[' is taken literally), else 1 on a match, 0 otherwise. */
static int match_class(const char *pattern, size_t *pi, unsigned char c)
{
    size_t i = *pi;
    bool negate = false, matched = false;
    if (pattern[i] == '!' || pattern[i] == '^') {
        negate = true;
        i++;
    }
    bool first = true;
    for (;;) {
        unsigned char lo = (unsigned char)pattern[i];
        if (lo == 0)
            return -1;
        if (lo == ']' && !first)
            break;
        first = false;
        if (lo == '\\' && pattern[i + 1])
            lo = (unsigned char)pattern[++i];
        i++;
        unsigned char hi = lo;
        if (pattern[i] == '-' && pattern[i + 1] && pattern[i + 1] != ']') {
            hi = (unsigned char)pattern[i + 1];
            i += 2;
            if (hi == '\\' && pattern[i]) {
                hi = (unsigned char)pattern[i];
                i++;
            }
        }
        if (c >= lo && c <= hi)
            matched = true;
    }
    *pi = i + 1;
    return matched != negate;
}

int st_name_glob_match(const char *pattern, const char *name, size_t name_len)
{
    size_t p = 0, n = 0;
    /* Where to resume after the last '*': the classic two-pointer scan.
     * A later '*' supersedes an earlier one, so one resume point suffices
     * and the match is O(pattern x name) at worst. */
    size_t star_p = SIZE_MAX, star_n = 0;
    while (n < name_len) {
        unsigned char c = (unsigned char)name[n];
        char pc = pattern[p];
        if (pc == '*') {
            while (pattern[p] == '*')
                p++;
            star_p = p;
            star_n = n;
            continue;
        }
        if (pc == '?') {
            p++;
            n++;
            continue;
        }
        if (pc == '[') {
            size_t q = p + 1;
            int r = match_class(pattern, &q, c);
            if (r == 1) {
                p = q;
                n++;
                continue;
            }
            if (r == -1 && c == '[') {
                p++;
                n++;
                continue;
            }
        } else if (pc != 0) {
            size_t q = p;
            if (pc == '\\' && pattern[q + 1])
                q++;
            if ((unsigned char)pattern[q] == c) {
                p = q + 1;
                n++;
                continue;
            }
        }
        if (star_p == SIZE_MAX)
            return 0;
        p = star_p;
        n = ++star_n;
    }
    while (pattern[p] == '*')
        p++;
    return pattern[p] == 0;
}
