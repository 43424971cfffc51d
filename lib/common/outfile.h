/* The one way the library creates an output file: a temporary file beside
 * the target (".NAME.XXXXXX.tmp"), space reserved up front, written, fsync'ed,
 * renamed over the target, the folder fsync'ed. Every writer (safetensors,
 * GGUF, shards, LoRA) goes through it, so temp-file reporting for the CLI's
 * signal clean-up and the failure rules live in one place. Not installed. */
#ifndef ST_OUTFILE_H
#define ST_OUTFILE_H

#include "common/internal.h"

typedef struct st_outfile {
    int fd;            /* the temporary file, -1 when closed             */
    char *tmp;         /* its path                                       */
    char *dir;         /* the target's folder ("." when none)            */
    char *path;        /* the target (own copy)                          */
    uint64_t written;  /* bytes written by st_outfile_write              */
    uint64_t kicked;   /* bytes whose writeback has been started         */
    st_temp_fn temp;   /* told of the temporary file (may be NULL)       */
    void *temp_ctx;
} st_outfile;

/* Creates the temporary file for `path` (mode: the replaced regular file's,
 * else 0644) and reserves `reserve` bytes when not 0 (a full disk fails
 * here, before any data). On failure nothing is left behind. */
ST_INTERNAL int st_outfile_open(st_outfile *o, const char *path, uint64_t reserve,
                                st_temp_fn temp, void *temp_ctx, st_error *err);

/* Appends n bytes (write(2) until done; EINTR retried). */
ST_INTERNAL int st_outfile_write(st_outfile *o, const void *p, size_t n, st_error *err);

/* Appends len bytes of fd_in starting at off_in, moved inside the kernel
 * (copy_file_range; the file system may share extents) when it can, else
 * through a buffer (pread/write) when the kernel or file system refuses
 * (EXDEV, EINVAL, ENOSYS, EOPNOTSUPP), or always when the environment has
 * ST_NO_COPY_FILE_RANGE=1 (for tests of that path). Short input: ST_E_IO. */
ST_INTERNAL int st_outfile_copy_range(st_outfile *o, int fd_in, uint64_t off_in, uint64_t len,
                                      st_error *err);

/* The reservation st_outfile_open makes (fallocate of `reserve` bytes,
 * failing on ENOSPC, EDQUOT, EFBIG), for a caller that opened with 0 and
 * set other work going first. Does not close the file on failure. */
ST_INTERNAL int st_outfile_reserve(st_outfile *o, uint64_t reserve, st_error *err);

/* Writes n bytes at offset off of the temporary file without moving its
 * position (the only call other threads may make, on bytes past the
 * position, while the owner writes on). */
ST_INTERNAL int st_outfile_pwrite(const st_outfile *o, const void *p, size_t n, uint64_t off,
                                  st_error *err);

/* Moves the position past n bytes that st_outfile_pwrite has put there. */
ST_INTERNAL int st_outfile_skip(st_outfile *o, uint64_t n, st_error *err);

/* fsync, close, rename over the target, fsync the folder. On failure before
 * the rename the temporary file is removed and the target untouched. Frees
 * the paths either way. */
ST_INTERNAL int st_outfile_commit(st_outfile *o, st_error *err);

/* As st_outfile_commit, but an existing target is never replaced: the
 * rename fails with "File exists" (EEXIST) and the temporary file is
 * removed (for `install`, which must not clobber a file that appeared
 * meanwhile). */
ST_INTERNAL int st_outfile_commit_noreplace(st_outfile *o, st_error *err);

/* Gives `from` the name `to` unless `to` exists (renameat2
 * RENAME_NOREPLACE, else link + unlink). Returns 0 or errno (EEXIST). */
ST_INTERNAL int st_rename_noreplace(const char *from, const char *to);

/* Closes and removes the temporary file; frees the paths. Safe to call on a
 * zeroed or already committed/aborted st_outfile. */
ST_INTERNAL void st_outfile_abort(st_outfile *o);

/* False when the environment has ST_NO_COPY_FILE_RANGE=1: every byte then
 * goes through a buffer (copy_file_range and FICLONE are not tried, and
 * the operations stream unchanged tensors through their read path, where a
 * failing read is blamed on its input). The one switch for the tests of
 * the buffered paths. */
ST_INTERNAL bool st_kernel_copy_allowed(void);

/* strerror_r's text for errno e (thread-safe). */
ST_INTERNAL const char *st_errno_text(int e, char *buf, size_t cap);

#endif
