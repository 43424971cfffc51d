/* Slicing a tensor, with the reference's rules (Rust crate `safetensors`,
 * slice.rs, SliceIterator::new), and copying the result in C order.
 *
 * The reference walks the dimensions from the innermost out, keeping a bit
 * `span` (dtype bits times the sizes of the dimensions already walked):
 *  - each requested dimension gets [start, stop): ALL -> [0, dim),
 *    RANGE -> [start, stop), INDEX s -> [s, s + 1); start >= dim or
 *    stop > dim is out of range. So ALL on a zero-length dimension is an
 *    error, while a zero-length dimension that is not requested is fine.
 *  - as long as every dimension so far was taken whole ([0, dim)), the
 *    dimension just extends the contiguous block;
 *  - the first dimension that is not whole must have start * span and
 *    stop * span on a byte boundary;
 *  - every dimension further out must have n * span on a byte boundary for
 *    every index n it takes (whole dimensions included).
 * We reproduce these checks exactly (in bits modulo 8, so they cannot
 * overflow), plus one the reference lacks: start > stop is rejected instead
 * of underflowing. The reference also forgets its runs after an empty range
 * in an outer dimension; we mirror the effect on the alignment checks, but
 * return the (empty) result its shape describes. */
#include "common/internal.h"

#include <stdlib.h>
#include <string.h>

/* Gathering from windows (pread mode): runs shorter than SLICE_WINDOW_RUN
 * bytes whose starts are at most that far apart. */
#define SLICE_WINDOW_RUN 4096u
#define SLICE_WINDOW (1u << 20)

typedef struct plan {
    uint64_t nbytes;
    uint32_t out_rank;
    long k; /* innermost requested dimension that is not whole; -1: none */
} plan;

static int dim_range(const st_tensor *t, const st_slice_dim *d, uint32_t i, uint64_t *start,
                     uint64_t *stop, st_error *err)
{
    char q[160];
    uint64_t dim = t->shape[i];
    uint64_t s, e;
    switch (d->kind) {
    case ST_SLICE_ALL:
        s = 0;
        e = dim;
        break;
    case ST_SLICE_RANGE:
        s = d->start;
        e = d->stop;
        break;
    case ST_SLICE_INDEX:
        s = d->start;
        e = s < dim ? s + 1 : s; /* s >= dim fails below either way */
        break;
    default:
        st_quote_name(q, sizeof q, t->name, t->name_len);
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET,
                       "tensor %s: invalid slice kind %d for dimension %u", q, (int)d->kind,
                       (unsigned)i);
    }
    if (s >= dim || e > dim) {
        st_quote_name(q, sizeof q, t->name, t->name_len);
        return st_fail(err, ST_E_SLICE, ST_NO_OFFSET,
                       "tensor %s: index %llu out of bounds for dimension %u of size %llu", q,
                       (unsigned long long)(s >= dim ? s : e - 1), (unsigned)i,
                       (unsigned long long)dim);
    }
    if (s > e) {
        st_quote_name(q, sizeof q, t->name, t->name_len);
        return st_fail(err, ST_E_SLICE, ST_NO_OFFSET,
                       "tensor %s: range start %llu is after stop %llu in dimension %u", q,
                       (unsigned long long)s, (unsigned long long)e, (unsigned)i);
    }
    *start = s;
    *stop = e;
    return ST_OK;
}

static int misaligned(const st_tensor *t, uint32_t i, st_error *err)
{
    char q[160];
    st_quote_name(q, sizeof q, t->name, t->name_len);
    return st_fail(err, ST_E_SLICE, ST_NO_OFFSET,
                   "tensor %s: slice of dimension %u does not fall on a byte boundary (%s)", q,
                   (unsigned)i, st_dtype_name(t->dtype));
}

/* True when some n in [start, stop) has n * span not a multiple of 8 bits,
 * given span8 = span mod 8. n * span8 is a multiple of 8 exactly when n is
 * a multiple of g = 8 / gcd(span8, 8). */
