/* The parsed form of a header, shared by header.c (parsing), validate.c
 * (the reference's offset checks) and file.c (access). Not installed. */
#ifndef ST_HEADER_H
#define ST_HEADER_H

#include "common/internal.h"

typedef struct st_meta_entry {
    size_t key_off, key_len, value_off, value_len;
    uint64_t header_offset;
} st_meta_entry;

typedef struct st_header {
    /* Document order after parsing, file order after validation. Names
     * point into the arena, which is reserved whole before parsing and so
     * never moves; while parsing, nelements holds the shape's offset in
     * dims (dims may still move), and st_header_parse sets shape. */
    st_tensor *tensors;
    size_t count, cap;
    uint64_t *dims;     /* all shapes, back to back */
    size_t ndims, dims_cap;
    char *arena;        /* decoded, NUL-terminated names, keys and values */
    size_t arena_len, arena_cap;
    st_meta_entry *meta; /* sorted by key bytes after parsing */
    size_t nmeta, meta_cap;
    int meta_present;
    uint64_t hash_seed;
    uint64_t *index;    /* open addressing: hash tag << 32 | (position + 1); 0 = empty */
    size_t index_mask;  /* capacity - 1 (a power of two) */
} st_header;

/* Position (in h->tensors) of the tensor with this name, or SIZE_MAX. */
ST_INTERNAL size_t st_header_lookup(const st_header *h, const char *name, size_t len);

/* Parses the header text (already UTF-8 checked) into h: JSON syntax, then
 * the schema, duplicate keys in every object, and tensor-name duplicates.
 * `base` is the file offset of the text (8). */
ST_INTERNAL int st_header_parse(st_header *h, const char *text, size_t n, uint64_t base,
                                st_error *err);

/* The reference's checks, tensors in data-offset order: offsets contiguous
 * from 0, element/bit counts without overflow, whole bytes, sizes matching;
 * then the data must end exactly at the end of the file (data_len bytes).
 * Leaves h->tensors in file order, with nelements set. */
ST_INTERNAL int st_header_validate(st_header *h, uint64_t data_len, uint64_t data_offset,
                                   st_error *err);

/* Frees what h owns (h itself is not freed). */
ST_INTERNAL void st_header_free(st_header *h);

/* The descriptor of a file opened from a path (st_open), -1 for one in
 * memory; with its size. For operations that copy or clone the file
 * inside the kernel. */
ST_INTERNAL int st_file_fd(const st_file *f, uint64_t *size);

#endif
