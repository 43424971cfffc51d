/* Minimal test support: every CHECK counts as one assertion; main() ends
 * with TEST_END(), which prints "# passed N failed M" for tests/run-suite.sh. */
#ifndef ST_TEST_H
#define ST_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* CHECK(cond) without a message expands to an empty format string. */
#pragma GCC diagnostic ignored "-Wformat-zero-length"

static int test_passed_, test_failed_;

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (cond) {                                                           \
            test_passed_++;                                                   \
        } else {                                                              \
            test_failed_++;                                                   \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);  \
            fprintf(stderr, "" __VA_ARGS__);                                  \
            fputc('\n', stderr);                                              \
        }                                                                     \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                    \
    CHECK((long long)(a) == (long long)(b), "%lld != %lld", (long long)(a),   \
          (long long)(b))

#define TEST_END()                                                            \
    do {                                                                      \
        printf("# passed %d failed %d\n", test_passed_, test_failed_);        \
        return test_failed_ ? 1 : 0;                                          \
    } while (0)

/* Where the shared conformance corpus is (ST_CONFORMANCE or ../shared/...). */
static inline const char *test_conformance_dir(void)
{
    const char *dir = getenv("ST_CONFORMANCE");
    return dir && *dir ? dir : "../shared/conformance";
}

#endif
