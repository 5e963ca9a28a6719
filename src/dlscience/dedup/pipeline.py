"""SemDeDup end to end: normalise -> spherical k-means -> rank members -> within-cluster maxima -> keep flags.

Two drivers share every step:

* :func:`semdedup` -- in memory, one process; returns a ``pyarrow.Table``;
* :func:`run_semdedup` -- on disk, resumable, clusters processed in parallel by Dask (a local cluster by
  default, or an existing one via ``scheduler``), with the same result for any number of workers.

On-disk layout of ``out``, a :class:`~dlscience.runs.RunFolder` (every file written atomically and registered
in the manifest, so ``--overwrite`` removes all of them, extracted subsets included)::

    manifest.json          the run folder's manifest: inputs' digests, settings, stage timings (``state``)
    centroids.npy          (k, d) float32 unit centroids
    assignment.parquet     row, cluster, sim_to_centroid
    clusters/c000123.parquet  one per cluster: row, rank, max_sim, max_row (+ the run's fingerprint)
    semdedup.parquet       one row per item, in input order: id, cluster, rank, sim_to_centroid, max_sim,
                           max_id, keep_<eps> ...
    summary.json / .png    eps -> kept fraction, cluster sizes, timings
    examples.json          removed items next to the earlier item that removed them (with texts when known)
    kept_eps<eps>.parquet  written by :func:`extract_subsets` (``semdedup extract``)
    embed/                 for text input (``semdedup run``): the nested ``semdedup embed`` run folder
    vectors.npy            for in-memory or parquet embeddings: a copy that Dask workers can map

A killed run continues from the finished clusters (each cluster's file and the assignment carry the run's
fingerprint); a folder holding results of other inputs or settings is refused unless ``overwrite=True``.
"""

from __future__ import annotations

import numbers
import os
import re
import socket
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dlscience.dedup.clustering import (
    assign_clusters,
    default_n_clusters,
    fit_spherical_kmeans,
    training_sample,
)
from dlscience.dedup.inputs import Embeddings, check_embeddings, check_ids, open_embeddings, read_texts
from dlscience.dedup.semdedup import (
    ORDERS,
    check_eps,
    earlier_max_similarity,
    keep_mask,
    normalize_rows,
    require_numpy,
)
from dlscience.dedup.semdedup import rank_members as _rank_members
from dlscience.errors import InputValidationError, UserError
from dlscience.results import DamagedFileError, load_npy, read_json, read_parquet, write_parquet
from dlscience.runs import FORMAT, MANIFEST, RunFolder, digest_array, digest_file

__all__ = [
    "SemDeDupConfig",
    "SemDeDupWarning",
    "semdedup",
    "run_semdedup",
    "run_text_semdedup",
    "extract",
    "extract_subsets",
    "check_scheduler",
    "eps_column",
    "kept_fraction_curve",
]

TASK_ROWS = 50_000  # clusters are grouped into Dask tasks of about this many rows
COMMAND = (
    "semdedup"  # the run folder's command: `cluster`, `dedup` and `run` write the same folder, in stages
)
OUTPUTS = (
    "centroids.npy",
    "assignment.parquet",
    "clusters",
    "semdedup.parquet",
    "summary.json",
    "summary.png",
    "examples.json",
    "vectors.npy",
    "embed",
)
IDENTITY = ("n_clusters", "seed", "n_iter", "max_points_per_centroid", "order")  # what a resume must repeat


class SemDeDupWarning(UserWarning):
    """A setting that runs but probably does not do what was meant (k close to N, empty clusters). The CLI
    prints it as one line, ``dlscience: warning: ...``."""


