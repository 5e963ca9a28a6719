"""Requests to a model and their results (HELM's ``Request`` / ``RequestResult`` / ``RequestState``).

A :class:`Request` is everything that determines a model's answer: model, prompt, decoding settings. Its
:meth:`Request.cache_key` (canonical JSON of all fields) keys the request cache, so two requests share a cached
result only when every field is equal. A :class:`RequestResult` holds the completions (text, summed log
probability, per-token log probabilities) and the observed ``request_time`` in seconds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from dlscience.errors import InputValidationError
from dlscience.evaluation.scenario import Instance

__all__ = ["Request", "Token", "GeneratedOutput", "RequestResult", "RequestState", "ScenarioState"]


@dataclass(frozen=True)
class Request:
    """One call to a model.

    Parameters
    ----------
    model : str
        Model name, e.g. ``"smollm2-135m-instruct"``.
    prompt : str
        The full prompt text.
    temperature : float
        0 means greedy decoding.
    num_completions : int
    max_tokens : int
        Tokens to generate; 0 with ``echo_prompt`` scores the prompt only (language modelling, MC-separate).
    stop_sequences : tuple of str
        Generation stops before the first of these.
    echo_prompt : bool
        Return the prompt's tokens with their log probabilities before the completion.
    top_k_per_token : int
    use_chat_template : bool
        Wrap the prompt as one user turn of the model's chat template (instruction-tuned models).
    """

    model: str
    prompt: str
    temperature: float = 0.0
    num_completions: int = 1
    max_tokens: int = 100
    stop_sequences: tuple[str, ...] = ()
    echo_prompt: bool = False
    top_k_per_token: int = 1
    use_chat_template: bool = False

    def __post_init__(self):
        object.__setattr__(self, "stop_sequences", tuple(self.stop_sequences))
        if self.max_tokens < 0 or self.num_completions < 1:
            raise InputValidationError(
                f"Request needs max_tokens >= 0 and num_completions >= 1, got {self.max_tokens}, "
                f"{self.num_completions}"
            )
        if self.max_tokens == 0 and not self.echo_prompt:
            raise InputValidationError("a Request with max_tokens=0 must set echo_prompt (nothing to return)")

    def to_json(self) -> dict:
        d = asdict(self)
        d["stop_sequences"] = list(self.stop_sequences)
        return d

    def cache_key(self) -> str:
        """Canonical JSON of every field: the request cache's key."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Token:
    """A token's text and its log probability under the model."""

    text: str
    logprob: float


@dataclass(frozen=True)
class GeneratedOutput:
    """One completion: its text (prompt included when echoed), summed ``logprob`` and ``tokens``."""

    text: str
    logprob: float
    tokens: tuple[Token, ...] = ()
    finish_reason: str | None = None


@dataclass(frozen=True)
class RequestResult:
    """A model's answer to a :class:`Request`.

    ``request_time`` is the observed wall time in seconds of the call that produced it (kept when the result
    later comes from the cache, with ``cached=True``)."""

    success: bool
    completions: tuple[GeneratedOutput, ...] = ()
    request_time: float | None = None
    cached: bool = False
    error: str | None = None

    def to_json(self) -> dict:
        return {
            "success": self.success,
            "completions": [
                {
                    "text": c.text,
                    "logprob": c.logprob,
                    "tokens": [[t.text, t.logprob] for t in c.tokens],
                    "finish_reason": c.finish_reason,
                }
                for c in self.completions
            ],
            "request_time": self.request_time,
            "cached": self.cached,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, d: dict) -> RequestResult:
        return cls(
            success=d["success"],
            completions=tuple(
                GeneratedOutput(
                    c["text"],
                    c["logprob"],
                    tuple(Token(t, lp) for t, lp in c.get("tokens", ())),
                    c.get("finish_reason"),
                )
                for c in d.get("completions", ())
            ),
            request_time=d.get("request_time"),
            cached=d.get("cached", False),
            error=d.get("error"),
        )


@dataclass
class RequestState:
    """An instance, the request made for it and the result (HELM's ``RequestState``).

    ``reference_index`` is set for MC-separate requests (which choice is scored) and ``request_mode`` is
    ``"original"`` or ``"calibration"`` (the null-prompt request of MC-separate-calibrated);
    ``output_mapping`` maps MC-joint letters to reference texts; ``continuation`` is the text whose log
    probability the request scores (MC-separate and language modelling); ``num_train_instances`` counts the
    in-context examples left after fitting the window."""

    instance: Instance
    request: Request
    train_trial_index: int = 0
    reference_index: int | None = None
    request_mode: str | None = None
    output_mapping: dict[str, str] | None = None
    continuation: str | None = None
    num_train_instances: int = 0
    prompt_truncated: bool = False
    result: RequestResult | None = None

    def to_json(self, *, all_prompt_tokens: bool = False) -> dict:
        """JSON record; for echoed prompts only the tokens that cover ``continuation`` are kept (the ones the
        metrics read; ``tokens_omitted`` counts the others) unless ``all_prompt_tokens``."""
        result = None if self.result is None else self.result.to_json()
        if result is not None and self.request.echo_prompt and self.continuation and not all_prompt_tokens:
            for comp in result["completions"]:
                tokens, length, keep = comp["tokens"], 0, 0
                while keep < len(tokens) and length < len(self.continuation):
                    length += len(tokens[len(tokens) - 1 - keep][0])
                    keep += 1
                comp["tokens_omitted"] = len(tokens) - keep
                comp["tokens"] = tokens[len(tokens) - keep :]
        return {
            "instance": self.instance.to_json(),
            "request": self.request.to_json(),
            "train_trial_index": self.train_trial_index,
            "reference_index": self.reference_index,
            "request_mode": self.request_mode,
            "output_mapping": self.output_mapping,
            "continuation": self.continuation,
            "num_train_instances": self.num_train_instances,
            "prompt_truncated": self.prompt_truncated,
            "result": result,
        }


@dataclass
class ScenarioState:
    """The adapter spec and every request state of one run (written as ``scenario_state.json``)."""

    adapter_spec: dict
    request_states: list[RequestState] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "adapter_spec": self.adapter_spec,
            "request_states": [rs.to_json() for rs in self.request_states],
        }
