/* Internal interfaces of the model room: the index.json parser (index.c),
 * a name table (names.c) and what split/join need of a model. Not
 * installed. */
#ifndef ST_MODEL_INTERNAL_H
#define ST_MODEL_INTERNAL_H

#include "common/internal.h"

/* ---- a hash table from byte strings to positions ---- */

/* The strings live elsewhere; the table asks for them by position. */
typedef const char *(*st_strtab_get)(const void *ctx, size_t idx, size_t *len);

typedef struct st_strtab {
    struct st_strtab_slot *slots;
    size_t mask;  /* capacity - 1, a power of two; 0 before the first insert */
    size_t count;
    uint64_t seed;
    st_strtab_get get;
    const void *ctx;
} st_strtab;

ST_INTERNAL void st_strtab_init(st_strtab *t, st_strtab_get get, const void *ctx, uint64_t seed);

/* Inserts position idx under its string. Returns SIZE_MAX when inserted,
 * the position already holding an equal string (nothing inserted), or
 * SIZE_MAX - 1 when out of memory. */
ST_INTERNAL size_t st_strtab_insert(st_strtab *t, size_t idx);

/* Position of the string, or SIZE_MAX. */
ST_INTERNAL size_t st_strtab_find(const st_strtab *t, const char *s, size_t len);

ST_INTERNAL void st_strtab_free(st_strtab *t);

/* ---- the index file ---- */

typedef struct st_index_str {
    size_t off, len;       /* in st_index.arena (NUL-terminated there) */
    uint64_t pos;          /* byte offset of the string in the index file */
} st_index_str;

typedef struct st_index_entry {
    st_index_str name;     /* tensor name */
    size_t shard;          /* position in st_index.shards */
} st_index_entry;

typedef struct st_index {
    char *arena;           /* decoded strings */
    size_t arena_len, arena_cap;
    st_index_entry *entries;  /* weight_map, in document order */
    size_t count, cap;
    st_index_str *shards;  /* distinct shard names, first-seen order */
    size_t nshards, shards_cap;
    bool has_total_size;
    uint64_t total_size;
    st_strtab names;       /* tensor name -> entry */
    st_strtab shard_names; /* shard name -> shard */
} st_index;

/* Most an index file may hold (the header's cap). */
#define ST_INDEX_MAX_SIZE ST_MAX_HEADER_SIZE

/* Parses index text (n bytes; UTF-8 is checked here) into ix. `path`
 * names the file in messages. Errors as documented for st_model_open. */
ST_INTERNAL int st_index_parse(st_index *ix, const char *text, size_t n, const char *path,
                               st_error *err);

/* Checks a shard name as st_model_open documents (lexical rules only):
 * returns NULL when acceptable, else why not. */
ST_INTERNAL const char *st_index_bad_shard_name(const char *name, size_t len);

ST_INTERNAL void st_index_free(st_index *ix);

/* ---- which file of a folder (variant.c) ---- */

/* "dir/name", malloc'ed (NULL when out of memory). */
ST_INTERNAL char *st_model_join_path(const char *dir, const char *name);

/* Sets *found (malloc'd) to the file or index of folder dir that
 * st_model_open_variant opens for variant (NULL: none), and used_variant
 * (ST_MODEL_VARIANT_MAX + 1 bytes) to the variant chosen, "" when the plain
 * weights are. Rules and errors as st_model_open_variant documents. */
ST_INTERNAL int st_model_find_in_folder(const char *dir, const char *variant, unsigned flags,
                                        char **found, char *used_variant, st_error *err);

/* ---- the bytes of a tensor, for kernel copies ---- */

/* The open descriptor of t's shard and the absolute offset of t's bytes in
 * it, held open (not recycled by the descriptor cache) until
 * st_model_tensor_file_release(m, t). ST_E_UNSUPPORTED, without waiting,
 * when every descriptor the cache allows is already held: read the tensor
 * with st_model_tensor_read instead. */
ST_INTERNAL int st_model_tensor_file_range(const st_model *m, const st_tensor *t, int *fd,
                                           uint64_t *off);
ST_INTERNAL void st_model_tensor_file_release(const st_model *m, const st_tensor *t);

#endif
