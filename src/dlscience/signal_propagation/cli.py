"""CLI of the signal-propagation study: ``dlscience sigprop maps | phase-diagram | simulate | trainability``."""

from __future__ import annotations

import argparse
from pathlib import Path

from dlscience.cli import HelpFormatter
from dlscience.errors import InputValidationError

__all__ = ["register"]


def _grid(text: str) -> list[float]:
    """``"0.1,0.5,0.9"`` or ``"START:STOP:NUM"`` (inclusive, evenly spaced)."""
    try:
        if ":" in text:
            a, b, k = text.split(":")
            if int(k) < 1:
                raise ValueError
            import numpy as np

            return [float(v) for v in np.linspace(float(a), float(b), int(k))]
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a list like 0.1,0.5 or START:STOP:NUM with NUM >= 1, got {text!r}"
        ) from None


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alpha-A", type=float, default=0.5, help="residual strength of attention, alpha_A")
    p.add_argument("--alpha-M", type=float, default=0.5, help="residual strength of the MLP, alpha_M")
    p.add_argument("--sigma-A", type=float, default=1.0, help="attention logit standard deviation, sigma_A")
    p.add_argument("--sigma-w", type=float, default=1.0, help="MLP first-layer weight scale, sigma_w")
    p.add_argument(
        "--nonlinearity", default="tanh", choices=("tanh", "relu", "gelu"), help="MLP nonlinearity phi"
    )
    p.add_argument(
        "--residual",
        default="complementary",
        choices=("complementary", "identity"),
        help="skip coefficient sqrt(1 - alpha^2) (complementary) or 1 (identity)",
    )


