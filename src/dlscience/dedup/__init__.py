"""SemDeDup: semantic de-duplication with embeddings, spherical k-means and within-cluster cosine similarity
(Abbas, Tirumala, Simig, Ganguli & Morcos 2023, arXiv 2303.09540).

* :mod:`~dlscience.dedup.semdedup` -- the within-cluster rule (Algorithm A7) and its rank orders;
* :mod:`~dlscience.dedup.clustering` -- spherical k-means with faiss;
* :mod:`~dlscience.dedup.pipeline` -- :func:`semdedup` in memory, :func:`run_semdedup` /
  :func:`run_text_semdedup` on disk (a resumable run folder, parallel with Dask), :func:`extract` and
  :func:`extract_subsets` to re-threshold;
* :mod:`~dlscience.dedup.inputs` / :mod:`~dlscience.dedup.embed` -- embeddings and texts in, offline MiniLM.
"""

from dlscience.dedup.inputs import Embeddings, open_embeddings, read_texts
from dlscience.dedup.pipeline import (
    SemDeDupConfig,
    SemDeDupWarning,
    extract,
    extract_subsets,
    kept_fraction_curve,
    run_semdedup,
    run_text_semdedup,
    semdedup,
)
from dlscience.dedup.semdedup import earlier_max_similarity, keep_mask, rank_members

__all__ = [
    "semdedup",
    "run_semdedup",
    "run_text_semdedup",
    "extract",
    "extract_subsets",
    "SemDeDupConfig",
    "SemDeDupWarning",
    "Embeddings",
    "open_embeddings",
    "read_texts",
    "earlier_max_similarity",
    "keep_mask",
    "rank_members",
    "kept_fraction_curve",
]
