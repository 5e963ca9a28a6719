"""The trainability grid: corpus, model, one grid point, resume, and the summary statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dlscience.signal_propagation.model import SignalPropParams
from dlscience.signal_propagation.trainability import (
    CharCorpus,
    MaskedCharModel,
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


def test_model_shapes_and_token_norms():
    corpus = CharCorpus(TEXTS)
    model = MaskedCharModel(corpus.vocab_size, CFG, SignalPropParams(0.5, 0.5), seed=0)
    tokens, _, _ = corpus.batch("train", 4, 12, 0.15, torch.Generator().manual_seed(1))
    assert model(tokens).shape == (4, 12, corpus.vocab_size)
    q = (model.inputs(tokens) ** 2).sum(-1).mean() / CFG.width
    assert 0.7 < float(q.detach()) < 1.3  # embeddings enter the blocks with q about 1


def test_grid_runs_resumes_and_summarises(tmp_path):
    s = run_grid(TEXTS, [0.3, 0.7], [1.0], CFG, tmp_path, progress=False)
    assert len(s["points"]) == 2 and all(p["test_loss"] > 0 for p in s["points"])
    files = sorted((tmp_path / "points").glob("*.json"))
    assert len(files) == 2 and (tmp_path / "trainability.png").exists()
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
