"""Stochastic collapse in solvable models: the attractivity condition and three examples, each with its
simulation behind the same call (Chen, Kunin, Yamamura & Ganguli, "Stochastic collapse", NeurIPS 2023, arXiv
2306.04251; research note theory_dynamics.md, paper 3 Sec. a, checks 3-6).

Symbols (paper -> here)
-----------------------
* SGD as an SDE, 1-D: d theta = -L'(theta) dt + sqrt(2 D(theta)) dB, D = (eta / 2) Var[stochastic gradient].
  An invariant point theta = 0 (L'(0) = 0, D(0) = 0) is **stochastically attractive iff
  L''(0) + D''(0) / 2 > 0** (:func:`attractivity_margin`). Derivation (the note's, via Ito on log|theta|): with
  sqrt(2 D) ~ s theta near 0, d log|theta| = (-L''(0) - s^2 / 2) dt + s dB and D''(0) = s^2, so log|theta| drifts
  to -infinity iff L''(0) + D''(0)/2 > 0: curvature (possibly negative: a saddle or maximum) against noise
  curvature. The drift -L''(0) - D''(0)/2 is the Lyapunov exponent lambda of the origin.
* **Quartic well** (Fig. 1): d theta = -(theta^3 - mu theta) dt + zeta theta dB, i.e. L = theta^4/4 - mu theta^2/2
  (L''(0) = -mu) and D = zeta^2 theta^2 / 2 (D''(0) = zeta^2): collapse iff zeta^2 > 2 mu, zeta_c = sqrt(2 mu);
  lambda = mu - zeta^2 / 2 (:class:`QuarticWell`).
* **tanh neuron** (Fig. 2): f(x) = w2 tanh(w1 x), full-batch gradient descent on the summed square loss
  L = 1/2 sum_k (y_k + zeta xi_k - f(x_k))^2 with fresh label noise xi ~ N(0, 1) every step (label-noise SGD of
  strength zeta). Near the origin the balanced mode p = w1 + w2 grows by the factor 1 + eta s (Sxy + zeta nu),
  nu ~ N(0, Sxx), s = sigma'(0) = 1, so E log growth = eta s Sxy - (eta s zeta)^2 Sxx / 2: the origin (a saddle
  when Sxy > 0) is attractive iff **eta zeta^2 sigma'(0) / 2 > Sxy / Sxx** (:class:`TanhNeuron`).
* **Diagonal linear teacher-student** (Sec. 4.2): inputs X (N, n) with orthonormal columns, a rank-r teacher
  W* (m, n), labels Y = X W*^T + label noise; the least-squares target M = Y^T X has singular values s*_i, and
  the SVD-aligned diagonal student W = U diag(u_i v_i) V^T learns each mode on its own. Injected label noise of
  strength sigma adds sigma xi_i to mode i's residual: u_i <- u_i - eta (u_i v_i - s*_i - sigma xi_i) v_i (and v
  alike). E[s_i] lies between logistic curves with targets s*_i and s*_i - eta sigma^2 / 2, so the final
  **s_i ~ max(s*_i - eta sigma^2 / 2, 0)**: modes with s*_i < eta sigma^2 / 2 collapse, which removes the
  small noise modes first and lowers the test error (:class:`DiagonalTeacherStudent`).

Measuring collapse at a finite time. Near zeta_c the exponent lambda is near 0, so "theta_T^2 < 1e-30" needs
T ~ 69 / |lambda| to tell collapse apart (the note's check at T = 25 crosses 0.5 near zeta = 2.4 for
zeta_c = 1.73). :meth:`QuarticWell.collapse_probability` therefore estimates P(lambda_hat < -kappa) with the
finite-time exponent lambda_hat = log(|theta_T| / |theta_0|) / T and a small margin kappa: it tends to 1 for
zeta^2 > 2 (mu + kappa) and to 0 below as T grows, so its 0.5 crossing tends to sqrt(2 (mu + kappa)) -> zeta_c
(1.76 for mu = 1.5, kappa = 0.05); at T = 400 the stationary mass of log|theta| below -kappa T just under zeta_c
pulls it down, to 1.731 (measured, 1000 paths). The fixed-threshold estimate is there too
(``criterion="threshold"``).

All simulations are Euler-Maruyama in float64, vectorised over paths (numpy; seeded ``numpy.random.Generator``);
the multiplicative update of the quartic well and the tanh neuron is accumulated in log|theta| so that a
collapsing path never underflows to exactly 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dlscience.errors import InputValidationError

__all__ = [
    "attractivity_margin",
    "is_attractive",
    "QuarticWell",
    "TanhNeuron",
    "DiagonalTeacherStudent",
    "crossing",
]


def attractivity_margin(
    loss: Callable[[np.ndarray], np.ndarray] | float,
    diffusion: Callable[[np.ndarray], np.ndarray] | float,
    *,
    theta0: float = 0.0,
    h: float = 1e-3,
) -> float:
    """L''(theta0) + D''(theta0) / 2: positive iff the invariant point ``theta0`` is stochastically attractive.

    Parameters
    ----------
    loss, diffusion : callable (array -> array) or float
        L(theta) and D(theta) (second derivatives by central differences of step ``h``), or the numbers
        L''(theta0) and D''(theta0) themselves.
    theta0 : float
        The invariant point (L'(theta0) = 0, D(theta0) = 0 are assumed, not checked).
    h : float
        Finite-difference step.

    Returns
    -------
    float
        The margin; its negative is the Lyapunov exponent of log|theta - theta0|.
    """

    def second(f):
        if callable(f):
            x = np.array([theta0 - h, theta0, theta0 + h], dtype=np.float64)
            y = np.asarray(f(x), dtype=np.float64)
            return float((y[0] - 2 * y[1] + y[2]) / h**2)
        return float(f)

    return second(loss) + 0.5 * second(diffusion)


def is_attractive(loss, diffusion, **kw) -> bool:
    """``attractivity_margin(loss, diffusion) > 0`` (see :func:`attractivity_margin`)."""
    return attractivity_margin(loss, diffusion, **kw) > 0


def crossing(x, y, level: float = 0.5) -> float | None:
    """The first x where the piecewise-linear curve y(x) crosses ``level`` upwards (None if it never does)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    for i in range(len(x) - 1):
        if y[i] < level <= y[i + 1]:
            return float(x[i] + (level - y[i]) * (x[i + 1] - x[i]) / (y[i + 1] - y[i]))
    return float(x[0]) if len(y) and y[0] >= level else None


@dataclass(frozen=True)
class QuarticWell:
    """d theta = -(theta^3 - mu theta) dt + zeta theta dB (paper Fig. 1).

    Parameters
    ----------
    mu : float > 0
        Depth of the double well (minima at +-sqrt(mu); the origin is a maximum of L).
    """

    mu: float = 1.5

    @property
    def zeta_c(self) -> float:
        """The critical noise sqrt(2 mu)."""
        return math.sqrt(2 * self.mu)

    def margin(self, zeta) -> np.ndarray:
        """L''(0) + D''(0)/2 = -mu + zeta^2 / 2 (> 0: the origin attracts)."""
        return -self.mu + 0.5 * np.asarray(zeta, dtype=float) ** 2

    def lyapunov(self, zeta) -> np.ndarray:
        """Theory exponent of log|theta| at the origin: mu - zeta^2 / 2."""
        return -self.margin(zeta)

    def simulate(
        self,
        zetas,
        *,
        n_paths: int = 1000,
        T: float = 400.0,
        n_steps: int = 8000,
        theta0: float = 1.0,
        scheme: str = "log",
        seed: int = 0,
    ) -> np.ndarray:
        """Euler-Maruyama paths; returns log|theta_T| of shape (len(zetas), n_paths), float64.

        ``scheme="log"``: Euler-Maruyama on v = log|theta|, whose Ito SDE is
        dv = (mu - e^{2v} - zeta^2 / 2) dt + zeta dB (additive noise: no O(dt) bias in the exponent).
        ``scheme="theta"``: Euler-Maruyama on theta itself, theta_{k+1} = theta_k (1 + (mu - theta_k^2) dt +
        zeta sqrt(dt) xi_k), accumulated in log|theta| (its exponent is biased by about -3 zeta^4 dt / 4).

        Raises
        ------
        InputValidationError
            Non-positive ``n_paths``, ``T``, ``n_steps``, ``theta0`` == 0, a negative zeta, an unknown scheme.
        """
        zetas = np.atleast_1d(np.asarray(zetas, dtype=np.float64))
        if n_paths < 1 or n_steps < 1 or not T > 0 or theta0 == 0 or (zetas < 0).any():
            raise InputValidationError("need n_paths, n_steps >= 1, T > 0, theta0 != 0 and zetas >= 0")
        if scheme not in ("log", "theta"):
            raise InputValidationError(f"scheme must be 'log' or 'theta', got {scheme!r}")
        rng = np.random.default_rng(seed)
        dt = T / n_steps
        u = np.full((len(zetas), n_paths), math.log(abs(theta0)))
        z = zetas[:, None] * math.sqrt(dt)
        ito = (zetas[:, None] ** 2 / 2) * dt
        for _ in range(n_steps):
            xi = rng.standard_normal(u.shape)
            if scheme == "log":
                u += (self.mu - np.exp(np.minimum(2 * u, 50.0))) * dt - ito + z * xi
            else:
                u += np.log(np.abs(1.0 + (self.mu - np.exp(2 * u)) * dt + z * xi) + 1e-300)
        return u

    def collapse_probability(
        self,
        zetas,
        *,
        criterion: str = "exponent",
        kappa: float = 0.05,
        threshold: float = 1e-30,
        theta0: float = 1.0,
        T: float = 400.0,
        **kw,
    ) -> np.ndarray:
        """Estimated P(collapse) per zeta (len(zetas),).

        ``criterion="exponent"``: P(log(|theta_T| / |theta_0|) / T < -kappa) (module docstring; crosses 0.5 near
        sqrt(2 (mu + kappa))). ``"threshold"``: P(theta_T^2 < threshold) (the note's check).
        Other keywords go to :meth:`simulate`.
        """
        u = self.simulate(zetas, theta0=theta0, T=T, **kw)
        if criterion == "exponent":
            return ((u - math.log(abs(theta0))) / T < -kappa).mean(1)
        if criterion == "threshold":
            return (2 * u < math.log(threshold)).mean(1)
        raise InputValidationError(f"criterion must be 'exponent' or 'threshold', got {criterion!r}")


@dataclass(frozen=True)
class TanhNeuron:
    """f(x) = w2 tanh(w1 x) trained by full-batch label-noise gradient descent (paper Fig. 2).

    Parameters
    ----------
    x, y : array (n,)
        The training set (Sxy = sum x y > 0 makes the origin a saddle).
    eta : float
        Step size.
    """

    x: tuple
    y: tuple
    eta: float = 0.1

    @property
    def ratio(self) -> float:
        """Sxy / Sxx."""
        x, y = np.asarray(self.x, float), np.asarray(self.y, float)
        return float((x * y).sum() / (x * x).sum())

    def collapses(self, zeta) -> np.ndarray:
        """The condition eta zeta^2 sigma'(0) / 2 > Sxy / Sxx (sigma'(0) = 1 for tanh)."""
        return self.eta * np.asarray(zeta, dtype=float) ** 2 / 2 > self.ratio

    @property
    def zeta_c(self) -> float:
        """The critical label noise sqrt(2 (Sxy / Sxx) / eta) (for Sxy > 0)."""
        return math.sqrt(2 * max(self.ratio, 0.0) / self.eta)

    def simulate(
        self, zetas, *, n_paths: int = 200, n_steps: int = 20_000, w0: float = 0.5, seed: int = 0
    ) -> np.ndarray:
        """Label-noise gradient descent from w1 = w2 = ``w0``; returns |w|_T of shape (len(zetas), n_paths).

        Each step: y_k + zeta xi_k with fresh xi ~ N(0, 1); r_k = y_noisy_k - w2 tanh(w1 x_k);
        w1 += eta sum_k r_k w2 x_k (1 - tanh^2(w1 x_k)), w2 += eta sum_k r_k tanh(w1 x_k).
        """
        zetas = np.atleast_1d(np.asarray(zetas, dtype=np.float64))
        x, y = np.asarray(self.x, float), np.asarray(self.y, float)
        rng = np.random.default_rng(seed)
        shape = (len(zetas), n_paths)
        w1, w2 = np.full(shape, w0), np.full(shape, w0)
        for _ in range(n_steps):
            a = np.tanh(w1[..., None] * x)
            r = y + zetas[:, None, None] * rng.standard_normal((*shape, len(x))) - w2[..., None] * a
            g1 = (r * w2[..., None] * x * (1 - a * a)).sum(-1)
            g2 = (r * a).sum(-1)
            w1, w2 = w1 + self.eta * g1, w2 + self.eta * g2
        return np.hypot(w1, w2)


@dataclass
class DiagonalTeacherStudent:
    """The SVD-aligned diagonal linear teacher-student with label noise (paper Sec. 4.2, note's settings).

    Parameters
    ----------
    N, n, m : int
        Samples, input and output dimensions (note: 1024, 64, 64).
    rank : int
        Teacher rank (note: 8), singular values linspace(0.5, 1, rank).
    label_noise : float
        Standard deviation of the fixed label noise per entry (note: 0.5 / sqrt(m)).
    seed : int
        Seed of X, the teacher and the fixed label noise.

    Attributes (after construction)
    -------------------------------
    s_star : array (min(n, m),)
        Singular values of the least-squares target M = Y^T X (descending).
    teacher : array (m, n)
    U, V : arrays (m, k), (n, k)
        Singular vectors of M.
    """

    N: int = 1024
    n: int = 64
    m: int = 64
    rank: int = 8
    label_noise: float | None = None
    seed: int = 0

    def __post_init__(self):
        if not (1 <= self.rank <= min(self.n, self.m) and self.N >= self.n):
            raise InputValidationError("need 1 <= rank <= min(n, m) and N >= n")
        rng = np.random.default_rng(self.seed)
        noise = 0.5 / math.sqrt(self.m) if self.label_noise is None else self.label_noise
        X, _ = np.linalg.qr(rng.standard_normal((self.N, self.n)))  # orthonormal columns
        A, _ = np.linalg.qr(rng.standard_normal((self.m, self.rank)))
        B, _ = np.linalg.qr(rng.standard_normal((self.n, self.rank)))
        self.teacher = A @ np.diag(np.linspace(0.5, 1.0, self.rank)) @ B.T
        Y = X @ self.teacher.T + noise * rng.standard_normal((self.N, self.m))
        M = Y.T @ X
        U, s, Vt = np.linalg.svd(M, full_matrices=False)
        self.U, self.s_star, self.V = U, s, Vt.T

    def predicted(self, eta: float, sigma: float) -> np.ndarray:
        """The theory's final modes max(s*_i - eta sigma^2 / 2, 0), (k,)."""
        return np.maximum(self.s_star - eta * sigma**2 / 2, 0.0)

    def test_error(self, s: np.ndarray) -> np.ndarray:
        """|U diag(s) V^T - W*|_F^2 / (n m) for modes s (..., k): the test MSE on isotropic inputs."""
        W = np.einsum("ik,...k,jk->...ij", self.U, s, self.V)
        return ((W - self.teacher) ** 2).sum((-2, -1)) / (self.n * self.m)

    def simulate(
        self,
        sigmas,
        *,
        eta: float = 3 / 1024,
        steps: int = 60_000,
        drop_at: int | None = 50_000,
        drop: float = 0.1,
        replicates: int = 1,
        average_last: int = 0,
        seed: int = 0,
    ) -> dict:
        """Train the diagonal student (u = v = 1 at the start) for each injected noise sigma.

        Each step, per mode: r = u v - s* - sigma xi (xi ~ N(0, 1) fresh), u <- u - lr r v, v <- v - lr r u, with
        lr = eta, multiplied by ``drop`` from step ``drop_at`` (None: never). Since u = v at the start they stay
        equal, and u follows the quartic well with mu = s*, zeta^2 = eta sigma^2 (in time t = eta k): its
        stationary mean of s = u^2 is exactly max(s* - eta sigma^2 / 2, 0).

        Parameters
        ----------
        sigmas : sequence of float >= 0
        eta, steps, drop_at, drop : the schedule (note: 3/1024, 60,000, 50,000, 0.1)
        replicates : int
            Independent noise streams.
        average_last : int
            Also average s over the last ``average_last`` steps (and the replicates): an estimate of E[s].

        Returns
        -------
        dict
            ``final`` (replicates, len(sigmas), k) float64: s = u v at the end; ``mean`` (len(sigmas), k): the
            replicate mean of the time average over the last ``average_last`` steps (of ``final`` when 0).
        """
        sig = np.atleast_1d(np.asarray(sigmas, dtype=np.float64))
        if (sig < 0).any() or steps < 1 or replicates < 1 or not 0 <= average_last <= steps or not eta > 0:
            raise InputValidationError(
                "need sigmas >= 0, eta > 0, steps, replicates >= 1, 0 <= average_last <= steps"
            )
        rng = np.random.default_rng(seed)
        k = len(self.s_star)
        shape = (replicates, len(sig), k)
        u = np.ones(shape)
        v = np.ones(shape)
        total = np.zeros(shape)
        sig = sig[None, :, None]
        chunk = 500
        for start in range(0, steps, chunk):
            xi = rng.standard_normal((min(chunk, steps - start), *shape))
            for j in range(len(xi)):
                step = start + j
                lr = eta * (drop if drop_at is not None and step >= drop_at else 1.0)
                r = u * v - self.s_star - sig * xi[j]
                u, v = u - lr * r * v, v - lr * r * u
                if step >= steps - average_last:
                    total += u * v
        final = u * v
        mean = (total / average_last if average_last else final).mean(0)
        return {"final": final, "mean": mean}

    def surviving(self, s: np.ndarray, tol: float = 1e-2) -> np.ndarray:
        """Number of modes with s_i > ``tol`` (over the last axis)."""
        return (np.asarray(s) > tol).sum(-1)
