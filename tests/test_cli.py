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
        (["--n-train", "5", "--n-samples", "10"], "has no images of class"),
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


@pytest.mark.parametrize(
    "command, args, message",
    [
        (
            ["els", "sample"],
            ["--n-samples", "0"],
            "argument --n-samples: expected a positive integer, got '0'",
        ),
        (["els", "sample"], ["--n-train", "0"], "argument --n-train: expected a positive integer"),
        (["els", "sample"], ["--image-size", "-3"], "argument --image-size: expected a positive integer"),
        (["els", "sample"], ["--steps", "0"], "argument --steps: expected a positive integer"),
        (["els", "sample"], ["--machine", "xls"], "argument --machine: expected one of els, ls, is"),
        (["els", "sample"], ["--memory-limit", "0"], "argument --memory-limit: expected a positive memory"),
        (["els", "calibrate", "--model", "m"], ["--candidates", "3,4"], "expected an odd positive integer"),
        (["els", "calibrate", "--model", "m"], ["--candidates", "5,3,5"], "[5] given more than once"),
        (
            ["els", "calibrate", "--model", "m"],
            ["--n-samples", "0"],
            "argument --n-samples: expected a positive",
        ),
        (
            ["els", "calibrate", "--model", "m"],
            ["--machine", "is"],
            "argument --machine: expected one of els, ls",
        ),
        (["els", "compare", "--model", "m", "--schedule", "3"], ["--n-seeds", "-1"], "argument --n-seeds"),
        (["els", "compare", "--model", "m", "--schedule", "3"], ["--machines", "ELS,els"], "more than once"),
        (["diffusion", "train"], ["--width", "0"], "argument --width: expected a positive integer, got '0'"),
        (["diffusion", "train"], ["--lr", "0"], "argument --lr: expected a positive number"),
        (["diffusion", "train"], ["--lr", "-1e-3"], "argument --lr"),
        (["diffusion", "train"], ["--batch-size", "0"], "argument --batch-size: expected a positive integer"),
        (["diffusion", "train"], ["--steps", "0"], "argument --steps: expected a positive integer"),
        (
            ["diffusion", "train"],
            ["--checkpoint-every", "0"],
            "argument --checkpoint-every: expected a positive",
        ),
        (["diffusion", "train"], ["--n-train", "0"], "argument --n-train: expected a positive integer"),
        (["diffusion", "train"], ["--image-size", "0"], "argument --image-size: expected a positive integer"),
        (["diffusion", "train"], ["--ema-decay", "1"], "argument --ema-decay: expected a decay in [0, 1)"),
        (["diffusion", "train"], ["--ema-decay", "-0.1"], "argument --ema-decay: expected a decay in [0, 1)"),
    ],
)
def test_bad_settings_refused_when_parsed(capsys, tmp_path, command, args, message):
    """Every count, size, rate and list is checked when the command line is parsed, before any data or model
    is read: one line, exit status 2, nothing written."""
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main([*command, *args, "--out", str(out)])
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dlscience: error:"), lines
    assert message in lines[0], lines[0]
    assert not out.exists()


def test_machine_names_in_either_case(tmp_path):
    """`--machine IS`, `--machine ls` and `--machines els,Ls` name the same machines as their canonical case
    (lower case for `els sample/calibrate`, upper case as in compare.json for `els compare`)."""
    from dlscience.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["els", "sample", "--machine", "IS"]).machine == "is"
    assert parser.parse_args(["els", "calibrate", "--model", "m", "--machine", "LS"]).machine == "ls"
    args = parser.parse_args(["els", "compare", "--model", "m", "--schedule", "3", "--machines", "els,Ls"])
    assert args.machines == ("ELS", "LS")
    assert parser.parse_args(["els", "compare", "--model", "m", "--schedule", "3"]).machines == (
        "ELS",
        "LS",
        "IS",
    )


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
    assert "does not exist" in lines[0]
    assert not out.exists()
    (tmp_path / "empty").mkdir()  # a named folder without the files: where it looked, how to get them
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
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "not found: looked for" in lines[0], err
    assert str(tmp_path / "empty" / "MNIST" / "raw") in lines[0] and str(tmp_path / "nowhere") not in lines[0]
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
    with pytest.raises(SystemExit) as exc:
        main(
            [
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
            ]
        )
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"{clash} is a file; give a folder" in err
    assert clash.read_text() == "not a folder"


def test_parse_bytes():
    assert parse_bytes("2GB") == 2 * 1024**3
    assert parse_bytes("512MB") == 512 * 1024**2
    assert parse_bytes("1.5g") == int(1.5 * 1024**3)
    assert parse_bytes("1000") == 1000
    with pytest.raises(ValueError, match="memory size"):
        parse_bytes("lots")
