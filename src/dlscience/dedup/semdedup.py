"""SemDeDup's within-cluster rule (Abbas, Tirumala, Simig, Ganguli & Morcos 2023, Algorithm A7).

Inside one k-means cluster, with members x_1, ..., x_n (unit vectors) in rank order:

    M_j = max_{i < j} <x_i, x_j>          (M_1 = 0: the first-ranked member has no earlier member)
    remove x_j  iff  M_j > 1 - eps

Rank order (research note semdedup.md Sec. 1 and 2):

* ``"hard"`` (the paper's default): by cosine distance to the cluster centroid, descending, so the member
  least similar to the centroid is kept;
* ``"easy"``: nearest to the centroid first;
* ``"random"``: a permutation seeded by ``(seed, cluster)``.

Ties are broken by the item's id (ascending), so the result does not depend on the input's row order. The
similarity to the centroid is computed row by row in float64 (exact products, a fixed summation order) and
rounded to float32, so bit-identical vectors always get the same similarity wherever they sit in the input:
among bit-identical vectors at most one is kept, and with the "hard" and "easy" orders it is the one with the
smallest id (with "random", the first in the seeded permutation).

**Chains.** A member is removed if *any* earlier-ranked member is within eps, even one that was itself removed:
unit vectors at 0, 6 and 12 degrees *ranked in that order* with eps = 0.01 (cos 6 deg = 0.9945 > 0.99,
cos 12 deg = 0.9781 < 0.99) keep only the 0-degree vector. This is the reference code's semantics (not a greedy "compare with kept items
only" rule, which would also keep 12 degrees); it makes every eps a threshold on one stored number M_j, so all
eps come from one pass and :func:`keep_mask` re-thresholds without recomputing.

M_j is computed by blocks of the Gram matrix (``block_size`` x ``block_size``), never the whole n x n
matrix. Each block is accumulated in float64 and rounded to float32 before the max, so the result does not
depend on ``block_size`` (BLAS sums in a different order for different block shapes; the float64 differences,
about 1e-16, vanish in the rounding) and identical earlier members tie exactly, the earliest winning. For
exact duplicates M_j is 1 up to the float32 rounding of the unit vectors (about 1e-7), and float32 cannot tell
1 - eps from 1 below eps = 6e-8: eps below ``MIN_EPS`` = 1e-6 is refused (:func:`check_eps`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dlscience.errors import InputValidationError

__all__ = [
    "ORDERS",
    "MIN_EPS",
    "earlier_max_similarity",
    "rank_members",
    "keep_mask",
    "check_eps",
    "normalize_rows",
    "row_dots",
    "require_numpy",
]

ORDERS = ("hard", "easy", "random")
MIN_EPS = 1e-6  # smallest eps float32 similarities resolve with a margin (exact duplicates: 1 +- 1.2e-7)


def require_numpy(value, name: str, where: str) -> None:
    """Refuse a torch tensor where a numpy array (or array-like) is needed.

    Parameters
    ----------
    value : object
        The argument.
    name, where : str
        Its name and the function's, for the message.

    Raises
    ------
    InputValidationError
        If ``value`` is a ``torch.Tensor``, naming the argument and the conversion.
    """
    if type(value).__module__.split(".")[0] == "torch":
        raise InputValidationError(
            f"{where}: {name} must be a numpy array, got a {type(value).__module__}.{type(value).__name__}; "
            f"convert with {name}.detach().cpu().numpy()"
        )


_MASKS: dict[int, np.ndarray] = {}


def _upper_mask(size: int) -> np.ndarray:
    """Boolean (size, size) mask of the diagonal and above (column index >= row index)."""
    if size not in _MASKS:
        idx = np.arange(size)
        _MASKS[size] = idx[:, None] <= idx[None, :]
    return _MASKS[size]


def earlier_max_similarity(x: np.ndarray, block_size: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """For each row j, the largest dot product with an earlier row, and which row attains it.

    Parameters
    ----------
    x : ndarray (n, d) float32
        Unit-norm rows in rank order (see :func:`normalize_rows`, :func:`rank_members`).
    block_size : int
        Rows and columns per Gram block; memory is about block_size^2 * 12 bytes (48 MiB at the default).

    Returns
    -------
    max_sim : ndarray (n,) float32
        M_j of Algorithm A7: max over i < j of <x_i, x_j>; 0 for the first row.
    max_index : ndarray (n,) int64
        The earliest i attaining it; -1 for the first row.

    Raises
    ------
    InputValidationError
        If x is not 2-D, is a torch tensor, or block_size < 1.
    """
    require_numpy(x, "x", "earlier_max_similarity")
    x = np.asarray(x)
    if x.ndim != 2:
        raise InputValidationError(f"expected embeddings of shape (n, d), got {x.shape}")
    if block_size < 1:
        raise InputValidationError(f"block_size must be >= 1, got {block_size}")
    x = np.ascontiguousarray(x, dtype=np.float32).astype(np.float64)
    n = len(x)
    best = np.full(n, -np.inf, dtype=np.float32)
    arg = np.full(n, -1, dtype=np.int64)
    for a in range(0, n, block_size):
        b = min(n, a + block_size)
        rows = x[a:b]
        best_a, arg_a = best[a:b], arg[a:b]
        for c in range(0, b, block_size):
            e = min(b, c + block_size)
            s = (rows @ x[c:e].T).astype(np.float32)  # (b - a, e - c), float64 sums rounded once
            if c == a:  # diagonal block: only strictly earlier columns count
                s[_upper_mask(block_size)[: b - a, : e - c]] = -np.inf
            m = s.max(axis=1)
            better = m > best_a  # strict: an earlier column block wins ties
            if better.any():
                best_a[better] = m[better]
                arg_a[better] = c + s[better].argmax(axis=1)
    if n:
        best[0] = 0.0
    return best, arg


def rank_members(
    sim_to_centroid: np.ndarray, id_rank: np.ndarray, order: str = "hard", seed: int = 0, cluster: int = 0
) -> np.ndarray:
    """The rank order of one cluster's members.

    Parameters
    ----------
    sim_to_centroid : ndarray (n,) float
        Cosine similarity of each member to its centroid (cosine distance = 1 - similarity).
    id_rank : ndarray (n,) int
        Each member's position in the sorted list of all ids (breaks ties, so the result is independent of
        row order).
    order : {"hard", "easy", "random"}
        "hard": farthest from the centroid first (the paper's default, keeps the least typical member);
        "easy": nearest first; "random": a permutation seeded by ``(seed, cluster)``.
    seed, cluster : int
        Seed of the "random" order.

    Returns
    -------
    ndarray (n,) int64
        Indices into the inputs, first-ranked first.

    Raises
    ------
    InputValidationError
        If ``order`` is unknown, or an array is a torch tensor.
    """
    require_numpy(sim_to_centroid, "sim_to_centroid", "rank_members")
    require_numpy(id_rank, "id_rank", "rank_members")
    sim_to_centroid, id_rank = np.asarray(sim_to_centroid), np.asarray(id_rank)
    if order == "hard":
        return np.lexsort((id_rank, sim_to_centroid))
    if order == "easy":
        return np.lexsort((id_rank, -sim_to_centroid))
    if order == "random":
        base = np.argsort(id_rank, kind="stable")
        return base[np.random.default_rng([seed, cluster]).permutation(len(base))]
    raise InputValidationError(f"order must be one of {ORDERS}, got {order!r}")


def check_eps(eps: float | Sequence[float]) -> tuple[float, ...]:
    """Validate eps values: each in [MIN_EPS, 1]. Returns them as a sorted tuple of floats, without repeats.

    Raises
    ------
    InputValidationError
        If a value is outside (0, 1], not finite, below ``MIN_EPS`` (1e-6: float32 similarities cannot
        resolve 1 - eps from 1 below 6e-8, and exact duplicates reach 1 only up to about 1e-7), or none is given.
    """
    values = (eps,) if np.isscalar(eps) else tuple(eps)
    if not values:
        raise InputValidationError("give at least one eps value, e.g. --eps 0.01")
    out = []
    for e in values:
        e = float(e)
        if not (0.0 < e <= 1.0):
            raise InputValidationError(
                f"eps must be in (0, 1] (remove when max similarity > 1 - eps), got {e}; typical values "
                "are 0.001-0.2"
            )
        if e < MIN_EPS:
            raise InputValidationError(
                f"eps {e:g} is below {MIN_EPS:g}: similarities are float32 (resolution 6e-8 near 1) and exact "
                f"duplicates reach 1 only up to rounding (about 1e-7), so such an eps cannot be resolved; use "
                f"eps >= {MIN_EPS:g}"
            )
        out.append(e)
    return tuple(sorted(set(out)))


def keep_mask(max_sim: np.ndarray, eps: float) -> np.ndarray:
    """Algorithm A7's rule: keep iff ``max_sim <= 1 - eps``. Returns a bool array shaped like ``max_sim``.

    The first-ranked member of a cluster (max_sim 0) is kept for every eps in (0, 1], so each non-empty cluster
    keeps at least one member.
    """
    require_numpy(max_sim, "max_sim", "keep_mask")
    (eps,) = check_eps(eps)
    return ~(np.asarray(max_sim) > np.float32(1.0 - eps))


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalise rows: (n, d) any float -> (n, d) float32 unit rows (norms accumulated in float64, so a row's
    result does not depend on which other rows are in the batch).

    Each row's norm is a float64 sum in a fixed order (numpy's pairwise sum along the row), so bit-identical
    rows give bit-identical results wherever they sit (BLAS would not guarantee this).

    Raises
    ------
    InputValidationError
        If a row is zero or not finite (it has no direction), or ``x`` is a torch tensor.
    """
    require_numpy(x, "x", "normalize_rows")
    x = np.asarray(x)
    norms = np.sqrt(np.square(x, dtype=np.float64).sum(axis=1))
    bad = ~np.isfinite(norms) | (norms == 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        what = "zero" if norms[i] == 0 else "non-finite"
        raise InputValidationError(
            f"embedding row {i} is {what}; every embedding needs a finite, non-zero direction (drop or "
            "re-embed such rows)"
        )
    return (x / norms[:, None]).astype(np.float32)


def row_dots(x: np.ndarray, y: np.ndarray, *, chunk: int = 1 << 22) -> np.ndarray:
    """Row-wise dot products ``<x_i, y_i>`` computed exactly reproducibly: float32 products are exact in float64
    and each row is summed in a fixed order, so the result for a row depends only on its two vectors (not on
    where they sit, unlike a BLAS matrix product). Returns float32 (the float64 sums rounded once).

    Parameters
    ----------
    x, y : ndarray (n, d) float32
    chunk : int
        Elements per float64 temporary.

    Returns
    -------
    ndarray (n,) float32
    """
    n, d = x.shape
    out = np.empty(n, dtype=np.float32)
    step = max(1, chunk // max(1, d))
    for a in range(0, n, step):
        b = min(n, a + step)
        out[a:b] = (x[a:b].astype(np.float64) * y[a:b].astype(np.float64)).sum(axis=1)
    return out
