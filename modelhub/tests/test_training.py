"""Model selection by cross-validated AUC: the family that fits the data wins, every score is kept."""
import math

import numpy as np
import pytest
from django.conf import settings
from sklearn.model_selection import StratifiedKFold, cross_val_score

from modelhub import training

from .helpers import SYNTHETIC, synthetic_frame


def fit(signal: str, n: int = 600, seed: int = 0):
    data = synthetic_frame(n, seed=seed, signal=signal)
    return training.select_and_fit(training.features_frame(data, SYNTHETIC), training.labels(data, SYNTHETIC), SYNTHETIC)


def by_name(result) -> dict:
    return {c["name"]: c for c in result.candidates}


def test_a_non_linear_signal_is_found_by_gradient_boosting():
    # Positive when exactly one of x1, x2 is above zero: no straight line separates the classes.
    result = fit("xor")
    assert result.name.startswith("gradient boosting")
    scores = by_name(result)
    best_linear = max(c["cv_auc"] for name, c in scores.items() if name.startswith("logistic"))
    best_trees = max(c["cv_auc"] for name, c in scores.items() if name.startswith("gradient"))
    assert best_trees > 0.85 and best_linear < 0.65
    assert scores[result.name]["cv_auc"] == best_trees


def test_every_candidate_is_scored_and_the_best_by_auc_is_chosen_and_refitted():
    data = synthetic_frame(600, seed=1, signal="linear")
    X, y = training.features_frame(data, SYNTHETIC), training.labels(data, SYNTHETIC)
    result = training.select_and_fit(X, y, SYNTHETIC)
    assert [c["name"] for c in result.candidates] == [c.name for c in training.CANDIDATES]
    assert len(result.candidates) >= 4
    for candidate in result.candidates:
        assert 0.5 < candidate["cv_auc"] <= 1.0 and candidate["cv_auc_std"] >= 0 and candidate["seconds"] >= 0
    chosen = [c for c in result.candidates if c.get("chosen")]
    assert len(chosen) == 1 and chosen[0]["name"] == result.name
    assert chosen[0]["cv_auc"] == max(c["cv_auc"] for c in result.candidates)
    # Refitted on all the rows it was given: it predicts them, and predicts them well.
    proba = training.positive_proba(result.pipeline, X)
    assert proba.shape == (600,) and ((proba >= 0) & (proba <= 1)).all()
    assert np.mean((proba >= 0.5) == y) > 0.7


def test_the_shared_preparation_scores_exactly_as_cross_validating_each_whole_pipeline():
    data = synthetic_frame(400, seed=5, signal="xor")
    data.loc[::7, "x1"] = None  # something for the imputers to do
    X, y = training.features_frame(data, SYNTHETIC), training.labels(data, SYNTHETIC)
    result = training.select_and_fit(X, y, SYNTHETIC)
    for candidate, scored in zip(training.CANDIDATES, result.candidates):
        pipeline = training.build_pipeline(SYNTHETIC, candidate.estimator, scale=candidate.scale)
        folds = StratifiedKFold(n_splits=settings.CL_CV_FOLDS, shuffle=True, random_state=0)
        with training.limited_threads():
            expected = cross_val_score(pipeline, X, y, scoring="roc_auc", cv=folds)
        assert scored["cv_auc"] == pytest.approx(expected.mean(), abs=1e-12), candidate.name
        assert scored["cv_auc_std"] == pytest.approx(expected.std(), abs=1e-12), candidate.name


def test_training_refuses_rows_with_one_class():
    data = synthetic_frame(100, seed=2, signal="linear")
    data["label"] = "no"
    with pytest.raises(ValueError, match="only one class"):
        training.select_and_fit(training.features_frame(data, SYNTHETIC), training.labels(data, SYNTHETIC), SYNTHETIC)


def test_too_few_rows_of_a_class_for_folds_still_trains_without_a_score():
    data = synthetic_frame(60, seed=3, signal="linear")
    data["label"] = "no"
    data.loc[0, "label"] = "yes"  # one positive: no two folds can both hold one
    result = training.select_and_fit(training.features_frame(data, SYNTHETIC), training.labels(data, SYNTHETIC), SYNTHETIC)
    assert all(math.isnan(c["cv_auc"]) for c in result.candidates)
    assert result.name == training.CANDIDATES[0].name


def test_features_frame_fixes_dtypes_and_fills_absent_columns():
    data = synthetic_frame(5, seed=4, signal="linear").drop(columns=["x2"])
    data["x1"] = data["x1"].astype(str)
    data.loc[0, "colour"] = None
    X = training.features_frame(data, SYNTHETIC)
    assert list(X.columns) == ["x1", "x2", "colour"]
    assert X["x1"].dtype == "float64" and X["x2"].isna().all()
    assert X["colour"].dtype == object and X["colour"].isna().sum() == 1
