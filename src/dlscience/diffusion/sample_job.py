"""The ELS machine's main job: sample new images from a training set with an analytic machine.

``dlscience els sample`` (see :func:`run_sample_job`) runs the deterministic DDIM sampler of the paper with an
analytic denoiser (boundary-broken ELS by default) from seeded noise and writes, to one output folder:

* ``samples.png``   -- each sample, its nearest training image with the L2 distance (the samples are new, not
                       copies), and its provenance map: which training image each output pixel's final patch
                       came from (the patch mosaic of Kamb & Ganguli 2024, Theorem 4.1);
* ``samples.npz``   -- seeds, labels, the initial noise, outputs, nearest-neighbour indices and distances, and
                       the provenance (training image index, row and column per pixel);
* ``run.json``      -- settings, data source, timings per step (and each sample's share of its class batch),
                       summary numbers;
* ``checkpoint.pt`` -- the sampler state after every step; an interrupted run resumes from it;
* ``manifest.json`` -- the run folder's record (:class:`~dlscience.runs.RunFolder`).

Every output file is written atomically. Bad settings are rejected before anything is written.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from dlscience.data import load_images
from dlscience.diffusion.empirical import DEFAULT_MEMORY_LIMIT, EmpiricalDenoiser
from dlscience.diffusion.equivariant_local_score import ELSDenoiser
from dlscience.diffusion.ideal_score import IdealDenoiser
from dlscience.diffusion.local_score import LocalDenoiser
from dlscience.diffusion.patch_schedule import PRESETS, PatchSchedule, resolve_patch_size
from dlscience.diffusion.sampler import DDIMSampler
from dlscience.errors import InputValidationError, UserError
from dlscience.runs import RunFolder

__all__ = ["SampleConfig", "run_sample_job", "build_machine", "MACHINES", "OUTPUTS"]

OUTPUTS = ("checkpoint.pt", "samples.npz", "samples.png", "run.json")

MACHINES = ("els", "ls", "is")
_DEFAULT_SIZE = {"fashion-mnist": 32, "mnist": 32, "cifar10": None, "digits": None}


@dataclass(frozen=True)
class SampleConfig:
    """Settings of one sampling run (the CLI options of ``dlscience els sample``).

    Attributes
    ----------
    dataset : str
        "fashion-mnist", "mnist", "cifar10" or "digits".
    data_dir : str, optional
        Folder with the dataset files (see :func:`dlscience.data.load_images`).
    download : bool
        Download MNIST/Fashion-MNIST/CIFAR-10 with torchvision if missing.
    n_samples : int, >= 1
        Number of samples (seeds ``seed, seed + 1, ...``).
    labels : tuple of int, optional
        Class per sample (one value is repeated); default: sample i gets class i mod (number of classes).
    conditional : bool
        Class-conditional machine (dictionary restricted to the label's images), as in the paper.
    machine : {"els", "ls", "is"}
        ELS (boundary-broken for zero padding), LS or IS.
    padding : {"zeros", "circular"}
        Padding of the modelled network (ELS only).
    schedule : str, optional
        Patch-size preset name, JSON schedule file or odd integer; default ``<dataset>-resnet`` (3 for digits).
    schedule_offset : int
        1 reproduces the reference code's off-by-one schedule lookup.
    n_train : int, optional
        Seeded subset of the training set (default: the full training set).
    image_size : int, optional
        Resize to image_size x image_size (default 32 for MNIST/Fashion-MNIST, native otherwise).
    seed : int
        Base seed.
    n_steps, t_start : int, float
        DDIM grid (20 steps) and first evaluation time (0.95: 19 evaluations, as the paper's machine).
    precision : {"auto", "float32", "float64"}
        Logit precision (see :class:`~dlscience.diffusion.empirical.EmpiricalDenoiser`).
    memory_limit : int
        Working-memory bound in bytes (does not change results).
    device : str
        "cpu" (the compiled kernel), or "cuda[:N]": the matrix-multiply backend on that GPU (float32 logits
        where safe, results within ~1e-6 of the CPU kernel). Not part of the run's identity, like
        ``memory_limit``: a run may resume on another device.
    prune : {"off", "auto", "on"}
        Exact pruning of the interior dictionary (CPU kernel; see
        :class:`~dlscience.diffusion.empirical.EmpiricalDenoiser`); not part of the identity (results agree to
        ~1e-12).
    """

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    download: bool = False
    n_samples: int = 8
    labels: tuple[int, ...] | None = None
    conditional: bool = True
    machine: str = "els"
    padding: str = "zeros"
    schedule: str | None = None
    schedule_offset: int = 0
    n_train: int | None = None
    image_size: int | None = None
    seed: int = 0
    n_steps: int = 20
    t_start: float = 0.95
    precision: str = "auto"
    memory_limit: int = field(default=DEFAULT_MEMORY_LIMIT, compare=False)
    device: str = field(default="cpu", compare=False)
    prune: str = field(default="off", compare=False)

    def resolved(self) -> SampleConfig:
        """The config with dataset-dependent defaults filled in."""
        d = asdict(self)
        if d["image_size"] is None:
            d["image_size"] = _DEFAULT_SIZE.get(self.dataset)
        if d["schedule"] is None:
            preset = f"{self.dataset}-resnet"
            d["schedule"] = preset if preset in PRESETS else "3"
        return SampleConfig(**d)


def build_machine(
    config: SampleConfig, images: torch.Tensor, labels: torch.Tensor | None, num_classes: int | None
) -> EmpiricalDenoiser:
    """The analytic denoiser named by ``config`` over ``images`` (N, C, H, W).

    Raises InputValidationError for an unknown machine or padding, or a bad schedule.
    """
    common = dict(
        labels=labels,
        num_classes=num_classes,
        precision=config.precision,
        memory_limit=config.memory_limit,
        device=config.device,
    )
    if config.machine == "is":
        return IdealDenoiser(images, **common)
    schedule = config.schedule
    schedule = int(schedule) if isinstance(schedule, str) and schedule.isdigit() else schedule
    sched = resolve_patch_size(schedule)
    sched = PatchSchedule(sched.sizes, offset=config.schedule_offset, name=sched.name)
    if config.machine == "ls":
        return LocalDenoiser(images, sched, **common)
    if config.machine == "els":
        return ELSDenoiser(images, sched, config.padding, prune=config.prune, **common)
    raise InputValidationError(f"unknown machine {config.machine!r}; choose one of {MACHINES}")


def _validate(config: SampleConfig) -> None:
    if config.machine not in MACHINES:
        raise InputValidationError(f"unknown machine {config.machine!r}; choose one of {', '.join(MACHINES)}")
    if config.padding not in ("zeros", "circular"):
        raise InputValidationError(f"--padding must be 'zeros' or 'circular', got {config.padding!r}")
    if config.n_samples < 1:
        raise InputValidationError(f"--n-samples must be >= 1, got {config.n_samples}")
    if config.labels is not None and len(config.labels) not in (1, config.n_samples):
        raise InputValidationError(
            f"--labels has {len(config.labels)} values; give one, or one per sample ({config.n_samples})"
        )
    if config.labels is not None and not config.conditional:
        raise InputValidationError("--labels was given with --unconditional; drop one of them")
    if config.schedule_offset not in (0, 1):
        raise InputValidationError("--schedule-offset must be 0 or 1")
    for option, value in (("--n-train", config.n_train), ("--image-size", config.image_size)):
        if value is not None and value < 1:
            raise InputValidationError(f"{option} must be a positive integer, got {value}")
    if config.n_steps < 1:
        raise InputValidationError(f"--steps must be a positive integer, got {config.n_steps}")
    i = config.t_start * config.n_steps
    if not 0 < config.t_start <= 1 or abs(i - round(i)) > 1e-6:
        raise InputValidationError(
            f"--t-start {config.t_start} must be a grid time i/{config.n_steps} in (0, 1], e.g. "
            f"{(config.n_steps - 1) / config.n_steps:g} (the paper's machine) or 1"
        )


def _identity(config: SampleConfig) -> dict:
    """The settings that determine the outputs (the data folder's location and the memory bound do not)."""
    d = asdict(config)
    for key in ("memory_limit", "data_dir", "download", "device", "prune"):
        d.pop(key)
    return d


def run_sample_job(
    config: SampleConfig, out: str | Path, *, progress: bool = True, overwrite: bool = False
) -> dict:
    """Sample ``config.n_samples`` images with an analytic machine and write the outputs to ``out``.

    Parameters
    ----------
    config : SampleConfig
        Run settings.
    out : str or Path
        The run folder (:class:`~dlscience.runs.RunFolder`, command ``els sample``; created). Its identity is
        the settings and the digests of the training images: a folder of the same identity resumes from its
        checkpoint; one of another run, or written before run manifests, is refused without ``overwrite``.
    progress : bool
        Show a progress bar (one tick per sampler step).
    overwrite : bool
        Replace a run of other settings in ``out`` (removing every file it wrote), or a damaged checkpoint of
        this one, instead of refusing.

    Returns
    -------
    dict
        The content of ``run.json``.

    Raises
    ------
    UserError
        Bad settings, a missing dataset, ``out`` holding a different run (without ``overwrite``), or a
        damaged checkpoint (named); nothing is written then.
    RunInterrupted
        On SIGINT/SIGTERM; the message says whether progress was saved.
    """
    config = config.resolved()
    _validate(config)
    t_load = time.perf_counter()
    ds = load_images(
        config.dataset,
        data_dir=config.data_dir,
        download=config.download,
        size=config.image_size,
        n=config.n_train,
        seed=config.seed,
    )
    load_seconds = time.perf_counter() - t_load
    num_classes = len(ds.class_names)
    labels = None
    if config.conditional:
        labels = list(config.labels) if config.labels else [i % num_classes for i in range(config.n_samples)]
        labels = labels * config.n_samples if len(labels) == 1 else labels
        bad = [c for c in labels if not 0 <= c < num_classes]
        if bad:
            raise InputValidationError(
                f"--labels {bad} outside [0, {num_classes}) for {config.dataset} "
                f"({', '.join(f'{i}={n}' for i, n in enumerate(ds.class_names))})"
            )
        counts = torch.bincount(ds.labels, minlength=num_classes)
        empty = sorted({c for c in labels if counts[c] == 0})
        if empty:
            raise InputValidationError(
                f"the training set ({len(ds)} images) has no images of class {empty}; "
                "use a larger --n-train or other --labels"
            )
    machine = build_machine(
        config,
        ds.images,
        ds.labels if config.conditional else None,
        num_classes if config.conditional else None,
    )
    sampler = DDIMSampler(config.n_steps, config.t_start)
    C, H, W = machine.image_shape
    seeds = [config.seed + i for i in range(config.n_samples)]
    noise = torch.stack([torch.randn(C, H, W, generator=torch.Generator().manual_seed(s)) for s in seeds])
    run = RunFolder(
        out,
        "els sample",
        asdict(config),
        identity=_identity(config),
        inputs=ds.digests(),
        overwrite=overwrite,
        outputs=OUTPUTS,
        legacy=OUTPUTS,
    )
    with run:
        try:
            state = run.load_checkpoint("checkpoint.pt")
        except UserError:
            if not overwrite:
                raise
            run.remove("checkpoint.pt")  # --overwrite: a damaged checkpoint of these settings starts afresh
            state = None
        if state is None or not isinstance(state, dict) or "groups" not in state:
            state = {"fingerprint": run.fingerprint, "groups": {}}
        summary = _sample_in(run, config, ds, machine, sampler, noise, seeds, labels, state, progress)
        summary["timings"]["load_seconds"] = load_seconds
        run.write_json("run.json", summary)
        run.finish()
    return summary


def _sample_in(run, config, ds, machine, sampler, noise, seeds, labels, state, progress) -> dict:
    """The body of :func:`run_sample_job` inside its open run folder: sample (checkpointing every step),
    then write samples.npz and samples.png; returns the summary (``run.json``, written by the caller)."""
    times = sampler.timesteps()
    C, H, W = machine.image_shape
    # samples with the same label share one batch (and one pass over their class dictionary)
    group_keys = sorted(set(labels)) if labels is not None else [-1]
    members = {
        g: [i for i in range(config.n_samples) if (labels[i] if labels else -1) == g] for g in group_keys
    }
    total = len(group_keys) * len(times)
    done_steps = sum(len(state["groups"].get(str(g), {}).get("step_seconds", [])) for g in group_keys)
    bar = _progress(total, done_steps, progress)
    t_run = time.perf_counter()
    try:
        for g in group_keys:
            gs = state["groups"].setdefault(str(g), {"step_seconds": [], "x": None})
            if gs.get("final") is not None:
                continue
            idx = members[g]
            x = noise[idx] if gs["x"] is None else gs["x"]
            y = None if labels is None else torch.tensor([labels[i] for i in idx])
            for i in range(len(gs["step_seconds"]), len(times)):
                t = times[i]
                bar.set_postfix_str(f"{_label_name(ds, g)} t={t:.2f} P={machine.patch_size_at(t) or 'image'}")
                t0 = time.perf_counter()
                if i + 1 < len(times):
                    x0_hat = machine.denoise(x, t, y)
                    x = sampler.step(x, t, times[i + 1], x0_hat)
                else:  # last evaluation: also record which training patch each pixel came from
                    match = machine.explain(x, t, y)
                    x = match.x0_hat.float()
                    gs["final"] = {
                        "x0": x,
                        "image_index": match.image_index,
                        "row": match.row,
                        "col": match.col,
                        "weight": match.weight.float(),
                    }
                gs["step_seconds"].append(time.perf_counter() - t0)
                gs["x"] = x
                run.save_checkpoint(state, "checkpoint.pt")
                bar.update(1)
    finally:
        bar.close()
    run_seconds = time.perf_counter() - t_run

    # gather results in sample order
    B = config.n_samples
    outputs = torch.empty(B, C, H, W)
    prov = {k: torch.empty(B, H, W, dtype=torch.int64) for k in ("image_index", "row", "col")}
    weight = torch.empty(B, H, W)
    sample_seconds = [0.0] * B
    for g in group_keys:
        fin = state["groups"][str(g)]["final"]
        for j, i in enumerate(members[g]):
            outputs[i] = fin["x0"][j]
            for k in prov:
                prov[k][i] = fin[k][j]
            weight[i] = fin["weight"][j]
            sample_seconds[i] = sum(state["groups"][str(g)]["step_seconds"]) / len(members[g])

    flat_train = ds.images.flatten(1)
    dists = torch.cdist(outputs.flatten(1).double(), flat_train.double())
    nn_dist, nn_index = dists.min(dim=1)
    # for scale: typical distance between a training image and its nearest other training image
    ref_ids = torch.arange(0, len(ds), max(1, len(ds) // 200))[:200]
    ref = torch.cdist(flat_train[ref_ids].double(), flat_train.double())
    ref[torch.arange(len(ref_ids)), ref_ids] = float("inf")
    train_nn = ref.min(dim=1).values
    # background pixels (the dataset's minimum value: the uniform patches there are identical across thousands
    # of images, so their arg-max source is an arbitrary tie) are left out of the provenance counts and map
    background = (outputs <= float(ds.images.min()) + 1e-3).all(dim=1)
    n_sources = [int(torch.unique(prov["image_index"][i][~background[i]]).numel()) for i in range(B)]

    run.write_npz(
        "samples.npz",
        seeds=np.array(seeds),
        labels=np.array(labels if labels else [-1] * B),
        noise=noise,
        outputs=outputs,
        nearest_index=nn_index,
        nearest_distance=nn_dist,
        source_image=prov["image_index"],
        source_row=prov["row"],
        source_col=prov["col"],
        source_weight=weight,
    )
    summary = {
        "command": "dlscience els sample",
        "fingerprint": run.fingerprint,
        "settings": {k: v for k, v in asdict(config).items()},
        "schedule": getattr(machine, "schedule", None) and machine.schedule.to_json(),
        "data": {
            "name": ds.name,
            "source": ds.source,
            "n_train": len(ds),
            "image_shape": [C, H, W],
            "class_names": list(ds.class_names),
        },
        "evaluation_times": times,
        "samples": [
            {
                "seed": seeds[i],
                "label": labels[i] if labels else None,
                "class_name": ds.class_names[labels[i]] if labels else None,
                "nearest_train_index": int(nn_index[i]),
                "nearest_train_distance": float(nn_dist[i]),
                "distinct_source_images": n_sources[i],
                "seconds_share": sample_seconds[i],  # its batch's step time / samples in the batch
            }
            for i in range(B)
        ],
        "train_nearest_neighbour_distance_median": float(train_nn.median()),
        "timings": {
            "load_seconds": None,
            "wall_seconds_this_invocation": run_seconds,  # steps, checkpoints and progress of this run
            # machine time over all invocations (a resumed run adds up its parts)
            "sampling_seconds_total": sum(sum(s["step_seconds"]) for s in state["groups"].values()),
            "step_seconds_by_group": {g: s["step_seconds"] for g, s in state["groups"].items()},
        },
        "environment": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
    }
    run.save_figure(
        "samples.png",
        _figure(ds, config, outputs, nn_index, nn_dist, prov, labels, n_sources, background),
    )
    return summary


def _provenance_image(prov, i, background):
    """Colour each pixel by (source image, offset): pixels copied from the same place of the same training
    image share a colour, so the tiles of the mosaic show; background pixels are black."""
    from dlscience.plotting import provenance_colors

    img = prov["image_index"][i]
    H, W = img.shape
    dy = prov["row"][i] - torch.arange(H).view(-1, 1)
    dx = prov["col"][i] - torch.arange(W).view(1, -1)
    key = (img * (4 * H) + dy + 2 * H) * (4 * W) + dx + 2 * W
    rgb = provenance_colors(key.numpy())
    rgb[background.numpy()] = 0.0
    return rgb


def _label_name(ds, g) -> str:
    return "unconditional" if g == -1 else ds.class_names[g]


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        disable=not enabled,
        unit="step",
        desc="els sample",
        dynamic_ncols=True,
    )


def _figure(ds, config, outputs, nn_index, nn_dist, prov, labels, n_sources, background):
    import matplotlib.pyplot as plt

    from dlscience.plotting import to_display

    B = outputs.shape[0]
    fig, axes = plt.subplots(3, B, figsize=(1.6 * B + 0.6, 5.6), squeeze=False)
    row_titles = ["sample", "nearest training\nimage", "provenance\n(patch mosaic)"]
    for i in range(B):
        name = ds.class_names[labels[i]] if labels else f"seed {config.seed + i}"
        panels = [
            (to_display(outputs[i]), f"{name}\nseed {config.seed + i}"),
            (to_display(ds.images[int(nn_index[i])]), f"L2 = {float(nn_dist[i]):.2f}"),
            (_provenance_image(prov, i, background[i]), f"{n_sources[i]} source images"),
        ]
        for r, (img, title) in enumerate(panels):
            ax = axes[r, i]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(row_titles[r], fontsize=8)
    machine = {
        "els": "ELS" if config.padding == "circular" else "boundary-broken ELS",
        "ls": "LS",
        "is": "IS",
    }[config.machine]
    fig.suptitle(
        f"{machine} samples, {ds.name} ({len(ds)} training images"
        f"{', class-conditional' if labels else ''}; schedule {config.schedule})",
        fontsize=9,
    )
    fig.tight_layout()
    return fig