static bool some_index_misaligned(uint64_t start, uint64_t stop, unsigned span8)
{
    if (span8 == 0 || start == stop)
        return false;
    unsigned g = span8 % 2 ? 8 : span8 % 4 ? 4 : 2;
    if (stop - start >= 2)
        return true; /* two neighbours are never both multiples of g >= 2 */
    return start % g != 0;
}

static int make_plan(const st_tensor *t, const st_slice_dim *dims, size_t ndims,
                     uint64_t *out_shape, plan *p, st_error *err)
{
    char q[160];
    if (!t || (ndims && !dims) || (t->rank && !t->shape))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "slice: NULL argument");
    unsigned bits = st_dtype_bits(t->dtype);
    uint64_t nelements, tbytes;
    if (!bits || !st_shape_product(t->shape, t->rank, &nelements) ||
        st_bytes_for(t->dtype, nelements, &tbytes) != ST_OK || t->end < t->begin ||
        t->end - t->begin != tbytes) {
        st_quote_name(q, sizeof q, t->name, t->name_len);
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET,
                       "tensor %s: inconsistent description (dtype, shape, byte range)", q);
    }
    if (ndims > t->rank) {
        st_quote_name(q, sizeof q, t->name, t->name_len);
        return st_fail(err, ST_E_SLICE, ST_NO_OFFSET,
                       "tensor %s: %zu slice dimensions for a tensor of rank %u", q, ndims,
                       (unsigned)t->rank);
    }
    uint32_t dropped = 0;
    for (size_t i = 0; i < ndims; i++)
        if (dims[i].kind == ST_SLICE_INDEX)
            dropped++;
    uint32_t out_rank = t->rank - dropped;
    uint32_t pos = out_rank;

    unsigned span8 = bits % 8; /* span, the bit size of the walked block, mod 8 */
    bool have_runs = false;    /* the reference's `!indices.is_empty()`       */
    long k = -1;
    bool zero = false;
    uint64_t count = 1;
    for (uint32_t i = t->rank; i-- > 0;) {
        uint64_t dim = t->shape[i], start = 0, stop = dim;
        bool keep = true;
        if (i < ndims) {
            int rc = dim_range(t, &dims[i], i, &start, &stop, err);
            if (rc)
                return rc;
            keep = dims[i].kind != ST_SLICE_INDEX;
            if (!have_runs) {
                if (!(start == 0 && stop == dim)) {
                    if ((start % 8) * span8 % 8 || (stop % 8) * span8 % 8)
                        return misaligned(t, i, err);
                    have_runs = true;
                    if (k < 0)
                        k = (long)i;
                }
            } else {
                if (some_index_misaligned(start, stop, span8))
                    return misaligned(t, i, err);
                if (start == stop)
                    have_runs = false;
            }
        }
        if (keep) {
            uint64_t len = stop - start;
            if (out_shape)
                out_shape[--pos] = len;
            if (len == 0)
                zero = true;
            else if (__builtin_mul_overflow(count, len, &count))
                count = UINT64_MAX; /* only reachable next to a zero length */
        }
        span8 = (unsigned)(span8 * (dim % 8) % 8);
    }
    uint64_t nbytes = 0;
    if (!zero) {
        /* Without a zero length every dimension is non-zero, so the result
         * is no larger than the (validated) tensor. */
        int rc = st_bytes_for(t->dtype, count, &nbytes);
        if (rc) {
            st_quote_name(q, sizeof q, t->name, t->name_len);
            return st_fail(err, ST_E_SLICE, ST_NO_OFFSET,
                           "tensor %s: slice is not a whole number of bytes", q);
        }
    }
    p->nbytes = nbytes;
    p->out_rank = out_rank;
    p->k = k;
    return ST_OK;
}

int st_slice_info(const st_tensor *tensor, const st_slice_dim *dims, size_t ndims,
                  uint64_t *nbytes, uint64_t *out_shape, uint32_t *out_rank, st_error *err)
{
    plan p;
    int rc = make_plan(tensor, dims, ndims, out_shape, &p, err);
    if (rc)
        return rc;
    if (nbytes)
        *nbytes = p.nbytes;
    if (out_rank)
        *out_rank = p.out_rank;
    return ST_OK;
}

