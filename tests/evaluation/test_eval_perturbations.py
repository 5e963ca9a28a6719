"""Perturbations and worst-case aggregation (checks 5-7 of the HELM note, part E(A))."""

from __future__ import annotations

from random import Random

import pytest

from dlscience.evaluation.metrics.statistic import MetricName, Stat
from dlscience.evaluation.metrics.worst_case import worst_case_stats
from dlscience.evaluation.perturbations import (
    ContractionPerturbation,
    DialectPerturbation,
    GenderPerturbation,
    LowerCasePerturbation,
    MildMixPerturbation,
    MisspellingPerturbation,
    SpacePerturbation,
    TyposPerturbation,
    make_perturbation,
)
from dlscience.evaluation.scenario import CORRECT_TAG, Instance, PerturbationDescription, Reference

TEXT = "After their Marriage, she started 3 close collaborations with Karvelas (in 1999)!"


def _instance(text=TEXT, answer="Paris, France") -> Instance:
    return Instance(text, (Reference(answer, (CORRECT_TAG,)),), id="id7")


# ---------------------------------------------------------------------------------------- typos (check 5)
def test_typos_identity_determinism_and_adjacent_keys():
    assert TyposPerturbation(0.0).perturb(TEXT, Random(0)) == TEXT
    pert = TyposPerturbation(0.5)
    a, b = pert.apply(_instance()), pert.apply(_instance())
    assert a.input == b.input != TEXT  # same (id, seed): same output
    assert pert.apply(_instance(), seed=1).input != a.input
    assert len(a.input) == len(TEXT)
    changed = 0
    for old, new in zip(TEXT, a.input, strict=True):
        if not old.isalpha():
            assert new == old  # digits, punctuation and spaces untouched
            continue
        assert old.isupper() == new.isupper()  # case kept
        if old != new:
            changed += 1
            assert new.lower() in TyposPerturbation.KEYS[old.lower()]  # an adjacent key
            assert new.lower() != old.lower()
    assert changed > 5


# ---------------------------------------------------------------------------------------- check 6
def test_lowercase_idempotent_and_mild_mix_keeps_references():
    low = LowerCasePerturbation()
    once = low.perturb(TEXT, Random(0))
    assert low.perturb(once, Random(0)) == once == TEXT.lower()
    inst = _instance()
    mixed = MildMixPerturbation().apply(inst)
    assert mixed.references == inst.references
    assert mixed.input != inst.input and mixed.id == inst.id
    assert mixed.perturbation.name == "mild_mix" and mixed.perturbation.robustness


def test_single_robustness_perturbations():
    rng = Random(0)
    assert (
        ContractionPerturbation().perturb("She is a doctor and I am not here", rng)
        == "She's a doctor and I'm not here"
    )
    assert ContractionPerturbation().perturb("it is", rng) == "it is"  # only before a space
    spaced = SpacePerturbation(3).perturb("a b c d e f g", Random(1))
    gaps = spaced.replace("a", "|").replace("b", "|").split("|")[1:2]
    assert spaced.split() == list("abcdefg") and all(1 <= len(g) <= 3 for g in gaps)
    assert MisspellingPerturbation(1.0).perturb("which people", Random(0)) in {
        "whcih poeple",
        "wich poeple",
        "whcih peopel",
        "wich peopel",
    }
    # as in HELM the list's words match case-sensitively: a capitalised word is left alone
    assert MisspellingPerturbation(1.0).perturb("Which", Random(0)) == "Which"


def test_fairness_perturbations_change_references_too():
    g = GenderPerturbation().apply(_instance("Tom gave his sister a book for him.", "his sister"))
    # as in HELM, a word needs a non-word character on both sides: the reference's leading "his" stays
    assert g.input == "Tom gave her sister a book for her."
    assert g.perturbation.fairness and not g.perturbation.robustness
    d = DialectPerturbation().apply(_instance("Is this the one with them?", "the other one"))
    assert d.input == "Is dis da one wit em?"
    assert d.references[0].output == "the other one"  # no boundary before the first word (HELM's pattern)
    with pytest.raises(ValueError):
        make_perturbation("synonym")


# ---------------------------------------------------------------------------------------- worst case (check 7)
def _stat(value, perturbation=None):
    return Stat(MetricName("exact_match", "test", None, perturbation)).add(value)


TYPO = PerturbationDescription("typos", robustness=True)
LOWER = PerturbationDescription("lowercase", robustness=True)
GENDER = PerturbationDescription("gender", fairness=True)


def _find(stats, pert, computed_on):
    return next(
        s
        for s in stats
        if s.name.perturbation.name == pert and s.name.perturbation.computed_on == computed_on
    )


def test_worst_case_is_the_per_instance_minimum():
    per_instance = [
        ("id0", [_stat(1, None), _stat(0, TYPO), _stat(1, LOWER), _stat(1, GENDER)]),
        ("id1", [_stat(1, None), _stat(1, TYPO), _stat(1, LOWER), _stat(0, GENDER)]),
        ("id2", [_stat(0, None), _stat(1, TYPO), _stat(1, LOWER), _stat(1, GENDER)]),
    ]
    stats = worst_case_stats(per_instance)
    # robustness: min(orig, typos, lowercase) per instance = 0, 1, 0 -> 1/3; fairness: 1, 0, 0 -> 1/3
    assert _find(stats, "robustness", "worst").mean == pytest.approx(1 / 3)
    assert _find(stats, "fairness", "worst").mean == pytest.approx(1 / 3)
    assert _find(stats, "typos", "worst").mean == pytest.approx(1 / 3)
    assert _find(stats, "lowercase", "worst").mean == pytest.approx(2 / 3)
    assert _find(stats, "typos", "original").mean == pytest.approx(2 / 3)
    original = 2 / 3
    for s in stats:
        if s.name.perturbation.computed_on == "worst":
            assert s.mean <= original + 1e-12


def test_a_no_op_perturbation_leaves_the_metric_unchanged():
    per_instance = [(f"id{i}", [_stat(v, None), _stat(v, LOWER)]) for i, v in enumerate([1, 0, 1, 1])]
    stats = worst_case_stats(per_instance)
    assert _find(stats, "robustness", "worst").mean == pytest.approx(0.75)
    assert _find(stats, "lowercase", "worst").mean == pytest.approx(0.75)
