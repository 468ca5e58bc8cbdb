"""Evaluation: scores checked by hand, the paired bootstrap, permutation importance, the stable holdout."""
import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression

from modelhub import evaluation, training

from .helpers import SYNTHETIC, synthetic_frame

Y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
P = np.array([0.9, 0.6, 0.4, 0.2, 0.7, 0.1, 0.5, 0.8])


def test_score_on_a_hand_example():
    # Predicted positive when p >= 0.5:   1 1 0 0 1 0 1 1   (0.5 counts as positive)
    # TP rows 0,1,7 = 3   FN row 2 = 1   FP rows 4,6 = 2   TN rows 3,5 = 2
    result = evaluation.score(Y, P)
    assert result["confusion_matrix"] == [[2, 2], [1, 3]]  # [[TN, FP], [FN, TP]]
    assert result["accuracy"] == 5 / 8
    assert result["precision"] == 3 / 5
    assert result["recall"] == 3 / 4
    assert result["f1"] == pytest.approx(2 * 0.6 * 0.75 / (0.6 + 0.75))
    # AUC: of the 16 (positive, negative) pairs the positive scores higher in 4 + 3 + 2 + 4 = 13.
    assert result["auc"] == pytest.approx(13 / 16)
    # Brier: mean of .01 .16 .36 .04 .49 .01 .25 .04 = 1.36 / 8
    assert result["brier"] == pytest.approx(0.17)
    assert result["class_balance"] == {"positive": 4, "negative": 4, "positive_rate": 0.5}
    assert result["baseline_accuracy"] == 0.5
    assert result["rows"] == 8
    assert result["roc_curve"]["fpr"][0] == 0.0 and result["roc_curve"]["tpr"][-1] == 1.0


def test_score_with_one_class_has_no_auc_but_still_counts():
    result = evaluation.score(np.array([0, 0, 0]), np.array([0.1, 0.6, 0.2]))
    assert result["auc"] is None and result["pr_auc"] is None
    assert result["confusion_matrix"] == [[2, 1], [0, 0]]
    assert result["baseline_accuracy"] == 1.0


def test_weighted_metrics_equal_the_metrics_of_the_resampled_rows():
    # The bootstrap scores a resample as weights (how often each row was drawn); ties included.
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    proba = np.clip(0.3 * y + rng.random(300) * 0.7, 0, 1).round(1)
    for _ in range(5):
        drawn = rng.integers(0, 300, 300)
        weights = np.bincount(drawn, minlength=300)[None, :]
        got = {name: values[0] for name, values in evaluation.weighted_metrics(y, proba, weights).items()}
        ys, ps = y[drawn], proba[drawn]
        predicted = ps >= 0.5
        assert got["accuracy"] == pytest.approx(skm.accuracy_score(ys, predicted))
        assert got["precision"] == pytest.approx(skm.precision_score(ys, predicted, zero_division=0))
        assert got["recall"] == pytest.approx(skm.recall_score(ys, predicted))
        assert got["f1"] == pytest.approx(skm.f1_score(ys, predicted))
        assert got["auc"] == pytest.approx(skm.roc_auc_score(ys, ps))
        assert got["brier"] == pytest.approx(skm.brier_score_loss(ys, ps))


def test_the_paired_bootstrap_interval_contains_the_point_change():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 800)
    live = np.clip(0.15 * y + rng.random(800) * 0.85, 0, 1)
    candidate = np.clip(0.45 * y + rng.random(800) * 0.55, 0, 1)  # clearly better
    result = evaluation.paired_bootstrap(y, candidate, live)
    assert set(result) == set(evaluation.COMPARED) == {"accuracy", "accuracy_at_half", "balanced_accuracy", "precision", "recall", "f1",
                                                        "auc", "pr_auc", "brier"}
    assert result["pr_auc"]["delta"] == pytest.approx(skm.average_precision_score(y, candidate) - skm.average_precision_score(y, live))
    for name, interval in result.items():
        assert interval["low"] <= interval["delta"] <= interval["high"], name
        assert interval["low"] < interval["high"], name
    assert result["auc"]["delta"] == pytest.approx(skm.roc_auc_score(y, candidate) - skm.roc_auc_score(y, live))
    assert result["auc"]["low"] > 0 and result["accuracy"]["low"] > 0  # better beyond doubt
    assert result["brier"]["high"] < 0  # lower is better for Brier
    # Same seed, same interval: a run's report can be reproduced.
    assert evaluation.paired_bootstrap(y, candidate, live) == result


