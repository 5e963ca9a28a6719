"""Issue 15 for `dlscience sigprop`: run folders, the training loop, parse-time checks, one-line errors, n/a
spreads, determinism of the trainability grid, readable small-grid figures and the Python API's type checks."""

from __future__ import annotations

import json
import shutil
import signal
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from dlscience.cli import main
from dlscience.errors import InputValidationError, UserError
from dlscience.runs import RunInterrupted
from dlscience.signal_propagation import trainability as T
from dlscience.signal_propagation.model import RandomTransformer, SignalPropParams, rms_layer_norm
from dlscience.signal_propagation.trainability import CharCorpus, TrainabilityConfig, run_grid

TEXTS = [f"gloss number {i}: a small thing that is {'red' if i % 2 else 'blue'} and round" for i in range(60)]
CFG = TrainabilityConfig(n_layers=2, width=16, n_tokens=12, steps=20, batch_size=8, eval_batches=2)
REPO = Path(__file__).resolve().parents[2]


def _fake_wordnet(folder: Path, n: int = 80) -> Path:
    """A WordNet folder in wndb(5) format with ``n`` synsets per part of speech."""
    folder.mkdir(parents=True, exist_ok=True)
    for pos, name in (("n", "data.noun"), ("v", "data.verb"), ("a", "data.adj"), ("r", "data.adv")):
        lines = ["  1 licence header line"] + [
            f"{i:08d} 00 {pos} 01 word{i} 0 000 | a {'small' if i % 2 else 'large'} thing number {i}  "
            for i in range(n)
        ]
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


TINY_TRAIN = ["--layers", "1", "--width", "8", "--steps", "3", "--batch-size", "4", "--alphas", "0.5",
              "--sigma-ws", "1", "--no-progress"]  # fmt: skip


# ------------------------------------------------------------------------------------------ run folders
def test_trainability_run_folder_resumes_refuses_and_overwrites(tmp_path, capsys):
    """The CLI writes a manifest; the same command resumes without retraining; other settings are refused
    naming the setting, with nothing changed; --overwrite replaces the old run's files."""
    wn, out = _fake_wordnet(tmp_path / "wn"), tmp_path / "out"
    args = ["sigprop", "trainability", *TINY_TRAIN, "--wordnet-dir", str(wn), "--out", str(out)]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == "dlscience sigprop trainability" and manifest["finished"]
    assert manifest["settings"]["wordnet_dir"] == str(wn) and set(manifest["files"]) == set(T.OUTPUTS)
    point = out / "points" / "alpha=0.5_sigma_w=1.json"
    before = point.stat().st_mtime_ns
    assert main(args) == 0 and point.stat().st_mtime_ns == before  # resumed: not retrained
    files = _files(out)
    capsys.readouterr()
    assert main([*args, "--steps", "4"]) == 2
    assert "config.steps 3 -> 4" in _error(capsys) and _files(out) == files
    assert main([*args, "--steps", "4", "--overwrite"]) == 0
    assert json.loads(point.read_text())["config"]["steps"] == 4


def _legacy_folder(folder: Path, cfg: TrainabilityConfig) -> Path:
    """A trainability folder as written before manifests: point files with their config, no manifest."""
    corpus = CharCorpus(TEXTS, seed=cfg.seed)
    res = T.train_point(corpus, cfg, 0.5, 1.0)
    res["seconds"] = 1.0  # the old format kept the time in the result
    (folder / "points").mkdir(parents=True)
    (folder / "points" / "alpha=0.5_sigma_w=1.json").write_text(
        json.dumps({"config": asdict(cfg), "result": res})
    )
    (folder / "trainability.json").write_text(json.dumps({"points": [res], "config": asdict(cfg)}))
    return folder


def test_legacy_trainability_folder_is_adopted_when_its_points_match(tmp_path):
    out = _legacy_folder(tmp_path / "old", CFG)
    point = out / "points" / "alpha=0.5_sigma_w=1.json"
    before = point.read_bytes()
    s = run_grid(TEXTS, [0.5, 0.7], [1.0], CFG, out, progress=False)
    assert point.read_bytes() == before  # kept, not retrained
    assert len(s["points"]) == 2 and s["points"][0]["seconds"] == 1.0
    assert json.loads((out / "manifest.json").read_text())["finished"]


