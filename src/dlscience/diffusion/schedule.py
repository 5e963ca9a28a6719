"""Noise schedule and forward process of the ELS paper.

Kamb & Ganguli, "An analytic theory of creativity in convolutional diffusion models" (arXiv 2412.20292),
Sec. 2 and App. C; the authors' code uses the "legacy" cosine schedule without Nichol & Dhariwal's offset:

    alpha_bar(t) = cos^2((t / 1.008) * pi / 2),      t in [0, 1]                           (schedule)
    x_t = sqrt(alpha_bar(t)) * x_0 + sqrt(1 - alpha_bar(t)) * eps,   eps ~ N(0, I)          (forward process)

so alpha_bar(0) = 1 and alpha_bar(1) = 1.6e-4. Symbols: ``a = sqrt(alpha_bar)`` scales the signal and
``sigma = sqrt(1 - alpha_bar)`` is the noise standard deviation (the paper's a_t and sigma_t).
"""

from __future__ import annotations

import math

import torch

from dlscience.errors import InputValidationError

__all__ = ["alpha_bar", "signal_and_noise", "add_noise", "time_grid"]

_S = 1.008


def alpha_bar(t: float | torch.Tensor) -> float | torch.Tensor:
    """Cumulative signal fraction alpha_bar(t) = cos^2((t / 1.008) pi / 2).

    Parameters
    ----------
    t : float or Tensor of any shape
        Diffusion time in [0, 1] (0 = clean data, 1 = almost pure noise).

    Returns
    -------
    float or Tensor of t's shape and dtype
        alpha_bar in (0, 1]; 1 at t = 0 and 1.6e-4 at t = 1.

    Raises
    ------
    InputValidationError
        If a float ``t`` lies outside [0, 1].
    """
    if isinstance(t, torch.Tensor):
        return torch.cos((t / _S) * (math.pi / 2)) ** 2
    t = float(t)
    if not 0.0 <= t <= 1.0:
        raise InputValidationError(f"diffusion time t={t} is outside [0, 1]; pass a time in [0, 1]")
    return math.cos((t / _S) * (math.pi / 2)) ** 2


def signal_and_noise(t: float) -> tuple[float, float]:
    """Return ``(a, sigma) = (sqrt(alpha_bar(t)), sqrt(1 - alpha_bar(t)))`` as Python floats.

    Parameters
    ----------
    t : float
        Diffusion time in [0, 1].

    Returns
    -------
    a, sigma : float
        Signal scale in (0, 1] and noise standard deviation in [0, 1).
    """
    ab = alpha_bar(float(t))
    return math.sqrt(ab), math.sqrt(max(1.0 - ab, 0.0))


def require_tensor(value, argument: str, owner: str, *, optional: bool = False):
    """``value`` if it is a torch.Tensor (or None with ``optional``), else an InputValidationError naming
    ``owner`` and ``argument``; a numpy array is told to convert with ``torch.from_numpy``.

    Raises
    ------
    InputValidationError
        ``value`` is not a tensor.
    """
    if isinstance(value, torch.Tensor) or (optional and value is None):
        return value
    kind = type(value).__name__
    if type(value).__module__.split(".")[0] == "numpy":
        raise InputValidationError(
            f"{owner}: {argument} is a numpy {kind}, not a torch.Tensor; convert with "
            f"torch.from_numpy({argument})"
        )
    raise InputValidationError(f"{owner}: {argument} must be a torch.Tensor, got {kind}")


def add_noise(
    x0: torch.Tensor,
    t: float,
    eps: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Forward process x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps (variance preserving).

    Parameters
    ----------
    x0 : Tensor of shape (B, C, H, W), float
        Clean images in [-1, 1].
    t : float
        Diffusion time in [0, 1].
    eps : Tensor of x0's shape, optional
        Standard normal noise; drawn with ``generator`` when omitted.
    generator : torch.Generator, optional
        Source of randomness for ``eps`` (seed it for reproducible noise).

    Returns
    -------
    Tensor of x0's shape and dtype
        The noisy images x_t.

    Raises
    ------
    InputValidationError
        ``x0`` or ``eps`` is not a torch.Tensor (a numpy array: convert with ``torch.from_numpy``).
    """
    require_tensor(x0, "x0", "add_noise")
    require_tensor(eps, "eps", "add_noise", optional=True)
    a, sigma = signal_and_noise(t)
    if eps is None:
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    return a * x0 + sigma * eps


def time_grid(n_steps: int = 20) -> list[float]:
    """The paper's sampling grid t_i = i / n_steps for i = 1..n_steps (ascending).

    Parameters
    ----------
    n_steps : int, >= 1
        Number of grid points (the paper uses 20).

    Returns
    -------
    list of float
        ``[1/n, 2/n, ..., 1]``.
    """
    if int(n_steps) < 1:
        raise InputValidationError(f"n_steps={n_steps} must be a positive integer")
    return [i / n_steps for i in range(1, int(n_steps) + 1)]
