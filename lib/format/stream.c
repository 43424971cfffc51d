/* Streaming tensors from open inputs into a writer; see stream.h. */
#include "format/stream.h"
#include "common/outfile.h"
#include "format/header.h"
#include "format/writer_internal.h"

#include <errno.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int st_op_input_fail(st_op_input *in, int rc, const st_error *err)
{
    if (rc != ST_OK && !in->failed) {
        in->failed = true;
        in->err = *err;
        if (in->err.code == ST_OK)
            in->err.code = rc;
    }
    return rc;
}

int st_op_copy_read(void *ctx, uint64_t offset, void *buf, size_t len)
{
    st_op_source *c = ctx;
    st_error err;
    memset(&err, 0, sizeof err);
    int rc = st_tensor_read(c->in->file, c->t, offset, buf, len, &err);
    return st_op_input_fail(c->in, rc, &err);
}

int st_op_write(st_writer *w, const char *path, st_op_input *inputs, size_t n,
                int *failed_input, st_error *err)
{
    int rc = st_writer_write(w, path, err);
    if (rc == ST_OK || rc != ST_E_CALLBACK)
        return rc;
    for (size_t i = 0; i < n; i++)
        if (inputs[i].failed) {
            /* An input that changed or cannot be read: its error. */
            if (failed_input)
                *failed_input = (int)i;
            if (err)
                *err = inputs[i].err;
            return inputs[i].err.code ? inputs[i].err.code : ST_E_IO;
        }
    return rc;
}

int st_op_add_copy(st_writer *w, const char *name, size_t name_len, st_op_source *src,
                   st_error *err)
{
    const st_tensor *t = src->t;
    if (!name) {
        name = t->name;
        name_len = t->name_len;
    }
    int fd;
    uint64_t off;
    if (st_kernel_copy_allowed() && st_tensor_file_range(src->in->file, t, &fd, &off) == ST_OK)
        return st_writer_add_file_range(w, name, name_len, t->dtype, t->shape, t->rank, fd, off,
                                        st_tensor_nbytes(t), err);
    return st_writer_add_stream(w, name, name_len, t->dtype, t->shape, t->rank,
                                st_tensor_nbytes(t), st_op_copy_read, src, err);
}

bool st_op_same_shape(const st_tensor *x, const st_tensor *y)
{
    if (x->rank != y->rank)
        return false;
    for (uint32_t i = 0; i < x->rank; i++)
        if (x->shape[i] != y->shape[i])
            return false;
    return true;
}

void st_op_shape_text(const st_tensor *t, char *buf, size_t cap)
{
    if (!cap)
        return;
    size_t o = 0;
    buf[0] = 0;
    int k = snprintf(buf, cap, "[");
    o = k > 0 ? (size_t)k : 0;
    for (uint32_t i = 0; i < t->rank && o < cap; i++) {
        k = snprintf(buf + o, cap - o, i ? ", %llu" : "%llu", (unsigned long long)t->shape[i]);
        if (k < 0 || (size_t)k >= cap - o) {
            if (cap >= 5)
                memcpy(buf + cap - 5, "...]", 5);
            return;
        }
        o += (size_t)k;
    }
    if (o + 2 <= cap) {
        buf[o] = ']';
        buf[o + 1] = 0;
    }
}

const char *st_op_base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

bool st_op_same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0)
        return false;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

bool st_op_same_layout(st_writer *w, const st_file *in)
{
    if (st_writer_tensor_count(w) != st_tensor_count(in))
        return false;
    for (size_t i = 0; i < st_tensor_count(in); i++) {
        uint64_t begin;
        if (st_writer_planned_begin(w, i, &begin) != ST_OK || begin != st_tensor_at(in, i)->begin)
            return false;
    }
    return true;
}

int st_op_clone_write(st_writer *w, const st_file *in, const char *out_path,
                      const st_output_hooks *hooks, st_error *err)
{
    if (!st_kernel_copy_allowed())
        return ST_E_UNSUPPORTED;
    uint64_t size;
    int in_fd = st_file_fd(in, &size);
    if (in_fd < 0)
        return ST_E_UNSUPPORTED;
    const char *header;
    uint64_t n;
    int rc = st_writer_header(w, &header, &n, err);
    if (rc != ST_OK)
        return rc;
    if (n != st_data_offset(in) - 8 || !st_op_same_layout(w, in))
        return ST_E_UNSUPPORTED;
    st_outfile o;
    rc = st_outfile_open(&o, out_path, 0, hooks ? hooks->temp : NULL,
                         hooks ? hooks->temp_ctx : NULL, err);
    if (rc != ST_OK)
        return rc;
    if (ioctl(o.fd, FICLONE, in_fd) != 0) {
        st_outfile_abort(&o);
        return ST_E_UNSUPPORTED;
    }
    char eb[128];
    struct stat st;
    if (fstat(o.fd, &st) != 0 || (uint64_t)st.st_size != size) {
        rc = st_fail(err, ST_E_IO, ST_NO_OFFSET, "'%s' changed while it was cloned", out_path);
        st_outfile_abort(&o);
        return rc;
    }
    unsigned char len8[8];
    for (int k = 0; k < 8; k++)
        len8[k] = (unsigned char)(n >> (8 * k));
    if (pwrite(o.fd, len8, 8, 0) != 8 || pwrite(o.fd, header, (size_t)n, 8) != (ssize_t)n) {
        int e = errno;
        rc = st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot write the header of '%s' (for '%s'): %s",
                     o.tmp, out_path, st_errno_text(e, eb, sizeof eb));
        st_outfile_abort(&o);
        return rc;
    }
    if (hooks && hooks->progress && hooks->progress(hooks->progress_ctx, size, size) != 0) {
        st_outfile_abort(&o);
        return st_fail(err, ST_E_CALLBACK, ST_NO_OFFSET, "stopped by the progress callback");
    }
    return st_outfile_commit(&o, err);
}
