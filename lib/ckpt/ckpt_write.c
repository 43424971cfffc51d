/* A checkpoint's tensors written as one safetensors file (`convert` of a
 * .ckpt/.pt/.bin): the canonical writer, the checkpoint's metadata plus
 * format=pt. A tensor whose bytes are one little-endian run of the file
 * (contiguous, in a stored zip entry or a legacy/tar storage) moves with
 * copy_file_range inside the kernel; the others (views, big-endian data,
 * numpy arrays held in a pickle) stream through st_ckpt_tensor_read. The
 * policy about dangerous globals is the caller's (scan first). */
#include "ckpt/ckpt_model.h"
#include "common/outfile.h"
#include "format/stream.h"

#include <stdlib.h>
#include <string.h>

typedef struct ckpt_source {
    const st_ckpt *ck;
    const st_ckpt_tensor *t;
    st_op_input *in;   /* keeps the first read error, for the report */
} ckpt_source;

static int source_read(void *ctx, uint64_t offset, void *buf, size_t len)
{
    ckpt_source *s = ctx;
    st_error e;
    memset(&e, 0, sizeof e);
    int rc = st_ckpt_tensor_read(s->ck, s->t, offset, buf, len, &e);
    return st_op_input_fail(s->in, rc, &e);
}

/* Where the tensor's bytes lie in the file, when they are one run needing
 * no byte swap. */
static bool file_run(const st_ckpt *ck, const st_ckpt_tensor *tensor, uint64_t *off)
{
    const ck_tensor *t = (const ck_tensor *)tensor;
    const ck_storage *s = &ck->st[t->storage];
    if (!tensor->contiguous || s->mem || (s->be && s->swap) || !s->located || ck->fd < 0)
        return false;
    /* storage_offset and nbytes were checked against the storage, and the
     * storage against the file, when the checkpoint was opened */
    *off = s->offset + tensor->storage_offset * s->elem;
    return *off <= ck->size && tensor->nbytes <= ck->size - *off;
}

int st_ckpt_write_safetensors(const st_ckpt *ck, const char *out_path,
                              const st_ckpt_write_options *opt, st_ckpt_write_report *report,
                              st_error *err)
{
    st_ckpt_write_report rep;
    memset(&rep, 0, sizeof rep);
    rep.failed_input = -1;
    if (!ck || !out_path || ck->scan_only) {
        if (report)
            *report = rep;
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET,
                       "st_ckpt_write_safetensors: bad argument (a checkpoint opened to scan "
                       "has no tensors)");
    }
    size_t n = st_ckpt_tensor_count(ck);
    st_writer *w = st_writer_new();
    ckpt_source *src = calloc(n ? n : 1, sizeof *src);
    st_op_input in;
    memset(&in, 0, sizeof in);
    int rc = ST_OK;
    if (!w || !src) {
        rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
        goto done;
    }
    bool buffered = !st_kernel_copy_allowed();
    for (size_t i = 0; i < n && rc == ST_OK; i++) {
        const st_ckpt_tensor *t = st_ckpt_tensor_at(ck, i);
        uint64_t off;
        if (!buffered && file_run(ck, t, &off)) {
            rc = st_writer_add_file_range(w, t->name, t->name_len, t->dtype, t->shape, t->rank,
                                          ck->fd, off, t->nbytes, err);
        } else {
            src[i] = (ckpt_source){ck, t, &in};
            rc = st_writer_add_stream(w, t->name, t->name_len, t->dtype, t->shape, t->rank,
                                      t->nbytes, source_read, &src[i], err);
        }
    }
    size_t nmeta = st_ckpt_metadata_count(ck);
    for (size_t i = 0; i < nmeta && rc == ST_OK; i++) {
        const char *k, *v;
        size_t kl, vl;
        if (st_ckpt_metadata_at(ck, i, &k, &kl, &v, &vl) != ST_OK ||
            (kl == 6 && memcmp(k, "format", 6) == 0))
            continue;
        rc = st_writer_set_metadata(w, k, kl, v, vl, err);
        rep.metadata += rc == ST_OK;
    }
    if (rc == ST_OK) {
        rc = st_writer_set_metadata(w, "format", 6, "pt", 2, err);
        rep.metadata++;
    }
    if (rc != ST_OK)
        goto done;
    if (opt) {
        st_writer_set_hooks(w, &opt->hooks);
        st_writer_set_header_padding(w, opt->pad);
    }
    rep.tensors = n;
    rep.output_size = st_writer_output_size(w);
    /* a checkpoint that could not be read (changed underneath?): its error */
    rc = st_op_write(w, out_path, &in, 1, &rep.failed_input, err);
done:
    st_writer_free(w);
    free(src);
    if (report)
        *report = rep;
    return rc;
}
