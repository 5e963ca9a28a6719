"""The one interface of every in-context regression estimator (Raventos et al. 2023, Sec. 2-3).

An estimator maps a batch of sequences to a prediction of y_k at every position k from the context
S_k = (x_1, y_1, ..., x_{k-1}, y_{k-1}, x_k):

    predict(xs (B, K, D), ys (B, K)) -> (B, K)

It is causal: the prediction at position k depends on y_1..y_{k-1} and x_1..x_k only (y_k is never read).
Ridge regression, the discrete MMSE estimator and the trained transformer all implement it, so metrics,
sweeps and plots are written once (:mod:`dlscience.icl.metrics`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from dlscience.errors import InputValidationError

__all__ = ["ICLEstimator", "check_sequences"]


def check_sequences(xs: torch.Tensor, ys: torch.Tensor, n_dims: int | None = None) -> None:
    """Validate a batch: xs (B, K, D) and ys (B, K) floating tensors with matching B and K.

    Raises
    ------
    InputValidationError
        Naming the wrong shape or dtype.
    """
    if xs.ndim != 3 or ys.ndim != 2 or xs.shape[:2] != ys.shape:
        raise InputValidationError(
            f"expected xs (B, K, D) and ys (B, K), got {tuple(xs.shape)} and {tuple(ys.shape)}"
        )
    if not (xs.is_floating_point() and ys.is_floating_point()):
        raise InputValidationError(f"xs and ys must be floating point, got {xs.dtype} and {ys.dtype}")
    if n_dims is not None and xs.shape[2] != n_dims:
        raise InputValidationError(f"this estimator expects D = {n_dims}, got xs with D = {xs.shape[2]}")


class ICLEstimator(ABC):
    """An in-context regression estimator: ``predict(xs, ys) -> (B, K)`` predictions of y_k from S_k."""

    name: str = "estimator"

    @abstractmethod
    def predict(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Predict y_k at every position.

        Parameters
        ----------
        xs : Tensor (B, K, D) float
        ys : Tensor (B, K) float
            y_k at position k is not used for the prediction at k (causality).

        Returns
        -------
        Tensor (B, K) float32

        Raises
        ------
        InputValidationError
            On wrong shapes or dtypes.
        """
