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
after training. Each grid point's result is written atomically to its own JSON in the run folder
(:class:`~dlscience.runs.RunFolder`), so the grid resumes point by point; training uses the one loop
(:func:`~dlscience.training_loop.train_loop`), so Ctrl-C says which points were kept.

Determinism: a grid point trains with one intra-op thread. With several, the float32 reductions of the matrix
products are split between threads in ways that depend on the machine's load and core count, so two runs of
the same settings differed in the last bits (measured: 3.2657316 vs 3.2657318 nats for one point, run alone and
beside another job); with one thread the numbers are identical from run to run. Wall-clock seconds are kept
beside each point's result, not in it.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dlscience.errors import InputValidationError, UserError
from dlscience.results import read_json
from dlscience.runs import MANIFEST, RunFolder, RunInterrupted
from dlscience.signal_propagation.maps import angle_exponent, gradient_exponent
from dlscience.signal_propagation.model import RandomTransformer, SignalPropParams, rms_layer_norm
from dlscience.training_loop import new_state, train_loop

__all__ = [
    "TrainabilityConfig",
    "CharCorpus",
    "CharTransformer",
    "train_point",
    "run_grid",
    "summarise",
    "point_name",
    "texts_digest",
]

TASKS = ("causal", "masked")
LOG_EVERY = 100  # steps per point of the training-loss curve (mean over the window)
COMMAND = "sigprop trainability"
OUTPUTS = ("points", "trainability.json", "trainability.png")


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
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise InputValidationError("CharCorpus: texts must be a list of str")
        if not texts:
            raise InputValidationError("the corpus is empty")
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(texts))
        n_test = max(1, int(len(texts) * test_fraction))
        chars = sorted(set(" ".join(texts)))  # texts are joined with spaces
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
        if len(data) <= n:
            raise InputValidationError(
                f"the {split} text has {len(data)} characters, too few for windows of {n}; use more texts or "
                "a shorter window"
            )
        if not isinstance(generator, torch.Generator):
            raise InputValidationError(
                f"CharCorpus.batch: generator must be a torch.Generator, got {type(generator).__name__}"
            )
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
        """Token states entering the blocks, (B, n, d).

        Raises
        ------
        InputValidationError
            If ``tokens`` is not an integer torch tensor (B, n') with n' <= n (numpy arrays are refused).
        """
        if not isinstance(tokens, torch.Tensor):
            raise InputValidationError(
                "CharTransformer: tokens must be a torch.Tensor of int64 (B, n), got "
                f"{type(tokens).__name__}; convert with torch.as_tensor(tokens)"
            )
        if tokens.dtype.is_floating_point or tokens.dim() != 2 or tokens.shape[1] > self.pos.shape[0]:
            raise InputValidationError(
                f"CharTransformer: tokens must be integers of shape (B, n <= {self.pos.shape[0]}), got "
                f"{tokens.dtype} {tuple(tokens.shape)}"
            )
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
    sq = float((grad**2).sum())
    return math.log(sq / (B * n * d)) / max(1, L) if sq > 0 else -math.inf


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


class _Diverged(Exception):
    """The training loss became NaN or infinite."""