def test_the_paired_bootstrap_of_identical_models_is_exactly_zero():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    proba = rng.random(300)
    result = evaluation.paired_bootstrap(y, proba, proba.copy())
    assert result and all(v == {"delta": 0.0, "low": 0.0, "high": 0.0} for v in result.values())


def test_the_paired_bootstrap_without_auc_when_the_holdout_has_one_class():
    result = evaluation.paired_bootstrap(np.zeros(50, int), np.full(50, 0.2), np.full(50, 0.6))
    assert "auc" not in result
    assert result["accuracy"] == {"delta": 1.0, "low": 1.0, "high": 1.0}


def test_permutation_importance_ranks_the_signal_first_in_original_column_names():
    data = synthetic_frame(600, seed=4, signal="linear")
    X, y = training.features_frame(data, SYNTHETIC), training.labels(data, SYNTHETIC)
    pipeline = training.build_pipeline(SYNTHETIC, LogisticRegression(), scale=True).fit(X[:400], y[:400])
    importance = evaluation.permutation_importance(pipeline, X[400:], y[400:], proba_fn=training.positive_proba)
    assert list(importance)[:2] in (["x1", "x2"], ["x2", "x1"])
    assert importance["x1"] > 0.1 and importance["x2"] > 0.1
    assert abs(importance["colour"]) < 0.03  # noise
    assert evaluation.permutation_importance(pipeline, X[400:], y[400:], proba_fn=training.positive_proba) == importance


def test_the_holdout_is_stable_across_calls_and_independent_of_row_order():
    data = synthetic_frame(2000, seed=5, signal="linear")
    columns = ["x1", "x2", "colour", "label"]
    for id_column in ("row_id", ""):
        mask = evaluation.holdout_mask(data, id_column, columns, 20)
        assert 0.15 < mask.mean() < 0.25
        assert (evaluation.holdout_mask(data, id_column, columns, 20) == mask).all()
        shuffled = data.sample(frac=1, random_state=7)
        shuffled_mask = evaluation.holdout_mask(shuffled, id_column, columns, 20)
        held = set(data.loc[mask, "row_id"])
        assert set(shuffled.loc[shuffled_mask, "row_id"]) == held
        # A row's fate does not depend on the other rows: the first 100 alone keep theirs.
        head = data.head(100)
        assert (evaluation.holdout_mask(head, id_column, columns, 20) == mask[:100]).all()
    # By id, a changed row keeps its place (it is the same customer); without an id it is a new row.
    changed = data.copy()
    changed["x1"] = changed["x1"] + 1
    assert (evaluation.holdout_mask(changed, "row_id", columns, 20) == evaluation.holdout_mask(data, "row_id", columns, 20)).all()
    assert (evaluation.holdout_mask(changed, "", columns, 20) != evaluation.holdout_mask(data, "", columns, 20)).any()


def test_weighted_auc_equals_sklearns_on_random_scores_with_ties_and_weights():
    rng = np.random.default_rng(11)
    for n, decimals in ((2, 1), (40, 1), (500, 2), (3000, 6)):
        y = rng.integers(0, 2, n)
        y[:2] = [0, 1]  # both classes
        proba = rng.random(n).round(decimals)  # few decimals: many tied scores
        weights = rng.integers(0, 4, (6, n)).astype(float)
        weights[0] = 1.0
        weights[:, :2] = 1.0
        got = evaluation.weighted_auc(y, proba, weights)
        expected = [skm.roc_auc_score(y, proba, sample_weight=w) for w in weights]
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert np.isnan(evaluation.weighted_auc(np.array([1, 1]), np.array([0.2, 0.7]), np.ones((1, 2))))[0]
