"""Command-line options and conventions shared by every ``dlscience`` subcommand.

Every study's CLI module builds its parsers from these pieces, so an option means the same thing, has the same
name and is checked the same way everywhere:

* ``--out``          output folder (a file there is refused at parse time, with one message everywhere);
* ``--seed``         every stochastic command takes one; same seed, same result;
* ``--overwrite``    replace a run of other settings found in ``--out`` (see :mod:`dlscience.runs`);
* ``--no-progress``  hide progress bars;
* ``--device``       torch device, checked at parse time (``cuda`` without CUDA is refused before any model
  loads);
* ``--preset``       one name for named configurations (sizes, budgets) in every study.

Values are validated by the ``type=`` functions below at parse time, before any data or model is loaded: a bad
value ends in one ``dlscience: error: ...`` line and exit status 2. This module imports nothing from
:mod:`dlscience.cli` (which imports the study CLIs), so there is no import cycle.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "Parser",
    "HelpFormatter",
    "add_run_options",
    "add_out",
    "add_seed",
    "add_overwrite",
    "add_progress",
    "add_device",
    "add_preset",
    "positive_int",
    "nonnegative_int",
    "positive_float",
    "nonnegative_float",
    "unit_interval",
    "odd_int",
    "int_list",
    "choice_list",
    "memory_size",
    "out_folder",
    "device_name",
    "parse_bytes",
    "out_is_file_message",
    "allow_negative_values",
    "add_study",
    "add_command",
    "job_options",
    "pick",
]


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``dlscience: error: ...``, exit status 2) instead of a usage block."""

    def error(self, message: str):
        self.exit(2, f"dlscience: error: {message} (see `{self.prog} --help`)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show "(default: ...)" only for real defaults (not None, False or a required option)."""

    def _get_help_string(self, action):
        if (
            action.default is None
            or action.default is False
            or isinstance(action, argparse._StoreFalseAction)
            or action.required
            or "default" in (action.help or "")
        ):
            return action.help
        return super()._get_help_string(action)


# ----------------------------------------------------------------------------------------------- value types
def _number(text: str, kind: type, what: str, ok=lambda v: True):
    """``text`` read as ``kind`` (int or finite float) and accepted by ``ok``, else a one-line
    ``ArgumentTypeError`` saying "expected WHAT"."""
    try:
        value = kind(text)
    except (TypeError, ValueError):
        value = None
    if value is None or (kind is float and not math.isfinite(value)) or not ok(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """``type=`` for an integer >= 1 (widths, batch sizes, step counts, sample counts).

    Raises ``argparse.ArgumentTypeError`` (shown as a one-line error) for 0, negatives and non-integers.
    """
    return _number(text, int, "a positive integer", lambda v: v >= 1)


def nonnegative_int(text: str) -> int:
    """``type=`` for an integer >= 0."""
    return _number(text, int, "an integer >= 0", lambda v: v >= 0)


def positive_float(text: str) -> float:
    """``type=`` for a finite float > 0 (learning rates, scales, variances)."""
    return _number(text, float, "a positive number", lambda v: v > 0)


def nonnegative_float(text: str) -> float:
    """``type=`` for a finite float >= 0."""
    return _number(text, float, "a number >= 0", lambda v: v >= 0)


def unit_interval(text: str) -> float:
    """``type=`` for a float in [0, 1] (fractions, thresholds, cosine similarities)."""
    return _number(text, float, "a number in [0, 1]", lambda v: 0.0 <= v <= 1.0)


def odd_int(text: str) -> int:
    """``type=`` for an odd integer >= 1 (patch sizes)."""
    return _number(text, int, "an odd positive integer", lambda v: v >= 1 and v % 2 == 1)


def int_list(item: Callable[[str], int] = int, *, unique: bool = True) -> Callable[[str], tuple[int, ...]]:
    """``type=`` factory for comma-separated integers, each parsed by ``item`` (e.g. :func:`positive_int`).

    With ``unique`` a repeated value is refused (it would do the same work twice)."""

    def parse(text: str) -> tuple[int, ...]:
        parts = [p.strip() for p in text.split(",")]
        if not text.strip() or any(not p for p in parts):
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
        try:
            values = tuple(item(p) for p in parts)
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{exc} in {text!r}") from None
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
        if unique and len(set(values)) != len(values):
            dup = sorted({v for v in values if values.count(v) > 1})
            raise argparse.ArgumentTypeError(f"{dup} given more than once in {text!r}")
        return values

    return parse


def choice_list(choices: Sequence[str], *, case: str = "lower") -> Callable[[str], tuple[str, ...]]:
    """``type=`` factory for a comma-separated subset of ``choices``, case-insensitive, returned in ``case``
    ("lower" or "upper"), without repeats."""
    norm = str.lower if case == "lower" else str.upper
    allowed = [norm(c) for c in choices]

    def parse(text: str) -> tuple[str, ...]:
        values = tuple(norm(p.strip()) for p in text.split(",") if p.strip())
        bad = [v for v in values if v not in allowed]
        if not values or bad:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated subset of {', '.join(allowed)}, got {text!r}"
            )
        if len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(f"a value is given more than once in {text!r}")
        return values

    return parse


def parse_bytes(text: str) -> int:
    """Parse a memory size such as ``2GB``, ``512MB``, ``1.5G`` or ``1000000`` into bytes (powers of 1024).

    Raises
    ------
    dlscience.errors.InputValidationError
        If ``text`` is not a size.
    """
    from dlscience.errors import InputValidationError

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgG]?)(i?[bB])?\s*", text)
    if not m:
        raise InputValidationError(f"cannot read memory size {text!r}; write e.g. 2GB or 512MB")
    scale = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def memory_size(text: str) -> int:
    """``type=`` for a memory size (see :func:`parse_bytes`), > 0."""
    from dlscience.errors import InputValidationError

    try:
        value = parse_bytes(text)
    except InputValidationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive memory size, got {text!r}")
    return value


