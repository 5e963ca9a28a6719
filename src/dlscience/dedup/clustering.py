"""Spherical k-means for SemDeDup (Abbas et al. 2023, Sec. 3 and App. G), with faiss.

The paper clusters L2-normalised embeddings with faiss k-means whose centroids are re-normalised after every
iteration (``spherical=True``), and assigns each point to the centroid of largest inner product. On large N,
centroids are trained on a seeded sample of ``max_points_per_centroid * n_clusters`` rows (faiss's own default
of 256 per centroid is what the reference code silently used); every row is then assigned in fixed-size
batches, so nothing of size N x n_clusters is ever held.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dlscience.dedup.semdedup import normalize_rows, require_numpy, row_dots
from dlscience.errors import InputValidationError

__all__ = ["default_n_clusters", "training_sample", "fit_spherical_kmeans", "assign_clusters"]

ASSIGN_BATCH = 16384  # rows per assignment batch; fixed, so the float32 results never depend on the caller


def default_n_clusters(n: int) -> int:
    """A default k for n items: round(sqrt(n)), at least 1 (balances one k-means iteration, n k d, against
    the within-cluster step, n^2 d / k; research note semdedup.md Sec. 6)."""
    return max(1, int(round(np.sqrt(n))))


def training_sample(n: int, n_clusters: int, max_points_per_centroid: int, seed: int) -> np.ndarray:
    """Sorted positions (int64, in [0, n)) of the rows on which to train the centroids: all when
    n <= max_points_per_centroid * n_clusters, else a seeded sample of that size without replacement. The
    pipeline applies them to the rows sorted by id, so the sample does not depend on the input's row order."""
    size = max_points_per_centroid * n_clusters
    if n <= size:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng([seed, 1])
    return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)


def fit_spherical_kmeans(
    sample: np.ndarray, n_clusters: int, *, n_iter: int = 20, seed: int = 0, verbose: bool = False
) -> np.ndarray:
    """Train spherical k-means centroids with faiss.

    Parameters
    ----------
    sample : ndarray (m, d) float32
        Unit-norm training rows (see :func:`~dlscience.dedup.semdedup.normalize_rows`).
    n_clusters : int
        k, in [1, m].
    n_iter : int
        Lloyd iterations (paper: 100 on LAION, 20 on C4).
    seed : int
        faiss's random initialisation.

    Returns
    -------
    ndarray (n_clusters, d) float32
        Unit-norm centroids.

    Raises
    ------
    InputValidationError
        If n_clusters is not in [1, m] or n_iter < 1.
    """
    import faiss

    m, d = sample.shape
    if not 1 <= n_clusters <= m:
        raise InputValidationError(
            f"n_clusters must be between 1 and the number of items ({m}), got {n_clusters}; lower --n-clusters"
        )
    if n_iter < 1:
        raise InputValidationError(f"n_iter must be >= 1, got {n_iter}")
    km = faiss.Kmeans(
        d,
        n_clusters,
        niter=n_iter,
        seed=seed,
        spherical=True,
        verbose=verbose,
        min_points_per_centroid=1,  # no "too few points" warning on small inputs
        max_points_per_centroid=max(1, -(-m // n_clusters)),  # the caller samples; faiss must not resample
    )
    km.train(np.ascontiguousarray(sample, dtype=np.float32))
    return normalize_rows(km.centroids)


def assign_clusters(
    embeddings, centroids: np.ndarray, *, progress: Callable[[int], None] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Assign every row to the centroid of largest cosine similarity.

    Parameters
    ----------
    embeddings : array-like (N, d)
        Raw rows (a memory-mapped ``.npy`` is fine); each batch is normalised on the fly.
    centroids : ndarray (k, d) float32
        Unit-norm centroids.
    progress : callable, optional
        Called with the number of rows done after each batch.

    Returns
    -------
    cluster : ndarray (N,) int32
        Index of the nearest centroid (the lowest index on exact ties).
    sim_to_centroid : ndarray (N,) float32
        Cosine similarity to it.

    Notes
    -----
    Both outputs depend only on the row's own vector, never on its position in the input: a float32 BLAS
    product picks the centroid, rows whose two best centroids are closer than BLAS's rounding error (``tol``)
    are decided again with exact dot products (:func:`~dlscience.dedup.semdedup.row_dots`), and the similarity
    to the chosen centroid is always the exact one. So bit-identical rows get the same cluster and the same
    similarity, and the rank order among them is decided by id (Abbas et al.'s rule is otherwise unchanged).
    """
    require_numpy(centroids, "centroids", "assign_clusters")
    n = len(embeddings)
    k, d = centroids.shape
    cluster = np.empty(n, dtype=np.int32)
    sim = np.empty(n, dtype=np.float32)
    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    ct = np.ascontiguousarray(centroids.T)
    tol = max(1e-4, 4.0 * d * 2.0**-24)  # bound on a float32 dot product's error for unit vectors
    for a in range(0, n, ASSIGN_BATCH):
        b = min(n, a + ASSIGN_BATCH)
        u = normalize_rows(embeddings[a:b])
        s = u @ ct
        best = s.argmax(axis=1)
        if k > 1:
            top2 = np.partition(s, k - 2, axis=1)[:, -2:]
            for i in np.flatnonzero(top2[:, 1] - top2[:, 0] < tol):
                exact = row_dots(np.broadcast_to(u[i], (k, d)), centroids)
                best[i] = int(exact.argmax())  # the lowest index on exact ties
        cluster[a:b] = best
        sim[a:b] = row_dots(u, centroids[best])
        if progress is not None:
            progress(b)
    return cluster, sim
