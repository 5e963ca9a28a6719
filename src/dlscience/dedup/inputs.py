"""Reading and checking SemDeDup's inputs: embeddings (``.npy``, parquet) with ids, and raw text (jsonl,
parquet, plain text).

Every problem a user can cause (ragged or non-finite vectors, duplicate ids, a missing column) is raised as an
:class:`~dlscience.errors.InputValidationError` that names the file, the row and the fix, before anything is
written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlscience.dedup.semdedup import require_numpy
from dlscience.errors import InputValidationError, UserError
from dlscience.results import load_npy, read_parquet

__all__ = ["Embeddings", "open_embeddings", "check_embeddings", "check_ids", "read_texts", "parquet_columns"]

CHECK_BATCH = 65536


@dataclass
class Embeddings:
    """Embeddings and their ids, as read by :func:`open_embeddings`.

    Attributes
    ----------
    vectors : array-like (N, d)
        float rows; a read-only memory map for ``.npy`` input (never loaded whole).
    ids : ndarray (N,)
        Unique ids (int64 or str); row numbers when the input has none.
    source : str
        Where they came from (for messages and the manifest).
    texts : ndarray (N,) of str or None
        The embedded texts, when known (shown with example duplicate pairs).
    """

    vectors: object
    ids: np.ndarray
    source: str
    texts: np.ndarray | None = None


def parquet_columns(path: str | Path) -> list[str]:
    """The column names of a parquet file, from its footer.

    Raises
    ------
    DamagedFileError
        If the file is truncated or not parquet, naming it.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dlscience.results import _damaged

    try:
        return pq.read_schema(path).names
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise _damaged(path, "parquet file", exc, None) from None


