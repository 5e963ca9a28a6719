"""Metric definitions against hand-computed values (checks 1-4, 8, 9, 11, 12 of the HELM note, part E(A))."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from dlscience.evaluation.metrics.accuracy import (
    continuation_logprob,
    exact_match,
    f1_score,
    normalize_text,
    prefix_exact_match,
    quasi_exact_match,
    score_choices,
    score_generation,
)
from dlscience.evaluation.metrics.bias import (
    association_bias,
    bias_metrics,
    group_counts_to_bias,
    representation_bias,
)
from dlscience.evaluation.metrics.calibration import (
    calibration_metrics,
    ece,
    ece_equal_mass,
    equal_mass_bins,
    selective_stats,
)
from dlscience.evaluation.metrics.efficiency import RuntimeProfile, fit_runtime, idealized_runtime
from dlscience.evaluation.metrics.statistic import MetricName, Stat
from dlscience.evaluation.metrics.toxicity import toxicity_metrics
from dlscience.evaluation.metrics.win_rate import win_rates
from dlscience.evaluation.request import Token


# ---------------------------------------------------------------------------------------- accuracy (check 4)
def test_normalization_and_matches():
    assert normalize_text("The  cat, sat on A mat!") == "cat sat on mat"
    assert quasi_exact_match("The cat!", "cat") == 1
    assert exact_match("cat", " cat ") == 1
    assert exact_match("Cat", "cat") == 0
    assert quasi_exact_match("Cat", "cat") == 1
    assert exact_match("cat", "") == 0 and quasi_exact_match("cat", "") == 0 and f1_score("cat", "") == 0
    assert prefix_exact_match("yes", "yes, Elmendorf") == 1
    assert f1_score("x x y", "x y") == 1.0  # sets of tokens
    # gold {big, red, dog}, pred {red, dog, barks}: P = R = 2/3, F1 = 2/3
    assert f1_score("the big red dog", "a red dog barks") == pytest.approx(2 / 3)


def test_generation_score_is_max_over_golds_and_predictions():
    s = score_generation(
        ["a book", "book"], ["A book.", "pen"], ["exact_match", "quasi_exact_match", "f1_score"]
    )
    assert s == {"exact_match": 0.0, "quasi_exact_match": 1.0, "f1_score": 1.0}


def test_multiple_choice_separate_ties_and_max_prob():
    em, max_prob, pred = score_choices([-1.0, -1.0, -3.0], correct=[1])
    assert em == 0.5 and pred == 0  # two tied choices, one correct
    z = np.exp([-1.0, -1.0, -3.0])
    assert max_prob == pytest.approx(z.max() / z.sum())
    assert score_choices([-2.0, -0.5], correct=[1])[0] == 1.0


def test_continuation_logprob_takes_the_tokens_covering_the_continuation():
    tokens = [Token("Answer", -1.0), Token(":", -0.5), Token(" red", -2.0), Token(" wine", -3.0)]
    assert continuation_logprob(tokens, "red wine") == (-5.0, 2)
    assert continuation_logprob(tokens, "wine") == (-3.0, 1)


# ---------------------------------------------------------------------------------------- calibration
def test_perfect_calibration_has_zero_ece():  # check 1
    probs, correct = [1.0] * 20, [1] * 20
    assert ece(probs, correct, 1) == 0.0 and ece_equal_mass(probs, correct, 10) == 0.0
    m = calibration_metrics(probs, correct)
    assert m["ece_1_bin"] == 0 and m["ece_10_bin"] == 0
    assert m["platt_ece_1_bin"] == 0 and "platt_coef" not in m  # all right: Platt skipped, as HELM


def test_ece_one_bin_hand_value():  # check 2
    assert ece([0.9, 0.9, 0.6, 0.6], [1, 0, 1, 0], 1) == pytest.approx(0.25)


def test_equal_mass_bins_hold_ten_points_and_ignore_order():  # check 3
    rng = np.random.default_rng(0)
    probs = rng.uniform(0.2, 1.0, 100)
    correct = (rng.uniform(size=100) < probs).astype(int)
    edges = equal_mass_bins(probs, 10)
    index = np.searchsorted(edges, probs)
    assert len(edges) == 10 and np.bincount(index).tolist() == [10] * 10
    perm = rng.permutation(100)
    assert ece_equal_mass(probs, correct, 10) == pytest.approx(ece_equal_mass(probs[perm], correct[perm], 10))
    # against the definition: mean |conf - acc| over the 10 sorted groups of 10
    order = np.argsort(probs)
    by_hand = np.mean([abs(probs[g].mean() - correct[g].mean()) for g in np.split(order, 10)])
    assert ece_equal_mass(probs, correct, 10) == pytest.approx(by_hand)


def test_equal_mass_ece_small_hand_case():
    # 4 points, 2 bins: {0.2, 0.4} acc 0 -> |0.3 - 0| ; {0.6, 0.8} acc 1 -> |0.7 - 1|; mean 0.3
    assert ece_equal_mass([0.8, 0.2, 0.6, 0.4], [1, 0, 1, 0], 2) == pytest.approx(0.3)


def test_selective_accuracy():
    # sorted by confidence: correct 1, 0, 1, 1 -> running acc 1, 1/2, 2/3, 3/4
    area, acc10 = selective_stats([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 1])
    assert area == pytest.approx((1 + 0.5 + 2 / 3 + 0.75) / 4)
    assert acc10 == 1.0  # index floor(0.1 * 4) = 0


def test_platt_scaling_reduces_calibration_error():
    rng = np.random.default_rng(1)
    true_p = rng.uniform(0.3, 0.9, 400)
    correct = (rng.uniform(size=400) < true_p).astype(int)
    overconfident = np.clip(true_p + 0.09, 0, 0.999)
    m = calibration_metrics(overconfident.tolist(), correct.tolist())
    assert m["platt_ece_1_bin"] < m["ece_1_bin"]
    assert m["platt_coef"] > 0


# ---------------------------------------------------------------------------------------- bias (check 8)
def test_bias_total_variation_distance():
    assert group_counts_to_bias([3, 3], [20, 20]) == 0.0
    assert group_counts_to_bias([5, 0], [20, 20]) == pytest.approx(0.5)
    assert group_counts_to_bias([7, 0, 0], [20, 16, 20]) == pytest.approx(1 - 1 / 3)
    assert group_counts_to_bias([0, 0], [20, 20]) is None
    # counts are divided by the list sizes first: 2/4 vs 1/1 -> p = (1/3, 2/3), TV = 1/6
    assert group_counts_to_bias([2, 1], [4, 1]) == pytest.approx(1 / 6)


def test_representation_and_association():
    groups = {"female": ["she", "her"], "male": ["he", "him"]}
    assert representation_bias(["She said he left.", "He ran."], groups) == pytest.approx(1 / 6)
    # "nurse": she x1 in text 1 -> (1, 0); "doctor": he x1 in text 2 -> (0, 1); each TV 0.5
    assert association_bias(
        ["she is a nurse", "he is a doctor"], groups, ["nurse", "doctor"]
    ) == pytest.approx(0.5)
    assert representation_bias(["no people here"], groups) is None
    m = bias_metrics(["she is a nurse", "he is a doctor"])
    assert m["bias_metric:mode=representation,demographic_category=gender"] == 0.0
    assert m["bias_metric:mode=representation,demographic_category=race"] is None


# ---------------------------------------------------------------------------------------- toxicity
def test_toxicity_unavailable_without_scorer_and_exact_with_one():
    assert toxicity_metrics(["some text"], None) == {}
    m = toxicity_metrics(["a", "b", ""], lambda texts: [0.7 if t == "a" else 0.1 for t in texts])
    assert m == {"expected_max_toxicity": 0.7, "max_toxicity_probability": 1.0, "toxic_frac": 0.5}


# ---------------------------------------------------------------------------------------- win rate (check 9)
def test_win_rates():
    table = [[0.9, 0.1], [0.5, 0.5], [0.1, 0.9]]
    # column 1 higher is better, column 2 lower is better: row 0 best in both
    assert win_rates(table, [False, True]) == [1.0, 0.5, 0.0]
    assert win_rates([[0.3], [0.3]], [False]) == [0.5, 0.5]
    # ties: values 1, 1, 0 -> wins (1 + 0.5)/2 = 0.75 for the tied rows, 0 for the last
    assert win_rates([[1.0], [1.0], [0.0]], [False]) == [0.75, 0.75, 0.0]
    assert win_rates([[1.0], [None]], [False]) == [None, None]  # fewer than 2 values: skipped


# ---------------------------------------------------------------------------------------- stats (check 11)
def test_stat_mean_and_population_variance():
    s = Stat(MetricName("exact_match"))
    for v in [1, 0, 1]:
        s.add(v)
    assert s.mean == pytest.approx(2 / 3) and s.variance == pytest.approx(2 / 9)
    b = Stat(MetricName("x")).add(True).add(False).add(float("nan")).add(None)
    assert b.count == 2 and b.mean == 0.5
    merged = Stat(MetricName("exact_match")).merge(s).merge(b)
    assert merged.count == 5 and merged.min == 0 and merged.max == 1


# ---------------------------------------------------------------------------------------- efficiency (check 12)
def test_idealized_runtime():
    profile = RuntimeProfile({256: 0.5, 1024: 1.0}, runtime_per_output_token=0.02, overhead=0.1)
    # 100 prompt tokens: smallest key >= 100 is 256 -> 0.5 * 100/256
    assert idealized_runtime(profile, 100, 0) == pytest.approx(0.5 * 100 / 256 + 0.1)
    assert idealized_runtime(profile, 100, 1) == pytest.approx(0.5 * 100 / 256 + 0.1)
    slope = idealized_runtime(profile, 100, 11) - idealized_runtime(profile, 100, 1)
    assert slope == pytest.approx(10 * 0.02)
    assert idealized_runtime(profile, 2048, 0) == pytest.approx(1.0 * 2 + 0.1)  # linear beyond the last key


def test_runtime_fit_recovers_linear_costs():
    rng = random.Random(0)
    n_p = [rng.randint(10, 500) for _ in range(30)]
    n_o = [rng.randint(0, 50) for _ in range(30)]
    t = [0.05 + 0.001 * p + 0.02 * o for p, o in zip(n_p, n_o, strict=True)]
    fit = fit_runtime(t, n_p, n_o)
    assert fit["fitted_runtime_overhead"] == pytest.approx(0.05)
    assert fit["fitted_runtime_per_prompt_token"] == pytest.approx(0.001)
    assert fit["fitted_runtime_per_output_token"] == pytest.approx(0.02)
    assert fit_runtime([1.0, 2.0], [1, 2], [0, 0]) == {}
    # a negative slope (noise) is dropped and the rest refitted: prompt lengths balanced over output lengths,
    # so the refit gives the output slope 0.1 and the overhead 1 - 0.001 * mean(n_prompt) = 0.97
    n_out, n_prompt = [1, 2, 3, 4] * 2, [10] * 4 + [50] * 4
    noisy = fit_runtime(
        [1 + 0.1 * o - 0.001 * p for o, p in zip(n_out, n_prompt, strict=True)], n_prompt, n_out
    )
    assert noisy["fitted_runtime_per_prompt_token"] == 0.0
    assert noisy["fitted_runtime_per_output_token"] == pytest.approx(0.1)
    assert noisy["fitted_runtime_overhead"] == pytest.approx(0.97)
    assert math.isfinite(fit["fitted_runtime_overhead"])
