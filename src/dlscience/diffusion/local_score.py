"""The local score machine, LS (locality without equivariance).

Kamb & Ganguli 2024, Sec. 4, Eq. (6) (research note els.md Sec. 1): for every pixel x, with Omega_x the P x P
window at x, only the training patches at the *same location* are compared,

    W_n(x)      = softmax_n( -|| phi_Omega_x - a phi_n,Omega_x ||^2 / (2 sigma^2) )
    x0_hat(x)   = sum_n W_n(x) phi_n(x)

and out-of-image positions are zero in both (zero padding adds nothing to the distance). With
P >= 2 max(H, W) - 1 every window covers the whole image and LS equals the ideal denoiser IS.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dlscience.diffusion.empirical import EmpiricalDenoiser
from dlscience.diffusion.patch_schedule import PatchSchedule, resolve_patch_size

__all__ = ["LocalDenoiser"]


class LocalDenoiser(EmpiricalDenoiser):
    """Local score machine (LS): per-pixel posterior over same-location training patches, zero padding.

    Parameters
    ----------
    images : Tensor (N, C, H, W), float in [-1, 1]
        Training images.
    patch_size : odd int, sequence of 20 odd ints, preset name or PatchSchedule
        Window size P, constant or a schedule over the time grid (see :mod:`.patch_schedule`); at most
        2 * max(H, W) - 1.
    labels : LongTensor (N,), optional
        Makes the machine class-conditional.
    **options
        ``num_classes``, ``precision``, ``memory_limit``, ``backend``: see
        :class:`~dlscience.diffusion.empirical.EmpiricalDenoiser`.

    Raises
    ------
    InputValidationError
        Bad images or labels, an even, non-positive or oversized patch size, an unknown preset.
    """

    def __init__(
        self,
        images: torch.Tensor,
        patch_size: int | str | Sequence[int] | PatchSchedule,
        labels: torch.Tensor | None = None,
        **options,
    ):
        super().__init__(images, labels, **options)
        _, H, W = self.image_shape
        self.schedule = resolve_patch_size(patch_size, max_size=2 * max(H, W) - 1)

    def patch_size_at(self, t: float) -> int:
        """Patch size used at time t (from the schedule)."""
        return self.schedule.at(t)

    def _posterior(self, x, a, sigma, t, ids, label, track):
        P = self.patch_size_at(t)
        mean, src, weight = self._local_posterior(x, a, sigma, P, ids)
        return mean.reshape(x.shape).to(x.dtype), src, weight.to(x.dtype)
