"""Exact pruning of the ELS patch dictionary with projection lower bounds (issue 22).

The ELS weights (Kamb & Ganguli 2024, Eq. (8); research note els.md Sec. 1) are

    W_p(x) = softmax_p( -|| phi_Omega_x - a p ||^2 / (2 sigma^2) )

and the compiled kernel skips the exponentials of pairs whose logit is more than 60 nats below the best
(weights < e^-60 = 9e-27 relative; the "SKIP" rule). This module skips their *distances* too, with a lower
bound on ||q - a p||^2 that is cheap to evaluate and provably valid:

* Let U (D x k) have orthonormal columns, q_f = U^T q, p_f = U^T p, and q_perp = q - U q_f, p_perp = p - U p_f.
  By Pythagoras ||q - a p||^2 = ||q_f - a p_f||^2 + ||q_perp - a p_perp||^2, and by the reverse triangle
  inequality ||q_perp - a p_perp|| >= | ||q_perp|| - a ||p_perp|| |, so

      ||q - a p||^2  >=  LB(q, p) = ||q_f - a p_f||^2 + ( ||q_perp|| - a ||p_perp|| )^2 .

  With k = 1 and U = 1 / sqrt(D) this is the classic window-sum / norm bound (the sum and the norm of every
  patch come from summed-area tables); here U holds the k leading principal directions of the dictionary's
  patches, which is tighter at the same cost. The bound is used with a slack for rounding (see
  :func:`lower_bound`).
* The dictionary is sorted by its first projection p_f[0] (the sort key); since LB >= (q_f[0] - a p_f[0])^2,
  a query visits entries outwards from its own key and stops on each side as soon as that single term exceeds
  the cutoff: the whole rest of that side is pruned without being touched.
* The cutoff: a pair is skipped when LB > d_best^2 + 2 sigma^2 * 60, where d_best is the smallest exact
  distance evaluated so far for the query (a realised distance, so d_best >= the true minimum). Each skipped
  copy then has weight < e^-60 times the largest weight, the guarantee of the unpruned kernel's own skip.
* Exactly identical patches (in practice: constant patches, the images' background) are merged into one entry
  with a log-count term, as in :func:`~dlscience.diffusion.patch_posterior.merge_identical`; their weights are
  identical, so merging is exact.

The sorted dictionary depends on (P, class) only, not on t, so it is cached across sampler steps.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["build_dictionary", "lower_bound", "projection_basis", "query_features", "N_PROJECTIONS"]

N_PROJECTIONS = 4  # k: leading principal directions in the bound (capped at D)
_SAMPLE_IMAGES = 256  # images whose patches estimate the principal directions
_REL_ROUNDING = 1e-13  # bound on the relative rounding of squared norms and projections (float64, D <= 3e3)


def projection_basis(images: torch.Tensor, patch_size: int, k: int = N_PROJECTIONS) -> torch.Tensor:
    """Orthonormal basis U (D, k') of the k' = min(k, D) leading principal directions of the patches.

    Parameters
    ----------
    images : Tensor (N, C, H, W), float64
        Training images; a strided subset of at most 256 images estimates the covariance (deterministic).
    patch_size : odd int P <= min(H, W)
    k : int >= 1

    Returns
    -------
    Tensor (C P^2, k') float64 with U^T U = I to rounding (re-orthonormalised by QR). Any orthonormal U gives
    a valid bound; the principal directions make it tight.
    """
    N = images.shape[0]
    sub = images[:: max(1, N // _SAMPLE_IMAGES)][:_SAMPLE_IMAGES].double()
    pat = F.unfold(sub, patch_size).transpose(1, 2).reshape(-1, sub.shape[1] * patch_size**2)
    D = pat.shape[1]
    k = min(k, D)
    centred = pat - pat.mean(0)
    _, vecs = torch.linalg.eigh(centred.T @ centred)
    U, _ = torch.linalg.qr(vecs[:, -k:].flip(1))
    return U.contiguous()


def query_features(q: torch.Tensor, U: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Projections q @ U (n, k) and residual norms ||q - (q @ U) U^T|| (n,) of query patches q (n, D), float64.

    The residual is formed explicitly (no cancellation in ||q||^2 - ||q_f||^2)."""
    qf = q @ U
    return qf, (q - qf @ U.T).norm(dim=1)


def _slack(D: int, a: float) -> float:
    """Bound on the rounding error of | ||q_perp|| - a ||p_perp|| | (see :func:`build_dictionary`): the squared
    residual norms of the dictionary come from ||p||^2 - ||p_f||^2 with absolute error <= eps = 1e-13 D (D + 1)
    (values in [-1, 1], so ||p||^2 <= D), hence an error <= sqrt(eps) in the norm; the queries' residuals are
    formed explicitly (error far below that)."""
    eps = _REL_ROUNDING * D * (D + 1)
    return math.sqrt(eps) * (1.0 + a) + 1e-12


def lower_bound(
    q: torch.Tensor, p_f: torch.Tensor, p_res: torch.Tensor, U: torch.Tensor, a: float
) -> torch.Tensor:
    """The bound the pruned kernel uses, in torch (for tests): LB(q, p) <= ||q - a p||^2 for every pair.

    Parameters
    ----------
    q : Tensor (n, D) float64
        Query patches.
    p_f, p_res : Tensor (m, k), (m,) float64
        Dictionary projections and residual norms (as stored by :func:`build_dictionary`).
    U : Tensor (D, k)
    a : float

    Returns
    -------
    Tensor (n, m): ||q_f - a p_f||^2 + max(0, |q_res - a p_res| - slack)^2 - margin, with
    margin = 1e-9 (||q||^2 + a^2 D) + 1e-12 (as in els_kernel.c).
    """
    D = q.shape[1]
    qf, qr = query_features(q, U)
    proj = ((qf[:, None, :] - a * p_f[None]) ** 2).sum(-1)
    rd = ((qr[:, None] - a * p_res[None]).abs() - _slack(D, a)).clamp(min=0)
    margin = 1e-9 * ((q * q).sum(1, keepdim=True) + a * a * D) + 1e-12
    return proj + rd * rd - margin


def build_dictionary(
    images: np.ndarray, ids: np.ndarray, patch_size: int, k: int = N_PROJECTIONS, max_copy_bytes: int = 0
) -> dict:
    """The sorted, merged dictionary of all interior P x P patches for :func:`..native.els_pruned`.

    Parameters
    ----------
    images : float64 array (N, C, H, W), C-contiguous
        Training images (of one class for the class-conditional machine); entries' offsets point into it.
    ids : int64 array (N,)
        Global image ids (provenance).
    patch_size : odd int P <= min(H, W)
    k : int
        Number of projections in the bound.
    max_copy_bytes : int
        Also store ``pat`` (K, D) float64, the patches in sorted order, when it takes at most this many bytes.

    Returns
    -------
    dict with ``U`` (D, k') torch float64, ``pf`` (K, k'), ``pr`` (K,), ``psq`` (K,), ``logc`` (K,),
    ``off`` (K,) int64, ``cen`` (K, C), ``src`` (K,) int64 (all C-contiguous numpy, sorted by ``pf[:, 0]``)
    and ``n_patches`` (N (H - P + 1)(W - P + 1), before merging); ``pat`` (K, C P^2) when it fits. Constant patches with equal values are merged
    (count in ``logc``, provenance = smallest id, offset of that copy).
    """
    P, r = patch_size, patch_size // 2
    y = torch.from_numpy(images)
    N, C, H, W = y.shape
    Hd, Wd = H - P + 1, W - P + 1
    U = projection_basis(y, P, k)
    kk = U.shape[1]
    # projections by correlation with the basis filters (flattening order c * P * P + dy * P + dx)
    pf = F.conv2d(y, U.T.reshape(kk, C, P, P)).permute(0, 2, 3, 1).reshape(-1, kk)
    psq = (F.avg_pool2d(y * y, P, stride=1) * P * P).sum(1).reshape(-1)
    pr = (psq - (pf * pf).sum(1)).clamp(min=0).sqrt()
    n = torch.arange(N).view(N, 1, 1)
    u = torch.arange(Hd).view(1, Hd, 1)
    v = torch.arange(Wd).view(1, 1, Wd)
    off = (n * (C * H * W) + u * W + v).reshape(-1)
    src = (torch.from_numpy(ids).view(N, 1, 1) * (H * W) + (u + r) * W + (v + r)).reshape(-1)
    cen = y[:, :, r : r + Hd, r : r + Wd].permute(0, 2, 3, 1).reshape(-1, C)
    logc = torch.zeros(off.numel(), dtype=torch.float64)
    # merge constant patches (max == min in every channel) of equal value: identical vectors
    if P > 1:
        const = (F.max_pool2d(y, P, stride=1) == -F.max_pool2d(-y, P, stride=1)).all(1).reshape(-1)
    else:
        const = torch.ones(off.numel(), dtype=torch.bool)
    if const.any():
        cidx = torch.nonzero(const).flatten()
        vals, inverse, counts = torch.unique(cen[cidx], dim=0, return_inverse=True, return_counts=True)
        first_src = torch.full((vals.shape[0],), torch.iinfo(torch.int64).max, dtype=torch.int64)
        first_src.scatter_reduce_(0, inverse, src[cidx], reduce="amin")
        # the representative: the copy with the smallest provenance id
        is_rep = src[cidx] == first_src[inverse]
        rep = torch.full((vals.shape[0],), -1, dtype=torch.int64)
        rep.scatter_reduce_(0, inverse[is_rep], cidx[is_rep], reduce="amax")
        keep = ~const
        keep[rep] = True
        logc[rep] = counts.double().log()
        sel = torch.nonzero(keep).flatten()
        pf, pr, psq, off, src, cen, logc = (z[sel] for z in (pf, pr, psq, off, src, cen, logc))
    order = torch.argsort(pf[:, 0], stable=True)

    def arr(z):
        return np.ascontiguousarray(z[order].numpy())

    pat = None
    D = C * P * P
    if off.numel() * D * 8 <= max_copy_bytes:
        template = (torch.arange(C).view(C, 1, 1) * (H * W) + torch.arange(P).view(1, P, 1) * W).view(
            C * P, 1
        )
        template = (template + torch.arange(P).view(1, P)).reshape(-1)
        flat = y.reshape(-1)
        pat = torch.empty(off.numel(), D, dtype=torch.float64)
        sorted_off = off[order]
        for s in range(0, off.numel(), 1 << 16):
            pat[s : s + (1 << 16)] = flat[sorted_off[s : s + (1 << 16), None] + template]
        pat = pat.numpy()
    return {
        "pat": pat,
        "U": U,
        "pf": arr(pf),
        "pr": arr(pr),
        "psq": arr(psq),
        "logc": arr(logc),
        "off": arr(off),
        "cen": arr(cen),
        "src": arr(src),
        "n_patches": N * Hd * Wd,
    }


def dictionary_bytes(d: dict) -> int:
    """Memory held by a dictionary from :func:`build_dictionary` (numpy arrays)."""
    return sum(v.nbytes for v in d.values() if isinstance(v, np.ndarray))
