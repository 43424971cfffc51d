/* Fuzz target: the lexical scanner of TorchScript code (lib/ckpt/tscode.c)
 * on arbitrary text, through its internal entry points.
 *
 * fuzz-requires: lib/ckpt/tscode.c lib/ckpt/ckpt_internal.h
 *
 * The first byte seeds how the rest is cut into chunks (the importer feeds
 * the lexer 64 KiB pieces of inflated code; here pieces of 1 to 64 bytes).
 * Properties: the events reported (calls, classes, attribute names, in
 * order) are the same whole and chunked; every call name starts with
 * "torch." or "ops.", has no empty component and fits the lexer's buffer;
 * class names have no dot; nothing is ever allocated by the lexer. */
#include "fuzz_util.h"
#include "ckpt/ckpt_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct events {
    uint64_t hash, n;
} events;

static void mix(events *e, int kind, const char *s, size_t n)
{
    e->hash = (e->hash ^ (uint64_t)kind) * 0x100000001b3ull;
    for (size_t i = 0; i < n; i++)
        e->hash = (e->hash ^ (unsigned char)s[i]) * 0x100000001b3ull;
    e->hash = (e->hash ^ 0xff) * 0x100000001b3ull;
    e->n++;
}

static int on_call(void *ctx, const char *s, size_t n)
{
    FUZZ_ASSERT(n > 0 && n <= 256, "call name length %zu", n);
    FUZZ_ASSERT((n > 6 && memcmp(s, "torch.", 6) == 0) || (n > 4 && memcmp(s, "ops.", 4) == 0), "call prefix");
    FUZZ_ASSERT(s[n - 1] != '.', "call name ends in a dot");
    for (size_t i = 0; i + 1 < n; i++)
        FUZZ_ASSERT(!(s[i] == '.' && s[i + 1] == '.'), "empty component");
    mix(ctx, 1, s, n);
    return 0;
}

static int on_class(void *ctx, const char *s, size_t n)
{
    FUZZ_ASSERT(n > 0 && n <= 256 && !memchr(s, '.', n), "class name");
    mix(ctx, 2, s, n);
    return 0;
}

static int on_attr(void *ctx, int kind, const char *s, size_t n)
{
    FUZZ_ASSERT((kind == 1 || kind == 2) && n > 0 && n <= 256, "attribute");
    mix(ctx, 2 + kind, s, n);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    fz f;
    fz_init(&f, data, 1);
    const uint8_t *text = data + 1;
    size_t n = size - 1;
    events whole = {0, 0}, parts = {0, 0};
    st_ts_lexer lx;
    st_ts_sink sw = {&whole, on_call, on_class, on_attr}, sp = {&parts, on_call, on_class, on_attr};
    st_ts_lex_init(&lx);
    FUZZ_ASSERT(st_ts_lex(&lx, text, n, &sw) == 0, "lex");
    st_ts_lex_init(&lx);
    for (size_t at = 0; at < n;) {
        size_t k = 1 + (size_t)fz_below(&f, 64);
        if (k > n - at)
            k = n - at;
        FUZZ_ASSERT(st_ts_lex(&lx, text + at, k, &sp) == 0, "lex chunk");
        at += k;
    }
    FUZZ_ASSERT(whole.n == parts.n && whole.hash == parts.hash, "chunking changed the events (%llu vs %llu)",
                (unsigned long long)whole.n, (unsigned long long)parts.n);
    return 0;
}
