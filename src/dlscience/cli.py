"""The ``dlscience`` command line: one subcommand per study.

Bad input (a :class:`~dlscience.errors.UserError`) is reported as one line on stderr, with exit status 2 and no
traceback; an interrupted run exits with status 130 and can be resumed by repeating the command.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from dlscience import __version__
from dlscience.cli_options import HelpFormatter, Parser
from dlscience.errors import UserError
from dlscience.runs import RunInterrupted

__all__ = ["main", "build_parser", "HelpFormatter"]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every study's subcommands registered."""
    from dlscience.dedup import cli as dedup_cli
    from dlscience.diffusion import cli as diffusion_cli
    from dlscience.evaluation import cli as eval_cli
    from dlscience.graders import cli as graders_cli
    from dlscience.icl import cli as icl_cli
    from dlscience.learning_dynamics import cli as dynamics_cli
    from dlscience.signal_propagation import cli as sigprop_cli

    parser = Parser(
        prog="dlscience",
        description="Analytic machines from deep-learning theory and the experiments that check them.",
    )
    parser.add_argument("--version", action="version", version=f"dlscience {__version__}")
    sub = parser.add_subparsers(dest="study", metavar="STUDY", required=True)
    diffusion_cli.register(sub)
    dedup_cli.register(sub)
    icl_cli.register(sub)
    sigprop_cli.register(sub)
    dynamics_cli.register(sub)
    graders_cli.register(sub)
    eval_cli.register(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    """Show a warning as one readable line, ``dlscience: warning: ...``, without the source location."""
    text = " ".join(str(message).split())
    print(f"dlscience: warning: {text}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit status (0 done, 2 bad input, 130 interrupted)."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        print("dlscience: interrupted", file=sys.stderr)
        return 130
    shown = warnings.showwarning
    warnings.showwarning = _one_line_warning
    try:
        args.func(args)
    except UserError as exc:
        print(f"dlscience: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # unwritable or clashing output paths, full disk
        print(f"dlscience: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except RunInterrupted as exc:
        print(f"dlscience: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("dlscience: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown
    return 0


if __name__ == "__main__":
    sys.exit(main())
