"""The equivariant local score machine, ELS, and its boundary-broken form for zero padding (bbELS).

Kamb & Ganguli 2024, Sec. 4, Eqs. (8)-(9) (research note els.md Sec. 1). The dictionary P_Omega(D) holds every
P x P patch p of every training image at every position; for each pixel x

    W_p(x)      = softmax_p( -|| phi_Omega_x - a p ||^2 / (2 sigma^2) )                             (8)
    x0_hat(x)   = sum_p W_p(x) p(0)          (p(0): the patch's centre pixel)                        (9)

a convex combination of training-patch centres, so outputs stay in [-1, 1].

* ``padding="circular"``: phi is circularly padded and the dictionary holds the fully interior ("valid")
  patches, N (H - P + 1)(W - P + 1) of them. The machine commutes with circular shifts.
* ``padding="zeros"`` (bbELS, the model of zero-padded networks, paper Sec. 5 and App. B): the dictionary
  depends on where x is, with r = P // 2:
    - interior pixels (>= r from every border) use all interior patches;
    - pixels within r of exactly one border use the zero-padded training patches at the same distance from the
      same border, from any position along it where the patch crosses that border only;
    - corner pixels (within r of two borders) use only the co-located patch of each image, as in LS;
    - if P >= min(H, W) the machine is the zero-padded LS.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dlscience.diffusion.empirical import EmpiricalDenoiser, PixelGroups
from dlscience.diffusion.patch_schedule import PatchSchedule, resolve_patch_size
from dlscience.errors import InputValidationError

__all__ = ["ELSDenoiser", "boundary_broken_groups"]

PADDINGS = ("zeros", "circular")


class ELSDenoiser(EmpiricalDenoiser):
    """Equivariant local score machine (ELS; boundary-broken ELS for zero padding).

    Parameters
    ----------
    images : Tensor (N, C, H, W), float in [-1, 1]
        Training images.
    patch_size : odd int, sequence of 20 odd ints, preset name or PatchSchedule
        Window size P, constant or a schedule over the time grid (see :mod:`.patch_schedule`). With circular
        padding P <= min(H, W); with zero padding P <= 2 max(H, W) - 1.
    padding : {"zeros", "circular"}, default "zeros"
        The padding of the network the machine models: "zeros" gives the boundary-broken ELS.
    labels : LongTensor (N,), optional
        Makes the machine class-conditional (dictionary restricted to the label's images).
    **options
        ``num_classes``, ``precision``, ``memory_limit``, ``backend``: see
        :class:`~dlscience.diffusion.empirical.EmpiricalDenoiser`.

    Raises
    ------
    InputValidationError
        Bad images or labels, unknown padding, an even, non-positive or oversized patch size, unknown preset.

    Notes
    -----
    Cost per call: about H W x N (H - P + 1)(W - P + 1) pixel-patch pairs per image. The compiled kernel
    (``backend="native"``, the default when a C compiler is present) does O(1) work per pair whatever P is;
    the matrix-multiply path (``backend="torch"``) costs 2 C P^2 flops per pair, merges identical patches
    exactly (log-count term) and caches the interior dictionary per (P, class) within ``memory_limit``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        patch_size: int | str | Sequence[int] | PatchSchedule,
        padding: str = "zeros",
        labels: torch.Tensor | None = None,
        **options,
    ):
        super().__init__(images, labels, **options)
        if padding not in PADDINGS:
            raise InputValidationError(f"ELSDenoiser: padding must be one of {PADDINGS}, got {padding!r}")
        self.padding = padding
        _, H, W = self.image_shape
        limit = min(H, W) if padding == "circular" else 2 * max(H, W) - 1
        self.schedule = resolve_patch_size(patch_size, max_size=limit)

    def patch_size_at(self, t: float) -> int:
        """Patch size used at time t (from the schedule)."""
        return self.schedule.at(t)

    def _posterior(self, x, a, sigma, t, ids, label, track):
        P = self.patch_size_at(t)
        _, H, W = self.image_shape
        if self.padding == "circular":
            groups = [
                PixelGroups(torch.arange(H * W).view(1, -1), interior_positions(H, W, P), True, (0, H, 0, W))
            ]
        elif P >= min(H, W):  # no interior pixels: the zero-padded LS
            mean, src, weight = self._local_posterior(x, a, sigma, P, ids)
            return mean.reshape(x.shape).to(x.dtype), src, weight.to(x.dtype)
        else:
            groups = boundary_broken_groups(H, W, P)
            corners = groups.pop() if P > 1 else None  # corner pixels: co-located patches only, as LS
            out, src, weight = self._patch_posterior(
                x, a, sigma, P, groups, ids, self.padding, cache_key=(P, label), track=track
            )
            if corners is not None:
                pos = corners.query_pos.reshape(-1)
                mean, s, w = self._local_posterior(x, a, sigma, P, ids, pos)
                out.view(x.shape[0], x.shape[1], -1)[:, :, pos] = mean.to(out.dtype)
                src[:, pos], weight[:, pos] = s, w.to(weight.dtype)
            return out, src, weight
        return self._patch_posterior(
            x, a, sigma, P, groups, ids, self.padding, cache_key=(P, label), track=track
        )


def interior_positions(H: int, W: int, P: int) -> torch.Tensor:
    """Flattened indices (1, (H - P + 1)(W - P + 1)) of the pixels >= P // 2 from every border."""
    r = P // 2
    rows = torch.arange(r, H - r)
    cols = torch.arange(r, W - r)
    return (rows.view(-1, 1) * W + cols.view(1, -1)).view(1, -1)


def boundary_broken_groups(H: int, W: int, P: int) -> list[PixelGroups]:
    """Pixel groups of the boundary-broken ELS for P < min(H, W) (see the module docstring).

    Returns
    -------
    list of PixelGroups
        Interior (one group), top, bottom, left and right edges (r groups each: one per distance from the
        border), and the corners (one singleton group per pixel), where r = P // 2.
    """
    r = P // 2
    interior = interior_positions(H, W, P)
    groups = [PixelGroups(interior, interior, True, (r, H - r, r, W - r))]
    if r == 0:
        return groups
    inner_cols = torch.arange(r, W - r)
    inner_rows = torch.arange(r, H - r)
    top = torch.stack([d * W + inner_cols for d in range(r)])
    bottom = torch.stack([(H - 1 - d) * W + inner_cols for d in range(r)])
    left = torch.stack([inner_rows * W + d for d in range(r)])
    right = torch.stack([inner_rows * W + (W - 1 - d) for d in range(r)])
    for name, pos in zip(("top", "bottom", "left", "right"), (top, bottom, left, right), strict=True):
        groups.append(PixelGroups(pos, pos, border=name))
    edge_rows = [*range(r), *range(H - r, H)]
    edge_cols = [*range(r), *range(W - r, W)]
    corners = torch.tensor([i * W + j for i in edge_rows for j in edge_cols]).view(-1, 1)
    groups.append(PixelGroups(corners, corners))
    return groups
