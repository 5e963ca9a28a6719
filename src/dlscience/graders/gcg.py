"""Greedy coordinate gradient (GCG) search for a universal suffix that raises the grader's objective
(Zou et al. 2023; nanoGCG's loop; research note helm_graders.md part C, "Reconstruction" step 4).

Each step: the gradient of the mean objective over the attack essays with respect to the one-hot suffix gives,
per position, the ``topk`` tokens that raise it most to first order; ``search_width`` candidates each replace
``n_replace`` random positions by one of those tokens; every candidate is evaluated exactly (cached essay
heads, :meth:`~dlscience.graders.grader.Grader.objective`), the best candidate becomes the current suffix (it
may be worse than the last one) and the best suffix seen so far is kept and returned.

Why our own loop rather than ``nanogcg``: nanoGCG optimises the cross-entropy of a target string, while the
objective here is the expected grade and/or the projection of a hidden state on a probe direction, averaged over
several essays; both need the grader's score-token read-out and cached heads, which nanoGCG's API does not take.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from dlscience.errors import InputValidationError
from dlscience.graders.essays import Essay
from dlscience.graders.grader import Grader, Objective

__all__ = [
    "GCGConfig",
    "GCGResult",
    "allowed_tokens",
    "sample_candidates",
    "run_gcg",
    "random_suffixes",
    "bootstrap_mean",
]


@dataclass(frozen=True)
class GCGConfig:
    """Settings of the search (nanoGCG's names; CPU-sized defaults).

    Attributes
    ----------
    suffix_length : int >= 1
    steps : int >= 1
    search_width : int >= 1
        Candidates evaluated per step.
    topk : int >= 1
        Tokens kept per position from the gradient.
    n_replace : int >= 1
        Positions changed per candidate.
    seed : int
    filter_roundtrip : bool
        Keep only candidates whose decoded text re-encodes to the same ids.
    init : str
        Initial suffix text, repeated/truncated to ``suffix_length`` tokens (nanoGCG: "x x x ...").
    """

    suffix_length: int = 10
    steps: int = 20
    search_width: int = 32
    topk: int = 64
    n_replace: int = 1
    seed: int = 0
    filter_roundtrip: bool = True
    init: str = " x"

    def __post_init__(self):
        for name in ("suffix_length", "steps", "search_width", "topk", "n_replace"):
            if getattr(self, name) < 1:
                raise InputValidationError(f"GCG {name} must be >= 1, got {getattr(self, name)}")
        if self.n_replace > self.suffix_length:
            raise InputValidationError("n_replace cannot exceed suffix_length")


@dataclass
class GCGResult:
    """Outcome of :func:`run_gcg`.

    Attributes
    ----------
    best_ids : list of int
    best_value : float
        Mean objective of ``best_ids`` over the attack essays.
    initial_value : float
    history : list of dict
        Per step: ``{"step", "value" (adopted candidate), "best" (best so far), "suffix" (text)}``.
    """

    best_ids: list
    best_value: float
    initial_value: float
    history: list = field(default_factory=list)


def allowed_tokens(tokenizer, vocab_size: int) -> torch.Tensor:
    """Bool (V,): printable ASCII tokens that are not special (nanoGCG excludes non-ASCII and special ids)."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    ok = torch.zeros(vocab_size, dtype=torch.bool)
    for i in range(vocab_size):
        if i in special:
            continue
        s = tokenizer.decode([i])
        ok[i] = bool(s) and s.isascii() and s.isprintable() and "<|" not in s
    return ok


def sample_candidates(
    suffix: torch.Tensor, grad: torch.Tensor, allowed: torch.Tensor, cfg: GCGConfig, gen: torch.Generator
) -> torch.Tensor:
    """``search_width`` candidates, each ``suffix`` with ``n_replace`` positions swapped for one of that
    position's ``topk`` highest-gradient allowed tokens.

    Parameters
    ----------
    suffix : LongTensor (S,)
    grad : Tensor (S, V)
        d objective / d one-hot (higher = better).
    allowed : BoolTensor (V,)

    Returns
    -------
    LongTensor (search_width, S)
    """
    g = grad.clone()
    g[:, ~allowed] = -float("inf")
    top = g.topk(cfg.topk, dim=1).indices  # (S, k)
    S = len(suffix)
    cand = suffix.repeat(cfg.search_width, 1)
    for b in range(cfg.search_width):
        pos = torch.randperm(S, generator=gen)[: cfg.n_replace]
        pick = torch.randint(cfg.topk, (cfg.n_replace,), generator=gen)
        cand[b, pos] = top[pos, pick]
    return cand


def _roundtrip_ok(grader: Grader, cand: torch.Tensor) -> torch.Tensor:
    return torch.tensor([grader.encode(grader.decode(c.tolist())) == c.tolist() for c in cand])


def _initial(grader: Grader, cfg: GCGConfig) -> torch.Tensor:
    ids = grader.encode(cfg.init * cfg.suffix_length)[: cfg.suffix_length]
    if len(ids) < cfg.suffix_length:
        raise InputValidationError(f"init {cfg.init!r} gives fewer than {cfg.suffix_length} tokens")
    return torch.tensor(ids)


def run_gcg(
    grader: Grader,
    essays: list[Essay],
    objective: Objective,
    cfg: GCGConfig | None = None,
    *,
    allowed: torch.Tensor | None = None,
    progress=None,
    resume: dict | None = None,
    on_step=None,
) -> GCGResult:
    """Search a universal suffix maximising ``objective`` averaged over ``essays`` (module docstring).

    Parameters
    ----------
    grader : Grader
    essays : list of Essay
        The attack set (the suffix is shared by all of them).
    objective : Objective
    cfg : GCGConfig
    allowed : BoolTensor (V,), optional
        Default :func:`allowed_tokens`.
    progress : callable(step, best), optional
    resume : dict, optional
        A state from ``on_step`` (``{"step", "current", "best_ids", "best_value", "initial_value", "history",
        "rng"}``) to continue from.
    on_step : callable(state), optional
        Called after every step with the resumable state (to checkpoint it).

    Returns
    -------
    GCGResult

    Raises
    ------
    InputValidationError
        No essays, or no allowed token.
    """
    cfg = GCGConfig() if cfg is None else cfg
    if not essays:
        raise InputValidationError("the attack needs at least one essay")
    V = grader.lm.get_input_embeddings().weight.shape[0]
    allowed = allowed_tokens(grader.tokenizer, V) if allowed is None else allowed
    if not allowed.any():
        raise InputValidationError("no token is allowed in the suffix")
    gen = torch.Generator().manual_seed(cfg.seed)
    if resume:
        current = torch.tensor(resume["current"])
        best_ids, best_value = list(resume["best_ids"]), resume["best_value"]
        initial_value, history, start = resume["initial_value"], list(resume["history"]), resume["step"]
        gen.set_state(torch.frombuffer(bytearray.fromhex(resume["rng"]), dtype=torch.uint8))
    else:
        current = _initial(grader, cfg)
        initial_value = float(grader.objective(essays, current[None], objective)[0])
        best_ids, best_value, history, start = current.tolist(), initial_value, [], 0
    for step in range(start, cfg.steps):
        grad, _ = grader.gradient(essays, current, objective)
        cand = sample_candidates(current, grad, allowed, cfg, gen)
        if cfg.filter_roundtrip:
            keep = _roundtrip_ok(grader, cand)
            if keep.any():
                cand = cand[keep]
        values = grader.objective(essays, cand, objective)
        i = int(values.argmax())
        current, value = cand[i], float(values[i])
        if value > best_value:
            best_ids, best_value = current.tolist(), value
        history.append(
            {"step": step + 1, "value": value, "best": best_value, "suffix": grader.decode(current)}
        )
        if progress:
            progress(step + 1, best_value)
        if on_step:
            on_step(
                {
                    "step": step + 1,
                    "current": current.tolist(),
                    "best_ids": best_ids,
                    "best_value": best_value,
                    "initial_value": initial_value,
                    "history": history,
                    "rng": gen.get_state().numpy().tobytes().hex(),
                }
            )
    return GCGResult(best_ids, best_value, initial_value, history)


def random_suffixes(allowed: torch.Tensor, length: int, count: int, seed: int = 0) -> list[list[int]]:
    """``count`` suffixes of ``length`` tokens drawn uniformly from the allowed tokens (the baseline the
    optimised suffix is compared with), seeded."""
    ids = allowed.nonzero().flatten()
    g = torch.Generator().manual_seed(seed)
    return [ids[torch.randint(len(ids), (length,), generator=g)].tolist() for _ in range(count)]


def bootstrap_mean(
    x, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean of ``x`` with a percentile bootstrap interval: (mean, low, high)."""
    x = np.asarray(x, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (n_boot, len(x)))].mean(1)
    a = (1 - level) / 2
    return float(x.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a))
