"""Speed of one ELS denoiser call against a naive dense implementation, in the same run.

Setting (issue #2): one boundary-broken ELS call (zero padding, unconditional, so the dictionary holds all
N training images) for 8 seeds, Fashion-MNIST at 32x32, N in {1000, 6000}, P in {3, 15}, t = 0.5.

* project path: :class:`dlscience.diffusion.ELSDenoiser` with its default backend (the compiled summed-area
  kernel, float64); timed twice: the first call lays out and caches the training images, the second reuses
  them (as consecutive sampler steps do).
* matrix-multiply path: the same machine with ``backend="torch"`` (GEMM cross term, streamed log-sum-exp,
  exact merging of identical patches, float32 logits), the fallback without a C compiler.
* naive: :func:`dlscience.diffusion.reference.reference_els` (per pixel: list the dictionary, broadcast the
  full squared distances, dense float64 softmax). It is far too slow for every pixel, so it is timed on a
  sample of pixels (spread over interior, edges and corners in proportion) and its pixel-patch pair rate is
  extrapolated to the full call. Its outputs on those pixels are compared with the fast path's.

Main-job workload (issue 22, ``--main-job``): the sampler trajectory of the main job (``dlscience els sample``:
boundary-broken ELS, class-conditional, Fashion-MNIST ResNet schedule, 19 steps from t = 0.95) for
``--samples`` samples (seeds 0.., classes 0..) over ``--n-per-class`` images of each class. At every t the
same state is denoised by the unpruned kernel and by the exactly pruned one (``prune="on"``), in the same run:
the JSON records both times and their ratio, the max abs difference of the outputs, and the fractions of
pixel-patch pairs (interior pixels) whose bound was evaluated and whose exact distance was computed.

Prints tables and writes JSON (default ``results/benchmarks/els_speed.json``; ``--main-job-only`` keeps the
file's other rows and replaces its ``main_job`` entry).
Run: ``python benchmarks/els_speed.py [--quick] [--main-job] [--main-job-only] [--out FILE]``.
GPU (matrix-multiply path): ``time dlscience els sample --dataset fashion-mnist --device cuda --out runs/gpu``.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from dlscience.data import load_images
from dlscience.diffusion import DDIMSampler, ELSDenoiser, native
from dlscience.diffusion.reference import dictionary_positions, reference_els
from dlscience.results import write_json


def pairs_per_call(H: int, W: int, P: int, n_images: int, batch: int) -> int:
    """Pixel-patch pairs of one boundary-broken ELS call: batch * sum over pixels of the dictionary size."""
    sizes = [len(dictionary_positions(i, j, H, W, P, "zeros")) for i in range(H) for j in range(W)]
    return batch * n_images * sum(sizes)


def sample_pixels(H: int, W: int, P: int, k: int, seed: int = 0) -> list[tuple[int, int]]:
    """k pixels drawn uniformly (seeded) from the image."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(H * W, generator=g)[:k]
    return [(int(i) // W, int(i) % W) for i in idx]


def main_job(samples: int, n_per_class: int) -> dict:
    """Pruned vs unpruned kernel at every step of the main job's trajectory (see the module docstring).

    Returns the JSON entry: settings and, per sample and step, t, P, both times, their ratio, the max abs
    difference, and the bound / exact fractions of interior pairs.
    """
    ds = load_images("fashion-mnist", size=32)
    sampler = DDIMSampler(20, 0.95)
    times = sampler.timesteps()
    rows = []
    print(f"main job: {samples} sample(s) x {len(times)} steps, {n_per_class} images per class")
    print(
        f"{'class':>5} {'t':>5} {'P':>3} {'off s':>7} {'on s':>7} {'off/on':>7} {'bound':>7} {'exact':>7} {'|diff|':>8}"
    )
    for i in range(samples):
        label = i % 10
        imgs = ds.images[ds.labels == label][:n_per_class]
        off = ELSDenoiser(imgs, "fashion-mnist-resnet", "zeros", prune="off")
        on = ELSDenoiser(imgs, "fashion-mnist-resnet", "zeros", prune="on")
        x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(i))
        for k, t in enumerate(times):
            P = off.patch_size_at(t)
            t0 = time.perf_counter()
            x0_off = off.denoise(x.double(), t)  # float64 out: differences below float32 show
            s_off = time.perf_counter() - t0
            t0 = time.perf_counter()
            x0_on = on.denoise(x.double(), t)
            s_on = time.perf_counter() - t0
            rec = on.prune_log[-1] if on.prune_log else {}
            diff = float((x0_on.double() - x0_off.double()).abs().max())
            row = {
                "sample": i,
                "label": label,
                "t": t,
                "patch_size": P,
                "unpruned_s": s_off,
                "pruned_s": s_on,
                "unpruned_over_pruned": s_off / s_on,
                "bound_fraction": rec.get("bound_fraction"),
                "exact_fraction": rec.get("exact_fraction"),
                "max_abs_diff": diff,
            }
            rows.append(row)
            print(
                f"{label:>5} {t:>5.2f} {P:>3} {s_off:>7.2f} {s_on:>7.2f} {s_off / s_on:>7.2f} "
                f"{row['bound_fraction'] or float('nan'):>7.3f} {row['exact_fraction'] or float('nan'):>7.3f} "
                f"{diff:>8.1e}",
                flush=True,
            )
            x = sampler.step(x, t, times[k + 1], x0_off.float()) if k + 1 < len(times) else x0_off.float()
    return {
        "description": "main-job trajectory (boundary-broken ELS, class-conditional, fashion-mnist-resnet schedule, "
        "19 steps from t=0.95); at each t the unpruned and the exactly pruned kernels denoise the same state; "
        "the pruned dictionary (sorted projections) is built on the first call of each patch size and reused, "
        "its build time is included in that call. Fractions are of interior pixel-patch pairs.",
        "samples": samples,
        "n_per_class": n_per_class,
        "rows": rows,
        "total_unpruned_s": sum(r["unpruned_s"] for r in rows),
        "total_pruned_s": sum(r["pruned_s"] for r in rows),
        "max_abs_diff": max(r["max_abs_diff"] for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="N = 1000 only (a smoke run)")
    parser.add_argument("--naive-pixels", type=int, default=6, help="pixels timed for the naive baseline")
    parser.add_argument("--no-torch", action="store_true", help="skip the matrix-multiply (torch) path")
    parser.add_argument("--out", default="results/benchmarks/els_speed.json", help="JSON output file")
    parser.add_argument("--main-job", action="store_true", help="also time the main job's trajectory")
    parser.add_argument("--main-job-only", action="store_true", help="only the main job (keep other rows)")
    parser.add_argument("--samples", type=int, default=1, help="main job: samples (classes 0, 1, ...)")
    parser.add_argument("--n-per-class", type=int, default=1000, help="main job: training images per class")
    args = parser.parse_args()
    if args.main_job_only:
        import json

        path = Path(args.out)
        out = json.loads(path.read_text()) if path.exists() else {"benchmark": "els_speed"}
        out["main_job"] = main_job(args.samples, args.n_per_class)
        out["main_job"]["load_average"] = _load()
        write_json(path, out)
        print(f"wrote {args.out}")
        return

    t, batch = 0.5, 8
    sizes_n = [1000] if args.quick else [1000, 6000]
    full = load_images("fashion-mnist", size=32)
    x = torch.stack(
        [torch.randn(1, 32, 32, generator=torch.Generator().manual_seed(s)) for s in range(batch)]
    )
    rows = []
    header = (
        f"{'N':>6} {'P':>3} {'pairs':>10} {'first s':>8} {'cached s':>9} {'Mpair/s':>9} {'torch s':>8} "
        f"{'naive Mpair/s':>14} {'naive s (est)':>14} {'vs naive':>9} {'vs torch':>9} {'max |diff|':>11}"
    )
    print(header)
    print("-" * len(header))
    for n in sizes_n:
        images = full.images[torch.randperm(len(full), generator=torch.Generator().manual_seed(0))[:n]]
        for P in (3, 15):
            machine = ELSDenoiser(images, P, "zeros")
            t0 = time.perf_counter()
            machine.denoise(x, t)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            fast_out = machine.denoise(x, t)
            cached = time.perf_counter() - t0
            pairs = pairs_per_call(32, 32, P, n, batch)
            torch_s = float("nan")
            if not args.no_torch:
                gemm = ELSDenoiser(images, P, "zeros", backend="torch")
                gemm.denoise(x, t)  # builds and caches the dictionary
                t0 = time.perf_counter()
                torch_out = gemm.denoise(x, t)
                torch_s = time.perf_counter() - t0
                assert (torch_out - fast_out).abs().max() < 1e-4

            pixels = sample_pixels(32, 32, P, args.naive_pixels)
            naive_pairs = (
                batch * n * sum(len(dictionary_positions(i, j, 32, 32, P, "zeros")) for i, j in pixels)
            )
            t0 = time.perf_counter()
            ref = reference_els(images, x, t, P, "zeros", pixels=pixels)
            naive_s = time.perf_counter() - t0
            naive_rate = naive_pairs / naive_s
            diff = max(
                abs(float(fast_out[:, :, i, j].double().sub(ref[:, :, i, j]).abs().max())) for i, j in pixels
            )
            row = {
                "n_train": n,
                "patch_size": P,
                "batch": batch,
                "t": t,
                "pairs": pairs,
                "fast_first_call_s": first,
                "fast_cached_call_s": cached,
                "fast_pairs_per_s": pairs / cached,
                "torch_cached_call_s": torch_s,
                "speedup_vs_torch": torch_s / cached,
                "naive_pairs_timed": naive_pairs,
                "naive_s_timed": naive_s,
                "naive_pairs_per_s": naive_rate,
                "naive_full_call_s_estimated": pairs / naive_rate,
                "speedup_cached": (pairs / naive_rate) / cached,
                "speedup_first_call": (pairs / naive_rate) / first,
                "max_abs_diff_on_timed_pixels": diff,
            }
            rows.append(row)
            print(
                f"{n:>6} {P:>3} {pairs:>10.2e} {first:>8.2f} {cached:>9.2f} {pairs / cached / 1e6:>9.0f} "
                f"{torch_s:>8.1f} {naive_rate / 1e6:>14.2f} {pairs / naive_rate:>14.0f} "
                f"{row['speedup_cached']:>8.0f}x {torch_s / cached:>8.1f}x {diff:>11.1e}",
                flush=True,
            )
    out = {
        "benchmark": "els_speed",
        "description": "one boundary-broken ELS call, 8 seeds, Fashion-MNIST 32x32, t=0.5, unconditional (N images "
        "in the dictionary); project path = compiled kernel; torch = matrix-multiply path; naive = dense float64 "
        "reference timed on sampled pixels and extrapolated by its pair rate",
        "native_isa": native.isa(),
        "environment": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "processor": platform.processor(),
        },
        "rows": rows,
    }
    if args.main_job:
        out["main_job"] = main_job(args.samples, args.n_per_class)
        out["main_job"]["load_average"] = _load()
    write_json(Path(args.out), out)
    print(f"wrote {args.out}")


def _load() -> list[float]:
    """1, 5 and 15 minute load averages (the machine is shared: timings are noisy, ratios less so)."""
    import os

    return list(os.getloadavg())


if __name__ == "__main__":
    main()
