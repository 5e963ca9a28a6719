"""The one denoiser interface shared by analytic machines and trained networks.

A denoiser maps a noisy image x_t at diffusion time t to an estimate x0_hat of the clean image. The noise
estimate and the score follow from the forward process x_t = a x_0 + sigma eps (see :mod:`.schedule`):

    eps_hat = (x_t - a x0_hat) / sigma,        score = grad log p_t(x_t) = -eps_hat / sigma

(Kamb & Ganguli 2024, Sec. 2; Tweedie's formula). Samplers, metrics and comparisons are written once against
this interface, so an analytic ELS machine and a trained UNet are interchangeable.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from dlscience.diffusion.schedule import alpha_bar, require_tensor
from dlscience.errors import InputValidationError

__all__ = ["Denoiser"]


class Denoiser(ABC):
    """Abstract denoiser: ``denoise(x_t, t, labels=None) -> x0_hat``.

    Subclasses set ``image_shape`` (C, H, W), ``num_classes`` (None for an unconditional denoiser) and
    implement :meth:`_denoise`, which receives validated inputs: ``x_t`` float (B, C, H, W) finite, ``t`` a
    float64 tensor of shape (B,) in (0, 1], and ``labels`` an int64 tensor (B,) or None.
    """

    image_shape: tuple[int, int, int]
    num_classes: int | None = None

    @property
    def conditional(self) -> bool:
        """True when the denoiser needs class labels."""
        return self.num_classes is not None

    # -- public API -----------------------------------------------------------------------------------------
    def denoise(
        self, x_t: torch.Tensor, t: float | torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Estimate the clean image x_0 from the noisy image x_t.

        Parameters
        ----------
        x_t : Tensor of shape (B, C, H, W), float32 (or float64)
            Noisy images; (C, H, W) must equal ``self.image_shape``; all values finite.
        t : float or Tensor of shape (B,) or ()
            Diffusion time in [1e-6, 1], one per sample or shared.
        labels : LongTensor of shape (B,), optional
            Class labels in [0, num_classes); required by a conditional denoiser, refused by an
            unconditional one.

        Returns
        -------
        Tensor of shape (B, C, H, W), dtype of ``x_t``
            x0_hat.

        Raises
        ------
        InputValidationError
            Wrong type, shape or dtype, non-finite values, t outside (0, 1], missing or unexpected labels.
        """
        x_t, t_vec, labels = self._validate(x_t, t, labels)
        return self._denoise(x_t, t_vec, labels).to(x_t.dtype)

    def eps(
        self, x_t: torch.Tensor, t: float | torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Noise estimate eps_hat = (x_t - sqrt(alpha_bar) x0_hat) / sqrt(1 - alpha_bar); shapes as :meth:`denoise`."""
        x0_hat = self.denoise(x_t, t, labels)
        a, sigma = _a_sigma(self._as_time_vector(t, x_t.shape[0]), x_t)
        return (x_t - a * x0_hat) / sigma

    def score(
        self, x_t: torch.Tensor, t: float | torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Score grad_x log p_t(x_t) = -eps_hat / sqrt(1 - alpha_bar); shapes as :meth:`denoise`."""
        eps_hat = self.eps(x_t, t, labels)
        _, sigma = _a_sigma(self._as_time_vector(t, x_t.shape[0]), x_t)
        return -eps_hat / sigma

    # -- for subclasses -------------------------------------------------------------------------------------
    @abstractmethod
    def _denoise(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Compute x0_hat from validated inputs (see the class docstring)."""

    def _validate(self, x_t, t, labels):
        name = type(self).__name__
        require_tensor(x_t, "x_t", name)
        if not isinstance(x_t, torch.Tensor):
            raise InputValidationError(
                f"{name}: x_t must be a torch.Tensor of shape (B, C, H, W), got {type(x_t).__name__}"
            )
        if x_t.dtype not in (torch.float32, torch.float64):
            raise InputValidationError(
                f"{name}: x_t must be float32 or float64, got {x_t.dtype}; convert with x_t.float()"
            )
        if x_t.dim() != 4 or tuple(x_t.shape[1:]) != tuple(self.image_shape):
            raise InputValidationError(
                f"{name}: x_t has shape {tuple(x_t.shape)}, expected (B, {', '.join(map(str, self.image_shape))})"
            )
        if not torch.isfinite(x_t).all():
            raise InputValidationError(f"{name}: x_t contains NaN or infinite values")
        t_vec = self._as_time_vector(t, x_t.shape[0])
        if self.conditional:
            if labels is None:
                raise InputValidationError(
                    f"{name} is class-conditional ({self.num_classes} classes): pass labels of shape (B,)"
                )
            labels = torch.as_tensor(labels)
            if labels.dtype.is_floating_point or labels.dtype == torch.bool:
                raise InputValidationError(f"{name}: labels must be integers, got {labels.dtype}")
            labels = labels.to(torch.int64).reshape(-1)
            if labels.numel() != x_t.shape[0]:
                raise InputValidationError(
                    f"{name}: got {labels.numel()} labels for a batch of {x_t.shape[0]} images"
                )
            if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise InputValidationError(
                    f"{name}: labels must lie in [0, {self.num_classes}), got {labels.tolist()}"
                )
        elif labels is not None:
            raise InputValidationError(
                f"{name} is unconditional: labels were given; build it with labels=... "
                "to make a class-conditional denoiser, or drop the labels"
            )
        return x_t, t_vec, labels

    @staticmethod
    def _as_time_vector(t, batch: int) -> torch.Tensor:
        t_vec = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        if t_vec.numel() == 1:
            t_vec = t_vec.expand(batch)
        if t_vec.numel() != batch:
            raise InputValidationError(f"t has {t_vec.numel()} values for a batch of {batch} images")
        if not torch.isfinite(t_vec).all() or (t_vec < 1e-6).any() or (t_vec > 1).any():
            raise InputValidationError(
                f"t must lie in [1e-6, 1] (below 1e-6 the noise level rounds to zero), got {t_vec.tolist()}"
            )
        return t_vec.contiguous()


def _a_sigma(t_vec: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ab = alpha_bar(t_vec).to(like.dtype).view(-1, 1, 1, 1)
    return ab.sqrt(), (1 - ab).sqrt()
