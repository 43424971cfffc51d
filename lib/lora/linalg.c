/*
 * The linear algebra LoRA work needs, over OpenBLAS (products) and LAPACKE
 * (QR, SVD). Nothing here is a numerical method of its own beyond the
 * composition: the randomized range finder of Halko, Martinsson and Tropp
 * (as torch.svd_lowrank, which kohya's resize uses for large layers), and
 * the SVD of a product of two thin factors through their QR decompositions.
 */
#include "lora/lora_internal.h"

#include <cblas.h>
#include <lapacke.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void lora_gemm_acc(size_t m, size_t n, size_t k, float s, const float *a, const float *b,
                   float *c)
{
    if (!m || !n || !k)
        return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)m, (blasint)n, (blasint)k, s,
                a, (blasint)k, b, (blasint)n, 1.0f, c, (blasint)n);
}

/* OpenBLAS runs a product on its own thread pool unless m n k is at most
 * 65536 * GEMM_MULTITHREAD_THRESHOLD (4); tiles that small stay on the
 * calling thread, so callers that already split work across their own
 * threads do not also wake (and spin) BLAS's. The tiling changes nothing
 * of the arithmetic: each element is still one sum over k. */
enum { SERIAL_MNK = 65536 * 4 };

void lora_gemm_acc_serial(size_t m, size_t n, size_t k, float s, const float *a,
                          const float *b, float *c)
{
    if (!m || !n || !k)
        return;
    size_t tm = m < 64 ? m : 64;
    size_t tn = SERIAL_MNK / (tm * k);
    tn = tn < 16 ? 16 : tn / 16 * 16;
    for (size_t i = 0; i < m; i += tm) {
        size_t mi = m - i < tm ? m - i : tm;
        for (size_t j = 0; j < n; j += tn) {
            size_t nj = n - j < tn ? n - j : tn;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)mi, (blasint)nj,
                        (blasint)k, s, a + i * k, (blasint)k, b + j, (blasint)n, 1.0f,
                        c + i * n + j, (blasint)n);
        }
    }
}

unsigned lora_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 64 ? 64 : (unsigned)n;
}

static int too_big(size_t a, size_t b, st_error *err)
{
    if (a > INT_MAX / 2 || b > INT_MAX / 2 || (b && a > INT_MAX / b))
        return st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET,
                       "matrix %zu x %zu is too large for BLAS/LAPACK (32-bit indices)", a, b);
    return ST_OK;
}

/* Orthonormalizes the columns of y [m x l] in place (thin QR's Q). */
static int orthonormalize(float *y, size_t m, size_t l, float *tau, st_error *err)
{
    lapack_int info = LAPACKE_sgeqrf(LAPACK_ROW_MAJOR, (lapack_int)m, (lapack_int)l, y,
                                     (lapack_int)l, tau);
    if (info == 0)
        info = LAPACKE_sorgqr(LAPACK_ROW_MAJOR, (lapack_int)m, (lapack_int)l, (lapack_int)l, y,
                              (lapack_int)l, tau);
    if (info != 0)
        return st_fail(err, info < 0 ? ST_E_NOMEM : ST_E_UNSUPPORTED, ST_NO_OFFSET,
                       "LAPACK QR failed (info %d)", (int)info);
    return ST_OK;
}

/* Deterministic standard normal numbers (xorshift64* + Box-Muller), so an
 * extraction gives the same file every time. */
static void gaussian_fill(float *p, size_t n, uint64_t seed)
{
    uint64_t s = seed ? seed : 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < n; i += 2) {
        double u[2];
        for (int k = 0; k < 2; k++) {
            s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
            u[k] = ((double)((s * 0x2545F4914F6CDD1Dull) >> 11) + 0.5) / 9007199254740992.0;
        }
        double r = sqrt(-2.0 * log(u[0])), th = 6.283185307179586 * u[1];
        p[i] = (float)(r * cos(th));
        if (i + 1 < n)
            p[i + 1] = (float)(r * sin(th));
    }
}

