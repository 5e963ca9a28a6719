"""Deterministic DDIM sampler (eta = 0) that works on any :class:`~dlscience.diffusion.Denoiser`.

Song, Meng & Ermon, "Denoising Diffusion Implicit Models" (ICLR 2021), Eq. (12) with sigma_t = 0, on the time
grid of Kamb & Ganguli 2024 (research note els.md Sec. 1): t_i = i / n_steps. Symbols, as in the paper:

    x_t      -> phi_t, the current state            x0_hat -> the denoiser's estimate of phi_0
    a_t      -> sqrt(alpha_bar(t))                   sigma_t -> sqrt(1 - alpha_bar(t))

One step from t to t' < t:
    1. x0_hat  = denoiser.denoise(x_t, t)
    2. eps_hat = (x_t - a_t x0_hat) / sigma_t
    3. x_t'    = a_t' x0_hat + sigma_t' eps_hat
The output is x0_hat at the last evaluation time t_1 = 1 / n_steps.

The ELS machine of the paper starts at t = 0.95 (i = 19..1, 19 evaluations, ``t_start=0.95``); the trained
networks start at t = 1 (i = 20..1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from dlscience.diffusion.denoiser import Denoiser
from dlscience.diffusion.schedule import require_tensor, signal_and_noise
from dlscience.errors import InputValidationError

__all__ = ["DDIMSampler"]


@dataclass(frozen=True)
class DDIMSampler:
    """Deterministic DDIM sampler on the grid t_i = i / n_steps.

    Parameters
    ----------
    n_steps : int, default 20
        Number of grid intervals (the paper's 20).
    t_start : float, default 1.0
        First evaluation time, on the grid (1.0 for networks; 0.95 for the paper's ELS machine).

    Raises
    ------
    InputValidationError
        If ``n_steps < 1`` or ``t_start`` is not a grid point in (0, 1].
    """

    n_steps: int = 20
    t_start: float = 1.0

    def __post_init__(self):
        if int(self.n_steps) < 1:
            raise InputValidationError(f"n_steps={self.n_steps} must be a positive integer")
        i = self.t_start * self.n_steps
        if not (0 < self.t_start <= 1) or abs(i - round(i)) > 1e-6:
            raise InputValidationError(
                f"t_start={self.t_start} must be a grid point i/{self.n_steps} in (0, 1]"
            )

    def timesteps(self) -> list[float]:
        """Evaluation times, descending: ``[t_start, ..., 1/n_steps]`` (length round(t_start * n_steps))."""
        i0 = round(self.t_start * self.n_steps)
        return [i / self.n_steps for i in range(i0, 0, -1)]

    @staticmethod
    def step(x_t: torch.Tensor, t: float, t_next: float, x0_hat: torch.Tensor) -> torch.Tensor:
        """One DDIM (eta = 0) update from time t to t_next given x0_hat; tensors (B, C, H, W)."""
        a, sigma = signal_and_noise(t)
        a_next, sigma_next = signal_and_noise(t_next)
        eps_hat = (x_t - a * x0_hat) / sigma
        return a_next * x0_hat + sigma_next * eps_hat

    def sample(
        self,
        denoiser: Denoiser,
        x_start: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        start_index: int = 0,
        callback: Callable[[int, float, torch.Tensor, torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        """Run the sampler from ``x_start`` and return the final x0_hat.

        Parameters
        ----------
        denoiser : Denoiser
            Any denoiser (analytic machine or trained network).
        x_start : Tensor of shape (B, C, H, W), float32
            The state at evaluation ``start_index`` (the seed noise when ``start_index == 0``).
        labels : LongTensor of shape (B,), optional
            Class labels for a conditional denoiser.
        start_index : int, default 0
            Index into :meth:`timesteps` to start from; resume an interrupted run with the state saved there.
        callback : callable, optional
            Called after every evaluation as ``callback(i, t, x_next, x0_hat)``, where ``x_next`` is the state
            at evaluation i + 1 (equal to x0_hat after the last one); use it for progress and checkpoints.

        Returns
        -------
        Tensor of x_start's shape and dtype
            x0_hat at the last evaluation time 1 / n_steps.

        Raises
        ------
        InputValidationError
            ``x_start`` is not a torch.Tensor (a numpy array: convert with ``torch.from_numpy``),
            or ``start_index`` is outside the grid.
        """
        require_tensor(x_start, "x_start", "DDIMSampler.sample")
        times = self.timesteps()
        if not 0 <= start_index < len(times):
            raise InputValidationError(f"start_index={start_index} outside [0, {len(times)})")
        x = x_start
        x0_hat = x
        for i in range(start_index, len(times)):
            t = times[i]
            x0_hat = denoiser.denoise(x, t, labels)
            x = self.step(x, t, times[i + 1], x0_hat) if i + 1 < len(times) else x0_hat
            if callback is not None:
                callback(i, t, x, x0_hat)
        return x0_hat
