/* Fuzz target: the reader on arbitrary bytes.
 *
 * st_open_memory must accept or reject every input without a crash, leak or
 * undefined behaviour. The same bytes opened as a file with ST_OPEN_MMAP and
 * ST_OPEN_PREAD must get the same verdict. On success every accessor is
 * exercised and cross-checked: st_tensor_at (file order, contiguous
 * offsets, sizes matching shape and dtype), st_find of every name, the
 * by-name order (a sorted permutation), the metadata (sorted keys, found by
 * st_metadata_get), st_tensor_read of every tensor against
 * st_tensor_data, out-of-range reads, and a few slices per tensor. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int name_cmp(const char *a, size_t al, const char *b, size_t bl)
{
    size_t m = al < bl ? al : bl;
    int c = memcmp(a, b, m);
    if (c)
        return c;
    return al < bl ? -1 : al > bl;
}

static void check_tensor(const st_file *f, const st_tensor *t, uint64_t expect_begin, fz *r)
{
    uint64_t data_len = st_file_size(f) - st_data_offset(f);
    FUZZ_ASSERT(t->begin == expect_begin, "offsets not contiguous");
    FUZZ_ASSERT(t->end >= t->begin && t->end <= data_len, "bad range");
    FUZZ_ASSERT(t->name[t->name_len] == 0, "name not NUL-terminated");
    FUZZ_ASSERT(fz_utf8_ok((const uint8_t *)t->name, t->name_len), "name not UTF-8");
    FUZZ_ASSERT(t->header_offset >= 8 && t->header_offset < st_data_offset(f), "header_offset");
    FUZZ_ASSERT((unsigned)t->dtype < ST_DTYPE_COUNT, "dtype");
    FUZZ_ASSERT(t->rank <= ST_MAX_RANK, "rank");
    /* nelements and the byte size, recomputed with 128-bit arithmetic. */
    unsigned __int128 ne = 1;
    for (uint32_t k = 0; k < t->rank; k++) {
        ne *= t->shape[k];
        /* The reference's running product fails on any intermediate overflow. */
        FUZZ_ASSERT(ne <= UINT64_MAX, "element count overflow accepted");
    }
    FUZZ_ASSERT(ne == t->nelements, "nelements %llu", (unsigned long long)t->nelements);
    unsigned __int128 bits = ne * st_dtype_bits(t->dtype);
    FUZZ_ASSERT(bits % 8 == 0, "misaligned accepted");
    FUZZ_ASSERT(bits / 8 == st_tensor_nbytes(t), "size mismatch accepted");

    const st_tensor *found = st_find(f, t->name, t->name_len);
    FUZZ_ASSERT(found == t, "st_find of an existing name");

    uint64_t nbytes = st_tensor_nbytes(t);
    st_error err;
    unsigned char *buf = malloc(nbytes ? nbytes : 1);
    FUZZ_ASSERT(buf, "oom");
    int rc = st_tensor_read(f, t, 0, buf, nbytes, &err);
    FUZZ_ASSERT(rc == ST_OK, "st_tensor_read: %s", err.message);
    const unsigned char *direct = st_tensor_data(f, t);
    FUZZ_ASSERT(direct != NULL, "st_tensor_data in memory mode");
    FUZZ_ASSERT(nbytes == 0 || memcmp(buf, direct, nbytes) == 0, "read != data");
    /* A part of it, then just past the end. */
    if (nbytes) {
        uint64_t off = fz_below(r, nbytes);
        uint64_t len = fz_below(r, nbytes - off + 1);
        rc = st_tensor_read(f, t, off, buf, len, &err);
        FUZZ_ASSERT(rc == ST_OK && memcmp(buf, direct + off, len) == 0, "partial read");
    }
    rc = st_tensor_read(f, t, nbytes, buf, 1, &err);
    FUZZ_ASSERT(rc == ST_E_RANGE, "read past the end gave %d", rc);
    fz_check_error(rc, &err);
    rc = st_tensor_read(f, t, UINT64_MAX, buf, SIZE_MAX, &err);
    FUZZ_ASSERT(rc == ST_E_RANGE, "huge read gave %d", rc);

    /* A few slices: must succeed or fail cleanly, and stay in bounds. */
    uint64_t shape_out[ST_MAX_RANK > 8 ? 8 : ST_MAX_RANK];
    for (int s = 0; s < 3 && t->rank <= 8; s++) {
        st_slice_dim dims[8];
        size_t nd = (size_t)fz_below(r, t->rank + 1);
        for (size_t k = 0; k < nd; k++) {
            uint64_t dim = t->shape[k];
            dims[k].kind = (st_slice_kind)fz_below(r, 3);
            dims[k].start = fz_below(r, dim + 2);
            dims[k].stop = fz_below(r, dim + 2);
        }
        uint64_t snb = 0;
        uint32_t srank = 0;
        rc = st_slice_info(t, dims, nd, &snb, shape_out, &srank, &err);
        if (rc) {
            fz_check_error(rc, &err);
            FUZZ_ASSERT(rc == ST_E_SLICE, "slice_info gave %s", st_code_name(rc));
            continue;
        }
        FUZZ_ASSERT(snb <= nbytes, "slice larger than the tensor");
        FUZZ_ASSERT(srank <= t->rank, "slice rank");
        unsigned char *sbuf = malloc(snb ? snb : 1);
        FUZZ_ASSERT(sbuf, "oom");
        rc = st_slice_read(f, t, dims, nd, sbuf, snb, &err);
        FUZZ_ASSERT(rc == ST_OK, "slice_read after slice_info ok: %s", err.message);
        free(sbuf);
    }
    free(buf);
}