@contextlib.contextmanager
def _one_thread():
    """Run torch with one intra-op thread (bit-identical reductions whatever the load; see the module docs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_point(
    corpus: CharCorpus,
    cfg: TrainabilityConfig,
    alpha: float,
    sigma_w: float,
    *,
    progress: bool = False,
) -> dict:
    """Train one model from the grid point (alpha, sigma_w) and return its exponents and losses.

    Deterministic for ``cfg.seed``: the weights, batches and probes come from seeded generators and the work runs
    on one intra-op thread, so two calls return identical numbers. Training uses
    :func:`~dlscience.training_loop.train_loop` without a checkpoint (a point is short; the grid resumes per
    point).

    Parameters
    ----------
    corpus : CharCorpus
    cfg : TrainabilityConfig
    alpha : float
        alpha_A = alpha_M, in [0, 1].
    sigma_w : float
        MLP weight scale, > 0.
    progress : bool
        Show the training progress bar.

    Returns
    -------
    dict
        ``alpha``, ``sigma_w``, ``lambda_a``, ``lambda_g`` (None in the chaotic phase), ``jacobian_growth_mc``,
        ``test_loss`` (nats per character; None if training diverged) and ``train_loss_curve`` ([step, mean
        loss over the last 100 steps], or [step, None] at the step where the loss stopped being finite).

    Raises
    ------
    RunInterrupted
        On SIGINT/SIGTERM, naming the step and the grid point (nothing of this point is kept).
    """
    if not isinstance(corpus, CharCorpus) or not isinstance(cfg, TrainabilityConfig):
        raise InputValidationError("train_point needs a CharCorpus and a TrainabilityConfig")
    params = SignalPropParams(alpha, alpha, cfg.sigma_A, sigma_w)
    with _one_thread():
        model = CharTransformer(corpus.vocab_size, cfg, params, cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed + 7)
        mask_rate = cfg.mask_rate if cfg.task == "masked" else 0.0
        tokens, _, _ = corpus.batch("train", cfg.batch_size, cfg.n_tokens, mask_rate, gen)
        jac = _jacobian_growth_at_init(model, tokens, gen)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / cfg.steps))
        )

        def step() -> float:
            total, count = _task_loss(model, corpus, cfg, "train", gen)
            loss = total / count
            if not torch.isfinite(loss):
                raise _Diverged
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            return loss.item()

        state, diverged = new_state(), False
        try:
            train_loop(
                step,
                state,
                steps=cfg.steps,
                checkpoint=None,
                progress=progress,
                desc=f"alpha={alpha:g} sigma_w={sigma_w:g}",
                log_every=min(LOG_EVERY, cfg.steps),
            )
        except _Diverged:
            diverged = True
            state["losses"].append([state["step"] + 1, None])
        except RunInterrupted:
            raise RunInterrupted(
                f"interrupted at step {state['step']} of {cfg.steps} of grid point alpha={alpha:g}, "
                f"sigma_w={sigma_w:g}"
            ) from None
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
        "test_loss": total / count if math.isfinite(total) and not diverged else None,
        "train_loss_curve": state["losses"],
    }


def point_name(alpha: float, sigma_w: float) -> str:
    """The file of one grid point in the run folder: ``points/alpha=A_sigma_w=S.json``."""
    return f"points/alpha={alpha:g}_sigma_w={sigma_w:g}.json"


def texts_digest(texts: list[str]) -> str:
    """SHA-256 (16 hex digits) of the corpus texts (joined with newlines, UTF-8): the run's input digest."""
    import hashlib

    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\n")
    return h.hexdigest()[:16]


def _read_point(path: Path, config: dict, out: Path, *, legacy: bool = False) -> dict:
    """A saved grid point's result; its config must be ``config`` (``legacy``: a folder without a manifest)."""
    saved = read_json(path, what="trainability grid point", fix="delete it to retrain that grid point")
    if not isinstance(saved, dict) or not isinstance(saved.get("result"), dict) or "config" not in saved:
        raise UserError(f"{path} is not a trainability grid point; delete it to retrain that grid point")
    if saved["config"] != config:
        old = saved["config"] if isinstance(saved["config"], dict) else {}
        diffs = [f"{k} {old.get(k)!r} -> {v!r}" for k, v in config.items() if old.get(k) != v]
        differs = ", ".join(diffs[:4]) or "unknown"
        if legacy:
            raise UserError(
                f"{out} was written by an earlier dlscience, before run manifests, with other settings "
                f"({path.name}: {differs}); rerun with --overwrite to start it afresh, or use another --out"
            )
        raise UserError(
            f"{path} was trained with other settings ({differs}); rerun with --overwrite to start {out} "
            "afresh, or use another --out"
        )
    needed = ("alpha", "sigma_w", "lambda_a", "jacobian_growth_mc", "test_loss")
    if any(k not in saved["result"] for k in needed):
        raise UserError(f"{path} lacks fields of a grid point's result; delete it to retrain that grid point")
    return saved["result"]


def _check_legacy(out: Path, config: dict) -> None:
    """A folder written before manifests is adopted only if every grid point in it has these settings."""
    if (out / MANIFEST).exists() or not (out / "points").is_dir():
        return
    for path in sorted((out / "points").glob("*.json")):
        _read_point(path, config, out, legacy=True)


