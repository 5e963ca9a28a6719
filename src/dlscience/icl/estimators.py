"""The one interface of every in-context regression estimator (Raventos et al. 2023, Sec. 2-3).

An estimator maps a batch of sequences to a prediction of y_k at every position k from the context
S_k = (x_1, y_1, ..., x_{k-1}, y_{k-1}, x_k):

    predict(xs (B, K, D), ys (B, K)) -> (B, K)

It is causal: the prediction at position k depends on y_1..y_{k-1} and x_1..x_k only (y_k is never read).
Ridge regression, the discrete MMSE estimator and the trained transformer all implement it, so metrics,
sweeps and plots are written once (:mod:`dlscience.icl.metrics`).

The public :meth:`ICLEstimator.predict` is a template method, as ``Denoiser.denoise`` is for the denoisers: it
validates its inputs once (:func:`check_sequences`) and hands trusted tensors to the subclass's
:meth:`ICLEstimator._predict`. The Bayes estimators (ridge, dMMSE) are :class:`PosteriorMeanEstimator`: they
compute a posterior mean w_hat_k of the task at every position and predict y_hat_k = w_hat_k^T x_k.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from dlscience.errors import InputValidationError

__all__ = ["ICLEstimator", "PosteriorMeanEstimator", "check_sequences", "require_tensor"]


def require_tensor(value, arg: str, shape: str, owner: str) -> None:
    """Refuse anything but a torch tensor for argument ``arg`` of ``owner``.

    Parameters
    ----------
    value : object
        The argument.
    arg : str
        Its name (``"xs"``).
    shape : str
        The expected shape, for the message (``"(B, K, D)"``).
    owner : str
        The function or method, for the message (``"Ridge.predict"``).

    Raises
    ------
    InputValidationError
        Naming the argument and, for a numpy array, the conversion ``torch.from_numpy``.
    """
    if isinstance(value, torch.Tensor):
        return
    kind = f"{type(value).__module__}.{type(value).__name__}".removeprefix("builtins.")
    fix = f"; convert it with torch.from_numpy({arg})" if type(value).__module__ == "numpy" else ""
    raise InputValidationError(f"{owner}: {arg} must be a torch.Tensor of shape {shape}, got {kind}{fix}")


def check_sequences(
    xs: torch.Tensor,
    ys: torch.Tensor,
    n_dims: int | None = None,
    *,
    max_points: int | None = None,
    owner: str = "predict",
) -> None:
    """Validate a batch: xs (B, K, D) and ys (B, K) finite floating tensors with matching B and K.

    Parameters
    ----------
    xs : Tensor (B, K, D) float
    ys : Tensor (B, K) float
    n_dims : int, optional
        The D the estimator needs (None: any).
    max_points : int, optional
        The longest K the estimator takes (None: any).
    owner : str
        Named in the messages (``"DiscreteMMSE.predict"``).

    Raises
    ------
    InputValidationError
        Naming the argument and the wrong type, shape, dtype or values.
    """
    require_tensor(xs, "xs", "(B, K, D)", owner)
    require_tensor(ys, "ys", "(B, K)", owner)
    if xs.ndim != 3 or ys.ndim != 2 or xs.shape[:2] != ys.shape:
        raise InputValidationError(
            f"{owner}: expected xs (B, K, D) and ys (B, K), got {tuple(xs.shape)} and {tuple(ys.shape)}"
        )
    if not (xs.is_floating_point() and ys.is_floating_point()):
        raise InputValidationError(
            f"{owner}: xs and ys must be floating point, got {xs.dtype} and {ys.dtype}; convert with .float()"
        )
    if n_dims is not None and xs.shape[2] != n_dims:
        raise InputValidationError(
            f"{owner}: this estimator expects D = {n_dims}, got xs with D = {xs.shape[2]}"
        )
    if max_points is not None and xs.shape[1] > max_points:
        raise InputValidationError(
            f"{owner}: this estimator has positions for K <= {max_points}, got K = {xs.shape[1]}"
        )
    if not (torch.isfinite(xs).all() and torch.isfinite(ys).all()):
        raise InputValidationError(f"{owner}: xs or ys contains NaN or infinite values")


class ICLEstimator(ABC):
    """An in-context regression estimator: ``predict(xs, ys) -> (B, K)`` predictions of y_k from S_k.

    Subclasses set :attr:`name`, optionally :attr:`n_dims` (the D they need) and :attr:`max_points` (the
    longest K they take), and implement :meth:`_predict`, which receives validated inputs.
    """

    name: str = "estimator"
    n_dims: int | None = None
    max_points: int | None = None

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
            On a numpy array or other non-tensor (naming ``torch.from_numpy``), wrong shapes or dtypes, a D other
            than :attr:`n_dims`, K above :attr:`max_points`, or non-finite values.
        """
        self._validate(xs, ys, "predict")
        return self._predict(xs, ys)

    @abstractmethod
    def _predict(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Compute the (B, K) float32 predictions from validated inputs (see :meth:`predict`)."""

    def _validate(self, xs, ys, method: str) -> None:
        """Check a batch for ``method`` (see :func:`check_sequences`)."""
        check_sequences(
            xs, ys, self.n_dims, max_points=self.max_points, owner=f"{type(self).__name__}.{method}"
        )


class PosteriorMeanEstimator(ICLEstimator):
    """An estimator that predicts with a posterior mean of the task: y_hat_k = w_hat_k^T x_k (ridge, dMMSE).

    Subclasses implement :meth:`_weights` on validated inputs; :meth:`weights` and :meth:`predict` validate.
    """

    def weights(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """w_hat_k for every position: xs (B, K, D), ys (B, K) -> (B, K, D) float64.

        Raises
        ------
        InputValidationError
            As :meth:`ICLEstimator.predict`.
        """
        self._validate(xs, ys, "weights")
        return self._weights(xs, ys)

    @abstractmethod
    def _weights(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """w_hat_k, (B, K, D) float64, from validated inputs."""

    def _predict(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """y_hat_k = w_hat_k^T x_k, (B, K) float32."""
        return (self._weights(xs, ys) * xs.double()).sum(-1).float()
