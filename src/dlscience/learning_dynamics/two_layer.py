"""Many neurons: per-neuron conserved quantities, the deep linear matrix invariant, and two-layer ReLU networks
in the (tau, delta) parametrisation of Kunin et al. 2024 ("Get rich quick", Sec. 4-5, Fig. 1; research note
theory_dynamics.md, paper 1, Sec. 1a "Extensions" and 1b "Fig 1").

Symbols (paper -> code)::

    f(x) = sum_i a_i relu(w_i . x)            a (R, m), W (R, m, d): R independent runs batched
    delta_i = eta_w a_i^2 - eta_a |w_i|^2     conserved per neuron under gradient flow (positive homogeneity)
    eta_2 W1 W1^T - eta_1 W2^T W2             conserved between consecutive linear layers (deep linear)
    |w_i| = tau alpha, |a_i| = tau / alpha,   alpha = sqrt((sqrt(4 + (delta/tau^2)^2) - delta/tau^2) / 2)
                                              so a_i^2 - |w_i|^2 = delta and |a_i| |w_i| = tau^2

Training follows the reference setting: loss mean_n (f(x_n) - y_n)^2, full-batch gradient descent with step
lr = base_lr / tau^2 on both layers, float64; inputs uniform on the unit sphere; a teacher of m0 unit-norm
ReLU neurons with +-1 read-outs; a symmetrised student (pairs of equal first-layer weights and opposite
read-outs, so f = 0 at initialisation). Metrics against the initialisation: test loss, kernel distance
S(0, t) of the empirical NTK on training inputs, the activation-pattern Hamming distance (here the FRACTION of
(neuron, input) pairs whose ReLU switched, in [0, 1]; the reference reports the sum over neurons, m times
this), and the parameter distance |theta_t - theta_0| (absolute, as in the reference).
"""

from __future__ import annotations

import math

import torch

from dlscience.errors import InputValidationError

__all__ = [
    "tau_delta_scales",
    "neuron_deltas",
    "deep_linear_invariant",
    "BatchedReLUNetwork",
    "teacher_network",
    "sphere",
]


def tau_delta_scales(tau: float, delta: float) -> tuple[float, float]:
    """(|w_i|, |a_i|) = (tau alpha, tau / alpha) of the (tau, delta) parametrisation (Fig. 1).

    Parameters
    ----------
    tau : float > 0
        Overall scale: |a_i| |w_i| = tau^2.
    delta : float
        Relative scale: a_i^2 - |w_i|^2 = delta (> 0 upstream, 0 balanced, < 0 downstream).

    Returns
    -------
    (float, float)

    Raises
    ------
    InputValidationError
        If tau <= 0.
    """
    if not tau > 0:
        raise InputValidationError(f"tau must be > 0, got {tau}")
    u = delta / tau**2
    alpha = math.sqrt((math.sqrt(4 + u * u) - u) / 2)
    return tau * alpha, tau / alpha


def neuron_deltas(W: torch.Tensor, a: torch.Tensor, eta_w: float = 1.0, eta_a: float = 1.0) -> torch.Tensor:
    """delta_i = eta_w a_i^2 - eta_a |w_i|^2 for every neuron.

    Parameters
    ----------
    W : Tensor (..., m, d)
    a : Tensor (..., m)

    Returns
    -------
    Tensor (..., m)
    """
    _torch_only(W=W, a=a)
    return eta_w * a**2 - eta_a * (W**2).sum(-1)


def deep_linear_invariant(W1: torch.Tensor, W2: torch.Tensor, eta_1: float = 1.0, eta_2: float = 1.0):
    """eta_2 W1 W1^T - eta_1 W2^T W2 for consecutive layers h = W1 x, f = W2 h (W1 (k, d), W2 (o, k));
    conserved under gradient flow with layer rates eta_1, eta_2 (research note, Sec. 1a "Extensions").

    Returns
    -------
    Tensor (k, k)
    """
    _torch_only(W1=W1, W2=W2)
    if W1.ndim != 2 or W2.ndim != 2 or W2.shape[1] != W1.shape[0]:
        raise InputValidationError(
            f"expected W1 (k, d) and W2 (o, k), got {tuple(W1.shape)}, {tuple(W2.shape)}"
        )
    return eta_2 * W1 @ W1.T - eta_1 * W2.T @ W2


def _torch_only(**tensors) -> None:
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise InputValidationError(
                f"{name} must be a torch tensor, got {type(t).__name__}; convert with torch.from_numpy"
            )


def sphere(n: int, d: int, generator: torch.Generator) -> torch.Tensor:
    """n points uniform on the unit sphere in R^d, float64 (n, d)."""
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True)


