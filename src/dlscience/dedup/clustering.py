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

from dlscience.dedup.semdedup import normalize_rows
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
    """
    n = len(embeddings)
    cluster = np.empty(n, dtype=np.int32)
    sim = np.empty(n, dtype=np.float32)
    ct = np.ascontiguousarray(centroids.T, dtype=np.float32)
    for a in range(0, n, ASSIGN_BATCH):
        b = min(n, a + ASSIGN_BATCH)
        s = normalize_rows(embeddings[a:b]) @ ct
        cluster[a:b] = s.argmax(axis=1)
        sim[a:b] = np.take_along_axis(s, cluster[a:b, None].astype(np.int64), axis=1)[:, 0]
        if progress is not None:
            progress(b)
    return cluster, sim
