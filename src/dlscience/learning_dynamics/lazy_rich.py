"""Exact lazy and rich learning in the single-neuron model (Kunin, Raventos, Domine, Chen, Klindt, Saxe &
Ganguli, "Get rich quick", NeurIPS 2024, arXiv 2406.06158, Sec. 3; research note theory_dynamics.md, paper 1).

Model and symbols (paper -> code)::

    f(x) = a w^T x,  beta = a w               a (scalar), w (d,), beta (d,)
    L = 1/2 beta^T XtX beta - beta^T Xty      XtX = X^T X (d, d), Xty = X^T y (d,)
    rho = XtX beta - Xty                      the residual in parameter space
    dw/dt = -eta_w a rho,  da/dt = -eta_a w^T rho        per-layer learning rates eta_w, eta_a
    delta = eta_w a^2 - eta_a |w|^2           conserved under gradient flow (Sec. 3.1)

delta > 0 ("upstream", the first layer learns faster) is lazy, delta = 0 (balanced) is rich from a small
initialisation, delta < 0 ("downstream") is delayed rich. In function space beta' = -M rho with
M = eta_w a^2 I + eta_a w w^T (also the NTK on whitened data), see :func:`function_space_matrix`.

Closed form for whitened data (XtX = I, beta* = Xty, s = |beta*|), derived here for unit rates and mapped to
any (eta_w, eta_a) by the change of variables a~ = a (eta_w/eta_a)^(1/4), w~ = w (eta_a/eta_w)^(1/4),
tau = sqrt(eta_a eta_w) t, delta~ = delta / sqrt(eta_a eta_w):

1. nu = w^T beta* / a obeys the Riccati equation nu' = s^2 - delta nu - nu^2 (research note, Sec. 1a); with
   nu = y'/y it becomes linear, y'' + delta y' - s^2 y = 0, where y = a exp(int_0^t |w|^2). So
   y(t) = A e^{lambda+ t} + B e^{lambda- t}, lambda+- = (-delta +- R)/2, R = sqrt(delta^2 + 4 s^2),
   y(0) = a_0, y'(0) = w_0^T beta*  (no singularity where a crosses zero, unlike nu itself).
2. With G = exp(int_0^t a^2): a = y e^{delta t} / G, (G^2)' = 2 y^2 e^{2 delta t}, and
   (G w)' = G a beta*, so w(t) = (w_0 + beta* int_0^t y e^{delta s} ds) / G. Every integral is a sum of
   exponentials; they are evaluated scaled by e^{-(delta + R) t / 2} so that no exponential overflows.

The limit for low-rank data (Sec. 4, Fig. 4b; research note): w moves only in the row space of X, so its
null-space component k is conserved, and conservation of delta gives
beta_inf = beta_OLS + a_inf P_null w_0 with a_inf^2 = kappa + sqrt(kappa^2 + |beta_OLS|^2),
kappa = (|P_null w_0|^2 + delta) / 2 (unit rates).

The kernel distance is S(t0, t) = 1 - <K0, Kt>_F / (|K0|_F |Kt|_F) (Fort et al. 2020) with the NTK evaluated
at the current a_t (the reference notebook normalises K_t with a_0; that defect is not copied).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dlscience.errors import InputValidationError

__all__ = [
    "SingleNeuron",
    "Trajectory",
    "init_from_beta",
    "conserved_delta",
    "function_space_matrix",
    "kernel_distance",
    "low_rank_limit",
]


def _vector(x, name: str, d: int | None = None) -> np.ndarray:
    if hasattr(x, "detach"):
        raise InputValidationError(f"{name} must be a numpy array, got a torch tensor; convert with .numpy()")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or (d is not None and x.shape[0] != d):
        raise InputValidationError(f"{name} must have shape ({d or 'd'},), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputValidationError(f"{name} must be finite")
    return x


def conserved_delta(a, w, eta_w: float = 1.0, eta_a: float = 1.0):
    """delta = eta_w a^2 - eta_a |w|^2 (Sec. 3.1), conserved under gradient flow.

    Parameters
    ----------
    a : float or array (T,)
    w : array (d,) or (T, d)

    Returns
    -------
    float or array (T,)
    """
    a = np.asarray(a, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    return eta_w * a**2 - eta_a * np.sum(w**2, axis=-1)


def init_from_beta(beta0, delta: float, eta_w: float = 1.0, eta_a: float = 1.0) -> tuple[float, np.ndarray]:
    """The initialisation (a_0 > 0, w_0) with a_0 w_0 = beta0 and the given conserved delta.

    From eta_w a^2 - eta_a |w|^2 = delta and a |w| = |beta0|:
    eta_w a^2 = (delta + sqrt(delta^2 + 4 eta_w eta_a |beta0|^2)) / 2.

    Parameters
    ----------
    beta0 : array (d,), not zero
    delta : float

    Returns
    -------
    a0 : float
    w0 : array (d,)

    Raises
    ------
    InputValidationError
        If beta0 is zero (then a or w is zero and delta alone does not fix the other) or rates are not > 0.
    """
    beta0 = _vector(beta0, "beta0")
    if eta_w <= 0 or eta_a <= 0:
        raise InputValidationError(f"learning rates must be > 0, got eta_w={eta_w}, eta_a={eta_a}")
    b2 = float(beta0 @ beta0)
    if b2 == 0:
        raise InputValidationError("beta0 must not be zero; give a and w directly")
    a0 = np.sqrt((delta + np.sqrt(delta**2 + 4 * eta_w * eta_a * b2)) / (2 * eta_w))
    return float(a0), beta0 / a0


def function_space_matrix(a, w, eta_w: float = 1.0, eta_a: float = 1.0) -> np.ndarray:
    """M = eta_w a^2 I + eta_a w w^T, with beta' = -M rho (Sec. 3.2); on whitened data also the NTK.

    Parameters
    ----------
    a : float or array (T,)
    w : array (d,) or (T, d)

    Returns
    -------
    array (d, d) or (T, d, d)
    """
    a = np.asarray(a, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    eye = np.eye(w.shape[-1])
    return eta_w * (a**2)[..., None, None] * eye + eta_a * w[..., :, None] * w[..., None, :]


def kernel_distance(K0: np.ndarray, K: np.ndarray) -> np.ndarray:
    """S = 1 - <K0, K>_F / (|K0|_F |K|_F) (Fort et al. 2020), in [0, 2].

    Parameters
    ----------
    K0 : array (n, n)
    K : array (n, n) or (T, n, n)

    Returns
    -------
    float or array (T,)
    """
    K0 = np.asarray(K0, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    inner = np.sum(K0 * K, axis=(-2, -1))
    return 1.0 - inner / (np.linalg.norm(K0) * np.sqrt(np.sum(K * K, axis=(-2, -1))))


@dataclass(frozen=True)
class Trajectory:
    """A single-neuron trajectory sampled at times ``t``.

    Attributes
    ----------
    t : array (T,)
        Times (gradient-flow time; for gradient descent, step x learning rate scale 1).
    a : array (T,)
    w : array (T, d)
    eta_w, eta_a : float
    """

    t: np.ndarray
    a: np.ndarray
    w: np.ndarray
    eta_w: float = 1.0
    eta_a: float = 1.0

    @property
    def beta(self) -> np.ndarray:
        """beta = a w, (T, d)."""
        return self.a[:, None] * self.w

    @property
    def delta(self) -> np.ndarray:
        """The conserved quantity at every time, (T,)."""
        return conserved_delta(self.a, self.w, self.eta_w, self.eta_a)

    def ntk(self, X: np.ndarray | None = None) -> np.ndarray:
        """The NTK at every time: X M X^T (T, n, n), or M itself (T, d, d) without ``X`` (whitened data)."""
        M = function_space_matrix(self.a, self.w, self.eta_w, self.eta_a)
        return M if X is None else np.einsum("nd,tde,me->tnm", X, M, X)

    def kernel_distance(self, X: np.ndarray | None = None) -> np.ndarray:
        """S(0, t) at every time, (T,), with the kernel at the current a_t and w_t."""
        K = self.ntk(X)
        return kernel_distance(K[0], K)


class SingleNeuron:
    """The two-layer single-neuron linear network f(x) = a w^T x trained on the loss
    1/2 beta^T XtX beta - beta^T Xty with layer learning rates eta_w, eta_a (Kunin et al. 2024, Sec. 3).

    Theory (:meth:`closed_form`, whitened data; :meth:`limit`) and simulation (:meth:`gradient_flow`, a scipy
    ODE; :meth:`gradient_descent`) share one signature and return :class:`Trajectory` objects, so they compare
    directly.

    Parameters
    ----------
    XtX : array (d, d)
        X^T X, symmetric positive semi-definite (the identity for whitened data).
    Xty : array (d,)
        X^T y.
    eta_w, eta_a : float
        Learning rates of the first layer (w) and the read-out (a), > 0.

    Raises
    ------
    InputValidationError
        Wrong shapes, a non-symmetric or negative-definite XtX, non-positive rates, torch input.
    """

    def __init__(self, XtX, Xty, eta_w: float = 1.0, eta_a: float = 1.0):
        if hasattr(XtX, "detach"):
            raise InputValidationError("XtX must be a numpy array, got a torch tensor; convert with .numpy()")
        self.Xty = _vector(Xty, "Xty")
        d = self.Xty.shape[0]
        XtX = np.asarray(XtX, dtype=np.float64)
        if XtX.shape != (d, d):
            raise InputValidationError(f"XtX must have shape ({d}, {d}) to match Xty, got {XtX.shape}")
        if not np.allclose(XtX, XtX.T, atol=1e-12) or np.linalg.eigvalsh(XtX).min() < -1e-10:
            raise InputValidationError("XtX must be symmetric positive semi-definite (X^T X)")
        if not (eta_w > 0 and eta_a > 0):
            raise InputValidationError(f"learning rates must be > 0, got eta_w={eta_w}, eta_a={eta_a}")
        self.XtX, self.d, self.eta_w, self.eta_a = XtX, d, float(eta_w), float(eta_a)

    @classmethod
    def whitened(cls, beta_star, eta_w: float = 1.0, eta_a: float = 1.0) -> SingleNeuron:
        """Whitened data, XtX = I and Xty = beta_star (the paper's Figs. 2-4a: beta_star = (0, 1))."""
        beta_star = _vector(beta_star, "beta_star")
        return cls(np.eye(beta_star.shape[0]), beta_star, eta_w, eta_a)

    @property
    def is_whitened(self) -> bool:
        return bool(np.allclose(self.XtX, np.eye(self.d), atol=1e-12))

    def _check(self, a0, w0, t) -> tuple[float, np.ndarray, np.ndarray]:
        w0 = _vector(w0, "w0", self.d)
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        if t.ndim != 1 or np.any(t < 0) or np.any(np.diff(t) < 0) or not np.all(np.isfinite(t)):
            raise InputValidationError("t must be a finite, non-decreasing 1-D array of times >= 0")
        return float(a0), w0, t

    def gradient(self, a: float, w: np.ndarray) -> tuple[float, np.ndarray]:
        """(dL/da, dL/dw) at (a, w): (w^T rho, a rho) with rho = XtX a w - Xty."""
        rho = self.XtX @ (a * w) - self.Xty
        return float(w @ rho), a * rho

    # ------------------------------------------------------------------------------------------ theory
    def closed_form(self, a0: float, w0, t) -> Trajectory:
        """The exact gradient-flow trajectory on whitened data (module docstring, steps 1-2).

        Parameters
        ----------
        a0 : float
        w0 : array (d,)
        t : array (T,) of times >= 0, non-decreasing

        Returns
        -------
        Trajectory

        Raises
        ------
        InputValidationError
            If the data are not whitened (XtX != I): use :meth:`gradient_flow` there.
        """
        if not self.is_whitened:
            raise InputValidationError("the closed form needs whitened data (XtX = I); use gradient_flow")
        a0, w0, t = self._check(a0, w0, t)
        c = np.sqrt(self.eta_a * self.eta_w)
        # unit-rate variables (module docstring)
        a_ = a0 * (self.eta_w / self.eta_a) ** 0.25
        w_ = w0 * (self.eta_a / self.eta_w) ** 0.25
        tau = c * t
        delta = a_**2 - w_ @ w_
        bs = self.Xty
        s2 = float(bs @ bs)
        R = np.sqrt(delta**2 + 4 * s2)
        if R == 0:  # beta* = 0 and delta = 0: y = a0 + p0 t degenerates; integrate numerically instead
            return self.gradient_flow(a0, w0, t)
        p0 = float(w_ @ bs)
        lam_p, lam_m = (-delta + R) / 2, (-delta - R) / 2
        A = (p0 - lam_m * a_) / R
        B = (lam_p * a_ - p0) / R
        # everything scaled by m(t) = exp((delta + R) t / 2) > 0
        y_hat = A + B * np.exp(-R * tau)
        G2_hat = np.exp(-(delta + R) * tau) + 2 * (
            A**2 * _f(delta + R, tau)
            + 2 * A * B * _diffexp(R, R + delta, tau)
            + B**2 * _diffexp(delta + R, 2 * R, tau)
        )
        Y_hat = A * _f((delta + R) / 2, tau) + B * _diffexp((delta + R) / 2, R, tau)
        G_hat = np.sqrt(G2_hat)
        a = y_hat / G_hat
        w = (np.exp(-(delta + R) * tau / 2)[:, None] * w_ + Y_hat[:, None] * bs) / G_hat[:, None]
        return Trajectory(
            t,
            a * (self.eta_a / self.eta_w) ** 0.25,
            w * (self.eta_w / self.eta_a) ** 0.25,
            self.eta_w,
            self.eta_a,
        )

    def nu_closed_form(self, a0: float, w0, t) -> np.ndarray:
        """nu(t) = w^T beta* / a from the Riccati solution (research note Sec. 1a, unit rates, whitened data):
        nu = [-delta + R tanh(R t / 2 + artanh((delta + 2 nu_0) / R))] / 2, valid while |delta + 2 nu_0| < R
        (nu_0 between the two fixed points); elsewhere the coth branch, nu = y'/y from step 1.

        Returns
        -------
        array (T,)
        """
        traj = self.closed_form(a0, w0, t)
        return (traj.w @ self.Xty) / traj.a

    def limit(self, a0: float, w0) -> np.ndarray:
        """beta at t -> infinity under gradient flow (unit-rate formula mapped to any rates).

        Full-rank XtX: the least-squares solution. Low-rank XtX: beta_OLS + a_inf P_null w_0 (module docstring),
        beta_OLS the minimum-norm least-squares solution.

        Returns
        -------
        array (d,)
        """
        a0, w0, _ = self._check(a0, w0, [0.0])
        a_ = a0 * (self.eta_w / self.eta_a) ** 0.25
        w_ = w0 * (self.eta_a / self.eta_w) ** 0.25
        return low_rank_limit(self.XtX, self.Xty, a_, w_)

    # ------------------------------------------------------------------------------------------ simulation
    def gradient_flow(self, a0: float, w0, t, *, rtol: float = 1e-12, atol: float = 1e-14) -> Trajectory:
        """Integrate the gradient flow numerically (scipy ``solve_ivp``, DOP853) and sample it at ``t``.

        Returns
        -------
        Trajectory
        """
        from scipy.integrate import solve_ivp

        a0, w0, t = self._check(a0, w0, t)

        def rhs(_, z):
            ga, gw = self.gradient(z[0], z[1:])
            return np.concatenate([[-self.eta_a * ga], -self.eta_w * gw])

        if t[-1] == 0:
            z = np.tile(np.concatenate([[a0], w0]), (len(t), 1))
        else:
            sol = solve_ivp(
                rhs, (0.0, t[-1]), np.concatenate([[a0], w0]), method="DOP853", t_eval=t, rtol=rtol, atol=atol
            )
            z = sol.y.T
        return Trajectory(t, z[:, 0].copy(), z[:, 1:].copy(), self.eta_w, self.eta_a)

    def gradient_descent(self, a0: float, w0, steps: int, lr: float = 1.0, *, every: int = 1) -> Trajectory:
        """Discrete gradient descent a <- a - lr eta_a dL/da, w <- w - lr eta_w dL/dw (simultaneous update).

        Parameters
        ----------
        steps : int >= 0
        lr : float > 0
            Step size; the trajectory's times are k * lr (comparable with the flow).
        every : int >= 1
            Keep every ``every``-th iterate.

        Returns
        -------
        Trajectory
        """
        if steps < 0 or every < 1 or not lr > 0:
            raise InputValidationError("steps must be >= 0, every >= 1 and lr > 0")
        a, w, _ = self._check(a0, w0, [0.0])
        ts, As, Ws = [0.0], [a], [w.copy()]
        for k in range(1, steps + 1):
            ga, gw = self.gradient(a, w)
            a, w = a - lr * self.eta_a * ga, w - lr * self.eta_w * gw
            if k % every == 0 or k == steps:
                ts.append(k * lr)
                As.append(a)
                Ws.append(w.copy())
        return Trajectory(np.array(ts), np.array(As), np.array(Ws), self.eta_w, self.eta_a)


def low_rank_limit(XtX, Xty, a0: float, w0) -> np.ndarray:
    """The limit of unit-rate gradient flow: beta_OLS + a_inf P_null w_0 (module docstring; research note
    Sec. 1a, "implicit bias when X is low-rank"), with a_inf^2 = kappa + sqrt(kappa^2 + |beta_OLS|^2),
    kappa = (|P_null w_0|^2 + delta) / 2 and delta = a_0^2 - |w_0|^2.

    Parameters
    ----------
    XtX : array (d, d)
    Xty : array (d,)
    a0 : float
    w0 : array (d,)

    Returns
    -------
    array (d,)
    """
    XtX = np.asarray(XtX, dtype=np.float64)
    w0 = np.asarray(w0, dtype=np.float64)
    beta_ols = np.linalg.pinv(XtX, rcond=1e-10, hermitian=True) @ np.asarray(Xty, dtype=np.float64)
    evals, evecs = np.linalg.eigh(XtX)
    null = evecs[:, evals <= 1e-10 * max(1.0, evals.max())]
    k_vec = null @ (null.T @ w0)
    delta = a0**2 - w0 @ w0
    kappa = (k_vec @ k_vec + delta) / 2
    a_inf = np.sqrt(kappa + np.sqrt(kappa**2 + beta_ols @ beta_ols))
    return beta_ols + np.sign(a0) * a_inf * k_vec


def _f(k, t):
    """int_0^t e^{-k (t - s)} ds = (1 - e^{-k t}) / k (t at k = 0), elementwise in t."""
    t = np.asarray(t, dtype=np.float64)
    if abs(k) < 1e-12:
        return t.copy()
    return -np.expm1(-k * t) / k


def _diffexp(p, q, t):
    """(e^{-p t} - e^{-q t}) / (q - p), stable for p close to q (t e^{-p t} there)."""
    lo, gap = min(p, q), abs(q - p)
    return np.exp(-lo * np.asarray(t, dtype=np.float64)) * _f(gap, t)
