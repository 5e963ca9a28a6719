"""`els calibrate` and `els compare` end to end on a tiny network trained on digits (pipeline test)."""

from __future__ import annotations

import json

import pytest

from dlscience.cli import main
from dlscience.diffusion.patch_schedule import PatchSchedule
from dlscience.diffusion.training import PRESETS, TrainConfig, train
from dlscience.errors import InputValidationError


def test_train_calibrate_compare_pipeline(tmp_path, capsys):
    cfg = TrainConfig(
        arch="resnet",
        dataset="digits",
        n_train=60,
        width=8,
        batch_size=8,
        steps=4,
        checkpoint_every=4,
        conditional=True,
    )
    train(cfg, tmp_path / "net", progress=False)
    code = main(
        [
            "els",
            "calibrate",
            "--model",
            str(tmp_path / "net"),
            "--candidates",
            "1,3,5",
            "--n-samples",
            "2",
            "--out",
            str(tmp_path / "cal"),
            "--no-progress",
        ]
    )
    assert code == 0
    schedule = PatchSchedule.from_file(tmp_path / "cal" / "schedule.json")
    assert len(schedule.sizes) == 20 and set(schedule.sizes) <= {1, 3, 5}
    assert (tmp_path / "cal" / "calibration.png").exists()
    code = main(
        [
            "els",
            "compare",
            "--model",
            str(tmp_path / "net"),
            "--schedule",
            str(tmp_path / "cal" / "schedule.json"),
            "--n-seeds",
            "2",
            "--out",
            str(tmp_path / "cmp"),
            "--no-progress",
        ]
    )
    assert code == 0
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert set(data["summary"]) == {"ELS", "LS", "IS"}
    for name in ("ELS", "LS", "IS"):
        assert len(data["per_seed"]["r"][name]) == 2
        assert all(-1 <= r <= 1 for r in data["per_seed"]["r"][name])
    assert "median r" in capsys.readouterr().out
    # a subset of machines samples the same ELS images (machines are independent of each other), and the
    # reference code's off-by-one lookup changes nothing for a constant schedule
    for offset, folder in ((0, "cmp_els"), (1, "cmp_const")):
        schedule_arg = str(tmp_path / "cal" / "schedule.json") if offset == 0 else "3"
        code = main(
            ["els", "compare", "--model", str(tmp_path / "net"), "--schedule", schedule_arg, "--n-seeds", "2"]
            + ["--machines", "els", "--schedule-offset", str(offset), "--out", str(tmp_path / folder)]
            + ["--no-progress"]
        )
        assert code == 0
    only = json.loads((tmp_path / "cmp_els" / "compare.json").read_text())
    assert set(only["summary"]) == {"ELS"}
    assert only["per_seed"]["r"]["ELS"] == data["per_seed"]["r"]["ELS"]
    # --ls-schedule gives LS a schedule of its own and leaves ELS alone: LS here samples as LS under --schedule 3
    net, cal = str(tmp_path / "net"), str(tmp_path / "cal" / "schedule.json")
    common = ["--n-seeds", "2", "--no-progress", "--model", net]
    assert main(["els", "compare", "--schedule", cal, "--ls-schedule", "3", "--machines", "els,ls"]
                + common + ["--out", str(tmp_path / "own")]) == 0  # fmt: skip
    assert main(["els", "compare", "--schedule", "3", "--machines", "ls"]
                + common + ["--out", str(tmp_path / "ls3")]) == 0  # fmt: skip
    own = json.loads((tmp_path / "own" / "compare.json").read_text())
    ls3 = json.loads((tmp_path / "ls3" / "compare.json").read_text())
    assert own["per_seed"]["r"]["ELS"] == data["per_seed"]["r"]["ELS"]
    assert own["per_seed"]["r"]["LS"] == ls3["per_seed"]["r"]["LS"]
    assert own["ls_schedule"]["sizes"] == [3] * 20 and own["schedule"]["sizes"] == data["schedule"]["sizes"]
    const = json.loads((tmp_path / "cmp_const" / "compare.json").read_text())
    assert const["schedule"]["offset"] == 1 and const["schedule"]["sizes"] == [3] * 20
    code = main(
        ["els", "compare", "--model", str(tmp_path / "net"), "--schedule", "3", "--n-seeds", "2"]
        + ["--machines", "els", "--out", str(tmp_path / "cmp_const0"), "--no-progress"]
    )
    const0 = json.loads((tmp_path / "cmp_const0" / "compare.json").read_text())
    assert const0["per_seed"]["r"]["ELS"] == const["per_seed"]["r"]["ELS"]
    capsys.readouterr()
    cal = json.loads((tmp_path / "cal" / "schedule.json").read_text())
    assert cal["times"] == sorted(cal["times"]) and len(cal["best_per_sample"][0]) == 20
    assert main(["els", "compare", "--model", str(tmp_path / "missing"), "--schedule", "3"]) == 2
    assert not (tmp_path / "missing").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dlscience: error: no model at"), err
    # settings refused when the command line is parsed, before the model is read
    for bad in (
        ["compare", "--model", str(tmp_path / "net"), "--schedule", "3", "--n-seeds", "0"],
        ["calibrate", "--model", str(tmp_path / "net"), "--candidates", "4"],
        ["calibrate", "--model", str(tmp_path / "net"), "--candidates", "3,3"],
        ["compare", "--model", str(tmp_path / "net"), "--schedule", "3", "--machines", "XS"],
    ):
        with pytest.raises(SystemExit) as exc:
            main(["els", *bad, "--out", str(tmp_path / "none"), "--no-progress"])
        assert exc.value.code == 2
    assert not (tmp_path / "none").exists()
    err = capsys.readouterr().err
    assert "expected a positive integer, got '0'" in err
    assert "expected an odd positive integer, got '4'" in err
    assert "[3] given more than once" in err
    assert "expected a comma-separated subset of ELS, LS, IS, got 'XS'" in err


def test_preset_fills_only_unset_settings():
    """The preset supplies width, lr, batch size, steps and weight average; explicit values win (also an
    explicit 0 for the average); bad values are refused."""
    unet = TrainConfig(arch="unet").resolved()
    assert (unet.width, unet.lr, unet.batch_size, unet.steps, unet.ema_decay) == tuple(
        PRESETS["cpu"]["unet"][k] for k in ("width", "lr", "batch_size", "steps", "ema_decay")
    )
    assert TrainConfig(arch="resnet").resolved().ema_decay == 0.999
    paper = TrainConfig(arch="resnet", preset="paper").resolved()
    assert (paper.width, paper.batch_size, paper.ema_decay) == (256, 128, 0.0)
    mine = TrainConfig(arch="resnet", width=8, lr=0.5, batch_size=3, steps=7, ema_decay=0.0).resolved()
    assert (mine.width, mine.lr, mine.batch_size, mine.steps, mine.ema_decay) == (8, 0.5, 3, 7, 0.0)
    assert mine.image_size == 32
    with pytest.raises(InputValidationError, match="--batch-size"):
        TrainConfig(batch_size=0).resolved()
    with pytest.raises(InputValidationError, match="--preset"):
        TrainConfig(preset="gpu").resolved()
