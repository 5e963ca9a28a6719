"""Adaptation: instances -> prompts -> requests (HELM's adapters, Liang et al. 2022, §3.2 and App. J).

Steps for each train trial ``t`` (seed ``t``):

1. choose the in-context examples from the train split (:func:`sample_examples`: labels ordered by how many
   train instances have them, most frequent first, ties shuffled; then one example per label in turn);
2. build each evaluation instance's prompt from the :class:`~dlscience.evaluation.adapter_spec.AdapterSpec`;
3. fit it in the context window: drop in-context examples from the end one at a time until prompt + expected
   completion fits, then cut the prompt from the right (:class:`~dlscience.evaluation.window_service.WindowService`);
4. make the request(s): one per instance (generation, MC-joint, language modelling) or one per choice (plus one
   null-prompt request per choice for MC-separate-calibrated).
"""

from __future__ import annotations

import random
import string
from collections import defaultdict

from dlscience.evaluation.adapter_spec import (
    ADAPT_GENERATION,
    ADAPT_LANGUAGE_MODELING,
    ADAPT_MULTIPLE_CHOICE_JOINT,
    ADAPT_MULTIPLE_CHOICE_SEPARATE_CALIBRATED,
    AdapterSpec,
)
from dlscience.evaluation.request import Request, RequestState
from dlscience.evaluation.scenario import TRAIN_SPLIT, Instance
from dlscience.evaluation.window_service import WindowService

__all__ = ["Adapter", "sample_examples", "LETTERS"]

LETTERS = string.ascii_uppercase


def sample_examples(train: list[Instance], k: int, seed: int) -> list[Instance]:
    """HELM's in-context example choice: up to ``k`` train instances, one per label in turn, labels ordered by
    frequency (ties shuffled with ``random.Random(seed)``), unlabelled instances last."""
    rng = random.Random(seed)
    k = min(k, len(train))
    by_label: dict[str, list[Instance]] = defaultdict(list)
    unlabelled = []
    for inst in train:
        ref = inst.first_correct_reference
        (by_label[ref.output] if ref is not None else unlabelled).append(inst)
    labels = list(by_label)
    rng.shuffle(labels)
    labels.sort(key=lambda lab: -len(by_label[lab]))  # stable: ties keep the shuffled order
    pools = {lab: rng.sample(by_label[lab], len(by_label[lab])) for lab in labels}
    chosen: list[Instance] = []
    while len(chosen) < k and any(pools.values()):
        for lab in labels:
            if pools[lab] and len(chosen) < k:
                chosen.append(pools[lab].pop())
    rest = rng.sample(unlabelled, len(unlabelled))
    return chosen + rest[: k - len(chosen)]


