"""In-context linear regression with a finite pool of pretraining tasks (Raventos, Paul, Chen & Ganguli 2023,
Sec. 2; research note theory_transformers.md, paper 2, Sec. a).

A sequence holds K pairs (x_k, y_k) with

    x_k ~ N(0, I_D),    y_k = w^T x_k + eps_k,    eps_k ~ N(0, sigma^2)

and its task w comes from one of two distributions:

* ``"pretrain"``: uniform over a pool {w^(1), ..., w^(M)}, w^(i) ~ N(0, tau^2 I_D) drawn **once** from
  ``task_seed`` and then fixed (M = ``n_tasks``; ``None`` means M = infinity, a fresh task per sequence);
* ``"true"``: w ~ N(0, tau^2 I_D), the distribution the pool was drawn from.

Defaults are the paper's: D = 8, K = 16, sigma^2 = 0.25, tau^2 = 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dlscience.errors import InputValidationError

__all__ = ["NoisyLinearRegression", "Batch", "DISTRIBUTIONS", "MAX_TASKS"]

DISTRIBUTIONS = ("pretrain", "true")

#: The largest pool a training run accepts: 2^20, the largest M of the paper's sweeps. Every evaluation weighs
#: all M tasks at every position of every sequence for dMMSE (time linear in M: about an hour per 2 x 4096
#: evaluation sequences at 2^20 on one CPU core); beyond it use M = infinity (a fresh task per sequence).
MAX_TASKS = 1 << 20


@dataclass
class Batch:
    """Sequences of :meth:`NoisyLinearRegression.sample`.

    Attributes
    ----------
    xs : Tensor (B, K, D) float32
    ys : Tensor (B, K) float32
        Noisy targets.
    ws : Tensor (B, D) float32
        Each sequence's task.
    """

    xs: torch.Tensor
    ys: torch.Tensor
    ws: torch.Tensor

    @property
    def noiseless(self) -> torch.Tensor:
        """w^T x_k, (B, K) float32: the target the paper's evaluation compares with."""
        return torch.einsum("bkd,bd->bk", self.xs, self.ws)


class NoisyLinearRegression:
    """The data process of the paper, with its task pool.

    Parameters
    ----------
    n_dims : int
        D, input dimension (>= 1).
    n_points : int
        K, pairs per sequence (>= 1).
    noise_variance : float
        sigma^2 (>= 0; the paper's 0.25, a noise standard deviation of 0.5).
    n_tasks : int or None
        M, size of the pretraining pool (>= 1); None for M = infinity.
    task_seed : int
        Seeds the pool (and nothing else), so a training run and its "pretrain" evaluation share it.
    task_variance : float
        tau^2 (> 0).

    Raises
    ------
    InputValidationError
        On a value outside its range.
    """

    def __init__(
        self,
        n_dims: int = 8,
        n_points: int = 16,
        noise_variance: float = 0.25,
        n_tasks: int | None = None,
        task_seed: int = 0,
        task_variance: float = 1.0,
    ):
        if n_dims < 1 or n_points < 1:
            raise InputValidationError(
                f"n_dims and n_points (--n-dims, --n-points) must be >= 1, got {n_dims}, {n_points}"
            )
        if noise_variance < 0:
            raise InputValidationError(
                f"noise_variance (--noise-variance) must be >= 0, got {noise_variance}"
            )
        if task_variance <= 0:
            raise InputValidationError(f"task_variance must be > 0, got {task_variance}")
        if n_tasks is not None and n_tasks < 1:
            raise InputValidationError(f"n_tasks (M) must be >= 1 or infinite (None), got {n_tasks}")
        self.n_dims, self.n_points = int(n_dims), int(n_points)
        self.noise_variance, self.task_variance = float(noise_variance), float(task_variance)
        self.n_tasks, self.task_seed = n_tasks, int(task_seed)
        self.pool: torch.Tensor | None = None
        if n_tasks is not None:
            g = torch.Generator().manual_seed(self.task_seed)
            self.pool = torch.randn(n_tasks, self.n_dims, generator=g) * self.task_variance**0.5

    def sample(self, batch_size: int, generator: torch.Generator, distribution: str = "pretrain") -> Batch:
        """Draw ``batch_size`` sequences.

        Parameters
        ----------
        batch_size : int
        generator : torch.Generator
            Source of x, the noise and the task choice (the pool itself is fixed).
        distribution : {"pretrain", "true"}
            Tasks from the pool (uniformly, with replacement; Gaussian when M is infinite) or from N(0, tau^2 I).

        Returns
        -------
        Batch

        Raises
        ------
        InputValidationError
            On an unknown distribution.
        """
        if distribution not in DISTRIBUTIONS:
            raise InputValidationError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
        B, K, D = batch_size, self.n_points, self.n_dims
        if distribution == "pretrain" and self.pool is not None:
            ws = self.pool[torch.randint(len(self.pool), (B,), generator=generator)]
        else:
            ws = torch.randn(B, D, generator=generator) * self.task_variance**0.5
        xs = torch.randn(B, K, D, generator=generator)
        noise = torch.randn(B, K, generator=generator) * self.noise_variance**0.5
        ys = torch.einsum("bkd,bd->bk", xs, ws) + noise
        return Batch(xs, ys, ws)

    def __repr__(self) -> str:
        m = "inf" if self.n_tasks is None else self.n_tasks
        return (
            f"NoisyLinearRegression(D={self.n_dims}, K={self.n_points}, sigma^2={self.noise_variance}, M={m}, "
            f"task_seed={self.task_seed})"
        )
