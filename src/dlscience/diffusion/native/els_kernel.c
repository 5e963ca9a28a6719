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


/* in-place exp of n values (n + 3 writable), with the kernel's vector exp where available */
static void exp_array(double *z, long n) {
#if defined(__AVX2__) && defined(__FMA__)
    for (long t = n; t < ((n + 3) & ~3L); t++) z[t] = 0.0;
    for (long t = 0; t < n; t += 4) _mm256_storeu_pd(z + t, exp4(_mm256_loadu_pd(z + t)));
#else
    for (long t = 0; t < n; t++) z[t] = exp(z[t] < -700.0 ? -700.0 : z[t]);
#endif
}

/* see els_pruned: one query, dictionary entries [ja, jb) except [sa, sb) */
static void visit_range(const double *qq, const double *qfi, double qri, double qn, double margin, int k, int D,
                        int C, int P, int H, int W, const double *pf, const double *pr, const double *psq,
                        const double *logc, const long *off, const double *cen, const long *src,
                        const double *images, const double *pat, double a, double alpha, double beta, double s2,
                        double skip, double slack, int track, long ja, long jb, long sa, long sb, long *idx,
                        double *lw, double *m, double *sum, double *v, double *dbest, double *bl, long *bi,
                        long *nb, long *ne) {
    const double thr = *dbest + s2 * skip; /* d_best at entry: a larger cutoff than later, still valid */
    long ns = 0;
    for (long j = ja; j < jb; j++) {
        if (j >= sa && j < sb) continue;
        const double *pj = pf + j * k;
        double lb = 0.0;
        for (int i = 0; i < k; i++) { const double d = qfi[i] - a * pj[i]; lb += d * d; }
        const double rd = fabs(qri - a * pr[j]) - slack;
        if (rd > 0) lb += rd * rd;
        idx[ns] = j;
        ns += lb - margin <= thr; /* kept unless its weight is provably < e^-skip of the best seen */
    }
    *nb += (jb - ja) - ((sb > ja && sa < jb) ? ((sb < jb ? sb : jb) - (sa > ja ? sa : ja)) : 0);
    *ne += ns;
    if (ns == 0) return;
    double bm = NEG;
    for (long t = 0; t < ns; t++) {
        const long j = idx[t];
        double dot = 0.0;
        if (pat) {
            const double *pp = pat + j * D;
            double d0 = 0.0, d1 = 0.0, d2 = 0.0, d3 = 0.0;
            int e = 0;
            for (; e + 4 <= D; e += 4) {
                d0 += qq[e] * pp[e];
                d1 += qq[e + 1] * pp[e + 1];
                d2 += qq[e + 2] * pp[e + 2];
                d3 += qq[e + 3] * pp[e + 3];
            }
            for (; e < D; e++) d0 += qq[e] * pp[e];
            dot = (d0 + d1) + (d2 + d3);
        } else {
            const double *img = images + off[j];
            for (int c = 0; c < C; c++)
                for (int dy = 0; dy < P; dy++) {
                    const double *row = img + ((long)c * H + dy) * W;
                    const double *qrow = qq + (c * P + dy) * P;
                    for (int dx = 0; dx < P; dx++) dot += qrow[dx] * row[dx];
                }
        }
        const double l = alpha * dot - beta * psq[j];
        const double d2 = qn - s2 * l;
        if (d2 < *dbest) *dbest = d2;
        if (track && (l > *bl || (l == *bl && src[j] < *bi))) { *bl = l; *bi = src[j]; }
        lw[t] = l + logc[j];
        if (lw[t] > bm) bm = lw[t];
    }
    if (bm > *m) { /* move the running maximum to the block's */
        const double sc = exp(*m - bm);
        *sum *= sc;
        for (int c = 0; c < C; c++) v[c] *= sc;
        *m = bm;
    }
    for (long t = 0; t < ns; t++) lw[t] -= *m;
    exp_array(lw, ns);
    const double wmin = exp(-skip);
    for (long t = 0; t < ns; t++) {
        const double w = lw[t];
        if (!(w >= wmin)) continue; /* the kernel's skip: relative weight < e^-skip */
        *sum += w;
        const double *ce = cen + idx[t] * C;
        for (int c = 0; c < C; c++) v[c] += w * ce[c];
    }
}

