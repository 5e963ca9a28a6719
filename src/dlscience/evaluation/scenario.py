"""Scenarios, instances and references: what a language model is evaluated on (HELM, Liang et al. 2022, §3).

A :class:`Scenario` produces :class:`Instance` objects; each has an ``input`` text, a list of
:class:`Reference` outputs (those tagged ``"correct"`` are gold answers), a ``split`` (train / valid / test), an
optional ``sub_split`` (a group, for fairness by group), an ``id`` and, once perturbed, the ``perturbation`` that
made it. The field names and meanings are HELM's (``helm.benchmark.scenarios.scenario``), so a ``scenario_state.json``
reads like HELM's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from dlscience.errors import InputValidationError

__all__ = [
    "CORRECT_TAG",
    "TRAIN_SPLIT",
    "VALID_SPLIT",
    "TEST_SPLIT",
    "EVAL_SPLITS",
    "Reference",
    "Instance",
    "PerturbationDescription",
    "Scenario",
    "with_ids",
]

CORRECT_TAG = "correct"
TRAIN_SPLIT, VALID_SPLIT, TEST_SPLIT = "train", "valid", "test"
EVAL_SPLITS = (VALID_SPLIT, TEST_SPLIT)


@dataclass(frozen=True)
class Reference:
    """One possible output of an instance; ``tags`` containing ``"correct"`` marks a gold answer."""

    output: str
    tags: tuple[str, ...] = ()

    @property
    def is_correct(self) -> bool:
        return CORRECT_TAG in self.tags


@dataclass(frozen=True)
class PerturbationDescription:
    """What perturbed an instance (HELM's ``PerturbationDescription``).

    ``robustness`` / ``fairness`` say which worst-case aggregate the perturbation feeds; ``computed_on`` is
    ``"perturbed"`` for a stat measured on the perturbed input, ``"worst"`` for the min over the original and the
    perturbed one(s), ``"original"`` for the same instances unperturbed."""

    name: str
    robustness: bool = False
    fairness: bool = False
    computed_on: str = "perturbed"

    def label(self) -> str:
        return self.name if self.computed_on == "perturbed" else f"{self.name}:{self.computed_on}"


@dataclass(frozen=True)
class Instance:
    """An input with its references.

    Parameters
    ----------
    input : str
    references : tuple of Reference
        For multiple choice, the choices in order; for generation, the acceptable answers.
    split : str
        ``"train"`` (in-context examples), ``"valid"`` or ``"test"``.
    sub_split : str, optional
        A group label (e.g. part of speech), reported as its own stats.
    id : str, optional
        Assigned ``id0, id1, ...`` by :func:`with_ids` when missing; perturbed copies keep the original's id.
    perturbation : PerturbationDescription, optional
    """

    input: str
    references: tuple[Reference, ...]
    split: str = TEST_SPLIT
    sub_split: str | None = None
    id: str | None = None
    perturbation: PerturbationDescription | None = None

    def __post_init__(self):
        if not isinstance(self.input, str):
            raise InputValidationError(f"Instance.input must be a string, got {type(self.input).__name__}")
        if self.split not in (TRAIN_SPLIT, VALID_SPLIT, TEST_SPLIT):
            raise InputValidationError(f"Instance.split must be train, valid or test, got {self.split!r}")
        object.__setattr__(self, "references", tuple(self.references))

    @property
    def correct_references(self) -> list[Reference]:
        return [r for r in self.references if r.is_correct]

    @property
    def first_correct_reference(self) -> Reference | None:
        refs = self.correct_references
        return refs[0] if refs else None

    def to_json(self) -> dict:
        d = asdict(self)
        d["references"] = [{"output": r.output, "tags": list(r.tags)} for r in self.references]
        return d

    @classmethod
    def from_json(cls, d: dict) -> Instance:
        p = d.get("perturbation")
        return cls(
            input=d["input"],
            references=tuple(Reference(r["output"], tuple(r.get("tags", ()))) for r in d["references"]),
            split=d.get("split", TEST_SPLIT),
            sub_split=d.get("sub_split"),
            id=d.get("id"),
            perturbation=PerturbationDescription(**p) if p else None,
        )


def with_ids(instances: list[Instance]) -> list[Instance]:
    """Give every instance without an id the id ``id<i>`` (its index), as HELM's runner does."""
    return [inst if inst.id is not None else replace(inst, id=f"id{i}") for i, inst in enumerate(instances)]


class Scenario:
    """A source of instances. Subclass it, set the class attributes and implement :meth:`get_instances`;
    register it with :func:`dlscience.evaluation.registry.register_scenario` (one file is enough).

    Class attributes
    ----------------
    name, description : str
    tags : tuple of str
    default_method : str
        The adaptation method that fits the scenario (see :mod:`dlscience.evaluation.adapter_spec`).
    adapter_overrides : dict
        Prompt pieces of the scenario's :class:`~dlscience.evaluation.adapter_spec.AdapterSpec`
        (``instructions``, ``input_prefix``, ...).
    main_metric : str
        The accuracy metric shown on the leaderboard (``exact_match`` for multiple choice,
        ``quasi_exact_match`` or ``f1_score`` for generation, ``bits_per_byte`` for language modelling).
    reference_metrics : tuple of str
        Accuracy metrics computed for generation (see :mod:`dlscience.evaluation.metrics.accuracy`).
    """

    name: str = "scenario"
    description: str = ""
    tags: tuple[str, ...] = ()
    default_method: str = "generation"
    adapter_overrides: dict = {}
    main_metric: str = "quasi_exact_match"
    reference_metrics: tuple[str, ...] = ("exact_match", "quasi_exact_match", "f1_score")

    def get_instances(self, seed: int = 0) -> list[Instance]:  # pragma: no cover - abstract
        """All instances (train and evaluation splits); deterministic for a given ``seed``."""
        raise NotImplementedError