int st_slice_read(const st_file *file, const st_tensor *tensor, const st_slice_dim *dims,
                  size_t ndims, void *buf, size_t buf_len, st_error *err)
{
    plan p;
    int rc = make_plan(tensor, dims, ndims, NULL, &p, err);
    if (rc)
        return rc;
    if (!file)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_slice_read: NULL file");
    if (p.nbytes > buf_len || (p.nbytes && !buf)) {
        char q[160];
        st_quote_name(q, sizeof q, tensor->name, tensor->name_len);
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET,
                       "tensor %s: slice needs %llu bytes, buffer has %zu", q,
                       (unsigned long long)p.nbytes, buf_len);
    }
    if (p.nbytes == 0)
        return ST_OK;
    if (p.k < 0) /* every dimension whole: one copy */
        return st_tensor_read(file, tensor, 0, buf, (size_t)p.nbytes, err);

    /* Non-empty result: every dimension is non-zero, so all strides below
     * are at most the tensor's bit count, which fits 64 bits. */
    uint32_t k = (uint32_t)p.k;
    uint64_t stride = st_dtype_bits(tensor->dtype);
    for (uint32_t j = tensor->rank; --j > k;)
        stride *= tensor->shape[j];
    uint64_t start, stop;
    rc = dim_range(tensor, &dims[k], k, &start, &stop, err);
    if (rc)
        return rc;
    uint64_t off = start * stride;           /* bit offset of the first run */
    uint64_t run_bytes = (stop - start) * stride / 8;

    /* The dimensions outside k that take more than one index, innermost
     * last, as an odometer; the others only add a constant offset. */
    uint64_t *cnt = k ? malloc(2 * (size_t)k * sizeof *cnt) : NULL;
    if (k && !cnt)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    uint64_t *str = cnt ? cnt + k : NULL;
    uint32_t m = 0;
    for (uint32_t i = k; i-- > 0;) {
        stride *= tensor->shape[i + 1];
        uint64_t s, e;
        rc = dim_range(tensor, &dims[i], i, &s, &e, err);
        if (rc) {
            free(cnt);
            return rc;
        }
        off += s * stride;
        if (e - s > 1) {
            cnt[m] = e - s;
            str[m] = stride;
            m++;
        }
    }
    /* cnt/str are innermost first; idx counts the odometer's digits in the
     * same order. */
    uint64_t *idx = m ? calloc(m, sizeof *idx) : NULL;
    if (m && !idx) {
        free(cnt);
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    }
    /* Without a mapping every st_tensor_read is a pread: when runs are
     * small and close together (starts at most a page apart), read windows
     * covering many runs at once and gather from them instead. The runs
     * come in increasing offset order. */
    unsigned char *win = NULL;
    uint64_t wbeg = 0, wend = 0, last_end = off / 8 + run_bytes;
    for (uint32_t d = 0; d < m; d++)
        last_end += (cnt[d] - 1) * str[d] / 8;
    if (m && run_bytes < SLICE_WINDOW_RUN && str[0] / 8 <= SLICE_WINDOW_RUN &&
        st_tensor_data(file, tensor) == NULL) {
        win = malloc(SLICE_WINDOW);
        /* without memory the plain path still works */
    }
    unsigned char *dst = buf;
    for (;;) {
        uint64_t boff = off / 8;
        if (win) {
            if (boff < wbeg || boff + run_bytes > wend) {
                wbeg = boff;
                wend = last_end - boff > SLICE_WINDOW ? boff + SLICE_WINDOW : last_end;
                rc = st_tensor_read(file, tensor, wbeg, win, (size_t)(wend - wbeg), err);
                if (rc)
                    break;
            }
            memcpy(dst, win + (boff - wbeg), (size_t)run_bytes);
        } else {
            rc = st_tensor_read(file, tensor, boff, dst, (size_t)run_bytes, err);
            if (rc)
                break;
        }
        dst += run_bytes;
        uint32_t d = 0;
        for (; d < m; d++) {
            off += str[d];
            if (++idx[d] < cnt[d])
                break;
            off -= cnt[d] * str[d];
            idx[d] = 0;
        }
        if (d == m)
            break;
    }
    free(win);
    free(idx);
    free(cnt);
    return rc;
}
