"""Experiment (issue 3, not run in CI): does the training-free ELS machine predict trained networks seed by seed?

Kamb & Ganguli 2024, Tables 1-2 (research note els.md Sec. 3): for networks sampled with 20 steps the paper reports
median Pearson r on Fashion-MNIST (zero padding, class-conditional) of ELS 0.90 / LS 0.88 / IS 0.74 (ResNet) and
0.91 / 0.91 / 0.80 (UNet).

Stages, each resumable (a finished stage is skipped; training continues from its checkpoint):
    1. train a class-conditional, zero-padded ResNet (width 32, ReLU after the up-projection, sampled from a
       0.999 moving average of its weights) and UNet (16-32-64) on a seeded Fashion-MNIST subset
       (``--n-train``, default 10,000 images = 1,000 per class) for ``--resnet-steps`` / ``--unet-steps``
       steps (raising them continues training from the checkpoint);
    2. calibrate the ELS patch size to each network (``--calibration-samples`` trajectories), and LS's
       separately (``ARCH/calibration_ls/``), as the paper calibrates each machine;
    3. compare network vs ELS, LS and IS on ``--n-seeds`` seeds;
    4. write ``results/els_vs_networks/table.md``, ``summary.json`` (median r next to the paper's values) and
       ``schedules.png`` (calibrated patch sizes next to the paper's).
Each stage writes its own run folder: ``ARCH/`` (training), ``ARCH/calibration/`` and ``ARCH/compare/``
(folders written before run folders kept ``schedule.json`` and ``compare.json`` next to the model; they are
still read). A stage whose output exists is skipped: after training further, move ``schedule.json`` and
``compare.json`` away to recalibrate and recompare.

CPU sizes: the paper trains width-256 ResNets for 300 epochs on a GPU; here the ResNet trains for about 4
hours and the UNet for about 100 minutes on one core (run ``--archs resnet`` and ``--archs unet`` as two
processes with OMP_NUM_THREADS=1 to use 2 cores; training resumes, so it can be spread over several runs).
Calibrating on 4 trajectories takes about 12 minutes and comparing 50 seeds about 25 minutes (ELS 26 s per
seed) per network on 2 cores. The measured run: ``python experiments/els_vs_networks.py --n-seeds 50 --calibration-samples 4``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scipy.stats import spearmanr

from dlscience.diffusion.network_jobs import run_calibrate, run_compare
from dlscience.diffusion.patch_schedule import PRESETS as PATCH_PRESETS
from dlscience.diffusion.training import TrainConfig, train
from dlscience.results import write_json

PAPER_20_STEP = {
    "resnet": {"ELS": 0.90, "LS": 0.88, "IS": 0.74},
    "unet": {"ELS": 0.91, "LS": 0.91, "IS": 0.80},
}
# largest patch size the calibration tries by default
DEFAULT_MAX_CANDIDATE = {"resnet": 17, "unet": 25}


def _found(folder: Path, name: str) -> Path:
    """``name`` in its stage's run folder (``calibration/`` or ``compare/``), or next to the model where runs
    made before run folders left it."""
    stage = folder / ("calibration" if name == "schedule.json" else "compare") / name
    return stage if stage.exists() or not (folder / name).exists() else folder / name


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="results/els_vs_networks", help="output folder")
    parser.add_argument("--archs", default="resnet,unet", help="comma-separated architectures")
    parser.add_argument("--n-train", type=int, default=10000, help="training images (seeded subset)")
    parser.add_argument("--resnet-width", type=int, default=32, help="ResNet hidden channels")
    parser.add_argument(
        "--unet-width", type=int, default=16, help="UNet channels at the top scale (x1, x2, x4)"
    )
    parser.add_argument(
        "--resnet-up-projection",
        default="relu",
        choices=["relu", "linear"],
        help="ResNet up-projection: followed by a ReLU (default) or linear as in the reference code (kept in "
        "resnet_linear_up_5400steps)",
    )
    parser.add_argument(
        "--resnet-ema-decay",
        type=float,
        default=0.999,
        help="ResNet: sample an exponential moving average of the weights with this decay per step (0 = the "
        "last iterate; at lr 1e-3 the iterates' samples swing widely from one checkpoint to the next)",
    )
    parser.add_argument("--resnet-steps", type=int, default=18000, help="ResNet training steps")
    parser.add_argument("--unet-steps", type=int, default=14000, help="UNet training steps")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch size")
    parser.add_argument("--calibration-samples", type=int, default=10, help="trajectories for calibration")
    parser.add_argument(
        "--candidates",
        default=None,
        help="odd patch sizes tried by the calibration (default: 3-17 for the ResNet, whose receptive field "
        "is 17 x 17, and 3-25 for the UNet, as in the paper's UNet schedules)",
    )
    parser.add_argument("--n-seeds", type=int, default=100, help="seeds compared")
    parser.add_argument(
        "--stage",
        default="all",
        choices=["train", "calibrate", "compare", "all"],
        help="stop after this stage",
    )
    args = parser.parse_args()
    unknown = set(args.archs.split(",")) - set(PAPER_20_STEP)
    if unknown:
        parser.error(f"--archs: unknown {sorted(unknown)}; choose from resnet,unet")
    out = Path(args.out)
    for arch in args.archs.split(","):
        folder = out / arch
        cfg = TrainConfig(
            arch=arch,
            dataset="fashion-mnist",
            n_train=args.n_train,
            conditional=True,
            padding="zeros",
            preset="cpu",
            width=getattr(args, f"{arch}_width"),
            lr=args.lr,
            batch_size=args.batch_size,
            steps=getattr(args, f"{arch}_steps"),
            checkpoint_every=50,
            up_projection=args.resnet_up_projection if arch == "resnet" else "relu",
            ema_decay=args.resnet_ema_decay if arch == "resnet" else 0.0,
        )
        if (
            not (folder / "model.pt").exists()
            or json.loads((folder / "train.json").read_text())["steps"] < cfg.steps
        ):
            train(cfg, folder)
        if args.stage == "train":
            continue
        if not _found(folder, "schedule.json").exists():
            candidates = _candidates(args, arch)
            run_calibrate(
                folder, folder / "calibration", candidates=candidates, n_samples=args.calibration_samples
            )
        ls_schedule = folder / "calibration_ls" / "schedule.json"
        if not ls_schedule.exists():  # the paper calibrates LS's patch sizes separately from ELS's
            run_calibrate(
                folder,
                folder / "calibration_ls",
                machine="ls",
                candidates=_candidates(args, arch),
                n_samples=args.calibration_samples,
            )
        if args.stage == "calibrate":
            continue
        if not _found(folder, "compare.json").exists():
            schedule = str(_found(folder, "schedule.json"))
            run_compare(
                folder,
                folder / "compare",
                schedule=schedule,
                ls_schedule=str(ls_schedule),
                n_seeds=args.n_seeds,
            )
    # the table covers every network compared so far, also those of an earlier run with other --archs
    rows = {
        arch: json.loads(_found(out / arch, "compare.json").read_text())
        for arch in PAPER_20_STEP
        if _found(out / arch, "compare.json").exists()
    }
    if args.stage in ("train", "calibrate") or not rows:
        return
    lines = [
        "| network | machine | seeds | median r (ours) | IQR | median r (paper, 20-step) | beats IS |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for arch, data in rows.items():
        for name, row in data["summary"].items():
            r = row["r"]
            beats = f"{row['beats']['IS']:.0%}" if "IS" in row["beats"] else "-"
            lines.append(
                f"| {arch} | {name} | {data['n_seeds']} | {r['median']:.3f} | {r['q25']:.3f}-{r['q75']:.3f} | "
                f"{PAPER_20_STEP[arch][name]:.2f} | {beats} |"
            )
    schedules = {arch: json.loads(_found(out / arch, "schedule.json").read_text()) for arch in rows}
    lines += [
        "",
        "| network | calibrated P at t = 0.05 ... 1.00 | paper's schedule | Spearman(t, P) |",
        "|---|---|---|---:|",
    ]
    for arch, sched in schedules.items():
        rho = spearmanr(sched["times"], sched["sizes"]).statistic
        sched["spearman_t_P"] = rho
        paper = ",".join(map(str, PATCH_PRESETS[f"fashion-mnist-{arch}"]))
        lines.append(f"| {arch} | {','.join(map(str, sched['sizes']))} | {paper} | {rho:.2f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    write_json(
        out / "summary.json",
        {
            arch: {
                "n_seeds": data["n_seeds"],
                "summary": data["summary"],
                "paper_20_step": PAPER_20_STEP[arch],
                "schedule": schedules[arch]["sizes"],
                "spearman_t_P": schedules[arch]["spearman_t_P"],
            }
            for arch, data in rows.items()
        },
    )
    schedule_figure(schedules, out / "schedules.png")
    print("\n".join(lines))


def _candidates(args, arch: str) -> tuple[int, ...]:
    """The odd patch sizes the calibrations try: ``--candidates`` or 3 .. the architecture's default maximum."""
    if args.candidates:
        return tuple(int(p) for p in args.candidates.split(","))
    return tuple(range(3, DEFAULT_MAX_CANDIDATE[arch] + 1, 2))


def schedule_figure(schedules: dict, path: Path) -> None:
    """Calibrated patch-size schedules (median best P per time step) next to the paper's FMNIST schedules."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for i, (arch, sched) in enumerate(schedules.items()):
        color = f"C{i}"
        ax.plot(sched["times"], sched["sizes"], "o-", color=color, label=f"{arch}: calibrated here")
        paper = PATCH_PRESETS[f"fashion-mnist-{arch}"]
        ax.plot(sched["times"], paper, "--", color=color, alpha=0.6, label=f"{arch}: paper")
    ax.set_xlabel("t")
    ax.set_ylabel("patch size P")
    ax.set_title("ELS patch size calibrated to each network", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


if __name__ == "__main__":
    main()