def test_legacy_trainability_folder_of_other_settings_is_refused(tmp_path):
    out = _legacy_folder(tmp_path / "old", CFG)
    files = _files(out)
    other = TrainabilityConfig(**{**asdict(CFG), "steps": 5})
    with pytest.raises(
        UserError, match=r"before run manifests, with other settings .*steps 20 -> 5.*--overwrite"
    ):
        run_grid(TEXTS, [0.5], [1.0], other, out, progress=False)
    assert _files(out) == files
    run_grid(TEXTS, [0.5], [1.0], other, out, progress=False, overwrite=True)
    assert json.loads((out / "points" / "alpha=0.5_sigma_w=1.json").read_text())["config"]["steps"] == 5


def test_saved_trainability_results_stay_readable():
    """The committed results (written before manifests) still parse as grid points of their own config."""
    folder = REPO / "results" / "sigprop_trainability"
    if not folder.is_dir():
        pytest.skip("no committed trainability results")
    config = json.loads((folder / "trainability.json").read_text())["config"]
    paths = sorted((folder / "points").glob("*.json"))
    results = [T._read_point(p, config, folder, legacy=True) for p in paths]
    assert len(results) == 30 and all(r["test_loss"] > 0 for r in results)
    assert T.summarise(results)["spearman_loss_vs_distance"] == pytest.approx(0.83, abs=0.01)


def test_damaged_grid_point_is_named(tmp_path, capsys):
    wn, out = _fake_wordnet(tmp_path / "wn"), tmp_path / "out"
    args = ["sigprop", "trainability", *TINY_TRAIN, "--wordnet-dir", str(wn), "--out", str(out)]
    assert main(args) == 0
    point = out / "points" / "alpha=0.5_sigma_w=1.json"
    point.write_text(point.read_text()[:40])
    capsys.readouterr()
    assert main(args) == 2
    err = _error(capsys)
    assert str(point) in err and "delete it to retrain that grid point" in err


