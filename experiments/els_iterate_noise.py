"""Diagnostic (issue 3, not run in CI): how far does a network's agreement with a machine move between checkpoints?

Watches a training folder while ``dlscience diffusion train`` runs in it (started with ``--ema-decay``). Every
``--every`` seconds it reads ``checkpoint.pt``, samples the last iterate and the weight average from the seeds
and labels of an earlier ``els compare`` run, and correlates them with that run's stored machine samples
(``compare_samples.npz``; a machine's samples depend on its schedule and training set, not on the network, so
they need no resampling). Each row is appended to ``OUT/iterates.json``; ``OUT/iterates.png`` plots median
Pearson r against the training step. It stops when no training process writes the folder any more (or at
``--until-step``).

Example (the measured run, beside ``dlscience diffusion train ... --ema-decay 0.999 --steps 18000`` extending
the 12,800-step ResNet in a folder later renamed ``results/els_vs_networks/resnet``)::

    python experiments/els_iterate_noise.py --train-dir runs/resnet \\
        --reference results/els_vs_networks/resnet_12600steps/compare_samples.npz \\
        --out results/els_vs_networks/iterates
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from dlscience.diffusion.comparison import compare, pearson_r
from dlscience.diffusion.training import load_network
from dlscience.results import load_torch, save_figure, write_json


def evaluate(train_dir: Path, reference: dict, *, machine: str = "ELS") -> list[dict]:
    """Median r (and quartiles) of the last iterate and of the weight average in ``train_dir/checkpoint.pt``
    against ``reference[machine]`` (N, C, H, W), on the reference's seeds; one dict per weight set."""
    ckpt = load_torch(train_dir / "checkpoint.pt")
    network = load_network(train_dir)
    weights = {"iterate": ckpt["model"]}
    if ckpt.get("averaged") is not None:
        weights["average"] = {
            k[len("module.") :]: v for k, v in ckpt["averaged"].items() if k != "n_averaged"
        }
    seeds = reference["seeds"]
    rows = []
    for name, state_dict in weights.items():
        network.model.load_state_dict(state_dict)
        res = compare(network, {}, n_seeds=len(seeds), seed=int(seeds[0]))
        r = pearson_r(res.network, torch.from_numpy(reference[machine])).numpy()
        x = res.network.numpy()
        rows.append(
            {
                "step": ckpt["state"]["step"],
                "weights": name,
                "median_r": float(np.median(r)),
                "q25": float(np.quantile(r, 0.25)),
                "q75": float(np.quantile(r, 0.75)),
                "fraction_above_1": float((x > 1).mean()),
            }
        )
    return rows


def figure(rows: list[dict], path: Path, machine: str) -> None:
    """Median r against training step, one line per weight set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for name, style in (("iterate", "o-"), ("average", "s-")):
        pts = sorted((r["step"], r["median_r"]) for r in rows if r["weights"] == name)
        if pts:
            ax.plot(*zip(*pts, strict=True), style, label=f"{name} weights", ms=4)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"median r (network vs {machine})")
    ax.set_title(f"each checkpoint's samples vs the same {machine} samples", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(path, fig)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train-dir", required=True, help="folder of a running `dlscience diffusion train`")
    parser.add_argument("--reference", required=True, help="compare_samples.npz of an earlier `els compare`")
    parser.add_argument("--machine", default="ELS", help="machine samples to correlate with (ELS, LS or IS)")
    parser.add_argument("--out", default="results/els_vs_networks/iterates", help="output folder")
    parser.add_argument("--every", type=float, default=240, help="seconds between evaluations")
    parser.add_argument("--until-step", type=int, default=None, help="stop after evaluating this step")
    args = parser.parse_args()
    train_dir, out = Path(args.train_dir), Path(args.out)
    if not (train_dir / "checkpoint.pt").exists():
        parser.error(f"no checkpoint.pt in {train_dir}; start `dlscience diffusion train --out {train_dir}`")
    with np.load(args.reference) as f:
        reference = {k: f[k] for k in f.files}
    if args.machine not in reference:
        parser.error(f"{args.reference} holds no {args.machine} samples (it has {sorted(reference)})")
    table = out / "iterates.json"
    rows = json.loads(table.read_text())["rows"] if table.exists() else []
    last_step = None
    while True:
        new = evaluate(train_dir, reference, machine=args.machine)
        step = new[0]["step"]
        if step != last_step:
            rows += new
            for r in new:
                print(f"step {r['step']:>6} {r['weights']:>8}: median r {r['median_r']:.3f}", flush=True)
            write_json(table, {"reference": args.reference, "machine": args.machine, "rows": rows})
            figure(rows, out / "iterates.png", args.machine)
        summary = train_dir / "train.json"
        if summary.exists() and json.loads(summary.read_text())["steps"] == step:
            break  # training finished and its last checkpoint is evaluated
        if args.until_step is not None and step >= args.until_step:
            break
        last_step = step
        time.sleep(args.every)


if __name__ == "__main__":
    main()
