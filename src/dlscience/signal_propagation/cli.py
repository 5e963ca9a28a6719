"""CLI of the signal-propagation study: ``dlscience sigprop maps | phase-diagram | simulate | trainability``.

Options are checked at parse time (:mod:`dlscience.cli_options`); the jobs live in
:mod:`dlscience.signal_propagation.jobs`: this module parses, calls a job and prints.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from dlscience import cli_options as opt
from dlscience.cli_options import (
    add_command,
    add_run_options,
    add_study,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
)
from dlscience.signal_propagation.nonlinearities import NONLINEARITIES

__all__ = ["register"]


SUMMARY = "signal propagation in deep random transformers (Cowsik et al. 2024)"
DESCRIPTION = (
    "Token geometry through deep random transformers: (q, rho) maps, order-chaos phase "
    "diagram, angle and gradient exponents, and whether they predict trainability (Cowsik, Nebabu, Qi & "
    "Ganguli, arXiv 2403.02579)."
)


def _grid(lo: float, hi: float | None, what: str) -> Callable[[str], list[float]]:
    """``type=`` for a grid: ``"0.1,0.5,0.9"`` or ``"START:STOP:NUM"`` (inclusive, evenly spaced), every value
    in the open interval (lo, hi) (hi None: unbounded), no value twice. One value is a valid grid."""
    bounds = f"in ({lo:g}, {hi:g})" if hi is not None else f"> {lo:g}"

    def parse(text: str) -> list[float]:
        import numpy as np

        try:
            if ":" in text:
                a, b, k = text.split(":")
                if int(k) < 1:
                    raise ValueError
                values = [float(v) for v in np.linspace(float(a), float(b), int(k))]
            else:
                values = [float(v) for v in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a list like 0.1,0.5 or START:STOP:NUM with NUM >= 1, got {text!r}"
            ) from None
        bad = [v for v in values if not (np.isfinite(v) and v > lo and (hi is None or v < hi))]
        if bad:
            raise argparse.ArgumentTypeError(f"{what} must be {bounds}, got {bad[0]:g} in {text!r}")
        if len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(f"a value is given more than once in {text!r}")
        return values

    return parse


def _at_least_two(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected an integer >= 2, got {text!r}")
    return value


def _settings(text: str) -> list[tuple[float, float, float]]:
    """``type=`` for ``--settings``: semicolon-separated alpha_A,alpha_M,sigma_w triples."""
    try:
        out = [tuple(float(v) for v in s.split(",")) for s in text.split(";") if s.strip()]
        if not out or any(len(s) != 3 for s in out):
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected triples like 0.5,0.5,3;0.3,0.7,4, got {text!r}") from None
    for aA, aM, sw in out:
        if not (0 <= aA <= 1 and 0 <= aM <= 1 and sw > 0):
            raise argparse.ArgumentTypeError(
                f"each setting needs alpha_A and alpha_M in [0, 1] and sigma_w > 0, got {aA:g},{aM:g},{sw:g}"
            )
    return out


def _nonlinearity_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nonlinearity", default="tanh", choices=NONLINEARITIES, help="MLP nonlinearity phi")


def _sigma_A_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sigma-A", type=nonnegative_float, default=1.0, help="attention logit standard deviation"
    )


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alpha-A", type=nonnegative_float, default=0.5, help="residual strength of attention")
    p.add_argument("--alpha-M", type=nonnegative_float, default=0.5, help="residual strength of the MLP")
    _sigma_A_option(p)
    p.add_argument(
        "--sigma-w", type=positive_float, default=1.0, help="MLP first-layer weight scale, sigma_w"
    )
    _nonlinearity_option(p)
    p.add_argument(
        "--residual",
        default="complementary",
        choices=("complementary", "identity"),
        help="skip coefficient sqrt(1 - alpha^2) (complementary) or 1 (identity)",
    )


def _grid_options(p: argparse.ArgumentParser, alphas: str, sigma_ws: str, form: str) -> None:
    """``--alphas`` (values in (0, 1)) and ``--sigma-ws`` (values > 0), each a list or START:STOP:NUM."""
    for name, default, what, lo, hi, bounds in (
        ("--alphas", alphas, "alpha = alpha_A = alpha_M", 0, 1, "in (0, 1)"),
        ("--sigma-ws", sigma_ws, "sigma_w", 0, None, "> 0"),
    ):
        p.add_argument(
            name, type=_grid(lo, hi, name), default=default, help=f"{what} grid: {form}, values {bounds}"
        )


def _params(args):
    from dlscience.signal_propagation.model import SignalPropParams

    return SignalPropParams(args.alpha_A, args.alpha_M, args.sigma_A, args.sigma_w,
                            nonlinearity=args.nonlinearity, residual=args.residual)  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``sigprop`` subcommand group to the top-level parser."""
    cmds = add_study(sub, "sigprop", help=SUMMARY, description=DESCRIPTION)

    p = add_command(
        cmds,
        "maps",
        "iterate the (q, rho) maps; optionally against a simulated network",
        "Iterate the theory's (q, rho) maps for L blocks from a simplex (q0, rho0), print q and rho "
        "per layer with the exponents, and with --simulate compare with finite random networks. Writes "
        "OUT/maps.json and maps.png.",
    )
    _model_options(p)
    p.add_argument("--n-tokens", type=_at_least_two, default=16, help="n, number of tokens")
    p.add_argument("--layers", type=positive_int, default=30, help="L, number of blocks")
    p.add_argument("--q0", type=positive_float, default=1.0, help="input squared norm / d")
    p.add_argument("--rho0", type=float, default=0.3, help="input cosine between tokens")
    p.add_argument("--simulate", action="store_true", help="also simulate finite random networks")
    p.add_argument("--width", type=positive_int, default=1024, help="d for --simulate")
    p.add_argument("--networks", type=positive_int, default=4, help="independent networks for --simulate")
    add_run_options(p, out="out/sigprop-maps", seed_help="seed of the simulated networks", progress=False)
    p.set_defaults(func=_run_maps)

    p = add_command(
        cmds,
        "phase-diagram",
        "lambda_a and lambda_g over (alpha, sigma_w)",
        "Angle exponent lambda_a (bidirectional and causal attention) and gradient exponent lambda_g "
        "(infinite depth, and at finite depth L and n tokens) over alpha = alpha_A = alpha_M and sigma_w, "
        "with their zero lines; optionally the maps' cosine after L blocks. One value on an axis gives line "
        "plots. Writes OUT/phase_diagram.json and .png.",
    )
    _grid_options(p, "0.05:0.95:37", "0.5:6:45", "list or START:STOP:NUM")
    _sigma_A_option(p)
    _nonlinearity_option(p)
    p.add_argument(
        "--geometry-layers",
        type=nonnegative_int,
        default=0,
        help="also map the cosine through this many blocks",
    )
    p.add_argument(
        "--gradient-layers",
        type=positive_int,
        default=16,
        help="L of the finite-depth gradient exponent lambda_g(L, n)",
    )
    p.add_argument(
        "--n-tokens", type=positive_int, default=32, help="n of the finite-depth gradient exponent"
    )
    p.add_argument(
        "--mask",
        default="bidirectional",
        choices=("bidirectional", "causal"),
        help="attention mask of the finite-depth gradient exponent (lambda_a is drawn for both)",
    )
    add_run_options(p, out="out/sigprop-phase", seed=False, progress=False)
    p.set_defaults(func=_run_phase)

    p = add_command(
        cmds,
        "simulate",
        "theory vs Monte Carlo over settings in both phases",
        "For ten settings across both phases (or --settings), compare the maps' rho over L layers "
        "with finite random networks of width --width, lambda_a's closed form with its one-block estimator, "
        "and the Jacobian growth with random probes (n = 16 tokens). Resumes setting by setting. Writes "
        "OUT/simulate.json and table.md.",
    )
    p.add_argument(
        "--settings",
        type=_settings,
        default=None,
        help="semicolon-separated alpha_A,alpha_M,sigma_w triples (default: ten built-in settings)",
    )
    _sigma_A_option(p)
    p.add_argument("--width", type=positive_int, default=1024, help="d of the simulated networks (>= 17)")
    p.add_argument("--layers", type=positive_int, default=30, help="L for the geometry")
    p.add_argument("--networks", type=positive_int, default=4, help="networks per geometry estimate")
    p.add_argument("--exponent-networks", type=positive_int, default=40, help="blocks per lambda_a estimate")
    p.add_argument(
        "--exponent-width", type=positive_int, default=512, help="d of the blocks that estimate the exponents"
    )
    add_run_options(p, out="out/sigprop-simulate")
    p.set_defaults(func=_run_simulate)

    p = add_command(
        cmds,
        "trainability",
        "train from a grid of initialisations; loss vs the exponents",
        "Train small transformers of the block family (character-level language modelling on the "
        "WordNet glosses of Debian's wordnet-base) from a grid of (alpha, sigma_w), and relate the final test "
        "loss to lambda_a and the Jacobian growth at initialisation (Spearman correlation; where the minimum "
        "sits). Deterministic for a seed (one thread per grid point). Resumable per grid point (about 2.5 "
        "minutes each at the defaults). Writes OUT/trainability.json and .png.",
    )
    _grid_options(p, "0.1,0.3,0.5,0.7,0.9", "0.5,1.5,2.5,3.5,4.5,5.5", "list (or START:STOP:NUM)")
    p.add_argument("--layers", type=positive_int, default=16, help="L")
    p.add_argument("--width", type=positive_int, default=64, help="d")
    p.add_argument(
        "--task",
        default="causal",
        choices=["causal", "masked"],
        help="causal: next-character prediction, causal attention; masked: 15%% of characters masked and "
        "predicted with bidirectional attention (learns little beyond unigram statistics at CPU budgets)",
    )
    p.add_argument("--steps", type=positive_int, default=800, help="Adam steps per grid point")
    p.add_argument("--batch-size", type=positive_int, default=32, help="windows of 32 characters per step")
    p.add_argument("--lr", type=positive_float, default=3e-3, help="Adam learning rate (cosine decay)")
    p.add_argument(
        "--wordnet-dir",
        default=None,
        help="folder with WordNet's data.noun/verb/adj/adv (default: $WNSEARCHDIR, else /usr/share/wordnet)",
    )
    add_run_options(p, out="out/sigprop-trainability", seed_help="seed (the same at every grid point)")
    p.set_defaults(func=_run_trainability)


