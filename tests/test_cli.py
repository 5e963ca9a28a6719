"""The `dlscience` command line: help texts, and bad input giving one clear error line (exit status 2, no
traceback) and writing nothing."""

from __future__ import annotations

import pytest

from dlscience.cli import main
from dlscience.diffusion.cli import parse_bytes


def run_cli(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["els", "sample", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--dataset",
        "--n-samples",
        "--labels",
        "--unconditional",
        "--machine",
        "--padding",
        "--schedule",
        "--n-train",
        "--seed",
        "--steps",
        "--memory-limit",
        "--out",
        "--overwrite",
    ):
        assert option in text, option


@pytest.mark.parametrize(
    "args, message",
    [
        (["--schedule", "4"], "odd"),
        (["--schedule", "0"], "odd"),
        (["--schedule", "99"], "too large"),
        (["--schedule", "fashion-mnist-resnet-typo"], "unknown patch-size preset"),
        (["--unconditional", "--labels", "1"], "--labels"),
        (["--labels", "12"], "outside [0, 10)"),
        (["--labels", "1,2"], "give one, or one per sample"),
        (["--n-samples", "0"], "--n-samples"),
        (["--n-train", "0"], "--n-train must be a positive integer"),
        (["--image-size", "0"], "--image-size must be a positive integer"),
        (["--n-train", "5", "--n-samples", "10"], "has no images of class"),
        (["--steps", "0"], "--steps must be a positive integer"),
        (["--t-start", "0.33"], "--t-start 0.33 must be a grid time"),
    ],
)
def test_bad_input_one_line_no_output(capsys, tmp_path, args, message):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "els", "sample", "--dataset", "digits", "--out", str(out), *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dlscience: error:"), err
    assert message in lines[0], lines[0]
    assert "Traceback" not in err
    assert not out.exists()


def test_missing_dataset_says_where_it_looked_and_how_to_get_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("DLSCIENCE_DATA", str(tmp_path / "nowhere"))
    out = tmp_path / "out"
    code, _, err = run_cli(
        capsys,
        "els",
        "sample",
        "--dataset",
        "mnist",
        "--data-dir",
        str(tmp_path / "empty"),
        "--out",
        str(out),
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--download" in lines[0] and str(tmp_path / "empty") in lines[0], err
    assert not out.exists()


def test_bad_memory_limit_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["els", "sample", "--memory-limit", "lots"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read memory size 'lots'" in err[0], err


def test_output_path_that_is_a_file_gives_one_line(capsys, tmp_path):
    clash = tmp_path / "file"
    clash.write_text("not a folder")
    code, _, err = run_cli(
        capsys,
        "els",
        "sample",
        "--dataset",
        "digits",
        "--n-samples",
        "1",
        "--labels",
        "0",
        "--schedule",
        "1",
        "--steps",
        "2",
        "--t-start",
        "1.0",
        "--out",
        str(clash),
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_parse_bytes():
    assert parse_bytes("2GB") == 2 * 1024**3
    assert parse_bytes("512MB") == 512 * 1024**2
    assert parse_bytes("1.5g") == int(1.5 * 1024**3)
    assert parse_bytes("1000") == 1000
    with pytest.raises(ValueError, match="memory size"):
        parse_bytes("lots")
