"""Issue 15 hardening of the diffusion study: every job in a run folder (identity = settings + digests of the
model file and training images), legacy folders, damaged inputs as one line with exit status 2, numpy inputs to
the Python API, and the labelled comparison figure."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pytest
import torch

from dlscience.cli import main
from dlscience.diffusion.comparison import SeedComparison
from dlscience.diffusion.equivariant_local_score import ELSDenoiser
from dlscience.diffusion.ideal_score import IdealDenoiser
from dlscience.diffusion.local_score import LocalDenoiser
from dlscience.diffusion.network_jobs import _compare_figure
from dlscience.diffusion.sample_job import SampleConfig, run_sample_job
from dlscience.diffusion.sampler import DDIMSampler
from dlscience.diffusion.schedule import add_noise
from dlscience.diffusion.training import TrainConfig, train
from dlscience.errors import InputValidationError

NET = TrainConfig(
    arch="resnet", dataset="digits", n_train=40, width=4, batch_size=4, steps=2, checkpoint_every=2
)
COMPARE = ["--n-seeds", "1", "--machines", "IS", "--no-progress"]


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """Two tiny networks trained on the same digits with other seeds (so other model files)."""
    root = tmp_path_factory.mktemp("nets")
    train(NET, root / "a", progress=False)
    train(TrainConfig(**{**NET.__dict__, "seed": 1}), root / "b", progress=False)
    return root


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dlscience: error:"), lines
    return lines[0]


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_compare_refuses_a_folder_of_another_model_or_schedule(nets, tmp_path, capsys):
    out = tmp_path / "cmp"
    base = ["els", "compare", "--schedule", "3", "--out", str(out), *COMPARE]
    assert main([*base, "--model", str(nets / "a")]) == 0
    capsys.readouterr()
    before = _snapshot(out)
    assert json.loads((out / "manifest.json").read_text())["finished"] is True
    assert main([*base, "--model", str(nets / "b" / "model.pt")]) == 2
    line = _one_error_line(capsys)
    assert "holds a `dlscience els compare` run of other settings, finished" in line
    assert "input model" in line and "--overwrite" in line
    assert _snapshot(out) == before  # nothing written or lost
    other = ["els", "compare", "--schedule", "5", "--out", str(out), *COMPARE, "--model", str(nets / "a")]
    assert main(other) == 2
    assert "schedule.name" in _one_error_line(capsys)
    assert _snapshot(out) == before
    assert main([*other, "--overwrite"]) == 0  # replaces it
    assert json.loads((out / "compare.json").read_text())["schedule"]["sizes"] == [5] * 20


def test_calibrate_refuses_a_folder_of_another_model(nets, tmp_path, capsys):
    out = tmp_path / "cal"
    base = ["els", "calibrate", "--candidates", "1,3", "--n-samples", "1", "--out", str(out), "--no-progress"]
    assert main([*base, "--model", str(nets / "a")]) == 0
    capsys.readouterr()
    before = _snapshot(out)
    assert "calibration_checkpoint.pt" not in before and "schedule.json" in before
    assert main([*base, "--model", str(nets / "b")]) == 2
    line = _one_error_line(capsys)
    assert "`dlscience els calibrate` run of other settings, finished" in line and "input model" in line
    assert _snapshot(out) == before
    assert main([*base, "--model", str(nets / "a"), "--machine", "LS"]) == 2
    assert 'machine "els" -> "ls"' in _one_error_line(capsys)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign"])
@pytest.mark.parametrize("command", ["calibrate", "compare"])
def test_damaged_model_file_is_one_line(nets, tmp_path, capsys, damage, command):
    model = tmp_path / "model.pt"
    good = (nets / "a" / "model.pt").read_bytes()
    if damage == "truncated":
        model.write_bytes(good[: len(good) // 2])
    elif damage == "garbage":
        model.write_bytes(b"this is not a torch file" * 10)
    else:
        torch.save({"weights": torch.zeros(2)}, model)
    extra = ["--schedule", "3", *COMPARE] if command == "compare" else ["--n-samples", "1", "--no-progress"]
    out = tmp_path / "out"
    assert main(["els", command, "--model", str(model), "--out", str(out), *extra]) == 2
    line = _one_error_line(capsys)
    assert str(model) in line
    if damage == "foreign":
        assert "is not a model written by `dlscience diffusion train`" in line
    else:
        assert "dlscience diffusion train" in line  # how to fix it
    assert not out.exists()


def test_training_folder_without_manifest_is_adopted_and_resumes_exactly(tmp_path, capsys):
    """A `diffusion train` folder written before run manifests (checkpoint.pt, model.pt, train.json) resumes
    to the same weights as an uninterrupted run, and its model serves `els compare`."""
    four = TrainConfig(**{**NET.__dict__, "steps": 4})
    train(four, tmp_path / "straight", progress=False)
    train(NET, tmp_path / "old", progress=False)
    (tmp_path / "old" / "manifest.json").unlink()
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == ["checkpoint.pt", "model.pt", "train.json"]
    summary = train(four, tmp_path / "old", progress=False)
    assert summary["steps"] == 4
    a = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "old" / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "old" / "manifest.json").read_text())["finished"] is True


def test_legacy_model_without_manifest_still_serves_compare(nets, tmp_path, capsys):
    legacy = tmp_path / "legacy"
    shutil.copytree(nets / "a", legacy)
    (legacy / "manifest.json").unlink()
    out = tmp_path / "cmp"
    cmd = ["els", "compare", "--model", str(legacy / "model.pt"), "--schedule", "3", "--out", str(out)]
    assert main([*cmd, *COMPARE]) == 0
    assert (out / "compare.json").exists() and (out / "compare.png").exists()


def test_damaged_training_checkpoint_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "diffusion",
        "train",
        "--dataset",
        "digits",
        "--n-train",
        "40",
        "--width",
        "4",
        "--batch-size",
        "4",
    ]
    args += ["--steps", "2", "--checkpoint-every", "1", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    capsys.readouterr()
    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    before = _snapshot(out)
    assert main([*args[:-3], "--steps", "3", "--out", str(out), "--no-progress"]) == 2
    line = _one_error_line(capsys)
    assert str(ckpt) in line and "training checkpoint" in line and "delete it" in line, line
    assert _snapshot(out) == before


def test_sample_job_damaged_checkpoint_and_legacy_folder(tmp_path, capsys):
    config = SampleConfig(
        dataset="digits", n_samples=1, labels=(3,), n_train=60, schedule="1", n_steps=2, t_start=1.0
    )
    run_sample_job(config, tmp_path / "run", progress=False)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    ckpt.write_bytes(b"\x00garbage")
    args = ["els", "sample", "--dataset", "digits", "--n-samples", "1", "--labels", "3", "--n-train", "60"]
    args += ["--schedule", "1", "--steps", "2", "--t-start", "1", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 2
    line = _one_error_line(capsys)
    assert str(ckpt) in line and "--overwrite" in line
    assert ckpt.read_bytes() == b"\x00garbage"  # nothing written
    assert main([*args, "--out", str(tmp_path / "run"), "--overwrite"]) == 0  # starts afresh
    assert (tmp_path / "run" / "samples.npz").exists()
    # a folder from before run manifests: refused, saying how to rerun
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "samples.npz").write_bytes(b"old")
    (legacy / "run.json").write_text("{}")
    assert main([*args, "--out", str(legacy)]) == 2
    assert "before run manifests; rerun with --overwrite" in _one_error_line(capsys)
    assert (legacy / "samples.npz").read_bytes() == b"old"
    assert main([*args, "--out", str(legacy), "--overwrite"]) == 0
    assert np.load(legacy / "samples.npz")["outputs"].shape == (1, 1, 8, 8)


def test_truncated_idx_gz_is_one_line_naming_the_file(tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    header = b"\x00\x00\x08\x03" + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    images = gzip.compress(header + bytes(10 * 28 * 28))
    (folder / "train-images-idx3-ubyte.gz").write_bytes(images[: len(images) // 2])
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(b"\x00\x00\x08\x01" + (10).to_bytes(4, "big") + bytes(10))
    )
    out = tmp_path / "out"
    assert main(["els", "sample", "--dataset", "mnist", "--data-dir", str(folder), "--out", str(out)]) == 2
    assert str(folder / "train-images-idx3-ubyte.gz") in _one_error_line(capsys)
    assert not out.exists()


def test_numpy_inputs_are_refused_with_the_conversion(gen):
    images = np.zeros((4, 1, 6, 6), dtype=np.float32)
    for build in (
        lambda: ELSDenoiser(images, 3, "zeros"),
        lambda: LocalDenoiser(images, 3),
        lambda: IdealDenoiser(images),
    ):
        with pytest.raises(
            InputValidationError, match=r"images is a numpy ndarray.*torch.from_numpy\(images\)"
        ):
            build()
    machine = IdealDenoiser(torch.from_numpy(images))
    with pytest.raises(InputValidationError, match=r"DDIMSampler.sample: x_start .*torch.from_numpy"):
        DDIMSampler(4, 1.0).sample(machine, images[:1])
    with pytest.raises(InputValidationError, match=r"add_noise: x0 .*torch.from_numpy\(x0\)"):
        add_noise(images, 0.5)
    with pytest.raises(InputValidationError, match=r"add_noise: eps .*torch.from_numpy\(eps\)"):
        add_noise(torch.from_numpy(images), 0.5, eps=images)
    with pytest.raises(InputValidationError, match=r"x_t .*torch.from_numpy\(x_t\)"):
        machine.denoise(images[:1], 0.5)


def test_compare_figure_names_seeds_classes_machines_and_medians():
    torch.manual_seed(0)
    net = torch.rand(3, 1, 6, 6) * 2 - 1
    r = {
        "ELS": torch.tensor([0.9, 0.5, 0.7], dtype=torch.float64),
        "IS": torch.tensor([0.1, 0.2, 0.3]).double(),
    }
    res = SeedComparison(
        seeds=[4, 5, 6],
        labels=torch.tensor([0, 2, 1]),
        network=net,
        machines={"ELS": net * 0.5, "IS": -net},
        r=r,
        r2={k: v**2 for k, v in r.items()},
        R2=r,
    )
    fig = _compare_figure(res, model="results/x/model.pt", class_names=["zero", "one", "two"])
    axes = np.array(fig.axes).reshape(3, 3)
    assert [ax.get_title() for ax in axes[0]] == ["seed 4\nzero", "seed 5\ntwo", "seed 6\none"]
    assert [ax.get_title() for ax in axes[1]] == ["r = 0.90", "r = 0.50", "r = 0.70"]
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["network", "ELS", "IS"]
    title = fig._suptitle.get_text()
    assert "results/x/model.pt" in title and "ELS 0.70" in title and "IS 0.20" in title


def test_interrupt_before_the_first_checkpoint_says_nothing_was_saved(tmp_path, capsys, monkeypatch):
    from dlscience.diffusion import sample_job

    def interrupted(self, *args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(sample_job.ELSDenoiser, "denoise", interrupted)
    out = tmp_path / "out"
    args = ["els", "sample", "--dataset", "digits", "--n-samples", "1", "--labels", "0", "--schedule", "1"]
    assert main([*args, "--n-train", "50", "--out", str(out), "--no-progress"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"nothing was saved in {out}" in err[0], err
    assert not (out / "checkpoint.pt").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_refused_at_parse_time(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["diffusion", "train", "--device", "cuda", "--out", str(tmp_path / "t")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sees no CUDA device" in err[0], err
    assert not (tmp_path / "t").exists()


def test_interrupted_compare_resumes_in_its_run_folder(nets, tmp_path, monkeypatch):
    """An interrupted `els compare` says its progress is saved; the same command finishes it with the samples
    of an uninterrupted run, and removes its checkpoint."""
    from dlscience.diffusion.network_jobs import run_compare
    from dlscience.runs import RunInterrupted

    kw = {"schedule": "3", "machines": ("IS",), "n_seeds": 2, "progress": False}
    full = run_compare(nets / "a", tmp_path / "full", **kw)
    calls = {"n": 0}
    original = IdealDenoiser.denoise

    def stop_once(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 25:  # during the second IS sample (19 evaluations each)
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(IdealDenoiser, "denoise", stop_once)
    with pytest.raises(RunInterrupted, match="progress is saved in .*run the same command again"):
        run_compare(nets / "a", tmp_path / "cut", **kw)
    assert (tmp_path / "cut" / "compare_checkpoint.pt").exists()
    assert not (tmp_path / "cut" / "compare.json").exists()
    calls["n"] = 100
    resumed = run_compare(nets / "a", tmp_path / "cut", **kw)
    assert calls["n"] - 100 == 19  # only the unfinished IS sample was redone
    assert resumed["per_seed"] == full["per_seed"]
    assert not (tmp_path / "cut" / "compare_checkpoint.pt").exists()
    manifest = json.loads((tmp_path / "cut" / "manifest.json").read_text())
    assert manifest["finished"] and "compare_checkpoint.pt" not in manifest["files"]
