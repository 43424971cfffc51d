/* A bump allocator with a byte budget, and a full-length pread, for the
 * importers. The budget is what turns a hostile pickle's growth into a
 * clean error instead of an out-of-memory kill. */
#include "common/arena.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct st_arena_chunk {
    struct st_arena_chunk *next;
    size_t size, used;
    _Alignas(16) unsigned char data[];
};

#define ARENA_CHUNK (64u * 1024u)

void *st_arena_alloc(st_arena *a, size_t n, bool *over)
{
    n = (n + 15u) & ~(size_t)15u;
    if (n == 0)
        n = 16;
    if (a->limit && (n > a->limit || a->used > a->limit - n)) {
        if (over)
            *over = true;
        return NULL;
    }
    struct st_arena_chunk *c = a->head;
    if (!c || c->size - c->used < n) {
        size_t size = n > ARENA_CHUNK / 2 ? n : ARENA_CHUNK;
        c = malloc(sizeof *c + size);
        if (!c)
            return NULL;
        c->size = size;
        c->used = 0;
        /* A big block goes behind the current chunk so the current one keeps
         * serving small requests. */
        if (a->head && size != ARENA_CHUNK) {
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
    }
    void *p = c->data + c->used;
    c->used += n;
    a->used += n;
    return p;
}

char *st_arena_strdup(st_arena *a, const char *s, size_t n, bool *over)
{
    if (n == SIZE_MAX)
        return NULL;
    char *p = st_arena_alloc(a, n + 1, over);
    if (!p)
        return NULL;
    if (n)
        memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void st_arena_free(st_arena *a)
{
    struct st_arena_chunk *c = a->head;
    while (c) {
        struct st_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->used = 0;
}

int st_pread_full(int fd, void *buf, size_t len, uint64_t offset)
{
    unsigned char *p = buf;
    while (len) {
        if (offset > (uint64_t)INT64_MAX)
            return ST_E_IO;
        ssize_t r = pread(fd, p, len, (off_t)offset);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return ST_E_IO;
        }
        if (r == 0)
            return ST_E_IO; /* the file is shorter than it was */
        p += r;
        len -= (size_t)r;
        offset += (uint64_t)r;
    }
    return ST_OK;
}