def _run_maps(args: argparse.Namespace) -> None:
    from dlscience.signal_propagation.jobs import maps_job, maps_lines

    data = maps_job(_params(args), n_tokens=args.n_tokens, layers=args.layers, q0=args.q0, rho0=args.rho0,
                    simulate=args.simulate, width=args.width, networks=args.networks, seed=args.seed,
                    out=args.out, **opt.job_options(args))  # fmt: skip
    print("\n".join(maps_lines(data)))
    print(f"wrote {args.out}/maps.json, maps.png")


def _run_phase(args: argparse.Namespace) -> None:
    from dlscience.signal_propagation.jobs import phase_diagram_job, phase_diagram_lines

    options = opt.pick(args, "sigma_A", "nonlinearity", "geometry_layers", "gradient_layers", "n_tokens", "mask",
                       "out")  # fmt: skip
    d = phase_diagram_job(args.alphas, args.sigma_ws, **options, **opt.job_options(args))
    print("\n".join(phase_diagram_lines(d)))
    print(f"wrote {args.out}/phase_diagram.json, phase_diagram.png")


def _run_simulate(args: argparse.Namespace) -> None:
    from dlscience.signal_propagation.jobs import simulate_job, simulate_lines

    rows = simulate_job(args.settings, sigma_A=args.sigma_A, width=args.width, layers=args.layers,
                        networks=args.networks, exponent_networks=args.exponent_networks,
                        exponent_width=args.exponent_width, seed=args.seed, out=args.out,
                        overwrite=args.overwrite, progress=args.progress)  # fmt: skip
    print("\n".join(simulate_lines(rows, args.layers)))
    print(f"wrote {args.out}/simulate.json, table.md")


def _run_trainability(args: argparse.Namespace) -> None:
    from dlscience.signal_propagation.jobs import trainability_job, trainability_lines
    from dlscience.signal_propagation.trainability import TrainabilityConfig

    cfg = TrainabilityConfig(n_layers=args.layers, width=args.width, task=args.task, steps=args.steps,
                             batch_size=args.batch_size, lr=args.lr, seed=args.seed)  # fmt: skip
    s = trainability_job(args.alphas, args.sigma_ws, cfg, wordnet_dir=args.wordnet_dir, out=args.out,
                         overwrite=args.overwrite, progress=args.progress)  # fmt: skip
    print("\n".join(trainability_lines(s)))
    print(f"wrote {args.out}/trainability.json, trainability.png")
