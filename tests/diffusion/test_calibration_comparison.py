"""Calibration recovers a known schedule; comparison metrics; a machine compared with itself gives r = 1."""

from __future__ import annotations

import pytest
import torch

from dlscience.diffusion import ELSDenoiser, IdealDenoiser, LocalDenoiser, PatchSchedule
from dlscience.diffusion.calibration import calibrate, cosine_similarity
from dlscience.diffusion.comparison import compare, determination, pearson_r
from dlscience.errors import UserError


def test_calibration_recovers_the_schedule_of_a_machine(gen):
    """Calibrating ELS machines against an ELS 'network' with a known schedule returns that schedule: at the
    true P the two scores are identical (cosine 1)."""
    imgs = torch.rand(12, 1, 10, 10, generator=gen) * 2 - 1
    labels = torch.arange(12) % 2
    known = PatchSchedule((1, 1, 3, 3, 3, 3, 5, 5, 5, 5, 5, 7, 7, 7, 7, 7, 9, 9, 9, 9))
    network = ELSDenoiser(imgs, known, "circular", labels=labels, precision="float64")
    result = calibrate(
        network,
        lambda P: ELSDenoiser(imgs, P, "circular", labels=labels, precision="float64"),
        candidates=(1, 3, 5, 7, 9),
        n_samples=3,
        seed=1,
    )
    assert result.schedule.sizes == known.sizes
    assert result.cosine.max(-1).values.min() > 1 - 1e-9
    assert result.labels is not None and result.labels.shape == (3,)
    assert result.to_json()["sizes"] == list(known.sizes)


def test_metrics_closed_forms(gen):
    x = torch.randn(3, 2, 4, 4, generator=gen)
    torch.testing.assert_close(pearson_r(x, 2 * x + 1), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(pearson_r(x, -x), -torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(determination(x, x), torch.ones(3, dtype=torch.float64))
    # predicting the mean gives R^2 = 0; a shifted copy keeps r = 1 but loses R^2
    mean = x.flatten(1).mean(1).view(3, 1, 1, 1).expand_as(x)
    torch.testing.assert_close(
        determination(x, mean), torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0
    )
    assert (determination(x, x + 1) < 1).all()
    torch.testing.assert_close(cosine_similarity(x, 3 * x), torch.ones(3, dtype=torch.float64))


def test_machine_compared_with_itself_gives_r_1_and_baselines_rank(gen):
    """Same seeds, same labels, same sampler: a machine against itself has r = R^2 = 1 on every seed; other
    machines score lower."""
    imgs = torch.rand(10, 1, 8, 8, generator=gen) * 2 - 1
    labels = torch.arange(10) % 2
    els = ELSDenoiser(imgs, 3, "zeros", labels=labels)
    machines = {
        "ELS": els,
        "LS": LocalDenoiser(imgs, 3, labels=labels),
        "IS": IdealDenoiser(imgs, labels=labels),
    }
    res = compare(els, machines, n_seeds=4, seed=3, machine_t_start=1.0)
    torch.testing.assert_close(res.r["ELS"], torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(res.R2["ELS"], torch.ones(4, dtype=torch.float64))
    assert (res.r["IS"] < 1 - 1e-3).all()
    s = res.summary()
    assert s["ELS"]["r"]["median"] == 1.0 and 0 <= s["ELS"]["beats"]["IS"] <= 1
    assert res.labels is not None and res.network.shape == (4, 1, 8, 8)
    # a seed's sample does not depend on how many seeds are compared
    one = compare(els, {"ELS": els}, n_seeds=1, seed=3, machine_t_start=1.0)
    torch.testing.assert_close(one.network[0], res.network[0])


def test_interrupted_comparison_resumes_to_the_same_result(gen, tmp_path, monkeypatch):
    """A comparison killed part-way continues from its checkpoint: restored samples are not recomputed and the
    result equals an uninterrupted run; a checkpoint of other settings is refused."""
    imgs = torch.rand(10, 1, 8, 8, generator=gen) * 2 - 1
    labels = torch.arange(10) % 2
    els = ELSDenoiser(imgs, 3, "zeros", labels=labels)
    machines = {"LS": LocalDenoiser(imgs, 3, labels=labels), "IS": IdealDenoiser(imgs, labels=labels)}
    full = compare(els, machines, n_seeds=3, seed=5)

    class Stop(Exception):
        pass

    def stop_in_ls(name, i):
        if name == "LS" and i == 1:
            raise Stop

    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(Stop):
        compare(els, machines, n_seeds=3, seed=5, checkpoint=ckpt, progress=stop_in_ls)
    calls = []
    original = type(els).denoise

    def counting_denoise(self, *a, **k):
        calls.append(1)
        return original(self, *a, **k)

    monkeypatch.setattr(type(els), "denoise", counting_denoise)
    resumed = compare(els, machines, n_seeds=3, seed=5, checkpoint=ckpt)
    assert not calls  # the network's 3 samples came from the checkpoint
    compare(els, {}, n_seeds=1, seed=5)
    assert calls  # (the counter does see the network's evaluations)
    monkeypatch.undo()
    for name in machines:
        torch.testing.assert_close(resumed.machines[name], full.machines[name], rtol=0, atol=0)
        torch.testing.assert_close(resumed.r[name], full.r[name], rtol=0, atol=0)
    torch.testing.assert_close(resumed.network, full.network, rtol=0, atol=0)
    ckpt.write_bytes(b"garbage")
    with pytest.raises(UserError, match="damaged|comparison checkpoint"):
        compare(els, machines, n_seeds=3, seed=5, checkpoint=ckpt)


def test_interrupted_calibration_resumes_to_the_same_result(gen, tmp_path):
    imgs = torch.rand(8, 1, 8, 8, generator=gen) * 2 - 1
    network = ELSDenoiser(imgs, PatchSchedule((3,) * 10 + (5,) * 10), "zeros", precision="float64")

    def machine_for(P):
        return ELSDenoiser(imgs, P, "zeros", precision="float64")

    kw = {"candidates": (3, 5), "n_samples": 2, "seed": 4}
    full = calibrate(network, machine_for, **kw)

    class Stop(Exception):
        pass

    def stop(done, total):
        if done == 15:  # during time step 8 of 20
            raise Stop

    ckpt = tmp_path / "cal.pt"
    with pytest.raises(Stop):
        calibrate(network, machine_for, progress=stop, checkpoint=ckpt, **kw)
    resumed = calibrate(network, machine_for, checkpoint=ckpt, **kw)
    torch.testing.assert_close(resumed.cosine, full.cosine, rtol=0, atol=0)
    assert resumed.schedule.sizes == full.schedule.sizes
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(UserError, match="calibration checkpoint"):
        calibrate(network, machine_for, checkpoint=ckpt, **kw)
