"""The discrete minimum-mean-squared-error estimator (Raventos et al. 2023, Eq. 2): the Bayes estimator for
the pretraining distribution, uniform over the task pool {w^(1), ..., w^(M)}.

    w_hat_k = sum_i softmax_i( -(1 / (2 sigma^2)) sum_{j<k} (y_j - w^(i)T x_j)^2 ) w^(i),   y_hat_k = w_hat_k^T x_k

(w_hat_1 = the pool mean). The log-likelihoods reach -10^2 to -10^3, so the softmax is taken in log space
(check 6 of the research note); the work is chunked over the batch so memory stays under ``max_elements``.
"""

from __future__ import annotations

import torch

from dlscience.errors import InputValidationError
from dlscience.icl.estimators import PosteriorMeanEstimator, require_tensor

__all__ = ["DiscreteMMSE"]


class DiscreteMMSE(PosteriorMeanEstimator):
    """Posterior mean of w under the uniform prior on a finite pool (Eq. 2).

    Parameters
    ----------
    pool : Tensor (M, D)
        The pretraining tasks (``NoisyLinearRegression.pool``).
    noise_variance : float
        sigma^2 (> 0).
    max_elements : int
        Bound on B_chunk * K * M float64 values held at once (default 2^24, 128 MiB).

    Raises
    ------
    InputValidationError
        If the pool is not (M, D) or sigma^2 <= 0.
    """

    name = "dmmse"

    def __init__(self, pool: torch.Tensor, noise_variance: float = 0.25, max_elements: int = 1 << 24):
        if pool is not None:
            require_tensor(pool, "pool", "(M, D)", "DiscreteMMSE")
        if pool is None or pool.ndim != 2 or len(pool) < 1:
            raise InputValidationError(
                "dMMSE needs a finite task pool of shape (M, D) (M = infinity has none)"
            )
        if noise_variance <= 0:
            raise InputValidationError(f"dMMSE needs noise_variance > 0, got {noise_variance}")
        self.pool = pool.double()
        self.n_dims = self.pool.shape[1]
        self.noise_variance = float(noise_variance)
        self.max_elements = int(max_elements)

    def _weights(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """w_hat_k = softmax over the pool of the log-likelihoods of y_1..y_{k-1} (Eq. 2), in chunks."""
        B, K, _ = xs.shape
        M = len(self.pool)
        chunk = max(1, self.max_elements // (K * M))
        out = []
        for a in range(0, B, chunk):
            x, y = xs[a : a + chunk].double(), ys[a : a + chunk].double()
            sq = (y[..., None] - x @ self.pool.T) ** 2  # (b, K, M)
            log_lik = -(torch.cumsum(sq, dim=1) - sq) / (2 * self.noise_variance)  # sum over j < k
            out.append(torch.softmax(log_lik, dim=-1) @ self.pool)
        return torch.cat(out)
