"""Order-chaos phase diagram and theory-vs-simulation tables (Cowsik et al. 2024, Sec. 3-4, Fig. 4).

* :func:`phase_diagram` -- lambda_a (bidirectional and causal) and lambda_g (infinite depth, and the finite-depth
  lambda_g(L, n) of :mod:`.finite_depth_gradient`) over (alpha = alpha_A = alpha_M, sigma_w), with the zero lines:
  the edge of chaos lambda_a = 0 for each mask and lambda_g(L, n) = 0; optionally the cosine after L blocks;
* :func:`theory_vs_simulation` -- for a list of settings, the maps' rho over L layers against finite networks
  (max |difference|), lambda_a closed form against the one-block estimator, and the Jacobian growth rate
  against probes.
"""

from __future__ import annotations

import numpy as np

from dlscience.errors import InputValidationError
from dlscience.signal_propagation.finite_depth_gradient import MASKS, finite_depth_gradient_exponent
from dlscience.signal_propagation.maps import (
    angle_exponent,
    gradient_exponent,
    iterate_maps,
    jacobian_growth,
)
from dlscience.signal_propagation.model import SignalPropParams
from dlscience.signal_propagation.simulate import angle_exponent_mc, gradient_exponent_mc, simulate_geometry

__all__ = ["phase_diagram", "theory_vs_simulation", "DEFAULT_SETTINGS", "phase_figure"]

# ten settings across both phases (tanh, sigma_A = 1): (alpha_A, alpha_M, sigma_w)
DEFAULT_SETTINGS = [
    (0.5, 0.0, 1.0),
    (0.5, 0.5, 1.0),
    (0.5, 0.5, 2.0),
    (0.5, 0.5, 3.0),
    (0.3, 0.3, 3.0),
    (0.7, 0.7, 3.0),
    (0.5, 0.5, 4.5),
    (0.3, 0.7, 4.0),
    (0.2, 0.6, 5.0),
    (0.1, 0.5, 6.0),
]


def phase_diagram(
    alphas,
    sigma_ws,
    *,
    sigma_A: float = 1.0,
    nonlinearity: str = "tanh",
    residual: str = "complementary",
    geometry_layers: int = 0,
    n: int = 16,
    rho0: float = 0.3,
    gradient_layers: int = 16,
    gradient_tokens: int = 32,
    mask: str = "bidirectional",
) -> dict:
    """lambda_a, lambda_g (and optionally rho after ``geometry_layers`` blocks) on an (alpha, sigma_w) grid.

    Parameters
    ----------
    alphas : sequence of float
        alpha_A = alpha_M values (in (0, 1) for complementary residuals); sorted ascending, no repeats.
    sigma_ws : sequence of float
        sigma_w values (> 0); sorted ascending, no repeats. One value on either axis is allowed (the diagram
        is then a line).
    geometry_layers : int
        If > 0, also iterate the maps from (q = 1, rho0) for this many blocks and return the final cosine.
    gradient_layers, gradient_tokens : int
        L >= 1 and n >= 1 of the finite-depth gradient exponent lambda_g(L, n) (from collapsed tokens with
        q0 = 1; :func:`~dlscience.signal_propagation.finite_depth_gradient.finite_depth_gradient_exponent`).
    mask : {"bidirectional", "causal"}
        Attention mask of lambda_g(L, n). (lambda_a is returned for both masks.)

    Returns
    -------
    dict
        ``alpha``, ``sigma_w`` (lists); lists of rows (sigma_w x alpha): ``lambda_a`` (bidirectional, the
        paper's), ``lambda_a_causal``, ``lambda_g`` (infinite depth; NaN in the chaotic phase, where the
        collapsed state it linearises around is unstable) and ``lambda_g_finite`` (lambda_g(L, n) in both
        phases: the collapsed state is a fixed point of the maps in either); ``finite_depth`` (L, n, mask, q0);
        ``zero_lines``: per alpha, the sigma_w where ``lambda_a``, ``lambda_a_causal`` and
        ``lambda_g_finite`` first change sign going up in sigma_w (linear interpolation on the grid; None when
        they do not); ``edge_of_chaos`` (= ``zero_lines["lambda_a"]``) and optionally ``rho_L``.

    Raises
    ------
    InputValidationError
        An empty axis, a repeated value, a value out of range (from :class:`SignalPropParams`), L or n < 1, or
        an unknown mask.
    """
    alphas, sigma_ws = sorted(float(a) for a in alphas), sorted(float(s) for s in sigma_ws)
    if not alphas or not sigma_ws:
        raise InputValidationError("the phase diagram needs at least one alpha and one sigma_w")
    for name, axis in (("alphas", alphas), ("sigma_ws", sigma_ws)):
        if len(set(axis)) != len(axis):
            raise InputValidationError(f"{name} repeats a value: {axis}")
    if mask not in MASKS:
        raise InputValidationError(f"mask must be one of {MASKS}, got {mask!r}")
    if gradient_layers < 1 or gradient_tokens < 1:
        raise InputValidationError(
            f"the finite-depth gradient exponent needs L >= 1 and n >= 1, got {gradient_layers}, {gradient_tokens}"
        )
    la = np.full((len(sigma_ws), len(alphas)), np.nan)
    la_causal, lg, lg_finite = np.full_like(la, np.nan), np.full_like(la, np.nan), np.full_like(la, np.nan)
    rho_L = np.full_like(la, np.nan) if geometry_layers else None
    for j, a in enumerate(alphas):
        for i, s in enumerate(sigma_ws):
            p = SignalPropParams(a, a, sigma_A, s, nonlinearity=nonlinearity, residual=residual)
            if residual == "complementary":
                la[i, j] = angle_exponent(p)
                la_causal[i, j] = angle_exponent(p, mask="causal")
                if la[i, j] <= 0:  # the formula linearises around the collapsed state: ordered phase only
                    lg[i, j] = gradient_exponent(p)
            lg_finite[i, j] = finite_depth_gradient_exponent(
                p, gradient_tokens, gradient_layers, q0=1.0, mask=mask
            )
            if geometry_layers:
                rho_L[i, j] = iterate_maps(1.0, rho0, p, geometry_layers, n, n_samples=400).rho[-1]
    zero_lines = {
        key: [_zero_crossing(z[:, j], sigma_ws) for j in range(len(alphas))]
        for key, z in (("lambda_a", la), ("lambda_a_causal", la_causal), ("lambda_g_finite", lg_finite))
    }
    out = {
        "alpha": alphas,
        "sigma_w": sigma_ws,
        "sigma_A": sigma_A,
        "nonlinearity": nonlinearity,
        "residual": residual,
        "lambda_a": la.tolist(),
        "lambda_a_causal": la_causal.tolist(),
        "lambda_g": lg.tolist(),
        "lambda_g_finite": lg_finite.tolist(),
        "finite_depth": {"layers": gradient_layers, "n": gradient_tokens, "mask": mask, "q0": 1.0},
        "zero_lines": zero_lines,
        "edge_of_chaos": zero_lines["lambda_a"],
    }
    if rho_L is not None:
        out["rho_L"] = rho_L.tolist()
        out["geometry"] = {"layers": geometry_layers, "n": n, "rho0": rho0}
    return out


