"""Experiment (issue 4, not run in CI): SemDeDup end to end from text on a real corpus, the 117,659 WordNet 3.0
glosses of Debian's ``wordnet-base`` (``sudo apt-get install wordnet-base``).

Steps (each resumable; repeat the command after an interruption):
    1. write the glosses as jsonl (id = part of speech + synset offset, e.g. ``n00217014``);
    2. embed them offline with all-MiniLM-L6-v2 (``dlscience semdedup embed``);
    3. SemDeDup with k = sqrt(N) and, for the research note's check 12, with k / 7 (``semdedup dedup``);
    4. write ``results/semdedup_wordnet/``: ``table.md`` (eps -> kept fraction for both k, and the overlap of
       their kept sets), ``summary.json``, ``summary.png`` and ``examples.json`` (removed glosses next to the
       gloss that removed them).

Run: ``python experiments/semdedup_wordnet.py [--work out/semdedup-wordnet]`` (about 15-30 minutes on 2 cores,
nearly all of it embedding).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from dlscience.data.text import load_wordnet_glosses
from dlscience.dedup import SemDeDupConfig, open_embeddings, run_semdedup
from dlscience.dedup.clustering import default_n_clusters
from dlscience.dedup.embed import embed_folder
from dlscience.results import write_json

EPS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", default="out/semdedup-wordnet", help="scratch folder (embeddings, runs)")
    parser.add_argument("--results", default="results/semdedup_wordnet", help="where the small outputs go")
    parser.add_argument("--workers", type=int, default=None, help="Dask workers (default: CPU count)")
    args = parser.parse_args()
    work, results = Path(args.work), Path(args.results)
    ids, glosses = load_wordnet_glosses()
    embed_folder(np.asarray(ids), glosses, work / "embed")
    emb = open_embeddings(work / "embed")
    k = default_n_clusters(len(ids))
    runs = {}
    for name, n_clusters in (("k", k), ("k/7", max(1, round(k / 7)))):
        folder = work / f"k{n_clusters}"
        summary = run_semdedup(
            emb, folder, SemDeDupConfig(n_clusters=n_clusters, eps=EPS), workers=args.workers
        )
        runs[name] = (n_clusters, folder, summary)
    kept = {
        name: pq.read_table(folder / "semdedup.parquet", columns=[f"keep_{e:g}" for e in EPS])
        for name, (_, folder, _) in runs.items()
    }
    lines = [
        f"WordNet 3.0 glosses (N = {len(ids)}), all-MiniLM-L6-v2, hard order, seed 0.",
        "",
        f"| eps | kept, k = {runs['k'][0]} | kept, k = {runs['k/7'][0]} | same decision on |",
        "|---:|---:|---:|---:|",
    ]
    agreement = {}
    for e in EPS:
        a = kept["k"].column(f"keep_{e:g}").to_numpy(zero_copy_only=False)
        b = kept["k/7"].column(f"keep_{e:g}").to_numpy(zero_copy_only=False)
        agreement[f"{e:g}"] = float((a == b).mean())
        lines.append(f"| {e:g} | {a.mean():.1%} | {b.mean():.1%} | {(a == b).mean():.1%} |")
    results.mkdir(parents=True, exist_ok=True)
    (results / "table.md").write_text("\n".join(lines) + "\n")
    main_folder = runs["k"][1]
    for name in ("summary.json", "summary.png", "examples.json"):
        shutil.copyfile(main_folder / name, results / name)
    write_json(
        results / "k_comparison.json",
        {
            "n": len(ids),
            "n_clusters": {name: n for name, (n, _, _) in runs.items()},
            "kept_fraction": {
                name: {e: row["kept_fraction"] for e, row in s["kept"].items()}
                for name, (_, _, s) in runs.items()
            },
            "same_decision_fraction": agreement,
        },
    )
    print("\n".join(lines))
    examples = json.loads((results / "examples.json").read_text())["examples"][:5]
    for ex in examples:
        print(f"\n{ex['max_sim']:.4f}  removed: {ex['text']}\n        kept:    {ex['max_text']}")


if __name__ == "__main__":
    main()
