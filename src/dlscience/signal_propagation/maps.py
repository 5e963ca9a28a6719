"""Token-geometry maps, fixed points and exponents of deep random transformers (Cowsik, Nebabu, Qi & Ganguli
2024, Sec. 3; research note theory_transformers.md, paper 1, Sec. a', derived there and re-derived here).

State: n tokens with squared norm q d and pairwise dot products p d (a permutation-symmetric simplex), cosine
rho = p / q. After the pre-LN every token has squared norm d, so each branch sees only rho.

**Attention** (logits jointly Gaussian for large d with Cov(s_ij, s_kl) = sigma_A^2 C_ik C_jl, C the LN Gram
matrix with 1 on the diagonal and rho off it; A = softmax of each row):

    q1 = c_A^2 q + alpha_A^2 sigma_V^2 [rho + (1 - rho) S2(rho)],    S2  = E sum_j A_ij^2
    p1 = c_A^2 p + alpha_A^2 sigma_V^2 [rho + (1 - rho) S11(rho)],   S11 = E sum_j A_ij A_kj   (i != k)

S2 and S11 are computed by Monte Carlo over n x n Gaussian logit matrices with fixed draws (so the maps are
smooth, deterministic functions), or by their large-n forms exp(sigma_A^2 (1 - rho)) / n and
exp(sigma_A^2 rho (1 - rho)) / n.

**MLP** (dual kernel K(rho) = E[phi(u) phi(v)], (u, v) Gaussian with variance sigma_w^2 and correlation rho):

    q2 = c_M^2 q1 + alpha_M^2 K(1),    p2 = c_M^2 p1 + alpha_M^2 K(rho1),    rho1 = p1 / q1

ReLU: K(rho) = sigma_w^2 / (2 pi) [sin t + (pi - t) cos t], t = arccos rho. tanh, GELU: quadrature.

**Exponents.** Linearising 1 - rho at the collapsed state rho = 1 (attention is uniform there, so sigma_A drops
out), with chi = sigma_w^2 E[phi'(sigma_w z)^2]:

    angle exponent      lambda_a = log c_A^2 + log(c_M^2 + alpha_M^2 chi / q1*)
    gradient exponent   lambda_g = log(c_A^2 + alpha_A^2 sigma_V^2 / q*) + log(c_M^2 + alpha_M^2 chi / q1*)

where q* = (c_M^2 alpha_A^2 sigma_V^2 + alpha_M^2 K(1)) / (1 - c_A^2 c_M^2) is the collapsed fixed point of the
norm and q1* = c_A^2 q* + alpha_A^2 sigma_V^2. lambda_a is the growth rate of token differences (the modes
orthogonal to the token mean); lambda_g that of the token-mean mode, whose Jacobian picks up the attention
branch. The end-to-end Jacobian then has E|J|_F^2 / (n d) = (1/n) e^{L lambda_g} + (1 - 1/n) e^{L lambda_a}.
lambda_a < 0 is the ordered phase (tokens collapse, rho -> 1), lambda_a > 0 the chaotic phase (tokens settle
on a regular simplex rho* < 1). The gradient formula holds at the collapsed state, i.e. in the ordered phase.
Both are infinite-depth rates, and they satisfy the identity lambda_a = lambda_g + ln(c_A^2 q* / q1*), i.e.
lambda_g = ln[(c_M^2 q1* + alpha_M^2 chi) / (c_M^2 q1* + alpha_M^2 K(1))] (test_exponent_identity.py). The
paper's gradient exponent is measured at finite depth L and n tokens: see
:mod:`~dlscience.signal_propagation.finite_depth_gradient`, which also derives ``angle_exponent(..., mask="causal")``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from scipy import integrate, optimize, special

from dlscience.errors import InputValidationError
from dlscience.signal_propagation.model import SignalPropParams
from dlscience.signal_propagation.nonlinearities import phi, phi_prime

__all__ = [
    "attention_overlaps",
    "mlp_kernel",
    "mlp_chi",
    "block_map",
    "iterate_maps",
    "collapsed_fixed_point",
    "angle_exponent",
    "gradient_exponent",
    "jacobian_growth",
    "critical_sigma_w",
    "MapTrajectory",
]

_SQRT2PI = math.sqrt(2 * math.pi)


def _array(x, name: str, func: str) -> np.ndarray:
    """``x`` as a float64 array; torch tensors are refused (the maps are numpy functions)."""
    if isinstance(x, torch.Tensor):
        raise InputValidationError(
            f"{func}: {name} must be a float or a numpy array, got a torch.Tensor; convert with "
            f"{name}.detach().cpu().numpy()"
        )
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputValidationError(
            f"{func}: {name} must be a float or a numpy array of floats, got {type(x).__name__}"
        ) from None


def _check_params(params, func: str) -> None:
    if not isinstance(params, SignalPropParams):
        raise InputValidationError(f"{func}: params must be a SignalPropParams, got {type(params).__name__}")


# ------------------------------------------------------------------------------------------ attention


@lru_cache(maxsize=16)
def _logit_draws(n: int, n_samples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n_samples, n, n))


def attention_overlaps(
    rho, sigma_A: float, n: int, *, method: str = "monte-carlo", n_samples: int = 2000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """S2(rho) = E sum_j A_ij^2 and S11(rho) = E sum_j A_ij A_kj (i != k) of softmax attention.

    Parameters
    ----------
    rho : float or array
        Cosine between the LN'd tokens, in [-1/(n-1), 1].
    sigma_A : float
        Logit standard deviation.
    n : int
        Number of tokens (>= 2).
    method : {"monte-carlo", "asymptotic"}
        Fixed Gaussian draws (common random numbers; exact up to Monte Carlo error, deterministic), or the
        large-n forms exp(sigma_A^2 (1 - rho)) / n and exp(sigma_A^2 rho (1 - rho)) / n.
    n_samples, seed : int
        Draws of the n x n logit matrix.

    Returns
    -------
    S2, S11 : ndarray shaped like rho, float64
        Both equal 1/n at rho = 1 (uniform attention).
    """
    rho_arr = np.atleast_1d(_array(rho, "rho", "attention_overlaps"))
    if n < 2:
        raise InputValidationError(f"attention needs n >= 2 tokens, got {n}")
    if method == "asymptotic":
        s2 = np.exp(sigma_A**2 * (1 - rho_arr)) / n
        s11 = np.exp(sigma_A**2 * rho_arr * (1 - rho_arr)) / n
    elif method == "monte-carlo":
        z = _logit_draws(n, n_samples, seed)
        s2, s11 = np.empty_like(rho_arr), np.empty_like(rho_arr)
        off = ~np.eye(n, dtype=bool)
        for i, r in enumerate(rho_arr):
            r = min(1.0, max(r, -1.0 / (n - 1)))
            a, b = math.sqrt(max(1 - r, 0.0)), math.sqrt(max(1 - r + n * r, 0.0))
            c = (b - a) / n  # C^{1/2} = a I + c 11^T for C = (1 - rho) I + rho 11^T
            # logits sigma_A C^{1/2} Z C^{1/2}; terms constant along a row cancel in the softmax
            logits = sigma_A * (a * a * z + a * c * z.sum(axis=1, keepdims=True))
            A = special.softmax(logits, axis=-1)
            s2[i] = (A**2).sum(-1).mean()
            gram = A @ A.transpose(0, 2, 1)
            s11[i] = gram[:, off].mean()
    else:
        raise InputValidationError(f"method must be 'monte-carlo' or 'asymptotic', got {method!r}")
    shape = np.shape(rho)
    return s2.reshape(shape), s11.reshape(shape)


# ------------------------------------------------------------------------------------------ MLP kernels


def _gauss_1d(f) -> float:
    """E f(z), z ~ N(0, 1), by adaptive quadrature (accurate for the sharp sech^4 of large sigma_w)."""
    val, _ = integrate.quad(
        lambda z: f(z) * math.exp(-0.5 * z * z) / _SQRT2PI, -12, 12, limit=400, points=[0.0]
    )
    return val


@lru_cache(maxsize=256)
def _kernel_table(sigma_w: float, nonlinearity: str, n_grid: int = 600):
    """K(rho) on a grid of rho in [-1, 1] by 2-D Gauss-Legendre quadrature over z in [-9, 9]^2."""
    f = phi(nonlinearity)
    nodes, weights = np.polynomial.legendre.leggauss(n_grid)
    z, w = 9.0 * nodes, 9.0 * weights * np.exp(-0.5 * (9.0 * nodes) ** 2) / _SQRT2PI
    rhos = np.cos(np.linspace(np.pi, 0, 257))  # dense near rho = +-1
    fu = f(sigma_w * z)
    table = np.empty_like(rhos)
    for i, r in enumerate(rhos):
        v = sigma_w * (r * z[:, None] + math.sqrt(max(0.0, 1 - r * r)) * z[None, :])
        table[i] = (w * fu) @ (f(v) @ w)
    table[-1] = mlp_kernel_at_one(sigma_w, nonlinearity)
    return rhos, table


@lru_cache(maxsize=4096)
def mlp_kernel_at_one(sigma_w: float, nonlinearity: str = "tanh") -> float:
    """K(1) = E[phi(sigma_w z)^2]."""
    if nonlinearity == "relu":
        return sigma_w**2 / 2
    f = phi(nonlinearity)
    return _gauss_1d(lambda z: float(f(np.float64(sigma_w * z))) ** 2)


def mlp_kernel(rho, sigma_w: float, nonlinearity: str = "tanh") -> np.ndarray:
    """Dual kernel K(rho) = E[phi(u) phi(v)], u, v ~ N(0, sigma_w^2) with correlation rho; array like rho.

    ReLU in closed form (the arc-cosine kernel); tanh and GELU by quadrature on a rho grid, then cubic
    interpolation (error below 1e-6 in the tests).
    """
    rho = np.clip(_array(rho, "rho", "mlp_kernel"), -1.0, 1.0)
    if nonlinearity == "relu":
        t = np.arccos(rho)
        return sigma_w**2 / (2 * np.pi) * (np.sin(t) + (np.pi - t) * np.cos(t))
    from scipy.interpolate import CubicSpline

    rhos, table = _kernel_table(float(sigma_w), nonlinearity)
    return CubicSpline(rhos, table)(rho)


@lru_cache(maxsize=4096)
def mlp_chi(sigma_w: float, nonlinearity: str = "tanh") -> float:
    """chi = sigma_w^2 E[phi'(sigma_w z)^2] = K'(1): the MLP's gain on small token differences."""
    if nonlinearity == "relu":
        return sigma_w**2 / 2
    dphi = phi_prime(nonlinearity)
    return sigma_w**2 * _gauss_1d(lambda z: float(dphi(np.float64(sigma_w * z))) ** 2)


# ------------------------------------------------------------------------------------------ maps


def block_map(q, p, params: SignalPropParams, n: int, **attention_kw):
    """One block of the (q, p) maps.

    Parameters
    ----------
    q, p : float or array
        Squared norm / d and dot product / d of the tokens (q > 0, |p| <= q).
    params : SignalPropParams
    n : int
        Number of tokens.
    **attention_kw
        Passed to :func:`attention_overlaps` (``method``, ``n_samples``, ``seed``).

    Returns
    -------
    (q1, p1, q2, p2) : arrays
        After the attention sublayer and after the whole block.
    """
    _check_params(params, "block_map")
    q, p = _array(q, "q", "block_map"), _array(p, "p", "block_map")
    rho = p / q
    s2, s11 = attention_overlaps(rho, params.sigma_A, n, **attention_kw)
    aA = params.alpha_A**2 * params.sigma_V**2
    q1 = params.c_A**2 * q + aA * (rho + (1 - rho) * s2)
    p1 = params.c_A**2 * p + aA * (rho + (1 - rho) * s11)
    k1 = mlp_kernel_at_one(params.sigma_w, params.nonlinearity)
    q2 = params.c_M**2 * q1 + params.alpha_M**2 * k1
    p2 = params.c_M**2 * p1 + params.alpha_M**2 * mlp_kernel(p1 / q1, params.sigma_w, params.nonlinearity)
    return q1, p1, q2, p2


@dataclass
class MapTrajectory:
    """(q, rho) after each of L blocks (index 0 = input). Arrays of length L + 1, float64."""

    q: np.ndarray
    rho: np.ndarray


def iterate_maps(q0: float, rho0: float, params: SignalPropParams, n_layers: int, n: int, **attention_kw):
    """Iterate :func:`block_map` from (q0, rho0) for ``n_layers`` blocks; returns a :class:`MapTrajectory`.

    Raises
    ------
    InputValidationError
        If ``params`` is not a :class:`SignalPropParams` or q0 / rho0 is a torch tensor.
    """
    _check_params(params, "iterate_maps")
    q0, rho0 = float(_array(q0, "q0", "iterate_maps")), float(_array(rho0, "rho0", "iterate_maps"))
    q, p = [float(q0)], [float(q0 * rho0)]
    for _ in range(n_layers):
        _, _, q2, p2 = block_map(q[-1], p[-1], params, n, **attention_kw)
        q.append(float(q2))
        p.append(float(p2))
    q_arr = np.array(q)
    return MapTrajectory(q_arr, np.array(p) / q_arr)


# ------------------------------------------------------------------------------------------ exponents


def collapsed_fixed_point(params: SignalPropParams) -> tuple[float, float]:
    """(q*, q1*): the norm at the collapsed state rho = 1 after a block and after its attention sublayer.

    Raises
    ------
    InputValidationError
        With identity residuals (the norm grows without bound, no fixed point) or alpha_A = alpha_M = 0.
    """
    _check_params(params, "collapsed_fixed_point")
    if params.residual != "complementary":
        raise InputValidationError(
            "identity residuals have no norm fixed point; use layer_factors along a map trajectory instead"
        )
    denom = 1 - params.c_A**2 * params.c_M**2
    if denom <= 0:
        raise InputValidationError("alpha_A = alpha_M = 0 is the identity network: no fixed point")
    k1 = mlp_kernel_at_one(params.sigma_w, params.nonlinearity)
    q_star = (params.c_M**2 * params.alpha_A**2 * params.sigma_V**2 + params.alpha_M**2 * k1) / denom
    return q_star, params.c_A**2 * q_star + params.alpha_A**2 * params.sigma_V**2


def layer_factors(q: float, params: SignalPropParams) -> tuple[float, float]:
    """Squared-norm gains of one block at the collapsed state with input norm q:
    (orthogonal modes c_A^2 (c_M^2 + alpha_M^2 chi / q1), mean mode (c_A^2 + alpha_A^2 sigma_V^2 / q)(...))."""
    q1 = params.c_A**2 * q + params.alpha_A**2 * params.sigma_V**2
    mlp = params.c_M**2 + params.alpha_M**2 * mlp_chi(params.sigma_w, params.nonlinearity) / q1
    return params.c_A**2 * mlp, (params.c_A**2 + params.alpha_A**2 * params.sigma_V**2 / q) * mlp


def angle_exponent(params: SignalPropParams, mask: str = "bidirectional") -> float:
    """lambda_a: growth rate per block of token differences (1 - rho) at the collapsed fixed point.

    Parameters
    ----------
    params : SignalPropParams
        Complementary residuals (the collapsed fixed point must exist).
    mask : {"bidirectional", "causal"}
        Bidirectional attention (the paper's): lambda_a = log c_A^2 + log(c_M^2 + alpha_M^2 chi / q1*).
        Causal attention (token i averages tokens 1..i at the collapsed state): the difference of the first two
        tokens keeps half its value through the attention branch, so
        lambda_a = log(c_A^2 + alpha_A^2 sigma_V^2 / (4 q*)) + log(c_M^2 + alpha_M^2 chi / q1*), for any n >= 2
        (derived in :mod:`~dlscience.signal_propagation.finite_depth_gradient`).

    Returns
    -------
    float
        -inf for bidirectional attention with alpha_A = 1 (one attention layer collapses the tokens).

    Raises
    ------
    InputValidationError
        Identity residuals or alpha_A = alpha_M = 0 (no fixed point), or an unknown mask.
    """
    if mask not in ("bidirectional", "causal"):
        raise InputValidationError(f"angle_exponent: mask must be 'bidirectional' or 'causal', got {mask!r}")
    q_star, q1_star = collapsed_fixed_point(params)
    mlp_gain = params.c_M**2 + params.alpha_M**2 * mlp_chi(params.sigma_w, params.nonlinearity) / q1_star
    kept = params.c_A**2  # fraction of a token difference the attention sublayer keeps (bidirectional)
    if mask == "causal":
        kept += params.alpha_A**2 * params.sigma_V**2 / (4 * q_star)
    g = kept * mlp_gain
    return math.log(g) if g > 0 else -math.inf


def gradient_exponent(params: SignalPropParams) -> float:
    """lambda_g: growth rate of the token-mean mode of the input-output Jacobian at the collapsed state."""
    q_star, _ = collapsed_fixed_point(params)
    _, g = layer_factors(q_star, params)
    return math.log(g) if g > 0 else -math.inf


def jacobian_growth(params: SignalPropParams, n: int, n_layers: int) -> float:
    """Predicted (1/L) log(E|J|_F^2 / (n d)) for L blocks at the collapsed state:
    (1/L) log((1/n) e^{L lambda_g} + (1 - 1/n) e^{L lambda_a})."""
    la, lg = angle_exponent(params), gradient_exponent(params)
    L = n_layers
    terms = [math.log(1 / n) + L * lg]
    if n > 1 and la > -math.inf:
        terms.append(math.log(1 - 1 / n) + L * la)
    return float(special.logsumexp(terms)) / L


def critical_sigma_w(
    alpha: float,
    nonlinearity: str = "tanh",
    sigma_A: float = 1.0,
    hi: float = 20.0,
    mask: str = "bidirectional",
) -> float:
    """sigma_w at the edge of chaos (lambda_a = 0 for the attention ``mask``) for alpha_A = alpha_M = alpha; nan
    if none below ``hi``."""

    def f(s):
        return angle_exponent(SignalPropParams(alpha, alpha, sigma_A, s, nonlinearity=nonlinearity), mask)

    lo = 1e-3
    if f(lo) > 0 or f(hi) < 0:
        return math.nan
    return optimize.brentq(f, lo, hi, xtol=1e-6)
