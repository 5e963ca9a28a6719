"""The model-client interface: one :class:`Client` per kind of model (local transformers, OpenAI-compatible HTTP,
deterministic mock), all answering :meth:`Client.make_request` with a :class:`RequestResult`.

A client validates the request once (:meth:`make_request`, a template method), times the call and counts it in
:attr:`Client.calls`; subclasses implement :meth:`_make_request` on trusted input and :meth:`tokenize` (token
strings whose concatenation is the text, used by the window service and for per-token runtime).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import replace

from dlscience.errors import InputValidationError
from dlscience.evaluation.request import Request, RequestResult

__all__ = ["Client", "truncate_at_stop"]


def truncate_at_stop(text: str, stop_sequences) -> tuple[str, bool]:
    """``text`` cut before the first occurrence of any stop sequence, and whether one was found."""
    cut = len(text)
    for stop in stop_sequences:
        if stop:
            i = text.find(stop)
            if i != -1:
                cut = min(cut, i)
    return text[:cut], cut < len(text)


class Client(ABC):
    """A model that answers requests.

    Attributes
    ----------
    model : str
        The model name requests must carry.
    max_sequence_length : int
        Context window in tokens (prompt + generated tokens).
    calls : int
        Model calls made so far (cache hits do not count).
    identity : str
        What the request cache keys on besides the request (model file digest, endpoint): a result cached for
        one model is never served for another of the same name.
    """

    model: str = "model"
    max_sequence_length: int = 2048
    identity: str = ""

    def __init__(self):
        self.calls = 0

    def make_request(self, request: Request) -> RequestResult:
        """Answer ``request`` (validated here once; the subclass's ``_make_request`` trusts it)."""
        if request.model != self.model:
            raise InputValidationError(
                f"request for model {request.model!r} sent to the client of {self.model!r}"
            )
        self.prepare()  # loading is not part of a request's observed runtime
        self.calls += 1
        start = time.perf_counter()
        result = self._make_request(request)
        if result.request_time is None:
            result = replace(result, request_time=time.perf_counter() - start)
        return result

    @abstractmethod
    def _make_request(self, request: Request) -> RequestResult: ...

    @abstractmethod
    def tokenize(self, text: str) -> list[str]:
        """Token strings of ``text`` (their concatenation is ``text`` up to the tokenizer's normalisation)."""

    def prepare(self) -> None:
        """Load what the first request needs (model weights, connections); called before each request is
        timed, so loading never counts as inference runtime."""
        return None

    def close(self) -> None:
        """Free resources (models, connections)."""
        return None