def _params(args):
    from dlscience.signal_propagation.model import SignalPropParams

    return SignalPropParams(
        args.alpha_A,
        args.alpha_M,
        args.sigma_A,
        args.sigma_w,
        nonlinearity=args.nonlinearity,
        residual=args.residual,
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``sigprop`` subcommand group to the top-level parser."""
    top = sub.add_parser(
        "sigprop",
        help="signal propagation in deep random transformers (Cowsik et al. 2024)",
        description="Token geometry through deep random transformers: (q, rho) maps, order-chaos phase "
        "diagram, angle and gradient exponents, and whether they predict trainability (Cowsik, Nebabu, Qi & "
        "Ganguli, arXiv 2403.02579).",
    )
    cmds = top.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = cmds.add_parser(
        "maps",
        help="iterate the (q, rho) maps; optionally against a simulated network",
        description="Iterate the theory's (q, rho) maps for L blocks from a simplex (q0, rho0), print q and rho "
        "per layer with the exponents, and with --simulate compare with finite random networks. Writes "
        "OUT/maps.json and maps.png.",
        formatter_class=HelpFormatter,
    )
    _model_options(p)
    p.add_argument("--n-tokens", type=int, default=16, help="n, number of tokens")
    p.add_argument("--layers", type=int, default=30, help="L, number of blocks")
    p.add_argument("--q0", type=float, default=1.0, help="input squared norm / d")
    p.add_argument("--rho0", type=float, default=0.3, help="input cosine between tokens")
    p.add_argument("--simulate", action="store_true", help="also simulate finite random networks")
    p.add_argument("--width", type=int, default=1024, help="d for --simulate")
    p.add_argument("--networks", type=int, default=4, help="independent networks for --simulate")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated networks")
    p.add_argument("--out", default="out/sigprop-maps", help="output folder")
    p.set_defaults(func=_run_maps)

    p = cmds.add_parser(
        "phase-diagram",
        help="lambda_a and lambda_g over (alpha, sigma_w)",
        description="Angle exponent lambda_a and gradient exponent lambda_g over alpha = alpha_A = alpha_M and "
        "sigma_w, with the edge of chaos; optionally the maps' cosine after L blocks. Writes "
        "OUT/phase_diagram.json and .png.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--alphas", type=_grid, default="0.05:0.95:37", help="alpha grid: list or START:STOP:NUM")
    p.add_argument("--sigma-ws", type=_grid, default="0.5:6:45", help="sigma_w grid: list or START:STOP:NUM")
    p.add_argument("--sigma-A", type=float, default=1.0, help="attention logit standard deviation")
    p.add_argument("--nonlinearity", default="tanh", choices=("tanh", "relu", "gelu"), help="phi")
    p.add_argument(
        "--geometry-layers", type=int, default=0, help="also map the cosine through this many blocks"
    )
    p.add_argument("--out", default="out/sigprop-phase", help="output folder")
    p.set_defaults(func=_run_phase)

    p = cmds.add_parser(
        "simulate",
        help="theory vs Monte Carlo over settings in both phases",
        description="For ten settings across both phases (or --settings), compare the maps' rho over L layers "
        "with finite random networks of width --width, lambda_a's closed form with its one-block estimator, "
        "and the Jacobian growth with random probes. Writes OUT/simulate.json and table.md.",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--settings",
        default=None,
        help="semicolon-separated alpha_A,alpha_M,sigma_w triples (default: ten built-in settings)",
    )
    p.add_argument("--sigma-A", type=float, default=1.0, help="attention logit standard deviation")
    p.add_argument("--width", type=int, default=1024, help="d of the simulated networks")
    p.add_argument("--layers", type=int, default=30, help="L for the geometry")
    p.add_argument("--networks", type=int, default=4, help="networks per geometry estimate")
    p.add_argument("--exponent-networks", type=int, default=40, help="blocks per lambda_a estimate")
    p.add_argument(
        "--exponent-width", type=int, default=512, help="d of the blocks that estimate the exponents"
    )
    p.add_argument("--seed", type=int, default=0, help="seed")
    p.add_argument("--out", default="out/sigprop-simulate", help="output folder")
    p.set_defaults(func=_run_simulate)

    p = cmds.add_parser(
        "trainability",
        help="train from a grid of initialisations; loss vs the exponents",
        description="Train small transformers of the block family (character-level language modelling on the "
        "WordNet glosses of Debian's wordnet-base) from a grid of (alpha, sigma_w), and relate the final test "
        "loss to lambda_a and the Jacobian growth at initialisation (Spearman correlation; where the minimum "
        "sits). Resumable per grid point (about 2.5 minutes each on one core at the defaults). Writes "
        "OUT/trainability.json and .png.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--alphas", type=_grid, default="0.1,0.3,0.5,0.7,0.9", help="alpha grid")
    p.add_argument("--sigma-ws", type=_grid, default="0.5,1.5,2.5,3.5,4.5,5.5", help="sigma_w grid")
    p.add_argument("--layers", type=int, default=16, help="L")
    p.add_argument("--width", type=int, default=64, help="d")
    p.add_argument(
        "--task",
        default="causal",
        choices=["causal", "masked"],
        help="causal: next-character prediction, causal attention; masked: 15%% of characters masked and "
        "predicted with bidirectional attention (learns little beyond unigram statistics at CPU budgets)",
    )
    p.add_argument("--steps", type=int, default=800, help="Adam steps per grid point")
    p.add_argument("--batch-size", type=int, default=32, help="windows of 32 characters per step")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (cosine decay)")
    p.add_argument("--seed", type=int, default=0, help="seed (the same at every grid point)")
    p.add_argument("--out", default="out/sigprop-trainability", help="output folder")
    p.set_defaults(func=_run_trainability)


def _run_maps(args: argparse.Namespace) -> None:
    import numpy as np

    from dlscience.results import save_figure, write_json
    from dlscience.signal_propagation import maps
    from dlscience.signal_propagation.simulate import simulate_geometry

    p = _params(args)
    n = args.n_tokens
    if n < 2 or args.layers < 1 or args.q0 <= 0 or not -1 / (n - 1) <= args.rho0 <= 1:
        raise InputValidationError(
            f"need --n-tokens >= 2, --layers >= 1, --q0 > 0 and --rho0 in [-1/(n-1), 1] (a cosine between n "
            f"tokens), got {n}, {args.layers}, {args.q0}, {args.rho0}"
        )
    if args.simulate and (args.width < n + 1 or args.networks < 1 or args.rho0 < 0):
        raise InputValidationError(
            f"--simulate needs --width >= n + 1 = {n + 1}, --networks >= 1 and --rho0 >= 0, got {args.width}, "
            f"{args.networks}, {args.rho0}"
        )
    traj = maps.iterate_maps(args.q0, args.rho0, p, args.layers, n)
    data = {"params": p.__dict__, "theory": {"q": traj.q.tolist(), "rho": traj.rho.tolist()}}
    if p.residual == "complementary" and (p.alpha_A or p.alpha_M):
        data["lambda_a"] = maps.angle_exponent(p)
        if data["lambda_a"] <= 0:
            data["lambda_g"] = maps.gradient_exponent(p)
            print(f"lambda_a = {data['lambda_a']:+.4f} (ordered)   lambda_g = {data['lambda_g']:+.4f}")
        else:  # the gradient formula linearises around the collapsed state, unstable here
            print(f"lambda_a = {data['lambda_a']:+.4f} (chaotic)   lambda_g: n/a in the chaotic phase")
    sim = None
    if args.simulate:
        sim = simulate_geometry(p, n=args.n_tokens, d=args.width, n_layers=args.layers, q0=args.q0,
                                rho0=args.rho0, n_networks=args.networks, seed=args.seed)  # fmt: skip
        data["simulation"] = {k: [e.to_json() for e in sim[k]] for k in ("q", "rho")}
    print(f"{'layer':>5} {'q':>9} {'rho':>7}" + (f" {'rho sim':>15}" if sim else ""))
    for i in range(args.layers + 1):
        line = f"{i:>5} {traj.q[i]:>9.4f} {traj.rho[i]:>7.4f}"
        if sim:
            line += f" {sim['rho'][i].mean:>8.4f}+-{sim['rho'][i].sem:.4f}"
        print(line)
    write_json(Path(args.out) / "maps.json", data)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(traj.rho, "-", label="maps")
    if sim:
        m = np.array([e.mean for e in sim["rho"]])
        e = np.array([e.sem for e in sim["rho"]])
        ax.errorbar(range(len(m)), m, yerr=e, fmt="o", ms=3, label=f"simulation (d = {args.width})")
    ax.set_xlabel("layer")
    ax.set_ylabel("cosine rho")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(Path(args.out) / "maps.png", fig)
    print(f"wrote {args.out}/maps.json, maps.png")


def _run_phase(args: argparse.Namespace) -> None:
    from dlscience.results import save_figure, write_json
    from dlscience.signal_propagation.phase_diagram import phase_diagram, phase_figure

    if any(not 0 < a < 1 for a in args.alphas) or any(s <= 0 for s in args.sigma_ws):
        raise InputValidationError("--alphas must lie in (0, 1) and --sigma-ws be > 0")
    d = phase_diagram(args.alphas, args.sigma_ws, sigma_A=args.sigma_A, nonlinearity=args.nonlinearity,
                      geometry_layers=args.geometry_layers)  # fmt: skip
    write_json(Path(args.out) / "phase_diagram.json", d)
    save_figure(Path(args.out) / "phase_diagram.png", phase_figure(d))
    for a, s in list(zip(d["alpha"], d["edge_of_chaos"], strict=True))[:: max(1, len(d["alpha"]) // 8)]:
        print(f"alpha = {a:.3f}: edge of chaos at sigma_w = {'none in grid' if s is None else f'{s:.3f}'}")
    print(f"wrote {args.out}/phase_diagram.json, phase_diagram.png")


def _run_simulate(args: argparse.Namespace) -> None:
    from dlscience.results import write_json
    from dlscience.signal_propagation.phase_diagram import DEFAULT_SETTINGS, theory_vs_simulation

    settings = DEFAULT_SETTINGS
    if args.settings:
        try:
            settings = [tuple(float(v) for v in s.split(",")) for s in args.settings.split(";")]
            assert all(len(s) == 3 for s in settings)
        except (ValueError, AssertionError):
            raise InputValidationError("--settings must look like 0.5,0.5,3;0.3,0.7,4") from None
    rows = theory_vs_simulation(settings, sigma_A=args.sigma_A, width=args.width, n_layers=args.layers,
                                n_networks=args.networks, exponent_networks=args.exponent_networks,
        exponent_width=args.exponent_width,
                                seed=args.seed)  # fmt: skip
    lines = [
        f"| alpha_A | alpha_M | sigma_w | phase | rho_L maps | rho_L sim | max abs rho diff (L <= {args.layers}) | "
        "lambda_a theory | lambda_a MC | Jacobian growth theory | MC |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        sim, la = r["rho_L"]["simulation"], r["lambda_a"]
        jg = r.get("jacobian_growth")
        jtxt = (
            f"{jg['theory']:+.3f} | {jg['monte_carlo']['mean']:+.3f} +- {jg['monte_carlo']['sem']:.3f}"
            if jg
            else "- | -"
        )
        lines.append(
            f"| {r['alpha_A']} | {r['alpha_M']} | {r['sigma_w']} | {r['phase']} | {r['rho_L']['theory']:.3f} | "
            f"{sim['mean']:.3f} +- {sim['sem']:.3f} | {r['max_abs_rho_diff']:.3f} | {la['theory']:+.3f} | "
            f"{la['monte_carlo']['mean']:+.3f} +- {la['monte_carlo']['sem']:.3f} | {jtxt} |"
        )
    out = Path(args.out)
    write_json(out / "simulate.json", {"settings": vars(args) | {"func": None}, "rows": rows})
    out.joinpath("table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}/simulate.json, table.md")


def _run_trainability(args: argparse.Namespace) -> None:
    from dlscience.data.text import load_wordnet_glosses
    from dlscience.signal_propagation.trainability import TrainabilityConfig, run_grid

    _, texts = load_wordnet_glosses()
    cfg = TrainabilityConfig(n_layers=args.layers, width=args.width, task=args.task, steps=args.steps,
                             batch_size=args.batch_size, lr=args.lr, seed=args.seed)  # fmt: skip
    s = run_grid(texts, args.alphas, args.sigma_ws, cfg, args.out)
    print(f"Spearman(test loss, distance of exponents from 0) = {s['spearman_loss_vs_distance']:.3f} "
          f"(p = {s['p_value']:.2g}); best: {s['best']}")  # fmt: skip
    print(f"wrote {args.out}/trainability.json, trainability.png")
