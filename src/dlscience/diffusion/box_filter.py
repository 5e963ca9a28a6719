"""Exact P x P box sums with integral images (summed-area tables), O(H W) whatever P is.

Used by the local score machine, whose cross term sum_{window} phi * phi_n is a box sum of the product map
phi * phi_n (Kamb & Ganguli 2024, Eq. (6); research note els.md Sec. 6, speed-up 8).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["box_sum"]


def box_sum(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Sum of x over the P x P window centred at every pixel, with zeros outside the image.

    Parameters
    ----------
    x : Tensor (..., H, W), float
        Input maps (use float64 for exact-to-rounding sums of many terms).
    patch_size : odd int P >= 1

    Returns
    -------
    Tensor (..., H, W), dtype of x
        out[..., i, j] = sum of x[..., i + dy, j + dx] over |dy|, |dx| <= P // 2 inside the image.
    """
    r = patch_size // 2
    if r == 0:
        return x.clone()
    H, W = x.shape[-2:]
    # integral image S with a zero first row/column: S[a, b] = sum of x[:a, :b] (after padding by r)
    xp = F.pad(x, (r, r, r, r))
    S = F.pad(xp.cumsum(-2).cumsum(-1), (1, 0, 1, 0))
    P = patch_size
    return S[..., P : P + H, P : P + W] - S[..., :H, P : P + W] - S[..., P : P + H, :W] + S[..., :H, :W]
