"""The shared CLI options: parse-time validation with one-line errors (exit 2), and warnings as one line."""

from __future__ import annotations

import argparse
import warnings

import pytest

from dlscience import cli_options as o


def _parser(add):
    p = o.Parser(prog="dlscience test")
    add(p)
    return p


@pytest.mark.parametrize(
    "kind, text, ok",
    [
        (o.positive_int, "3", 3),
        (o.positive_int, "0", None),
        (o.positive_int, "-2", None),
        (o.positive_int, "2.5", None),
        (o.nonnegative_int, "0", 0),
        (o.positive_float, "1e-3", 1e-3),
        (o.positive_float, "0", None),
        (o.positive_float, "nan", None),
        (o.positive_float, "inf", None),
        (o.nonnegative_float, "-0.1", None),
        (o.unit_interval, "1", 1.0),
        (o.unit_interval, "1.5", None),
        (o.odd_int, "5", 5),
        (o.odd_int, "4", None),
        (o.memory_size, "2GB", 2 * 1024**3),
        (o.memory_size, "0", None),
        (o.memory_size, "lots", None),
    ],
)
def test_value_types(kind, text, ok):
    if ok is None:
        with pytest.raises(argparse.ArgumentTypeError):
            kind(text)
    else:
        assert kind(text) == ok


def test_lists_refuse_repeats_and_normalise_case():
    assert o.int_list(o.odd_int)("3,5,7") == (3, 5, 7)
    with pytest.raises(argparse.ArgumentTypeError, match=r"\[5\] given more than once"):
        o.int_list(o.odd_int)("3,5,5")
    with pytest.raises(argparse.ArgumentTypeError, match="odd"):
        o.int_list(o.odd_int)("3,4")
    with pytest.raises(argparse.ArgumentTypeError):
        o.int_list()("3,,4")
    assert o.choice_list(["ELS", "LS", "IS"], case="upper")("els, Ls") == ("ELS", "LS")
    with pytest.raises(argparse.ArgumentTypeError, match="subset of ELS, LS, IS"):
        o.choice_list(["ELS", "LS", "IS"], case="upper")("els,xs")


def test_parse_errors_are_one_line_with_exit_2(capsys, tmp_path):
    p = _parser(lambda p: o.add_run_options(p, out=None, device=True))
    f = tmp_path / "afile"
    f.write_text("x")
    for argv, expected in [
        (["--out", str(f)], "is a file; give a folder"),
        (["--out", "x", "--seed", "-1"], "--seed"),
        (["--out", "x", "--device", "tpu"], "expected cpu, cuda"),
    ]:
        with pytest.raises(SystemExit) as exc:
            p.parse_args(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and expected in err and err.count("\n") == 1, err
    args = p.parse_args(["--out", "x", "--no-progress"])
    assert args.progress is False and args.overwrite is False and args.seed == 0 and args.device == "cpu"


def test_cuda_without_cuda_is_refused_at_parse_time(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(argparse.ArgumentTypeError, match="sees no CUDA device; use --device cpu"):
        o.device_name("cuda")


def test_cli_shows_warnings_as_one_line(capsys, monkeypatch):
    from dlscience import cli

    def job(args):
        warnings.warn("something odd\n  happened", UserWarning, stacklevel=1)

    class Args:
        func = staticmethod(job)

    class FakeParser:
        def parse_args(self, argv):
            return Args()

    monkeypatch.setattr(cli, "build_parser", lambda: FakeParser())
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert cli.main([]) == 0
    assert capsys.readouterr().err == "dlscience: warning: something odd happened\n"
