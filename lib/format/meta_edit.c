/* Editing a file's "__metadata__". Changes apply in order: the last word
 * on a key wins. The result always goes to a temporary file that is
 * fsync'ed and renamed over the target (in place: the file a symbolic link
 * points to), so a crash leaves the old file or the new one, never a mix,
 * and the input is never modified.
 *
 * Two layouts. When the new header's JSON fits in the old header's N bytes
 * (with `pad` spaces to spare) and the tensors already lie where the
 * canonical writer would put them, the output keeps N (spaces after the
 * JSON) so no tensor byte moves: the temporary file is then a clone of the
 * input (FICLONE: XFS, btrfs share the extents) with only its header
 * rewritten, O(header) whatever the file's size. Where cloning is refused
 * (other file systems, ST_NO_COPY_FILE_RANGE=1) the same bytes are written
 * by the writer, the tensors moved by copy_file_range. Otherwise the file
 * is rewritten in the canonical layout (plus `pad`). */
#include "format/stream.h"
#include "format/writer_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* One pair of the result: an input pair (seq 0) or a change (seq = its
 * position + 1). */
typedef struct meta_op {
    const char *key;
    size_t key_len;
    const char *value; /* NULL: removed */
    size_t value_len;
    size_t seq;
} meta_op;

static int cmp_op(const void *a, const void *b)
{
    const meta_op *x = a, *y = b;
    int c = st_name_cmp(x->key, x->key_len, y->key, y->key_len);
    if (c)
        return c;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static bool same_key(const meta_op *x, const meta_op *y)
{
    return x->key_len == y->key_len && memcmp(x->key, y->key, x->key_len) == 0;
}

/* Sets the writer's metadata from the input's pairs and the changes. */
static int apply(st_writer *w, const st_file *in, const st_meta_change *changes, size_t n,
                 st_meta_edit_report *rep, st_error *err)
{
    size_t nm = st_metadata_count(in);
    meta_op *ops = calloc(nm + n + 1, sizeof *ops);
    if (!ops)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < nm; i++) {
        meta_op *o = &ops[k];
        if (st_metadata_at(in, i, &o->key, &o->key_len, &o->value, &o->value_len) == ST_OK)
            k++;
    }
    for (size_t i = 0; i < n; i++)
        ops[k++] = (meta_op){changes[i].key, changes[i].key_len, changes[i].value,
                             changes[i].value_len, i + 1};
    qsort(ops, k, sizeof *ops, cmp_op);
    int rc = ST_OK;
    for (size_t i = 0; i < k && rc == ST_OK;) {
        size_t j = i;
        while (j + 1 < k && same_key(&ops[i], &ops[j + 1]))
            j++;
        const meta_op *last = &ops[j]; /* the last word on this key */
        bool existed = ops[i].seq == 0;
        if (last->value) {
            rc = st_writer_set_metadata(w, last->key, last->key_len, last->value,
                                        last->value_len, err);
            if (last->seq == 0)
                rep->kept++;
            else
                rep->set++;
        } else if (existed) {
            rep->removed++;
        }
        i = j + 1;
    }
    free(ops);
    return rc;
}

int st_metadata_edit(const char *in_path, const char *out_path, const st_meta_change *changes,
                     size_t n, const st_meta_edit_options *opt, st_meta_edit_report *report,
                     st_error *err)
{
    st_meta_edit_report rep;
    memset(&rep, 0, sizeof rep);
    rep.failed_input = -1;
    st_op_input in = {.path = in_path};
    st_writer *w = NULL;
    st_op_source *src = NULL;
    char *real = NULL;
    bool in_place = opt && opt->in_place;
    int rc = ST_OK;
    if (!in_path || (!out_path && !in_place) || (n && !changes)) {
        rc = st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_metadata_edit: bad argument");
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        if (!changes[i].key) {
            rc = st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_metadata_edit: change %zu has no key", i);
            goto done;
        }
    rc = st_open(in_path, ST_OPEN_PREAD, &in.file, err);
    if (rc != ST_OK) {
        rep.failed_input = 0;
        goto done;
    }
    if (in_place) {
        /* Replace the file a symbolic link points to, not the link. */
        real = realpath(in_path, NULL);
        if (!real) {
            char eb[128];
            int e = errno;
            rc = st_fail(err, ST_E_IO, ST_NO_OFFSET, "%s: %s", in_path,
                         strerror_r(e, eb, sizeof eb));
            goto done;
        }
        out_path = real;
    } else if (st_op_same_file(in_path, out_path)) {
        rc = st_fail(err, ST_E_ARG, ST_NO_OFFSET,
                     "OUT '%s' is the input file; edit in place to replace it", out_path);
        goto done;
    }
    size_t nt = st_tensor_count(in.file);
    w = st_writer_new();
    src = calloc(nt ? nt : 1, sizeof *src);
    if (!w || !src) {
        rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < nt && rc == ST_OK; i++) {
        src[i].in = &in;
        src[i].t = st_tensor_at(in.file, i);
        rc = st_op_add_copy(w, NULL, 0, &src[i], err);
    }
    if (rc == ST_OK)
        rc = apply(w, in.file, changes, n, &rep, err);
    if (rc != ST_OK)
        goto done;
    if (st_metadata_present(in.file))
        st_writer_set_metadata_present(w, 1);
    uint64_t pad = opt ? opt->pad : 0;
    uint64_t old_n = st_data_offset(in.file) - 8;
    uint64_t json = st_writer_json_size(w);
    bool keep = json && pad <= old_n && json <= old_n - pad && st_op_same_layout(w, in.file);
    if (keep)
        st_writer_set_header_size(w, old_n);
    else
        st_writer_set_header_padding(w, pad);
    rep.output_size = st_writer_output_size(w);
    if (opt)
        st_writer_set_hooks(w, &opt->hooks);
    if (keep) {
        rep.header_only = 1;
        rc = st_op_clone_write(w, in.file, out_path, opt ? &opt->hooks : NULL, err);
        if (rc != ST_E_UNSUPPORTED)
            goto done;
        rep.header_only = 0;
        rep.kept_layout = 1;
    }
    rc = st_op_write(w, out_path, &in, 1, &rep.failed_input, err);
done:
    st_writer_free(w);
    free(src);
    free(real);
    st_close(in.file);
    if (report)
        *report = rep;
    return rc;
}
