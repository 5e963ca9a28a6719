"""Ridge regression in context, the Bayes estimator for a Gaussian task prior (Raventos et al. 2023, Eq. 3).

At position k, from the k - 1 earlier pairs X = (x_1..x_{k-1}), y = (y_1..y_{k-1}):

    w_hat_k = (X^T X + lambda I)^{-1} X^T y,    lambda = sigma^2 / tau^2,    y_hat_k = w_hat_k^T x_k

(w_hat_1 = 0). With w ~ N(0, tau^2 I) this is the posterior mean, and its error against the noiseless target
has, for fixed X, the closed form (research note paper 2, Sec. d, check 3)

    E[(y_hat_k - w^T x_k)^2 | X, x_k] = x_k^T Sigma_k x_k,    Sigma_k = sigma^2 (X^T X + lambda I)^{-1},

so the per-position Bayes risk divided by D is E_X[tr Sigma_k] / D (for tau^2 = 1).
"""

from __future__ import annotations

import torch

from dlscience.icl.estimators import PosteriorMeanEstimator, require_tensor

__all__ = ["Ridge", "ridge_posterior_covariance", "ridge_risk"]


def _prefix_moments(xs: torch.Tensor, ys: torch.Tensor):
    """Exclusive prefix sums: A_k = sum_{j<k} x_j x_j^T (B, K, D, D) and b_k = sum_{j<k} y_j x_j (B, K, D)."""
    outer = xs[..., :, None] * xs[..., None, :]
    A = torch.cumsum(outer, dim=1) - outer
    xy = xs * ys[..., None]
    b = torch.cumsum(xy, dim=1) - xy
    return A, b


class Ridge(PosteriorMeanEstimator):
    """Ridge regression on each prefix, batched over positions (Eq. 3).

    Parameters
    ----------
    noise_variance : float
        sigma^2 (paper 0.25).
    task_variance : float
        tau^2 (paper 1); lambda = sigma^2 / tau^2. With sigma^2 = 0 this is minimum-norm least squares in the
        limit, computed with lambda = 1e-12.
    """

    name = "ridge"

    def __init__(self, noise_variance: float = 0.25, task_variance: float = 1.0):
        self.noise_variance, self.task_variance = float(noise_variance), float(task_variance)
        self.lam = max(self.noise_variance / self.task_variance, 1e-12)

    def _weights(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """w_hat_k = (A_k + lambda I)^{-1} b_k from the exclusive prefix moments; w_hat_1 = 0."""
        xs, ys = xs.double(), ys.double()
        A, b = _prefix_moments(xs, ys)
        eye = torch.eye(xs.shape[-1], dtype=torch.float64)
        return torch.linalg.solve(A + self.lam * eye, b)


def ridge_posterior_covariance(xs: torch.Tensor, noise_variance: float = 0.25, task_variance: float = 1.0):
    """Posterior covariance of w at every position: Sigma_k = (X^T X / sigma^2 + I / tau^2)^{-1},
    (B, K, D, D) float64 from xs (B, K, D) (a torch tensor; anything else raises InputValidationError)."""
    require_tensor(xs, "xs", "(B, K, D)", "ridge_posterior_covariance")
    xs = xs.double()
    outer = xs[..., :, None] * xs[..., None, :]
    A = torch.cumsum(outer, dim=1) - outer
    eye = torch.eye(xs.shape[-1], dtype=torch.float64)
    return torch.linalg.inv(A / noise_variance + eye / task_variance)


def ridge_risk(
    n_dims: int = 8,
    n_points: int = 16,
    noise_variance: float = 0.25,
    n_samples: int = 20000,
    seed: int = 0,
) -> torch.Tensor:
    """Bayes risk of ridge per position, divided by D, against the noiseless target:
    E_X[tr Sigma_k] / D for tau^2 = 1 (Monte Carlo over X only; the inner expectation is exact).

    Returns
    -------
    Tensor (K,) float64
        Position 1 gives exactly 1; D = 8, K = 16, sigma^2 = 0.25 gives 1.000, 0.880, ..., 0.038 (the research
        note's table, mean 0.345).
    """
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(n_samples, n_points, n_dims, generator=g, dtype=torch.float64)
    cov = ridge_posterior_covariance(xs, noise_variance)
    return cov.diagonal(dim1=-2, dim2=-1).sum(-1).mean(0) / n_dims
