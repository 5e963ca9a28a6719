"""CLI of the learning-dynamics studies: ``dlscience dynamics lazy-rich ...``, ``dlscience dynamics transfer ...``,
``dlscience dynamics collapse ...`` and ``dlscience dynamics collapse-report``."""

from __future__ import annotations

import argparse
import math

from dlscience import cli_options as opt

__all__ = ["register"]


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"a value is given more than once in {text!r}")
    return values


def _grid(text: str) -> tuple[float, ...]:
    """``lo:hi:n`` (linear), ``log:lo:hi:n`` (log10 exponents) or comma-separated values; at least 2."""
    import numpy as np

    parts = text.split(":")
    try:
        if parts[0] == "log" and len(parts) == 4:
            values = tuple(float(v) for v in np.logspace(float(parts[1]), float(parts[2]), int(parts[3])))
        elif len(parts) == 3:
            values = tuple(float(v) for v in np.linspace(float(parts[0]), float(parts[1]), int(parts[2])))
        else:
            values = _floats(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected lo:hi:n, log:lo:hi:n or a,b,c, got {text!r}") from None
    if len(values) < 2:
        raise argparse.ArgumentTypeError(f"a phase-diagram axis needs at least 2 values, got {text!r}")
    return values


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``dynamics`` subcommand group to the top-level parser."""
    from dlscience.learning_dynamics.lazy_rich_jobs import FIG2_DELTAS, PHASE_PRESETS

    groups = opt.add_study(
        sub,
        "dynamics",
        help="theory of learning dynamics: exact lazy/rich solutions (Kunin et al. 2024)",
        description="Exactly solvable learning dynamics: lazy and rich learning from unbalanced initialisations "
        "(Kunin, Raventos, Domine, Chen, Klindt, Saxe & Ganguli, NeurIPS 2024, arXiv 2406.06158).",
        dest="study_command",
    )
    cmds = groups.add_parser(
        "lazy-rich",
        help="exact lazy/rich solutions and unbalanced initialisation (Get rich quick)",
        description="The single-neuron closed forms, the two-layer ReLU (tau, delta) phase diagram and "
        "grokking against the first layer's initialisation scale.",
    ).add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = opt.add_command(
        cmds,
        "single-neuron",
        help="Figs. 2-4: closed-form trajectories, kernel distance, low-rank implicit bias",
        description="The single neuron f(x) = a w^T x on whitened data (beta* = (0, 1), beta_0 = (-1, 0)) for "
        "each conserved delta: the closed-form trajectory (checked against the integrated ODE), |beta|, "
        "alignment and kernel distance over time, and the low-rank limit (Fig. 4b). Writes "
        "OUT/single_neuron.json and single_neuron.png (seconds).",
        func=_run_single_neuron,
    )
    opt.allow_negative_values(p)
    p.add_argument(
        "--deltas",
        type=_floats,
        default=FIG2_DELTAS,
        help="comma-separated conserved quantities delta (default: the paper's -4,-2,-1,0,1,2,4)",
    )
    p.add_argument("--time", type=opt.positive_float, default=20.0, help="gradient-flow time horizon T")
    p.add_argument("--n-times", type=opt.positive_int, default=401, help="samples per trajectory")
    opt.add_out(p, "out/lazy-rich-single-neuron")
    opt.add_overwrite(p)

    p = opt.add_command(
        cmds,
        "phase-diagram",
        help="reduced Fig. 1(b): two-layer ReLU students over (tau, delta)",
        description="Train symmetrised two-layer ReLU students on a ReLU teacher over a grid of overall scale "
        "tau and relative scale delta (all runs batched, float64, full-batch GD with step base_lr / tau^2) and "
        "map test loss, kernel distance, activation Hamming distance and parameter distance at log-spaced "
        "checkpoints. Writes OUT/phase_diagram.json and phase_diagram.png; resumable.",
        func=_run_phase_diagram,
    )
    opt.add_preset(
        p,
        PHASE_PRESETS,
        "cpu",
        "cpu: 7 x 7 grid, 2 seeds, d = 20, n = 200, 20,000 steps (about 2.5 min on 2 cores); paper: the 17 x 17 "
        "grid, 16 seeds, d = 100, n = 1000, 10^6 steps (days on a CPU); the options below override it",
    )
    opt.allow_negative_values(p)
    p.add_argument("--taus", type=_grid, default=None, help="tau axis: log:-1:0.3:7, 0.1:2:7 or 0.1,0.5,2")
    p.add_argument("--deltas", type=_grid, default=None, help="delta axis: -1:1:7 or -1,0,1")
    p.add_argument("--n-seeds", type=opt.positive_int, default=None, help="seeds per grid point")
    p.add_argument("--d", type=opt.positive_int, default=None, help="input dimension")
    p.add_argument("--n", type=opt.positive_int, default=None, help="training points")
    p.add_argument("--m", type=opt.positive_int, default=None, help="student width (even)")
    p.add_argument("--steps", type=opt.positive_int, default=None, help="gradient-descent steps")
    p.add_argument("--base-lr", type=opt.positive_float, default=None, help="step = base_lr / tau^2")
    opt.add_run_options(p, out="out/lazy-rich-phase-diagram", seed_help="seed of teachers, data and students")

    p = opt.add_command(
        cmds,
        "grokking",
        help="Sec. 5: time to grok modular addition against the first layer's initialisation scale",
        description="Train a two-layer MLP on (a + b) mod p from one-hot codes with full-batch gradient descent "
        "and weight decay, once per first-layer initialisation scale s and seed, and record when it fits the "
        "training set and when it groks (test accuracy >= --grok-accuracy). Writes OUT/grokking.json and "
        "grokking.png; every run resumes. The defaults take about 20 minutes on 2 cores.",
        func=_run_grokking,
    )
    p.add_argument(
        "--scales", type=_floats, default=(0.1, 0.3, 1.0, 3.0), help="comma-separated first-layer scales s"
    )
    p.add_argument(
        "--seeds", type=opt.int_list(opt.nonnegative_int), default=(0, 1), help="comma-separated seeds"
    )
    p.add_argument("--p", type=opt.positive_int, default=59, help="modulus")
    p.add_argument(
        "--train-fraction", type=opt.unit_interval, default=0.5, help="share of pairs for training"
    )
    p.add_argument("--hidden", type=opt.positive_int, default=512, help="MLP width")
    p.add_argument("--lr", type=opt.positive_float, default=1.0, help="gradient-descent step")
    p.add_argument("--weight-decay", type=opt.nonnegative_float, default=1e-3, help="L2 weight decay")
    p.add_argument("--steps", type=opt.positive_int, default=20_000, help="step budget per run")
    p.add_argument("--eval-every", type=opt.positive_int, default=100, help="steps between accuracy checks")
    p.add_argument(
        "--grok-accuracy", type=opt.unit_interval, default=0.95, help="test accuracy that counts as grokked"
    )
    p.add_argument(
        "--compensate",
        action="store_true",
        help="divide the second layer by s too (fixed overall scale tau, only delta changes)",
    )
    opt.add_out(p, "out/lazy-rich-grokking")
    opt.add_overwrite(p)
    opt.add_progress(p)

    _register_transfer(groups)
    _register_collapse(groups)


def _register_transfer(groups) -> None:
    """``dlscience dynamics transfer phase-diagram | distances`` (Tahir et al. 2025)."""
    import math

    cmds = groups.add_parser(
        "transfer",
        help="transfer learning in deep linear networks (Features are fate, Tahir et al. 2025)",
        description="Scratch training, linear transfer and fine-tuning of two-layer linear networks on "
        "teacher-student regression: theory against batched float64 simulations.",
    ).add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = opt.add_command(
        cmds,
        "phase-diagram",
        help="transferability over (theta, gamma): theory maps, simulated points, slices",
        description="Simulate scratch GD, linear transfer (ridge on frozen pretrained features) and fine-tuning "
        "over a (theta, gamma) grid, compare with the closed-form risks, and draw the transferability maps "
        "(boundaries gamma = cos^2 theta and theta = pi/3) and slices at theta = pi/8, pi/4, 3pi/8. Writes "
        "OUT/phase_diagram.json and phase_diagram.png; resumes per learner.",
        func=_run_transfer_phase,
    )
    opt.allow_negative_values(p)
    p.add_argument(
        "--thetas",
        type=_grid,
        default=tuple(math.pi * f for f in (1 / 16, 1 / 8, 1 / 4, 3 / 8, 7 / 16)),
        help="angles between source and target teachers in radians (lo:hi:n or a,b,c; default pi/16, pi/8, pi/4, 3pi/8, 7pi/16)",
    )
    p.add_argument(
        "--gammas", type=_grid, default=(0.2, 0.4, 0.6, 0.8, 1.5), help="target samples per dimension n / d"
    )
    p.add_argument("--sigma", type=opt.nonnegative_float, default=0.0, help="target label noise")
    p.add_argument("--lam", type=opt.nonnegative_float, default=0.1, help="ridge of linear transfer")
    p.add_argument("--d", type=opt.positive_int, default=200, help="input dimension")
    p.add_argument("--instances", type=opt.positive_int, default=32, help="instances averaged per grid point")
    p.add_argument(
        "--steps",
        type=opt.positive_int,
        default=2500,
        help="GD steps of scratch and fine-tuning (and of the ReLU networks' pretraining)",
    )
    p.add_argument(
        "--network",
        choices=("linear", "relu"),
        default="linear",
        help="linear: the paper's two-layer deep linear network (theory is exact); relu: the nonlinear check, "
        "two-layer ReLU networks f(x) = a^T relu(W x) compared with the linear theory (signs of T)",
    )
    p.add_argument("--hidden", type=opt.positive_int, default=128, help="ReLU width h (with --network relu)")
    p.add_argument(
        "--ft-step",
        type=opt.unit_interval,
        default=1 / 3,
        help="fine-tuning step as a fraction of the default (with steps / fraction steps); smaller steps approach "
        "gradient flow, which the closed form describes",
    )
    opt.add_run_options(
        p, out="out/transfer-phase-diagram", seed_help="seed of teachers, data, initialisation"
    )

    p = opt.add_command(
        cmds,
        "distances",
        help="equal distribution distances, opposite transferability",
        description="Two source/target pairs with identical input marginals and equal joint KL (closed form) "
        "whose linear-transfer transferability has opposite signs. Writes OUT/distances.json.",
        func=_run_transfer_distances,
    )
    p.add_argument(
        "--sigma", type=opt.positive_float, default=0.5, help="label noise of pair A (B: sigma/sqrt 2)"
    )
    p.add_argument("--gamma", type=opt.positive_float, default=0.5, help="target samples per dimension n / d")
    p.add_argument("--lam", type=opt.nonnegative_float, default=0.1, help="ridge of linear transfer")
    p.add_argument("--d", type=opt.positive_int, default=200, help="input dimension")
    p.add_argument("--instances", type=opt.positive_int, default=8, help="instances averaged")
    opt.add_run_options(p, out="out/transfer-distances", progress=False)

    p = opt.add_command(
        cmds,
        "ridge",
        help="linear-transfer risk against its ridge lambda",
        description="Linear transfer's excess risk against the ridge lambda of its read-out refit, theory "
        "1 - (1 + 2 lam) cos^2 theta / (1 + lam)^2 with simulated points, beside the scratch risk. Writes "
        "OUT/ridge_sweep.json and ridge_sweep.png.",
        func=_run_transfer_ridge,
    )
    opt.allow_negative_values(p)
    p.add_argument(
        "--thetas",
        type=_grid,
        default=tuple(math.pi * f for f in (1 / 8, 1 / 4, 3 / 8)),
        help="angles in radians, one curve each (lo:hi:n or a,b,c; default pi/8, pi/4, 3pi/8)",
    )
    p.add_argument(
        "--lams", type=_grid, default=(0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0), help="ridge values (>= 0)"
    )
    p.add_argument("--gamma", type=opt.positive_float, default=0.5, help="target samples per dimension n / d")
    p.add_argument("--sigma", type=opt.nonnegative_float, default=0.0, help="target label noise")
    p.add_argument("--d", type=opt.positive_int, default=200, help="input dimension")
    p.add_argument("--instances", type=opt.positive_int, default=16, help="instances averaged per point")
    opt.add_run_options(p, out="out/transfer-ridge", progress=False)


def _run_single_neuron(args: argparse.Namespace) -> None:
    from dlscience.learning_dynamics.lazy_rich_jobs import run_single_neuron

    summary = run_single_neuron(
        args.out, deltas=args.deltas, time=args.time, n_times=args.n_times, overwrite=args.overwrite
    )
    print(f"{'delta':>7} {'beta(T)':>20} {'S(0,T)':>9} {'low-rank limit':>20}")
    for row in summary["deltas"]:
        b, lim = row["beta_T"], row["low_rank_limit"]
        print(
            f"{row['delta']:>7g} ({b[0]:>8.4f}, {b[1]:>8.4f}) {row['kernel_distance_T']:>9.4f} "
            f"({lim[0]:>8.4f}, {lim[1]:>8.4f})"
        )
    print(f"closed form vs ODE: max error {summary['max_closed_form_vs_ode_error']:.1e}")
    print(f"wrote {args.out}/single_neuron.json, single_neuron.png")


def _run_phase_diagram(args: argparse.Namespace) -> None:
    from dataclasses import replace

    import numpy as np

    from dlscience.learning_dynamics.lazy_rich_jobs import PHASE_PRESETS, run_phase_diagram

    cfg = PHASE_PRESETS[args.preset]
    overrides = {
        k: getattr(args, k) for k in ("taus", "deltas", "n_seeds", "d", "n", "m", "steps", "base_lr")
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "steps" in overrides:
        overrides["checkpoints"] = tuple(
            sorted({0, *(c for c in (10**k for k in range(8)) if c < args.steps), args.steps})
        )
    cfg = replace(cfg, seed=args.seed, **overrides)
    summary = run_phase_diagram(cfg, args.out, **opt.job_options(args), preset=args.preset)
    last = summary["records"][-1]
    print(f"step {last['step']}: seed-mean test loss over (tau rows, delta columns)")
    print("tau \\ delta " + " ".join(f"{d:>8.2f}" for d in cfg.deltas))
    for tau, row in zip(cfg.taus, last["test_loss"], strict=True):
        print(f"{tau:>11.3f} " + " ".join(f"{v:>8.1e}" for v in row))
    best = np.unravel_index(np.argmin(last["test_loss"]), (len(cfg.taus), len(cfg.deltas)))
    print(f"lowest test loss at tau = {cfg.taus[best[0]]:.3g}, delta = {cfg.deltas[best[1]]:.3g}")
    print(f"wrote {args.out}/phase_diagram.json, phase_diagram.png")


def _run_grokking(args: argparse.Namespace) -> None:
    from dlscience.learning_dynamics.grokking import GrokkingConfig, run_grokking

    cfg = GrokkingConfig(
        scales=args.scales,
        seeds=args.seeds,
        p=args.p,
        train_fraction=args.train_fraction,
        hidden=args.hidden,
        lr=args.lr,
        weight_decay=args.weight_decay,
        steps=args.steps,
        eval_every=args.eval_every,
        grok_accuracy=args.grok_accuracy,
        compensate=args.compensate,
    )
    summary = run_grokking(cfg, args.out, **opt.job_options(args))
    print(f"{'scale s':>8} {'mean delta_i':>13} {'fit step':>9} {'grok steps (per seed)':>24}")
    for row in summary["per_scale"]:
        fit = "n/a" if row["median_fit_step"] is None else f"{row['median_fit_step']:.0f}"
        groks = ", ".join("not reached" if v is None else str(v) for v in row["grok_steps"])
        print(f"{row['scale']:>8g} {row['mean_delta_at_init']:>13.3g} {fit:>9} {groks:>24}")
    rho = summary["spearman_grok_step_vs_scale"]
    print(f"Spearman(grok step, s) = {'n/a' if rho is None else f'{rho:.2f}'}")
    print(f"wrote {args.out}/grokking.json, grokking.png")


def _run_transfer_phase(args: argparse.Namespace) -> None:
    from dlscience.learning_dynamics.transfer_jobs import run_phase_diagram

    summary = run_phase_diagram(
        args.out,
        thetas=args.thetas,
        gammas=args.gammas,
        sigma=args.sigma,
        lam=args.lam,
        d=args.d,
        instances=args.instances,
        steps=args.steps,
        network=args.network,
        hidden=args.hidden,
        ft_step=args.ft_step,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=args.progress,
    )
    theory = "linear theory" if args.network == "relu" else "theory"
    for row in summary["learners"].values():
        print(
            f"{row['name']:>16}: max |sim - {theory}| = {row['max_abs_error']:.4f} ({row['seconds']:.0f} s)"
        )
    for key, agree in summary["sign_agreement"].items():
        print(
            f"sign of T_{key}: simulation agrees with the linear theory at {agree['agree']}/{agree['points']} "
            f"points ({agree['clear']}/{agree['clear_points']} where |T_theory| > {agree['margin']})"
        )
    print(f"wrote {args.out}/phase_diagram.json, phase_diagram.png")


def _run_transfer_ridge(args: argparse.Namespace) -> None:
    from dlscience.learning_dynamics.transfer_jobs import run_ridge_sweep

    summary = run_ridge_sweep(
        args.out,
        thetas=args.thetas,
        lams=args.lams,
        gamma=args.gamma,
        sigma=args.sigma,
        d=args.d,
        instances=args.instances,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    header = "lam      " + "  ".join(
        f"theta={t / math.pi:.3f}pi (theory/sim)" for t in summary["settings"]["thetas"]
    )
    print(header)
    for c in summary["curves"]:
        cells = "  ".join(
            f"{a:.3f} / {b:.3f}".ljust(27) for a, b in zip(c["theory"], c["simulated"], strict=True)
        )
        print(f"{c['lam']:<8.3g} {cells}")
    print(f"scratch risk {summary['scratch_risk']:.3f}; max |sim - theory| = {summary['max_abs_error']:.4f}")
    print(f"wrote {args.out}/ridge_sweep.json, ridge_sweep.png")


def _run_transfer_distances(args: argparse.Namespace) -> None:
    from dlscience.learning_dynamics.transfer_jobs import run_distances

    summary = run_distances(
        args.out,
        sigma=args.sigma,
        gamma=args.gamma,
        lam=args.lam,
        d=args.d,
        instances=args.instances,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    for row in summary["pairs"]:
        dist = row["distances"]
        print(
            f"{row['pair']}: KL = {dist['kl_source_target']:.3f}, W2^2 = {dist['w2_sq']:.3f}, "
            f"T_lt theory {row['T_lt_theory']:+.3f}, simulated {row['T_lt_simulated']:+.3f}"
        )
    print(f"wrote {args.out}/distances.json")


# ------------------------------------------------------------------------------------------ stochastic collapse
CNN_PRESET_NAMES = ("cpu", "tiny")  # the keys of collapse_cnn.CNN_PRESETS (not imported here: it loads torch)


def _register_collapse(groups) -> None:
    """``dlscience dynamics collapse-report CHECKPOINT`` and ``dlscience dynamics collapse quartic | tanh |
    teacher-student | cnn`` (Chen, Kunin, Yamamura & Ganguli 2023, arXiv 2306.04251)."""
    p = groups.add_parser(
        "collapse-report",
        help="vanishing and identical units per layer of any model file (stochastic collapse)",
        description="Measure stochastic collapse in a trained model (Chen et al. 2023, Sec. 5): per Linear / Conv2d "
        "layer, the units whose incoming kernel + bias + outgoing weights vanish (norm < --vanish-threshold of the "
        "layer's largest) or coincide (normalised squared distance < --identical-threshold), the fraction of "
        "independent neurons and the entropy effective rank. CHECKPOINT: a model.pt of `dlscience diffusion "
        "train` or `dlscience icl train`, a state_dict (bare or under 'model' / 'state_dict'), or a whole "
        "pickled nn.Module (with --trust-pickle). Prints the table; writes OUT/collapse_report.json, "
        "OUT/collapse_report.png (all layers) and OUT/layer_<name>.png per layer.",
        formatter_class=opt.HelpFormatter,
    )
    p.set_defaults(func=_run_collapse_report)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="model file (.pt) or a folder holding model.pt")
    p.add_argument(
        "--vanish-threshold",
        type=opt.unit_interval,
        default=0.1,
        help="a unit vanishes when its norm is below this fraction of the layer's largest (paper: 0.1)",
    )
    p.add_argument(
        "--identical-threshold",
        type=opt.unit_interval,
        default=0.1,
        help="two units are identical when 2|ti - tj|^2 / (|ti|^2 + |tj|^2) is below this (paper: 0.1)",
    )
    p.add_argument(
        "--incoming-only",
        action="store_true",
        help="describe a unit by its incoming kernel and bias only (no outgoing weights of the next layer)",
    )
    p.add_argument(
        "--no-figures",
        dest="figures",
        action="store_false",
        help="no per-layer figures (the JSON and the all-layer figure collapse_report.png only)",
    )
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow a file holding pickled Python objects (a whole nn.Module): unpickling runs code from it",
    )
    opt.add_out(p, "out/collapse-report")
    opt.add_overwrite(p)

    cmds = groups.add_parser(
        "collapse",
        help="stochastic collapse: attractivity demos and the CNN experiment (Chen et al. 2023)",
        description="SGD noise attracts networks to invariant sets (vanishing and identical neurons): the "
        "quartic-well SDE, the tanh neuron, the diagonal linear teacher-student, and a small CNN on Fashion-MNIST "
        "(Chen, Kunin, Yamamura & Ganguli, NeurIPS 2023, arXiv 2306.04251).",
    ).add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = opt.add_command(
        cmds,
        "quartic",
        help="Fig. 1: collapse probability of the quartic well against the noise (zeta_c = sqrt(2 mu))",
        description="Simulate d theta = -(theta^3 - mu theta) dt + zeta theta dB over a grid of zeta (Euler-Maruyama "
        "on log|theta|, vectorised over paths) and estimate P(collapse) = P(log|theta_T| / T < -kappa); its 0.5 "
        "crossing is compared with zeta_c = sqrt(2 mu). Also the note's P(theta_T^2 < 1e-30) at T = 25. Writes "
        "OUT/quartic.json and quartic.png (seconds).",
        func=_run_collapse_quartic,
    )
    p.add_argument("--mu", type=opt.positive_float, default=1.5, help="depth of the well (paper: 1.5)")
    p.add_argument("--zetas", type=_grid, default=None, help="noise grid lo:hi:n or a,b,c (default 1:2.6:17)")
    p.add_argument("--paths", type=opt.positive_int, default=1000, help="simulated paths per zeta")
    p.add_argument("--time", type=opt.positive_float, default=400.0, help="time horizon T")
    p.add_argument("--n-steps", type=opt.positive_int, default=8000, help="Euler-Maruyama steps")
    p.add_argument(
        "--kappa", type=opt.positive_float, default=0.05, help="collapse: finite-time exponent below -kappa"
    )
    opt.add_run_options(p, out="out/collapse-quartic", progress=False, seed_help="seed of the noise")

    p = opt.add_command(
        cmds,
        "tanh",
        help="Fig. 2: the tanh neuron collapses iff eta zeta^2 / 2 > Sxy / Sxx",
        description="Label-noise gradient descent on f(x) = w2 tanh(w1 x) over a 1-D data set with Sxy / Sxx = 0.5 "
        "for label noise zeta from 0 to 2 zeta_c; P(|w|_T < 1e-6) against the condition. Writes OUT/tanh.json and "
        "tanh.png (seconds).",
        func=_run_collapse_tanh,
    )
    p.add_argument(
        "--eta",
        type=opt.positive_float,
        default=0.01,
        help="step size (small: close to the continuous-time condition)",
    )
    p.add_argument("--points", type=opt.positive_int, default=8, help="training points")
    p.add_argument("--paths", type=opt.positive_int, default=200, help="simulated runs per zeta")
    p.add_argument("--n-steps", type=opt.positive_int, default=20_000, help="gradient-descent steps")
    opt.add_run_options(p, out="out/collapse-tanh", progress=False, seed_help="seed of data and noise")

    p = opt.add_command(
        cmds,
        "teacher-student",
        help="Sec. 4.2: modes below eta sigma^2 / 2 collapse in the diagonal linear teacher-student",
        description="The SVD-aligned diagonal linear student of a rank-8 teacher (N = 1024, n = m = 64, label noise "
        "0.5 / sqrt(m)) trained with injected noise sigma: surviving modes and E[s] against max(s* - eta sigma^2 "
        "/ 2, 0), and the test error. Writes OUT/teacher_student.json and teacher_student.png (about 20 s).",
        func=_run_collapse_teacher_student,
    )
    p.add_argument(
        "--sigmas", type=_floats, default=(0.0, 5.0, 10.0, 15.0, 20.0), help="injected noise levels (a,b,c)"
    )
    p.add_argument("--eta", type=opt.positive_float, default=3 / 1024, help="step size (paper: 3/1024)")
    p.add_argument("--steps", type=opt.positive_int, default=60_000, help="steps (paper: 60,000)")
    p.add_argument("--replicates", type=opt.positive_int, default=16, help="noise streams averaged for E[s]")
    p.add_argument(
        "--average-last", type=opt.positive_int, default=30_000, help="steps averaged at the end for E[s]"
    )
    p.add_argument("--tol", type=opt.positive_float, default=0.05, help="a mode survives when E[s] > tol")
    opt.add_run_options(
        p, out="out/collapse-teacher-student", progress=False, seed_help="seed of data and noise"
    )

    p = opt.add_command(
        cmds,
        "cnn",
        help="a small CNN on Fashion-MNIST: independent neurons vs lr, batch, label noise, time at high lr",
        description="Train a small CNN (GELU, no normalisation) with SGD (momentum 0.9) at several learning rates, "
        "batch sizes and label-noise levels, and with a drop from a high to a low learning rate after different "
        "times (the paper's Fig. 6 in miniature); measure the fraction of independent neurons of the hidden layers. "
        "Every configuration resumes; writes OUT/collapse_cnn.json and collapse_cnn.png, checkpoints under "
        "--checkpoint-dir. The cpu preset takes about 45 minutes on one thread.",
        func=_run_collapse_cnn,
    )
    opt.add_preset(
        p,
        CNN_PRESET_NAMES,
        "cpu",
        "cpu: 2,500 steps per run, lr 0.01-0.1, batch 32-256 (at equal steps and at equal samples), label noise "
        "0-0.6, drops at 1/4, 1/2, 3/4 (about 45 min on one thread); tiny: seconds, for a first look",
    )
    p.add_argument("--steps", type=opt.positive_int, default=None, help="SGD steps per configuration")
    p.add_argument("--lrs", type=_floats, default=None, help="learning-rate sweep (a,b,c)")
    p.add_argument("--batches", type=opt.int_list(opt.positive_int), default=None, help="batch-size sweep")
    p.add_argument("--noises", type=_floats, default=None, help="label-noise sweep (probabilities in [0, 1))")
    p.add_argument("--weight-decay", type=opt.nonnegative_float, default=None, help="L2 weight decay")
    p.add_argument(
        "--data-dir", default=None, help="folder holding Fashion-MNIST (default: the usual places)"
    )
    p.add_argument(
        "--checkpoint-dir",
        default=None,
        help="where the per-configuration training checkpoints go (default OUT/checkpoints)",
    )
    opt.add_run_options(
        p, out="out/collapse-cnn", seed_help="seed of initialisation, batches and label noise"
    )


def _run_collapse_report(args: argparse.Namespace) -> None:
    from dlscience.learning_dynamics.collapse import format_report
    from dlscience.learning_dynamics.collapse_jobs import run_collapse_report

    summary = run_collapse_report(
        args.checkpoint,
        args.out,
        vanish_threshold=args.vanish_threshold,
        identical_threshold=args.identical_threshold,
        outgoing=not args.incoming_only,
        figures=args.figures,
        trust_pickle=args.trust_pickle,
        overwrite=args.overwrite,
    )
    print(f"{args.checkpoint}: {summary['recognised_as']}")
    print(format_report(summary["layers"]))
    print(
        f"{summary['total_vanishing']} of {summary['total_units']} units vanish; independent fraction "
        f"(all layers) {summary['weighted_independent_fraction']:.3f}"
    )
    print(
        f"wrote {args.out}/collapse_report.json, collapse_report.png"
        + (", layer_*.png" if args.figures else "")
    )


def _run_collapse_quartic(args: argparse.Namespace) -> None:
    from dlscience.learning_dynamics.collapse_jobs import run_quartic

    kw = {} if args.zetas is None else {"zetas": args.zetas}
    s = run_quartic(
        args.out,
        mu=args.mu,
        n_paths=args.paths,
        T=args.time,
        n_steps=args.n_steps,
        kappa=args.kappa,
        seed=args.seed,
        overwrite=args.overwrite,
        **kw,
    )
    print(f"{'zeta':>6} {'P(collapse)':>12} {'P(T=25, 1e-30)':>15} {'median exp.':>12} {'mu - zeta^2/2':>14}")
    for row in zip(
        s["zetas"],
        s["p_collapse_exponent"],
        s["p_collapse_threshold_T25"],
        s["median_exponent"],
        s["theory_exponent"],
        strict=True,
    ):
        print(f"{row[0]:>6.3f} {row[1]:>12.3f} {row[2]:>15.3f} {row[3]:>12.3f} {row[4]:>14.3f}")
    cross = s["zeta_at_p_half"]
    print(
        f"P = 0.5 at zeta = {'n/a' if cross is None else f'{cross:.3f}'}; zeta_c = sqrt(2 mu) = {s['zeta_c']:.3f}"
        + ("" if cross is None else f" ({100 * s['relative_offset']:+.1f} %)")
    )
    print(f"wrote {args.out}/quartic.json, quartic.png")


def _run_collapse_tanh(args: argparse.Namespace) -> None:
    from dlscience.learning_dynamics.collapse_jobs import run_tanh

    s = run_tanh(
        args.out,
        eta=args.eta,
        n_points=args.points,
        n_paths=args.paths,
        n_steps=args.n_steps,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    print(f"Sxy/Sxx = {s['Sxy_over_Sxx']:.3f}, zeta_c = {s['zeta_c']:.3f}")
    for r, p, c in zip(s["zeta_over_zeta_c"], s["p_collapse"], s["condition"], strict=True):
        print(
            f"zeta/zeta_c = {r:4.2f}: P(collapse) = {p:.3f} (condition: {'collapse' if c else 'no collapse'})"
        )
    print(f"wrote {args.out}/tanh.json, tanh.png")


def _run_collapse_teacher_student(args: argparse.Namespace) -> None:
    from dlscience.learning_dynamics.collapse_jobs import run_teacher_student

    s = run_teacher_student(
        args.out,
        sigmas=args.sigmas,
        eta=args.eta,
        steps=args.steps,
        replicates=args.replicates,
        average_last=min(args.average_last, args.steps),
        tol=args.tol,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    print(
        f"{'sigma':>6} {'eta s^2/2':>9} {'surviving':>9} {'theory':>7} {'single run':>10} {'test MSE':>9} {'theory':>9}"
    )
    for r in s["rows"]:
        print(
            f"{r['sigma']:>6g} {r['threshold']:>9.3f} {r['simulated_surviving_mean_s']:>9} {r['predicted_surviving']:>7} "
            f"{r['single_run_surviving_1e-2_note_schedule']:>10.1f} {r['test_mse_note_schedule']:>9.2e} "
            f"{r['test_mse_theory']:>9.2e}"
        )
    print(f"wrote {args.out}/teacher_student.json, teacher_student.png")


def _run_collapse_cnn(args: argparse.Namespace) -> None:
    from dlscience.learning_dynamics.collapse_cnn import preset_config, run_cnn_experiment

    cfg = preset_config(
        args.preset,
        steps=args.steps,
        lrs=args.lrs,
        batches=args.batches,
        noises=args.noises,
        weight_decay=args.weight_decay,
        seed=args.seed,
    )
    s = run_cnn_experiment(
        cfg,
        args.out,
        checkpoint_dir=args.checkpoint_dir,
        data_dir=args.data_dir,
        preset=args.preset,
        **opt.job_options(args),
    )
    for sw in s["sweeps"].values():
        rho = sw["spearman"]
        print(f"{sw['x_label']} (Spearman {'n/a' if rho is None else f'{rho:+.2f}'}):")
        for x, f, a in zip(sw["x"], sw["independent_fraction"], sw["test_accuracy"], strict=True):
            print(f"  {x:>8g}: independent fraction {f:.3f}, test accuracy {a:.3f}")
    print(f"wrote {args.out}/collapse_cnn.json, collapse_cnn.png")
