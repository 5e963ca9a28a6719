/*
 * Fused ELS kernel: posterior mean over the dictionary of all fully interior P x P patches of N training
 * images, for a rectangle of query pixels (Kamb & Ganguli 2024, Eqs. (8)-(9); research note els.md Sec. 6,
 * speed-up 8, "summed-area trick").
 *
 * For a query pixel (i, j) and a dictionary patch with top-left corner (u0, v0) the cross term is
 *     X(i, j; u0, v0) = sum_c sum_{dy, dx < P} q[c, i + dy, j + dx] * y[c, u0 + dy, v0 + dx]
 * where q is the query image padded by r = P / 2 (the window centred at pixel (i, j) starts at (i, j)).
 * Along a fixed shift (sy, sx) = (u0 - i, v0 - j) it is a P x P box sum of the product map
 *     m(z, w) = sum_c q[c, z, w] * y[c, z + sy, w + sx],
 * computed with sliding column sums and a prefix sum per row: O(1) work per (pixel, patch) pair whatever P is,
 * where a matrix multiply costs 2 C P^2 flops per pair. The logit is
 *     l = alpha * X + bias,   alpha = a / sigma^2,   bias = -a^2 ||p||^2 / (2 sigma^2)
 * (||q||^2 cancels in the softmax). The softmax is streamed with a lagged running maximum per query: the
 * maximum moves (and the sums are rescaled) only when a logit exceeds it by more than LAG nats, so the common
 * path is one exp and C + 1 multiply-adds per pair. Pairs whose logit lies more than SKIP = 60 nats below the
 * running maximum (itself a realised logit, so a lower bound on the true maximum) are skipped, 8 at a time:
 * each has relative weight < e^-60 = 9e-27, so all of them together (at most ~1e9 per query) change the
 * output by less than 1e-17. All arithmetic is in double precision.
 *
 * Vectorisation: 8 training images are processed side by side (layout (NB, C, H, W, 8)), two AVX2 registers
 * per (pixel, patch position), with an inlined vector exp (Cody-Waite reduction, degree-10 polynomial,
 * relative error < 3e-13); without AVX2 the same loops run in plain C. Threads (OpenMP, static
 * schedule) split the image blocks and keep private accumulators, which are merged exactly at the end. Values stay
 * finite (sentinels instead of infinities).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define LANES 8
#define LAG 40.0
#define SKIP 60.0
#define NEG (-1e300)

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
/* one "vector" = 8 lanes = two AVX2 registers, so that dependency chains (prefix sums, the exp polynomial)
   carry two independent streams and the core's pipelines stay busy */
typedef struct { __m256d a, b; } vd;
static inline vd VLOAD(const double *p) { vd r = {_mm256_loadu_pd(p), _mm256_loadu_pd(p + 4)}; return r; }
static inline void VSTORE(double *p, vd x) { _mm256_storeu_pd(p, x.a); _mm256_storeu_pd(p + 4, x.b); }
static inline vd VSET1(double x) { vd r = {_mm256_set1_pd(x), _mm256_set1_pd(x)}; return r; }
static inline vd VADD(vd x, vd y) { vd r = {_mm256_add_pd(x.a, y.a), _mm256_add_pd(x.b, y.b)}; return r; }
static inline vd VSUB(vd x, vd y) { vd r = {_mm256_sub_pd(x.a, y.a), _mm256_sub_pd(x.b, y.b)}; return r; }
static inline vd VMUL(vd x, vd y) { vd r = {_mm256_mul_pd(x.a, y.a), _mm256_mul_pd(x.b, y.b)}; return r; }
static inline vd VMAX(vd x, vd y) { vd r = {_mm256_max_pd(x.a, y.a), _mm256_max_pd(x.b, y.b)}; return r; }
static inline vd VFMA(vd x, vd y, vd z) {
    vd r = {_mm256_fmadd_pd(x.a, y.a, z.a), _mm256_fmadd_pd(x.b, y.b, z.b)};
    return r;
}