def _decode(data: bytes, path: Path) -> str:
    """``data`` as UTF-8 text, or a one-line error naming the file, line and byte offset of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputValidationError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at byte offset {exc.start}, line {line}); "
            "convert it to UTF-8, e.g. `iconv -f latin1 -t utf-8`"
        ) from None


def check_ids(ids, n: int, source: str = "input") -> np.ndarray:
    """Validate ids: one per row, unique, int or str. Returns them as an int64 or str ndarray (N,).

    Raises
    ------
    InputValidationError
        If the count differs from n, an id is missing, or an id repeats (the first repeat is named).
    """
    require_numpy(ids, "ids", "check_ids")
    arr = np.asarray(ids)
    if arr.ndim != 1 or len(arr) != n:
        raise InputValidationError(
            f"{source}: {len(arr)} ids for {n} embeddings; give exactly one id per row"
        )
    if arr.dtype.kind in "iu":
        arr = arr.astype(np.int64)
    elif arr.dtype.kind in "OUS":
        if arr.dtype.kind == "O" and any(v is None for v in arr.tolist()):
            raise InputValidationError(f"{source}: an id is missing (null); every row needs an id")
        arr = arr.astype(str)
    else:
        raise InputValidationError(f"{source}: ids must be integers or strings, got dtype {arr.dtype}")
    uniq, counts = np.unique(arr, return_counts=True)
    if len(uniq) != n:
        dup = uniq[counts > 1][0].item()
        rows = np.flatnonzero(arr == dup)[:3].tolist()
        raise InputValidationError(
            f"{source}: duplicate id {dup!r} (rows {rows}); ids must be unique (deduplicate exact repeats first, "
            "or use row numbers by omitting the id column)"
        )
    return arr


def check_embeddings(vectors, source: str = "input") -> tuple[int, int]:
    """Check embeddings without loading them whole: 2-D, numeric, at least one row, finite and non-zero rows.

    Returns
    -------
    (N, d)

    Raises
    ------
    InputValidationError
        Naming the first offending row; a torch tensor (convert with ``.numpy()``).
    """
    require_numpy(vectors, "embeddings", "check_embeddings")
    shape = getattr(vectors, "shape", None)
    if shape is None or len(shape) != 2:
        raise InputValidationError(f"{source}: embeddings must be a 2-D array (N, d), got shape {shape}")
    n, d = shape
    if n < 1 or d < 1:
        raise InputValidationError(f"{source}: embeddings are empty (shape {shape})")
    if np.dtype(vectors.dtype).kind not in "fiu":
        raise InputValidationError(f"{source}: embeddings must be numbers, got dtype {vectors.dtype}")
    for a in range(0, n, CHECK_BATCH):
        block = np.asarray(vectors[a : a + CHECK_BATCH], dtype=np.float64)
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            i = a + int(np.flatnonzero(~finite)[0])
            raise InputValidationError(
                f"{source}: embedding row {i} has NaN or inf values; drop or re-embed it"
            )
        zero = ~block.any(axis=1)
        if zero.any():
            i = a + int(np.flatnonzero(zero)[0])
            raise InputValidationError(
                f"{source}: embedding row {i} is all zeros (no direction for cosine similarity); drop it"
            )
    return int(n), int(d)


def _read_ids_file(path: Path) -> np.ndarray:
    if not path.is_file():
        raise UserError(
            f"no ids file at {path} (--ids); give a .npy, .parquet or text file with one id per row"
        )
    if path.suffix == ".npy":
        return np.asarray(load_npy(path, mmap=False, what="ids array"))
    if path.suffix == ".parquet":
        table = read_parquet(path, what="ids table")
        if not table.num_columns:
            raise InputValidationError(f"{path}: no columns; give the ids in the first column")
        return table.column(0).to_numpy(zero_copy_only=False)
    return np.asarray(_decode(path.read_bytes(), path).splitlines())


def open_embeddings(
    path: str | Path,
    *,
    column: str = "embedding",
    id_column: str | None = None,
    ids: str | Path | None = None,
) -> Embeddings:
    """Open embeddings from a ``.npy`` file (memory-mapped), a parquet file (a list or fixed-size-list column),
    or a folder written by ``dlscience semdedup embed`` / :func:`~dlscience.dedup.embed.embed_folder`.

    Parameters
    ----------
    path : path
        ``.npy`` (N, d) float array, ``.parquet``, or an embed folder (``embeddings.npy`` + ``items.parquet``).
    column : str
        Parquet column holding the vectors.
    id_column : str, optional
        Parquet column holding the ids (default: ``id`` if present, else row numbers).
    ids : path, optional
        For ``.npy`` input: ids as ``.npy``, one-column ``.parquet`` or text (one per line).

    Returns
    -------
    Embeddings

    Raises
    ------
    UserError
        Missing file or column; ragged, non-finite or zero vectors; duplicate or missing ids.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"no embeddings at {path}; give a .npy or .parquet file or an embed folder")
    texts = None
    if path.is_dir():
        if not (path / "embeddings.npy").exists():
            raise UserError(
                f"{path} has no embeddings.npy; run `dlscience semdedup embed TEXTS --out {path}`"
            )
        if not (path / "items.parquet").exists():
            raise UserError(
                f"{path} has no items.parquet; embed the texts again with `dlscience semdedup embed`"
            )
        fix = f"embed the texts again with `dlscience semdedup embed TEXTS --out {path}`"
        items = read_parquet(path / "items.parquet", what="items table (id, text)", fix=fix)
        vectors = load_npy(path / "embeddings.npy", what="embeddings array", fix=fix)
        if "id" not in items.column_names or items.num_rows != len(vectors):
            raise UserError(
                f"{path}: items.parquet does not match embeddings.npy ({items.num_rows} rows for "
                f"{len(vectors)} vectors); {fix}"
            )
        id_values = items.column("id").to_numpy(zero_copy_only=False)
        if "text" in items.column_names:
            texts = items.column("text").to_numpy(zero_copy_only=False)
        source = str(path)
    elif path.suffix == ".npy":
        vectors = load_npy(path, what="numeric .npy array")
        id_values = _read_ids_file(Path(ids)) if ids is not None else np.arange(len(vectors), dtype=np.int64)
        source = str(path)
    elif path.suffix == ".parquet":
        vectors, id_values = _read_parquet_embeddings(path, column, id_column)
        source = str(path)
    else:
        raise UserError(f"{path}: unknown embeddings format; use .npy, .parquet or an embed folder")
    check_embeddings(vectors, source)
    return Embeddings(vectors, check_ids(id_values, len(vectors), source), source, texts)


