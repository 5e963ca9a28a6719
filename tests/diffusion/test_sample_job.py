"""The main job (`dlscience els sample`) end to end on scikit-learn's digits (8x8, bundled): outputs, their
content, determinism, resuming after an interruption, and refusing a folder that holds another run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dlscience.data import load_images
from dlscience.diffusion import sample_job
from dlscience.diffusion.sample_job import SampleConfig, run_sample_job
from dlscience.errors import UserError

CONFIG = SampleConfig(dataset="digits", n_samples=3, labels=(0, 7, 7), n_train=400, schedule="3", seed=5)


def test_outputs_and_their_content(tmp_path):
    """The folder holds the figure, npz and JSON; outputs are convex combinations of class pixels (in range),
    nearest-neighbour distances are recomputed exactly, provenance points to images of the sample's class."""
    summary = run_sample_job(CONFIG, tmp_path, progress=False)
    for name in ("samples.png", "samples.npz", "run.json", "checkpoint.pt"):
        assert (tmp_path / name).exists(), name
    z = np.load(tmp_path / "samples.npz")
    assert z["outputs"].shape == (3, 1, 8, 8)
    assert list(z["seeds"]) == [5, 6, 7] and list(z["labels"]) == [0, 7, 7]
    assert z["outputs"].min() >= -1 - 1e-6 and z["outputs"].max() <= 1 + 1e-6
    ds = load_images("digits", n=400, seed=5)
    flat = ds.images.flatten(1).double()
    d = torch.cdist(torch.from_numpy(z["outputs"]).flatten(1).double(), flat)
    np.testing.assert_allclose(z["nearest_distance"], d.min(1).values.numpy(), rtol=1e-6)
    assert list(z["nearest_index"]) == d.argmin(1).tolist()
    for i, label in enumerate(z["labels"]):
        assert (ds.labels[torch.from_numpy(z["source_image"][i]).flatten()] == int(label)).all()
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["settings"]["labels"] == [0, 7, 7] and len(run["samples"]) == 3
    assert summary["data"]["n_train"] == 400
    assert len(run["evaluation_times"]) == 19 and run["evaluation_times"][0] == 0.95


def test_same_seed_same_result_and_seeds_matter(tmp_path):
    """Same settings give identical outputs; another seed gives different ones."""
    run_sample_job(CONFIG, tmp_path / "a", progress=False)
    run_sample_job(CONFIG, tmp_path / "b", progress=False)
    other = SampleConfig(**{**CONFIG.__dict__, "seed": 6})
    run_sample_job(other, tmp_path / "c", progress=False)
    a, b, c = (np.load(tmp_path / k / "samples.npz")["outputs"] for k in "abc")
    np.testing.assert_array_equal(a, b)
    assert np.abs(a[0] - c[0]).max() > 1e-3


def test_interrupted_run_resumes_to_identical_output(tmp_path, monkeypatch):
    """Kill the run after 10 machine evaluations; running again resumes from the checkpoint and gives the same
    outputs as an uninterrupted run (without redoing finished steps)."""
    run_sample_job(CONFIG, tmp_path / "full", progress=False)
    calls = {"n": 0}
    original = sample_job.ELSDenoiser.denoise

    def flaky(self, *args, **kw):
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt
        return original(self, *args, **kw)

    monkeypatch.setattr(sample_job.ELSDenoiser, "denoise", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_sample_job(CONFIG, tmp_path / "resumed", progress=False)
    assert not (tmp_path / "resumed" / "samples.npz").exists()
    assert (tmp_path / "resumed" / "checkpoint.pt").exists()
    calls["n"] = 100  # no more interruptions
    run_sample_job(CONFIG, tmp_path / "resumed", progress=False)
    assert calls["n"] - 100 == 2 * 18 - 9  # two label groups x 18 denoise calls, 9 done before the stop
    full = np.load(tmp_path / "full" / "samples.npz")
    resumed = np.load(tmp_path / "resumed" / "samples.npz")
    for key in ("outputs", "source_image", "nearest_index"):
        np.testing.assert_array_equal(full[key], resumed[key])


def test_folder_with_another_run_is_refused(tmp_path):
    """A checkpoint from different settings is never mixed in: refused unless overwrite=True."""
    run_sample_job(CONFIG, tmp_path, progress=False)
    other = SampleConfig(**{**CONFIG.__dict__, "seed": 9})
    with pytest.raises(UserError, match="run of other settings"):
        run_sample_job(other, tmp_path, progress=False)
    run_sample_job(other, tmp_path, progress=False, overwrite=True)
    assert list(np.load(tmp_path / "samples.npz")["seeds"]) == [9, 10, 11]