/* Full SVD of a copy of a [m x n]: up = U[:, :r] S, down = V^T[:r]. */
static int svd_full(const float *a, size_t m, size_t n, size_t r, float *up, float *down,
                    st_error *err)
{
    size_t k = m < n ? m : n;
    float *c = malloc(m * n * sizeof *c), *s = malloc(k * sizeof *s);
    float *u = malloc(m * k * sizeof *u), *vt = malloc(k * n * sizeof *vt);
    int rc = ST_OK;
    if (!c || !s || !u || !vt) {
        rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory for an SVD");
        goto out;
    }
    memcpy(c, a, m * n * sizeof *c);
    lapack_int info = LAPACKE_sgesdd(LAPACK_ROW_MAJOR, 'S', (lapack_int)m, (lapack_int)n, c,
                                     (lapack_int)n, s, u, (lapack_int)k, vt, (lapack_int)n);
    if (info != 0) {
        rc = st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET, "LAPACK SVD failed (info %d)", (int)info);
        goto out;
    }
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < r; j++)
            up[i * r + j] = u[i * k + j] * s[j];
    memcpy(down, vt, r * n * sizeof *down);
out:
    free(c), free(s), free(u), free(vt);
    return rc;
}

int lora_svd_truncated(const float *a, size_t m, size_t n, size_t r, float *up, float *down,
                       st_error *err)
{
    size_t k = m < n ? m : n;
    int rc = too_big(m, n, err);
    if (rc)
        return rc;
    if (r == 0 || r > k)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "rank %zu for a %zu x %zu matrix", r, m, n);
    size_t l = r + (r > 10 ? r : 10);
    if (l >= k || k <= 256)
        return svd_full(a, m, n, r, up, down, err);
    enum { POWER_ITERATIONS = 3 };
    float *omega = malloc(n * l * sizeof *omega), *y = malloc(m * l * sizeof *y);
    float *z = malloc(n * l * sizeof *z), *tau = malloc(l * sizeof *tau);
    float *b = malloc(l * n * sizeof *b), *s = malloc(l * sizeof *s);
    float *ub = malloc(l * l * sizeof *ub), *vt = malloc(l * n * sizeof *vt);
    if (!omega || !y || !z || !tau || !b || !s || !ub || !vt) {
        rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory for an SVD");
        goto out;
    }
    gaussian_fill(omega, n * l, 0x5EEDull + m * 31 + n);
    /* Y = A Omega, then (A A^T)^q Y with re-orthonormalization each step */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)m, (blasint)l, (blasint)n,
                1.0f, a, (blasint)n, omega, (blasint)l, 0.0f, y, (blasint)l);
    rc = orthonormalize(y, m, l, tau, err);
    for (int it = 0; it < POWER_ITERATIONS && rc == ST_OK; it++) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)n, (blasint)l, (blasint)m,
                    1.0f, a, (blasint)n, y, (blasint)l, 0.0f, z, (blasint)l);
        rc = orthonormalize(z, n, l, tau, err);
        if (rc)
            break;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)m, (blasint)l,
                    (blasint)n, 1.0f, a, (blasint)n, z, (blasint)l, 0.0f, y, (blasint)l);
        rc = orthonormalize(y, m, l, tau, err);
    }
    if (rc)
        goto out;
    /* B = Q^T A [l x n]; B = Ub S V^T; U = Q Ub */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)l, (blasint)n, (blasint)m, 1.0f,
                y, (blasint)l, a, (blasint)n, 0.0f, b, (blasint)n);
    lapack_int info = LAPACKE_sgesdd(LAPACK_ROW_MAJOR, 'S', (lapack_int)l, (lapack_int)n, b,
                                     (lapack_int)n, s, ub, (lapack_int)l, vt, (lapack_int)n);
    if (info != 0) {
        rc = st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET, "LAPACK SVD failed (info %d)", (int)info);
        goto out;
    }
    for (size_t j = 0; j < r; j++)
        for (size_t i = 0; i < l; i++)
            ub[i * l + j] *= s[j];
    /* up = Q [m x l] @ (Ub S)[:, :r] */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)m, (blasint)r, (blasint)l,
                1.0f, y, (blasint)l, ub, (blasint)l, 0.0f, up, (blasint)r);
    memcpy(down, vt, r * n * sizeof *down);