@pytest.mark.parametrize(
    ("command", "files"),
    [
        (["maps", "--layers", "2"], ("maps.json", "maps.png")),
        (
            ["phase-diagram", "--alphas", "0.5", "--sigma-ws", "1,2"],
            ("phase_diagram.json", "phase_diagram.png"),
        ),
        (
            [
                "simulate",
                "--settings",
                "0.5,0.5,2",
                "--width",
                "32",
                "--layers",
                "2",
                "--networks",
                "1",
                "--exponent-networks",
                "1",
                "--exponent-width",
                "32",
                "--no-progress",
            ],
            ("simulate.json", "table.md"),
        ),
    ],  # fmt: skip
    ids=["maps", "phase-diagram", "simulate"],
)
def test_quick_jobs_use_run_folders_and_refuse_legacy_folders(tmp_path, capsys, command, files):
    out = tmp_path / "out"
    assert main(["sigprop", *command, "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["finished"] and set(manifest["files"]) == set(files)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for name in files:
        shutil.copy(out / name, legacy / name)
    before = _files(legacy)
    capsys.readouterr()
    assert main(["sigprop", *command, "--out", str(legacy)]) == 2
    assert "before run manifests; rerun with --overwrite" in _error(capsys) and _files(legacy) == before
    assert main(["sigprop", *command, "--out", str(legacy), "--overwrite"]) == 0
    assert (legacy / "manifest.json").exists()


def test_committed_legacy_results_are_refused_not_touched(tmp_path, capsys):
    src = REPO / "results" / "sigprop_phase"
    if not src.is_dir():
        pytest.skip("no committed phase diagram")
    out = shutil.copytree(src, tmp_path / "phase")
    before = _files(out)
    assert main(["sigprop", "phase-diagram", "--alphas", "0.5", "--sigma-ws", "1,2", "--out", str(out)]) == 2
    assert "rerun with --overwrite" in _error(capsys) and _files(out) == before
    assert len(json.loads((out / "phase_diagram.json").read_text())["alpha"]) > 1  # still readable


def test_simulate_resumes_setting_by_setting(tmp_path, monkeypatch):
    """A finished setting is kept in the run state: the rerun computes only the missing ones."""
    from dlscience.signal_propagation import jobs, phase_diagram

    calls = []
    real = phase_diagram.theory_vs_simulation

    def interrupted_after_one(settings, **kw):
        calls.append(settings[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(settings, **kw)

    monkeypatch.setattr(phase_diagram, "theory_vs_simulation", interrupted_after_one)
    kw = dict(width=32, layers=2, networks=1, exponent_networks=1, exponent_width=32, progress=False)
    settings = [(0.5, 0.5, 2.0), (0.3, 0.7, 4.0)]
    with pytest.raises(RunInterrupted, match="progress is saved in"):
        jobs.simulate_job(settings, out=tmp_path / "s", **kw)
    assert not (tmp_path / "s" / "simulate.json").exists()
    rows = jobs.simulate_job(settings, out=tmp_path / "s", **kw)
    assert calls == [settings[0], settings[1], settings[1]] and len(rows) == 2
    assert [r["sigma_w"] for r in rows] == [2.0, 4.0]


# ------------------------------------------------------------------------------------------ training loop
def test_sigint_in_trainability_says_what_was_kept(tmp_path, monkeypatch):
    """Ctrl-C during the second grid point: the first is kept, the message says so; the rerun resumes."""
    real, calls = T._task_loss, {"n": 0}

    def interrupt_in_second_point(model, corpus, cfg, split, gen):
        if split == "train":
            calls["n"] += 1
            if calls["n"] == CFG.steps + 3:  # third step of the second point
                signal.raise_signal(signal.SIGINT)
        return real(model, corpus, cfg, split, gen)

    monkeypatch.setattr(T, "_task_loss", interrupt_in_second_point)
    out = tmp_path / "grid"
    with pytest.raises(RunInterrupted) as info:
        run_grid(TEXTS, [0.3, 0.7], [1.0], CFG, out, progress=False)
    msg = str(info.value)
    assert "interrupted at step 3 of 20 of grid point alpha=0.7" in msg and "(point 2 of 2)" in msg
    assert f"1 finished grid point(s) are saved in {out}: run the same command again to resume" in msg
    assert [p.name for p in (out / "points").iterdir()] == ["alpha=0.3_sigma_w=1.json"]
    first = (out / "points" / "alpha=0.3_sigma_w=1.json").read_bytes()
    s = run_grid(TEXTS, [0.3, 0.7], [1.0], CFG, out, progress=False)
    assert len(s["points"]) == 2 and (out / "points" / "alpha=0.3_sigma_w=1.json").read_bytes() == first


def test_sigint_in_first_point_says_nothing_was_saved(tmp_path, monkeypatch):
    real = T._task_loss

    def interrupt(model, corpus, cfg, split, gen):
        signal.raise_signal(signal.SIGINT)
        return real(model, corpus, cfg, split, gen)

    monkeypatch.setattr(T, "_task_loss", interrupt)
    with pytest.raises(RunInterrupted, match=r"\(point 1 of 1\); nothing was saved in"):
        run_grid(TEXTS, [0.3], [1.0], CFG, tmp_path / "g", progress=False)
    assert not (tmp_path / "g" / "points").exists()


def test_training_curve_comes_from_the_training_loop():
    res = T.train_point(CharCorpus(TEXTS), CFG, 0.5, 1.0)
    assert [s for s, _ in res["train_loss_curve"]] == [20]  # log_every = min(100, steps): one window
    mean_loss = res["train_loss_curve"][0][1]
    assert res["test_loss"] < np.log(CharCorpus(TEXTS).vocab_size) and 0 < mean_loss < 5


# ------------------------------------------------------------------------------------------ determinism
def test_trainability_is_deterministic_for_a_seed(tmp_path):
    """Two runs of the same tiny grid give identical numbers, also when torch is allowed a different number
    of threads (matrix-product reductions split between threads used to change the last bits)."""
    cfg = TrainabilityConfig(n_layers=2, width=64, n_tokens=32, steps=5, batch_size=32, eval_batches=2)
    texts = TEXTS * 4
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = run_grid(texts, [0.3, 0.7], [2.5], cfg, tmp_path / "a", progress=False)
        torch.set_num_threads(2)
        b = run_grid(texts, [0.3, 0.7], [2.5], cfg, tmp_path / "b", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert torch.get_num_threads() == threads
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert (tmp_path / "a" / "trainability.json").read_bytes() == (
        tmp_path / "b" / "trainability.json"
    ).read_bytes()
    for p in (tmp_path / "a" / "points").iterdir():
        pa, pb = json.loads(p.read_text()), json.loads((tmp_path / "b" / "points" / p.name).read_text())
        assert pa["result"] == pb["result"] and "seconds" not in pa["result"]


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["trainability", "--width", "0"], "--width: expected a positive integer, got '0'"),
        (["trainability", "--layers", "-2"], "--layers: expected a positive integer, got '-2'"),
        (["trainability", "--steps", "0"], "--steps: expected a positive integer, got '0'"),
        (["trainability", "--batch-size", "-1"], "--batch-size: expected a positive integer"),
        (["trainability", "--lr", "0"], "--lr: expected a positive number, got '0'"),
        (["trainability", "--alphas", "0.5,1.5"], "--alphas must be in (0, 1), got 1.5"),
        (["trainability", "--alphas", "0.3,0.3"], "a value is given more than once"),
        (["simulate", "--networks", "0"], "--networks: expected a positive integer, got '0'"),
        (["simulate", "--exponent-networks", "0"], "--exponent-networks: expected a positive integer"),
        (["simulate", "--width", "-5"], "--width: expected a positive integer"),
        (["simulate", "--settings", "0.5,0.5"], "--settings: expected triples"),
        (["simulate", "--settings", "0.5,0.5,-1"], "sigma_w > 0"),
        (["maps", "--layers", "0"], "--layers: expected a positive integer"),
        (["maps", "--n-tokens", "1"], "--n-tokens: expected an integer >= 2"),
        (["maps", "--networks", "0", "--simulate"], "--networks: expected a positive integer"),
        (["phase-diagram", "--sigma-ws", "0,1"], "--sigma-ws must be > 0, got 0"),
        (["phase-diagram", "--alphas", "0.5:0.9:0"], "START:STOP:NUM with NUM >= 1"),
        (["phase-diagram", "--geometry-layers", "-1"], "--geometry-layers: expected an integer >= 0"),
    ],
)
def test_bad_values_are_refused_at_parse_time(tmp_path, capsys, command, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main(["sigprop", *command, "--out", str(out)])
    assert info.value.code == 2
    err = _error(capsys)
    assert err.startswith("dlscience: error:") and message in err
    assert not out.exists()


def test_simulate_width_below_the_tokens_is_refused_before_writing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sigprop", "simulate", "--width", "8", "--out", str(out)]) == 2
    assert "--width must be >= 17 (n = 16 tokens), got 8" in _error(capsys) and not out.exists()


@pytest.mark.parametrize("command", ["maps", "phase-diagram", "simulate", "trainability"])
def test_out_that_is_a_file_is_one_line(tmp_path, capsys, command):
    f = tmp_path / "file.txt"
    f.write_text("keep me")
    with pytest.raises(SystemExit) as info:
        main(["sigprop", command, "--out", str(f)])
    assert info.value.code == 2
    assert "is a file; give a folder" in _error(capsys) and f.read_text() == "keep me"


def test_one_value_phase_diagram_axes_work(tmp_path, capsys):
    """A 1-point axis gives line plots (no traceback); both axes with one value give one point."""
    for alphas, sigma_ws in (("0.5", "1:5:5"), ("0.2,0.5", "3"), ("0.5", "2")):
        out = tmp_path / f"{alphas}-{sigma_ws}".replace(":", "_")
        assert (
            main(["sigprop", "phase-diagram", "--alphas", alphas, "--sigma-ws", sigma_ws, "--out", str(out)])
            == 0
        )
        d = json.loads((out / "phase_diagram.json").read_text())
        assert np.shape(d["lambda_a"]) == (len(d["sigma_w"]), len(d["alpha"]))
        assert (out / "phase_diagram.png").stat().st_size > 1000
    assert (
        "edge of chaos at sigma_w = 4.068" in capsys.readouterr().out
    )  # alpha = 0.5 along sigma_w in [1, 5]


def test_wordnet_folder_missing_or_incomplete_is_named(tmp_path, capsys):
    out = tmp_path / "out"
    missing = tmp_path / "nowhere"
    assert (
        main(["sigprop", "trainability", *TINY_TRAIN, "--wordnet-dir", str(missing), "--out", str(out)]) == 2
    )
    err = _error(capsys)
    assert f"the WordNet folder {missing} does not exist" in err and "/usr/share/wordnet" not in err
    partial = _fake_wordnet(tmp_path / "partial")
    (partial / "data.adv").unlink()
    assert (
        main(["sigprop", "trainability", *TINY_TRAIN, "--wordnet-dir", str(partial), "--out", str(out)]) == 2
    )
    assert f"the WordNet folder {partial} lacks WordNet's data.adv" in _error(capsys)
    assert not out.exists()


def test_non_utf8_corpus_is_named(tmp_path, capsys):
    wn = _fake_wordnet(tmp_path / "wn")
    (wn / "data.verb").write_bytes(b"00000001 00 v 01 go 0 000 | move \xff\xfe quickly  \n")
    out = tmp_path / "out"
    assert main(["sigprop", "trainability", *TINY_TRAIN, "--wordnet-dir", str(wn), "--out", str(out)]) == 2
    err = _error(capsys)
    assert f"{wn / 'data.verb'} is not UTF-8 text (byte 0xff at offset 33)" in err and not out.exists()


# ------------------------------------------------------------------------------------------ n/a spreads
def test_spreads_over_one_network_print_na(tmp_path, capsys):
    out = tmp_path / "s"
    args = ["sigprop", "simulate", "--settings", "0.5,0.5,2", "--width", "32", "--layers", "2",
            "--networks", "1", "--exponent-networks", "1", "--exponent-width", "32", "--no-progress",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "nan" not in printed.lower() and printed.count("+- n/a") == 2  # rho_L sim and lambda_a MC
    assert "+- n/a" in (out / "table.md").read_text()
    row = json.loads((out / "simulate.json").read_text())["rows"][0]
    assert row["rho_L"]["simulation"]["sem"] is None and row["lambda_a"]["monte_carlo"]["n"] == 1
    assert main(["sigprop", "maps", "--layers", "2", "--simulate", "--width", "32", "--networks", "1",
                 "--out", str(tmp_path / "m")]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "nan" not in printed.lower() and printed.count("+- n/a") == 3  # layers 0, 1, 2


def test_zero_networks_refused_in_the_python_api():
    from dlscience.signal_propagation.simulate import angle_exponent_mc, simulate_geometry

    p = SignalPropParams(0.5, 0.5, 1.0, 2.0)
    with pytest.raises(InputValidationError, match="n_networks must be an integer >= 1, got 0"):
        simulate_geometry(p, n=4, d=16, n_layers=2, n_networks=0)
    with pytest.raises(InputValidationError, match="n_networks"):
        angle_exponent_mc(p, n=4, d=16, n_networks=0)


# ------------------------------------------------------------------------------------------ figure
def test_small_grid_figure_is_annotated(tmp_path):
    """A 1 x 2 grid is drawn as two labelled cells with their losses written in and a colour bar."""
    s = run_grid(TEXTS, [0.3, 0.7], [1.0], CFG, tmp_path / "g", progress=False)
    fig = T._figure(s["points"], s)
    heat = fig.axes[0]
    written = sorted(t.get_text() for t in heat.texts)
    assert written == sorted(f"{p['test_loss']:.3f}" for p in s["points"])
    assert [t.get_text() for t in heat.get_xticklabels()] == ["0.3", "0.7"]
    assert [t.get_text() for t in heat.get_yticklabels()] == ["1"]
    assert any(ax.get_ylabel() == "test loss (nats/char)" for ax in fig.axes[2:])  # the colour bar
    assert "n/a" in fig.axes[1].get_title()  # two points: no Spearman correlation
    assert (tmp_path / "g" / "trainability.png").stat().st_size > 5000


# ------------------------------------------------------------------------------------------ Python API types
def test_torch_functions_refuse_numpy():
    p = SignalPropParams(0.5, 0.5, 1.0, 2.0)
    x = np.random.default_rng(0).standard_normal((4, 16))
    with pytest.raises(InputValidationError, match="RandomTransformer: x must be a torch.Tensor.*ndarray"):
        RandomTransformer(16, 2, p, seed=0)(x)
    with pytest.raises(InputValidationError, match="rms_layer_norm: x must be a torch.Tensor"):
        rms_layer_norm(x)
    with pytest.raises(InputValidationError, match=r"x must have shape \(\.\.\., n, 16\)"):
        RandomTransformer(16, 2, p, seed=0)(torch.zeros(4, 8))
    from dlscience.signal_propagation.simulate import gram_stats, simplex_tokens

    with pytest.raises(InputValidationError, match="gram_stats: x must be a torch.Tensor"):
        gram_stats(x)
    with pytest.raises(InputValidationError, match="generator must be a torch.Generator"):
        simplex_tokens(4, 16, 1.0, 0.5, np.random.default_rng(0))
    model = T.CharTransformer(10, CFG, p, seed=0)
    with pytest.raises(InputValidationError, match="tokens must be a torch.Tensor"):
        model(np.zeros((2, 4), dtype=np.int64))


def test_numpy_functions_refuse_torch():
    from dlscience.signal_propagation.maps import attention_overlaps, block_map, iterate_maps, mlp_kernel

    p = SignalPropParams(0.5, 0.5, 1.0, 2.0)
    with pytest.raises(
        InputValidationError, match="mlp_kernel: rho must be a float or a numpy array, got a torch"
    ):
        mlp_kernel(torch.tensor([0.5]), 2.0)
    with pytest.raises(InputValidationError, match="attention_overlaps: rho"):
        attention_overlaps(torch.tensor(0.5), 1.0, 4)
    with pytest.raises(InputValidationError, match="block_map: q must be"):
        block_map(torch.tensor(1.0), 0.5, p, 4)
    with pytest.raises(InputValidationError, match="iterate_maps: params must be a SignalPropParams"):
        iterate_maps(1.0, 0.3, {"alpha_A": 0.5}, 2, 4)


def test_nonlinearity_is_defined_once_for_theory_and_network():
    """The maps' quadrature and the networks evaluate the same phi (numpy and torch agree; phi' is autograd's)."""
    from dlscience.signal_propagation.maps import mlp_kernel_at_one
    from dlscience.signal_propagation.nonlinearities import NONLINEARITIES, phi, phi_prime

    x = np.linspace(-3, 3, 13)
    for name in NONLINEARITIES:
        t = torch.tensor(x, requires_grad=True)
        y = phi(name)(t)
        (grad,) = torch.autograd.grad(y.sum(), t)
        np.testing.assert_allclose(y.detach().numpy(), phi(name)(x), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(grad.numpy(), phi_prime(name)(x), rtol=1e-9, atol=1e-12)
        block = RandomTransformer(8, 1, SignalPropParams(nonlinearity=name), seed=0).blocks[0]
        assert block.phi is phi(name)
    z = np.random.default_rng(0).standard_normal(400_000)
    assert np.mean(np.tanh(2.0 * z) ** 2) == pytest.approx(mlp_kernel_at_one(2.0, "tanh"), rel=1e-2)
    with pytest.raises(InputValidationError, match="nonlinearity must be one of"):
        phi("sigmoid")


def test_too_short_corpus_is_refused_before_writing(tmp_path):
    with pytest.raises(InputValidationError, match="test text has 3 characters, too few for windows of 13"):
        run_grid(["abc"] * 5, [0.5], [1.0], CFG, tmp_path / "g", progress=False)
    assert not (tmp_path / "g").exists()
    corpus = CharCorpus(["abc"] * 40)  # no space inside the texts: the joining space is in the vocabulary
    assert corpus.vocab_size == 5 and len(corpus.train) > 0


def test_model_values_out_of_range_are_one_line(tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["sigprop", "maps", "--alpha-A", "1.5", "--out", str(out)]) == 2
    assert "alpha_A must be in [0, 1] with complementary residuals" in _error(capsys) and not out.exists()
    assert main(["sigprop", "maps", "--n-tokens", "4", "--rho0", "-0.5", "--out", str(out)]) == 2
    assert "--rho0 in [-1/(n-1), 1]" in _error(capsys) and not out.exists()
