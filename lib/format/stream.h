/* Helpers for operations that stream tensors from open files into a writer
 * (merge, convert, diff, join...): an input with the first read error met
 * while the writer pulls from it, a copy callback, the write that reports
 * that input's error instead of the writer's "callback failed", and small
 * shape/path helpers. Not installed. */
#ifndef ST_FORMAT_STREAM_H
#define ST_FORMAT_STREAM_H

#include "common/internal.h"

/* An input of an operation and the first read error met on it. `file` is
 * NULL for inputs read some other way (a checkpoint, a GGUF file) that
 * report their read errors through st_op_input_fail all the same. */
typedef struct st_op_input {
    const char *path;
    st_file *file;
    bool failed;
    st_error err;
} st_op_input;

/* One tensor copied unchanged from an input. */
typedef struct st_op_source {
    st_op_input *in;
    const st_tensor *t;
} st_op_source;

/* Records a read failure on the input (the first one is kept); returns rc. */
ST_INTERNAL int st_op_input_fail(st_op_input *in, int rc, const st_error *err);

/* st_read_fn for an st_op_source: st_tensor_read, recording a failure. */
ST_INTERNAL int st_op_copy_read(void *ctx, uint64_t offset, void *buf, size_t len);

/* st_writer_write to path; when it fails because one of `inputs` (n of
 * them, entries with a NULL file skipped) could not be read, that input's
 * error is reported and *failed_input set to its index. */
ST_INTERNAL int st_op_write(st_writer *w, const char *path, st_op_input *inputs, size_t n,
                            int *failed_input, st_error *err);

/* Adds tensor t of input `in` to the writer unchanged, under name (the
 * tensor's own when NULL): as a file range moved by the kernel when the
 * input is opened for pread, else (or with ST_NO_COPY_FILE_RANGE=1 in the
 * environment, for tests) streamed through st_op_copy_read with src (which
 * must outlive the write). */
ST_INTERNAL int st_op_add_copy(st_writer *w, const char *name, size_t name_len,
                               st_op_source *src, st_error *err);

/* Same rank and dimensions. */
ST_INTERNAL bool st_op_same_shape(const st_tensor *x, const st_tensor *y);

/* "[320, 4]" ("[]" for a scalar), cut with "..." to fit cap. */
ST_INTERNAL void st_op_shape_text(const st_tensor *t, char *buf, size_t cap);

/* The part of a path after its last '/'. */
ST_INTERNAL const char *st_op_base_name(const char *path);

/* True when both paths name the same existing file. */
ST_INTERNAL bool st_op_same_file(const char *a, const char *b);

/* The writer holds exactly the tensors of `in`, added in in's order, and
 * would put each at the offset it has in `in`. */
ST_INTERNAL bool st_op_same_layout(st_writer *w, const st_file *in);

/* When w's output would differ from `in` only in its header (the same
 * header size, st_op_same_layout, every tensor added from `in`
 * unchanged: the caller's promise), writes out_path as a clone of in
 * (FICLONE: the file system shares the data's extents) with w's header
 * written over the clone's: O(header) for any size. Atomic as every
 * output. ST_E_UNSUPPORTED, with nothing left behind, when the layouts
 * differ or the file system cannot clone (or ST_NO_COPY_FILE_RANGE=1):
 * the caller then writes w as usual, which gives the same bytes. */
ST_INTERNAL int st_op_clone_write(st_writer *w, const st_file *in, const char *out_path,
                                  const st_output_hooks *hooks, st_error *err);

#endif