def _integer(value, name: str, flag: str) -> int:
    """``value`` as an int; an integral float (``12.0``) is accepted, anything else is refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputValidationError(f"{name} must be an integer ({flag}), got {value!r}")
    if not isinstance(value, numbers.Integral) and not float(value).is_integer():
        raise InputValidationError(f"{name} must be an integer ({flag}), got {value!r}")
    return int(value)


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
            On a bad value (named, with the allowed range), or a non-integer count.
        """
        k = (
            default_n_clusters(n)
            if self.n_clusters is None
            else _integer(self.n_clusters, "n_clusters", "--n-clusters")
        )
        if not 1 <= k <= n:
            fix = "lower n_clusters (--n-clusters)" if k > n else "n_clusters (--n-clusters) must be positive"
            raise InputValidationError(
                f"n_clusters must be between 1 and the number of items ({n}), got {k}; {fix}"
            )
        if self.order not in ORDERS:
            raise InputValidationError(f"order must be one of {ORDERS}, got {self.order!r}")
        counts = {}
        for name in ("n_iter", "max_points_per_centroid", "block_size"):
            counts[name] = _integer(getattr(self, name), name, "--" + name.replace("_", "-"))
            if counts[name] < 1:
                raise InputValidationError(f"{name} must be >= 1, got {getattr(self, name)}")
        seed = _integer(self.seed, "seed", "--seed")
        if seed < 0:
            raise InputValidationError(f"seed must be >= 0, got {seed}")
        return SemDeDupConfig(k, check_eps(self.eps), self.order, seed, **counts)


def eps_column(eps: float) -> str:
    """Name of the keep-flag column for ``eps``, e.g. ``keep_0.01``."""
    return f"keep_{eps:g}"


def _id_rank(ids: np.ndarray) -> np.ndarray:
    """Position of each id in the sorted id list (int64), for tie-breaking."""
    rank = np.empty(len(ids), dtype=np.int64)
    rank[np.argsort(ids, kind="stable")] = np.arange(len(ids))
    return rank


def _k_warning(k: int, n: int) -> str | None:
    """The warning for k close to N (k > N/2), or None."""
    if k > 1 and 2 * k > n:
        return (
            f"k = {k} clusters for N = {n} items (k > N/2): most clusters hold one or two items, and items in "
            "different clusters are never compared, so few duplicates can be found; use fewer --n-clusters "
            "(default: sqrt(N))"
        )
    return None


def _empty_warning(sizes: np.ndarray) -> str | None:
    """The warning for clusters that k-means left empty, or None."""
    empty = int((sizes == 0).sum())
    if empty:
        return (
            f"{empty} of {len(sizes)} k-means clusters are empty (the items have fewer distinct directions than "
            "clusters); the result is valid, but fewer --n-clusters give the same with less work"
        )
    return None


def _warn(message: str | None) -> None:
    if message:
        warnings.warn(message, SemDeDupWarning, stacklevel=3)


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
        Ragged, non-finite or zero embeddings; torch tensors (convert with ``.numpy()``); duplicate ids;
        n_clusters outside [1, N] or not an integer; eps outside [1e-6, 1]; an unknown order.

    Warns
    -----
    SemDeDupWarning
        When k > N/2 or k-means leaves clusters empty.
    """
    require_numpy(embeddings, "embeddings", "semdedup")
    require_numpy(ids, "ids", "semdedup")
    embeddings = embeddings if hasattr(embeddings, "shape") else np.asarray(embeddings)
    n, _ = check_embeddings(embeddings)
    ids = check_ids(np.arange(n, dtype=np.int64) if ids is None else ids, n)
    cfg = SemDeDupConfig(n_clusters, eps, order, seed, n_iter, max_points_per_centroid, block_size).validated(
        n
    )
    _warn(_k_warning(cfg.n_clusters, n))
    _, cluster, sim = _cluster_stage(embeddings, ids, cfg, progress)
    _warn(_empty_warning(np.bincount(cluster, minlength=cfg.n_clusters)))
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

    Raises
    ------
    UserError
        No results at the path, a damaged file, a table without ``max_sim``, or a bad eps.
    """
    import pyarrow as pa

    if not isinstance(table, pa.Table):
        path = Path(table)
        if path.is_dir():
            path = path / "semdedup.parquet"
        if not path.exists():
            raise UserError(f"no SemDeDup results at {path}; run `dlscience semdedup dedup` first")
        table = read_parquet(path, what="SemDeDup result table")
    if "max_sim" not in table.column_names:
        raise InputValidationError(
            f"not a SemDeDup result table (no max_sim column; columns: {table.column_names})"
        )
    max_sim = table.column("max_sim").to_numpy()
    for e in check_eps(eps):
        name = eps_column(e)
        if name in table.column_names:
            table = table.drop_columns([name])
        table = table.append_column(name, pa.array(keep_mask(max_sim, e)))
    return table


