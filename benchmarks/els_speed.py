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

Prints a table and writes JSON (default ``results/benchmarks/els_speed.json``).
Run: ``python benchmarks/els_speed.py [--quick] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from dlscience.data import load_images
from dlscience.diffusion import ELSDenoiser, native
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="N = 1000 only (a smoke run)")
    parser.add_argument("--naive-pixels", type=int, default=6, help="pixels timed for the naive baseline")
    parser.add_argument("--no-torch", action="store_true", help="skip the matrix-multiply (torch) path")
    parser.add_argument("--out", default="results/benchmarks/els_speed.json", help="JSON output file")
    args = parser.parse_args()

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
    write_json(Path(args.out), out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
