"""The paper's transformer for in-context regression (Raventos et al. 2023, Sec. 2; reference code
``icl/gpt2.py`` and ``icl/models.py``, research note paper 2 Sec. a).

Tokens: a sequence of K pairs becomes 2K tokens of dimension D + 1, interleaved x_1, y_1, x_2, ...:

    x-token = (0, x_k),    y-token = (y_k, 0, ..., 0)

read in by a linear map without bias, plus learned position embeddings (2K of them). A GPT-2 stack (pre-LN:
h + attn(LN h), then h + mlp(LN h); causal attention; 4x MLP with tanh-approximate GELU; LayerNorm eps 1e-5;
biases; no dropout), a final LayerNorm and a linear read-out to one number without bias. The prediction of y_k
is the read-out at the x-token of position k, which sees only x_1, y_1, ..., x_k (causal).

Initialisation (nanoGPT / GPT-2): weights N(0, 0.02), the residual output projections N(0, 0.02 / sqrt(2 L)),
biases 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from dlscience.errors import InputValidationError
from dlscience.icl.estimators import ICLEstimator

__all__ = ["TransformerICL", "to_tokens"]


def to_tokens(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Interleave pairs into tokens: xs (B, K, D), ys (B, K) -> (B, 2K, D + 1), x-token (0, x), y-token (y, 0)."""
    B, K, D = xs.shape
    x_tok = torch.cat([torch.zeros(B, K, 1, dtype=xs.dtype), xs], dim=-1)
    y_tok = torch.cat([ys[..., None], torch.zeros(B, K, D, dtype=xs.dtype)], dim=-1)
    return torch.stack([x_tok, y_tok], dim=2).reshape(B, 2 * K, D + 1)


class _Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(n_embd, eps=1e-5)
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.attn_proj = nn.Linear(n_embd, n_embd)
        self.ln_2 = nn.LayerNorm(n_embd, eps=1e-5)
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.mlp_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        B, T, C = h.shape
        q, k, v = self.c_attn(self.ln_1(h)).split(C, dim=2)
        q, k, v = (z.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + self.attn_proj(a.transpose(1, 2).reshape(B, T, C))
        return h + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(h)), approximate="tanh"))


class TransformerICL(ICLEstimator, nn.Module):
    """GPT-2-style pre-LN transformer reading interleaved (x, y) tokens.

    Parameters
    ----------
    n_dims : int
        D.
    n_points : int
        K (the model has 2K learned positions; shorter sequences are fine, longer ones are refused).
    n_layer, n_embd, n_head : int
        Paper: base 8 / 128 / 2, small 4 / 64 / 2, large 12 / 256 / 4. n_embd must be divisible by n_head.

    Raises
    ------
    InputValidationError
        A size below 1, or n_embd not divisible by n_head.

    Notes
    -----
    ``forward(xs, ys)`` returns (B, K) predictions with gradients (training); :meth:`predict` is the
    :class:`~dlscience.icl.estimators.ICLEstimator` method (no gradients, evaluation mode).
    """

    name = "transformer"

    def __init__(
        self, n_dims: int = 8, n_points: int = 16, n_layer: int = 4, n_embd: int = 64, n_head: int = 2
    ):
        nn.Module.__init__(self)
        sizes = {
            "n_dims": n_dims,
            "n_points": n_points,
            "n_layer": n_layer,
            "n_embd": n_embd,
            "n_head": n_head,
        }
        bad = [f"{k} = {v!r}" for k, v in sizes.items() if not isinstance(v, int) or v < 1]
        if bad:
            raise InputValidationError(f"TransformerICL: sizes must be integers >= 1, got {', '.join(bad)}")
        if n_embd % n_head:
            raise InputValidationError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        self.n_dims, self.n_points = n_dims, n_points
        self.max_points = n_points
        self.read_in = nn.Linear(n_dims + 1, n_embd, bias=False)
        self.wpe = nn.Embedding(2 * n_points, n_embd)
        self.blocks = nn.ModuleList(_Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, eps=1e-5)
        self.read_out = nn.Linear(n_embd, 1, bias=False)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "ln" in name:
                continue
            elif name.endswith("proj.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layer))
            else:
                nn.init.normal_(p, std=0.02)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Predictions at the x-tokens: xs (B, K, D), ys (B, K) -> (B, K) float32, differentiable.

        Raises
        ------
        InputValidationError
            As :meth:`~dlscience.icl.estimators.ICLEstimator.predict` (K must be <= ``n_points``).
        """
        self._validate(xs, ys, "forward")
        return self._forward(xs, ys)

    def _forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        K = xs.shape[1]
        tokens = to_tokens(xs.float(), ys.float())
        h = self.read_in(tokens) + self.wpe(torch.arange(2 * K, device=tokens.device))
        for block in self.blocks:
            h = block(h)
        return self.read_out(self.ln_f(h))[:, 0::2, 0]

    @torch.no_grad()
    def _predict(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Evaluation-mode predictions without gradients, (B, K) float32 on the inputs' device (computed on the
        model's device, e.g. a GPU, when the two differ)."""
        was_training = self.training
        self.eval()
        device = self.wpe.weight.device
        try:
            return self._forward(xs.to(device), ys.to(device)).to(xs.device)
        finally:
            self.train(was_training)