def teacher_network(d: int, m0: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A teacher of m0 unit-norm ReLU neurons with read-outs +-1: (V (m0, d), s (m0,)), float64."""
    V = sphere(m0, d, generator)
    s = torch.where(torch.randn(m0, generator=generator, dtype=torch.float64) >= 0, 1.0, -1.0).double()
    return V, s


class BatchedReLUNetwork(torch.nn.Module):
    """R independent two-layer ReLU networks f_r(x) = sum_i a_ri relu(w_ri . x), trained together.

    Parameters
    ----------
    W : Tensor (R, m, d) float64
    a : Tensor (R, m) float64

    The initial parameters are kept as buffers (``W0``, ``a0``), so distances from the initialisation survive
    a checkpoint.
    """

    def __init__(self, W: torch.Tensor, a: torch.Tensor):
        super().__init__()
        _torch_only(W=W, a=a)
        if W.ndim != 3 or a.shape != W.shape[:2]:
            raise InputValidationError(
                f"expected W (R, m, d) and a (R, m), got {tuple(W.shape)}, {tuple(a.shape)}"
            )
        self.W = torch.nn.Parameter(W.clone().double())
        self.a = torch.nn.Parameter(a.clone().double())
        self.register_buffer("W0", W.clone().double())
        self.register_buffer("a0", a.clone().double())

    @classmethod
    def symmetric_init(
        cls, taus, deltas, m: int, d: int, generators: list[torch.Generator]
    ) -> BatchedReLUNetwork:
        """Symmetrised (tau, delta) initialisations, one run per (tau_r, delta_r, generator_r).

        Each run draws m/2 directions uniform on the sphere, repeats them, and gives the two copies read-outs
        +tau/alpha and -tau/alpha (random sign per pair), so f = 0 at initialisation.

        Raises
        ------
        InputValidationError
            If m is odd or the lists differ in length.
        """
        if m % 2 or m < 2:
            raise InputValidationError(f"the symmetrised student needs an even width m >= 2, got {m}")
        if not len(taus) == len(deltas) == len(generators):
            raise InputValidationError("taus, deltas and generators must have one entry per run")
        Ws, As = [], []
        for tau, delta, g in zip(taus, deltas, generators, strict=True):
            w_norm, a_norm = tau_delta_scales(float(tau), float(delta))
            half = sphere(m // 2, d, g) * w_norm
            sign = torch.where(torch.randn(m // 2, generator=g, dtype=torch.float64) >= 0, 1.0, -1.0).double()
            Ws.append(torch.cat([half, half]))
            As.append(torch.cat([sign, -sign]) * a_norm)
        return cls(torch.stack(Ws), torch.stack(As))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Outputs (R, n) for inputs X (R, n, d) or (n, d)."""
        pre = X @ self.W.transpose(1, 2) if X.ndim == 3 else torch.einsum("nd,rmd->rnm", X, self.W)
        return (pre.clamp_min(0) * self.a[:, None, :]).sum(-1)

    @torch.no_grad()
    def gradients(self, X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Exact gradients of the per-run loss L_r = mean_n (f_r(x_n) - y_rn)^2.

        Parameters
        ----------
        X : Tensor (R, n, d)
        y : Tensor (R, n)

        Returns
        -------
        loss (R,), dL/dW (R, m, d), dL/da (R, m)
        """
        pre = X @ self.W.transpose(1, 2)  # (R, n, m)
        act = pre.clamp_min(0)
        resid = (act * self.a[:, None, :]).sum(-1) - y  # (R, n)
        n = X.shape[1]
        r = 2.0 / n * resid
        grad_a = (r[:, None, :] @ act).squeeze(1)  # (R, m)
        gated = (pre > 0).to(X.dtype) * r[:, :, None]  # (R, n, m)
        grad_W = (gated.transpose(1, 2) @ X) * self.a[:, :, None]  # (R, m, d)
        return (resid**2).mean(1), grad_W, grad_a

    @torch.no_grad()
    def ntk(self, X: torch.Tensor) -> torch.Tensor:
        """Empirical NTK on inputs X (R, n, d): K = Phi Phi^T + (D diag(a^2) D^T) * (X X^T), (R, n, n), with
        Phi = relu(X W^T) and D = 1[X W^T > 0] (features df/da_i and df/dw_i = a_i 1[w_i . x > 0] x)."""
        pre = X @ self.W.transpose(1, 2)
        phi = pre.clamp_min(0)
        D = (pre > 0).to(X.dtype)
        return phi @ phi.transpose(1, 2) + ((D * self.a[:, None, :] ** 2) @ D.transpose(1, 2)) * (
            X @ X.transpose(1, 2)
        )

    @torch.no_grad()
    def ntk_at_init(self, X: torch.Tensor) -> torch.Tensor:
        """The NTK of the initial parameters, (R, n, n)."""
        W, a = self.W.data.clone(), self.a.data.clone()
        self.W.data.copy_(self.W0)
        self.a.data.copy_(self.a0)
        try:
            return self.ntk(X)
        finally:
            self.W.data.copy_(W)
            self.a.data.copy_(a)

    @torch.no_grad()
    def distances(self, X: torch.Tensor, K0: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Distances from the initialisation on inputs X (R, n, d): ``kernel`` S(0, t), ``hamming`` (fraction
        of switched (neuron, input) pairs), ``parameter`` |theta_t - theta_0|; each (R,)."""
        K0 = self.ntk_at_init(X) if K0 is None else K0
        K = self.ntk(X)
        inner = (K0 * K).sum((1, 2))
        kernel = 1 - inner / (K0.flatten(1).norm(dim=1) * K.flatten(1).norm(dim=1))
        now = (X @ self.W.transpose(1, 2)) > 0
        then = (X @ self.W0.transpose(1, 2)) > 0
        hamming = (now != then).to(X.dtype).mean((1, 2))
        parameter = ((self.W - self.W0) ** 2).sum((1, 2)).add(((self.a - self.a0) ** 2).sum(1)).sqrt()
        return {"kernel": kernel, "hamming": hamming, "parameter": parameter}
