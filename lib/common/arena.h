/* A bump allocator with a byte budget (freed all at once) and a full-length
 * pread: the memory and I/O primitives of the importers, whose budgets turn a
 * hostile file's growth into a clean error. Not installed. */
#ifndef ST_ARENA_H
#define ST_ARENA_H

#include "common/internal.h"

/* ---- Whole-file I/O ---- */

/* pread until len bytes are read; ST_E_IO (short file included) otherwise. */
ST_INTERNAL int st_pread_full(int fd, void *buf, size_t len, uint64_t offset);

/* ---- Arena: bump allocator with a byte budget, freed all at once ---- */

typedef struct st_arena {
    struct st_arena_chunk *head;
    uint64_t used;  /* bytes handed out, counted against limit           */
    uint64_t limit; /* 0 = unlimited                                     */
} st_arena;

/* NULL when out of memory or over the budget (*over set to true then). */
ST_INTERNAL void *st_arena_alloc(st_arena *a, size_t n, bool *over);
ST_INTERNAL char *st_arena_strdup(st_arena *a, const char *s, size_t n, bool *over);
ST_INTERNAL void st_arena_free(st_arena *a);

#endif
