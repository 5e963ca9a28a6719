"""Collapse measurements, invariant sets under SGD, model loading and the CLI (Chen et al. 2023; research note
theory_dynamics.md paper 3, checks 1, 2, 7 (small) and 8)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dlscience.cli import main
from dlscience.errors import UserError
from dlscience.learning_dynamics.collapse import (
    collapse_report,
    effective_rank,
    identical_groups,
    load_model,
    unit_vectors,
    vanishing_units,
)
from dlscience.learning_dynamics.collapse_cnn import CNN_PRESETS, small_cnn


def _mlp(dropout: float = 0.0) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(5, 8), nn.GELU(), nn.Linear(8, 6), nn.GELU(), nn.Dropout(dropout), nn.Linear(6, 3)
    ).double()


def _train(model, x, y, steps=60, lr=0.05, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-3)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (8,))
        loss = (
            F.mse_loss(model(x[idx]), y[idx])
            if y.dtype.is_floating_point
            else F.cross_entropy(model(x[idx]), y[idx])
        )
        opt.zero_grad()
        loss.backward()
        opt.step()


# --------------------------------------------------------------------------------- check 1: vanishing units
def test_check1_vanishing_neuron_stays_zero_under_momentum_and_weight_decay():
    model = _mlp()
    with torch.no_grad():
        model[0].weight[2] = 0
        model[0].bias[2] = 0
        model[2].weight[:, 2] = 0
    x, y = torch.randn(64, 5, dtype=torch.float64), torch.randn(64, 3, dtype=torch.float64)
    _train(model, x, y)
    assert (
        torch.all(model[0].weight[2] == 0) and model[0].bias[2] == 0 and torch.all(model[2].weight[:, 2] == 0)
    )
    assert model[0].weight[3].abs().sum() > 0  # the others moved
    assert vanishing_units(unit_vectors(model)[0][2])[2]


def test_check1_vanishing_channel_of_a_cnn_stays_zero():
    torch.manual_seed(0)
    model = small_cnn((4, 6, 6), 8, size=16).double()
    conv2, conv3 = model[3], model[6]
    with torch.no_grad():
        conv2.weight[1] = 0
        conv2.bias[1] = 0
        conv3.weight[:, 1] = 0
    x, y = torch.randn(32, 1, 16, 16, dtype=torch.float64), torch.randint(0, 10, (32,))
    _train(model, x, y, steps=20)
    assert torch.all(conv2.weight[1] == 0) and conv2.bias[1] == 0 and torch.all(conv3.weight[:, 1] == 0)
    rows = collapse_report(model)
    assert rows[1]["layer"] == "3" and rows[1]["consumer"] == "6" and rows[1]["vanishing"] == 1


# --------------------------------------------------------------------------------- check 2: identical units
def test_check2_identical_neurons_stay_identical_and_dropout_breaks_it():
    x, y = torch.randn(64, 5, dtype=torch.float64), torch.randn(64, 3, dtype=torch.float64)
    gaps = []
    for dropout in (0.0, 0.5):
        model = _mlp(dropout)
        with torch.no_grad():
            model[2].weight[5] = model[2].weight[1]
            model[2].bias[5] = model[2].bias[1]
            model[5].weight[:, 5] = model[5].weight[:, 1]
        _train(model, x, y)
        v = unit_vectors(model)[1][2]
        gaps.append(float((v[5] - v[1]).norm() / v[1].norm()))
    assert gaps[0] < 1e-12, gaps  # exact up to rounding
    assert gaps[1] > 1e-3, gaps  # per-unit dropout masks make the gradients differ


# --------------------------------------------------------------------------------- check 8: definitions
def _hand_built():
    """Linear(3 -> 6) -> Linear(6 -> 2) with unit vectors we set: unit 0 largest (norm 1), unit 1 at 0.099 of it
    (vanishes), unit 2 at 0.101 (does not), unit 3 at distance 0.099 of unit 0 (identical), unit 4 at 0.101
    (not), unit 5 zero."""
    first, second = nn.Linear(3, 6), nn.Linear(6, 2)
    base = torch.tensor([0.6, 0.0, 0.0, 0.0, 0.8, 0.0])  # [w_in (3) | b | w_out (2)]
    other = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 0.0])

    def near(d):  # unit b at angle phi from a: 2|a - b|^2 / (|a|^2 + |b|^2) = 2 - 2 cos phi = d
        cos = 1 - d / 2
        return cos * base + (1 - cos**2) ** 0.5 * torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])

    units = torch.stack([base, 0.099 * other, 0.101 * other, near(0.099), near(0.101), torch.zeros(6)])
    with torch.no_grad():
        first.weight.copy_(units[:, :3])
        first.bias.copy_(units[:, 3])
        second.weight.copy_(units[:, 4:].T)
        second.bias.zero_()
    return nn.Sequential(first, nn.GELU(), second), units


def test_check8_metric_definitions_on_a_hand_built_layer():
    model, units = _hand_built()
    (layer, consumer, vectors), _ = unit_vectors(model)
    assert consumer == "2"
    torch.testing.assert_close(vectors, units.double())
    rel = vectors.norm(dim=1) / vectors.norm(dim=1).max()
    expected_vanish = (rel < 0.1).tolist()
    assert vanishing_units(vectors).tolist() == expected_vanish
    assert expected_vanish[1] and not expected_vanish[2] and expected_vanish[5]
    row = collapse_report(model)[0]
    keep = [i for i in range(6) if not expected_vanish[i]]
    groups = identical_groups(vectors[keep])
    assert [[keep[j] for j in g] for g in groups] == [[0, 3], [2], [4]]
    assert row["vanishing"] == 2 and row["groups"] == 3 and row["largest_group"] == 2
    assert row["independent_fraction"] == pytest.approx(3 / 6)
    assert row["width"] == 6 and row["dim"] == 6
    # thresholds are configurable
    loose = collapse_report(model, identical_threshold=0.2, vanish_threshold=0.05)[0]
    # unit 1 is back and joins unit 2 (parallel to it), unit 4 joins units 0 and 3
    assert loose["vanishing"] == 1 and loose["groups"] == 2 and loose["largest_group"] == 3


def test_effective_rank():
    eye = torch.eye(5, 7, dtype=torch.float64)
    assert effective_rank(eye)[0] == pytest.approx(5.0)
    assert effective_rank(torch.outer(torch.arange(1.0, 5.0), torch.ones(3)))[0] == pytest.approx(
        1.0, abs=1e-6
    )
    assert effective_rank(torch.zeros(3, 3))[0] == 0.0


def test_conv_then_linear_pairing_and_state_dict_equal_module():
    torch.manual_seed(1)
    model = small_cnn((4, 6, 5), 7, size=16)
    rows = collapse_report(model)
    assert [r["consumer"] for r in rows] == ["3", "6", "10", "12", None]
    assert rows[2]["dim"] == 6 * 9 + 1 + 7 * 4  # conv3 kernel + bias + flattened fc columns (5 ch x 2 x 2)
    assert collapse_report(model.state_dict()) == rows
    incoming = collapse_report(model, outgoing=False)
    assert all(r["consumer"] is None for r in incoming) and incoming[0]["dim"] == 10


# --------------------------------------------------------------------------------- loading
def test_load_model_formats_and_errors(tmp_path):
    model = _mlp()
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    torch.save({"model": model.state_dict(), "step": 3}, tmp_path / "ckpt.pt")
    torch.save(model, tmp_path / "whole.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a torch file at all")
    assert load_model(tmp_path / "sd.pt")[1] == "state_dict"
    assert load_model(tmp_path / "ckpt.pt")[1] == "state_dict"
    with pytest.raises(UserError, match="--trust-pickle"):
        load_model(tmp_path / "whole.pt")
    loaded, kind = load_model(tmp_path / "whole.pt", trust_pickle=True)
    assert kind == "module" and collapse_report(loaded) == collapse_report(model)
    with pytest.raises(UserError, match="no checkpoint"):
        load_model(tmp_path / "missing.pt")
    with pytest.raises(UserError, match="damaged or not a torch file"):
        load_model(tmp_path / "bad.pt")
    torch.save({"a": 1}, tmp_path / "empty.pt")
    with pytest.raises(UserError, match="holds no model weights"):
        load_model(tmp_path / "empty.pt")


def test_load_project_diffusion_and_icl_models(tmp_path):
    from dlscience.diffusion.networks import build_network
    from dlscience.icl.transformer import TransformerICL

    net = build_network("unet", 1, width=8, padding="zeros", num_classes=None)
    cfg = {"arch": "unet", "width": 8, "padding": "zeros"}
    torch.save(
        {"config": cfg, "image_shape": [1, 8, 8], "num_classes": None, "model": net.state_dict()},
        tmp_path / "model.pt",
    )
    loaded, kind = load_model(tmp_path)
    assert kind == "diffusion unet" and type(loaded).__name__ == "UNet"
    layers = {r["layer"]: r for r in collapse_report(loaded)}
    assert "enc1.0" in layers and layers["mid.1"]["consumer"] == "up2"  # conv -> transposed conv

    from dataclasses import asdict

    from dlscience.icl.training import ICLConfig

    icl = ICLConfig(n_layer=1, n_embd=16, n_head=2)
    model = TransformerICL(icl.n_dims, icl.n_points, 1, 16, 2)
    conf = asdict(icl)
    (tmp_path / "icl").mkdir()
    torch.save({"config": conf, "model": model.state_dict()}, tmp_path / "icl" / "model.pt")
    loaded, kind = load_model(tmp_path / "icl" / "model.pt")
    assert kind == "icl transformer"
    layers = {r["layer"]: r for r in collapse_report(loaded)}
    assert (
        layers["blocks.0.c_fc"]["consumer"] == "blocks.0.mlp_proj" and layers["blocks.0.c_fc"]["width"] == 64
    )


# --------------------------------------------------------------------------------- CLI and CNN job
def test_cli_collapse_report(tmp_path, capsys):
    model = _mlp()
    torch.save({"model": model.state_dict()}, tmp_path / "m.pt")
    out = tmp_path / "report"
    assert main(["dynamics", "collapse-report", str(tmp_path / "m.pt"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "independent fraction" in text and "0 " in text
    report = json.loads((out / "collapse_report.json").read_text())
    assert [r["layer"] for r in report["layers"]] == ["0", "2", "5"]
    assert (out / "layer_0.png").exists() and (out / "layer_2.png").exists()
    code = main(["dynamics", "collapse-report", str(tmp_path / "nothing.pt"), "--out", str(tmp_path / "r2")])
    err = capsys.readouterr().err
    assert code == 2 and "no checkpoint" in err and err.count("\n") == 1 and not (tmp_path / "r2").exists()


def test_cli_bad_threshold_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["dynamics", "collapse-report", "x.pt", "--vanish-threshold", "2", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "[0, 1]" in err and err.count("\n") == 1


def test_cli_cnn_presets_match_the_module():
    from dlscience.learning_dynamics.cli import CNN_PRESET_NAMES

    assert set(CNN_PRESET_NAMES) == set(CNN_PRESETS)


def test_cnn_experiment_tiny_resumes(tmp_path):
    from dlscience.learning_dynamics.collapse_cnn import run_cnn_experiment

    cfg = CNN_PRESETS["tiny"]
    s = run_cnn_experiment(cfg, tmp_path / "o", checkpoint_dir=tmp_path / "ck", progress=False, preset="tiny")
    assert set(s["sweeps"]) == {"lr", "batch", "noise", "drop", "batch_equal_samples"}
    for sweep in s["sweeps"].values():
        assert all(0 < f <= 1 for f in sweep["independent_fraction"])
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "collapse_cnn.json",
        "collapse_cnn.png",
        "manifest.json",
    ]
    again = run_cnn_experiment(
        cfg, tmp_path / "o", checkpoint_dir=tmp_path / "ck", progress=False, preset="tiny"
    )
    assert again["sweeps"] == json.loads(json.dumps(s["sweeps"]))


# --------------------------------------------------------------------------------- check 7 in miniature
def _mlp_fraction(lr: float, noise: float, steps: int = 400, seed: int = 0) -> float:
    """Independent fraction of the two hidden layers (64 each) of an MLP after label-noise SGD (batch 16,
    momentum 0.9, weight decay 5e-3) on a fixed 4-class problem."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = torch.randn(512, 10, generator=g)
    y = (x[:, :3].sum(1) > 0).long() + 2 * (x[:, 3] > 0).long()
    model = nn.Sequential(nn.Linear(10, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 4))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-3)
    for _ in range(steps):
        idx = torch.randint(0, 512, (16,), generator=g)
        labels = y[idx]
        flip = torch.rand(16, generator=g) < noise
        labels = torch.where(flip, (labels + torch.randint(1, 4, (16,), generator=g)) % 4, labels)
        loss = F.cross_entropy(model(x[idx]), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    rows = collapse_report(model)[:2]
    return sum(r["groups"] for r in rows) / sum(r["width"] for r in rows)


def test_check7_large_lr_and_label_noise_give_fewer_independent_neurons():
    calm = _mlp_fraction(0.005, 0.0)
    noisy = _mlp_fraction(0.1, 0.5)
    assert calm == 1.0 and noisy < 0.9, (calm, noisy)  # measured: 1.0 and 0.82


@pytest.mark.parametrize(
    "command, args, files",
    [
        (
            "quartic",
            ["--paths", "20", "--n-steps", "200", "--time", "20", "--zetas", "1,3"],
            ["quartic.json"],
        ),
        ("tanh", ["--paths", "5", "--n-steps", "300"], ["tanh.json"]),
        (
            "teacher-student",
            ["--steps", "2000", "--replicates", "2", "--average-last", "1000", "--sigmas", "0,20"],
            ["teacher_student.json"],
        ),
    ],
)
def test_cli_demos_write_their_results(tmp_path, capsys, command, args, files):
    out = tmp_path / command
    assert main(["dynamics", "collapse", command, "--out", str(out), *args]) == 0
    assert "wrote" in capsys.readouterr().out
    for name in files:
        data = json.loads((out / name).read_text())
        assert data["paper"].startswith("Chen, Kunin, Yamamura & Ganguli 2023")
        assert (out / name.replace(".json", ".png")).exists()
