/* Fuzz target: slicing.
 *
 * The input picks a tensor (any dtype, up to 5 dimensions of 0..7, bytes
 * from the input), written with st_writer_serialize and opened from memory
 * and, as a file, in pread mode; then a series of slice requests. Checked
 * against a model in this file:
 *  - out-of-bounds requests (start >= dim, stop > dim, start > stop) are
 *    ST_E_SLICE; in-bounds requests on whole-byte dtypes always succeed;
 *  - sub-byte dtypes follow the documented alignment walk (header comment
 *    of st_slice_info), except when a range is empty (the reference's
 *    special case), and an accepted slice always has byte-aligned runs;
 *  - the shape, rank and byte count of the result;
 *  - the bytes: every selected element, in C order, bit for bit, the same
 *    from memory and from pread. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAXR 5

static unsigned get_bits(const uint8_t *p, uint64_t bit, unsigned n)
{
    unsigned v = 0;
    for (unsigned k = 0; k < n; k++)
        v |= (unsigned)((p[(bit + k) / 8] >> ((bit + k) % 8)) & 1) << k;
    return v;
}

static void put_bits(uint8_t *p, uint64_t bit, unsigned n, unsigned v)
{
    for (unsigned k = 0; k < n; k++)
        if (v >> k & 1)
            p[(bit + k) / 8] |= (uint8_t)(1u << ((bit + k) % 8));
}

/* The documented sub-byte rule; 1 = aligned. lo/hi are the ranges. */
static int model_aligned(unsigned bits, const uint64_t *shape, uint32_t rank, const uint64_t *lo,
                         const uint64_t *hi)
{
    unsigned span = bits % 8; /* bits times the walked sizes, modulo 8 */
    int contiguous = 1;
    for (int k = (int)rank - 1; k >= 0; k--) {
        uint64_t dim = shape[k];
        int whole = lo[k] == 0 && hi[k] == dim;
        if (contiguous) {
            if (!whole) {
                if ((lo[k] % 8) * span % 8 || (hi[k] % 8) * span % 8)
                    return 0;
                contiguous = 0;
            }
        } else {
            for (uint64_t n = lo[k]; n < hi[k] && n < lo[k] + 8; n++)
                if ((n % 8) * span % 8)
                    return 0;
        }
        span = (unsigned)((span * (dim % 8)) % 8);
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz r;
    fz_init(&r, data, size);
    st_dtype dt = (st_dtype)fz_below(&r, ST_DTYPE_COUNT);
    unsigned bits = st_dtype_bits(dt);
    uint32_t rank = (uint32_t)fz_below(&r, MAXR + 1);
    uint64_t shape[MAXR];
    uint64_t ne = 1;
    for (uint32_t k = 0; k < rank; k++) {
        shape[k] = fz_below(&r, 8);
        ne *= shape[k];
    }
    if (ne * bits % 8)
        return 0; /* not a valid tensor */
    uint64_t nbytes = ne * bits / 8;
    uint8_t *tdata = malloc(nbytes ? nbytes : 1);
    FUZZ_ASSERT(tdata, "oom");
    for (uint64_t k = 0; k < nbytes; k++)
        tdata[k] = fz_byte(&r);

    st_error err;
    st_writer *w = st_writer_new();
    FUZZ_ASSERT(w, "oom");
    FUZZ_ASSERT(st_writer_add(w, "t", 1, dt, shape, rank, tdata, nbytes, &err) == ST_OK, "add: %s",
                err.message);
    void *file = NULL;
    size_t flen = 0;
    FUZZ_ASSERT(st_writer_serialize(w, &file, &flen, &err) == ST_OK, "serialize");
    st_writer_free(w);
    st_file *fm = NULL, *fp = NULL;
    FUZZ_ASSERT(st_open_memory(file, flen, 0, &fm, &err) == ST_OK, "open: %s", err.message);
    int fd = fz_memfd(file, flen);
    if (fd >= 0) {
        FUZZ_ASSERT(fz_open_fd(fd, ST_OPEN_PREAD, &fp, &err) == ST_OK, "pread open");
        close(fd);
    }
    const st_tensor *tm = st_tensor_at(fm, 0);
    const st_tensor *tp = fp ? st_tensor_at(fp, 0) : NULL;

    int nreq = 1 + (int)fz_below(&r, 8);
    for (int q = 0; q < nreq; q++) {
        st_slice_dim dims[MAXR + 1];
        size_t nd = (size_t)fz_below(&r, rank + 2); /* rank + 1: too many */
        uint64_t lo[MAXR], hi[MAXR];
        int in_bounds = nd <= rank, empty = 0, dropped = 0;
        for (size_t k = 0; k < nd; k++) {
            uint64_t dim = k < rank ? shape[k] : 1;
            uint8_t op = fz_byte(&r);
            dims[k].kind = (st_slice_kind)(op % 3);
            dims[k].start = (op & 0x80) ? fz_rand(&r) : fz_below(&r, dim + 2);
            dims[k].stop = (op & 0x40) ? fz_rand(&r) : fz_below(&r, dim + 2);
            uint64_t s = 0, e = dim;
            if (dims[k].kind == ST_SLICE_RANGE) {
                s = dims[k].start;
                e = dims[k].stop;
            } else if (dims[k].kind == ST_SLICE_INDEX) {
                s = dims[k].start;
                e = s + 1;
                dropped++;
            }
            if (s >= dim || e > dim || s > e || (dims[k].kind == ST_SLICE_INDEX && s == UINT64_MAX))
                in_bounds = 0;
            if (k < rank) {
                lo[k] = s;
                hi[k] = e;
                if (s == e)
                    empty = 1;
            }
        }
        for (size_t k = nd; k < rank; k++) {
            lo[k] = 0;
            hi[k] = shape[k];
            if (!shape[k])
                empty = 1; /* an empty result: the reference's special case too */
        }

        uint64_t snb = 0, oshape[MAXR];
        uint32_t orank = 0;
        int rc = st_slice_info(tm, dims, nd, &snb, oshape, &orank, &err);
        if (nd > rank) {
            FUZZ_ASSERT(rc != ST_OK, "more dimensions than the rank accepted");
            fz_check_error(rc, &err);
            continue;
        }
        if (!in_bounds) {
            FUZZ_ASSERT(rc == ST_E_SLICE, "out of bounds gave %s", st_code_name(rc));
            fz_check_error(rc, &err);
            continue;
        }
        if (bits >= 8)
            FUZZ_ASSERT(rc == ST_OK, "in-bounds slice rejected: %s", err.message);
        else if (!empty)
            FUZZ_ASSERT((rc == ST_OK) == model_aligned(bits, shape, rank, lo, hi),
                        "sub-byte verdict %s differs from the documented rule",
                        st_code_name(rc));
        if (rc) {
            FUZZ_ASSERT(rc == ST_E_SLICE, "slice gave %s", st_code_name(rc));
            fz_check_error(rc, &err);
            continue;
        }

        /* Shape and size. */
        FUZZ_ASSERT(orank == rank - (uint32_t)dropped, "rank %u", orank);
        uint64_t sel = 1;
        uint32_t j = 0;
        for (uint32_t k = 0; k < rank; k++) {
            sel *= hi[k] - lo[k];
            if (k < nd && dims[k].kind == ST_SLICE_INDEX)
                continue;
            FUZZ_ASSERT(oshape[j] == hi[k] - lo[k], "out shape[%u]", j);
            j++;
        }
        FUZZ_ASSERT(sel * bits % 8 == 0 && snb == sel * bits / 8, "slice bytes %llu for %llu",
                    (unsigned long long)snb, (unsigned long long)sel);

        /* The model's bytes: walk every element in C order. */
        uint8_t *want = calloc(snb ? snb : 1, 1), *got = malloc(snb ? snb : 1);
        FUZZ_ASSERT(want && got, "oom");
        uint64_t idx[MAXR] = {0}, out_bit = 0, run_start_bit = UINT64_MAX, last_src = UINT64_MAX;
        for (uint64_t e = 0; e < ne; e++) {
            int in = 1;
            for (uint32_t k = 0; k < rank; k++)
                if (idx[k] < lo[k] || idx[k] >= hi[k])
                    in = 0;
            if (in) {
                /* Runs of consecutive source elements must be byte-aligned. */
                if (last_src == UINT64_MAX || e != last_src + 1) {
                    if (last_src != UINT64_MAX)
                        FUZZ_ASSERT((last_src + 1) * bits % 8 == 0, "run end misaligned");
                    run_start_bit = e * bits;
                    FUZZ_ASSERT(run_start_bit % 8 == 0, "run start misaligned");
                }
                last_src = e;
                if (bits >= 8)
                    memcpy(want + out_bit / 8, tdata + e * bits / 8, bits / 8);
                else
                    put_bits(want, out_bit, bits, get_bits(tdata, e * bits, bits));
                out_bit += bits;
            }
            for (int k = (int)rank - 1; k >= 0; k--) {
                if (++idx[k] < shape[k])
                    break;
                idx[k] = 0;
            }
        }
        if (last_src != UINT64_MAX)
            FUZZ_ASSERT((last_src + 1) * bits % 8 == 0, "last run end misaligned");
        FUZZ_ASSERT(out_bit == sel * bits, "model count");

        rc = st_slice_read(fm, tm, dims, nd, got, snb, &err);
        FUZZ_ASSERT(rc == ST_OK, "slice_read: %s", err.message);
        FUZZ_ASSERT(snb == 0 || memcmp(got, want, snb) == 0, "slice bytes differ (memory)");
        if (tp) {
            memset(got, 0xa5, snb);
            rc = st_slice_read(fp, tp, dims, nd, got, snb, &err);
            FUZZ_ASSERT(rc == ST_OK, "slice_read pread: %s", err.message);
            FUZZ_ASSERT(snb == 0 || memcmp(got, want, snb) == 0, "slice bytes differ (pread)");
        }
        if (snb) {
            rc = st_slice_read(fm, tm, dims, nd, got, snb - 1, &err);
            FUZZ_ASSERT(rc == ST_E_ARG, "short buffer gave %s", st_code_name(rc));
        }
        free(want);
        free(got);
    }
    st_close(fm);
    st_close(fp);
    free(file);
    free(tdata);
    return 0;
}
