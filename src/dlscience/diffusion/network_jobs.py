"""Jobs that put the machines next to a trained network: ``els calibrate`` and ``els compare``.

Both read the network written by ``dlscience diffusion train`` and rebuild its training set from the saved
settings, so the machines see exactly the images the network was trained on (Kamb & Ganguli 2024, Sec. 6 and
App. C.2). Outputs are written atomically: JSON, and a figure.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from dlscience.diffusion.calibration import calibrate
from dlscience.diffusion.comparison import compare
from dlscience.diffusion.equivariant_local_score import ELSDenoiser
from dlscience.diffusion.ideal_score import IdealDenoiser
from dlscience.diffusion.local_score import LocalDenoiser
from dlscience.diffusion.patch_schedule import PatchSchedule, resolve_patch_size
from dlscience.diffusion.training import TrainConfig, load_network, training_images
from dlscience.errors import InputValidationError, UserError
from dlscience.results import load_torch, save_figure, write_json, write_npz

__all__ = ["run_calibrate", "run_compare"]


def _training_data(model_path: Path, data_dir: str | None):
    path = model_path / "model.pt" if model_path.is_dir() else model_path
    if not path.exists():
        raise UserError(f"no model at {path}; train one with `dlscience diffusion train --out FOLDER`")
    cfg = load_torch(path)["config"]
    ds = training_images(TrainConfig(**cfg), data_dir)
    return cfg, ds


def _fingerprint(model: Path, ds, extra: str) -> str:
    """16 hex digits identifying a checkpointed job: the network file's bytes, the training images and
    ``extra`` (the machine name or the schedule)."""
    model_file = model / "model.pt" if model.is_dir() else model
    digest = hashlib.sha256(model_file.read_bytes())
    digest.update(extra.encode())
    digest.update(ds.images.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def run_calibrate(
    model: str | Path,
    out: str | Path,
    *,
    machine: str = "els",
    candidates=(3, 5, 7, 9, 11, 13, 15, 17),
    n_samples: int = 10,
    seed: int = 0,
    data_dir: str | None = None,
    progress: bool = True,
) -> dict:
    """Calibrate the LS or ELS machine's patch size to the network at ``model``; writes ``schedule.json``
    (readable by ``els sample --schedule``) and ``calibration.png`` to ``out``. After every time step the
    trajectories go to ``calibration_checkpoint.pt``, so rerunning after an interruption continues. Returns the
    JSON content."""
    model = Path(model)
    network = load_network(model)
    cfg, ds = _training_data(model, data_dir)
    labels = ds.labels if network.conditional else None
    kw = {"labels": labels, "num_classes": network.num_classes}
    if machine == "ls":

        def machine_for(P):
            return LocalDenoiser(ds.images, P, **kw)
    else:

        def machine_for(P):
            return ELSDenoiser(ds.images, P, cfg["padding"], **kw)

    from tqdm.auto import tqdm

    bar = tqdm(total=None, disable=not progress, desc="calibrate", unit="eval")

    def tick(done, total):
        bar.total = total
        bar.update(done - bar.n)

    out = Path(out)
    checkpoint = out / "calibration_checkpoint.pt"
    try:
        result = calibrate(
            network,
            machine_for,
            candidates=candidates,
            n_samples=n_samples,
            seed=seed,
            progress=tick,
            checkpoint=checkpoint,
            fingerprint=_fingerprint(model, ds, machine),
        )
    finally:
        bar.close()
    data = {"model": str(model), "machine": machine, "padding": cfg["padding"], **result.to_json()}
    write_json(out / "schedule.json", data)
    save_figure(out / "calibration.png", _calibration_figure(result))
    checkpoint.unlink(missing_ok=True)
    return data


def run_compare(
    model: str | Path,
    out: str | Path,
    *,
    schedule: str,
    schedule_offset: int = 0,
    machines: tuple[str, ...] = ("ELS", "LS", "IS"),
    n_seeds: int = 100,
    seed: int = 0,
    data_dir: str | None = None,
    progress: bool = True,
) -> dict:
    """Sample the network and the ELS, LS and IS machines from the same seeds and labels; writes
    ``compare.json`` (per-seed r, r^2, R^2; medians and IQR; win rates), ``compare.png`` (rows network |
    ELS | LS | IS for the first seeds) and ``compare_samples.npz`` (every sample, seeds and labels).

    ``schedule_offset`` (0 or 1) shifts the schedule lookup by one grid point; 1 reproduces the reference
    code, whose step at t = i/20 uses the size calibrated at t + 0.05 (research note els.md Sec. 1).
    ``machines`` is any non-empty subset of ELS, LS, IS (IS needs no schedule).

    Every finished sample goes to ``compare_checkpoint.pt`` in ``out``; rerunning the same command after an
    interruption continues from it (a checkpoint of another network, schedule or seed set is refused). Returns
    the summary. Raises InputValidationError for an offset other than 0/1 or an unknown or empty machine
    list."""
    if schedule_offset not in (0, 1):
        raise InputValidationError(f"schedule offset must be 0 or 1, got {schedule_offset}")
    machines = tuple(m.upper() for m in machines)
    unknown = sorted(set(machines) - {"ELS", "LS", "IS"})
    if unknown or not machines:
        raise InputValidationError(
            f"machines must be a non-empty subset of ELS, LS, IS; got {', '.join(machines) or 'none'}"
        )
    model = Path(model)
    network = load_network(model)
    cfg, ds = _training_data(model, data_dir)
    sched = resolve_patch_size(int(schedule) if str(schedule).isdigit() else schedule)
    sched = PatchSchedule(sched.sizes, offset=schedule_offset, name=sched.name)
    out = Path(out)
    checkpoint = out / "compare_checkpoint.pt"
    kw = {"labels": ds.labels if network.conditional else None, "num_classes": network.num_classes}
    builders = {
        "ELS": lambda: ELSDenoiser(ds.images, sched, cfg["padding"], **kw),
        "LS": lambda: LocalDenoiser(ds.images, sched, **kw),
        "IS": lambda: IdealDenoiser(ds.images, **kw),
    }
    machines = {name: builders[name]() for name in builders if name in machines}
    from tqdm.auto import tqdm

    bar = tqdm(total=n_seeds * (1 + len(machines)), disable=not progress, desc="compare", unit="sample")
    try:
        res = compare(
            network,
            machines,
            n_seeds=n_seeds,
            seed=seed,
            progress=lambda name, i: bar.update(1),
            checkpoint=checkpoint,
            fingerprint=_fingerprint(
                model, ds, json.dumps([sched.to_json(), sorted(machines)], sort_keys=True)
            ),
        )
    finally:
        bar.close()
    summary = {
        "model": str(model),
        "schedule": sched.to_json(),
        "n_seeds": n_seeds,
        "summary": res.summary(),
        "per_seed": {
            "seeds": res.seeds,
            "labels": None if res.labels is None else res.labels.tolist(),
            "r": {k: v.tolist() for k, v in res.r.items()},
            "R2": {k: v.tolist() for k, v in res.R2.items()},
        },
    }
    write_json(out / "compare.json", summary)
    save_figure(out / "compare.png", _compare_figure(res))
    write_npz(
        out / "compare_samples.npz",
        seeds=np.asarray(res.seeds),
        labels=np.asarray([] if res.labels is None else res.labels.numpy()),
        network=res.network.numpy(),
        **{name: x.numpy() for name, x in res.machines.items()},
    )
    checkpoint.unlink(missing_ok=True)
    return summary


def _calibration_figure(result):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    times = result.times
    ax.plot(times, [result.schedule.at(t) for t in times], "o-", label="median best P")
    for row in result.best:
        ax.plot(times, row.tolist(), ".", alpha=0.25, color="gray")
    ax.set_xlabel("t")
    ax.set_ylabel("patch size P")
    ax.set_title("calibrated patch size (gray: per sample)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _compare_figure(res, n: int = 8):
    import matplotlib.pyplot as plt

    from dlscience.plotting import to_display

    n = min(n, len(res.seeds))
    rows = [("network", res.network)] + list(res.machines.items())
    fig, axes = plt.subplots(len(rows), n, figsize=(1.3 * n + 0.6, 1.4 * len(rows)), squeeze=False)
    for r, (name, imgs) in enumerate(rows):
        for i in range(n):
            ax = axes[r, i]
            img = to_display(imgs[i])
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if name != "network":
                ax.set_title(f"r={float(res.r[name][i]):.2f}", fontsize=7)
            if i == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.tight_layout()
    return fig
