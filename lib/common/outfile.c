/* Atomic output files: temporary file beside the target, reserve, write,
 * fsync, rename, fsync the folder. See outfile.h for the rules. */
#include "common/outfile.h"
#include "common/arena.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Writeback of the temporary file is started every this many bytes, so the
 * disk works while the rest is produced and the final fsync only waits for
 * the tail (a 1 GiB output: fsync ~1.3 s -> ~0.8 s wall for the whole
 * `convert --dtype f16` of 2 GiB here). A hint only: errors surface at
 * fsync. */
#define WRITEBACK_STEP ((uint64_t)64 << 20)

const char *st_errno_text(int e, char *buf, size_t cap)
{
    /* GNU strerror_r (we build with _GNU_SOURCE): thread-safe, returns the
     * text, which may or may not be in buf. */
    return strerror_r(e, buf, cap);
}

static void release(st_outfile *o)
{
    free(o->tmp);
    free(o->dir);
    free(o->path);
    o->tmp = o->dir = o->path = NULL;
}

static void forget_temp(st_outfile *o)
{
    if (o->temp && o->tmp)
        o->temp(o->temp_ctx, o->tmp, 0);
}

int st_outfile_open(st_outfile *o, const char *path, uint64_t reserve, st_temp_fn temp,
                    void *temp_ctx, st_error *err)
{
    char eb[128];
    memset(o, 0, sizeof *o);
    o->fd = -1;
    o->temp = temp;
    o->temp_ctx = temp_ctx;
    if (!path || !*path)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "empty output path");

    /* The temporary file lives next to the target so rename() is atomic. */
    size_t plen = strlen(path);
    const char *slash = strrchr(path, '/');
    size_t dlen = slash ? (size_t)(slash - path) : 0;
    const char *base = slash ? slash + 1 : path;
    size_t blen = strlen(base);
    if (!blen)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "'%s' names a folder, not a file", path);
    if (blen > 200) /* keep the temporary name within NAME_MAX */
        blen = 200;
    o->dir = malloc(dlen + 2);
    o->tmp = malloc(plen + 32);
    o->path = strdup(path);
    if (!o->dir || !o->tmp || !o->path) {
        release(o);
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    }
    if (slash) {
        memcpy(o->dir, path, dlen ? dlen : 1); /* "/x" -> "/" */
        o->dir[dlen ? dlen : 1] = 0;
    } else {
        strcpy(o->dir, ".");
    }
    size_t k = 0;
    if (slash) {
        memcpy(o->tmp, path, dlen + 1);
        k = dlen + 1;
    }
    o->tmp[k++] = '.';
    memcpy(o->tmp + k, base, blen);
    k += blen;
    memcpy(o->tmp + k, ".XXXXXX.tmp", 12);

    mode_t mode = 0644;
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISREG(st.st_mode))
        mode = st.st_mode & 07777;

    o->fd = mkostemps(o->tmp, 4, O_CLOEXEC);
    if (o->fd < 0) {
        int e = errno;
        int rc = st_fail(err, ST_E_IO, ST_NO_OFFSET,
                         "cannot create a temporary file in '%s' for '%s': %s", o->dir, path,
                         st_errno_text(e, eb, sizeof eb));
        release(o);
        return rc;
    }
    if (o->temp)
        o->temp(o->temp_ctx, o->tmp, 1);
    if (fchmod(o->fd, mode) != 0) {
        int e = errno;
        int rc = st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot set the mode of '%s': %s", o->tmp,
                         st_errno_text(e, eb, sizeof eb));
        st_outfile_abort(o);
        return rc;
    }
    int rc = st_outfile_reserve(o, reserve, err);
    if (rc)
        st_outfile_abort(o);
    return rc;
}

int st_outfile_reserve(st_outfile *o, uint64_t reserve, st_error *err)
{
    /* Reserve the space first so a full disk fails now rather than after
     * gigabytes were written. File systems without fallocate are fine. */
    if (reserve && reserve <= INT64_MAX && fallocate(o->fd, 0, 0, (off_t)reserve) != 0 &&
        (errno == ENOSPC || errno == EDQUOT || errno == EFBIG)) {
        int e = errno;
        char eb[128];
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot reserve %llu bytes for '%s' in '%s': %s",
                       (unsigned long long)reserve, o->path, o->dir,
                       st_errno_text(e, eb, sizeof eb));
    }
    return ST_OK;
}

static void kick_writeback(st_outfile *o)
{
#ifdef SYNC_FILE_RANGE_WRITE
    if (o->written - o->kicked >= WRITEBACK_STEP) {
        (void)sync_file_range(o->fd, (off_t)o->kicked, (off_t)(o->written - o->kicked),
                              SYNC_FILE_RANGE_WRITE);
        o->kicked = o->written;
    }
#else
    (void)o;
#endif
}

int st_outfile_write(st_outfile *o, const void *p, size_t n, st_error *err)
{
    const char *c = p;
    while (n) {
        ssize_t k = write(o->fd, c, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            char eb[128];
            return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot write '%s' (for '%s'): %s",
                           o->tmp, o->path, st_errno_text(e, eb, sizeof eb));
        }
        if (k == 0)
            return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot write '%s' (for '%s'): no progress",
                           o->tmp, o->path);
        c += k;
        n -= (size_t)k;
        o->written += (uint64_t)k;
    }
    kick_writeback(o);
    return ST_OK;
}

