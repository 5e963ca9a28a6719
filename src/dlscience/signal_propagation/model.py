"""Random transformers for signal propagation (Cowsik, Nebabu, Qi & Ganguli 2024, Sec. 2; research note
theory_transformers.md, paper 1, Sec. a).

n tokens x_i in R^d pass through L blocks; each block is single-head self-attention followed by a tokenwise
MLP, both pre-LN with residual strengths:

    x <- c_A x + alpha_A Attn(LN x),        x <- c_M x + alpha_M MLP(LN x)

with c = sqrt(1 - alpha^2) (``residual="complementary"``) or c = 1 (``residual="identity"``), and LN the
parameter-free RMS projection LN(x) = sqrt(d) x / |x|. Initialisation (the note's "Assumption 3.3"):

* W_Q, W_K entries ~ N(0, sigma_A / d), logits q_i . k_j / sqrt(d), so each logit has variance sigma_A^2;
* W_V ~ N(0, sigma_V^2 / d) (sigma_V = 1);
* W_1 ~ N(0, sigma_w^2 / d), W_2 ~ N(0, 1 / d_mlp), no biases; phi = tanh, ReLU or GELU.

Attention is bidirectional (no mask) unless ``causal=True`` (used for language modelling).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import nn

from dlscience.errors import InputValidationError
from dlscience.signal_propagation.nonlinearities import NONLINEARITIES, phi

__all__ = ["SignalPropParams", "RandomTransformer", "rms_layer_norm", "NONLINEARITIES"]


@dataclass(frozen=True)
class SignalPropParams:
    """Initialisation hyperparameters of the block family.

    Attributes
    ----------
    alpha_A, alpha_M : float
        Residual strengths of the attention and MLP branches, in [0, 1] (complementary residual) or >= 0.
    sigma_A : float
        Standard deviation of the attention logits (>= 0).
    sigma_w : float
        Scale of the MLP's first layer (> 0).
    sigma_V : float
        Scale of the value matrix (paper 1).
    nonlinearity : {"tanh", "relu", "gelu"}
        phi (paper: tanh).
    residual : {"complementary", "identity"}
        c = sqrt(1 - alpha^2) or c = 1.
    """

    alpha_A: float = 0.5
    alpha_M: float = 0.5
    sigma_A: float = 1.0
    sigma_w: float = 1.0
    sigma_V: float = 1.0
    nonlinearity: str = "tanh"
    residual: str = "complementary"

    def __post_init__(self):
        if self.nonlinearity not in NONLINEARITIES:
            raise InputValidationError(
                f"nonlinearity must be one of {NONLINEARITIES}, got {self.nonlinearity!r}"
            )
        if self.residual not in ("complementary", "identity"):
            raise InputValidationError(
                f"residual must be 'complementary' or 'identity', got {self.residual!r}"
            )
        hi = 1.0 if self.residual == "complementary" else math.inf
        for name in ("alpha_A", "alpha_M"):
            if not 0.0 <= getattr(self, name) <= hi:
                raise InputValidationError(
                    f"{name} must be in [0, 1] with complementary residuals (c = sqrt(1 - alpha^2)), got "
                    f"{getattr(self, name)}"
                )
        if self.sigma_A < 0:
            raise InputValidationError(f"sigma_A (--sigma-A) must be >= 0, got {self.sigma_A}")
        if self.sigma_w <= 0:
            raise InputValidationError(f"sigma_w (--sigma-w) must be > 0, got {self.sigma_w}")
        if self.sigma_V <= 0:
            raise InputValidationError(f"sigma_V must be > 0, got {self.sigma_V}")

    @property
    def c_A(self) -> float:
        """Coefficient of the attention sublayer's skip path."""
        return math.sqrt(1 - self.alpha_A**2) if self.residual == "complementary" else 1.0

    @property
    def c_M(self) -> float:
        """Coefficient of the MLP sublayer's skip path."""
        return math.sqrt(1 - self.alpha_M**2) if self.residual == "complementary" else 1.0


