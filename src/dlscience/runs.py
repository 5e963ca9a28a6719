"""The run folder: one output folder per run, shared by every ``dlscience`` job.

A :class:`RunFolder` is the ``--out`` of a command. It

* computes a **fingerprint** of the run's identity: the settings that determine the results and digests of
  the inputs (files, arrays, models);
* keeps a **manifest** (``manifest.json``) with the command, the fingerprint, all settings, the inputs'
  digests, the environment (Python, platform, library versions, command line), every file the run wrote, the
  job's resume ``state`` and whether the run finished;
* **resumes** a folder holding the same fingerprint, and **refuses** one holding results of another run (naming
  the settings that differ) unless ``overwrite``: then every file the old run wrote is removed first, derived
  files included;
* writes every file **atomically** (a temporary name renamed into place), so an interrupted run leaves no
  half-written file, and registers it in the manifest;
* turns SIGTERM into an interruption and an interruption into one line that says whether anything was saved
  (:class:`RunInterrupted`).

Use::

    run = RunFolder(out, "els sample", settings, identity=identity_settings, inputs={"images": digest},
                    overwrite=args.overwrite, legacy=("checkpoint.pt",))
    with run:
        state = run.load_checkpoint()            # None on a fresh run
        ...
        run.save_checkpoint(state)               # after every unit of work
        run.write_json("run.json", summary)      # every output goes through the run folder
        run.finish()

Folders written before manifests existed hold a job's known files but no ``manifest.json``: with
``adopt_legacy=True`` (jobs whose own checkpoint still checks its settings) they are resumed, otherwise they are
refused with a message saying to rerun with ``--overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dlscience.errors import UserError
from dlscience.results import (
    _jsonable,
    load_torch,
    read_json,
    save_figure,
    save_torch,
    write_json,
    write_npy,
    write_npz,
    write_parquet,
)

__all__ = [
    "RunFolder",
    "RunInterrupted",
    "fingerprint",
    "digest_file",
    "digest_array",
    "environment",
    "MANIFEST",
    "FORMAT",
    "handle_termination",
]

MANIFEST = "manifest.json"
FORMAT = "dlscience-run/1"


class RunInterrupted(KeyboardInterrupt):
    """An interrupted run (SIGINT or SIGTERM); its message says what was saved and how to resume.

    The CLI prints the message as one line and exits with status 130."""


def fingerprint(identity: Any) -> str:
    """16 hex digits of SHA-256 over the canonical JSON of ``identity`` (dict keys sorted).

    Parameters
    ----------
    identity : JSON-serialisable (numpy/torch values and paths are converted)

    Returns
    -------
    str
    """
    text = json.dumps(_jsonable(identity), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def digest_file(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """SHA-256 (16 hex digits) of a file's bytes, read in chunks of ``chunk`` bytes.

    Raises
    ------
    UserError
        If the file does not exist or cannot be read.
    """
    path = Path(path)
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    return h.hexdigest()[:16]


def digest_array(array) -> str:
    """SHA-256 (16 hex digits) of an array's shape, dtype and bytes (numpy array or torch tensor)."""
    import numpy as np

    if hasattr(array, "detach"):
        array = array.detach().cpu().contiguous().numpy()
    array = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{array.shape}|{array.dtype}".encode())
    h.update(memoryview(array).cast("B") if array.size else b"")
    return h.hexdigest()[:16]


def environment() -> dict:
    """Where and with what a run was made: Python, platform, dlscience and library versions, command line."""
    from dlscience import __version__

    env = {
        "dlscience": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "argv": list(sys.argv),
        "cpus": os.cpu_count(),
    }
    for name in ("numpy", "torch", "pyarrow", "faiss", "transformers"):
        module = sys.modules.get(name)
        if module is not None:
            env[name] = getattr(module, "__version__", None)
    return env