out:
    free(omega), free(y), free(z), free(tau), free(b), free(s), free(ub), free(vt);
    return rc;
}

int lora_svd_product(const float *up, const float *down, size_t m, size_t n, size_t r, double *sv,
                     float *u_out, float *vt_out, st_error *err)
{
    int rc = too_big(m, n, err);
    if (rc)
        return rc;
    if (r == 0 || r > m || r > n)
        return st_fail(err, ST_E_LORA, ST_NO_OFFSET, "rank %zu for a %zu x %zu layer", r, m, n);
    float *qu = malloc(m * r * sizeof *qu), *qd = malloc(n * r * sizeof *qd);
    float *tau = malloc(r * sizeof *tau), *c = calloc(r * r, sizeof *c);
    float *ru = calloc(r * r, sizeof *ru), *rd = calloc(r * r, sizeof *rd);
    float *s = malloc(r * sizeof *s), *uc = malloc(r * r * sizeof *uc), *vc = malloc(r * r * sizeof *vc);
    lapack_int info = 0;
    if (!qu || !qd || !tau || !c || !ru || !rd || !s || !uc || !vc) {
        rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory for an SVD");
        goto out;
    }
    memcpy(qu, up, m * r * sizeof *qu);
    for (size_t i = 0; i < r; i++)
        for (size_t j = 0; j < n; j++)
            qd[j * r + i] = down[i * n + j];
    info = LAPACKE_sgeqrf(LAPACK_ROW_MAJOR, (lapack_int)m, (lapack_int)r, qu, (lapack_int)r, tau);
    for (size_t i = 0; info == 0 && i < r; i++)
        for (size_t j = i; j < r; j++)
            ru[i * r + j] = qu[i * r + j];
    if (info == 0)
        info = LAPACKE_sorgqr(LAPACK_ROW_MAJOR, (lapack_int)m, (lapack_int)r, (lapack_int)r, qu,
                              (lapack_int)r, tau);
    if (info == 0)
        info = LAPACKE_sgeqrf(LAPACK_ROW_MAJOR, (lapack_int)n, (lapack_int)r, qd, (lapack_int)r, tau);
    for (size_t i = 0; info == 0 && i < r; i++)
        for (size_t j = i; j < r; j++)
            rd[i * r + j] = qd[i * r + j];
    if (info == 0)
        info = LAPACKE_sorgqr(LAPACK_ROW_MAJOR, (lapack_int)n, (lapack_int)r, (lapack_int)r, qd,
                              (lapack_int)r, tau);
    if (info != 0) {
        rc = st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET, "LAPACK QR failed (info %d)", (int)info);
        goto out;
    }
    /* up @ down = Qu Ru Rd^T Qd^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)r, (blasint)r, (blasint)r, 1.0f,
                ru, (blasint)r, rd, (blasint)r, 0.0f, c, (blasint)r);
    info = LAPACKE_sgesdd(LAPACK_ROW_MAJOR, 'S', (lapack_int)r, (lapack_int)r, c, (lapack_int)r, s,
                          uc, (lapack_int)r, vc, (lapack_int)r);
    if (info != 0) {
        rc = st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET, "LAPACK SVD failed (info %d)", (int)info);
        goto out;
    }
    for (size_t i = 0; i < r; i++)
        sv[i] = s[i];
    if (u_out)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)m, (blasint)r, (blasint)r,
                    1.0f, qu, (blasint)r, uc, (blasint)r, 0.0f, u_out, (blasint)r);
    if (vt_out)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)r, (blasint)n, (blasint)r,
                    1.0f, vc, (blasint)r, qd, (blasint)r, 0.0f, vt_out, (blasint)n);
out:
    free(qu), free(qd), free(tau), free(c), free(ru), free(rd), free(s), free(uc), free(vc);
    return rc;
}
