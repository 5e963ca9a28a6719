"""Monte Carlo counterparts of the maps and exponents, measured in finite random transformers (in the manner of
neural-tangents' ``monte_carlo_kernel_fn``; Cowsik et al. 2024, Sec. 4; research note paper 1, Sec. a and b).

* :func:`simulate_geometry` -- token Gram statistics (q, rho) layer by layer, mean and standard error over
  independent networks;
* :func:`angle_exponent_mc` -- lambda_a from one block applied to a simplex at rho = 0.999 and the collapsed
  norm q*: log[(1 - rho') / (1 - rho)]. (The research note's rho = 0.99 is a finite step that biases the
  estimate by up to 0.06 in the chaotic phase, where the map curves; the maps' own finite difference shows the
  same bias. Finite-width noise in 1 - rho' is relative, so a smaller step costs no precision.)
* :func:`gradient_exponent_mc` -- (1/L) log(|J|_F^2 / (n d)) of the input-output Jacobian, with
  |J|_F^2 = E_R |grad_X0 <X_L, R>|^2 over Gaussian probes R.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from dlscience.errors import InputValidationError
from dlscience.signal_propagation.maps import collapsed_fixed_point
from dlscience.signal_propagation.model import RandomTransformer, SignalPropParams

__all__ = [
    "simplex_tokens",
    "gram_stats",
    "simulate_geometry",
    "angle_exponent_mc",
    "gradient_exponent_mc",
    "MCEstimate",
    "format_estimate",
]


@dataclass
class MCEstimate:
    """A Monte Carlo estimate: mean and standard error over ``n`` independent draws."""

    mean: float
    sem: float
    n: int

    def to_json(self) -> dict:
        """JSON-ready content (``sem`` is None, JSON null, for a single draw)."""
        return {"mean": self.mean, "sem": self.sem if self.n > 1 else None, "n": self.n}

    def format(self, spec: str = ".3f") -> str:
        """``"mean +- sem"``, with ``n/a`` for the spread of a single draw (there is none)."""
        return format_estimate(self.mean, self.sem if self.n > 1 else None, spec)


def format_estimate(mean: float, sem: float | None, spec: str = ".3f") -> str:
    """``"mean +- sem"`` for a table; a missing or undefined spread (one network: None or NaN) prints ``n/a``.

    Parameters
    ----------
    mean : float
    sem : float or None
    spec : str
        Format spec of the mean (e.g. ``"+.3f"``); the spread is printed with the same precision, unsigned.
    """
    spread = "n/a" if sem is None or not math.isfinite(sem) else format(sem, spec.replace("+", ""))
    return f"{format(mean, spec)} +- {spread}"


def _estimate(values) -> MCEstimate:
    v = np.asarray(values, dtype=np.float64)
    sem = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return MCEstimate(float(v.mean()), sem, len(v))


def _check_draws(params, n_networks: int, func: str) -> None:
    if not isinstance(params, SignalPropParams):
        raise InputValidationError(f"{func}: params must be a SignalPropParams, got {type(params).__name__}")
    if isinstance(n_networks, bool) or not isinstance(n_networks, int | np.integer) or n_networks < 1:
        raise InputValidationError(f"{func}: n_networks must be an integer >= 1, got {n_networks!r}")


def _network(params, k: int, *, seed: int, n: int, d: int, q: float, rho: float, n_layers: int):
    """Draw k of a Monte Carlo estimate: simplex tokens (n, d) float64, a float64 network of ``n_layers``
    blocks, and the generator that drew the tokens (seeded ``seed * 1000 + k``)."""
    g = torch.Generator().manual_seed(seed * 1000 + k)
    x = simplex_tokens(n, d, q, rho, g)
    return x, RandomTransformer(d, n_layers, params, seed=seed * 1000 + k).double(), g


def simplex_tokens(n: int, d: int, q: float, rho: float, generator: torch.Generator) -> torch.Tensor:
    """n tokens in R^d with squared norm q d and pairwise cosine exactly rho (a random regular simplex):
    x_i = sqrt(q d) (sqrt(rho) e_0 + sqrt(1 - rho) e_i) for random orthonormal e_0..e_n. Returns (n, d) float64.

    Raises
    ------
    InputValidationError
        If rho is outside [0, 1], q <= 0, or d < n + 1.
    """
    if not isinstance(generator, torch.Generator):
        raise InputValidationError(
            f"simplex_tokens: generator must be a torch.Generator, got {type(generator).__name__}"
        )
    if not 0 <= rho <= 1 or q <= 0 or d < n + 1:
        raise InputValidationError(
            f"need 0 <= rho <= 1, q > 0 and d >= n + 1, got rho={rho}, q={q}, d={d}, n={n}"
        )
    e, _ = torch.linalg.qr(torch.randn(d, n + 1, generator=generator, dtype=torch.float64))
    e = e.T
    return math.sqrt(q * d) * (math.sqrt(rho) * e[0] + math.sqrt(1 - rho) * e[1:])


def gram_stats(x: torch.Tensor) -> tuple[float, float]:
    """(q, rho) of tokens x (n, d): mean squared norm / d and mean pairwise cosine.

    Raises
    ------
    InputValidationError
        If ``x`` is not a torch tensor of shape (n, d) with n >= 2 (numpy arrays are refused).
    """
    if not isinstance(x, torch.Tensor):
        raise InputValidationError(
            f"gram_stats: x must be a torch.Tensor (n, d), got {type(x).__name__}; convert with "
            "torch.as_tensor(x)"
        )
    if x.dim() != 2 or x.shape[0] < 2:
        raise InputValidationError(f"gram_stats: x must have shape (n, d) with n >= 2, got {tuple(x.shape)}")
    n, d = x.shape
    g = (x @ x.T).double()
    q = float(g.diagonal().mean() / d)
    norms = g.diagonal().sqrt()
    cos = g / (norms[:, None] * norms[None, :])
    rho = float(cos[~torch.eye(n, dtype=torch.bool)].mean())
    return q, rho


def simulate_geometry(
    params: SignalPropParams,
    *,
    n: int = 16,
    d: int = 1024,
    n_layers: int = 30,
    q0: float = 1.0,
    rho0: float = 0.3,
    n_networks: int = 4,
    seed: int = 0,
) -> dict:
    """(q, rho) per layer in finite random networks started from a simplex (q0, rho0).

    Returns
    -------
    dict
        ``q``, ``rho``: lists of :class:`MCEstimate` (L + 1 entries, index 0 = input); settings.

    Raises
    ------
    InputValidationError
        If ``n_networks`` < 1, or the simplex is impossible (see :func:`simplex_tokens`).
    """
    _check_draws(params, n_networks, "simulate_geometry")
    qs, rhos = [], []
    for k in range(n_networks):
        x, net, _ = _network(params, k, seed=seed, n=n, d=d, q=q0, rho=rho0, n_layers=n_layers)
        with torch.no_grad():
            states = net(x, return_all=True)
        stats = [gram_stats(s) for s in states]
        qs.append([s[0] for s in stats])
        rhos.append([s[1] for s in stats])
    qs, rhos = np.array(qs), np.array(rhos)
    return {
        "q": [_estimate(qs[:, i]) for i in range(n_layers + 1)],
        "rho": [_estimate(rhos[:, i]) for i in range(n_layers + 1)],
        "settings": {"n": n, "d": d, "n_layers": n_layers, "q0": q0, "rho0": rho0, "n_networks": n_networks},
    }


def angle_exponent_mc(
    params: SignalPropParams,
    *,
    n: int = 16,
    d: int = 512,
    rho: float = 0.999,
    n_networks: int = 20,
    seed: int = 0,
) -> MCEstimate:
    """lambda_a from one block: log[(1 - rho') / (1 - rho)] for a simplex at cosine ``rho`` and the collapsed
    norm q* (q = 1 for identity residuals), averaged over ``n_networks`` random blocks.

    Raises
    ------
    InputValidationError
        If ``n_networks`` < 1.
    """
    _check_draws(params, n_networks, "angle_exponent_mc")
    q = collapsed_fixed_point(params)[0] if params.residual == "complementary" else 1.0
    vals = []
    for k in range(n_networks):
        x, block, _ = _network(params, k, seed=seed, n=n, d=d, q=q, rho=rho, n_layers=1)
        with torch.no_grad():
            _, rho1 = gram_stats(block(x))
        _, rho0 = gram_stats(x)
        vals.append(math.log((1 - rho1) / (1 - rho0)))
    return _estimate(vals)


def gradient_exponent_mc(
    params: SignalPropParams,
    *,
    n: int = 16,
    d: int = 512,
    n_layers: int = 12,
    rho0: float = 1.0,
    n_networks: int = 8,
    n_probes: int = 4,
    seed: int = 0,
) -> MCEstimate:
    """(1/L) log(|J|_F^2 / (n d)) of L random blocks at a simplex input (default: the collapsed state at q*),
    with |J|_F^2 estimated by Gaussian probes R as E_R |grad_X0 <X_L, R>|^2.

    Compare with :func:`~dlscience.signal_propagation.maps.jacobian_growth` (same L and n).

    Raises
    ------
    InputValidationError
        If ``n_networks`` < 1.
    """
    _check_draws(params, n_networks, "gradient_exponent_mc")
    q = collapsed_fixed_point(params)[0] if params.residual == "complementary" else 1.0
    vals = []
    for k in range(n_networks):
        x0, net, g = _network(params, k, seed=seed, n=n, d=d, q=q, rho=rho0, n_layers=n_layers)
        x0.requires_grad_(True)
        out = net(x0)
        sq = 0.0
        for _ in range(n_probes):
            r = torch.randn(out.shape, generator=g, dtype=torch.float64)
            (grad,) = torch.autograd.grad((out * r).sum(), x0, retain_graph=True)
            sq += float((grad**2).sum()) / n_probes
        vals.append(math.log(sq / (n * d)) / n_layers)
    return _estimate(vals)