/*
 * Pruned ELS posterior (exact). The dictionary entries p are sorted by a key, the first of k orthonormal
 * projections. An entry's exact distance d^2 = ||q - a p||^2 is computed only when a lower bound LB <= d^2
 * does not already prove its weight below e^-SKIP times the largest weight seen so far for that query; the
 * largest weight seen is a realised one, so each skipped copy has weight < e^-SKIP times the true maximum:
 * the guarantee of the summed-area kernel's own skip.
 *
 *   LB(q, p) = sum_{i<k} (qf_i - a pf_i)^2 + max(0, |qr - a pr| - slack)^2 - margin
 *
 * where qf, pf are the projections U^T q, U^T p on an orthonormal basis U (D x k) and qr = ||q - U U^T q||,
 * pr = ||p - U U^T p|| the residual norms: ||q - a p||^2 = ||U^T (q - a p)||^2 + ||(I - U U^T)(q - a p)||^2
 * (Pythagoras) and the reverse triangle inequality bounds the second term below by (qr - a pr)^2. ``slack``
 * covers the rounding of the residual norms, ``margin`` (relative 1e-9 of ||q||^2 + a^2 max||p||^2) that of
 * the rest.
 *
 * Order of work. Queries come sorted by key and are taken in tiles of 16. Each query first evaluates the
 * 2 x 16 entries nearest its key (a first d_best); since LB >= (qf_0 - a pf_0)^2 and d_best only decreases,
 * only entries with (qf_0 - a key)^2 - margin <= d_best + 2 sigma^2 SKIP can ever pass, a contiguous key
 * range found by binary search: everything outside it is pruned without being touched. The union of the
 * tile's ranges is then streamed once in blocks of 512 entries, each block visited by every query of the
 * tile whose range meets it (the block stays in cache), with the bound tested against the query's current
 * d_best.
 *
 * Entries stand for ``exp(logc)`` identical patches (merged exactly by the caller). Logits are computed as in
 * els_interior: l = alpha <q, p> - beta ||p||^2 (+ log count in the softmax); exact evaluations are direct
 * C P^2 dot products, read from ``pat`` (K, D), a copy of the patches in sorted order, when it is given, and
 * from the training images (N, C, H, W) at offset ``off`` of the patch's top-left corner otherwise. Scalar
 * double-precision code; OpenMP over tiles (dynamic schedule).
 *
 * q (nq, D), qf (nq, k), qr (nq); pf (K, k), pr (K), psq (K), logc (K), off (K), cen (K, C), src (K);
 * out_mean (nq, C), out_logz (nq), out_best (nq), out_bestw (nq); stats (nq, 2): entries whose bound was
 * evaluated (inside the key range) and entries whose exact distance was computed.
 */