static void exercise(const st_file *f, const uint8_t *data, size_t size)
{
    fz r;
    fz_init(&r, data, size);
    FUZZ_ASSERT(st_file_size(f) == size, "file size");
    uint64_t n = st_header_size(f);
    FUZZ_ASSERT(n <= ST_MAX_HEADER_SIZE && 8 + n <= size, "header size");
    FUZZ_ASSERT(st_data_offset(f) == 8 + n, "data offset");
    FUZZ_ASSERT(st_header_json(f) == (const char *)data + 8, "header pointer");

    size_t count = st_tensor_count(f);
    uint64_t expect = 0;
    for (size_t i = 0; i < count; i++) {
        const st_tensor *t = st_tensor_at(f, i);
        FUZZ_ASSERT(t, "st_tensor_at(%zu) of %zu", i, count);
        check_tensor(f, t, expect, &r);
        expect = t->end;
    }
    FUZZ_ASSERT(expect == st_file_size(f) - st_data_offset(f), "data not covered");
    FUZZ_ASSERT(st_tensor_at(f, count) == NULL, "st_tensor_at past the end");
    FUZZ_ASSERT(st_tensor_by_name_order(f, count) == NULL, "by-name past the end");

    /* By-name order: every tensor once, strictly increasing names. */
    const st_tensor *prev = NULL;
    for (size_t i = 0; i < count; i++) {
        const st_tensor *t = st_tensor_by_name_order(f, i);
        FUZZ_ASSERT(t && st_find(f, t->name, t->name_len) == t, "by-name entry");
        if (prev)
            FUZZ_ASSERT(name_cmp(prev->name, prev->name_len, t->name, t->name_len) < 0,
                        "by-name order not strictly increasing");
        prev = t;
    }

    /* Names that are not there. */
    static const char absent[] = "__metadata__";
    FUZZ_ASSERT(st_find(f, absent, sizeof absent - 1) == NULL, "__metadata__ is not a tensor");
    if (count) {
        const st_tensor *t0 = st_tensor_at(f, 0);
        if (t0->name_len)
            FUZZ_ASSERT(st_find(f, t0->name, t0->name_len - 1) == NULL ||
                            st_find(f, t0->name, t0->name_len - 1)->name_len == t0->name_len - 1,
                        "prefix lookup");
    }

    /* Metadata: sorted, strictly increasing keys, each found by _get. */
    size_t nm = st_metadata_count(f);
    FUZZ_ASSERT(nm == 0 || st_metadata_present(f), "pairs without __metadata__");
    const char *pk = NULL;
    size_t pkl = 0;
    for (size_t i = 0; i < nm; i++) {
        const char *k, *v;
        size_t kl, vl, gl;
        FUZZ_ASSERT(st_metadata_at(f, i, &k, &kl, &v, &vl) == ST_OK, "metadata_at");
        FUZZ_ASSERT(k[kl] == 0 && v[vl] == 0, "metadata not NUL-terminated");
        FUZZ_ASSERT(fz_utf8_ok((const uint8_t *)k, kl) && fz_utf8_ok((const uint8_t *)v, vl),
                    "metadata not UTF-8");
        if (pk)
            FUZZ_ASSERT(name_cmp(pk, pkl, k, kl) < 0, "metadata keys not sorted");
        pk = k;
        pkl = kl;
        const char *g = st_metadata_get(f, k, kl, &gl);
        FUZZ_ASSERT(g == v && gl == vl, "metadata_get");
    }
    FUZZ_ASSERT(st_metadata_at(f, nm, NULL, NULL, NULL, NULL) == ST_E_NOT_FOUND, "metadata_at end");

    /* Whole-file reads at the edges. */
    unsigned char b8[8];
    st_error err;
    FUZZ_ASSERT(st_file_read(f, 0, b8, 8, &err) == ST_OK && memcmp(b8, data, 8) == 0, "file_read");
    FUZZ_ASSERT(st_file_read(f, size, b8, 1, &err) == ST_E_RANGE, "file_read past the end");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    st_file *f = NULL;
    st_error err;
    memset(&err, 0x55, sizeof err);
    int rc = st_open_memory(data, size, 0, &f, &err);
    size_t mem_count = rc ? 0 : st_tensor_count(f);
    if (rc) {
        FUZZ_ASSERT(f == NULL, "handle on failure");
        fz_check_error(rc, &err);
        FUZZ_ASSERT(rc <= ST_E_INCOMPLETE || rc == ST_E_NOMEM, "verdict %s for bytes",
                    st_code_name(rc));
    } else {
        FUZZ_ASSERT(f != NULL, "no handle on success");
        exercise(f, data, size);
        st_close(f);
    }

    /* The file paths must agree with the memory path. Inputs over 64 KiB
     * (the big seeds) skip this: three parses of them slow the run 3x. */
    int fd = size <= 65536 ? fz_memfd(data, size) : -1;
    if (fd >= 0) {
        static const unsigned modes[2] = {ST_OPEN_MMAP, ST_OPEN_PREAD};
        for (int m = 0; m < 2; m++) {
            st_file *g = NULL;
            st_error e2;
            int rc2 = fz_open_fd(fd, modes[m], &g, &e2);
            FUZZ_ASSERT(rc2 == rc, "mode %d: %s vs memory %s", m, st_code_name(rc2),
                        st_code_name(rc));
            if (rc2 == ST_OK) {
                FUZZ_ASSERT(st_tensor_count(g) == mem_count, "tensor count by mode");
                /* Every tensor's bytes read through the file equal the input's. */
                uint64_t doff = st_data_offset(g);
                for (size_t i = 0; i < st_tensor_count(g); i++) {
                    const st_tensor *t = st_tensor_at(g, i);
                    uint64_t nb = st_tensor_nbytes(t);
                    unsigned char *b = malloc(nb ? nb : 1);
                    FUZZ_ASSERT(b, "oom");
                    FUZZ_ASSERT(st_tensor_read(g, t, 0, b, nb, &e2) == ST_OK, "read: %s",
                                e2.message);
                    FUZZ_ASSERT(nb == 0 || memcmp(b, data + doff + t->begin, nb) == 0,
                                "file read differs");
                    FUZZ_ASSERT((st_tensor_data(g, t) == NULL) == (modes[m] == ST_OPEN_PREAD),
                                "st_tensor_data by mode");
                    free(b);
                }
                st_close(g);
            } else {
                FUZZ_ASSERT(g == NULL, "handle on failure");
                FUZZ_ASSERT(e2.offset == err.offset, "error offset differs by mode");
            }
        }
        close(fd);
    }
    return 0;
}
