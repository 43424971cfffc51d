/* What the library's operations need of the writer beyond the public
 * API: an exact header size and the prepared header itself (an in-place
 * metadata edit patches only the header of a cloned file and must produce
 * the bytes a full rewrite would), where a tensor's bytes will go, and
 * tensors whose bytes the caller lends or writes into the file itself
 * (LoRA bake's workers). Not installed. */
#ifndef ST_FORMAT_WRITER_INTERNAL_H
#define ST_FORMAT_WRITER_INTERNAL_H

#include "common/internal.h"

/* The header's N is exactly n (spaces after the JSON; the caller checks
 * st_writer_json_size(w) <= n). 0: the usual alignment and padding. */
ST_INTERNAL void st_writer_set_header_size(st_writer *w, uint64_t n);

/* Bytes of the header JSON alone, without padding (0 when it cannot be
 * built: too large, out of memory). */
ST_INTERNAL uint64_t st_writer_json_size(st_writer *w);

/* The prepared header, padded: N bytes (the 8-byte length is not part of
 * it). Valid until the writer changes. */
ST_INTERNAL int st_writer_header(st_writer *w, const char **header, uint64_t *n, st_error *err);

/* Tensors added so far. */
ST_INTERNAL size_t st_writer_tensor_count(const st_writer *w);

/* Offset (relative to the data section) the i-th added tensor will have. */
ST_INTERNAL int st_writer_planned_begin(st_writer *w, size_t i, uint64_t *begin);

/* A tensor whose bytes the caller lends from its own memory: view(ctx,
 * off, &len) returns a pointer to bytes [off, off + *len) (*len >= 1) or
 * NULL on failure. The writer emits them without copying them into its
 * buffer (unless the piece is small); the pointer need only stay valid
 * until the writer asks for another tensor's bytes or the write ends.
 * When st_writer_write told the caller of the file (the open hook), view
 * may instead answer ST_VIEW_PLACED: the caller has already written the
 * *len bytes at their place in the file (st_outfile_pwrite) and the
 * writer moves past them. */
typedef const void *(*st_view_fn)(void *ctx, uint64_t offset, uint64_t *len);
ST_INTERNAL int st_writer_add_view(st_writer *w, const char *name, size_t name_len,
                                   st_dtype dtype, const uint64_t *shape, uint32_t rank,
                                   uint64_t nbytes, st_view_fn view, void *ctx, st_error *err);

ST_INTERNAL extern const char st_view_placed_marker;
#define ST_VIEW_PLACED ((const void *)&st_view_placed_marker)

/* Called by st_writer_write once the temporary output file is open and
 * before any byte of it is written: the file, and the offset of the data
 * section (a tensor's bytes begin there plus st_writer_planned_begin);
 * and again with file NULL once streaming ends, before the file is
 * committed or removed (whatever writes into it must have stopped). */
struct st_outfile;
typedef void (*st_open_hook_fn)(void *ctx, struct st_outfile *file, uint64_t data_start);
ST_INTERNAL void st_writer_set_open_hook(st_writer *w, st_open_hook_fn hook, void *ctx);

/* Called by st_writer_write after every byte was written (and the open
 * hook's last call), before the file is flushed and renamed: a value the
 * caller could not know when the header was built may be patched into it
 * now (same length; st_writer_header tells where). Non-zero fails the
 * write and removes the file. */
typedef int (*st_close_hook_fn)(void *ctx, struct st_outfile *file, st_error *err);
ST_INTERNAL void st_writer_set_close_hook(st_writer *w, st_close_hook_fn hook, void *ctx);

#endif
