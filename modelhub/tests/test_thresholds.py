"""Decision thresholds: the rule's best threshold, checked against a brute-force search."""
import json
import time

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from modelhub import thresholds


def scored_rows(n: int, seed: int, *, decimals: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probabilities (the label drawn with that probability), rounded to make ties."""
    rng = np.random.default_rng(seed)
    proba = rng.beta(1.2, 3.0, n)
    if decimals is not None:
        proba = proba.round(decimals)
    return (rng.random(n) < proba).astype(np.int8), proba


def every_threshold(proba: np.ndarray) -> np.ndarray:
    """Each distinct probability, and one above them all (no row positive)."""
    return np.append(np.unique(proba), 1.5)


def cost(y, predicted, fp_cost, fn_cost) -> float:
    return float((np.sum(predicted & (y == 0)) * fp_cost + np.sum(~predicted & (y == 1)) * fn_cost) / len(y))


CASES = [(400, 0, None), (400, 1, 2), (3000, 3, 1), (25, 4, None)]  # 3000 rows: only 11 distinct values


@pytest.mark.parametrize("n, seed, decimals", CASES)
def test_max_f1_finds_the_best_f1_of_a_brute_force_search(n, seed, decimals):
    y, proba = scored_rows(n, seed, decimals=decimals)
    best = max(f1_score(y, proba >= t, zero_division=0) for t in every_threshold(proba))
    chosen = thresholds.choose(y, proba, rule="max_f1")
    assert f1_score(y, proba >= chosen["value"]) == pytest.approx(best, abs=1e-12)
    # Midway between the lowest probability predicted positive and the highest one below it.
    below = proba[proba < chosen["value"]]
    if below.size:
        assert chosen["value"] == pytest.approx((proba[proba >= chosen["value"]].min() + below.max()) / 2, abs=1e-15)
    else:
        assert chosen["value"] == proba.min()
    assert chosen["rule"] == "max_f1" and chosen["rows"] == n and "costs" not in chosen and "cost" not in chosen["curve"]
    assert f"{best:.4f}" in chosen["reason"]


@pytest.mark.parametrize("n, seed, decimals", CASES)
@pytest.mark.parametrize("fp_cost, fn_cost", [(1.0, 5.0), (3.0, 1.0), (1.0, 100.0), (100.0, 1.0)])
def test_expected_cost_finds_the_lowest_cost_of_a_brute_force_search(n, seed, decimals, fp_cost, fn_cost):
    y, proba = scored_rows(n, seed, decimals=decimals)
    best = min(cost(y, proba >= t, fp_cost, fn_cost) for t in every_threshold(proba))
    chosen = thresholds.choose(y, proba, rule="expected_cost", false_positive_cost=fp_cost, false_negative_cost=fn_cost)
    assert cost(y, proba >= chosen["value"], fp_cost, fn_cost) == pytest.approx(best, abs=1e-12)
    assert 0 <= chosen["value"] <= 1
    assert chosen["costs"] == {"false_positive": fp_cost, "false_negative": fn_cost}
    assert len(chosen["curve"]["cost"]) == len(chosen["curve"]["threshold"])


def test_predicting_no_row_positive_can_be_the_cheapest():
    y, proba = np.array([0, 0, 0, 1]), np.array([0.2, 0.4, 0.6, 0.3])
    chosen = thresholds.choose(y, proba, rule="expected_cost", false_positive_cost=10, false_negative_cost=1)
    assert chosen["value"] == pytest.approx(0.8) and not (proba >= chosen["value"]).any()


def test_on_calibrated_probabilities_the_cheapest_threshold_is_near_where_an_offer_pays():
    # Acting pays when p * cost_fn > (1 - p) * cost_fp: above cost_fp / (cost_fp + cost_fn) = 1/6.
    y, proba = scored_rows(200_000, 5)
    chosen = thresholds.choose(y, proba, rule="expected_cost", false_positive_cost=1, false_negative_cost=5)
    assert chosen["value"] == pytest.approx(1 / 6, abs=0.02)


def test_a_fixed_threshold_is_the_policys_value_with_its_curve():
    y, proba = scored_rows(500, 6)
    chosen = thresholds.choose(y, proba, rule="fixed", fixed=0.37)
    assert chosen["value"] == 0.37 and chosen["reason"] == "the policy's fixed value"
    assert 0.37 in chosen["curve"]["threshold"]


def test_the_curve_holds_precision_recall_and_f1_from_0_02_to_0_98_and_the_chosen_value():
    y, proba = scored_rows(1000, 7)
    chosen = thresholds.choose(y, proba, rule="max_f1")
    curve = chosen["curve"]
    assert curve["threshold"][0] == 0.02 and curve["threshold"][-1] == 0.98 and len(curve["threshold"]) == 50
    assert round(chosen["value"], 6) in curve["threshold"] and curve["threshold"] == sorted(curve["threshold"])
    for i in (0, 10, 25, 49):
        predicted = proba >= curve["threshold"][i]
        assert curve["precision"][i] == pytest.approx(precision_score(y, predicted, zero_division=0), abs=1e-6)
        assert curve["recall"][i] == pytest.approx(recall_score(y, predicted), abs=1e-6)
        assert curve["f1"][i] == pytest.approx(f1_score(y, predicted, zero_division=0), abs=1e-6)
    assert json.loads(json.dumps(chosen)) == chosen


@pytest.mark.parametrize("rule", ["max_f1", "expected_cost"])
@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1], []])
def test_rows_of_one_class_or_none_give_the_default_with_a_reason(rule, labels):
    y = np.array(labels, dtype=np.int8)
    chosen = thresholds.choose(y, np.linspace(0.1, 0.9, len(y)), rule=rule)
    assert chosen["value"] == 0.5 and chosen["rows"] == len(y)
    assert ("one class" if labels else "no rows") in chosen["reason"]
    assert chosen["curve"]["threshold"] == []


def test_an_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="unknown threshold rule"):
        thresholds.choose([0, 1], [0.2, 0.8], rule="max_accuracy")


def test_it_searches_a_hundred_thousand_distinct_probabilities_in_well_under_a_second():
    y, proba = scored_rows(100_000, 8)
    started = time.perf_counter()
    thresholds.choose(y, proba, rule="max_f1")
    thresholds.choose(y, proba, rule="expected_cost")
    assert time.perf_counter() - started < 1.0