def _check_tokens(x, func: str) -> None:
    """Refuse anything but a floating-point torch tensor of tokens (..., n, d)."""
    if not isinstance(x, torch.Tensor):
        raise InputValidationError(
            f"{func}: x must be a torch.Tensor of tokens (..., n, d), got {type(x).__name__}; convert with "
            "torch.as_tensor(x)"
        )
    if not x.dtype.is_floating_point or x.dim() < 1:
        raise InputValidationError(
            f"{func}: x must be a floating-point tensor (..., n, d), got {x.dtype} of shape {tuple(x.shape)}"
        )


def rms_layer_norm(x: torch.Tensor) -> torch.Tensor:
    """LN(x) = sqrt(d) x / |x| over the last axis (no gain, no bias): every token gets squared norm d.

    Parameters
    ----------
    x : torch.Tensor, (..., d), floating point

    Returns
    -------
    torch.Tensor, same shape and dtype

    Raises
    ------
    InputValidationError
        If ``x`` is not a floating-point torch tensor (numpy arrays are refused).
    """
    _check_tokens(x, "rms_layer_norm")
    return x * (x.shape[-1] ** 0.5) / x.norm(dim=-1, keepdim=True).clamp_min(1e-30)


class _Block(nn.Module):
    def __init__(self, d: int, d_mlp: int, p: SignalPropParams, causal: bool):
        super().__init__()
        self.p, self.causal, self.phi = p, causal, phi(p.nonlinearity)
        self.W_Q = nn.Parameter(torch.randn(d, d) * math.sqrt(p.sigma_A / d))
        self.W_K = nn.Parameter(torch.randn(d, d) * math.sqrt(p.sigma_A / d))
        self.W_V = nn.Parameter(torch.randn(d, d) * (p.sigma_V / math.sqrt(d)))
        self.W_1 = nn.Parameter(torch.randn(d_mlp, d) * (p.sigma_w / math.sqrt(d)))
        self.W_2 = nn.Parameter(torch.randn(d, d_mlp) / math.sqrt(d_mlp))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        h = rms_layer_norm(x)
        q, k, v = h @ self.W_Q.T, h @ self.W_K.T, h @ self.W_V.T
        logits = q @ k.transpose(-1, -2) / math.sqrt(x.shape[-1])
        if self.causal:
            n = x.shape[-2]
            logits = logits.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
        return torch.softmax(logits, dim=-1) @ v

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.phi(rms_layer_norm(x) @ self.W_1.T) @ self.W_2.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p
        x = p.c_A * x + p.alpha_A * self.attention(x)
        return p.c_M * x + p.alpha_M * self.mlp(x)


class RandomTransformer(nn.Module):
    """L random blocks of the family above acting on (..., n, d) token matrices.

    Parameters
    ----------
    d : int
        Token width.
    n_layers : int
        L.
    params : SignalPropParams
    d_mlp : int, optional
        MLP hidden width (default d).
    causal : bool
        Causal attention mask.
    seed : int, optional
        Seeds the weights (otherwise torch's global generator is used).
    """

    def __init__(
        self,
        d: int,
        n_layers: int,
        params: SignalPropParams,
        d_mlp: int | None = None,
        causal: bool = False,
        seed: int | None = None,
    ):
        super().__init__()
        if d < 1 or n_layers < 0:
            raise InputValidationError(f"need d >= 1 and n_layers >= 0, got {d}, {n_layers}")
        if not isinstance(params, SignalPropParams):
            raise InputValidationError(f"params must be a SignalPropParams, got {type(params).__name__}")
        self.params, self.d = params, d
        ctx = torch.random.fork_rng() if seed is not None else contextlib.nullcontext()
        with ctx:
            if seed is not None:
                torch.manual_seed(seed)
            self.blocks = nn.ModuleList(_Block(d, d_mlp or d, params, causal) for _ in range(n_layers))

    def forward(self, x: torch.Tensor, return_all: bool = False):
        """Apply every block: x (..., n, d) -> (..., n, d), or the list of all L + 1 states.

        Raises
        ------
        InputValidationError
            If ``x`` is not a floating-point torch tensor whose last axis is the width d.
        """
        _check_tokens(x, "RandomTransformer")
        if x.dim() < 2 or x.shape[-1] != self.d:
            raise InputValidationError(
                f"RandomTransformer: x must have shape (..., n, {self.d}), got {tuple(x.shape)}"
            )
        states = [x]
        for block in self.blocks:
            x = block(x)
            states.append(x)
        return states if return_all else x