def out_is_file_message(path: str | Path) -> str:
    """The one message for an output folder that is an existing file (used by the CLI and the run folder)."""
    return f"--out {path} is a file; give a folder (it is created if missing)"


def out_folder(text: str) -> str:
    """``type=`` for ``--out``: any path that is not an existing file."""
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(out_is_file_message(text).removeprefix("--out "))
    return text


def device_name(text: str) -> str:
    """``type=`` for ``--device``: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, refused at parse time when that
    device is not available here (so no model or dataset is loaded first)."""
    text = text.strip().lower()
    m = re.fullmatch(r"(cpu|cuda|mps)(?::(\d+))?", text)
    if not m or (m.group(1) != "cuda" and m.group(2) is not None):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or mps, got {text!r}")
    if m.group(1) == "cpu":
        return text
    import torch

    if m.group(1) == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(
                f"{text!r}: this torch ({torch.__version__}) sees no CUDA device; use --device cpu or install a "
                "CUDA build of torch on a machine with a GPU"
            )
        if m.group(2) is not None and int(m.group(2)) >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f"{text!r}: only {torch.cuda.device_count()} CUDA device(s) here (cuda:0 ...)"
            )
    elif not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: no Apple MPS device here; use --device cpu")
    return text


# ----------------------------------------------------------------------------------------------- commands
def add_study(
    sub: argparse._SubParsersAction, name: str, *, help: str, description: str, dest: str = "command"
):
    """Add a study's subcommand group (``dlscience NAME ...``); returns the action to add its commands to."""
    group = sub.add_parser(name, help=help, description=description)
    return group.add_subparsers(dest=dest, metavar="COMMAND", required=True)


def add_command(cmds: argparse._SubParsersAction, name: str, help: str, description: str, *, func=None):
    """Add one command to a study group, with the shared help format; ``func(args)`` runs it (or set it later
    with ``parser.set_defaults``)."""
    parser = cmds.add_parser(name, help=help, description=description, formatter_class=HelpFormatter)
    if func is not None:
        parser.set_defaults(func=func)
    return parser


def job_options(args: argparse.Namespace) -> dict:
    """The common run options a job function takes, from parsed arguments: ``progress`` and ``overwrite``
    (those of them the command has), for ``job(..., **job_options(args))``."""
    return {name: getattr(args, name) for name in ("progress", "overwrite") if hasattr(args, name)}


def pick(args: argparse.Namespace, *names: str) -> dict:
    """``{name: args.name}`` for the given option names, to pass parsed options on to a job by keyword."""
    return {name: getattr(args, name) for name in names}


# ----------------------------------------------------------------------------------------------- options
def allow_negative_values(parser: argparse.ArgumentParser) -> None:
    """Let option values start with a minus sign followed by a digit (``--deltas -1,0,1``, ``--grid -1:1:7``).

    argparse otherwise takes ``-1,0,1`` for an option name; no dlscience option name starts with a digit."""
    parser._negative_number_matcher = re.compile(r"^-\.?\d")


def add_out(parser: argparse.ArgumentParser, default: str | None, *, help: str = "output folder") -> None:
    """``--out FOLDER`` (required when ``default`` is None)."""
    kw = {"required": True} if default is None else {"default": default}
    parser.add_argument("--out", type=out_folder, help=help, **kw)


def add_seed(
    parser: argparse.ArgumentParser, *, default: int = 0, help: str = "random seed (same seed, same result)"
) -> None:
    """``--seed N`` (an integer >= 0)."""
    parser.add_argument("--seed", type=nonnegative_int, default=default, help=help)


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    """``--overwrite``: replace a run of other settings in ``--out`` (removing every file it wrote)."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a run of other inputs or settings found in --out, removing every file it wrote "
        "(without it such a folder is refused; a run of the same settings resumes)",
    )


def add_progress(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``: hide progress bars (``args.progress`` is then False)."""
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bars")


def add_device(parser: argparse.ArgumentParser, *, default: str = "cpu") -> None:
    """``--device`` (see :func:`device_name`)."""
    parser.add_argument(
        "--device",
        type=device_name,
        default=default,
        help="torch device: cpu, cuda, cuda:N or mps (checked before anything loads)",
    )


def add_preset(parser: argparse.ArgumentParser, choices: Sequence[str], default: str, help: str) -> None:
    """``--preset NAME``: one name for the named configurations of every study."""
    parser.add_argument("--preset", default=default, choices=tuple(choices), help=help)


def add_run_options(
    parser: argparse.ArgumentParser,
    *,
    out: str | None,
    seed: bool = True,
    seed_help: str = "random seed (same seed, same result)",
    overwrite: bool = True,
    progress: bool = True,
    device: bool = False,
) -> None:
    """The common options of a command that writes a run folder: ``--out`` (default ``out``; required when
    None), ``--seed``, ``--overwrite``, ``--no-progress`` and, with ``device``, ``--device``."""
    add_out(parser, out)
    if seed:
        add_seed(parser, help=seed_help)
    if overwrite:
        add_overwrite(parser)
    if progress:
        add_progress(parser)
    if device:
        add_device(parser)