def run_grid(
    texts: list[str],
    alphas,
    sigma_ws,
    cfg: TrainabilityConfig,
    out: str | Path,
    *,
    progress: bool = True,
    overwrite: bool = False,
    settings: dict | None = None,
) -> dict:
    """Train every grid point not yet in ``out/points/`` and write ``out/trainability.json`` and ``.png``.

    ``out`` is a :class:`~dlscience.runs.RunFolder` ("sigprop trainability") whose identity is ``cfg`` and the
    corpus digest: the same settings resume (also with a larger or smaller grid: points are kept per
    (alpha, sigma_w)); other settings are refused unless ``overwrite``. A folder written before manifests is
    adopted when every grid point in it was trained with ``cfg``, otherwise refused (rerun with --overwrite).

    Parameters
    ----------
    texts : list of str
        The corpus (see :class:`CharCorpus`).
    alphas, sigma_ws : sequences of float
        The grid (every combination).
    cfg : TrainabilityConfig
    out : path
        The run folder.
    progress : bool
        Progress bars (grid and training).
    overwrite : bool
        Replace a run of other settings in ``out``.
    settings : dict, optional
        Further settings recorded in the manifest (not part of the identity), e.g. the corpus folder.

    Returns
    -------
    dict
        The summary (see :func:`summarise`) with ``config`` and ``grid``.

    Raises
    ------
    UserError
        ``out`` holds another run, a damaged grid point, or is a file.
    RunInterrupted
        On SIGINT/SIGTERM; the message says how many grid points are saved.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    config = asdict(cfg)
    alphas, sigma_ws = [float(a) for a in alphas], [float(s) for s in sigma_ws]
    if not alphas or not sigma_ws:
        raise InputValidationError("the grid needs at least one alpha and one sigma_w")
    points = list(dict.fromkeys((a, s) for s in sigma_ws for a in alphas))
    corpus = CharCorpus(texts, seed=cfg.seed)
    for split, data in (("train", corpus.train), ("test", corpus.test)):
        if len(data) <= cfg.n_tokens + 1:
            raise InputValidationError(
                f"the corpus' {split} text has {len(data)} characters, too few for windows of "
                f"{cfg.n_tokens + 1}; use more texts"
            )
    grid = {"alphas": alphas, "sigma_ws": sigma_ws}
    if not overwrite:
        _check_legacy(out, config)
    run = RunFolder(
        out,
        COMMAND,
        {"config": config, "grid": grid, **(settings or {})},
        identity={"config": config},
        inputs={"corpus": texts_digest(texts)},
        overwrite=overwrite,
        outputs=OUTPUTS,
        legacy=OUTPUTS,
        adopt_legacy=True,
    )
    with run:
        results = []
        for i, (a, s) in enumerate(tqdm(points, disable=not progress, desc="grid")):
            name = point_name(a, s)
            if (out / name).exists():
                results.append(_read_point(out / name, config, out))
                continue
            t0 = time.perf_counter()
            try:
                res = train_point(corpus, cfg, a, s, progress=progress)
            except RunInterrupted as exc:
                done = len(list((out / "points").glob("*.json"))) if (out / "points").is_dir() else 0
                kept = (
                    f"{done} finished grid point(s) are saved in {out}: run the same command again to resume"
                    if done
                    else f"nothing was saved in {out}"
                )
                raise RunInterrupted(f"{exc} (point {i + 1} of {len(points)}); {kept}") from None
            run.write_json(
                name, {"config": config, "result": res, "seconds": round(time.perf_counter() - t0, 1)}
            )
            run.state["points_done"] = sorted({*run.state.get("points_done", []), name})
            run.save_state()
            results.append(res)
        summary = summarise(results)
        summary["config"] = config
        summary["grid"] = grid
        run.write_json("trainability.json", summary)
        run.save_figure("trainability.png", _figure(results, summary))
        run.finish(points=len(results))
    return summary


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman's rho and its p-value; NaN (printed n/a) for fewer than 3 points or a constant variable."""
    from scipy.stats import spearmanr

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return math.nan, math.nan
    rho, pval = spearmanr(x, y)
    return float(rho), float(pval)