class Adapter:
    """Turns instances into request states for one adapter spec.

    Parameters
    ----------
    spec : AdapterSpec
    window : WindowService
    """

    def __init__(self, spec: AdapterSpec, window: WindowService):
        self.spec = spec
        self.window = window

    # ------------------------------------------------------------------------------------------ text
    def _choices_block(self, inst: Instance) -> str:
        s = self.spec
        return "".join(
            s.reference_prefix.replace("A", LETTERS[i], 1) + ref.output + s.reference_suffix
            for i, ref in enumerate(inst.references)
        )

    def _output(self, inst: Instance, reference_index: int | None) -> str:
        if self.spec.method == ADAPT_MULTIPLE_CHOICE_JOINT:
            correct = [i for i, r in enumerate(inst.references) if r.is_correct]
            return LETTERS[correct[0]] if correct else ""
        if reference_index is not None:
            return inst.references[reference_index].output
        ref = inst.first_correct_reference
        return ref.output if ref is not None else ""

    def example_block(self, inst: Instance, include_output: bool, reference_index: int | None = None) -> str:
        """``input_prefix + input + input_suffix [+ choices] + output_prefix [+ output + output_suffix]``; without
        the output, the output prefix is right-stripped (the prompt does not end in a space)."""
        s = self.spec
        text = s.input_prefix + inst.input + s.input_suffix
        if s.method == ADAPT_MULTIPLE_CHOICE_JOINT:
            text += self._choices_block(inst)
        if include_output:
            return text + s.output_prefix + self._output(inst, reference_index) + s.output_suffix
        return text + s.output_prefix.rstrip()

    def prompt(self, train: list[Instance], eval_block: str) -> str:
        """Instructions, in-context examples and the evaluation block, separated by ``instance_prefix``."""
        blocks = [self.example_block(t, include_output=True) for t in train] + [eval_block]
        head = self.spec.instructions + "\n" if self.spec.instructions else ""
        return head + self.spec.instance_prefix.join(blocks)

    def fit(self, train: list[Instance], eval_block: str, completion_tokens: int) -> tuple[str, int, bool]:
        """The prompt with as many in-context examples as fit, their number, and whether it was cut."""
        n = len(train)
        while n > 0:
            text = self.prompt(train[:n], eval_block)
            if self.window.fits_within_context_window(text, completion_tokens):
                return text, n, False
            n -= 1
        text = self.prompt([], eval_block)
        if self.window.fits_within_context_window(text, completion_tokens):
            return text, 0, False
        return self.window.truncate_from_right(text, completion_tokens), 0, True

    # ------------------------------------------------------------------------------------------ requests
    def _request(self, prompt: str, *, max_tokens: int | None = None, echo: bool = False) -> Request:
        s = self.spec
        return Request(
            model=s.model,
            prompt=prompt,
            temperature=s.temperature,
            num_completions=s.num_outputs,
            max_tokens=s.max_tokens if max_tokens is None else max_tokens,
            stop_sequences=s.stop_sequences,
            echo_prompt=echo,
            use_chat_template=s.use_chat_template,
        )

    def adapt(self, instances: list[Instance], eval_instances: list[Instance]) -> list[RequestState]:
        """Request states for every evaluation instance and train trial.

        Parameters
        ----------
        instances : list of Instance
            All instances (the train split supplies in-context examples).
        eval_instances : list of Instance
            The (possibly perturbed) instances to evaluate, in order.
        """
        s = self.spec
        train_all = [i for i in instances if i.split == TRAIN_SPLIT]
        states: list[RequestState] = []
        for trial in range(s.num_train_trials):
            train = sample_examples(train_all, s.max_train_instances, trial) if s.max_train_instances else []
            for inst in eval_instances:
                states += self._adapt_one(inst, train, trial)
        return states

    def _adapt_one(self, inst: Instance, train: list[Instance], trial: int) -> list[RequestState]:
        s = self.spec
        if s.method in (ADAPT_GENERATION, ADAPT_MULTIPLE_CHOICE_JOINT):
            text, n, cut = self.fit(train, self.example_block(inst, include_output=False), s.max_tokens)
            mapping = (
                {LETTERS[i]: r.output for i, r in enumerate(inst.references)}
                if s.method == ADAPT_MULTIPLE_CHOICE_JOINT
                else None
            )
            return [
                RequestState(
                    inst,
                    self._request(text),
                    trial,
                    output_mapping=mapping,
                    num_train_instances=n,
                    prompt_truncated=cut,
                )
            ]
        if s.method == ADAPT_LANGUAGE_MODELING:
            text = inst.input
            cut = not self.window.fits_within_context_window(text)
            if cut:
                text = self.window.truncate_from_right(text)
            return [
                RequestState(
                    inst,
                    self._request(text, max_tokens=0, echo=True),
                    trial,
                    continuation=text,
                    prompt_truncated=cut,
                )
            ]
        states = []
        for i, ref in enumerate(inst.references):
            block = self.example_block(inst, include_output=False) + " " + ref.output
            text, n, cut = self.fit(train, block, 0)
            states.append(
                RequestState(
                    inst,
                    self._request(text, max_tokens=0, echo=True),
                    trial,
                    reference_index=i,
                    request_mode="original",
                    continuation=ref.output,
                    num_train_instances=n,
                    prompt_truncated=cut,
                )
            )
            if s.method == ADAPT_MULTIPLE_CHOICE_SEPARATE_CALIBRATED:
                null = s.output_prefix.rstrip() + " " + ref.output
                states.append(
                    RequestState(
                        inst,
                        self._request(null, max_tokens=0, echo=True),
                        trial,
                        reference_index=i,
                        request_mode="calibration",
                        continuation=ref.output,
                    )
                )
        return states
