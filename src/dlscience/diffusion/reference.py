"""Slow, dense, float64 reference implementations of the IS, LS, ELS and bbELS denoisers.

Written straight from the definitions (Kamb & Ganguli 2024, Eqs. (3), (6), (8)-(9); research note els.md Sec. 1)
with none of the fast path's tricks: per pixel, the dictionary is listed explicitly by the rules, full squared
distances ||phi_Omega - a p||^2 are computed by broadcasting, and the softmax is taken densely in float64.
Used by the tests (as the independent ground truth) and by ``benchmarks/els_speed.py`` (as the naive baseline).
Cost: O(H W M C P^2) per image with M dictionary patches per pixel; use on small inputs only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dlscience.diffusion.schedule import signal_and_noise

__all__ = ["reference_ideal", "reference_local", "reference_els", "dictionary_positions"]


def _softmax_mean(q: torch.Tensor, patches: torch.Tensor, centres: torch.Tensor, a, sigma, chunk=200_000):
    """Dense softmax_p(-|q - a p|^2 / 2 sigma^2)-weighted mean of centres; q (B, D), patches (M, D)."""
    d2 = torch.cat(
        [
            ((q[:, None, :] - a * patches[None, s : s + chunk]) ** 2).sum(-1)
            for s in range(0, len(patches), chunk)
        ],
        dim=1,
    )
    w = torch.softmax(-d2 / (2 * sigma**2), dim=1)
    return w @ centres


def reference_ideal(images: torch.Tensor, x: torch.Tensor, t: float) -> torch.Tensor:
    """Ideal denoiser: images (N, C, H, W), x (B, C, H, W) -> x0_hat (B, C, H, W) float64."""
    a, sigma = signal_and_noise(t)
    flat = images.double().flatten(1)
    return _softmax_mean(x.double().flatten(1), flat, flat, a, sigma).view(x.shape)


def dictionary_positions(i: int, j: int, H: int, W: int, P: int, kind: str) -> list[tuple[int, int]]:
    """Centres (u, v) of the dictionary patches for pixel (i, j).

    kind: "local" (LS), "circular" (ELS with circular padding) or "zeros" (boundary-broken ELS).
    """
    r = P // 2
    if kind == "local" or (kind == "zeros" and P >= min(H, W)):
        return [(i, j)]
    interior = [(u, v) for u in range(r, H - r) for v in range(r, W - r)]
    if kind == "circular":
        return interior
    top, bottom, left, right = i < r, i >= H - r, j < r, j >= W - r
    n_borders = top + bottom + left + right
    if n_borders == 0:
        return interior
    if n_borders >= 2:
        return [(i, j)]
    if top or bottom:
        return [(i, v) for v in range(r, W - r)]
    return [(u, j) for u in range(r, H - r)]


def _patch(padded: torch.Tensor, u: int, v: int, P: int) -> torch.Tensor:
    # padded (N, C, H + 2r, W + 2r); the patch centred at (u, v) of the unpadded image
    return padded[:, :, u : u + P, v : v + P].reshape(padded.shape[0], -1)


def _reference_patch_machine(images, x, t, P, kind, pixels=None):
    a, sigma = signal_and_noise(t)
    images, x = images.double(), x.double()
    N, C, H, W = images.shape
    r = P // 2
    img_pad = F.pad(images, (r, r, r, r))
    if kind == "circular":
        # wrap-around indexing, written directly
        rows = torch.arange(-r, H + r) % H
        cols = torch.arange(-r, W + r) % W
        x_pad = x[:, :, rows][:, :, :, cols]
    else:
        x_pad = F.pad(x, (r, r, r, r))
    out = torch.full_like(x, float("nan"))
    centre = torch.arange(C) * P * P + (P * P) // 2
    if pixels is None:
        pixels = [(i, j) for i in range(H) for j in range(W)]
    for i, j in pixels:
        pos = dictionary_positions(i, j, H, W, P, kind)
        patches = torch.cat([_patch(img_pad, u, v, P) for (u, v) in pos], dim=0)
        q = _patch(x_pad, i, j, P)
        out[:, :, i, j] = _softmax_mean(q, patches, patches[:, centre], a, sigma)
    return out


def reference_local(images: torch.Tensor, x: torch.Tensor, t: float, P: int, pixels=None) -> torch.Tensor:
    """LS with zero padding: images (N, C, H, W), x (B, C, H, W) -> (B, C, H, W) float64.

    ``pixels``: optional list of (row, col) to compute (the others are NaN), for timing on large inputs.
    """
    return _reference_patch_machine(images, x, t, P, "local", pixels)


def reference_els(
    images: torch.Tensor, x: torch.Tensor, t: float, P: int, padding: str, pixels=None
) -> torch.Tensor:
    """ELS ("circular") or boundary-broken ELS ("zeros"): -> (B, C, H, W) float64 (``pixels`` as above)."""
    return _reference_patch_machine(images, x, t, P, padding, pixels)