int st_outfile_pwrite(const st_outfile *o, const void *p, size_t n, uint64_t off, st_error *err)
{
    const char *c = p;
    while (n) {
        ssize_t k = off > (uint64_t)INT64_MAX ? -1 : pwrite(o->fd, c, n, (off_t)off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            int e = k < 0 ? errno : ENOSPC;
            char eb[128];
            return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot write '%s' (for '%s'): %s", o->tmp,
                           o->path, st_errno_text(e, eb, sizeof eb));
        }
        c += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return ST_OK;
}

int st_outfile_skip(st_outfile *o, uint64_t n, st_error *err)
{
    if (n > (uint64_t)INT64_MAX || lseek(o->fd, (off_t)n, SEEK_CUR) < 0) {
        char eb[128];
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot seek in '%s' (for '%s'): %s", o->tmp,
                       o->path, st_errno_text(errno, eb, sizeof eb));
    }
    o->written += n;
    kick_writeback(o);
    return ST_OK;
}

static int copy_through_buffer(st_outfile *o, int fd_in, uint64_t off, uint64_t len,
                               st_error *err)
{
    size_t cap = len < ((size_t)4 << 20) ? (size_t)len : ((size_t)4 << 20);
    char *buf = malloc(cap ? cap : 1);
    if (!buf)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    int rc = ST_OK;
    while (len && rc == ST_OK) {
        size_t n = len < cap ? (size_t)len : cap;
        rc = st_pread_full(fd_in, buf, n, off);
        if (rc != ST_OK) {
            rc = st_fail(err, ST_E_IO, off, "cannot read %zu bytes of the input at offset %llu "
                         "(for '%s')", n, (unsigned long long)off, o->path);
            break;
        }
        rc = st_outfile_write(o, buf, n, err);
        off += n;
        len -= n;
    }
    free(buf);
    return rc;
}

bool st_kernel_copy_allowed(void)
{
    const char *force = getenv("ST_NO_COPY_FILE_RANGE");
    return !(force && *force == '1');
}

int st_outfile_copy_range(st_outfile *o, int fd_in, uint64_t off_in, uint64_t len, st_error *err)
{
    if (!st_kernel_copy_allowed())
        return copy_through_buffer(o, fd_in, off_in, len, err);
    while (len) {
        loff_t in = (loff_t)off_in;
        size_t want = len < ((uint64_t)1 << 30) ? (size_t)len : ((size_t)1 << 30);
        ssize_t k = copy_file_range(fd_in, &in, o->fd, NULL, want, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
                      errno == EOPNOTSUPP || errno == EBADF))
            return copy_through_buffer(o, fd_in, off_in, len, err);
        if (k <= 0) {
            char eb[128];
            int e = k < 0 ? errno : 0;
            return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot copy into '%s' (for '%s'): %s",
                           o->tmp, o->path, k < 0 ? st_errno_text(e, eb, sizeof eb)
                                                  : "the input ended early");
        }
        off_in += (uint64_t)k;
        len -= (uint64_t)k;
        o->written += (uint64_t)k;
        kick_writeback(o);
    }
    return ST_OK;
}

int st_rename_noreplace(const char *from, const char *to)
{
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
        return errno;
    /* A file system without RENAME_NOREPLACE: link() fails on an existing
     * name as well. */
    if (link(from, to) != 0)
        return errno;
    unlink(from);
    return 0;
}

static int finish(st_outfile *o, bool replace, st_error *err)
{
    char eb[128];
    int rc;
    if (o->fd < 0 || !o->tmp)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "output file is not open");
    if (fsync(o->fd) != 0) {
        int e = errno;
        rc = st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot fsync '%s' (for '%s'): %s", o->tmp,
                     o->path, st_errno_text(e, eb, sizeof eb));
        st_outfile_abort(o);
        return rc;
    }
    int cfd = o->fd;
    o->fd = -1;
    if (close(cfd) != 0 && errno != EINTR) {
        int e = errno;
        rc = st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot close '%s' (for '%s'): %s", o->tmp,
                     o->path, st_errno_text(e, eb, sizeof eb));
        st_outfile_abort(o);
        return rc;
    }
    int renamed = replace ? (rename(o->tmp, o->path) == 0 ? 0 : errno)
                          : st_rename_noreplace(o->tmp, o->path);
    if (renamed != 0) {
        int e = renamed;
        rc = st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot rename '%s' to '%s': %s", o->tmp,
                     o->path, st_errno_text(e, eb, sizeof eb));
        st_outfile_abort(o);
        return rc;
    }
    forget_temp(o);
    /* Make the rename itself durable. Past this point the new file is in
     * place, so a failure is reported but nothing is undone. Some file
     * systems cannot fsync a folder (EINVAL); that is not an error. */
    rc = ST_OK;
    int dfd = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        if (fsync(dfd) != 0 && errno != EINVAL && errno != EROFS) {
            int e = errno;
            rc = st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot fsync folder '%s': %s", o->dir,
                         st_errno_text(e, eb, sizeof eb));
        }
        close(dfd);
    }
    release(o);
    return rc;
}

int st_outfile_commit(st_outfile *o, st_error *err)
{
    return finish(o, true, err);
}

int st_outfile_commit_noreplace(st_outfile *o, st_error *err)
{
    return finish(o, false, err);
}

void st_outfile_abort(st_outfile *o)
{
    if (o->fd >= 0) {
        close(o->fd);
        o->fd = -1;
    }
    if (o->tmp) {
        unlink(o->tmp);
        forget_temp(o);
    }
    release(o);
}
