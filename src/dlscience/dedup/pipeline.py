"""SemDeDup end to end: normalise -> spherical k-means -> rank members -> within-cluster maxima -> keep flags.

Two drivers share every step:

* :func:`semdedup` -- in memory, one process; returns a ``pyarrow.Table``;
* :func:`run_semdedup` -- on disk, resumable, clusters processed in parallel by Dask (a local cluster by
  default, or an existing one via ``scheduler``), with the same result for any number of workers.

On-disk layout of ``out`` (every file written atomically)::

    manifest.json          inputs' hashes, settings, stage timings
    centroids.npy          (k, d) float32 unit centroids
    assignment.parquet     row, cluster, sim_to_centroid
    clusters/c000123.parquet  one per cluster: row, rank, max_sim, max_row (+ the run's fingerprint)
    semdedup.parquet       one row per item, in input order: id, cluster, rank, sim_to_centroid, max_sim,
                           max_id, keep_<eps> ...
    summary.json / .png    eps -> kept fraction, cluster sizes, timings
    examples.json          removed items next to the earlier item that removed them (with texts when known)

A killed run continues from the finished clusters; a folder holding results of other inputs or settings is
refused unless ``overwrite=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dlscience.dedup.clustering import (
    assign_clusters,
    default_n_clusters,
    fit_spherical_kmeans,
    training_sample,
)
from dlscience.dedup.inputs import Embeddings, check_embeddings, check_ids, file_sha256
from dlscience.dedup.semdedup import ORDERS, check_eps, earlier_max_similarity, keep_mask, normalize_rows
from dlscience.dedup.semdedup import rank_members as _rank_members
from dlscience.errors import InputValidationError, UserError
from dlscience.results import write_json, write_npy, write_parquet

__all__ = ["SemDeDupConfig", "semdedup", "run_semdedup", "extract", "eps_column", "kept_fraction_curve"]

TASK_ROWS = 50_000  # clusters are grouped into Dask tasks of about this many rows


@dataclass(frozen=True)
class SemDeDupConfig:
    """Settings of a SemDeDup run (research note semdedup.md Sec. 1).

    Attributes
    ----------
    n_clusters : int or None
        k of k-means; None: round(sqrt(N)).
    eps : tuple of float
        Thresholds in (0, 1]: an item is removed when its max similarity to an earlier-ranked member of its
        cluster exceeds 1 - eps. All come from one pass.
    order : {"hard", "easy", "random"}
        Rank order inside a cluster ("hard": farthest from the centroid first, the paper's default).
    seed : int
        Seeds the k-means sample and initialisation and the "random" order.
    n_iter : int
        k-means iterations (paper: 20 on C4, 100 on LAION).
    max_points_per_centroid : int
        k-means trains on at most this many rows per centroid (a seeded sample; faiss's default 256).
    block_size : int
        Gram block size of the within-cluster step (memory block_size^2 * 12 bytes); results do not depend on it.
    """

    n_clusters: int | None = None
    eps: tuple[float, ...] = (0.01,)
    order: str = "hard"
    seed: int = 0
    n_iter: int = 20
    max_points_per_centroid: int = 256
    block_size: int = 2048

    def validated(self, n: int) -> SemDeDupConfig:
        """A copy with eps sorted and n_clusters resolved for n items.

        Raises
        ------
        InputValidationError
            On a bad value (named, with the allowed range).
        """
        k = default_n_clusters(n) if self.n_clusters is None else int(self.n_clusters)
        if not 1 <= k <= n:
            fix = "lower n_clusters (--n-clusters)" if k > n else "n_clusters (--n-clusters) must be positive"
            raise InputValidationError(
                f"n_clusters must be between 1 and the number of items ({n}), got {k}; {fix}"
            )
        if self.order not in ORDERS:
            raise InputValidationError(f"order must be one of {ORDERS}, got {self.order!r}")
        for name in ("n_iter", "max_points_per_centroid", "block_size"):
            if int(getattr(self, name)) < 1:
                raise InputValidationError(f"{name} must be >= 1, got {getattr(self, name)}")
        return SemDeDupConfig(
            k,
            check_eps(self.eps),
            self.order,
            int(self.seed),
            int(self.n_iter),
            int(self.max_points_per_centroid),
            int(self.block_size),
        )


def eps_column(eps: float) -> str:
    """Name of the keep-flag column for ``eps``, e.g. ``keep_0.01``."""
    return f"keep_{eps:g}"


def _id_rank(ids: np.ndarray) -> np.ndarray:
    """Position of each id in the sorted id list (int64), for tie-breaking."""
    rank = np.empty(len(ids), dtype=np.int64)
    rank[np.argsort(ids, kind="stable")] = np.arange(len(ids))
    return rank


def _cluster_members(cluster: np.ndarray, k: int) -> list[np.ndarray]:
    """Rows of each cluster (ascending), via one stable sort."""
    order = np.argsort(cluster, kind="stable")
    bounds = np.searchsorted(cluster[order], np.arange(k + 1))
    return [order[bounds[c] : bounds[c + 1]] for c in range(k)]


def _ranked_members(members, sim, id_rank, cfg: SemDeDupConfig) -> list[np.ndarray]:
    return [m[_rank_members(sim[m], id_rank[m], cfg.order, cfg.seed, c)] for c, m in enumerate(members)]


def _gather(vectors, rows: np.ndarray) -> np.ndarray:
    """vectors[rows] for any row order, reading a memory map in ascending order."""
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows), vectors.shape[1]), dtype=vectors.dtype)
    out[order] = vectors[rows[order]]
    return out


def _dedup_cluster(vectors, ranked_rows: np.ndarray, block_size: int):
    """Algorithm A7 on one cluster: rows in rank order -> (max_sim float32, max_row int64, -1 for the first)."""
    x = normalize_rows(_gather(vectors, ranked_rows))
    max_sim, max_idx = earlier_max_similarity(x, block_size)
    max_row = np.where(max_idx >= 0, ranked_rows[np.maximum(max_idx, 0)], -1)
    return max_sim, max_row


def _cluster_stage(vectors, ids: np.ndarray, cfg: SemDeDupConfig, progress: bool):
    """k-means on a seeded sample taken and ordered by id (so the centroids, hence everything, do not depend on
    the input's row order), then assignment of every row."""
    from tqdm.auto import tqdm

    n = len(ids)
    by_id = np.argsort(ids, kind="stable")
    sample_rows = by_id[training_sample(n, cfg.n_clusters, cfg.max_points_per_centroid, cfg.seed)]
    sample = normalize_rows(_gather(vectors, sample_rows))
    centroids = fit_spherical_kmeans(sample, cfg.n_clusters, n_iter=cfg.n_iter, seed=cfg.seed)
    del sample
    with tqdm(total=n, disable=not progress, desc="assign", unit="row") as bar:
        cluster, sim = assign_clusters(vectors, centroids, progress=lambda done: bar.update(done - bar.n))
    return centroids, cluster, sim


def _result_table(ids, cluster, sim, rank, max_sim, max_row, eps, texts=None):
    import pyarrow as pa

    has_max = max_row >= 0
    max_id = pa.array(ids[np.where(has_max, max_row, 0)], mask=~has_max)
    cols = {
        "id": pa.array(ids),
        "cluster": pa.array(cluster.astype(np.int32)),
        "rank": pa.array(rank.astype(np.int32)),
        "sim_to_centroid": pa.array(sim.astype(np.float32)),
        "max_sim": pa.array(max_sim.astype(np.float32)),
        "max_id": max_id,
    }
    for e in eps:
        cols[eps_column(e)] = pa.array(keep_mask(max_sim, e))
    return pa.table(cols)


def semdedup(
    embeddings,
    ids=None,
    *,
    n_clusters: int | None = None,
    eps: float | Sequence[float] = (0.01,),
    order: str = "hard",
    seed: int = 0,
    n_iter: int = 20,
    max_points_per_centroid: int = 256,
    block_size: int = 2048,
    progress: bool = False,
):
    """Semantic de-duplication in memory (Abbas et al. 2023, Algorithm A7 after spherical k-means).

    Parameters
    ----------
    embeddings : array-like (N, d) float
        Any scale (rows are L2-normalised); a memory-mapped array is read in batches.
    ids : array-like (N,) of int or str, optional
        Unique ids (default: row numbers); they break rank ties.
    n_clusters, eps, order, seed, n_iter, max_points_per_centroid, block_size
        See :class:`SemDeDupConfig`.
    progress : bool
        Progress bars.

    Returns
    -------
    pyarrow.Table
        One row per item in input order: ``id``, ``cluster`` (int32), ``rank`` (int32, 0 = first in its
        cluster), ``sim_to_centroid`` (float32), ``max_sim`` (float32, M_j; 0 for the first-ranked),
        ``max_id`` (id of the earliest-ranked member attaining M_j; null for the first-ranked) and a bool
        ``keep_<eps>`` column per eps. Use ``.to_pandas()`` for a DataFrame.

    Raises
    ------
    InputValidationError
        Ragged, non-finite or zero embeddings; duplicate ids; n_clusters outside [1, N]; eps outside (0, 1];
        an unknown order.
    """
    n, _ = check_embeddings(embeddings if hasattr(embeddings, "shape") else np.asarray(embeddings))
    embeddings = embeddings if hasattr(embeddings, "shape") else np.asarray(embeddings)
    ids = check_ids(np.arange(n, dtype=np.int64) if ids is None else ids, n)
    cfg = SemDeDupConfig(n_clusters, eps, order, seed, n_iter, max_points_per_centroid, block_size).validated(
        n
    )
    _, cluster, sim = _cluster_stage(embeddings, ids, cfg, progress)
    members = _ranked_members(_cluster_members(cluster, cfg.n_clusters), sim, _id_rank(ids), cfg)
    rank = np.empty(n, dtype=np.int64)
    max_sim = np.empty(n, dtype=np.float32)
    max_row = np.empty(n, dtype=np.int64)
    for rows in members:
        if len(rows):
            rank[rows] = np.arange(len(rows))
            max_sim[rows], max_row[rows] = _dedup_cluster(embeddings, rows, cfg.block_size)
    return _result_table(ids, cluster, sim, rank, max_sim, max_row, cfg.eps)


def extract(table, eps: float | Sequence[float]):
    """Re-threshold stored results at new eps without recomputing.

    Parameters
    ----------
    table : pyarrow.Table or path
        A result of :func:`semdedup` / ``semdedup.parquet`` (needs ``max_sim``).
    eps : float or sequence of float
        Each in (0, 1].

    Returns
    -------
    pyarrow.Table
        ``table`` with a ``keep_<eps>`` column per eps (replacing any of the same name).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(table, pa.Table):
        path = Path(table)
        if path.is_dir():
            path = path / "semdedup.parquet"
        if not path.exists():
            raise UserError(f"no SemDeDup results at {path}; run `dlscience semdedup dedup` first")
        table = pq.read_table(path)
    max_sim = table.column("max_sim").to_numpy()
    for e in check_eps(eps):
        name = eps_column(e)
        if name in table.column_names:
            table = table.drop_columns([name])
        table = table.append_column(name, pa.array(keep_mask(max_sim, e)))
    return table


def kept_fraction_curve(max_sim: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """Fraction kept at each eps (float64 array like ``eps``), from the stored maxima in one sort."""
    s = np.sort(np.asarray(max_sim, dtype=np.float32))
    thresholds = (1.0 - np.asarray(eps, dtype=np.float64)).astype(np.float32)
    return np.searchsorted(s, thresholds, side="right") / len(s)


# ---------------------------------------------------------------------------------------------------------
# On disk, resumable, parallel with Dask


@dataclass
class _Plan:
    out: Path
    vectors_path: str
    n: int
    d: int
    cfg: SemDeDupConfig
    inputs: dict
    timings: dict = field(default_factory=dict)


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _ids_sha256(ids: np.ndarray) -> str:
    h = hashlib.sha256(str(ids.dtype.kind).encode())
    if ids.dtype.kind == "i":
        h.update(np.ascontiguousarray(ids).tobytes())
    else:
        for v in ids.tolist():
            h.update(v.encode() + b"\x00")
    return h.hexdigest()


def _dedup_task(vectors_path: str, jobs: list, out_dir: str, fingerprint: str, block_size: int, threads: int):
    """Dask task: Algorithm A7 on several clusters; writes one parquet per cluster. Returns rows done."""
    import pyarrow as pa
    from threadpoolctl import threadpool_limits

    vectors = np.load(vectors_path, mmap_mode="r")
    done = 0
    with threadpool_limits(limits=threads):
        for c, rows in jobs:
            max_sim, max_row = _dedup_cluster(vectors, rows, block_size)
            table = pa.table(
                {
                    "row": pa.array(rows),
                    "rank": pa.array(np.arange(len(rows), dtype=np.int32)),
                    "max_sim": pa.array(max_sim),
                    "max_row": pa.array(max_row),
                }
            )
            write_parquet(Path(out_dir) / f"c{c:06d}.parquet", table, metadata={"fingerprint": fingerprint})
            done += len(rows)
    return done


def _finished(path: Path, fingerprint: str) -> bool:
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception:
        return False
    return meta.get(b"fingerprint", b"").decode() == fingerprint


def _client(workers: int | None, scheduler: str | None):
    import logging

    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None
        except OSError as exc:
            raise UserError(f"cannot reach the Dask scheduler at {scheduler} ({exc})") from exc
    cluster = LocalCluster(
        n_workers=workers or os.cpu_count() or 1,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    return Client(cluster), cluster


def run_semdedup(
    embeddings: Embeddings,
    out: str | Path,
    config: SemDeDupConfig = SemDeDupConfig(),
    *,
    stage: str = "all",
    workers: int | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """SemDeDup on disk: cluster, then de-duplicate each cluster in parallel with Dask, then write the table.

    Parameters
    ----------
    embeddings : Embeddings
        From :func:`~dlscience.dedup.inputs.open_embeddings` (a ``.npy`` memory map, or vectors that are
        copied once to ``out/vectors.npy`` so that workers can map them).
    out : path
        Output folder (layout in the module docstring).
    config : SemDeDupConfig
    stage : {"cluster", "dedup", "all"}
        Stop after clustering, or run everything.
    workers : int, optional
        Workers of the local Dask cluster (default: CPU count); ignored with ``scheduler``.
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://host:8786``); its workers need dlscience installed and
        ``out`` on a shared file system.
    overwrite : bool
        Replace results of other inputs or settings in ``out`` instead of refusing.
    progress : bool

    Returns
    -------
    dict
        The summary (also ``out/summary.json``).

    Raises
    ------
    UserError
        Bad settings, or ``out`` holds results of other inputs or settings (without ``overwrite``).
    """
    out = Path(out)
    n, d = embeddings.vectors.shape
    cfg = config.validated(n)
    if workers is not None and workers < 1:
        raise InputValidationError(f"--workers must be >= 1 (default: one per CPU core), got {workers}")
    if stage not in ("cluster", "all"):
        raise InputValidationError(f"stage must be 'cluster' or 'all', got {stage!r}")
    vectors = embeddings.vectors
    src = getattr(vectors, "filename", None)
    inputs = {
        "source": embeddings.source,
        "n": n,
        "d": d,
        "ids_sha256": _ids_sha256(embeddings.ids),
    }
    inputs["vectors_sha256"] = (
        file_sha256(src) if src else hashlib.sha256(np.ascontiguousarray(vectors).tobytes()).hexdigest()
    )
    manifest_path = out / "manifest.json"
    cluster_fp = _fingerprint(inputs, cfg.n_clusters, cfg.seed, cfg.n_iter, cfg.max_points_per_centroid)
    dedup_fp = _fingerprint(cluster_fp, cfg.order, cfg.seed)
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        if old.get("cluster_fingerprint") != cluster_fp or old.get("dedup_fingerprint") != dedup_fp:
            if not overwrite:
                raise UserError(
                    f"{out} holds SemDeDup results of other inputs or settings ({_differences(old, inputs, cfg)}); "
                    "repeat the earlier settings, use another --out, or --overwrite to replace them"
                )
            for name in (
                "clusters",
                "manifest.json",
                "assignment.parquet",
                "centroids.npy",
                "semdedup.parquet",
            ):
                p = out / name
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest.update(
        {
            "inputs": inputs,
            "config": asdict(cfg),
            "cluster_fingerprint": cluster_fp,
            "dedup_fingerprint": dedup_fp,
        }
    )
    manifest.setdefault("timings", {})
    source = Path(embeddings.source)
    if source.is_dir() and (source / "items.parquet").exists():  # an embed folder: texts for `extract`
        manifest["items"] = str((source / "items.parquet").resolve())
    if src is None:
        vectors_path = out / "vectors.npy"
        if not vectors_path.exists():
            write_npy(vectors_path, np.asarray(vectors, dtype=np.float32))
        src = str(vectors_path)
    write_json(manifest_path, manifest)

    import pyarrow as pa
    import pyarrow.parquet as pq

    # stage 1: clustering
    if not (out / "assignment.parquet").exists():
        t0 = time.perf_counter()
        centroids, cluster, sim = _cluster_stage(vectors, embeddings.ids, cfg, progress)
        write_npy(out / "centroids.npy", centroids)
        write_parquet(
            out / "assignment.parquet",
            pa.table({"row": np.arange(n, dtype=np.int64), "cluster": cluster, "sim_to_centroid": sim}),
            metadata={"fingerprint": cluster_fp},
        )
        manifest["timings"]["cluster_s"] = round(time.perf_counter() - t0, 2)
        write_json(manifest_path, manifest)
    assignment = pq.read_table(out / "assignment.parquet")
    cluster = assignment.column("cluster").to_numpy()
    sim = assignment.column("sim_to_centroid").to_numpy()
    if stage == "cluster":
        return manifest

    # stage 2: within-cluster maxima, one file per cluster, in parallel
    t0 = time.perf_counter()
    members = _ranked_members(_cluster_members(cluster, cfg.n_clusters), sim, _id_rank(embeddings.ids), cfg)
    cdir = out / "clusters"
    cdir.mkdir(exist_ok=True)
    todo = [
        (c, rows)
        for c, rows in enumerate(members)
        if len(rows) and not _finished(cdir / f"c{c:06d}.parquet", dedup_fp)
    ]
    if todo:
        _run_tasks(todo, src, cdir, dedup_fp, cfg.block_size, workers, scheduler, n, progress)
    if todo:  # summed over interrupted runs
        spent = manifest["timings"].get("dedup_s", 0) + time.perf_counter() - t0
        manifest["timings"]["dedup_s"] = round(spent, 2)
        write_json(manifest_path, manifest)

    # stage 3: assemble the table in input order
    rank = np.empty(n, dtype=np.int64)
    max_sim = np.empty(n, dtype=np.float32)
    max_row = np.empty(n, dtype=np.int64)
    for c, rows in enumerate(members):
        if not len(rows):
            continue
        t = pq.read_table(cdir / f"c{c:06d}.parquet")
        r = t.column("row").to_numpy()
        if not np.array_equal(r, rows):
            raise UserError(f"{cdir}/c{c:06d}.parquet does not match this run; rerun with --overwrite")
        rank[r] = t.column("rank").to_numpy()
        max_sim[r] = t.column("max_sim").to_numpy()
        max_row[r] = t.column("max_row").to_numpy()
    table = _result_table(embeddings.ids, cluster, sim, rank, max_sim, max_row, cfg.eps)
    write_parquet(out / "semdedup.parquet", table, metadata={"fingerprint": dedup_fp})
    summary = _summary(table, cluster, cfg, manifest["timings"], embeddings)
    write_json(out / "summary.json", summary)
    _write_examples(out / "examples.json", table, embeddings, cfg.eps[-1])
    _summary_figure(out / "summary.png", max_sim, cluster, cfg)
    manifest["done"] = True
    write_json(manifest_path, manifest)
    return summary


def _differences(old: dict, inputs: dict, cfg: SemDeDupConfig) -> str:
    """Which inputs or settings differ from those recorded in a manifest, e.g. ``n_clusters 8 -> 22``."""
    diffs = []
    if old.get("inputs", {}).get("vectors_sha256") != inputs["vectors_sha256"]:
        diffs.append("the embeddings")
    if old.get("inputs", {}).get("ids_sha256") != inputs["ids_sha256"]:
        diffs.append("the ids")
    new = asdict(cfg)
    for key in ("n_clusters", "seed", "n_iter", "max_points_per_centroid", "order"):
        before = old.get("config", {}).get(key)
        if before != new[key]:
            diffs.append(f"{key} {before} -> {new[key]}")
    return ", ".join(diffs) or "settings"


def _run_tasks(todo, src, cdir, fingerprint, block_size, workers, scheduler, n, progress):
    from dask.distributed import as_completed
    from tqdm.auto import tqdm

    groups, current, size = [], [], 0
    for c, rows in sorted(todo, key=lambda j: -len(j[1])):  # big clusters first, small ones batched
        current.append((c, rows))
        size += len(rows)
        if size >= TASK_ROWS:
            groups.append(current)
            current, size = [], 0
    if current:
        groups.append(current)
    client, local = _client(workers, scheduler)
    try:
        n_workers = max(1, len(client.scheduler_info().get("workers", {})) or 1)
        threads = max(1, (os.cpu_count() or 1) // n_workers) if local is not None else 1
        futures = [
            client.submit(_dedup_task, src, g, str(cdir), fingerprint, block_size, threads, pure=False)
            for g in groups
        ]
        total = sum(len(r) for _, r in todo)
        with tqdm(total=total, disable=not progress, desc="dedup", unit="row") as bar:
            for fut in as_completed(futures):
                bar.update(fut.result())
    finally:
        client.close()
        if local is not None:
            local.close()


def _summary(table, cluster, cfg, timings, embeddings) -> dict:
    sizes = np.bincount(cluster, minlength=cfg.n_clusters)
    n = table.num_rows
    kept = {}
    for e in cfg.eps:
        k = int(np.sum(table.column(eps_column(e)).to_numpy(zero_copy_only=False)))
        kept[f"{e:g}"] = {"kept": k, "removed": n - k, "kept_fraction": round(k / n, 6)}
    grid = np.array([1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3])
    curve = kept_fraction_curve(table.column("max_sim").to_numpy(), grid)
    return {
        "n": n,
        "source": embeddings.source,
        "config": asdict(cfg),
        "kept": kept,
        "kept_fraction_curve": {f"{e:g}": round(float(f), 6) for e, f in zip(grid, curve, strict=True)},
        "cluster_sizes": {
            "clusters": int(cfg.n_clusters),
            "non_empty": int((sizes > 0).sum()),
            "singletons": int((sizes == 1).sum()),
            "min": int(sizes.min()),
            "median": float(np.median(sizes)),
            "mean": round(float(sizes.mean()), 3),
            "max": int(sizes.max()),
        },
        "timings_s": timings,
    }


def _write_examples(path: Path, table, embeddings: Embeddings, eps: float, n_examples: int = 12):
    """Removed items at eps, spread over their similarity range, next to the item that removed them."""
    max_sim = table.column("max_sim").to_numpy()
    removed = np.flatnonzero(~keep_mask(max_sim, eps))
    removed = removed[np.argsort(-max_sim[removed], kind="stable")]
    pick = removed[np.unique(np.linspace(0, len(removed) - 1, min(n_examples, len(removed))).astype(int))]
    ids = embeddings.ids
    row_of = {v: i for i, v in enumerate(ids.tolist())} if len(pick) else {}
    max_ids = table.column("max_id").to_pylist()
    examples = []
    for i in pick.tolist():
        j = row_of[max_ids[i]]
        item = {"id": ids[i], "max_id": ids[j], "max_sim": round(float(max_sim[i]), 6)}
        if embeddings.texts is not None:
            item["text"] = str(embeddings.texts[i])
            item["max_text"] = str(embeddings.texts[j])
        examples.append(item)
    write_json(path, {"eps": eps, "removed": int(len(removed)), "examples": examples})


def _summary_figure(path: Path, max_sim, cluster, cfg):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dlscience.results import save_figure

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    eps = np.geomspace(1e-4, 0.5, 60)
    a.semilogx(eps, kept_fraction_curve(max_sim, eps), "-")
    for e in cfg.eps:
        a.axvline(e, color="gray", lw=0.6, ls=":")
    a.set_xlabel("eps (remove when max similarity > 1 - eps)")
    a.set_ylabel("fraction kept")
    a.set_ylim(0, 1.02)
    a.grid(alpha=0.3)
    sizes = np.bincount(cluster, minlength=cfg.n_clusters)
    b.hist(sizes, bins=min(50, max(5, cfg.n_clusters // 4)))
    b.set_xlabel("cluster size")
    b.set_ylabel("clusters")
    b.set_title(f"k = {cfg.n_clusters}", fontsize=9)
    fig.tight_layout()
    save_figure(path, fig)
    plt.close(fig)
