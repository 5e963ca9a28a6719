"""The trainability grid: corpus, model, one grid point, resume, and the summary statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dlscience.signal_propagation.model import SignalPropParams
from dlscience.signal_propagation.trainability import (
    CharCorpus,
    CharTransformer,
    TrainabilityConfig,
    run_grid,
    summarise,
)

TEXTS = [f"gloss number {i}: a small thing that is {'red' if i % 2 else 'blue'} and round" for i in range(60)]
CFG = TrainabilityConfig(n_layers=2, width=16, n_tokens=12, steps=30, batch_size=8, eval_batches=3)


def test_corpus_split_and_masking():
    corpus = CharCorpus(TEXTS, test_fraction=0.2, seed=0)
    tokens, target, mask = corpus.batch("train", 16, 12, 0.15, torch.Generator().manual_seed(0))
    assert tokens.shape == target.shape == mask.shape == (16, 12)
    assert (tokens[mask] == 0).all() and (tokens[~mask] == target[~mask]).all()
    assert mask.any(1).all() and (target > 0).all()


def test_unmasked_batches_are_plain_windows():
    corpus = CharCorpus(TEXTS, seed=0)
    tokens, target, mask = corpus.batch("test", 8, 12, 0.0, torch.Generator().manual_seed(0))
    assert not mask.any() and torch.equal(tokens, target)


@pytest.mark.parametrize("task", ["causal", "masked"])
def test_model_shapes_and_token_norms(task):
    cfg = TrainabilityConfig(**{**CFG.__dict__, "task": task, "width": 256})
    corpus = CharCorpus(TEXTS)
    model = CharTransformer(corpus.vocab_size, cfg, SignalPropParams(0.5, 0.5), seed=0)
    tokens, _, _ = corpus.batch("train", 4, 12, 0.15, torch.Generator().manual_seed(1))
    assert model(tokens).shape == (4, 12, corpus.vocab_size)
    q = float((model.inputs(tokens) ** 2).sum(-1).mean().detach()) / cfg.width
    # character and position embeddings enter the blocks with q about 1 each
    assert q == pytest.approx(1 + cfg.pos_scale**2, rel=0.15)


def test_causal_model_never_sees_the_future():
    """With task="causal" the logits at position i depend on characters 0..i only; masked attention sees all."""
    corpus = CharCorpus(TEXTS)
    tokens, _, _ = corpus.batch("train", 2, 12, 0.0, torch.Generator().manual_seed(2))
    changed = tokens.clone()
    changed[:, 7:] = (changed[:, 7:] % (corpus.vocab_size - 1)) + 1  # other characters from position 7 on
    for task, same_prefix in (("causal", True), ("masked", False)):
        cfg = TrainabilityConfig(**{**CFG.__dict__, "task": task})
        model = CharTransformer(corpus.vocab_size, cfg, SignalPropParams(0.5, 0.5, 1.0, 2.0), seed=0)
        with torch.no_grad():
            a, b = model(tokens), model(changed)
        assert torch.allclose(a[:, :7], b[:, :7], atol=1e-5) == same_prefix
        assert not torch.allclose(a[:, 7:], b[:, 7:], atol=1e-3)


def test_bad_config_is_refused():
    from dlscience.errors import InputValidationError

    with pytest.raises(InputValidationError, match="task"):
        TrainabilityConfig(task="bidirectional")
    with pytest.raises(InputValidationError, match="steps"):
        TrainabilityConfig(steps=0)


def test_grid_runs_resumes_and_summarises(tmp_path):
    s = run_grid(TEXTS, [0.3, 0.7], [1.0], CFG, tmp_path, progress=False)
    uniform = np.log(CharCorpus(TEXTS).vocab_size)
    assert [step for step, _ in s["points"][0]["train_loss_curve"]] == [30]  # one window of 30 steps
    assert s["points"][0]["train_loss_curve"][0][1] == pytest.approx(uniform, rel=0.5)
    assert all(p["test_loss"] < uniform for p in s["points"])  # both points learn something in 30 steps
    assert len(s["points"]) == 2 and all(p["test_loss"] > 0 for p in s["points"])
    files = sorted((tmp_path / "points").glob("*.json"))
    assert len(files) == 2 and (tmp_path / "trainability.png").exists()
    assert json.loads((tmp_path / "manifest.json").read_text())["finished"]
    before = [f.stat().st_mtime_ns for f in files]
    again = run_grid(TEXTS, [0.3, 0.7], [1.0], CFG, tmp_path, progress=False)
    assert [f.stat().st_mtime_ns for f in files] == before
    assert again["points"] == json.loads((tmp_path / "trainability.json").read_text())["points"]


def test_summary_statistics():
    """Loss rising with the exponents' distance from 0 gives Spearman 1; the best point is named."""
    pts = [
        {"alpha": a, "sigma_w": 1.0, "lambda_a": la, "jacobian_growth_mc": la / 2, "test_loss": 1 + abs(la)}
        for a, la in zip([0.1, 0.2, 0.3, 0.4], [-0.5, -0.1, 0.05, 0.8], strict=True)
    ]
    s = summarise(pts)
    assert s["spearman_loss_vs_distance"] == pytest.approx(1.0)
    assert s["best"]["alpha"] == 0.3 and s["distance_rank_of_best"] == 0
    pts[0]["test_loss"] = None  # diverged: counts as the worst
    assert np.isfinite(summarise(pts)["spearman_loss_vs_distance"])


def test_cli_refuses_impossible_geometry_before_writing(tmp_path, capsys):
    from dlscience.cli import main

    assert main(["sigprop", "maps", "--rho0", "1.5", "--out", str(tmp_path / "m")]) == 2
    assert "--rho0 in [-1/(n-1), 1]" in capsys.readouterr().err and not (tmp_path / "m").exists()
    with pytest.raises(SystemExit):
        main(["sigprop", "phase-diagram", "--sigma-ws", "1:2:0", "--out", str(tmp_path / "p")])
    assert not (tmp_path / "p").exists()
