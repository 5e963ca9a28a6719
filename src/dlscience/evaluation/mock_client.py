"""A deterministic mock model for tests and dry runs: no weights, no network, same answer every time.

Tokens are whitespace-led words (``re.findall(r"\\s*\\S+", text)``), so a text's tokens concatenate back to it.
Each token's log probability is a fixed function of the token text (a hash), so scores, calibration and
MC-separate choices are reproducible. The generated text comes from ``respond(request)`` (default: the last word
of the prompt's last ``Input:``/``Question:`` line, or the letter ``A`` for a multiple-choice prompt) and the
reported ``request_time`` is ``base_time + time_per_token * generated tokens`` (simulated, so efficiency metrics
are exact in tests).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

from dlscience.evaluation.client import Client, truncate_at_stop
from dlscience.evaluation.request import GeneratedOutput, Request, RequestResult, Token

__all__ = ["MockClient", "mock_logprob", "mock_tokenize"]

_TOKEN = re.compile(r"\s*\S+|\s+")


def mock_tokenize(text: str) -> list[str]:
    """Whitespace-led word tokens; ``"".join(mock_tokenize(t)) == t``."""
    return _TOKEN.findall(text)


def mock_logprob(token: str) -> float:
    """A token's mock log probability in (-4, -0.01]: a fixed function of its stripped text."""
    h = int(hashlib.sha256(token.strip().encode()).hexdigest()[:8], 16)
    return -0.01 - (h % 1000) / 250.0


def _default_respond(request: Request) -> str:
    lines = [ln for ln in request.prompt.split("\n") if ln.strip()]
    if lines and re.match(r"^[A-Z]\. ", lines[-2] if len(lines) > 1 else ""):
        return "A"
    for line in reversed(lines):
        m = re.match(r"^(?:Input|Question|Word|Definition): (.*)$", line)
        if m:
            words = m.group(1).split()
            return words[-1].strip(".,;:?!") if words else ""
    return lines[-1].split()[-1] if lines and lines[-1].split() else ""


class MockClient(Client):
    """Deterministic mock model.

    Parameters
    ----------
    model : str
    respond : callable, optional
        ``respond(request) -> str``, the generated text before stop sequences are applied.
    max_sequence_length : int
    base_time, time_per_token : float
        Simulated ``request_time`` = ``base_time + time_per_token * n_generated_tokens`` seconds.
    """

    def __init__(
        self,
        model: str = "mock",
        respond: Callable[[Request], str] | None = None,
        *,
        max_sequence_length: int = 2048,
        base_time: float = 0.01,
        time_per_token: float = 0.002,
    ):
        super().__init__()
        self.model = model
        self.respond = respond or _default_respond
        self.max_sequence_length = max_sequence_length
        self.base_time = base_time
        self.time_per_token = time_per_token
        self.identity = f"mock:{model}"

    def tokenize(self, text: str) -> list[str]:
        return mock_tokenize(text)

    def _make_request(self, request: Request) -> RequestResult:
        completions = []
        for _ in range(request.num_completions):
            prefix = ""
            tokens: list[Token] = []
            if request.echo_prompt:
                prefix = request.prompt
                tokens += [Token(t, mock_logprob(t)) for t in mock_tokenize(request.prompt)]
            text, stopped = "", False
            if request.max_tokens > 0:
                text, stopped = truncate_at_stop(self.respond(request), request.stop_sequences)
                gen = mock_tokenize(text)[: request.max_tokens]
                text = "".join(gen)
                tokens += [Token(t, mock_logprob(t)) for t in gen]
            n_gen = len(tokens) - (len(mock_tokenize(request.prompt)) if request.echo_prompt else 0)
            completions.append(
                GeneratedOutput(
                    text=prefix + text,
                    logprob=sum(t.logprob for t in tokens),
                    tokens=tuple(tokens),
                    finish_reason="stop" if stopped else "length",
                )
            )
        n_gen = max(0, n_gen)
        return RequestResult(
            success=True,
            completions=tuple(completions),
            request_time=self.base_time + self.time_per_token * n_gen,
        )
