"""Jobs that put the machines next to a trained network: ``els calibrate`` and ``els compare``.

Both read the network written by ``dlscience diffusion train`` and rebuild its training set from the saved
settings, so the machines see exactly the images the network was trained on (Kamb & Ganguli 2024, Sec. 6 and
App. C.2). Outputs are written atomically: JSON, and a figure.
"""

from __future__ import annotations

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
from dlscience.results import load_torch
from dlscience.runs import RunFolder, digest_file

__all__ = ["run_calibrate", "run_compare"]


CALIBRATE_OUTPUTS = ("schedule.json", "calibration.png", "calibration_checkpoint.pt")
COMPARE_OUTPUTS = ("compare.json", "compare.png", "compare_samples.npz", "compare_checkpoint.pt")


def _model_file(model: Path) -> Path:
    path = model / "model.pt" if model.is_dir() else model
    if not path.exists():
        raise UserError(f"no model at {path}; train one with `dlscience diffusion train --out FOLDER`")
    return path


def _training_data(model_path: Path, data_dir: str | None):
    """The saved training config of the model at ``model_path`` and its training set (rebuilt from it).

    Raises UserError (one line naming the file) for a damaged or foreign model file."""
    path = _model_file(model_path)
    saved = load_torch(
        path, what="model", fix="train it again with `dlscience diffusion train`, or give another --model"
    )
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise UserError(f"{path} is not a model written by `dlscience diffusion train`")
    cfg = saved["config"]
    try:
        config = TrainConfig(**cfg)
    except TypeError:
        raise UserError(f"{path} holds settings this dlscience does not know; retrain it") from None
    ds = training_images(config, data_dir)
    return cfg, ds


def _network_run(out, command: str, settings: dict, model: Path, ds, overwrite: bool, outputs) -> RunFolder:
    """The run folder of a job on a trained network: its identity is every setting but the model's path and the
    data folder, plus digests of the model file and the training images."""
    identity = {k: v for k, v in settings.items() if k not in ("model", "data_dir")}
    return RunFolder(
        out,
        command,
        settings,
        identity=identity,
        inputs=_inputs(model, ds),
        overwrite=overwrite,
        outputs=outputs,
    )


def _inputs(model: Path, ds) -> dict:
    """Digests of a job's inputs: the network file and the training images it was trained on."""
    return {"model": digest_file(_model_file(model)), **ds.digests()}


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
    overwrite: bool = False,
) -> dict:
    """Calibrate the LS or ELS machine's patch size to the network at ``model``; writes ``schedule.json``
    (readable by ``els sample --schedule``) and ``calibration.png`` to ``out``. After every time step the
    trajectories go to ``calibration_checkpoint.pt``, so rerunning after an interruption continues. ``out`` is a
    :class:`~dlscience.runs.RunFolder` (command ``els calibrate``) whose identity is the machine, candidates,
    samples and seed, and the digests of the model file and its training images: a folder of another model or
    setting is refused unless ``overwrite``. Returns the JSON content.

    Raises UserError for a missing or damaged model (named), missing data, or such a folder."""
    if machine not in ("els", "ls"):
        raise InputValidationError(f"machine must be 'els' or 'ls', got {machine!r}")
    if not candidates or n_samples < 1:
        raise InputValidationError("calibrate needs at least one candidate patch size and one sample")
    for P in candidates:
        resolve_patch_size(P)  # odd positive integers only
    model = Path(model)
    cfg, ds = _training_data(model, data_dir)
    network = load_network(model)
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

    settings = {
        "model": str(model),
        "machine": machine,
        "candidates": list(candidates),
        "n_samples": n_samples,
    }
    settings.update(seed=seed, data_dir=data_dir)
    run = _network_run(out, "els calibrate", settings, model, ds, overwrite, CALIBRATE_OUTPUTS)
    with run:
        checkpoint = run.checkpoint_path("calibration_checkpoint.pt")
        try:
            result = calibrate(
                network,
                machine_for,
                candidates=candidates,
                n_samples=n_samples,
                seed=seed,
                progress=tick,
                checkpoint=checkpoint,
            )
        finally:
            bar.close()
        data = {"model": str(model), "machine": machine, "padding": cfg["padding"], **result.to_json()}
        run.write_json("schedule.json", data)
        run.save_figure("calibration.png", _calibration_figure(result))
        run.remove("calibration_checkpoint.pt")
        run.finish()
    return data