int els_pruned(const double *q, const double *qf, const double *qr, int nq, int C, int P, int k,
               const double *pf, const double *pr, const double *psq, const double *logc, const long *off,
               const double *cen, const long *src, long K, const double *images, const double *pat, int H,
               int W, double a,
               double sigma, double skip, double slack, double *out_mean, double *out_logz, long *out_best,
               double *out_bestw, long *stats, int track, int nthreads) {
    if (nq <= 0 || K <= 0) return 1;
    const int D = C * P * P;
    const double s2 = 2.0 * sigma * sigma;
    const double alpha = a / (sigma * sigma), beta = a * a / s2;
    int T = nthreads > 0 ? nthreads : 1;
#ifdef _OPENMP
    if (T > omp_get_max_threads()) T = omp_get_max_threads();
#else
    T = 1;
#endif
    const int TILE = 16;   /* queries (consecutive in key order) that share one pass over their key ranges */
    const long BLK = 512;  /* dictionary entries per cache block of that pass */
    const long SEED = 16;  /* entries on each side of the query's key evaluated first (a first d_best) */
    const int ntiles = (nq + TILE - 1) / TILE;
    int failed = 0;
#pragma omp parallel num_threads(T)
    {
        double *v = (double *)malloc(sizeof(double) * TILE * (C > 0 ? C : 1));
        long *idx = (long *)malloc(sizeof(long) * (BLK > 2 * SEED ? BLK : 2 * SEED));
        double *lw = (double *)malloc(sizeof(double) * ((BLK > 2 * SEED ? BLK : 2 * SEED) + 4));
        double m[16], sum[16], dbest[16], bl[16], qn[16], margin[16];
        long bi[16], nb[16], ne[16], w0[16], w1[16], rlo[16], rhi[16];
        if (!v || !idx || !lw) {
#pragma omp atomic write
            failed = 2;
        }
#pragma omp for schedule(dynamic, 1)
        for (int tile = 0; tile < ntiles; tile++) {
            if (!v || !idx || !lw) continue;
            const int q0 = tile * TILE, nt = (nq - q0) < TILE ? (nq - q0) : TILE;
            long L = K, R = 0;
            for (int u = 0; u < nt; u++) {
                const int iq = q0 + u;
                const double *qq = q + (long)iq * D;
                const double *qfi = qf + (long)iq * k;
                double n2 = 0.0;
                for (int e = 0; e < D; e++) n2 += qq[e] * qq[e];
                qn[u] = n2;
                margin[u] = 1e-9 * (n2 + a * a * D) + 1e-12;
                m[u] = NEG; sum[u] = 0.0; dbest[u] = 1e300; bl[u] = NEG; bi[u] = 0x7fffffffffffffffL;
                nb[u] = 0; ne[u] = 0;
                for (int c = 0; c < C; c++) v[u * C + c] = 0.0;
                /* first entry whose scaled key a * pf0 >= qf0 */
                long lo = 0, hi = K;
                while (lo < hi) {
                    const long mid = lo + (hi - lo) / 2;
                    if (a * pf[mid * k] < qfi[0]) lo = mid + 1; else hi = mid;
                }
                w0[u] = lo - SEED < 0 ? 0 : lo - SEED;
                w1[u] = lo + SEED > K ? K : lo + SEED;
            }
/* entries [ja, jb) (minus the seeds [sa, sb)) for tile query u: bound test against the cutoff at entry,
   exact logits of the survivors, then one block update of the streamed softmax (vector exp) */
#define VISIT_RANGE(u, ja, jb, sa, sb) visit_range(q + (long)(q0 + (u)) * D, qf + (long)(q0 + (u)) * k, \
    qr[q0 + (u)], qn[u], margin[u], k, D, C, P, H, W, pf, pr, psq, logc, off, cen, src, images, pat, a, alpha, \
    beta, s2, skip, slack, track, ja, jb, sa, sb, idx, lw, &m[u], &sum[u], v + (u) * C, &dbest[u], &bl[u], \
    &bi[u], &nb[u], &ne[u])
            /* seeds: a first d_best per query */
            for (int u = 0; u < nt; u++)
                VISIT_RANGE(u, w0[u], w1[u], 0, 0);
            /* key range per query: (qf0 - a key)^2 - margin <= d_best + 2 sigma^2 skip, a superset of the
               entries that can pass the bound later (d_best only decreases) */
            for (int u = 0; u < nt; u++) {
                const double *qfi = qf + (long)(q0 + u) * k;
                const double rad = sqrt(dbest[u] + s2 * skip + margin[u]);
                long lo = 0, hi = K;
                while (lo < hi) { /* first entry with a key >= qf0 - rad */
                    const long mid = lo + (hi - lo) / 2;
                    if (a * pf[mid * k] < qfi[0] - rad) lo = mid + 1; else hi = mid;
                }
                rlo[u] = lo;
                hi = K;
                while (lo < hi) { /* first entry with a key > qf0 + rad */
                    const long mid = lo + (hi - lo) / 2;
                    if (a * pf[mid * k] <= qfi[0] + rad) lo = mid + 1; else hi = mid;
                }
                rhi[u] = lo;
                if (rlo[u] < L) L = rlo[u];
                if (rhi[u] > R) R = rhi[u];
            }
            /* one pass over the union of the ranges, in cache blocks shared by the tile's queries */
            for (long b0 = L; b0 < R; b0 += BLK) {
                const long b1 = b0 + BLK < R ? b0 + BLK : R;
                for (int u = 0; u < nt; u++) {
                    const long ja = b0 > rlo[u] ? b0 : rlo[u], jb = b1 < rhi[u] ? b1 : rhi[u];
                    if (ja < jb) VISIT_RANGE(u, ja, jb, w0[u], w1[u]); /* the seeds are not counted twice */
                }
            }
#undef VISIT_RANGE
            for (int u = 0; u < nt; u++) {
                const long iq = q0 + u;
                for (int c = 0; c < C; c++) out_mean[iq * C + c] = v[u * C + c] / sum[u];
                const double logz = m[u] + log(sum[u]);
                out_logz[iq] = logz;
                out_best[iq] = bi[u];
                out_bestw[iq] = track ? exp(bl[u] - logz) : 0.0;
                stats[2 * iq] = nb[u];
                stats[2 * iq + 1] = ne[u];
            }
        }
        free(v); free(idx); free(lw);
    }
    return failed;
}
