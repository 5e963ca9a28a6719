"""The MLP nonlinearities phi of the block family, defined once for the theory and the networks.

Each function accepts a numpy array (or float) and returns numpy, or a torch tensor and returns torch, so the
maps' quadratures (:mod:`~dlscience.signal_propagation.maps`) and the random networks
(:mod:`~dlscience.signal_propagation.model`) evaluate the same formula:

* ``tanh``: phi(x) = tanh x, phi'(x) = sech^2 x;
* ``relu``: phi(x) = max(x, 0), phi'(x) = 1[x > 0];
* ``gelu``: phi(x) = x Phi(x) with Phi the standard normal CDF (the exact GELU), phi'(x) = Phi(x) + x N(x).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from scipy import special

from dlscience.errors import InputValidationError

__all__ = ["NONLINEARITIES", "phi", "phi_prime"]

NONLINEARITIES = ("tanh", "relu", "gelu")

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2 * math.pi)


def _is_torch(x) -> bool:
    return isinstance(x, torch.Tensor)


def _tanh(x):
    return torch.tanh(x) if _is_torch(x) else np.tanh(x)


def _sech2(x):
    return 1 / torch.cosh(x) ** 2 if _is_torch(x) else 1 / np.cosh(x) ** 2


def _relu(x):
    return torch.relu(x) if _is_torch(x) else np.maximum(x, 0.0)


def _step(x):
    return (x > 0).to(x.dtype) if _is_torch(x) else (np.asarray(x) > 0).astype(np.float64)


def _cdf(x):
    erf = torch.special.erf if _is_torch(x) else special.erf
    return 0.5 * (1 + erf(x / _SQRT2))


def _pdf(x):
    exp = torch.exp if _is_torch(x) else np.exp
    return exp(-0.5 * x**2) / _SQRT2PI


def _gelu(x):
    return x * _cdf(x)


def _gelu_prime(x):
    return _cdf(x) + x * _pdf(x)


_TABLE: dict[str, tuple[Callable, Callable]] = {
    "tanh": (_tanh, _sech2),
    "relu": (_relu, _step),
    "gelu": (_gelu, _gelu_prime),
}


def _lookup(name: str) -> tuple[Callable, Callable]:
    try:
        return _TABLE[name]
    except (KeyError, TypeError):
        raise InputValidationError(f"nonlinearity must be one of {NONLINEARITIES}, got {name!r}") from None


def phi(name: str) -> Callable:
    """The nonlinearity ``name`` as a function of a numpy array or a torch tensor (same type returned).

    Parameters
    ----------
    name : {"tanh", "relu", "gelu"}

    Returns
    -------
    callable
        Elementwise phi; differentiable by autograd on tensors.

    Raises
    ------
    InputValidationError
        For an unknown name.
    """
    return _lookup(name)[0]


def phi_prime(name: str) -> Callable:
    """The derivative phi' of the nonlinearity ``name`` (numpy or torch in, same type out).

    Raises
    ------
    InputValidationError
        For an unknown name.
    """
    return _lookup(name)[1]
