/* Deterministic inputs for the GGUF quantization tests: the expected
 * outputs in tests/data/quants/ were produced by ggml's reference code on
 * exactly these arrays (see tests/data/quants/README.md), so this file
 * must not change without regenerating them.
 *
 * Only integer and basic float arithmetic (no libm), so every platform and
 * compiler produces the same floats. */
#ifndef ST_QUANTS_INPUTS_H
#define ST_QUANTS_INPUTS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct qi_rng {
    uint64_t s;
} qi_rng;

static inline uint64_t qi_next(qi_rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* uniform in [0, 1), 53 bits */
static inline double qi_unif(qi_rng *r)
{
    return (double)(qi_next(r) >> 11) * 0x1p-53;
}

/* approximately normal: sum of 4 uniforms, centred, unit variance */
static inline double qi_normal(qi_rng *r)
{
    double s = qi_unif(r) + qi_unif(r) + qi_unif(r) + qi_unif(r) - 2.0;
    return s * 1.7320508075688772;
}

enum {
    QI_NORMAL = 0,   /* N(0,1)-like */
    QI_UNIFORM,      /* [-1, 1) */
    QI_HEAVY,        /* Pareto-like tails up to 1e4 */
    QI_ZERO_BLOCKS,  /* normal, a quarter of 32-groups (or whole 256s) zero */
    QI_TINY,         /* magnitudes 1e-30 .. subnormal */
    QI_CONSTANT,     /* constant 32-groups and 256-groups */
    QI_OUTLIER,      /* normal with one large value per 32-group */
    QI_SCALES,       /* per-group scale 2^-20 .. 2^20, some one-signed groups */
    QI_SPECIAL,      /* NaN, +-Inf and huge values sprinkled over normal data */
    QI_TRICKY,       /* a few values only: ties, signed zeros, extremes */
    QI_NDIST
};

static const char *const qi_dist_names[QI_NDIST] = {
    "normal", "uniform", "heavy", "zero_blocks", "tiny", "constant", "outlier", "scales", "special", "tricky",
};

/* Fills x[0..n) (n a multiple of 256) with distribution `dist`, seed. */
static inline void qi_fill(float *x, size_t n, int dist, uint64_t seed)
{
    qi_rng r = {seed * 0x2545F4914F6CDD1Dull + (uint64_t)dist};
    for (size_t i = 0; i < n; i++)
        x[i] = (float)qi_normal(&r);
    switch (dist) {
    case QI_NORMAL:
        break;
    case QI_UNIFORM:
        for (size_t i = 0; i < n; i++)
            x[i] = (float)(qi_unif(&r) * 2.0 - 1.0);
        break;
    case QI_HEAVY:
        for (size_t i = 0; i < n; i++) {
            double u = 1.0 - qi_unif(&r); /* (0, 1] */
            double v = 0.05 * (1.0 / u - 1.0);
            if (v > 1e4)
                v = 1e4;
            x[i] = (float)(qi_next(&r) & 1 ? -v : v);
        }
        break;
    case QI_ZERO_BLOCKS:
        for (size_t g = 0; g < n; g += 32) {
            uint64_t k = qi_next(&r) % 8;
            if (k < 2 || (k == 2 && g % 256 == 0))
                memset(x + g, 0, (k == 2 ? 256 : 32) * sizeof(float));
            if (k == 2)
                g += 224;
        }
        break;
    case QI_TINY:
        for (size_t i = 0; i < n; i++) {
            static const double mags[4] = {1e-30, 1e-36, 1e-40, 1e-44};
            x[i] = (float)(x[i] * mags[(i / 64) % 4]);
        }
        break;
    case QI_CONSTANT:
        for (size_t g = 0; g < n; g += 32) {
            float c = (float)qi_normal(&r);
            if (qi_next(&r) % 4 == 0)
                c = 0.0f;
            size_t len = (g % 256 == 0 && qi_next(&r) % 3 == 0) ? 256 : 32;
            for (size_t i = 0; i < len; i++)
                x[g + i] = c;
            g += len - 32;
        }
        break;
    case QI_OUTLIER:
        for (size_t g = 0; g < n; g += 32) {
            size_t at = (size_t)(qi_next(&r) % 32);
            x[g + at] *= (float)(qi_next(&r) & 1 ? 100.0 : -250.0);
        }
        break;
    case QI_SCALES:
        for (size_t g = 0; g < n; g += 32) {
            int e = (int)(qi_next(&r) % 41) - 20;
            double s = 1.0;
            for (; e > 0; e--)
                s *= 2.0;
            for (; e < 0; e++)
                s *= 0.5;
            uint64_t sign = qi_next(&r) % 4; /* 0: positive only, 1: negative only */
            for (size_t i = 0; i < 32; i++) {
                double v = x[g + i] * s;
                if (sign == 0 && v < 0)
                    v = -v;
                if (sign == 1 && v > 0)
                    v = -v;
                x[g + i] = (float)v;
            }
        }
        break;
    case QI_SPECIAL:
        for (size_t i = 0; i < n; i++) {
            uint64_t k = qi_next(&r) % 64;
            uint32_t bits = 0;
            if (k == 0)
                bits = 0x7FC00000u; /* NaN */
            else if (k == 1)
                bits = 0xFFC00001u; /* -NaN with payload */
            else if (k == 2)
                bits = 0x7F800000u; /* +Inf */
            else if (k == 3)
                bits = 0xFF800000u; /* -Inf */
            else if (k == 4)
                bits = 0x7F7FFFFFu; /* FLT_MAX */
            else if (k == 5)
                bits = 0x7F812345u; /* signalling NaN */
            if (bits)
                memcpy(&x[i], &bits, 4);
        }
        break;
    case QI_TRICKY:
        for (size_t g = 0; g < n; g += 32) {
            static const float vals[] = {0.0f, -0.0f, 1.0f, -1.0f, 0.5f, -0.5f, 1e-40f, -1e-40f,
                                         65504.0f, -3.0e38f, 3.0e38f, 1.17549435e-38f, 7.0f};
            size_t span = 1 + (size_t)(qi_next(&r) % 13);
            for (size_t i = 0; i < 32; i++)
                x[g + i] = vals[(size_t)(qi_next(&r) % span)];
        }
        break;
    default:
        break;
    }
}

/* Random bytes for dequantization. */
static inline void qi_bytes(uint8_t *p, size_t n, uint64_t seed)
{
    qi_rng r = {seed ^ 0xD1B54A32D192ED03ull};
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(qi_next(&r) >> 56);
}

#endif