def summarise(results: list[dict]) -> dict:
    """Spearman rank correlation between test loss and the exponents' distance from zero, and where the loss is
    minimal.

    Distance: sqrt(lambda_a^2 + lambda_J^2), with lambda_J the Monte Carlo Jacobian growth at initialisation
    (defined in both phases; it equals lambda_g's finite-depth prediction in the ordered phase). Runs that
    diverged count as the worst losses. Correlations over fewer than 3 points (or a constant variable) are NaN
    (JSON null).
    """
    la = np.array([r["lambda_a"] for r in results], dtype=float)
    lj = np.array([r["jacobian_growth_mc"] for r in results], dtype=float)
    loss = np.array([np.inf if r["test_loss"] is None else r["test_loss"] for r in results], dtype=float)
    dist = np.sqrt(np.clip(la, -5, 5) ** 2 + lj**2)
    finite_loss = np.where(
        np.isfinite(loss), loss, np.nanmax(loss[np.isfinite(loss)]) + 1 if np.isfinite(loss).any() else 0
    )
    rho, pval = _spearman(dist, finite_loss)
    rho_a, _ = _spearman(np.abs(np.clip(la, -5, 5)), finite_loss)
    rho_j, _ = _spearman(np.abs(lj), finite_loss)
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
    """Test loss over the grid (one annotated cell per point, colour bar, zero lines when the grid allows) and
    test loss against the exponents' distance from 0 (points labelled on small grids)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = np.array([r["alpha"] for r in results], dtype=float)
    s = np.array([r["sigma_w"] for r in results], dtype=float)
    loss = np.array([np.nan if r["test_loss"] is None else r["test_loss"] for r in results], dtype=float)
    la = np.array([r["lambda_a"] for r in results], dtype=float)
    lj = np.array([r["jacobian_growth_mc"] for r in results], dtype=float)
    ua, us = np.unique(a), np.unique(s)
    full_grid = len(ua) * len(us) == len(results) == len({(x, y) for x, y in zip(a, s, strict=True)})
    width = min(max(3.2, 0.9 * len(ua) + 2.4), 8.0)
    height = min(max(2.6, 0.5 * len(us) + 1.8), 6.0)
    fig, (ax1, ax2) = plt.subplots(
        1, 2, figsize=(width + 4.4, height + 0.6), gridspec_kw={"width_ratios": [width, 4.0]}
    )
    finite = loss[np.isfinite(loss)]
    vmin, vmax = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    if vmax <= vmin:
        vmin, vmax = vmin - 0.05, vmax + 0.05
    if full_grid:
        ia, is_ = np.searchsorted(ua, a), np.searchsorted(us, s)
        z = np.full((len(us), len(ua)), np.nan)
        z[is_, ia] = loss
        im = ax1.imshow(z, origin="lower", cmap="viridis_r", vmin=vmin, vmax=vmax, aspect="auto")
        for x, y, v in zip(ia, is_, loss, strict=True):
            dark = np.isfinite(v) and (v - vmin) / (vmax - vmin) < 0.5  # viridis_r: low loss is yellow
            ax1.text(x, y, "diverged" if not np.isfinite(v) else f"{v:.3f}", ha="center", va="center",
                     fontsize=8, color="k" if dark else "w")  # fmt: skip
        ax1.set_xticks(range(len(ua)), [f"{v:g}" for v in ua])
        ax1.set_yticks(range(len(us)), [f"{v:g}" for v in us])
        if len(ua) > 1 and len(us) > 1:
            for values, style in ((la, {"colors": "k", "linestyles": "--"}), (lj, {"colors": "r"})):
                g = np.full_like(z, np.nan)
                g[is_, ia] = values
                if np.nanmin(g) < 0 < np.nanmax(g):
                    ax1.contour(np.arange(len(ua)), np.arange(len(us)), g, levels=[0], **style)
        title = "test loss (nats/char) per grid point"
        if len(ua) > 1 and len(us) > 1:
            title += "\ndashed: lambda_a = 0, red: Jacobian growth = 0"
    else:  # points that do not fill a grid
        im = ax1.scatter(a, s, c=loss, cmap="viridis_r", vmin=vmin, vmax=vmax, s=160, marker="s")
        for x, y, v in zip(a, s, loss, strict=True):
            ax1.annotate("diverged" if not np.isfinite(v) else f"{v:.3f}", (x, y), textcoords="offset points",
                         xytext=(0, 9), ha="center", fontsize=7)  # fmt: skip
        title = "test loss (nats/char) per grid point"
    fig.colorbar(im, ax=ax1, label="test loss (nats/char)")
    ax1.set_xlabel("alpha = alpha_A = alpha_M")
    ax1.set_ylabel("sigma_w")
    ax1.set_title(title, fontsize=8)
    dist = np.sqrt(np.clip(la, -5, 5) ** 2 + lj**2)
    ax2.scatter(dist, loss)
    if len(results) <= 12:
        for d, v, x, y in zip(dist, loss, a, s, strict=True):
            if np.isfinite(v):
                ax2.annotate(f"({x:g}, {y:g})", (d, v), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax2.set_xlabel("distance of (lambda_a, lambda_J) from 0")
    ax2.set_ylabel("test loss (nats/char)")
    rho = summary["spearman_loss_vs_distance"]
    ax2.set_title(
        f"Spearman rho = {rho:.2f}" if np.isfinite(rho) else "Spearman rho: n/a (too few points)", fontsize=9
    )
    fig.tight_layout()
    return fig
