"""The ideal (empirical optimal) denoiser, IS.

Kamb & Ganguli 2024, Sec. 3, Eq. (3) (research note els.md Sec. 1): for the empirical training distribution
{phi_n}, the exact score of the noised distribution gives the denoiser

    W_n(phi)    = softmax_n( -|| phi - a phi_n ||^2 / (2 sigma^2) )
    x0_hat(phi) = sum_n W_n(phi) phi_n

which memorises: its samples are training images. It is the baseline the local machines beat.
"""

from __future__ import annotations

import torch

from dlscience.diffusion.empirical import EmpiricalDenoiser
from dlscience.diffusion.patch_posterior import DictionaryChunk, posterior_mean

__all__ = ["IdealDenoiser"]


class IdealDenoiser(EmpiricalDenoiser):
    """Ideal empirical denoiser (IS) over a training set.

    Parameters
    ----------
    images : Tensor (N, C, H, W), float in [-1, 1]
        Training images.
    labels : LongTensor (N,), optional
        Makes the denoiser class-conditional (restricts the sum to the label's images).
    num_classes, precision, memory_limit, backend
        As :class:`~dlscience.diffusion.empirical.EmpiricalDenoiser`.

    Examples
    --------
    >>> ds = IdealDenoiser(images)                      # doctest: +SKIP
    >>> x0_hat = ds.denoise(x_t, t=0.5)                 # doctest: +SKIP
    """

    def _posterior(self, x, a, sigma, t, ids, label, track):
        b = x.shape[0]
        C, H, W = self.image_shape
        HW = H * W
        flat = self.images.flatten(1)
        step = max(1, (self.memory_limit // 8) // (flat.shape[1] * self._itemsize * 2))

        def chunks():
            for start in range(0, ids.numel(), step):
                chunk_ids = ids[start : start + step]
                imgs = flat[chunk_ids][None]
                yield DictionaryChunk(imgs, imgs, (imgs * imgs).sum(-1), None, chunk_ids[None])

        res = posterior_mean(x.reshape(1, b, -1).to(self.device), chunks(), a=a, sigma=sigma)
        res.mean, res.best_source, res.best_weight = (
            r.cpu() for r in (res.mean, res.best_source, res.best_weight)
        )
        x0 = res.mean.reshape(b, C, H, W)
        src = res.best_source.reshape(b, 1) * HW + torch.arange(HW)
        weight = res.best_weight.reshape(b, 1).expand(b, HW)
        return x0, src, weight
