"""The ``dlscience sigprop`` jobs: each checks its inputs, opens its run folder
(:class:`~dlscience.runs.RunFolder`), computes, writes its files through the run folder and returns its data;
the ``*_lines`` functions format the data for the terminal. The CLI (:mod:`.cli`) only parses, calls and prints.

* :func:`maps_job` -- (q, rho) per layer from the maps, optionally against simulated networks;
* :func:`phase_diagram_job` -- lambda_a, lambda_g over (alpha, sigma_w) and the edge of chaos;
* :func:`simulate_job` -- theory vs Monte Carlo over settings in both phases, resumable per setting;
* :func:`trainability_job` -- the trainability grid on the WordNet glosses (resumable per grid point).

Run folders written before manifests: ``maps``, ``phase-diagram`` and ``simulate`` recompute in seconds to
minutes and cannot check the old files' settings, so such folders are refused with "rerun with --overwrite";
``trainability`` adopts them when every grid point's file records the same settings
(:func:`~dlscience.signal_propagation.trainability.run_grid`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from dlscience.errors import InputValidationError
from dlscience.runs import RunFolder
from dlscience.signal_propagation.model import SignalPropParams
from dlscience.signal_propagation.simulate import format_estimate

__all__ = [
    "maps_job",
    "maps_lines",
    "phase_diagram_job",
    "phase_diagram_lines",
    "simulate_job",
    "simulate_lines",
    "trainability_job",
    "trainability_lines",
    "SIMULATE_N_TOKENS",
]

SIMULATE_N_TOKENS = 16  # n of theory_vs_simulation's defaults


def _run(out, command: str, settings: dict, outputs: tuple[str, ...], overwrite: bool) -> RunFolder:
    """A run folder for a job that recomputes everything (old folders without a manifest are refused)."""
    return RunFolder(out, command, settings, overwrite=overwrite, outputs=outputs, legacy=outputs)


# ---------------------------------------------------------------------------------------- maps
def maps_job(
    params: SignalPropParams,
    *,
    n_tokens: int = 16,
    layers: int = 30,
    q0: float = 1.0,
    rho0: float = 0.3,
    simulate: bool = False,
    width: int = 1024,
    networks: int = 4,
    seed: int = 0,
    out: str | Path,
    overwrite: bool = False,
) -> dict:
    """Iterate the (q, rho) maps for ``layers`` blocks from a simplex (q0, rho0); with ``simulate`` also measure
    finite networks. Writes ``out/maps.json`` and ``maps.png``.

    Returns
    -------
    dict
        ``params``, ``theory`` (``q``, ``rho``: lists of L + 1 floats), ``lambda_a`` and (ordered phase)
        ``lambda_g`` with complementary residuals, ``simulation`` (``q``, ``rho``: lists of {mean, sem, n};
        sem None for one network) with ``simulate``, and ``settings``.

    Raises
    ------
    InputValidationError
        Impossible geometry (n < 2, layers < 1, q0 <= 0, rho0 outside [-1/(n-1), 1]) or simulation settings
        (width < n + 1, networks < 1, rho0 < 0), before anything is written.
    """
    from dlscience.signal_propagation import maps
    from dlscience.signal_propagation.simulate import simulate_geometry

    if not isinstance(params, SignalPropParams):
        raise InputValidationError(
            f"maps_job: params must be a SignalPropParams, got {type(params).__name__}"
        )
    n = n_tokens
    if n < 2 or layers < 1 or q0 <= 0 or not -1 / (n - 1) <= rho0 <= 1:
        raise InputValidationError(
            f"need --n-tokens >= 2, --layers >= 1, --q0 > 0 and --rho0 in [-1/(n-1), 1] (a cosine between n "
            f"tokens), got {n}, {layers}, {q0}, {rho0}"
        )
    if simulate and (width < n + 1 or networks < 1 or rho0 < 0):
        raise InputValidationError(
            f"--simulate needs --width >= n + 1 = {n + 1}, --networks >= 1 and --rho0 >= 0, got {width}, "
            f"{networks}, {rho0}"
        )
    settings = {"params": params.__dict__, "n_tokens": n, "layers": layers, "q0": q0, "rho0": rho0,
                "simulate": simulate, "width": width, "networks": networks, "seed": seed}  # fmt: skip
    with _run(out, "sigprop maps", settings, ("maps.json", "maps.png"), overwrite) as run:
        traj = maps.iterate_maps(q0, rho0, params, layers, n)
        data = {"params": params.__dict__, "theory": {"q": traj.q.tolist(), "rho": traj.rho.tolist()}}
        if params.residual == "complementary" and (params.alpha_A or params.alpha_M):
            data["lambda_a"] = maps.angle_exponent(params)
            if data["lambda_a"] <= 0:  # the gradient formula linearises around the collapsed state
                data["lambda_g"] = maps.gradient_exponent(params)
        if simulate:
            sim = simulate_geometry(params, n=n, d=width, n_layers=layers, q0=q0, rho0=rho0,
                                    n_networks=networks, seed=seed)  # fmt: skip
            data["simulation"] = {k: [e.to_json() for e in sim[k]] for k in ("q", "rho")}
        data["settings"] = settings
        run.write_json("maps.json", data)
        run.save_figure("maps.png", _maps_figure(data))
        run.finish()
    return data


def _maps_figure(data: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(data["theory"]["rho"], "-", label="maps")
    if "simulation" in data:
        rho = data["simulation"]["rho"]
        m = np.array([e["mean"] for e in rho])
        e = np.array([np.nan if e["sem"] is None else e["sem"] for e in rho])
        label = f"simulation (d = {data['settings']['width']}, {data['settings']['networks']} networks)"
        ax.errorbar(range(len(m)), m, yerr=None if np.isnan(e).all() else e, fmt="o", ms=3, label=label)
    ax.set_xlabel("layer")
    ax.set_ylabel("cosine rho")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def maps_lines(data: dict) -> list[str]:
    """The exponents and the per-layer table of :func:`maps_job` (simulation spreads of one network: n/a)."""
    lines = []
    if "lambda_a" in data:
        if "lambda_g" in data:
            lines.append(f"lambda_a = {data['lambda_a']:+.4f} (ordered)   lambda_g = {data['lambda_g']:+.4f}")
        else:
            lines.append(f"lambda_a = {data['lambda_a']:+.4f} (chaotic)   lambda_g: n/a in the chaotic phase")
    sim = data.get("simulation")
    lines.append(f"{'layer':>5} {'q':>9} {'rho':>7}" + (f" {'rho sim':>17}" if sim else ""))
    q, rho = data["theory"]["q"], data["theory"]["rho"]
    for i in range(len(q)):
        line = f"{i:>5} {q[i]:>9.4f} {rho[i]:>7.4f}"
        if sim:
            line += f" {_estimate(sim['rho'][i], '.4f'):>17}"
        lines.append(line)
    return lines


# ---------------------------------------------------------------------------------------- phase diagram
def phase_diagram_job(
    alphas,
    sigma_ws,
    *,
    sigma_A: float = 1.0,
    nonlinearity: str = "tanh",
    geometry_layers: int = 0,
    gradient_layers: int = 16,
    n_tokens: int = 32,
    mask: str = "bidirectional",
    out: str | Path,
    overwrite: bool = False,
) -> dict:
    """:func:`~dlscience.signal_propagation.phase_diagram.phase_diagram` written to ``out/phase_diagram.json``
    and ``.png`` (one value on an axis gives line plots instead of heat maps), with the finite-depth gradient
    exponent lambda_g(L = ``gradient_layers``, n = ``n_tokens``) for attention ``mask``.

    Raises
    ------
    InputValidationError
        alphas outside (0, 1), sigma_ws <= 0, an empty axis or a repeated value, L or n < 1, or an unknown mask,
        before anything is written.
    """
    from dlscience.signal_propagation.finite_depth_gradient import MASKS
    from dlscience.signal_propagation.phase_diagram import phase_diagram, phase_figure

    alphas, sigma_ws = [float(a) for a in alphas], [float(s) for s in sigma_ws]
    if any(not 0 < a < 1 for a in alphas) or any(not s > 0 for s in sigma_ws):
        raise InputValidationError("--alphas must lie in (0, 1) and --sigma-ws be > 0")
    if gradient_layers < 1 or n_tokens < 1 or mask not in MASKS:
        raise InputValidationError(
            f"need --gradient-layers >= 1, --n-tokens >= 1 and --mask in {MASKS}, got {gradient_layers}, "
            f"{n_tokens}, {mask!r}"
        )
    settings = {"alphas": alphas, "sigma_ws": sigma_ws, "sigma_A": sigma_A, "nonlinearity": nonlinearity,
                "geometry_layers": geometry_layers, "gradient_layers": gradient_layers, "n_tokens": n_tokens,
                "mask": mask}  # fmt: skip
    outputs = ("phase_diagram.json", "phase_diagram.png")
    with _run(out, "sigprop phase-diagram", settings, outputs, overwrite) as run:
        d = phase_diagram(alphas, sigma_ws, sigma_A=sigma_A, nonlinearity=nonlinearity,
                          geometry_layers=geometry_layers, gradient_layers=gradient_layers,
                          gradient_tokens=n_tokens, mask=mask)  # fmt: skip
        run.write_json("phase_diagram.json", d)
        run.save_figure("phase_diagram.png", phase_figure(d))
        run.finish()
    return d


def phase_diagram_lines(d: dict) -> list[str]:
    """The three zero lines for up to about eight alphas of :func:`phase_diagram_job`."""
    fd, z = d["finite_depth"], d["zero_lines"]

    def fmt(v):
        return "none in grid" if v is None else f"{v:.3f}"

    rows = list(zip(d["alpha"], z["lambda_a"], z["lambda_a_causal"], z["lambda_g_finite"], strict=True))
    return [
        f"alpha = {a:.3f}: edge of chaos at sigma_w = {fmt(e)} (bidirectional), {fmt(c)} (causal); "
        f"lambda_g(L={fd['layers']}, n={fd['n']}, {fd['mask']}) = 0 at {fmt(g)}"
        for a, e, c, g in rows[:: max(1, len(rows) // 8)]
    ]


# ---------------------------------------------------------------------------------------- simulate
def simulate_job(
    settings=None,
    *,
    sigma_A: float = 1.0,
    width: int = 1024,
    layers: int = 30,
    networks: int = 4,
    exponent_networks: int = 40,
    exponent_width: int = 512,
    seed: int = 0,
    out: str | Path,
    overwrite: bool = False,
    progress: bool = True,
) -> list[dict]:
    """:func:`~dlscience.signal_propagation.phase_diagram.theory_vs_simulation` setting by setting, saving
    each finished setting in the run folder's state (an interrupted run resumes at the next setting); writes
    ``out/simulate.json`` and ``table.md``.

    Parameters
    ----------
    settings : list of (alpha_A, alpha_M, sigma_w), optional
        Default: the ten built-in settings across both phases.

    Returns
    -------
    list of dict
        One row per setting (see ``theory_vs_simulation``).

    Raises
    ------
    InputValidationError
        No settings, a setting out of range, fewer than 1 network, or a width below n + 1 = 17, before
        anything is written.
    """
    from tqdm.auto import tqdm

    from dlscience.signal_propagation.phase_diagram import DEFAULT_SETTINGS, theory_vs_simulation

    settings = [tuple(float(v) for v in s) for s in (DEFAULT_SETTINGS if settings is None else settings)]
    if not settings or any(len(s) != 3 for s in settings):
        raise InputValidationError("simulate needs at least one (alpha_A, alpha_M, sigma_w) setting")
    for aA, aM, sw in settings:
        SignalPropParams(aA, aM, sigma_A, sw)  # raises InputValidationError naming the bad value
    n = SIMULATE_N_TOKENS
    for name, value, least in (("--networks", networks, 1), ("--exponent-networks", exponent_networks, 1),
                               ("--width", width, n + 1), ("--exponent-width", exponent_width, n + 1),
                               ("--layers", layers, 1)):  # fmt: skip
        if value < least:
            raise InputValidationError(f"{name} must be >= {least} (n = {n} tokens), got {value}")
    record = {"settings": [list(s) for s in settings], "sigma_A": sigma_A, "width": width, "layers": layers,
              "networks": networks, "exponent_networks": exponent_networks, "exponent_width": exponent_width,
              "seed": seed}  # fmt: skip
    with _run(out, "sigprop simulate", record, ("simulate.json", "table.md"), overwrite) as run:
        rows = run.state.setdefault("rows", [])
        for setting in tqdm(settings[len(rows) :], disable=not progress, desc="settings"):
            (row,) = theory_vs_simulation(
                [setting],
                sigma_A=sigma_A,
                width=width,
                n_layers=layers,
                n_networks=networks,
                exponent_networks=exponent_networks,
                exponent_width=exponent_width,
                seed=seed,
                progress=False,
            )
            rows.append(row)
            run.save_state()
        run.write_json("simulate.json", {"settings": record, "rows": rows})
        run.path("table.md").write_text("\n".join(simulate_lines(rows, layers)) + "\n")
        run.finish()
    return rows


def _estimate(e: dict, spec: str = ".3f") -> str:
    """A JSON Monte Carlo estimate ({mean, sem, n}) as ``mean +- sem`` (n/a for one draw)."""
    return format_estimate(e["mean"], e["sem"], spec)


def simulate_lines(rows: list[dict], layers: int) -> list[str]:
    """The Markdown table of :func:`simulate_job` (spreads over one network print n/a)."""
    lines = [
        f"| alpha_A | alpha_M | sigma_w | phase | rho_L maps | rho_L sim | max abs rho diff (L <= {layers}) | "
        "lambda_a theory | lambda_a MC | Jacobian growth theory | MC |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        sim, la, jg = r["rho_L"]["simulation"], r["lambda_a"], r.get("jacobian_growth")
        cells = [r["alpha_A"], r["alpha_M"], r["sigma_w"], r["phase"], f"{r['rho_L']['theory']:.3f}",
                 _estimate(sim), f"{r['max_abs_rho_diff']:.3f}", f"{la['theory']:+.3f}",
                 _estimate(la["monte_carlo"], "+.3f")]  # fmt: skip
        if jg:
            cells += [f"{jg['theory']:+.3f}", _estimate(jg["monte_carlo"], "+.3f")]
        else:
            cells += ["-", "-"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


# ---------------------------------------------------------------------------------------- trainability
def trainability_job(
    alphas,
    sigma_ws,
    cfg,
    *,
    wordnet_dir: str | Path | None = None,
    out: str | Path,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Load the WordNet glosses from ``wordnet_dir`` (see :func:`dlscience.data.text.wordnet_folder`) and run
    :func:`~dlscience.signal_propagation.trainability.run_grid` on them.

    Raises
    ------
    DatasetNotFoundError
        The WordNet folder does not exist or lacks its data files (named; no other folder is tried).
    UserError
        A data file is not UTF-8 text (named), or the run folder is refused.
    """
    from dlscience.data.text import load_wordnet_glosses, wordnet_folder
    from dlscience.signal_propagation.trainability import run_grid

    folder = wordnet_folder(wordnet_dir)
    _, texts = load_wordnet_glosses(folder)
    return run_grid(texts, alphas, sigma_ws, cfg, out, progress=progress, overwrite=overwrite,
                    settings={"wordnet_dir": str(folder)})  # fmt: skip


def trainability_lines(summary: dict) -> list[str]:
    """The correlation and the best point of :func:`trainability_job` (n/a where undefined)."""

    def num(x, spec):
        return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)

    rho, p = num(summary["spearman_loss_vs_distance"], ".3f"), num(summary["p_value"], ".2g")
    return [f"Spearman(test loss, distance of exponents from 0) = {rho} (p = {p}); best: {summary['best']}"]