def _describe_differences(old: Mapping, new: Mapping) -> list[str]:
    """``key old -> new`` for every key whose value differs (JSON-compared; nested dicts by dotted key)."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            diffs += [f"{key}.{d}" for d in _describe_differences(a, b)]
        elif json.dumps(_jsonable(a), sort_keys=True) != json.dumps(_jsonable(b), sort_keys=True):
            diffs.append(f"{key} {_short(a)} -> {_short(b)}")
    return diffs


def _short(value) -> str:
    text = json.dumps(_jsonable(value), sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


class RunFolder:
    """One run's output folder: fingerprint, manifest, resume state, refusal/overwrite and atomic writes.

    Parameters
    ----------
    out : str or Path
        The folder (created when the run opens). An existing file there is refused.
    command : str
        The command, e.g. ``"els sample"`` (recorded; a folder of another command is refused).
    settings : dict
        Every setting of the run, recorded in the manifest (JSON-serialisable).
    identity : dict, optional
        The settings that must match for a resume (default: all of ``settings``); settings left out may change
        between sessions (e.g. the number of steps of a run being extended, a data folder's location).
    inputs : dict, optional
        Digests of the inputs (see :func:`digest_file`, :func:`digest_array`), part of the identity.
    overwrite : bool
        Replace a run of another identity instead of refusing it: every file it wrote is removed first.
    outputs : sequence of str
        Names this command writes (also removed by ``overwrite`` in a folder without a manifest).
    legacy : sequence of str
        Files that, in a folder without a manifest, show a run of this command written before manifests.
    adopt_legacy : bool
        Resume such a folder (its own checkpoint then checks the settings) instead of refusing it.

    Raises (when opened)
    --------------------
    UserError
        ``out`` is a file; it holds another run (another command or identity) or files of unknown origin and
        ``overwrite`` is False; its manifest is damaged.
    """

    def __init__(
        self,
        out: str | Path,
        command: str,
        settings: Mapping[str, Any],
        *,
        identity: Mapping[str, Any] | None = None,
        inputs: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        outputs: Sequence[str] = (),
        legacy: Sequence[str] = (),
        adopt_legacy: bool = False,
    ):
        self.out = Path(out)
        self.command = command
        self.settings = dict(_jsonable(dict(settings)))
        self.identity = dict(_jsonable(dict(settings if identity is None else identity)))
        self.inputs = dict(_jsonable(dict(inputs or {})))
        self.fingerprint = fingerprint({"command": command, "identity": self.identity, "inputs": self.inputs})
        self.overwrite = overwrite
        self.outputs = tuple(outputs)
        self.legacy = tuple(legacy)
        self.adopt_legacy = adopt_legacy
        self.manifest: dict = {}
        self.resumed = False
        self.checkpointed = False  # some progress has been saved (now or in an earlier session)
        self._checkpoints: list[Path] = []  # files written by a job's own checkpointing (see checkpoint_path)
        self._opened = False
        self._old_handlers: dict = {}

    # ------------------------------------------------------------------------------------------ opening
    @property
    def manifest_path(self) -> Path:
        return self.out / MANIFEST

    @property
    def state(self) -> dict:
        """The job's resume state kept in the manifest (a plain JSON dict; save it with :meth:`save_state`)."""
        return self.manifest.setdefault("state", {})

    @property
    def finished(self) -> bool:
        """True when the folder holds a finished run of this identity."""
        return bool(self.manifest.get("finished"))

    def open(self) -> RunFolder:
        """Check the folder, then resume it, adopt it, or start it (removing another run with ``overwrite``).

        Returns
        -------
        RunFolder
            ``self``, with ``resumed`` set and ``manifest`` loaded or new.
        """
        if self._opened:
            return self
        from dlscience.cli_options import out_is_file_message

        if self.out.exists() and not self.out.is_dir():
            raise UserError(out_is_file_message(self.out))
        old = self._read_manifest()
        adopted = None
        if old is not None and old.get("fingerprint") == self.fingerprint:
            self.manifest = old
            self.resumed = True
        elif old is not None:
            if not self.overwrite:
                raise UserError(self._refusal(old))
            self._remove(old.get("files", []))
        else:
            present = self._present_files()
            known = set(self.legacy) | set(self.outputs)
            if present:
                legacy_run = bool(set(present) & set(self.legacy)) and set(present) <= known
                if legacy_run and self.adopt_legacy and not self.overwrite:
                    adopted = sorted(present)
                elif not self.overwrite:
                    raise UserError(
                        f"{self.out} was written by an earlier dlscience, before run manifests; rerun with "
                        "--overwrite to start it afresh, or use another --out"
                        if legacy_run
                        else f"{self.out} holds files that no `dlscience {self.command}` run wrote "
                        f"({', '.join(sorted(present)[:4])}{', ...' if len(present) > 4 else ''}); use an "
                        "empty or new --out, or --overwrite to replace this command's outputs there"
                    )
                else:
                    self._remove([name for name in present if name in known])
        if not self.resumed:
            self.resumed = adopted is not None
            self.manifest = {
                "format": FORMAT,
                "command": f"dlscience {self.command}",
                "fingerprint": self.fingerprint,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "files": [],
                "state": {},
                "finished": False,
            }
            if adopted is not None:
                self.manifest["files"] = adopted
        self.manifest.update(
            {
                "settings": self.settings,
                "identity": self.identity,
                "inputs": self.inputs,
                "environment": environment(),
            }
        )
        self.checkpointed = self.resumed
        self.out.mkdir(parents=True, exist_ok=True)
        self._write_manifest()
        self._opened = True
        return self

    def _read_manifest(self) -> dict | None:
        if not self.manifest_path.exists():
            return None
        try:
            data = read_json(self.manifest_path, what="run manifest")
        except UserError:
            if self.overwrite:
                return {"fingerprint": None, "files": []}
            raise UserError(
                f"{self.manifest_path} is damaged (not the JSON this program writes); rerun with --overwrite "
                "to start afresh, or use another --out"
            ) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            return None  # an earlier version's manifest (dedup's): treated as a folder without a manifest
        return data

    def _present_files(self) -> list[str]:
        if not self.out.is_dir():
            return []
        return sorted(p.name for p in self.out.iterdir() if not p.name.startswith("."))

    def _refusal(self, old: dict) -> str:
        if old.get("command") != f"dlscience {self.command}":
            what = f"results of `{old.get('command')}`"
        else:
            what = f"a `dlscience {self.command}` run of other settings"
        diffs = _describe_differences(old.get("identity", {}), self.identity)
        diffs += _describe_differences(
            {f"input {k}": v for k, v in old.get("inputs", {}).items()},
            {f"input {k}": v for k, v in self.inputs.items()},
        )
        detail = f" (differs: {'; '.join(diffs[:6])}{'; ...' if len(diffs) > 6 else ''})" if diffs else ""
        state = "finished" if old.get("finished") else "unfinished"
        return (
            f"{self.out} holds {what}, {state}{detail}; repeat the earlier settings, use another --out, or pass "
            "--overwrite to replace them"
        )

    def _remove(self, names: Iterable[str]) -> None:
        for name in set(names) | {MANIFEST}:
            path = self.out / name
            if (
                path.resolve().parent != self.out.resolve()
                and self.out.resolve() not in path.resolve().parents
            ):
                continue  # never outside the run folder
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def _write_manifest(self) -> None:
        self.manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        write_json(self.manifest_path, self.manifest)

    # ------------------------------------------------------------------------------------------ context
    def __enter__(self) -> RunFolder:
        self.open()
        self._old_handlers = handle_termination()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers = {}
        if (
            exc_type is not None
            and issubclass(exc_type, KeyboardInterrupt)
            and exc_type is not RunInterrupted
        ):
            raise RunInterrupted(self.interrupted_message()) from None
        return False

    def interrupted_message(self) -> str:
        """The one line printed when this run is interrupted."""
        if self.checkpointed or any(p.exists() for p in self._checkpoints):
            return f"interrupted; progress is saved in {self.out}: run the same command again to resume"
        return f"interrupted before the first checkpoint: nothing was saved in {self.out}"

    # ------------------------------------------------------------------------------------------ files
    def path(self, name: str) -> Path:
        """``out / name``, registered as a file (or folder) this run writes; ``name`` is relative."""
        top = Path(name).parts[0]
        if top not in self.manifest.setdefault("files", []):
            self.manifest["files"] = sorted({*self.manifest["files"], top})
            if self._opened:
                self._write_manifest()
        return self.out / name

    def checkpoint_path(self, name: str = "checkpoint.pt") -> Path:
        """Like :meth:`path`, for a checkpoint that the job (or a :class:`TrainingCheckpoint`) writes itself: an
        interruption counts as "progress is saved" once that file exists."""
        path = self.path(name)
        self._checkpoints.append(path)
        return path

    def write_json(self, name: str, data) -> Path:
        """Write ``data`` as JSON to ``out/name`` atomically (see :func:`dlscience.results.write_json`)."""
        return write_json(self.path(name), data)

    def write_npz(self, name: str, **arrays) -> Path:
        """Compressed ``.npz`` atomically."""
        return write_npz(self.path(name), **arrays)

    def write_npy(self, name: str, array) -> Path:
        """One ``.npy`` array atomically."""
        return write_npy(self.path(name), array)

    def write_parquet(self, name: str, table, *, metadata: dict[str, str] | None = None) -> Path:
        """A pyarrow table as parquet atomically."""
        return write_parquet(self.path(name), table, metadata=metadata)

    def save_figure(self, name: str, fig) -> Path:
        """A matplotlib figure atomically (closed afterwards)."""
        return save_figure(self.path(name), fig)

    def save_torch(self, name: str, obj) -> Path:
        """``torch.save`` atomically."""
        return save_torch(self.path(name), obj)

    def remove(self, name: str) -> None:
        """Delete ``out/name`` (a file or folder) and forget it."""
        self._remove([name])
        self.manifest["files"] = [f for f in self.manifest.get("files", []) if f != Path(name).parts[0]]
        self._write_manifest()

    # ------------------------------------------------------------------------------------------ resume
    def load_checkpoint(self, name: str = "checkpoint.pt"):
        """The object saved by :meth:`save_checkpoint` under ``name``, or None when there is none.

        Raises
        ------
        UserError
            If the file is damaged (ours are written atomically, so it was truncated or replaced by something
            else), naming it and the fix.
        """
        path = self.out / name
        if not path.exists():
            return None
        obj = load_torch(
            path, what="checkpoint", fix="delete it to restart this run, or rerun with --overwrite"
        )
        self.checkpointed = True
        return obj

    def save_checkpoint(self, obj, name: str = "checkpoint.pt") -> Path:
        """Save resume state atomically under ``name`` (torch format, tensors and plain containers)."""
        path = self.save_torch(name, obj)
        self.checkpointed = True
        return path

    def save_state(self) -> None:
        """Persist :attr:`state` (small JSON resume state) in the manifest."""
        self.checkpointed = True
        self._write_manifest()

    def finish(self, **record) -> None:
        """Mark the run finished (optionally recording ``record`` in the manifest)."""
        self.manifest.update(_jsonable(record))
        self.manifest["finished"] = True
        self._write_manifest()


def handle_termination() -> dict:
    """Make SIGTERM raise KeyboardInterrupt in the main thread (as SIGINT does), so a terminated run cleans up
    and reports like an interrupted one. Returns the previous handlers ({} outside the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def _raise(signum, frame):
        raise KeyboardInterrupt

    old = {signal.SIGTERM: signal.getsignal(signal.SIGTERM)}
    signal.signal(signal.SIGTERM, _raise)
    return old
