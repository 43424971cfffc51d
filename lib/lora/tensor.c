/* Tensors as f32: the adapter math runs in f32 whatever the files hold. */
#include "lora/lora_internal.h"

#include <stdlib.h>
#include <string.h>

float *lora_alloc_f32(uint64_t n, const char *what, st_error *err)
{
    if (n > SIZE_MAX / sizeof(float) / 2) {
        st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "%s: %llu elements do not fit in memory", what,
                (unsigned long long)n);
        return NULL;
    }
    float *p = malloc(n ? (size_t)n * sizeof(float) : 1);
    if (!p)
        st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "%s: out of memory for %llu floats", what,
                (unsigned long long)n);
    return p;
}

int lora_load_rows_f32(const st_file *f, const char *path, const st_tensor *t, uint64_t row0,
                       uint64_t rows, float *dst, st_error *err)
{
    char nm[160];
    st_quote_name(nm, sizeof nm, t->name, t->name_len);
    if (!st_dtype_is_float(t->dtype) || st_dtype_bits(t->dtype) < 8 ||
        !st_convert_supported(t->dtype, ST_F32))
        return st_fail(err, ST_E_LORA, t->header_offset, "%s: tensor %s has dtype %s, not a float",
                       path, nm, st_dtype_name(t->dtype));
    uint64_t d0 = t->rank ? t->shape[0] : 1;
    if (row0 > d0 || rows > d0 - row0)
        return st_fail(err, ST_E_LORA, t->header_offset, "%s: tensor %s: rows out of range", path, nm);
    uint64_t per_row = d0 ? t->nelements / d0 : 0;
    uint64_t esz = st_dtype_bits(t->dtype) / 8;
    uint64_t n = rows * per_row, off = row0 * per_row * esz;
    const void *src = st_tensor_data(f, t);
    if (src && n)
        return st_convert(ST_F32, dst, t->dtype, (const char *)src + off, n, 0, err);
    if (esz <= 4 && n) {
        /* pread mode: the raw bytes straight into dst (they take no more
         * room than the floats), then widened in place from the last
         * piece to the first, each piece through a small stack copy: the
         * floats of piece [c0, c1) land at bytes [4 c0, 4 c1), never on
         * the raw bytes [0, esz c0) still to convert. No large buffer is
         * mapped and faulted in per tensor. */
        int rc = st_tensor_read(f, t, off, dst, (size_t)(n * esz), err);
        if (rc != ST_OK || t->dtype == ST_F32)
            return rc;
        enum { STEP = 8192 };
        unsigned char piece[STEP * 4];
        for (uint64_t c1 = n; c1 > 0 && rc == ST_OK;) {
            uint64_t c0 = c1 > STEP ? c1 - STEP : 0;
            memcpy(piece, (const unsigned char *)dst + c0 * esz, (size_t)((c1 - c0) * esz));
            rc = st_convert(ST_F32, dst + c0, t->dtype, piece, (size_t)(c1 - c0), 0, err);
            c1 = c0;
        }
        return rc;
    }
    /* wider elements (F64): in pieces through a bounded buffer */
    enum { CHUNK = 1 << 20 };
    void *buf = malloc(CHUNK * 8);
    if (!buf)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    int rc = ST_OK;
    for (uint64_t done = 0; done < n && rc == ST_OK;) {
        uint64_t k = n - done < CHUNK ? n - done : CHUNK;
        rc = st_tensor_read(f, t, off + done * esz, buf, (size_t)(k * esz), err);
        if (rc == ST_OK)
            rc = st_convert(ST_F32, dst + done, t->dtype, buf, k, 0, err);
        done += k;
    }
    free(buf);
    return rc;
}

int lora_load_f32(const st_file *f, const char *path, const st_tensor *t, float **out,
                  st_error *err)
{
    *out = NULL;
    char nm[160];
    st_quote_name(nm, sizeof nm, t->name, t->name_len);
    float *p = lora_alloc_f32(t->nelements, nm, err);
    if (!p)
        return ST_E_NOMEM;
    int rc = lora_load_rows_f32(f, path, t, 0, t->rank ? t->shape[0] : 1, p, err);
    if (rc) {
        free(p);
        return rc;
    }
    *out = p;
    return ST_OK;
}

int lora_load_scalar(const st_file *f, const char *path, const st_tensor *t, double *out,
                     st_error *err)
{
    char nm[160];
    st_quote_name(nm, sizeof nm, t->name, t->name_len);
    if (t->nelements != 1 || st_dtype_bits(t->dtype) < 8 ||
        !st_convert_supported(t->dtype, ST_F64))
        return st_fail(err, ST_E_LORA, t->header_offset,
                       "%s: %s should hold one number (it has %llu elements of %s)", path, nm,
                       (unsigned long long)t->nelements, st_dtype_name(t->dtype));
    unsigned char raw[8];
    int rc = st_tensor_read(f, t, 0, raw, st_dtype_bits(t->dtype) / 8, err);
    if (rc == ST_OK)
        rc = st_convert(ST_F64, out, t->dtype, raw, 1, 0, err);
    return rc;
}