/* exp on [-700, 60]: x = k ln2 + r, |r| <= ln2 / 2; e^r by a degree-10 Taylor polynomial in Estrin form
   (relative error < 3e-13), times 2^k built in the exponent bits */
static inline __m256d exp4(__m256d x) {
    const __m256d magic = _mm256_set1_pd(6755399441055744.0);
    x = _mm256_max_pd(x, _mm256_set1_pd(-700.0));
    __m256d k = _mm256_round_pd(_mm256_mul_pd(x, _mm256_set1_pd(1.4426950408889634)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256d r = _mm256_fnmadd_pd(k, _mm256_set1_pd(0.693147180369123816490), x);
    r = _mm256_fnmadd_pd(k, _mm256_set1_pd(1.90821492927058770002e-10), r);
    __m256d r2 = _mm256_mul_pd(r, r), r4 = _mm256_mul_pd(r2, r2), r8 = _mm256_mul_pd(r4, r4);
#define C(n) _mm256_set1_pd(n)
    __m256d p01 = _mm256_fmadd_pd(r, C(1.0), C(1.0));
    __m256d p23 = _mm256_fmadd_pd(r, C(1.0 / 6), C(0.5));
    __m256d p45 = _mm256_fmadd_pd(r, C(1.0 / 120), C(1.0 / 24));
    __m256d p67 = _mm256_fmadd_pd(r, C(1.0 / 5040), C(1.0 / 720));
    __m256d p89 = _mm256_fmadd_pd(r, C(1.0 / 362880), C(1.0 / 40320));
    __m256d p10 = C(1.0 / 3628800);
#undef C
    __m256d p03 = _mm256_fmadd_pd(r2, p23, p01);
    __m256d p47 = _mm256_fmadd_pd(r2, p67, p45);
    __m256d p8a = _mm256_fmadd_pd(r2, p10, p89);
    __m256d p07 = _mm256_fmadd_pd(r4, p47, p03);
    __m256d p = _mm256_fmadd_pd(r8, p8a, p07);
    __m256i ki = _mm256_sub_epi64(_mm256_castpd_si256(_mm256_add_pd(k, magic)), _mm256_castpd_si256(magic));
    __m256i bits = _mm256_slli_epi64(_mm256_add_epi64(ki, _mm256_set1_epi64x(1023)), 52);
    return _mm256_mul_pd(p, _mm256_castsi256_pd(bits));
}
static inline vd vexp(vd x) { vd r = {exp4(x.a), exp4(x.b)}; return r; }
/* true when some lane of x exceeds t */
static inline int VANY_GT(vd x, double t) {
    const __m256d tv = _mm256_set1_pd(t);
    return _mm256_movemask_pd(_mm256_cmp_pd(x.a, tv, _CMP_GT_OQ)) |
           _mm256_movemask_pd(_mm256_cmp_pd(x.b, tv, _CMP_GT_OQ));
}
#define KERNEL_ISA "avx2"
#else
typedef struct { double v[LANES]; } vd;
static inline vd VLOAD(const double *p) { vd r; for (int l = 0; l < LANES; l++) r.v[l] = p[l]; return r; }
static inline void VSTORE(double *p, vd x) { for (int l = 0; l < LANES; l++) p[l] = x.v[l]; }
static inline vd VSET1(double x) { vd r; for (int l = 0; l < LANES; l++) r.v[l] = x; return r; }
#define VOP2(name, expr) static inline vd name(vd a, vd b) { vd r; for (int l = 0; l < LANES; l++) { double x = a.v[l], y = b.v[l]; r.v[l] = (expr); } return r; }
VOP2(VADD, x + y)
VOP2(VSUB, x - y)
VOP2(VMUL, x * y)
VOP2(VMAX, x > y ? x : y)
static inline vd VFMA(vd a, vd b, vd c) { vd r; for (int l = 0; l < LANES; l++) r.v[l] = a.v[l] * b.v[l] + c.v[l]; return r; }
static inline vd vexp(vd x) { vd r; for (int l = 0; l < LANES; l++) r.v[l] = exp(x.v[l] < -700.0 ? -700.0 : x.v[l]); return r; }
static inline int VANY_GT(vd x, double t) { int a = 0; for (int l = 0; l < LANES; l++) a |= x.v[l] > t; return a; }
#define KERNEL_ISA "generic"
#endif

const char *els_kernel_isa(void) { return KERNEL_ISA; }

typedef struct {
    double *m, *s, *v, *bl; /* (nq, LANES), (nq, LANES), (nq, C, LANES), (nq, LANES) */
    long *bi;               /* (nq, LANES) */
} acc_t;

static int acc_init(acc_t *a, long nq, int C) {
    a->m = (double *)malloc(sizeof(double) * nq * LANES);
    a->s = (double *)calloc(nq * LANES, sizeof(double));
    a->v = (double *)calloc(nq * C * LANES, sizeof(double));
    a->bl = (double *)malloc(sizeof(double) * nq * LANES);
    a->bi = (long *)calloc(nq * LANES, sizeof(long));
    if (!a->m || !a->s || !a->v || !a->bl || !a->bi) return 1;
    for (long k = 0; k < nq * LANES; k++) { a->m[k] = NEG; a->bl[k] = NEG; }
    return 0;
}

static void acc_free(acc_t *a) { free(a->m); free(a->s); free(a->v); free(a->bl); free(a->bi); }

/*
 * q:     (B, C, Hq, Wq) double, query images padded by r = P / 2
 * y:     (NB, C, H, W, LANES) double, training images, LANES per block (unused lanes: any finite values)
 * bias:  (NB, Hd, Wd, LANES) double, -beta ||p||^2 per patch top-left corner (unused lanes: -1e30)
 * ids:   (NB * LANES) int64, global image id per lane
 * query rectangle: centres i in [qi0, qi1), j in [qj0, qj1)
 * out_mean (B, nq, C), out_logz (B, nq), out_best (B, nq) = id * H * W + centre row * W + centre col,
 * out_bestw (B, nq); nq = (qi1 - qi0) * (qj1 - qj0), row-major. The best patch is tracked only if track != 0.
 * Returns 0 on success, 1 for an empty problem, 2 when memory could not be allocated.
 */
int els_interior(const double *q, int B, int C, int Hq, int Wq, int qi0, int qi1, int qj0, int qj1,
                 const double *y, const double *bias, const long *ids, int NB, int H, int W, int P,
                 double alpha, double *out_mean, double *out_logz, long *out_best, double *out_bestw,
                 int track, int nthreads) {
    const int r = P / 2;
    const int Hd = H - P + 1, Wd = W - P + 1;
    const int nqi = qi1 - qi0, nqj = qj1 - qj0;
    const long nq = (long)nqi * nqj;
    if (Hd <= 0 || Wd <= 0 || nqi <= 0 || nqj <= 0 || NB <= 0) return 1;
    int T = nthreads > 0 ? nthreads : 1;
#ifdef _OPENMP
    if (T > omp_get_max_threads()) T = omp_get_max_threads();
#else
    T = 1;
#endif
    if (T > NB) T = NB;
    const long img = (long)H * W * LANES; /* one channel plane of a block */
    acc_t *accs = (acc_t *)calloc((size_t)T * B, sizeof(acc_t));
    int failed = accs == NULL;
    for (int t = 0; !failed && t < T * B; t++) failed |= acc_init(&accs[t], nq, C);

    if (!failed)
#pragma omp parallel num_threads(T)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        const int maxc = nqj + P;
        double *colsum = (double *)malloc(sizeof(double) * maxc * LANES);
        double *pre = (double *)malloc(sizeof(double) * (maxc + 1) * LANES);
        double *lg = (double *)malloc(sizeof(double) * maxc * LANES);
        int ok = colsum && pre && lg;
        if (!ok) {
#pragma omp atomic write
            failed = 2;
        }
        const vd valpha = VSET1(alpha);
#pragma omp for schedule(static)
        for (int nb = 0; nb < NB; nb++) {
            if (!ok) continue;
            const double *yb = y + (long)nb * C * img;
            const double *biasb = bias + (long)nb * Hd * Wd * LANES;
            long idhw[LANES]; /* image id * H * W per lane, for the provenance of the best patch */
            for (int l = 0; l < LANES; l++) idhw[l] = ids[(long)nb * LANES + l] * (long)H * W;
            for (int b = 0; b < B; b++) {
                acc_t *A = &accs[tid * B + b];
                const double *qb = q + (long)b * C * Hq * Wq;
                for (int sy = -(qi1 - 1); sy <= Hd - 1 - qi0; sy++) {
                    const int ia = qi0 > -sy ? qi0 : -sy;
                    const int ib = qi1 < Hd - sy ? qi1 : Hd - sy;
                    if (ia >= ib) continue;
                    for (int sx = -(qj1 - 1); sx <= Wd - 1 - qj0; sx++) {
                        const int ja = qj0 > -sx ? qj0 : -sx;
                        const int jb = qj1 < Wd - sx ? qj1 : Wd - sx;
                        if (ja >= jb) continue;
                        const int nj = jb - ja, ncol = nj + P - 1;
                        for (int k = 0; k < ncol; k++) VSTORE(colsum + k * LANES, VSET1(0.0));
                        for (int c = 0; c < C; c++)
                            for (int dy = 0; dy < P; dy++) {
                                const double *qr = qb + ((long)c * Hq + ia + dy) * Wq + ja;
                                const double *yr = yb + c * img + ((long)(ia + dy + sy) * W + ja + sx) * LANES;
                                for (int k = 0; k < ncol; k++)
                                    VSTORE(colsum + k * LANES,
                                           VFMA(VSET1(qr[k]), VLOAD(yr + k * LANES), VLOAD(colsum + k * LANES)));
                            }
                        for (int i = ia; i < ib; i++) {
                            if (i > ia) { /* slide down: add row i + P - 1, drop row i - 1 */
                                for (int c = 0; c < C; c++) {
                                    const double *qa = qb + ((long)c * Hq + i + P - 1) * Wq + ja;
                                    const double *qd = qb + ((long)c * Hq + i - 1) * Wq + ja;
                                    const double *ya = yb + c * img + ((long)(i + P - 1 + sy) * W + ja + sx) * LANES;
                                    const double *yd = yb + c * img + ((long)(i - 1 + sy) * W + ja + sx) * LANES;
                                    for (int k = 0; k < ncol; k++) {
                                        vd cs = VLOAD(colsum + k * LANES);
                                        cs = VFMA(VSET1(qa[k]), VLOAD(ya + k * LANES), cs);
                                        cs = VSUB(cs, VMUL(VSET1(qd[k]), VLOAD(yd + k * LANES)));
                                        VSTORE(colsum + k * LANES, cs);
                                    }
                                }
                            }
                            const int u0 = i + sy;
                            const double *br = biasb + ((long)u0 * Wd + ja + sx) * LANES;
                            const long qrow = (long)(i - qi0) * nqj + (ja - qj0);
                            double *m = A->m + qrow * LANES;
                            /* prefix sums of the column sums, then the box sums (logits) of this row */
                            vd acc = VSET1(0.0);
                            VSTORE(pre, acc);
                            for (int k = 0; k < P - 1; k++) {
                                acc = VADD(acc, VLOAD(colsum + k * LANES));
                                VSTORE(pre + (k + 1) * LANES, acc);
                            }
                            vd over = VSET1(NEG);
                            for (int k = 0; k < nj; k++) {
                                acc = VADD(acc, VLOAD(colsum + (k + P - 1) * LANES));
                                VSTORE(pre + (k + P) * LANES, acc);
                                vd v = VFMA(valpha, VSUB(acc, VLOAD(pre + k * LANES)), VLOAD(br + k * LANES));
                                VSTORE(lg + k * LANES, v);
                                over = VMAX(over, VSUB(v, VLOAD(m + k * LANES)));
                            }
                            double ov[LANES];
                            VSTORE(ov, over);
                            double omax = ov[0];
                            for (int l = 1; l < LANES; l++) omax = ov[l] > omax ? ov[l] : omax;
                            if (omax < -SKIP) continue; /* the whole row is negligible */
                            if (omax > LAG) { /* move the running maximum where a logit jumped above it */
                                for (int k = 0; k < nj; k++)
                                    for (int l = 0; l < LANES; l++) {
                                        const long at = (qrow + k) * LANES + l;
                                        const double v = lg[k * LANES + l];
                                        if (v - A->m[at] > LAG) {
                                            const double scale = exp(A->m[at] - v);
                                            A->s[at] *= scale;
                                            for (int c = 0; c < C; c++) A->v[((qrow + k) * C + c) * LANES + l] *= scale;
                                            A->m[at] = v;
                                        }
                                    }
                            }
                            const long src0 = (long)(u0 + r) * W + (ja + sx + r);
                            for (int k = 0; k < nj; k++) {
                                const long at = (qrow + k) * LANES;
                                const vd d = VSUB(VLOAD(lg + k * LANES), VLOAD(A->m + at));
                                if (!VANY_GT(d, -SKIP)) continue; /* every lane negligible: weight < e^-SKIP */
                                const vd e = vexp(d);
                                VSTORE(A->s + at, VADD(VLOAD(A->s + at), e));
                                for (int c = 0; c < C; c++) {
                                    const double *cen = yb + c * img + ((long)(u0 + r) * W + ja + k + sx + r) * LANES;
                                    double *vv = A->v + ((qrow + k) * C + c) * LANES;
                                    VSTORE(vv, VFMA(e, VLOAD(cen), VLOAD(vv)));
                                }
                                if (track)
                                    for (int l = 0; l < LANES; l++) {
                                        const double v = lg[k * LANES + l];
                                        if (v > A->bl[at + l]) { A->bl[at + l] = v; A->bi[at + l] = idhw[l] + src0 + k; }
                                    }
                            }
                        }
                    }
                }
            }
        }
        free(colsum); free(pre); free(lg);
    }
    if (failed) {
        if (accs) for (int t = 0; t < T * B; t++) acc_free(&accs[t]);
        free(accs);
        return 2;
    }
    /* exact merge over threads and lanes */
    for (int b = 0; b < B; b++) {
        for (long k = 0; k < nq; k++) {
            double M = NEG, BL = NEG;
            long BI = 0x7fffffffffffffffL;
            for (int t = 0; t < T; t++) {
                const acc_t *A = &accs[t * B + b];
                for (int l = 0; l < LANES; l++) {
                    const long at = k * LANES + l;
                    if (A->m[at] > M) M = A->m[at];
                    /* ties (identical patches) go to the smallest source id: the result does not depend on
                       the number of threads */
                    if (A->bl[at] > BL || (A->bl[at] == BL && A->bi[at] < BI)) { BL = A->bl[at]; BI = A->bi[at]; }
                }
            }
            double S = 0.0;
            double *mean = out_mean + ((long)b * nq + k) * C;
            for (int c = 0; c < C; c++) mean[c] = 0.0;
            for (int t = 0; t < T; t++) {
                const acc_t *A = &accs[t * B + b];
                for (int l = 0; l < LANES; l++) {
                    const long at = k * LANES + l;
                    if (A->m[at] <= NEG) continue;
                    const double sc = exp(A->m[at] - M);
                    S += A->s[at] * sc;
                    for (int c = 0; c < C; c++) mean[c] += A->v[(k * C + c) * LANES + l] * sc;
                }
            }
            for (int c = 0; c < C; c++) mean[c] /= S;
            const double logz = M + log(S);
            out_logz[(long)b * nq + k] = logz;
            out_best[(long)b * nq + k] = BI;
            out_bestw[(long)b * nq + k] = exp(BL - logz);
        }
    }
    for (int t = 0; t < T * B; t++) acc_free(&accs[t]);
    free(accs);
    return 0;
}
