/*
 * A name table over strings stored elsewhere: open addressing on a seeded
 * 64-bit hash, so the names a hostile index chooses cannot be made to
 * collide in advance.
 */
#include "model/model_internal.h"

#include <stdlib.h>
#include <string.h>

struct st_strtab_slot {
    uint64_t hash;
    size_t idx1; /* position + 1; 0 = empty */
};

void st_strtab_init(st_strtab *t, st_strtab_get get, const void *ctx, uint64_t seed)
{
    memset(t, 0, sizeof *t);
    t->get = get;
    t->ctx = ctx;
    t->seed = seed;
}

static bool grow(st_strtab *t)
{
    size_t cap = t->mask ? (t->mask + 1) * 2 : 16;
    if (cap > SIZE_MAX / sizeof(struct st_strtab_slot))
        return false;
    struct st_strtab_slot *s = calloc(cap, sizeof *s);
    if (!s)
        return false;
    for (size_t i = 0; t->mask && i <= t->mask; i++) {
        if (!t->slots[i].idx1)
            continue;
        size_t k = (size_t)t->slots[i].hash & (cap - 1);
        while (s[k].idx1)
            k = (k + 1) & (cap - 1);
        s[k] = t->slots[i];
    }
    free(t->slots);
    t->slots = s;
    t->mask = cap - 1;
    return true;
}

static size_t probe(const st_strtab *t, uint64_t h, const char *s, size_t len, size_t *empty)
{
    size_t k = (size_t)h & t->mask;
    for (;;) {
        const struct st_strtab_slot *e = &t->slots[k];
        if (!e->idx1) {
            *empty = k;
            return SIZE_MAX;
        }
        if (e->hash == h) {
            size_t olen;
            const char *o = t->get(t->ctx, e->idx1 - 1, &olen);
            if (olen == len && (len == 0 || memcmp(o, s, len) == 0))
                return e->idx1 - 1;
        }
        k = (k + 1) & t->mask;
    }
}

size_t st_strtab_insert(st_strtab *t, size_t idx)
{
    if ((t->count + 1) * 2 > (t->mask ? t->mask + 1 : 0) && !grow(t))
        return SIZE_MAX - 1;
    size_t len;
    const char *s = t->get(t->ctx, idx, &len);
    uint64_t h = st_hash_bytes_seeded(t->seed, s, len);
    size_t empty;
    size_t found = probe(t, h, s, len, &empty);
    if (found != SIZE_MAX)
        return found;
    t->slots[empty].hash = h;
    t->slots[empty].idx1 = idx + 1;
    t->count++;
    return SIZE_MAX;
}

size_t st_strtab_find(const st_strtab *t, const char *s, size_t len)
{
    if (!t->mask)
        return SIZE_MAX;
    size_t empty;
    return probe(t, st_hash_bytes_seeded(t->seed, s, len), s, len, &empty);
}

void st_strtab_free(st_strtab *t)
{
    free(t->slots);
    t->slots = NULL;
    t->mask = t->count = 0;
}
