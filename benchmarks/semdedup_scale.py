"""SemDeDup at scale on synthetic embeddings with planted near-duplicates (issue #4).

Data (d = 384, written to a ``.npy`` that the pipeline memory-maps): N0 background vectors around 1,000
random directions (cosine about 0.64 to their direction, 0.4 between neighbours, about 0 otherwise), plus
near-copies of the first N - N0 = N/10 of them at cosine 0.995 to their original. At eps = 0.01 (remove when
cosine > 0.99) every planted pair should lose one member and nothing else should go.

Per N: the two stages of :func:`dlscience.dedup.run_semdedup` (cluster = k-means on a 256-per-centroid
sample + assignment; dedup = within-cluster maxima on a local Dask cluster + the output table), each with wall
time and peak memory (anonymous resident memory of this process and its Dask workers, sampled every 0.1 s,
so the memory-mapped embeddings themselves are not counted); recall of the planted pairs (one member removed)
and precision (removed items that belong to a planted pair).

Baseline in the same run: brute-force all-pairs (k = 1: every item against every earlier item, in Gram
blocks) on a 50,000-item subset with 5,000 planted pairs, against SemDeDup with k = sqrt(N) on that subset:
time ratio and the share of brute-force duplicate pairs that SemDeDup also resolves (removes one of the two).

Prints a table and writes JSON (default ``results/benchmarks/semdedup_scale.json``).
Run: ``python benchmarks/semdedup_scale.py [--sizes 100000,1000000] [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq

from dlscience.dedup import SemDeDupConfig, open_embeddings, run_semdedup, semdedup
from dlscience.results import write_json

D = 384
PLANTED_COS = 0.995
EPS = 0.01


def make_embeddings(path: Path, n: int, seed: int = 0, chunk: int = 100_000) -> int:
    """Write n x 384 float32 rows to ``path``; returns N0 (rows >= N0 copy rows row - N0 at cosine 0.995)."""
    rng = np.random.default_rng(seed)
    n_dup = n // 10
    n0 = n - n_dup
    centers = rng.normal(size=(1000, D)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, D))
    for a in range(0, n0, chunk):
        b = min(n0, a + chunk)
        x = centers[rng.integers(0, 1000, b - a)] + 1.2 * rng.normal(size=(b - a, D)).astype(
            np.float32
        ) / np.sqrt(D)
        out[a:b] = x / np.linalg.norm(x, axis=1, keepdims=True)
    t = np.sqrt(1 / PLANTED_COS**2 - 1)
    for a in range(0, n_dup, chunk):
        b = min(n_dup, a + chunk)
        orig = np.asarray(out[a:b])
        h = rng.normal(size=orig.shape).astype(np.float32)
        h -= (h * orig).sum(1, keepdims=True) * orig  # orthogonal to the original
        h /= np.linalg.norm(h, axis=1, keepdims=True)
        out[n0 + a : n0 + b] = orig + t * h
    out.flush()
    del out
    return n0


class PeakMemory:
    """Peak anonymous resident memory (bytes) of this process and its children, sampled in a thread."""

    def __init__(self, interval: float = 0.1):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    @staticmethod
    def _anon(p: psutil.Process) -> int:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            total = self._anon(me) + sum(self._anon(c) for c in me.children(recursive=True))
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def planted_scores(table, n0: int) -> dict:
    """Recall (planted pairs with a member removed), precision (removed rows in a planted pair), and the share
    of found pairs whose removal names the partner as max_id."""
    n = table.num_rows
    ids = table.column("id").to_numpy()
    keep = np.empty(n, bool)
    keep[ids] = table.column(f"keep_{EPS:g}").to_numpy(zero_copy_only=False)
    max_id = np.full(n, -1)
    mi = table.column("max_id").to_numpy(zero_copy_only=False)
    max_id[ids] = np.where(np.isnan(mi.astype(float)), -1, mi).astype(np.int64)
    n_dup = n - n0
    orig, dup = np.arange(n_dup), np.arange(n0, n)
    found = ~keep[orig] | ~keep[dup]
    in_pair = np.zeros(n, bool)
    in_pair[orig] = in_pair[dup] = True
    removed = ~keep
    partner = (max_id[dup] == orig) | (max_id[orig] == dup)
    return {
        "planted_pairs": int(n_dup),
        "recall": float(found.mean()),
        "precision": float(in_pair[removed].mean()) if removed.any() else 1.0,
        "removed": int(removed.sum()),
        "partner_named": float(partner[found].mean()) if found.any() else 1.0,
    }


def run_size(n: int, workdir: Path, workers: int | None) -> dict:
    path = workdir / f"emb_{n}.npy"
    t0 = time.perf_counter()
    n0 = make_embeddings(path, n)
    gen_s = time.perf_counter() - t0
    emb = open_embeddings(path)
    cfg = SemDeDupConfig(n_clusters=None, eps=(EPS,), seed=0)
    out = workdir / f"out_{n}"
    shutil.rmtree(out, ignore_errors=True)
    stages = {}
    for stage in ("cluster", "all"):
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            run_semdedup(emb, out, cfg, stage=stage, workers=workers, progress=False)
            wall = time.perf_counter() - t0
        stages["cluster" if stage == "cluster" else "dedup"] = {"seconds": wall, "peak_bytes": mem.peak}
    table = pq.read_table(out / "semdedup.parquet")
    row = {
        "n": n,
        "d": D,
        "n_clusters": int(np.sqrt(n) + 0.5),
        "embeddings_bytes": n * D * 4,
        "generate_seconds": gen_s,
        "stages": stages,
        "total_seconds": sum(s["seconds"] for s in stages.values()),
        "peak_bytes": max(s["peak_bytes"] for s in stages.values()),
        **planted_scores(table, n0),
    }
    shutil.rmtree(out, ignore_errors=True)
    path.unlink()
    return row


def brute_force_baseline(workdir: Path, n_sub: int = 50_000) -> dict:
    """All pairs (k = 1) vs SemDeDup (k = sqrt(n)) on n_sub items holding n_sub / 10 planted pairs."""
    path = workdir / "emb_sub.npy"
    n0 = make_embeddings(path, n_sub, seed=1)
    x = np.load(path)
    t0 = time.perf_counter()
    brute = semdedup(x, n_clusters=1, eps=EPS)
    brute_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = semdedup(x, eps=EPS)
    fast_s = time.perf_counter() - t0
    path.unlink()
    b_removed = ~brute.column(f"keep_{EPS:g}").to_numpy(zero_copy_only=False)
    f_removed = ~fast.column(f"keep_{EPS:g}").to_numpy(zero_copy_only=False)
    # a brute-force removal (j, because of its earlier partner i) is resolved by SemDeDup if it removes j or i
    # (which member of a pair goes depends on the rank order, which differs between k = 1 and k = sqrt(n))
    j = np.flatnonzero(b_removed)
    i = brute.column("max_id").to_numpy(zero_copy_only=False)[j].astype(np.int64)
    resolved = f_removed[j] | f_removed[i]
    return {
        "n": n_sub,
        "brute_force_seconds": brute_s,
        "semdedup_seconds": fast_s,
        "speedup": brute_s / fast_s,
        "brute_force_removed": int(b_removed.sum()),
        "semdedup_removed": int(f_removed.sum()),
        "share_of_brute_force_pairs_resolved": float(resolved.mean()) if len(j) else 1.0,
        "planted_brute_force": planted_scores(brute, n0),
        "planted_semdedup": planted_scores(fast, n0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated N")
    parser.add_argument("--quick", action="store_true", help="N = 20,000 and a 10,000 subset (a smoke run)")
    parser.add_argument("--workers", type=int, default=None, help="Dask workers (default: CPU count)")
    parser.add_argument(
        "--workdir", default=None, help="scratch folder for the .npy files (default: a temp dir)"
    )
    parser.add_argument("--out", default="results/benchmarks/semdedup_scale.json", help="JSON output")
    args = parser.parse_args()
    sizes = [20_000] if args.quick else [int(float(s)) for s in args.sizes.split(",")]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="semdedup-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"{'N':>9} {'k':>5} {'cluster s':>9} {'dedup s':>8} {'total s':>8} {'peak GB':>8} {'recall':>7} "
          f"{'precision':>9}")  # fmt: skip
    for n in sizes:
        r = run_size(n, workdir, args.workers)
        rows.append(r)
        print(
            f"{n:>9} {r['n_clusters']:>5} {r['stages']['cluster']['seconds']:>9.1f} "
            f"{r['stages']['dedup']['seconds']:>8.1f} {r['total_seconds']:>8.1f} {r['peak_bytes'] / 1e9:>8.2f} "
            f"{r['recall']:>7.4f} {r['precision']:>9.4f}",
            flush=True,
        )
    base = brute_force_baseline(workdir, 10_000 if args.quick else 50_000)
    print(
        f"\nbrute force (k = 1) on {base['n']}: {base['brute_force_seconds']:.1f} s; SemDeDup: "
        f"{base['semdedup_seconds']:.1f} s ({base['speedup']:.1f}x faster); SemDeDup resolves "
        f"{base['share_of_brute_force_pairs_resolved']:.1%} of the brute-force duplicate pairs"
    )
    shutil.rmtree(workdir, ignore_errors=True) if args.workdir is None else None
    write_json(
        args.out,
        {
            "setting": {
                "d": D,
                "planted_cos": PLANTED_COS,
                "eps": EPS,
                "workers": args.workers or os.cpu_count(),
            },
            "sizes": rows,
            "brute_force_baseline": base,
            "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
