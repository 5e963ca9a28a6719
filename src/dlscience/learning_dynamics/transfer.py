"""Transfer learning in deep linear networks: Tahir, Ganguli & Rotskoff 2025, *Features are fate* (arXiv 2410.08194).

Setup (research note ``theory_dynamics.md`` section 2a): x ~ N(0, I_d), y = beta^T x + eps, eps ~ N(0, sigma^2);
unit source and target teachers with beta_t = cos(theta) beta_s + sin(theta) beta_perp; gamma = n / d target
samples per dimension. The network is f(x) = x^T W1 w2 (L = 2, W1 of shape (d, d)), initialised at scale
alpha = 1e-5 (W1 ~ alpha N(0, 1/d), w2 ~ alpha N(0, 1)). The excess risk of an estimate is
R = |beta_t - beta_hat|^2 and the transferability is T = R_scratch - R_transfer (T > 0: transfer helps).

Symbols -> code: theta -> ``theta``, gamma -> ``gamma``, sigma -> ``sigma`` (target noise), lambda -> ``lam``
(ridge), gamma_s = n_s / d -> ``source_gamma``, sigma_s -> ``source_sigma``.

One interface for theory and simulation: every learner (:class:`Scratch`, :class:`LinearTransfer`,
:class:`FineTune`) has

* ``risk(theta, gamma, sigma)`` -- the closed-form excess risk (numpy, broadcasting), and
* ``simulate(theta, gamma, sigma, d=..., instances=..., seed=...)`` -- the same quantity measured on batched
  float64 PyTorch networks trained on generated data (one value per (theta, gamma) point, averaged over
  instances),
* ``fit(task, X, y, n)`` -- the estimate beta_hat on given target data (batched over instances),

so the phase diagram and comparison figures loop over learners once. The batched gradients use
dL/dW1 = g w2^T and dL/dw2 = W1^T g with g = X^T (X beta - y) / n, so a step costs O(d^2 + n d) per instance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from dlscience.errors import InputValidationError

__all__ = [
    "ALPHA",
    "TeacherPairs",
    "DeepLinear",
    "TwoLayerReLU",
    "pretrain",
    "pretrain_relu",
    "NETWORKS",
    "Scratch",
    "LinearTransfer",
    "FineTune",
    "ridgeless_risk",
    "source_distance_sq",
    "ft_boundary_theta",
    "lt_boundary_gamma",
    "transferability",
    "gaussian_joint_distances",
]

ALPHA = 1e-5  # initialisation scale of the paper

#: The smallest ridge linear transfer uses (the reference code substitutes 1e-5 for lam = 0).
LAM_FLOOR = 1e-5

#: Networks a learner can train: the paper's deep linear network, or the two-layer ReLU nonlinear check.
NETWORKS = ("linear", "relu")

#: Source samples per dimension used to pretrain the ReLU networks when ``source_gamma`` is not given.
RELU_SOURCE_GAMMA = 8.0


# ------------------------------------------------------------------------------------------- validation
def _angles_gammas(theta, gamma, sigma):
    theta = np.asarray(theta, dtype=np.float64)
    gamma = np.asarray(gamma, dtype=np.float64)
    if not np.all(np.isfinite(theta)):
        raise InputValidationError("theta must be finite angles in radians")
    if not np.all(gamma > 0) or not np.all(np.isfinite(gamma)):
        raise InputValidationError("gamma = n / d must be finite and > 0")
    if not (np.isfinite(sigma) and sigma >= 0):
        raise InputValidationError(f"sigma (target noise) must be >= 0, got {sigma}")
    return theta, gamma


def _torch_tensor(name: str, value, ndim: int) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        raise InputValidationError(f"{name} must be a torch tensor, got a numpy array (use torch.from_numpy)")
    if not isinstance(value, torch.Tensor) or value.ndim != ndim:
        raise InputValidationError(f"{name} must be a torch tensor with {ndim} dimensions")
    return value.to(torch.float64)


# ------------------------------------------------------------------------------------------------ theory
def ridgeless_risk(gamma, sigma: float = 0.0) -> np.ndarray:
    """Excess risk of the minimum-norm interpolator of a unit teacher (Hastie et al. 2022, Thm. 1; note 2a).

    R = (1 - gamma) + gamma sigma^2 / (1 - gamma) for gamma < 1, sigma^2 / (gamma - 1) for gamma > 1.

    Parameters
    ----------
    gamma : array-like of float > 0
        n / d.
    sigma : float >= 0
        Label noise.

    Returns
    -------
    ndarray, float64, shape of ``gamma`` (inf at gamma = 1 with noise; 0 with sigma = 0).
    """
    _, g = _angles_gammas(0.0, gamma, sigma)
    with np.errstate(divide="ignore", invalid="ignore"):
        under = (1 - g) + g * sigma**2 / (1 - g)
        over = sigma**2 / (g - 1)
    out = np.where(g < 1, under, over)
    return np.where(g == 1, np.inf if sigma > 0 else 0.0, out)


def noise_part(gamma, sigma: float) -> np.ndarray:
    """The noise term of the ridgeless risk: gamma sigma^2 / (1 - gamma) (gamma < 1), sigma^2 / (gamma - 1)."""
    return ridgeless_risk(gamma, sigma) - ridgeless_risk(gamma, 0.0)


def source_distance_sq(theta, source_gamma: float | None = None, source_sigma: float = 0.0) -> np.ndarray:
    """|beta_t - beta_hat_s|^2 for the pretrained estimate beta_hat_s (note 2a, finite-source FT).

    Infinite source: 2 (1 - cos theta). Finite source (n_s = gamma_s d, noise sigma_s, min-norm / OLS fit):
    1 + gamma_s (1 - 2 cos theta) + sigma_s^2 gamma_s / (1 - gamma_s) for gamma_s < 1, and
    1 + (1 - 2 cos theta) + sigma_s^2 / (gamma_s - 1) for gamma_s > 1.

    Returns
    -------
    ndarray, float64, shape of ``theta``.
    """
    c = np.cos(np.asarray(theta, dtype=np.float64))
    if source_gamma is None:
        return 2 * (1 - c)
    if not source_gamma > 0 or source_gamma == 1:
        raise InputValidationError(f"source_gamma must be > 0 and != 1, got {source_gamma}")
    if source_gamma < 1:
        return 1 + source_gamma * (1 - 2 * c) + source_sigma**2 * source_gamma / (1 - source_gamma)
    return 1 + (1 - 2 * c) + source_sigma**2 / (source_gamma - 1)


def ft_boundary_theta(source_gamma: float | None = None, source_sigma: float = 0.0) -> float:
    """Angle below which fine-tuning helps for every gamma < 1: 2 cos theta = 1 + sigma_s^2 / |1 - gamma_s|.

    pi / 3 with infinite source data (note 2a, checks 5 and 8). Returns nan when no angle helps.
    """
    rhs = 1.0 if source_gamma is None else 1.0 + source_sigma**2 / abs(1.0 - source_gamma)
    return float(np.arccos(rhs / 2)) if rhs <= 2 else float("nan")


def lt_boundary_gamma(theta, lam: float = 0.0) -> np.ndarray:
    """gamma below which linear transfer helps with sigma = 0: R_lt(theta, lam) = 1 - gamma.

    cos^2 theta at lam = 0 (note 2a, check 5); (1 + 2 lam) cos^2 theta / (1 + lam)^2 with ridge.
    """
    c2 = np.cos(np.asarray(theta, dtype=np.float64)) ** 2
    return (1 + 2 * lam) * c2 / (1 + lam) ** 2


def transferability(scratch_risk, transfer_risk) -> np.ndarray:
    """T = R_scratch - R_transfer (> 0: transfer helps)."""
    return np.asarray(scratch_risk, dtype=np.float64) - np.asarray(transfer_risk, dtype=np.float64)


# --------------------------------------------------------------------------------------------- generator
@dataclass
class TeacherPairs:
    """Batched source/target teachers at angles theta (note 2a): beta_t = cos theta beta_s + sin theta beta_perp.

    Attributes
    ----------
    beta_s, beta_t : Tensor, float64, shape (R, d)
        Unit source and target teachers, one pair per instance.
    """

    beta_s: torch.Tensor
    beta_t: torch.Tensor

    @classmethod
    def draw(cls, theta, d: int, generator: torch.Generator) -> TeacherPairs:
        """Draw R = len(theta) pairs: beta_s uniform on the sphere, beta_perp uniform orthogonal to it.

        Parameters
        ----------
        theta : array-like of float, shape (R,)
        d : int >= 2
        generator : torch.Generator

        Raises
        ------
        InputValidationError
            d < 2 or non-finite angles.
        """
        if d < 2:
            raise InputValidationError(f"d must be >= 2, got {d}")
        theta = torch.as_tensor(np.asarray(theta, dtype=np.float64).reshape(-1))
        if not torch.isfinite(theta).all():
            raise InputValidationError("theta must be finite")
        g = torch.randn(2, theta.numel(), d, generator=generator, dtype=torch.float64)
        bs = g[0] / g[0].norm(dim=1, keepdim=True)
        perp = g[1] - (g[1] * bs).sum(1, keepdim=True) * bs
        perp = perp / perp.norm(dim=1, keepdim=True)
        bt = torch.cos(theta)[:, None] * bs + torch.sin(theta)[:, None] * perp
        return cls(bs, bt)

    @staticmethod
    def sample(beta: torch.Tensor, n, sigma: float, generator: torch.Generator):
        """Noisy samples y = X beta + eps, padded to n_max = max(n) rows with zeros (rows >= n_i are zero).

        Parameters
        ----------
        beta : Tensor, float64, shape (R, d)
        n : int or sequence of int, shape (R,)
            Samples per instance.
        sigma : float >= 0
        generator : torch.Generator

        Returns
        -------
        X : Tensor (R, n_max, d); y : Tensor (R, n_max); n : Tensor int64 (R,)
        """
        beta = _torch_tensor("beta", beta, 2)
        R, d = beta.shape
        n = torch.as_tensor(np.broadcast_to(np.asarray(n, dtype=np.int64), (R,)).copy())
        if (n < 1).any():
            raise InputValidationError("every instance needs n >= 1 samples")
        n_max = int(n.max())
        X = torch.randn(R, n_max, d, generator=generator, dtype=torch.float64)
        eps = sigma * torch.randn(R, n_max, generator=generator, dtype=torch.float64)
        mask = (torch.arange(n_max)[None, :] < n[:, None]).to(torch.float64)
        X = X * mask[:, :, None]
        y = (torch.einsum("rnd,rd->rn", X, beta) + eps) * mask
        return X, y, n


# ------------------------------------------------------------------------------------------ the network
@dataclass
class DeepLinear:
    """Batched two-layer linear networks f(x) = x^T W1 w2 (note 2a, L = 2).

    Attributes
    ----------
    W1 : Tensor, float64, shape (R, d, d)
    w2 : Tensor, float64, shape (R, d)
    """

    W1: torch.Tensor
    w2: torch.Tensor

    @classmethod
    def small_init(cls, R: int, d: int, generator: torch.Generator, alpha: float = ALPHA) -> DeepLinear:
        """W1 ~ alpha N(0, 1/d), w2 ~ alpha N(0, 1) (the paper's initialisation)."""
        W1 = alpha * torch.randn(R, d, d, generator=generator, dtype=torch.float64) / math.sqrt(d)
        w2 = alpha * torch.randn(R, d, generator=generator, dtype=torch.float64)
        return cls(W1, w2)

    @property
    def beta(self) -> torch.Tensor:
        """End-to-end map W1 w2, shape (R, d)."""
        return torch.bmm(self.W1, self.w2[:, :, None])[:, :, 0]

    def clone(self) -> DeepLinear:
        """An independent copy (fine-tuning starts from a copy of the pretrained weights)."""
        return DeepLinear(self.W1.clone(), self.w2.clone())

    def gd(self, grad_beta, lr: torch.Tensor, steps: int) -> DeepLinear:
        """Gradient descent on a loss whose gradient in beta is ``grad_beta(beta)`` (R, d); in place.

        dL/dW1 = g w2^T and dL/dw2 = W1^T g with g = grad_beta(W1 w2); ``lr`` has shape (R,). Each step is
        three batched BLAS calls over W1 (the cost is reading W1 three times: O(R d^2)).
        """
        neg_lr = -lr
        for _ in range(steps):
            g = grad_beta(self.beta)
            gw2 = torch.bmm(self.W1.transpose(1, 2), g[:, :, None])[:, :, 0]
            self.W1.baddbmm_((neg_lr[:, None] * g)[:, :, None], self.w2[:, None, :])
            self.w2.addcmul_(neg_lr[:, None], gw2)
        return self


def _data_gradient(X, y, n):
    """beta -> X^T (X beta - y) / n, batched; the gradient of the mean squared error / 2.

    Uses the Gram matrix X^T X / n (one (R, d, d) matrix-vector product a step) when n_max >= d / 2, else
    two products with X (R, n_max, d)."""
    nf = n.to(X.dtype)[:, None]
    if 2 * X.shape[1] >= X.shape[2]:
        Xt = X.transpose(1, 2)
        G = torch.bmm(Xt, X) / nf[:, :, None]
        b = torch.bmm(Xt, y[:, :, None])[:, :, 0] / nf

        def grad(beta):
            return torch.baddbmm(-b[:, :, None], G, beta[:, :, None])[:, :, 0]

        return grad

    def grad(beta):
        r = torch.bmm(X, beta[:, :, None])[:, :, 0] - y
        return torch.bmm(X.transpose(1, 2), r[:, :, None])[:, :, 0] / nf

    return grad


def _lr(X, n, scale: float) -> torch.Tensor:
    """Per-instance step ``scale`` / lambda_max(X^T X / n) (stable for the preconditioner bound 2)."""
    top = torch.linalg.matrix_norm(X, ord=2) ** 2 / n.to(torch.float64)
    return scale / top


def pretrain(
    beta_s: torch.Tensor,
    generator: torch.Generator,
    *,
    source_n=None,
    source_sigma: float = 0.0,
    steps: int = 400,
    alpha: float = ALPHA,
) -> DeepLinear:
    """Pretrain from the small initialisation on the source task (note 2a).

    With ``source_n`` None: GD (step 0.3) on the population loss |beta_s - W1 w2|^2 / 2; otherwise GD on
    ``source_n`` noisy samples (noise ``source_sigma``). From alpha = 1e-5 the result is rank one and balanced
    (W1^T W1 = w2 w2^T up to O(alpha^2)), with W1 w2 = beta_s (population) or the min-norm/OLS fit.

    Parameters
    ----------
    beta_s : Tensor, float64, shape (R, d)
    generator : torch.Generator
    source_n : int or None
    source_sigma : float >= 0
    steps : int >= 1

    Returns
    -------
    DeepLinear
    """
    beta_s = _torch_tensor("beta_s", beta_s, 2)
    R, d = beta_s.shape
    net = DeepLinear.small_init(R, d, generator, alpha)
    if source_n is None:
        return net.gd(lambda b: b - beta_s, torch.full((R,), 0.3, dtype=torch.float64), steps)
    X, y, n = TeacherPairs.sample(beta_s, source_n, source_sigma, generator)
    return net.gd(_data_gradient(X, y, n), _lr(X, n, 0.4), max(steps, 4000))


# ------------------------------------------------------------------------------ the nonlinear check network
@dataclass
class TwoLayerReLU:
    """Batched two-layer ReLU networks f(x) = a^T relu(W x), the nonlinear check of the paper's claim that the
    linear phase diagram carries over to nonlinear networks (Tahir et al. 2025, Sec. 6; our own setting, see
    :func:`pretrain_relu`).

    Attributes
    ----------
    W : Tensor, float64, shape (R, h, d)
        First-layer weights (the features x -> relu(W x)).
    a : Tensor, float64, shape (R, h)
        Read-out weights.
    """

    W: torch.Tensor
    a: torch.Tensor

    @classmethod
    def small_init(cls, R: int, d: int, hidden: int, generator: torch.Generator, alpha: float = 1e-3):
        """W ~ alpha N(0, 1/d), a ~ alpha N(0, 1/h): a small (rich-regime) initialisation like the linear one."""
        W = alpha * torch.randn(R, hidden, d, generator=generator, dtype=torch.float64) / math.sqrt(d)
        a = alpha * torch.randn(R, hidden, generator=generator, dtype=torch.float64) / math.sqrt(hidden)
        return cls(W, a)

    def features(self, X: torch.Tensor) -> torch.Tensor:
        """relu(X W^T): (R, n, d) -> (R, n, h)."""
        return torch.relu(torch.bmm(X, self.W.transpose(1, 2)))

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        """f(X): (R, n, d) -> (R, n)."""
        return torch.bmm(self.features(X), self.a[:, :, None])[:, :, 0]

    def clone(self) -> TwoLayerReLU:
        """An independent copy (fine-tuning starts from a copy of the pretrained weights)."""
        return TwoLayerReLU(self.W.clone(), self.a.clone())

    def gd(self, X, y, n, lr: torch.Tensor, steps: int) -> TwoLayerReLU:
        """Full-batch GD on the mean squared error / 2 of each instance (padded rows of X are zero); in place.

        Parameters
        ----------
        X : Tensor (R, n_max, d); y : Tensor (R, n_max); n : Tensor int64 (R,)
        lr : Tensor (R,)
        steps : int
        """
        nf = n.to(torch.float64)[:, None]
        neg_lr = -lr
        for _ in range(steps):
            pre = torch.bmm(X, self.W.transpose(1, 2))  # (R, n, h)
            act = torch.relu(pre)
            r = (torch.bmm(act, self.a[:, :, None])[:, :, 0] - y) / nf  # (R, n)
            grad_a = torch.bmm(act.transpose(1, 2), r[:, :, None])[:, :, 0]  # (R, h)
            back = (pre > 0).to(X.dtype) * r[:, :, None] * self.a[:, None, :]  # (R, n, h)
            grad_W = torch.bmm(back.transpose(1, 2), X)  # (R, h, d)
            self.a.addcmul_(neg_lr[:, None], grad_a)
            self.W.addcmul_(neg_lr[:, None, None], grad_W)
        return self


def pretrain_relu(
    beta_s: torch.Tensor,
    generator: torch.Generator,
    *,
    hidden: int,
    source_n: int,
    steps: int,
) -> TwoLayerReLU:
    """Pretrain two-layer ReLU networks on ``source_n`` noiseless samples of the source teacher x -> beta_s^T x
    by GD from the small initialisation (our setting for the nonlinear check; the paper gives no recipe we could
    read). From a small initialisation the hidden units align with +-beta_s, so the features span the source
    direction as in the linear case.

    Returns
    -------
    TwoLayerReLU
    """
    beta_s = _torch_tensor("beta_s", beta_s, 2)
    R, d = beta_s.shape
    net = TwoLayerReLU.small_init(R, d, hidden, generator)
    X, y, n = TeacherPairs.sample(beta_s, source_n, 0.0, generator)
    return net.gd(X, y, n, _lr(X, n, RELU_LR), steps)


#: GD step of the ReLU networks, in units of 1 / lambda_max(X^T X / n).
RELU_LR = 0.5

#: The last ReLU pretraining (key, networks, generator state after it), reused by the next learner of the
#: same instances so that linear transfer and fine-tuning start from identical features at half the cost.
_RELU_CACHE: dict = {}


# ------------------------------------------------------------------------------------------------ learners
class TransferLearner:
    """A way to learn the target task; theory (:meth:`risk`) and simulation (:meth:`simulate`) share a call.

    Subclasses implement ``risk(theta, gamma, sigma)`` and ``fit(teachers, X, y, n, generator)``.
    """

    name = "learner"
    needs_pretraining = True

    def __init__(
        self,
        *,
        steps: int = 4000,
        source_gamma: float | None = None,
        source_sigma: float = 0.0,
        network: str = "linear",
        hidden: int = 128,
    ):
        if network not in NETWORKS:
            raise InputValidationError(f"network must be one of {NETWORKS}, got {network!r}")
        if hidden < 1:
            raise InputValidationError(f"hidden (ReLU width) must be >= 1, got {hidden}")
        self.network, self.hidden = network, hidden
        if steps < 1:
            raise InputValidationError(f"steps must be >= 1, got {steps}")
        if source_gamma is not None and not (source_gamma > 0 and source_gamma != 1):
            raise InputValidationError(f"source_gamma must be > 0 and != 1, got {source_gamma}")
        if not source_sigma >= 0:
            raise InputValidationError(f"source_sigma must be >= 0, got {source_sigma}")
        self.steps = steps
        self.source_gamma = source_gamma
        self.source_sigma = source_sigma

    def risk(self, theta, gamma, sigma: float = 0.0) -> np.ndarray:  # pragma: no cover - abstract
        """Closed-form excess risk |beta_t - beta_hat|^2: theta (rad) and gamma = n/d broadcast to shape S,
        sigma >= 0 the target noise -> float64 array of shape S. Raises InputValidationError on bad values."""
        raise NotImplementedError

    def fit(self, pretrained: DeepLinear | None, X, y, n, generator) -> torch.Tensor:  # pragma: no cover
        """beta_hat (R, d) float64 from target data X (R, n_max, d), y (R, n_max), n (R,) (padded rows zero),
        starting from ``pretrained`` (None for scratch)."""
        raise NotImplementedError

    def fit_relu(
        self, pretrained: TwoLayerReLU | None, X, y, n, generator
    ) -> TwoLayerReLU:  # pragma: no cover
        raise NotImplementedError

    def simulate(
        self, theta, gamma, sigma: float = 0.0, *, d: int = 200, instances: int = 4, seed: int = 0
    ) -> np.ndarray:
        """Measured excess risk, averaged over ``instances``, at each (theta, gamma): |beta_t - beta_hat|^2 for
        the deep linear network; E_x (f(x) - beta_t^T x)^2 on 4,000 fresh test inputs for ``network="relu"``
        (the same quantity for a linear f).

        Parameters
        ----------
        theta, gamma : array-like, broadcast together to shape S
        sigma : float >= 0
            Target label noise.
        d : int >= 2
        instances : int >= 1
            Independent teachers, data and initialisations per point.
        seed : int
            Same seed, same result.

        Returns
        -------
        ndarray, float64, shape S
        """
        theta, gamma = _angles_gammas(theta, gamma, sigma)
        theta, gamma = np.broadcast_arrays(theta, gamma)
        if instances < 1 or d < 2:
            raise InputValidationError("instances must be >= 1 and d >= 2")
        shape = theta.shape
        th = np.repeat(theta.reshape(-1), instances)
        n = np.maximum(1, np.rint(np.repeat(gamma.reshape(-1), instances) * d).astype(np.int64))
        gen = torch.Generator().manual_seed(int(seed))
        teachers = TeacherPairs.draw(th, d, gen)
        pre = None
        if self.network == "relu":
            if self.needs_pretraining:
                source_n = round((self.source_gamma or RELU_SOURCE_GAMMA) * d)
                key = (th.tobytes(), d, self.hidden, source_n, self.steps, int(seed))
                if _RELU_CACHE.get("key") != key:  # linear transfer and fine-tuning share one pretraining
                    net = pretrain_relu(
                        teachers.beta_s, gen, hidden=self.hidden, source_n=source_n, steps=self.steps
                    )
                    _RELU_CACHE.update(key=key, net=net, state=gen.get_state())
                pre = _RELU_CACHE["net"].clone()
                gen.set_state(_RELU_CACHE["state"])
            X, y, n_t = TeacherPairs.sample(teachers.beta_t, n, sigma, gen)
            net = self.fit_relu(pre, X, y, n_t, gen)
            X_test = torch.randn(th.size, 4000, d, generator=gen, dtype=torch.float64)
            y_test = torch.bmm(X_test, teachers.beta_t[:, :, None])[:, :, 0]
            r = ((net(X_test) - y_test) ** 2).mean(1).numpy()
            return r.reshape(-1, instances).mean(1).reshape(shape)
        if self.needs_pretraining:
            source_n = None if self.source_gamma is None else max(1, round(self.source_gamma * d))
            pre = pretrain(teachers.beta_s, gen, source_n=source_n, source_sigma=self.source_sigma)
        X, y, n_t = TeacherPairs.sample(teachers.beta_t, n, sigma, gen)
        beta = self.fit(pre, X, y, n_t, gen)
        r = ((beta - teachers.beta_t) ** 2).sum(1).numpy()
        return r.reshape(-1, instances).mean(1).reshape(shape)


class Scratch(TransferLearner):
    """GD on the target data from the small initialisation; converges to the min-norm interpolator, whose risk
    is the ridgeless formula (note 2a, check 1)."""

    name = "scratch"
    needs_pretraining = False

    def risk(self, theta, gamma, sigma: float = 0.0) -> np.ndarray:
        theta, gamma = _angles_gammas(theta, gamma, sigma)
        return np.broadcast_to(ridgeless_risk(gamma, sigma), np.broadcast_shapes(theta.shape, gamma.shape))

    def fit(self, pretrained, X, y, n, generator) -> torch.Tensor:
        """beta_hat (R, d) after ``steps`` GD steps of lr 0.45 / lambda_max(X^T X / n) from alpha = 1e-5."""
        X = _torch_tensor("X", X, 3)
        net = DeepLinear.small_init(X.shape[0], X.shape[2], generator)
        return net.gd(_data_gradient(X, y, n), _lr(X, n, 0.45), self.steps).beta

    def fit_relu(self, pretrained, X, y, n, generator) -> TwoLayerReLU:
        """GD on the target data from the small initialisation of a fresh two-layer ReLU network."""
        X = _torch_tensor("X", X, 3)
        net = TwoLayerReLU.small_init(X.shape[0], X.shape[2], self.hidden, generator)
        return net.gd(X, y, n, _lr(X, n, RELU_LR), self.steps)


class LinearTransfer(TransferLearner):
    """Ridge on the frozen pretrained features x^T W1 (penalty n lam |c|^2); beta_hat = W1 c (note 2a).

    Theory (infinite source, n -> infinity in the one-dimensional refit): R_lt = 1 - (1 + 2 lam) cos^2 theta /
    (1 + lam)^2, independent of gamma (check 3).
    """

    name = "linear transfer"

    def __init__(self, lam: float = 0.1, **kw):
        super().__init__(**kw)
        if not lam >= 0:
            raise InputValidationError(f"lam (ridge) must be >= 0, got {lam}")
        self.lam = lam

    def risk(self, theta, gamma, sigma: float = 0.0) -> np.ndarray:
        theta, gamma = _angles_gammas(theta, gamma, sigma)
        c2 = np.cos(theta) ** 2
        r = 1 - (1 + 2 * self.lam) * c2 / (1 + self.lam) ** 2
        return np.broadcast_to(r, np.broadcast_shapes(theta.shape, gamma.shape)).copy()

    def fit(self, pretrained, X, y, n, generator) -> torch.Tensor:
        X = _torch_tensor("X", X, 3)
        F = X @ pretrained.W1  # (R, n, d) features
        # lam = 0 is ill-posed: the O(alpha) residual features of the rank-one W1 would interpolate the noise
        # of the refit; like the reference code, lam below LAM_FLOOR is taken as LAM_FLOOR.
        lam = max(self.lam, LAM_FLOOR)
        A = F.transpose(1, 2) @ F + (n.to(torch.float64) * lam)[:, None, None] * torch.eye(X.shape[2])
        L = torch.linalg.cholesky(A)  # A is symmetric positive definite
        c = torch.cholesky_solve(torch.einsum("rnd,rn->rd", F, y)[:, :, None], L)[:, :, 0]
        return torch.einsum("rij,rj->ri", pretrained.W1, c)

    def fit_relu(self, pretrained, X, y, n, generator) -> TwoLayerReLU:
        """Ridge (penalty n lam |a|^2) of a new read-out on the frozen features relu(W x)."""
        X = _torch_tensor("X", X, 3)
        F = pretrained.features(X)  # (R, n, h); padded rows are zero
        h = F.shape[2]
        lam = max(self.lam, LAM_FLOOR)
        A = F.transpose(1, 2) @ F + (n.to(torch.float64) * lam)[:, None, None] * torch.eye(h, dtype=F.dtype)
        a = torch.cholesky_solve(torch.einsum("rnh,rn->rh", F, y)[:, :, None], torch.linalg.cholesky(A))
        return TwoLayerReLU(pretrained.W, a[:, :, 0])


class FineTune(TransferLearner):
    """GD on all layers from the pretrained weights (note 2a).

    Theory (gamma < 1): R_ft = (1 - gamma) |beta_t - beta_hat_s|^2 + gamma sigma^2 / (1 - gamma), with
    |beta_t - beta_hat_s|^2 = 2 (1 - cos theta) for infinite source (check 4) or the finite-source value of
    :func:`source_distance_sq`; for gamma > 1 the ridgeless noise term sigma^2 / (gamma - 1) (0 at sigma = 0).
    """

    name = "fine-tuning"

    def __init__(self, *, lr_scale: float = 0.9, **kw):
        super().__init__(**kw)
        if not lr_scale > 0:
            raise InputValidationError(f"lr_scale must be > 0, got {lr_scale}")
        self.lr_scale = lr_scale

    def risk(self, theta, gamma, sigma: float = 0.0) -> np.ndarray:
        theta, gamma = _angles_gammas(theta, gamma, sigma)
        dist = source_distance_sq(theta, self.source_gamma, self.source_sigma)
        bias = np.where(gamma < 1, (1 - gamma) * dist, 0.0)
        return bias + noise_part(gamma, sigma)

    def fit(self, pretrained, X, y, n, generator) -> torch.Tensor:
        X = _torch_tensor("X", X, 3)
        net = pretrained.clone()
        scale = 1.0 + float((net.w2**2).sum(1).max())  # preconditioner bound |w2|^2 + |W1|^2
        return net.gd(_data_gradient(X, y, n), _lr(X, n, self.lr_scale / scale), self.steps).beta

    def fit_relu(self, pretrained, X, y, n, generator) -> TwoLayerReLU:
        """GD on all weights of the pretrained two-layer ReLU network."""
        X = _torch_tensor("X", X, 3)
        return pretrained.clone().gd(X, y, n, _lr(X, n, RELU_LR), self.steps)


# ---------------------------------------------------------------------------------- distribution distances
def gaussian_joint_distances(beta_s, beta_t, sigma_s: float, sigma_t: float) -> dict:
    """Closed-form distances between the joint laws of (x, y), x ~ N(0, I_d), y = beta^T x + N(0, sigma^2).

    Both joints are zero-mean Gaussians with covariance [[I, beta], [beta^T, |beta|^2 + sigma^2]]; the input
    marginals are identical (every phi-divergence and IPM between them is 0).

    Parameters
    ----------
    beta_s, beta_t : array-like, shape (d,)
    sigma_s, sigma_t : float > 0

    Returns
    -------
    dict
        ``kl_source_target``, ``kl_target_source`` (nats; E_x KL of the conditionals), ``hellinger_sq``,
        ``w2_sq`` (squared 2-Wasserstein), ``input_marginal_distance`` (0), and the y-marginal variances.
    """
    from scipy.linalg import sqrtm

    bs = np.asarray(beta_s, dtype=np.float64)
    bt = np.asarray(beta_t, dtype=np.float64)
    if bs.shape != bt.shape or bs.ndim != 1:
        raise InputValidationError("beta_s and beta_t must be vectors of the same length")
    if not (sigma_s > 0 and sigma_t > 0):
        raise InputValidationError("the noise levels must be > 0 for finite joint KL")
    dist2 = float(((bs - bt) ** 2).sum())

    def kl(s1, s2):
        return math.log(s2 / s1) + (s1**2 + dist2) / (2 * s2**2) - 0.5

    def cov(b, s):
        d = b.size
        c = np.eye(d + 1)
        c[:d, d] = c[d, :d] = b
        c[d, d] = b @ b + s**2
        return c

    C1, C2 = cov(bs, sigma_s), cov(bt, sigma_t)
    r1 = sqrtm(C1).real
    w2 = float(np.trace(C1) + np.trace(C2) - 2 * np.trace(sqrtm(r1 @ C2 @ r1).real))
    M = (C1 + C2) / 2
    _, ld1 = np.linalg.slogdet(C1)
    _, ld2 = np.linalg.slogdet(C2)
    _, ldm = np.linalg.slogdet(M)
    bc = math.exp(0.25 * ld1 + 0.25 * ld2 - 0.5 * ldm)
    return {
        "kl_source_target": kl(sigma_s, sigma_t),
        "kl_target_source": kl(sigma_t, sigma_s),
        "hellinger_sq": 1 - bc,
        "w2_sq": max(w2, 0.0),
        "input_marginal_distance": 0.0,
        "y_variance_source": float(bs @ bs + sigma_s**2),
        "y_variance_target": float(bt @ bt + sigma_t**2),
    }