def _zero_crossing(col: np.ndarray, sigma_ws: list[float]) -> float | None:
    """The first sigma_w where ``col`` changes sign going up the grid (linear interpolation), or None."""
    for i in range(1, len(sigma_ws)):
        lo, hi = col[i - 1], col[i]
        if np.isfinite(lo) and np.isfinite(hi) and (lo < 0 <= hi or lo >= 0 > hi) and lo != hi:
            return float(sigma_ws[i - 1] + (sigma_ws[i] - sigma_ws[i - 1]) * (-lo) / (hi - lo))
    return None


def phase_figure(diagram: dict):
    """Heat maps of lambda_a (bidirectional and causal) and the finite-depth lambda_g(L, n) (and rho_L when
    present), each with the three zero lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a, s = np.array(diagram["alpha"]), np.array(diagram["sigma_w"])
    fd = diagram["finite_depth"]
    panels = [
        ("lambda_a", "angle exponent $\\lambda_a$ (bidirectional)"),
        ("lambda_a_causal", "angle exponent $\\lambda_a$ (causal)"),
        ("lambda_g_finite", f"$\\lambda_g(L={fd['layers']}, n={fd['n']})$, {fd['mask']}, $q_0 = 1$"),
    ]
    if "rho_L" in diagram:
        panels.append(("rho_L", f"cosine after {diagram['geometry']['layers']} blocks (maps)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 3.7))
    zero = {k: np.array(diagram[k], dtype=float) for k in ("lambda_a", "lambda_a_causal", "lambda_g_finite")}
    grid = len(a) >= 2 and len(s) >= 2
    for ax, (key, title) in zip(np.atleast_1d(axes), panels, strict=True):
        z = np.array(diagram[key], dtype=float)
        if grid:
            _heat_map(fig, ax, a, s, z, zero, key)
        else:  # one value on an axis: the diagram is a line (or a point) along the other
            _line_panel(ax, a, s, z, key)
        ax.set_title(title, fontsize=8)
    fig.suptitle(
        f"{diagram['nonlinearity']}, sigma_A = {diagram['sigma_A']}; "
        + (
            "zero lines: dashed lambda_a (bidirectional), dotted lambda_a (causal), solid "
            f"lambda_g(L = {fd['layers']}, n = {fd['n']}, {fd['mask']})"
            if grid
            else "dashed: zero"
        ),
        fontsize=8,
    )
    fig.tight_layout()
    return fig


_ZERO_STYLES = {"lambda_a": "--", "lambda_a_causal": ":", "lambda_g_finite": "-"}


def _heat_map(fig, ax, a, s, z, zero: dict, key) -> None:
    """One panel over the (alpha, sigma_w) grid (both axes with >= 2 values), with the three zero lines."""
    if key == "rho_L":
        im = ax.pcolormesh(a, s, z, shading="auto", cmap="viridis", vmin=0, vmax=1)
    else:
        lim = np.nanmax(np.abs(np.clip(z, -2, 2))) if np.isfinite(z).any() else 1.0
        lim = lim if lim > 0 else 1.0
        im = ax.pcolormesh(a, s, np.clip(z, -lim, lim), shading="auto", cmap="RdBu_r", vmin=-lim, vmax=lim)
    for name, line in zero.items():
        if np.isfinite(line).sum() >= 4 and np.nanmin(line) < 0 < np.nanmax(line):
            ax.contour(a, s, line, levels=[0.0], colors="k", linewidths=1.1, linestyles=_ZERO_STYLES[name])
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xlabel("alpha = alpha_A = alpha_M")
    ax.set_ylabel("sigma_w")


def _line_panel(ax, a, s, z, key) -> None:
    """One panel when an axis has a single value: the quantity along the other axis (markers, zero line)."""
    if len(s) >= len(a):  # one alpha: along sigma_w
        x, y, label, fixed = s, z[:, 0], "sigma_w", f"alpha = {a[0]:g}"
    else:  # one sigma_w: along alpha
        x, y, label, fixed = a, z[0, :], "alpha = alpha_A = alpha_M", f"sigma_w = {s[0]:g}"
    ax.plot(x, y, "o-", ms=4, label=fixed)
    for xi, yi in zip(x, y, strict=True):
        ax.annotate("n/a" if not np.isfinite(yi) else f"{yi:+.3f}", (xi, yi if np.isfinite(yi) else 0.0),
                    textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)  # fmt: skip
    if key != "rho_L":
        ax.axhline(0.0, color="k", lw=0.8, ls="--")
    pad = 0.05 * (x.max() - x.min()) if len(x) > 1 else 0.5
    ax.set_xlim(x.min() - pad, x.max() + pad)
    ax.margins(y=0.15)
    ax.set_xlabel(label)
    ax.set_ylabel(key)
    ax.legend(fontsize=8)


def theory_vs_simulation(
    settings=DEFAULT_SETTINGS,
    *,
    sigma_A: float = 1.0,
    nonlinearity: str = "tanh",
    n: int = 16,
    width: int = 1024,
    n_layers: int = 30,
    rho0: float = 0.3,
    n_networks: int = 4,
    exponent_width: int = 512,
    exponent_networks: int = 40,
    gradient_layers: int = 12,
    seed: int = 0,
    progress: bool = True,
) -> list[dict]:
    """For each (alpha_A, alpha_M, sigma_w): maps vs simulation of rho over ``n_layers`` at ``width``, and both
    exponents vs their Monte Carlo estimators.

    Returns
    -------
    list of dict
        Per setting: ``max_abs_rho_diff`` (over layers 0..L, theory vs the mean of ``n_networks``), ``rho_L``
        (theory, simulation with its standard error), ``lambda_a`` (theory, MC mean and sem),
        ``jacobian_growth`` (finite-L theory, MC) in the ordered phase, and the phase.
    """
    from tqdm.auto import tqdm

    rows = []
    for aA, aM, sw in tqdm(settings, disable=not progress, desc="settings"):
        p = SignalPropParams(aA, aM, sigma_A, sw, nonlinearity=nonlinearity)
        theory = iterate_maps(1.0, rho0, p, n_layers, n)
        sim = simulate_geometry(
            p, n=n, d=width, n_layers=n_layers, rho0=rho0, n_networks=n_networks, seed=seed
        )
        sim_rho = np.array([e.mean for e in sim["rho"]])
        la_mc = angle_exponent_mc(p, n=n, d=exponent_width, n_networks=exponent_networks, seed=seed)
        la = angle_exponent(p)
        row = {
            "alpha_A": aA,
            "alpha_M": aM,
            "sigma_w": sw,
            "phase": "ordered" if la < 0 else "chaotic",
            "max_abs_rho_diff": float(np.max(np.abs(theory.rho - sim_rho))),
            "rho_L": {"theory": float(theory.rho[-1]), "simulation": sim["rho"][-1].to_json()},
            "rho_theory": theory.rho.tolist(),
            "rho_simulation": sim_rho.tolist(),
            "lambda_a": {"theory": la, "monte_carlo": la_mc.to_json()},
            "lambda_g": gradient_exponent(p),
        }
        if la < 0 and aM > 0:
            mc = gradient_exponent_mc(
                p, n=n, d=exponent_width, n_layers=gradient_layers, n_networks=4, seed=seed
            )
            row["jacobian_growth"] = {
                "layers": gradient_layers,
                "theory": jacobian_growth(p, n, gradient_layers),
                "monte_carlo": mc.to_json(),
            }
        rows.append(row)
    return rows
