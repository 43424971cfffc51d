/* Fuzz target: GGUF quantization kernels.
 *
 * The first byte picks a type; the rest is used twice:
 *  - as raw blocks of that type, dequantized (any bytes: NaN/Inf scales,
 *    every level pattern);
 *  - as floats (any bit pattern: NaN, Inf, subnormals, huge values),
 *    quantized by the best path and by the portable path, which must give
 *    the same bytes; the result is dequantized again.
 * Under ASan + UBSan: no out-of-bounds access, no undefined conversion or
 * shift, for any input. */
#include "fuzz_util.h"
#include "gguf/quants.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int types[] = {ST_GGML_F32,  ST_GGML_F16,  ST_GGML_BF16, ST_GGML_Q4_0,
                                ST_GGML_Q4_1, ST_GGML_Q5_0, ST_GGML_Q5_1, ST_GGML_Q8_0,
                                ST_GGML_Q8_1, ST_GGML_Q2_K, ST_GGML_Q3_K, ST_GGML_Q4_K,
                                ST_GGML_Q5_K, ST_GGML_Q6_K, ST_GGML_Q8_K};
    if (size < 1)
        return 0;
    int type = types[data[0] % (sizeof types / sizeof types[0])];
    unsigned threads = 1 + (data[0] >> 7);
    data++;
    size--;
    uint32_t be = st_ggml_block_elements(type), bb = st_ggml_block_bytes(type);

    /* raw blocks */
    size_t nb = size / bb;
    if (nb) {
        float *out = malloc(nb * be * sizeof(float));
        FUZZ_ASSERT(out != NULL);
        st_error err;
        int rc = st_ggml_dequantize(type, data, out, (uint64_t)nb * be, threads, &err);
        FUZZ_ASSERT(rc == ST_OK, "%s", err.message);
        free(out);
    }

    /* floats: as many whole blocks as the bytes give, repeated to fill at
     * least one block */
    if (!st_ggml_can_quantize(type) || size < 4)
        return 0;
    size_t nf = size / 4;
    size_t nblk = (nf + be - 1) / be;
    size_t n = nblk * be;
    float *x = malloc(n * sizeof(float));
    unsigned char *a = malloc(nblk * bb), *b = malloc(nblk * bb);
    float *z = malloc(n * sizeof(float));
    FUZZ_ASSERT(x && a && b && z);
    for (size_t i = 0; i < n; i++)
        memcpy(&x[i], data + 4 * (i % nf), 4);
    st_error err;
    int rc = st_ggml_quantize(type, x, a, 1, n, threads, &err);
    FUZZ_ASSERT(rc == ST_OK, "%s", err.message);
    st_quant_blocks(type, x, b, nblk, ST_QUANT_PORTABLE);
    FUZZ_ASSERT(!memcmp(a, b, nblk * bb), "%s: SIMD and portable bytes differ",
                st_ggml_type_name(type));
    rc = st_ggml_dequantize(type, a, z, n, threads, &err);
    FUZZ_ASSERT(rc == ST_OK, "%s", err.message);
    free(x);
    free(a);
    free(b);
    free(z);
    return 0;
}