def kept_fraction_curve(max_sim: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """Fraction kept at each eps (float64 array like ``eps``), from the stored maxima in one sort."""
    require_numpy(max_sim, "max_sim", "kept_fraction_curve")
    s = np.sort(np.asarray(max_sim, dtype=np.float32))
    thresholds = (1.0 - np.asarray(eps, dtype=np.float64)).astype(np.float32)
    return np.searchsorted(s, thresholds, side="right") / len(s)


# ---------------------------------------------------------------------------------------------------------
# On disk, resumable, parallel with Dask


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
    """True when ``path`` is a readable parquet file stamped with ``fingerprint`` (a stage result to reuse)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception:  # missing, truncated or foreign: computed again
        return False
    return meta.get(b"fingerprint", b"").decode() == fingerprint


def _npy_ok(path: Path, shape: tuple[int, ...]) -> bool:
    """True when ``path`` is a complete .npy array of ``shape``."""
    try:
        return tuple(load_npy(path).shape) == tuple(shape)
    except (OSError, DamagedFileError):
        return False


_SCHEDULER = re.compile(r"(tcp|tls)://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})/?")


def check_scheduler(address: str, *, timeout: float = 5.0) -> tuple[str, int]:
    """Check a Dask scheduler address: ``tcp://HOST:PORT`` (or ``tls://``) that accepts a connection.

    Parameters
    ----------
    address : str
    timeout : float
        Seconds to wait for the connection.

    Returns
    -------
    (host, port)

    Raises
    ------
    InputValidationError
        If the address is not of that form (checked without a connection when ``timeout`` is 0).
    UserError
        If nothing accepts a connection there.
    """
    m = _SCHEDULER.fullmatch(address.strip())
    if not m or not 1 <= int(m.group(3)) <= 65535:
        raise InputValidationError(
            f"--scheduler {address!r} is not a Dask scheduler address; write tcp://HOST:PORT (e.g. "
            "tcp://10.0.0.5:8786), or omit --scheduler for a local cluster"
        )
    host, port = m.group(2).strip("[]"), int(m.group(3))
    if timeout:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise UserError(
                f"cannot reach the Dask scheduler at {address} ({reason}); start it (`dask scheduler`) and its "
                "workers first, or omit --scheduler for a local cluster"
            ) from None
    return host, port


def _client(workers: int | None, scheduler: str | None):
    import logging

    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None
        except OSError as exc:
            raise UserError(f"cannot reach the Dask scheduler at {scheduler} ({exc})") from None
    cluster = LocalCluster(
        n_workers=workers or os.cpu_count() or 1,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    return Client(cluster), cluster


def _check_run(
    embeddings: Embeddings, config: SemDeDupConfig, stage: str, workers, scheduler
) -> SemDeDupConfig:
    """Everything that can be refused before a file is written (settings, workers, the scheduler)."""
    require_numpy(embeddings.vectors, "embeddings.vectors", "run_semdedup")
    cfg = config.validated(embeddings.vectors.shape[0])
    _check_workers(workers, stage, scheduler)
    return cfg


def _check_workers(workers, stage: str, scheduler) -> None:
    if stage not in ("cluster", "all"):
        raise InputValidationError(f"stage must be 'cluster' or 'all', got {stage!r}")
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 1
    ):
        raise InputValidationError(f"--workers must be >= 1 (default: one per CPU core), got {workers}")
    if scheduler and stage == "all":
        check_scheduler(scheduler)  # before any k-means work


def _run_folder(out, cfg: SemDeDupConfig, inputs: dict, identity: dict, settings: dict, overwrite: bool):
    """The run folder of a SemDeDup run (cluster, dedup and run share it; ``extract`` adds to it)."""
    out = Path(out)
    kept = tuple(sorted(p.name for p in out.glob("kept_eps*.parquet"))) if out.is_dir() else ()
    return RunFolder(
        out,
        COMMAND,
        {**asdict(cfg), **identity, **settings},
        identity={**{k: getattr(cfg, k) for k in IDENTITY}, **identity},
        inputs=inputs,
        overwrite=overwrite,
        outputs=OUTPUTS + kept,
        legacy=(MANIFEST, *OUTPUTS, *kept),
    )


def _embedding_inputs(embeddings: Embeddings) -> dict:
    src = getattr(embeddings.vectors, "filename", None)
    vectors = digest_file(src) if src else digest_array(np.asarray(embeddings.vectors))
    return {"vectors": vectors, "ids": digest_array(embeddings.ids)}


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
        Output folder, a :class:`~dlscience.runs.RunFolder` (layout in the module docstring).
    config : SemDeDupConfig
    stage : {"cluster", "all"}
        Stop after clustering, or run everything.
    workers : int, optional
        Workers of the local Dask cluster (default: CPU count); ignored with ``scheduler``.
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://host:8786``), checked before anything is written; its
        workers need dlscience installed and ``out`` on a shared file system.
    overwrite : bool
        Replace results of other inputs or settings in ``out`` (every file they wrote) instead of refusing.
    progress : bool

    Returns
    -------
    dict
        The summary (also ``out/summary.json``); after ``stage="cluster"``, the cluster sizes and timings.

    Raises
    ------
    UserError
        Bad settings, an unreachable scheduler, or ``out`` holds results of other inputs or settings (without
        ``overwrite``) or of an earlier dlscience.

    Warns
    -----
    SemDeDupWarning
        When k > N/2 or k-means leaves clusters empty (also recorded in the summary).
    """
    cfg = _check_run(embeddings, config, stage, workers, scheduler)
    n, d = embeddings.vectors.shape
    run = _run_folder(
        out,
        cfg,
        _embedding_inputs(embeddings),
        {"n": n, "d": d},
        {"source": embeddings.source, "stage": stage, "workers": workers, "scheduler": scheduler},
        overwrite,
    )
    with run:
        return _run_stages(run, embeddings, cfg, stage, workers, scheduler, progress)


def run_text_semdedup(
    texts: str | Path,
    out: str | Path,
    config: SemDeDupConfig = SemDeDupConfig(),
    *,
    text_field: str = "text",
    id_field: str | None = None,
    model: str | Path | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """SemDeDup from texts: embed them into ``out/embed`` (a nested ``semdedup embed`` run folder), then
    :func:`run_semdedup` into ``out``. Every setting is checked before the (long) embedding starts.

    Parameters
    ----------
    texts : path
        ``.jsonl``, ``.parquet`` or plain text (see :func:`~dlscience.dedup.inputs.read_texts`).
    out : path
    config : SemDeDupConfig
    text_field, id_field : str
        As for :func:`~dlscience.dedup.inputs.read_texts`.
    model : path, optional
        A sentence-transformers model folder (default: the bundled all-MiniLM-L6-v2).
    batch_size : int
        Texts per forward pass (and per saved part: a kill loses at most one batch).
    workers, scheduler, overwrite, progress
        As for :func:`run_semdedup`.

    Returns
    -------
    dict
        The summary.

    Raises
    ------
    UserError
        As for :func:`run_semdedup` and :func:`~dlscience.dedup.embed.embed_folder`, and for unreadable texts.
    """
    from dlscience.dedup.embed import DEFAULT_MODEL, embed_folder

    ids, items = read_texts(texts, text_field=text_field, id_field=id_field)
    cfg = config.validated(len(items))
    _check_workers(workers, "all", scheduler)
    identity = {
        "text_field": text_field,
        "id_field": id_field,
        "model": DEFAULT_MODEL if model is None else str(model),
        "batch_size": int(batch_size),
    }
    settings = {"source": str(texts), "stage": "all", "workers": workers, "scheduler": scheduler}
    run = _run_folder(out, cfg, {"texts": digest_file(texts)}, identity, settings, overwrite)
    with run:
        folder = embed_folder(
            ids, items, run.path("embed"), model=model, batch_size=batch_size, progress=progress
        )
        embeddings = open_embeddings(folder)
        return _run_stages(run, embeddings, cfg, "all", workers, scheduler, progress)


def _run_stages(
    run: RunFolder, embeddings: Embeddings, cfg: SemDeDupConfig, stage, workers, scheduler, progress
):
    """The stages of :func:`run_semdedup` inside an open run folder; each skips work already done."""
    import pyarrow as pa

    out, fp = run.out, run.fingerprint
    n, d = embeddings.vectors.shape
    state = run.state
    timings = state.setdefault("timings", {})
    notes = [w for w in (_k_warning(cfg.n_clusters, n),) if w]
    for w in notes:
        _warn(w)
    source = Path(embeddings.source)
    if source.is_dir() and (source / "items.parquet").exists():  # an embed folder: texts for `extract`
        state["items"] = str((source / "items.parquet").resolve())
    vectors = embeddings.vectors
    src = getattr(vectors, "filename", None)
    if src is None:
        if not _npy_ok(out / "vectors.npy", (n, d)):
            run.write_npy("vectors.npy", np.asarray(vectors, dtype=np.float32))
        src = str(run.path("vectors.npy"))

    # stage 1: clustering (reused when the assignment carries this run's fingerprint)
    if _finished(out / "assignment.parquet", fp) and _npy_ok(out / "centroids.npy", (cfg.n_clusters, d)):
        assignment = read_parquet(out / "assignment.parquet", what="SemDeDup cluster assignment")
        cluster = assignment.column("cluster").to_numpy()
        sim = assignment.column("sim_to_centroid").to_numpy()
    else:
        t0 = time.perf_counter()
        centroids, cluster, sim = _cluster_stage(vectors, embeddings.ids, cfg, progress)
        run.write_npy("centroids.npy", centroids)
        run.write_parquet(
            "assignment.parquet",
            pa.table({"row": np.arange(n, dtype=np.int64), "cluster": cluster, "sim_to_centroid": sim}),
            metadata={"fingerprint": fp},
        )
        timings["cluster_s"] = round(time.perf_counter() - t0, 2)
        run.save_state()
    sizes = np.bincount(cluster, minlength=cfg.n_clusters)
    empty = _empty_warning(sizes)
    if empty:
        notes.append(empty)
        _warn(empty)
    if stage == "cluster":
        return {"n": n, "cluster_sizes": _cluster_sizes(sizes), "warnings": notes, "timings_s": timings}

    # stage 2: within-cluster maxima, one file per cluster, in parallel
    t0 = time.perf_counter()
    members = _ranked_members(_cluster_members(cluster, cfg.n_clusters), sim, _id_rank(embeddings.ids), cfg)
    cdir = run.path("clusters")
    cdir.mkdir(exist_ok=True)
    todo = [
        (c, rows)
        for c, rows in enumerate(members)
        if len(rows) and not _finished(cdir / f"c{c:06d}.parquet", fp)
    ]
    if todo:
        _run_tasks(todo, src, cdir, fp, cfg.block_size, workers, scheduler, n, progress)
        timings["dedup_s"] = round(
            timings.get("dedup_s", 0) + time.perf_counter() - t0, 2
        )  # summed over runs
        run.save_state()

    # stage 3: assemble the table in input order
    rank = np.empty(n, dtype=np.int64)
    max_sim = np.empty(n, dtype=np.float32)
    max_row = np.empty(n, dtype=np.int64)
    for c, rows in enumerate(members):
        if not len(rows):
            continue
        t = read_parquet(
            cdir / f"c{c:06d}.parquet", what="SemDeDup cluster result", fix="delete it and rerun"
        )
        r = t.column("row").to_numpy()
        if not np.array_equal(r, rows):
            raise UserError(f"{cdir}/c{c:06d}.parquet does not match this run; delete it and rerun")
        rank[r] = t.column("rank").to_numpy()
        max_sim[r] = t.column("max_sim").to_numpy()
        max_row[r] = t.column("max_row").to_numpy()
    table = _result_table(embeddings.ids, cluster, sim, rank, max_sim, max_row, cfg.eps)
    run.write_parquet("semdedup.parquet", table, metadata={"fingerprint": fp})
    summary = _summary(table, sizes, cfg, timings, embeddings, notes)
    run.write_json("summary.json", summary)
    run.write_json("examples.json", _examples(table, embeddings, cfg.eps[-1]))
    run.save_figure("summary.png", _summary_figure(max_sim, sizes, cfg))
    run.finish()
    return summary


def _existing_run(out: Path) -> RunFolder:
    """The finished SemDeDup run folder at ``out``, reopened with its own settings (for ``extract``)."""
    manifest = out / MANIFEST
    rerun = f"rerun `dlscience semdedup dedup ... --out {out} --overwrite` to recompute it"
    if not manifest.exists():
        if (out / "semdedup.parquet").exists():
            raise UserError(f"{out} was written by an earlier dlscience, before run manifests; {rerun}")
        raise UserError(f"no SemDeDup results in {out}; run `dlscience semdedup dedup ... --out {out}` first")
    m = read_json(manifest, what="run manifest", fix=rerun)
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise UserError(f"{out} was written by an earlier dlscience, before run manifests; {rerun}")
    if m.get("command") != f"dlscience {COMMAND}":
        raise UserError(f"{out} holds results of `{m.get('command')}`, not of `dlscience semdedup dedup`")
    if not m.get("finished"):
        raise UserError(
            f"{out} holds an unfinished SemDeDup run; repeat its `dlscience semdedup dedup` command to finish it"
        )
    run = RunFolder(
        out, COMMAND, m.get("settings") or {}, identity=m.get("identity") or {}, inputs=m.get("inputs") or {}
    )
    if run.fingerprint != m.get("fingerprint"):
        raise UserError(f"{manifest} does not match its own settings (edited?); {rerun}")
    return run


def extract_subsets(out: str | Path, eps: float | Sequence[float]) -> list[dict]:
    """Write the kept items of a finished SemDeDup run at other eps, without recomputing:
    ``out/kept_eps<eps>.parquet`` (``id``, and ``text`` when the run embedded texts), registered in the run's
    manifest so that ``--overwrite`` of a later run removes them too.

    Parameters
    ----------
    out : path
        A folder written by ``semdedup dedup`` / ``semdedup run`` (:func:`run_semdedup`).
    eps : float or sequence of float
        Each in [1e-6, 1].

    Returns
    -------
    list of dict
        One per eps: ``eps``, ``kept``, ``n``, ``file``.

    Raises
    ------
    UserError
        No finished run there, a run of an earlier dlscience (rerun with ``--overwrite``), a damaged file.
    """
    import pyarrow.compute as pc

    eps = check_eps(eps)
    out = Path(out)
    if out.exists() and not out.is_dir():
        from dlscience.cli_options import out_is_file_message

        raise UserError(out_is_file_message(out))
    run = _existing_run(out)
    with run:
        table = extract(out / "semdedup.parquet", eps)
        texts = None
        items_path = run.state.get("items")
        if items_path and Path(items_path).exists():
            items = read_parquet(items_path, what="items table (id, text)")
            if "text" in items.column_names and items.column("id").equals(table.column("id")):
                texts = items.column("text")
        rows = []
        for e in eps:
            keep = table.column(eps_column(e))
            kept = table.select(["id"]).filter(keep)
            if texts is not None:
                kept = kept.append_column("text", pc.filter(texts, keep))
            name = f"kept_eps{e:g}.parquet"
            run.write_parquet(name, kept)
            rows.append({"eps": e, "kept": kept.num_rows, "n": table.num_rows, "file": name})
        run.state["extracted"] = sorted({*run.state.get("extracted", []), *(f"{e:g}" for e in eps)})
        run.save_state()
    return rows


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


def _cluster_sizes(sizes: np.ndarray) -> dict:
    return {
        "clusters": len(sizes),
        "non_empty": int((sizes > 0).sum()),
        "empty": int((sizes == 0).sum()),
        "singletons": int((sizes == 1).sum()),
        "min": int(sizes.min()),
        "median": float(np.median(sizes)),
        "mean": round(float(sizes.mean()), 3),
        "max": int(sizes.max()),
        "k_over_n": round(len(sizes) / max(1, int(sizes.sum())), 6),
    }


def _summary(table, sizes, cfg, timings, embeddings, notes) -> dict:
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
        "cluster_sizes": _cluster_sizes(sizes),
        "warnings": list(notes),
        "timings_s": timings,
    }


def _examples(table, embeddings: Embeddings, eps: float, n_examples: int = 12) -> dict:
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
    return {"eps": eps, "removed": int(len(removed)), "examples": examples}


def _summary_figure(max_sim, sizes, cfg):
    """Kept fraction against eps, and the histogram of cluster sizes (a matplotlib figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    eps = np.geomspace(1e-4, 0.5, 60)
    a.semilogx(eps, kept_fraction_curve(max_sim, eps), "-")
    for e in cfg.eps:
        a.axvline(e, color="gray", lw=0.6, ls=":")
    a.set_xlabel("eps (remove when max similarity > 1 - eps)")
    a.set_ylabel("fraction kept")
    a.set_ylim(0, 1.02)
    a.grid(alpha=0.3)
    b.hist(sizes, bins=min(50, max(5, cfg.n_clusters // 4)))
    b.set_xlabel("cluster size")
    b.set_ylabel("clusters")
    b.set_title(f"k = {cfg.n_clusters}", fontsize=9)
    fig.tight_layout()
    return fig
