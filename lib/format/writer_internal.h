/* What the format room's operations need of the writer beyond the public
 * API: an exact header size and the prepared header itself (an in-place
 * metadata edit patches only the header of a cloned file and must produce
 * the bytes a full rewrite would), and where a tensor's bytes will go. Not
 * installed. */
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

#endif