def run_compare(
    model: str | Path,
    out: str | Path,
    *,
    schedule: str,
    schedule_offset: int = 0,
    ls_schedule: str | None = None,
    machines: tuple[str, ...] = ("ELS", "LS", "IS"),
    n_seeds: int = 100,
    seed: int = 0,
    data_dir: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Sample the network and the ELS, LS and IS machines from the same seeds and labels; writes
    ``compare.json`` (per-seed r, r^2, R^2; medians and IQR; win rates), ``compare.png`` (rows network |
    ELS | LS | IS for the first seeds) and ``compare_samples.npz`` (every sample, seeds and labels).

    ``schedule_offset`` (0 or 1) shifts the schedule lookup by one grid point; 1 reproduces the reference
    code, whose step at t = i/20 uses the size calibrated at t + 0.05 (research note els.md Sec. 1).
    ``machines`` is any non-empty subset of ELS, LS, IS (IS needs no schedule). ``ls_schedule`` gives LS a
    patch-size schedule of its own (the paper calibrates each machine separately: ``els calibrate --machine
    ls``); without it LS uses ``schedule``.

    Every finished sample goes to ``compare_checkpoint.pt`` in ``out``; rerunning the same command after an
    interruption continues from it. ``out`` is a :class:`~dlscience.runs.RunFolder` (command ``els compare``)
    whose identity is the schedule, machines and seeds and the digests of the model file and its training
    images: a folder of another model or schedule is refused unless ``overwrite``. Returns the summary.
    Raises UserError for a missing or damaged model (named) or missing data. Raises InputValidationError for an offset other than 0/1 or an unknown or empty machine
    list."""
    if schedule_offset not in (0, 1):
        raise InputValidationError(f"schedule offset must be 0 or 1, got {schedule_offset}")
    machines = tuple(m.upper() for m in machines)
    unknown = sorted(set(machines) - {"ELS", "LS", "IS"})
    if unknown or not machines:
        raise InputValidationError(
            f"machines must be a non-empty subset of ELS, LS, IS; got {', '.join(machines) or 'none'}"
        )
    if n_seeds < 1:
        raise InputValidationError(f"--n-seeds must be >= 1, got {n_seeds}")
    model = Path(model)
    cfg, ds = _training_data(model, data_dir)
    network = load_network(model)
    sched = resolve_patch_size(int(schedule) if str(schedule).isdigit() else schedule)
    sched = PatchSchedule(sched.sizes, offset=schedule_offset, name=sched.name)
    ls_sched = sched
    if ls_schedule is not None:
        ls_sched = resolve_patch_size(int(ls_schedule) if str(ls_schedule).isdigit() else ls_schedule)
        ls_sched = PatchSchedule(ls_sched.sizes, offset=schedule_offset, name=ls_sched.name)
    kw = {"labels": ds.labels if network.conditional else None, "num_classes": network.num_classes}
    builders = {
        "ELS": lambda: ELSDenoiser(ds.images, sched, cfg["padding"], **kw),
        "LS": lambda: LocalDenoiser(ds.images, ls_sched, **kw),
        "IS": lambda: IdealDenoiser(ds.images, **kw),
    }
    machines = {name: builders[name]() for name in builders if name in machines}
    from tqdm.auto import tqdm

    bar = tqdm(total=n_seeds * (1 + len(machines)), disable=not progress, desc="compare", unit="sample")
    settings = {
        "model": str(model),
        "schedule": sched.to_json(),
        "machines": sorted(machines),
        "n_seeds": n_seeds,
        "seed": seed,
        "data_dir": data_dir,
    }
    if ls_schedule is not None:  # runs without one keep the fingerprint they had before --ls-schedule
        settings["ls_schedule"] = ls_sched.to_json()
    run = _network_run(out, "els compare", settings, model, ds, overwrite, COMPARE_OUTPUTS)
    with run:
        checkpoint = run.checkpoint_path("compare_checkpoint.pt")
        try:
            res = compare(
                network,
                machines,
                n_seeds=n_seeds,
                seed=seed,
                progress=lambda name, i: bar.update(1),
                checkpoint=checkpoint,
            )
        finally:
            bar.close()
        summary = {
            "model": str(model),
            "schedule": sched.to_json(),
            "ls_schedule": ls_sched.to_json() if "LS" in machines else None,
            "n_seeds": n_seeds,
            "summary": res.summary(),
            "per_seed": {
                "seeds": res.seeds,
                "labels": None if res.labels is None else res.labels.tolist(),
                "r": {k: v.tolist() for k, v in res.r.items()},
                "R2": {k: v.tolist() for k, v in res.R2.items()},
            },
        }
        run.write_json("compare.json", summary)
        run.save_figure("compare.png", _compare_figure(res, model=str(model), class_names=_class_names(ds)))
        run.write_npz(
            "compare_samples.npz",
            seeds=np.asarray(res.seeds),
            labels=np.asarray([] if res.labels is None else res.labels.numpy()),
            network=res.network.numpy(),
            **{name: x.numpy() for name, x in res.machines.items()},
        )
        run.remove("compare_checkpoint.pt")
        run.finish()
    return summary


def _class_names(ds):
    return list(getattr(ds, "class_names", None) or [])


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


def _compare_figure(res, n: int = 8, *, model: str = "", class_names=()):
    """Rows: the network, then each machine; columns: the first ``n`` seeds. Each column is titled with its
    seed (and class name for a class-conditional network), each machine panel with its r for that seed; the
    title names the model and the median r of each machine over all seeds."""
    import matplotlib.pyplot as plt

    from dlscience.plotting import to_display

    n = min(n, len(res.seeds))
    rows = [("network", res.network)] + list(res.machines.items())
    fig, axes = plt.subplots(len(rows), n, figsize=(1.3 * n + 0.9, 1.5 * len(rows) + 0.6), squeeze=False)
    for r, (name, imgs) in enumerate(rows):
        for i in range(n):
            ax = axes[r, i]
            img = to_display(imgs[i])
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if name == "network":
                title = f"seed {res.seeds[i]}"
                if res.labels is not None:
                    label = int(res.labels[i])
                    cls = class_names[label] if label < len(class_names) else str(label)
                    title += f"\n{f'class {cls}' if cls.isdigit() else cls}"
                ax.set_title(title, fontsize=7)
            else:
                ax.set_title(f"r = {float(res.r[name][i]):.2f}", fontsize=7)
            if i == 0:
                ax.set_ylabel(name, fontsize=8)
    medians = ", ".join(f"{name} {float(res.r[name].quantile(0.5)):.2f}" for name in res.machines)
    fig.suptitle(
        f"network vs machines, same seed per column ({model}; "
        f"{len(res.seeds)} seeds, median r: {medians or 'none'})",
        fontsize=8,
    )
    fig.tight_layout()
    return fig