def _read_parquet_embeddings(path: Path, column: str, id_column: str | None):
    import pyarrow as pa
    import pyarrow.compute as pc

    names = parquet_columns(path)
    if column not in names:
        raise InputValidationError(f"{path}: no column {column!r} (columns: {names}); pass --column NAME")
    if id_column is None:
        id_column = "id" if "id" in names else None
    elif id_column not in names:
        raise InputValidationError(f"{path}: no id column {id_column!r} (columns: {names})")
    table = read_parquet(path, columns=[column] + ([id_column] if id_column else []), what="embeddings table")
    col = table.column(column).combine_chunks()
    if pa.types.is_fixed_size_list(col.type):
        d = col.type.list_size
    elif pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        if col.null_count or len(np.unique(lengths)) > 1:
            i = int(np.flatnonzero(lengths != np.median(lengths))[0]) if not col.null_count else -1
            where = f"row {i} has length {lengths[i]}" if i >= 0 else "a row is null"
            raise InputValidationError(
                f"{path}: column {column!r} is ragged ({where}); every embedding must have the same length"
            )
        d = int(lengths[0]) if len(lengths) else 0
    else:
        raise InputValidationError(
            f"{path}: column {column!r} has type {col.type}; expected a list of floats"
        )
    flat = col.flatten().to_numpy(zero_copy_only=False)
    vectors = np.asarray(flat, dtype=np.float32).reshape(len(col), d)
    ids = (
        table.column(id_column).to_numpy(zero_copy_only=False)
        if id_column
        else np.arange(len(col), dtype=np.int64)
    )
    return vectors, ids


def read_texts(path: str | Path, *, text_field: str = "text", id_field: str | None = None):
    """Read texts to embed: jsonl (one object per line), parquet (a string column) or plain text (one text per
    non-blank line).

    Parameters
    ----------
    path : path
    text_field : str
        jsonl key / parquet column with the text.
    id_field : str, optional
        jsonl key / parquet column with the id (default ``id`` when present, else the row number; for plain
        text, the 0-based line number).

    Returns
    -------
    ids : ndarray (N,) int64 or str
    texts : list of str

    Raises
    ------
    UserError
        Missing file or field, text that is not UTF-8 (naming the line and byte offset), a damaged parquet file,
        a non-string text, duplicate ids, or no texts.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no text file at {path}" + (" (a folder)" if path.is_dir() else ""))
    if path.suffix in (".jsonl", ".json"):
        ids, texts = [], []
        for lineno, line in enumerate(_decode(path.read_bytes(), path).split("\n"), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputValidationError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict) or not isinstance(obj.get(text_field), str):
                raise InputValidationError(
                    f"{path}:{lineno}: no string field {text_field!r}; pass --text-field NAME"
                )
            texts.append(obj[text_field])
            if id_field is not None and id_field not in obj:
                raise InputValidationError(f"{path}:{lineno}: no id field {id_field!r} (--id-field)")
            key = id_field or ("id" if "id" in obj else None)
            ids.append(obj[key] if key else len(ids))
    elif path.suffix == ".parquet":
        table = read_parquet(path, what="parquet file of texts")
        if text_field not in table.column_names:
            raise InputValidationError(f"{path}: no column {text_field!r} (columns: {table.column_names})")
        texts = table.column(text_field).to_pylist()
        if any(not isinstance(t, str) for t in texts):
            raise InputValidationError(f"{path}: column {text_field!r} has a null or non-string value")
        if id_field is not None and id_field not in table.column_names:
            raise InputValidationError(f"{path}: no id column {id_field!r} (columns: {table.column_names})")
        key = id_field or ("id" if "id" in table.column_names else None)
        ids = table.column(key).to_pylist() if key else list(range(len(texts)))
    else:
        ids, texts = [], []
        for i, line in enumerate(_decode(path.read_bytes(), path).splitlines()):
            if line.strip():
                ids.append(i)
                texts.append(line)
    if not texts:
        raise InputValidationError(f"{path}: no texts found")
    return check_ids(np.asarray(ids), len(texts), str(path)), texts
