/* Data type names and sizes, in the reference's order. */
#include "common/internal.h"

#include <string.h>

static const struct {
    const char *name;
    unsigned char bits;
    unsigned char is_float;
} dtype_table[ST_DTYPE_COUNT] = {
    [ST_BOOL] = {"BOOL", 8, 0},
    [ST_F4] = {"F4", 4, 1},
    [ST_F6_E2M3] = {"F6_E2M3", 6, 1},
    [ST_F6_E3M2] = {"F6_E3M2", 6, 1},
    [ST_U8] = {"U8", 8, 0},
    [ST_I8] = {"I8", 8, 0},
    [ST_F8_E5M2] = {"F8_E5M2", 8, 1},
    [ST_F8_E4M3] = {"F8_E4M3", 8, 1},
    [ST_F8_E8M0] = {"F8_E8M0", 8, 1},
    [ST_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", 8, 1},
    [ST_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", 8, 1},
    [ST_I16] = {"I16", 16, 0},
    [ST_U16] = {"U16", 16, 0},
    [ST_F16] = {"F16", 16, 1},
    [ST_BF16] = {"BF16", 16, 1},
    [ST_I32] = {"I32", 32, 0},
    [ST_U32] = {"U32", 32, 0},
    [ST_F32] = {"F32", 32, 1},
    [ST_C64] = {"C64", 64, 0},
    [ST_F64] = {"F64", 64, 1},
    [ST_I64] = {"I64", 64, 0},
    [ST_U64] = {"U64", 64, 0},
};

static bool dtype_valid(st_dtype dtype)
{
    return (unsigned)dtype < ST_DTYPE_COUNT;
}

const char *st_dtype_name(st_dtype dtype)
{
    return dtype_valid(dtype) ? dtype_table[dtype].name : NULL;
}

unsigned st_dtype_bits(st_dtype dtype)
{
    return dtype_valid(dtype) ? dtype_table[dtype].bits : 0;
}

int st_dtype_is_float(st_dtype dtype)
{
    return dtype_valid(dtype) ? dtype_table[dtype].is_float : 0;
}

int st_dtype_from_name(const char *name, size_t len, st_dtype *out)
{
    if (!name)
        return ST_E_ARG;
    /* Every name is 2 to 11 bytes; compare lengths before bytes. */
    if (len < 2 || len > 11)
        return ST_E_NOT_FOUND;
    for (int d = 0; d < ST_DTYPE_COUNT; d++) {
        const char *n = dtype_table[d].name;
        if (n[0] == name[0] && strnlen(n, len + 1) == len && memcmp(n, name, len) == 0) {
            if (out)
                *out = (st_dtype)d;
            return ST_OK;
        }
    }
    return ST_E_NOT_FOUND;
}

bool st_shape_product(const uint64_t *shape, uint32_t rank, uint64_t *out)
{
    uint64_t n = 1;
    for (uint32_t i = 0; i < rank; i++)
        if (__builtin_mul_overflow(n, shape[i], &n))
            return false;
    *out = n;
    return true;
}

int st_bytes_for(st_dtype dtype, uint64_t nelements, uint64_t *nbytes)
{
    uint64_t bits;
    if (__builtin_mul_overflow(nelements, (uint64_t)st_dtype_bits(dtype), &bits))
        return ST_E_OVERFLOW;
    if (bits % 8)
        return ST_E_MISALIGNED;
    *nbytes = bits / 8;
    return ST_OK;
}
