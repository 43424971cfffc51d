/*
 * The reference's validation of a parsed header (Metadata::validate and the
 * coverage check of read_metadata), in its order: tensors sorted by
 * data_offsets; for each, the range must start where the previous one ended
 * and not run backwards; then the element count and bit count must not
 * overflow (running product, left to right); then the bits must be whole
 * bytes; then the range must be exactly that many bytes. Finally the data
 * must end exactly at the end of the file.
 */
#include "format/header.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct order_key {
    uint64_t begin, end;
    size_t doc; /* position in document order: a stable tie-break */
} order_key;

static int order_cmp(const void *a, const void *b)
{
    const order_key *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return x->doc < y->doc ? -1 : x->doc > y->doc;
}

static void format_shape(char *dst, size_t cap, const uint64_t *dims, uint32_t rank)
{
    size_t o = (size_t)snprintf(dst, cap, "[");
    for (uint32_t k = 0; k < rank; k++) {
        if (o + 30 >= cap) {
            o += (size_t)snprintf(dst + o, cap - o, ", ...");
            break;
        }
        o += (size_t)snprintf(dst + o, cap - o, "%s%" PRIu64, k ? ", " : "", dims[k]);
    }
    snprintf(dst + o, cap - o, "]");
}

static int tensor_error(const st_tensor *t, int code, st_error *err, const char *what)
{
    char q[160];
    st_quote_name(q, sizeof q, t->name, t->name_len);
    return st_fail(err, code, t->header_offset, "tensor %s (header at file offset %" PRIu64 "): %s", q,
                   t->header_offset, what);
}

static int check_tensor(st_tensor *t, uint64_t expected_begin, st_error *err)
{
    char what[320], shape[160];
    if (t->begin != expected_begin || t->end < t->begin) {
        if (t->end < t->begin)
            snprintf(what, sizeof what, "data_offsets [%" PRIu64 ", %" PRIu64 "] end before they begin",
                     t->begin, t->end);
        else
            snprintf(what, sizeof what,
                     "data_offsets [%" PRIu64 ", %" PRIu64 "] should begin at %" PRIu64
                     " (the end of the previous tensor): %s",
                     t->begin, t->end, expected_begin,
                     t->begin < expected_begin ? "overlap" : "hole");
        return tensor_error(t, ST_E_OFFSETS, err, what);
    }
    uint64_t nelements, nbytes;
    if (!st_shape_product(t->shape, t->rank, &nelements)) {
        format_shape(shape, sizeof shape, t->shape, t->rank);
        snprintf(what, sizeof what, "element count of shape %s overflows 64 bits", shape);
        return tensor_error(t, ST_E_OVERFLOW, err, what);
    }
    int rc = st_bytes_for(t->dtype, nelements, &nbytes);
    if (rc == ST_E_OVERFLOW) {
        snprintf(what, sizeof what, "bit count of %" PRIu64 " %s elements overflows 64 bits",
                 nelements, st_dtype_name(t->dtype));
        return tensor_error(t, rc, err, what);
    }
    if (rc == ST_E_MISALIGNED) {
        snprintf(what, sizeof what, "%" PRIu64 " elements of %s (%u bits each) are not a whole number of bytes",
                 nelements, st_dtype_name(t->dtype), st_dtype_bits(t->dtype));
        return tensor_error(t, rc, err, what);
    }
    if (t->end - t->begin != nbytes) {
        format_shape(shape, sizeof shape, t->shape, t->rank);
        snprintf(what, sizeof what,
                 "data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64 " bytes but %s shape %s needs %" PRIu64,
                 t->begin, t->end, t->end - t->begin, st_dtype_name(t->dtype), shape, nbytes);
        return tensor_error(t, ST_E_SIZE_MISMATCH, err, what);
    }
    t->nelements = nelements;
    return ST_OK;
}

int st_header_validate(st_header *h, uint64_t data_len, uint64_t data_offset, st_error *err)
{
    size_t n = h->count;
    bool sorted = true;
    for (size_t k = 1; k < n && sorted; k++) {
        const st_tensor *a = &h->tensors[k - 1], *b = &h->tensors[k];
        sorted = a->begin < b->begin || (a->begin == b->begin && a->end <= b->end);
    }
    if (!sorted) {
        order_key *keys = malloc(n * sizeof *keys);
        st_tensor *moved = malloc(n * sizeof *moved);
        size_t *where = malloc(n * sizeof *where);
        if (!keys || !moved || !where) {
            free(keys), free(moved), free(where);
            return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory while sorting tensors");
        }
        for (size_t k = 0; k < n; k++)
            keys[k] = (order_key){h->tensors[k].begin, h->tensors[k].end, k};
        qsort(keys, n, sizeof *keys, order_cmp);
        for (size_t k = 0; k < n; k++) {
            moved[k] = h->tensors[keys[k].doc];
            where[keys[k].doc] = k;
        }
        /* The name index refers to document positions: renumber it. */
        for (size_t s = 0; h->index && s <= h->index_mask; s++)
            if (h->index[s])
                h->index[s] = (h->index[s] & ~0xffffffffull) |
                              (uint64_t)(where[(uint32_t)h->index[s] - 1] + 1);
        free(h->tensors);
        h->tensors = moved;
        h->cap = n;
        free(keys);
        free(where);
    }

    uint64_t expected = 0;
    for (size_t k = 0; k < n; k++) {
        int rc = check_tensor(&h->tensors[k], expected, err);
        if (rc)
            return rc;
        expected = h->tensors[k].end;
    }
    if (expected != data_len)
        return st_fail(err, ST_E_INCOMPLETE, data_offset + (expected < data_len ? expected : data_len),
                       "the tensors cover %" PRIu64 " data bytes but the file has %" PRIu64
                       " after the header, which ends at file offset %" PRIu64 " (%s)",
                       expected, data_len, data_offset,
                       expected < data_len ? "trailing bytes" : "data missing");
    return ST_OK;
}
