"""The request cache: an SQLite table of model answers keyed on the full request (HELM's ``prod_env/cache``,
lm-evaluation-harness's ``--use_cache``).

The key is SHA-256 of the client's identity (model name and weights digest, or endpoint) plus the request's
canonical JSON (every field: prompt, decoding settings, stop sequences, echo); the row also keeps that JSON, so
the cache can be inspected with ``sqlite3``. A rerun of the same requests makes no model call. Only successful
results are stored. Each result is committed as soon as it is computed, so an interrupted run loses nothing.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

from dlscience.errors import UserError
from dlscience.evaluation.client import Client
from dlscience.evaluation.request import Request, RequestResult

__all__ = ["RequestCache", "CachingClient"]


class RequestCache:
    """SQLite-backed request -> result store.

    Parameters
    ----------
    path : str or Path
        The database file (created with its folder).

    Raises
    ------
    UserError
        If the file exists but is not an SQLite database of this cache.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.path))
            self._db.execute("PRAGMA journal_mode=WAL")  # a commit per result stays cheap and crash-safe
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS requests (key TEXT PRIMARY KEY, client TEXT, request TEXT, "
                "result TEXT, created REAL)"
            )
            self._db.commit()
        except sqlite3.DatabaseError as exc:
            raise UserError(
                f"{self.path} is not a request cache ({exc}); delete it or pass another --cache"
            ) from None

    @staticmethod
    def key(identity: str, request: Request) -> str:
        return hashlib.sha256(f"{identity}\n{request.cache_key()}".encode()).hexdigest()

    def get(self, identity: str, request: Request) -> RequestResult | None:
        row = self._db.execute(
            "SELECT result FROM requests WHERE key = ?", (self.key(identity, request),)
        ).fetchone()
        if row is None:
            return None
        return replace(RequestResult.from_json(json.loads(row[0])), cached=True)

    def put(self, identity: str, request: Request, result: RequestResult) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO requests VALUES (?, ?, ?, ?, ?)",
            (
                self.key(identity, request),
                identity,
                request.cache_key(),
                json.dumps(result.to_json()),
                time.time(),
            ),
        )
        self._db.commit()

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]

    def close(self) -> None:
        self._db.close()


class CachingClient:
    """A client in front of a cache: answers from the cache when it can, else asks the client and stores the
    answer. ``hits`` and ``client.calls`` count both kinds; with ``cache=None`` every request goes to the
    model."""

    def __init__(self, client: Client, cache: RequestCache | None):
        self.client = client
        self.cache = cache
        self.hits = 0

    @property
    def calls(self) -> int:
        return self.client.calls

    def make_request(self, request: Request) -> RequestResult:
        if self.cache is not None:
            hit = self.cache.get(self.client.identity, request)
            if hit is not None:
                self.hits += 1
                return hit
        result = self.client.make_request(request)
        if self.cache is not None and result.success:
            self.cache.put(self.client.identity, request, result)
        return result
