"""Do the exponents at initialisation predict trainability? (Cowsik et al. 2024, Sec. 5: final test loss is
minimal where lambda_a and lambda_g both vanish.)

Task (offline): character-level language modelling on the WordNet 3.0 glosses of Debian's ``wordnet-base``,
split 90/10 into training and test text by synset. ``task="causal"`` (default): windows of n + 1 characters,
causal attention, every position predicts the next character. ``task="masked"``: 15% of n positions are
replaced by a mask symbol and predicted with bidirectional attention (the theory's attention), but at CPU
budgets it learned little beyond unigram statistics (every grid point within 0.06 nats of the unigram entropy,
3.02 nats/char, after 1,500 steps at lr 1e-3 and position scale 0.1), so the grid could not tell
initialisations apart; next-character prediction
gives n targets per window instead of about 0.15 n and separates them within a few hundred steps.

Model: a character embedding plus a learned position embedding (both of squared norm about d), L blocks of the
signal-propagation family initialised with the grid point's (alpha, sigma_w) (alpha_A = alpha_M = alpha,
sigma_A fixed), a final RMS LN and a linear read-out; all weights are trained with Adam. For every grid point
it records lambda_a (closed form), lambda_g (closed form in the ordered phase) and the Monte Carlo Jacobian
growth of the initialised network on real inputs (with the task's own attention mask), then the test loss
after training. Each grid point's result is written atomically to its own JSON, so the grid resumes.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dlscience.errors import InputValidationError
from dlscience.results import save_figure, write_json
from dlscience.signal_propagation.maps import angle_exponent, gradient_exponent
from dlscience.signal_propagation.model import RandomTransformer, SignalPropParams, rms_layer_norm

__all__ = ["TrainabilityConfig", "CharCorpus", "CharTransformer", "train_point", "run_grid", "summarise"]

TASKS = ("causal", "masked")


@dataclass(frozen=True)
class TrainabilityConfig:
    """Settings shared by every grid point.

    Attributes
    ----------
    n_layers, width, n_tokens : int
        L, d (= d_mlp) and the window length n.
    sigma_A : float
        Logit scale at initialisation.
    task : {"causal", "masked"}
        Next-character prediction with causal attention, or masked-character prediction with bidirectional
        attention (see the module docstring).
    pos_scale : float
        Standard deviation of the learned position embedding at initialisation (the character embedding's is 1).
    steps, batch_size : int
    lr : float
        Adam learning rate (cosine decay to 0).
    mask_rate : float
        Fraction of masked positions (``task="masked"`` only).
    eval_batches : int
        Test batches (of batch_size windows) for the final loss.
    seed : int
        Seeds the initialisation, the batches and the masks (the same at every grid point).
    """

    n_layers: int = 16
    width: int = 64
    n_tokens: int = 32
    sigma_A: float = 1.0
    task: str = "causal"
    pos_scale: float = 1.0
    steps: int = 800
    batch_size: int = 32
    lr: float = 3e-3
    mask_rate: float = 0.15
    eval_batches: int = 40
    seed: int = 0

    def __post_init__(self):
        if self.task not in TASKS:
            raise InputValidationError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.steps < 1 or self.batch_size < 1 or self.n_layers < 0 or self.width < 1:
            raise InputValidationError("steps, batch size and width must be >= 1 and layers >= 0")


class CharCorpus:
    """Character windows from a list of texts, split into training and test texts.

    Parameters
    ----------
    texts : list of str
    test_fraction : float
    seed : int
        Seeds the split.
    """

    def __init__(self, texts: list[str], test_fraction: float = 0.1, seed: int = 0):
        if not texts:
            raise InputValidationError("the corpus is empty")
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(texts))
        n_test = max(1, int(len(texts) * test_fraction))
        chars = sorted(set("".join(texts)))
        self.vocab = {c: i + 1 for i, c in enumerate(chars)}  # 0 = mask
        self.vocab_size = len(chars) + 1

        def encode(idx):
            joined = " ".join(texts[i] for i in sorted(idx))
            return torch.tensor([self.vocab[c] for c in joined], dtype=torch.long)

        self.test = encode(order[:n_test])
        self.train = encode(order[n_test:])

    def batch(self, split: str, batch_size: int, n: int, mask_rate: float, generator: torch.Generator):
        """(tokens with masks (B, n), targets (B, n), mask (B, n) bool) from random windows of ``split``.

        With ``mask_rate > 0`` every window has at least one masked position; with 0 the tokens are the
        targets, unmasked.
        """
        data = self.train if split == "train" else self.test
        start = torch.randint(0, len(data) - n, (batch_size,), generator=generator)
        target = torch.stack([data[s : s + n] for s in start.tolist()])
        mask = torch.rand(batch_size, n, generator=generator) < mask_rate
        if mask_rate > 0:
            mask[:, 0] |= ~mask.any(1)  # at least one masked position per window
        return target.masked_fill(mask, 0), target, mask


class CharTransformer(nn.Module):
    """Character and position embeddings, the random-transformer blocks (causal for ``cfg.task == "causal"``),
    RMS LN and a linear read-out.

    Parameters
    ----------
    vocab_size : int
    cfg : TrainabilityConfig
        Width, depth, window length n, task and position-embedding scale.
    params : SignalPropParams
        Initialisation of the blocks (alpha_A, alpha_M, sigma_A, sigma_w, nonlinearity).
    seed : int

    Shapes: ``forward(tokens (B, n') int64, n' <= n) -> logits (B, n', vocab_size)``.
    """

    def __init__(self, vocab_size: int, cfg: TrainabilityConfig, params: SignalPropParams, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed = nn.Parameter(torch.randn(vocab_size, cfg.width, generator=g))
        self.pos = nn.Parameter(torch.randn(cfg.n_tokens, cfg.width, generator=g) * cfg.pos_scale)
        self.body = RandomTransformer(
            cfg.width, cfg.n_layers, params, causal=cfg.task == "causal", seed=seed + 1
        )
        self.read_out = nn.Linear(cfg.width, vocab_size)
        with torch.no_grad():
            self.read_out.weight.normal_(0, 1 / math.sqrt(cfg.width), generator=g)
            self.read_out.bias.zero_()

    def inputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token states entering the blocks, (B, n, d)."""
        return self.embed[tokens] + self.pos[: tokens.shape[1]]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (B, n, vocab)."""
        return self.read_out(rms_layer_norm(self.body(self.inputs(tokens))) / math.sqrt(tokens.shape[-1]))


def _jacobian_growth_at_init(
    model: CharTransformer, tokens: torch.Tensor, generator: torch.Generator
) -> float:
    """(1/L) log(|J|^2 / (n d)) of the blocks at initialisation on real inputs (one probe per window)."""
    x0 = model.inputs(tokens).detach().requires_grad_(True)
    out = model.body(x0)
    r = torch.randn(out.shape, generator=generator)
    (grad,) = torch.autograd.grad((out * r).sum(), x0)
    B, n, d = x0.shape
    L = len(model.body.blocks)
    return math.log(float((grad**2).sum()) / (B * n * d)) / max(1, L)


def _task_loss(
    model: CharTransformer, corpus: CharCorpus, cfg: TrainabilityConfig, split: str, gen: torch.Generator
) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy (nats) over one batch's targets, and the number of targets."""
    if cfg.task == "causal":
        _, window, _ = corpus.batch(split, cfg.batch_size, cfg.n_tokens + 1, 0.0, gen)
        logits = model(window[:, :-1])
        target = window[:, 1:]
        return F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="sum"), target.numel()
    tokens, target, mask = corpus.batch(split, cfg.batch_size, cfg.n_tokens, cfg.mask_rate, gen)
    return F.cross_entropy(model(tokens)[mask], target[mask], reduction="sum"), int(mask.sum())


def train_point(corpus: CharCorpus, cfg: TrainabilityConfig, alpha: float, sigma_w: float) -> dict:
    """Train one model from the grid point (alpha, sigma_w) and return its exponents and losses.

    Parameters
    ----------
    corpus : CharCorpus
    cfg : TrainabilityConfig
    alpha : float
        alpha_A = alpha_M, in [0, 1].
    sigma_w : float
        MLP weight scale, > 0.

    Returns
    -------
    dict
        ``alpha``, ``sigma_w``, ``lambda_a``, ``lambda_g`` (None in the chaotic phase), ``jacobian_growth_mc``,
        ``test_loss`` (nats per character; None if training diverged), ``train_loss_curve`` ([step, loss]
        every 100 steps) and ``seconds``.
    """
    params = SignalPropParams(alpha, alpha, cfg.sigma_A, sigma_w)
    torch.manual_seed(cfg.seed)
    model = CharTransformer(corpus.vocab_size, cfg, params, cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 7)
    mask_rate = cfg.mask_rate if cfg.task == "masked" else 0.0
    tokens, _, _ = corpus.batch("train", cfg.batch_size, cfg.n_tokens, mask_rate, gen)
    jac = _jacobian_growth_at_init(model, tokens, gen)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / cfg.steps)))
    t0, losses = time.perf_counter(), []
    for step in range(cfg.steps):
        total, count = _task_loss(model, corpus, cfg, "train", gen)
        loss = total / count
        if not torch.isfinite(loss):
            losses.append([step, float("nan")])
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == cfg.steps - 1:
            losses.append([step, loss.item()])
    test_gen = torch.Generator().manual_seed(12345)
    total, count = 0.0, 0
    with torch.no_grad():
        for _ in range(cfg.eval_batches):
            batch_total, batch_count = _task_loss(model, corpus, cfg, "test", test_gen)
            total += float(batch_total)
            count += batch_count
    la = angle_exponent(params)
    return {
        "alpha": alpha,
        "sigma_w": sigma_w,
        "lambda_a": la,
        "lambda_g": gradient_exponent(params) if la < 0 else None,
        "jacobian_growth_mc": jac,
        "test_loss": total / count if math.isfinite(total) else None,
        "train_loss_curve": losses,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def run_grid(
    texts: list[str],
    alphas,
    sigma_ws,
    cfg: TrainabilityConfig,
    out: str | Path,
    *,
    progress: bool = True,
) -> dict:
    """Train every grid point not yet in ``out/points/`` and write ``out/trainability.json`` and ``.png``."""
    from tqdm.auto import tqdm

    out = Path(out)
    corpus = CharCorpus(texts, seed=cfg.seed)
    points = [(float(a), float(s)) for s in sigma_ws for a in alphas]
    results = []
    for a, s in tqdm(points, disable=not progress, desc="grid"):
        path = out / "points" / f"alpha={a:g}_sigma_w={s:g}.json"
        if path.exists():
            saved = json.loads(path.read_text())
            if saved.get("config") == asdict(cfg):
                results.append(saved["result"])
                continue
        res = train_point(corpus, cfg, a, s)
        write_json(path, {"config": asdict(cfg), "result": res})
        results.append(res)
    summary = summarise(results)
    summary["config"] = asdict(cfg)
    write_json(out / "trainability.json", summary)
    save_figure(out / "trainability.png", _figure(results, summary))
    return summary


def summarise(results: list[dict]) -> dict:
    """Spearman rank correlation between test loss and the exponents' distance from zero, and where the loss is
    minimal.

    Distance: sqrt(lambda_a^2 + lambda_J^2), with lambda_J the Monte Carlo Jacobian growth at initialisation
    (defined in both phases; it equals lambda_g's finite-depth prediction in the ordered phase). Runs that
    diverged count as the worst losses.
    """
    from scipy.stats import spearmanr

    la = np.array([r["lambda_a"] for r in results], dtype=float)
    lj = np.array([r["jacobian_growth_mc"] for r in results], dtype=float)
    loss = np.array([np.inf if r["test_loss"] is None else r["test_loss"] for r in results], dtype=float)
    dist = np.sqrt(np.clip(la, -5, 5) ** 2 + lj**2)
    finite_loss = np.where(
        np.isfinite(loss), loss, np.nanmax(loss[np.isfinite(loss)]) + 1 if np.isfinite(loss).any() else 0
    )
    rho, pval = spearmanr(dist, finite_loss)
    rho_a, _ = spearmanr(np.abs(np.clip(la, -5, 5)), finite_loss)
    rho_j, _ = spearmanr(np.abs(lj), finite_loss)
    best = int(np.argmin(finite_loss))
    return {
        "points": results,
        "spearman_loss_vs_distance": float(rho),
        "p_value": float(pval),
        "spearman_loss_vs_abs_lambda_a": float(rho_a),
        "spearman_loss_vs_abs_jacobian_growth": float(rho_j),
        "best": {
            k: results[best][k] for k in ("alpha", "sigma_w", "lambda_a", "jacobian_growth_mc", "test_loss")
        },
        "distance_rank_of_best": int((dist < dist[best]).sum()),
    }


def _figure(results, summary):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = np.array([r["alpha"] for r in results])
    s = np.array([r["sigma_w"] for r in results])
    loss = np.array([np.nan if r["test_loss"] is None else r["test_loss"] for r in results])
    la = np.array([r["lambda_a"] for r in results])
    lj = np.array([r["jacobian_growth_mc"] for r in results])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    sc = ax1.scatter(a, s, c=loss, cmap="viridis_r", s=160, marker="s")
    fig.colorbar(sc, ax=ax1, label="test loss (nats/char)")
    ua, us = np.unique(a), np.unique(s)
    if len(ua) > 1 and len(us) > 1 and len(ua) * len(us) == len(results):
        grid = lambda v: v.reshape(len(us), len(ua))  # noqa: E731  (rows sigma_w, columns alpha)
        order = np.lexsort((a, s))
        ax1.contour(ua, us, grid(la[order]), levels=[0], colors="k", linestyles="--")
        ax1.contour(ua, us, grid(lj[order]), levels=[0], colors="r")
    ax1.set_xlabel("alpha")
    ax1.set_ylabel("sigma_w")
    ax1.set_title("test loss; dashed: lambda_a = 0, red: Jacobian growth = 0", fontsize=8)
    dist = np.sqrt(np.clip(la, -5, 5) ** 2 + lj**2)
    ax2.scatter(dist, loss)
    ax2.set_xlabel("distance of (lambda_a, lambda_J) from 0")
    ax2.set_ylabel("test loss")
    ax2.set_title(f"Spearman rho = {summary['spearman_loss_vs_distance']:.2f}", fontsize=9)
    fig.tight_layout()
    return fig
