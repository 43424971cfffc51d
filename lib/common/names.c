/* Tensor names as byte strings (they may hold NUL): quoting for messages,
 * bytewise order, and the seeded hash behind every name index. */
#include "common/internal.h"

#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

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
