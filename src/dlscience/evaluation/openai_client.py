"""An OpenAI-compatible HTTP endpoint as a client (``/v1/completions``; ``/v1/chat/completions`` when the request
uses the chat template): vLLM, llama.cpp's server, text-generation-inference, or a hosted API.

Uses only the standard library (``urllib``). The API key is read from an environment variable (named by the
``api_key_env`` argument, default ``OPENAI_API_KEY``) and never written anywhere. Log probabilities come from
the ``logprobs`` field when the server returns them (0 otherwise, which switches calibration off as in HELM).
Tokenization for the context window is approximate (whitespace-led words, about 1.3 tokens each).
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request

from dlscience.errors import UserError
from dlscience.evaluation.client import Client, truncate_at_stop
from dlscience.evaluation.request import GeneratedOutput, Request, RequestResult, Token

__all__ = ["OpenAIClient"]


class OpenAIClient(Client):
    """Client of an OpenAI-compatible server.

    Parameters
    ----------
    model : str
        The model name sent to the server.
    base_url : str
        E.g. ``http://localhost:8000/v1``.
    api_key_env : str
        Environment variable holding the key (may be unset for local servers).
    timeout : float
        Seconds per HTTP request.
    max_sequence_length : int
    """

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_sequence_length: int = 4096,
    ):
        super().__init__()
        if not re.match(r"^https?://", base_url):
            raise UserError(f"--base-url must start with http:// or https://, got {base_url!r}")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_sequence_length = max_sequence_length
        self.identity = f"openai:{self.base_url}:{model}"

    def tokenize(self, text: str) -> list[str]:
        words = re.findall(r"\s*\S+|\s+", text)
        # about 1.3 tokens per word for English BPE: split long words so counts are not underestimated
        out = []
        for w in words:
            out += [w[i : i + 6] for i in range(0, len(w), 6)] if len(w) > 6 else [w]
        return out

    def _post(self, path: str, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(
            self.base_url + path, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read().decode())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:200]
            raise UserError(f"{self.base_url}{path} answered HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot reach {self.base_url}{path}: {getattr(exc, 'reason', exc)}") from None

    def _make_request(self, request: Request) -> RequestResult:
        if request.use_chat_template and not request.echo_prompt:
            return self._chat(request)
        body = {
            "model": self.model,
            "prompt": request.prompt,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "n": request.num_completions,
            "echo": request.echo_prompt,
            "logprobs": max(1, request.top_k_per_token),
        }
        if request.stop_sequences:
            body["stop"] = list(request.stop_sequences)
        data = self._post("/completions", body)
        completions = []
        for choice in data.get("choices", []):
            lp = choice.get("logprobs") or {}
            texts = lp.get("tokens") or []
            values = [v if v is not None else 0.0 for v in (lp.get("token_logprobs") or [])]
            tokens = tuple(Token(t, float(v)) for t, v in zip(texts, values, strict=False))
            text = choice.get("text", "")
            if request.echo_prompt and not text.startswith(request.prompt):
                text = request.prompt + text
            completions.append(
                GeneratedOutput(text, sum(t.logprob for t in tokens), tokens, choice.get("finish_reason"))
            )
        return RequestResult(success=True, completions=tuple(completions))

    def _chat(self, request: Request) -> RequestResult:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": request.prompt}],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "n": request.num_completions,
            "logprobs": True,
        }
        if request.stop_sequences:
            body["stop"] = list(request.stop_sequences)
        data = self._post("/chat/completions", body)
        completions = []
        for choice in data.get("choices", []):
            text, _ = truncate_at_stop(choice.get("message", {}).get("content") or "", request.stop_sequences)
            content = (choice.get("logprobs") or {}).get("content") or []
            tokens = tuple(Token(c["token"], float(c["logprob"])) for c in content)
            completions.append(
                GeneratedOutput(text, sum(t.logprob for t in tokens), tokens, choice.get("finish_reason"))
            )
        return RequestResult(success=True, completions=tuple(completions))
