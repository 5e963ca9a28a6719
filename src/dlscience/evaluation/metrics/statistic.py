"""Statistics records (HELM's ``Stat`` and ``MetricName``): a metric's name, split, sub-split and perturbation,
with count, sum, sum of squares, min, max, mean and population variance / standard deviation. NaN and None
values are dropped, as in HELM."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from dlscience.evaluation.scenario import PerturbationDescription

__all__ = ["MetricName", "Stat", "merge_into"]


@dataclass(frozen=True)
class MetricName:
    """Which metric, on which part of the data."""

    name: str
    split: str | None = None
    sub_split: str | None = None
    perturbation: PerturbationDescription | None = None

    def to_json(self) -> dict:
        d = {"name": self.name}
        if self.split is not None:
            d["split"] = self.split
        if self.sub_split is not None:
            d["sub_split"] = self.sub_split
        if self.perturbation is not None:
            p = self.perturbation
            d["perturbation"] = {
                "name": p.name,
                "robustness": p.robustness,
                "fairness": p.fairness,
                "computed_on": p.computed_on,
            }
        return d

    @classmethod
    def from_json(cls, d: dict) -> MetricName:
        p = d.get("perturbation")
        return cls(d["name"], d.get("split"), d.get("sub_split"), PerturbationDescription(**p) if p else None)

    def with_(self, **changes) -> MetricName:
        return replace(self, **changes)


@dataclass
class Stat:
    """Running statistics of one metric's values."""

    name: MetricName
    count: int = 0
    sum: float = 0.0
    sum_squared: float = 0.0
    min: float | None = None
    max: float | None = None
    _values: list = field(default_factory=list, repr=False)

    def add(self, value) -> Stat:
        if value is None:
            return self
        value = float(value)
        if math.isnan(value):
            return self
        self.count += 1
        self.sum += value
        self.sum_squared += value * value
        self.min = value if self.min is None else min(self.min, value)
        self.max = value if self.max is None else max(self.max, value)
        return self

    def merge(self, other: Stat) -> Stat:
        if other.count == 0:
            return self
        self.count += other.count
        self.sum += other.sum
        self.sum_squared += other.sum_squared
        self.min = other.min if self.min is None else min(self.min, other.min)
        self.max = other.max if self.max is None else max(self.max, other.max)
        return self

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    @property
    def variance(self) -> float | None:
        """Population variance."""
        if not self.count:
            return None
        return max(0.0, self.sum_squared / self.count - self.mean**2)

    @property
    def stddev(self) -> float | None:
        v = self.variance
        return None if v is None else math.sqrt(v)

    def to_json(self) -> dict:
        return {
            "name": self.name.to_json(),
            "count": self.count,
            "sum": self.sum,
            "sum_squared": self.sum_squared,
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "variance": self.variance,
            "stddev": self.stddev,
        }

    @classmethod
    def from_json(cls, d: dict) -> Stat:
        return cls(
            MetricName.from_json(d["name"]),
            d["count"],
            d["sum"],
            d["sum_squared"],
            d.get("min"),
            d.get("max"),
        )


def merge_into(table: dict[MetricName, Stat], stat: Stat) -> None:
    """Merge ``stat`` into ``table[stat.name]`` (creating it)."""
    table.setdefault(stat.name, Stat(stat.name)).merge(stat)
