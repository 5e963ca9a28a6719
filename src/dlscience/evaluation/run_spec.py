"""A run: one scenario x one adapter spec x one model, with its metric groups and perturbations (HELM's
``RunSpec``). Its :attr:`RunSpec.name` reads like HELM's run entries, ``wordnet_synonym:model=smollm2``."""

from __future__ import annotations

from dataclasses import dataclass, field

from dlscience.errors import InputValidationError
from dlscience.evaluation.adapter_spec import AdapterSpec

__all__ = ["METRIC_GROUPS", "RunSpec"]

#: The seven metric groups of HELM (Liang et al. 2022, §4).
METRIC_GROUPS = ("accuracy", "calibration", "robustness", "fairness", "bias", "toxicity", "efficiency")


@dataclass(frozen=True)
class RunSpec:
    """What one run evaluates.

    Parameters
    ----------
    scenario : str
        A registered scenario name (see :mod:`dlscience.evaluation.registry`).
    adapter_spec : AdapterSpec
    metric_groups : tuple of str
        Subset of :data:`METRIC_GROUPS`.
    perturbations : tuple of str
        Perturbation names (see :mod:`dlscience.evaluation.perturbations`); robustness and fairness need some.
    scenario_args : dict
        Keyword arguments of the scenario's constructor.
    groups : tuple of str
        Leaderboard groups the run belongs to.
    """

    scenario: str
    adapter_spec: AdapterSpec
    metric_groups: tuple[str, ...] = METRIC_GROUPS
    perturbations: tuple[str, ...] = ()
    scenario_args: dict = field(default_factory=dict)
    groups: tuple[str, ...] = ()

    def __post_init__(self):
        bad = [g for g in self.metric_groups if g not in METRIC_GROUPS]
        if bad:
            raise InputValidationError(
                f"unknown metric group(s) {bad}; choose from {', '.join(METRIC_GROUPS)}"
            )
        object.__setattr__(self, "metric_groups", tuple(self.metric_groups))
        object.__setattr__(self, "perturbations", tuple(self.perturbations))
        object.__setattr__(self, "groups", tuple(self.groups))

    @property
    def name(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in sorted(self.scenario_args.items()))
        return f"{self.scenario}:{args + ',' if args else ''}model={self.adapter_spec.model}"

    @property
    def folder_name(self) -> str:
        """The run's folder name: :attr:`name` with characters unsafe in paths replaced."""
        return "".join(c if c.isalnum() or c in "-_.=,:" else "_" for c in self.name).replace(":", "_")

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "scenario_spec": {"name": self.scenario, "args": dict(self.scenario_args)},
            "adapter_spec": self.adapter_spec.to_json(),
            "metric_groups": list(self.metric_groups),
            "data_augmenter_spec": {"perturbations": list(self.perturbations), "include_original": True},
            "groups": list(self.groups),
        }

    @classmethod
    def from_json(cls, d: dict) -> RunSpec:
        return cls(
            scenario=d["scenario_spec"]["name"],
            scenario_args=d["scenario_spec"].get("args", {}),
            adapter_spec=AdapterSpec.from_json(d["adapter_spec"]),
            metric_groups=tuple(d["metric_groups"]),
            perturbations=tuple(d["data_augmenter_spec"]["perturbations"]),
            groups=tuple(d.get("groups", ())),
        )
