"""Calibration: out-of-fold predictions from model selection, calibrators fitted on them, kept
only when they lower the Brier score on the holdout.

No database: small models fitted here.
"""
import json

import joblib
import numpy as np
import pandas as pd
import pytest
from django.conf import settings
from scipy.special import expit
from sklearn.base import clone
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.utils.validation import check_is_fitted

from modelhub import calibration, training
from modelhub.calibration import CalibratedModel, Calibrator

from .helpers import SYNTHETIC, schema_like, synthetic_frame

ONE_NUMBER = schema_like([{"name": "x", "kind": "numeric"}], target="label", positive_label="yes")


def logistic_rows(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Labels drawn with probability expit(1.5 x): a logistic regression on x is calibrated."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame({"x": x}), (rng.random(n) < expit(1.5 * x)).astype(np.int8)


# Positives weighted 5 times, as for an imbalanced table: every probability comes out too high.
# (A tiny C would squash them toward 0.5, but by less on all the rows than on a fold's, so the
# calibrator fitted on the folds' predictions overshoots the refitted model.)
MISCALIBRATED = LogisticRegression(class_weight={0: 1, 1: 5})


def fitted(estimator, seed: int = 0):
    """A logistic regression fitted as training does, its holdout rows and raw probabilities on them."""
    X, y = logistic_rows(2000, seed)
    holdout_X, holdout_y = logistic_rows(1000, seed + 100)
    fit = training.select_and_fit(X, y, ONE_NUMBER, candidates=[training.Candidate("lr", estimator, scale=True)])
    return fit, holdout_X, holdout_y, training.positive_proba(fit.pipeline, holdout_X)


def calibrated(fit, holdout_y, holdout_proba):
    return calibration.calibrate(fit.pipeline, oof_proba=fit.oof_proba, oof_y=fit.oof_y, holdout_y=holdout_y, holdout_proba=holdout_proba)


# --- out-of-fold predictions from model selection ---------------------------------------------------

def test_the_chosen_candidates_out_of_fold_probabilities_are_those_of_cross_val_predict():
    data = synthetic_frame(600, seed=1, signal="linear")
    X, y = training.features_frame(data, SYNTHETIC), training.labels(data, SYNTHETIC)
    result = training.select_and_fit(X, y, SYNTHETIC)
    chosen = next(c for c in training.CANDIDATES if c.name == result.name)
    pipeline = training.build_pipeline(SYNTHETIC, chosen.estimator, scale=chosen.scale)
    folds = StratifiedKFold(n_splits=settings.CL_CV_FOLDS, shuffle=True, random_state=0)
    with training.limited_threads():
        expected = cross_val_predict(pipeline, X, y, cv=folds, method="predict_proba")[:, 1]
    assert result.oof_proba.shape == (600,) and ((result.oof_proba >= 0) & (result.oof_proba <= 1)).all()
    assert np.max(np.abs(result.oof_proba - expected)) <= 1e-12
    assert np.array_equal(result.oof_y, y)
    # Pooled over the folds, the AUC is close to the mean of the folds' AUCs the choice was made by.
    cv_auc = next(c["cv_auc"] for c in result.candidates if c.get("chosen"))
    assert roc_auc_score(result.oof_y, result.oof_proba) == pytest.approx(cv_auc, abs=0.02)


def test_out_of_fold_probabilities_cover_the_cross_validation_sample_only(monkeypatch):
    monkeypatch.setattr(training, "CV_MAX_ROWS", 250)
    data = synthetic_frame(600, seed=4, signal="linear")
    X, y = training.features_frame(data, SYNTHETIC), training.labels(data, SYNTHETIC)
    result = training.select_and_fit(X, y, SYNTHETIC)
    _, sample_y = training._cv_sample(X, y)
    assert result.oof_proba.shape == (250,) and np.array_equal(result.oof_y, sample_y)


def test_without_two_folds_there_are_no_out_of_fold_probabilities():
    data = synthetic_frame(60, seed=3, signal="linear")
    data["label"] = "no"
    data.loc[0, "label"] = "yes"
    result = training.select_and_fit(training.features_frame(data, SYNTHETIC), training.labels(data, SYNTHETIC), SYNTHETIC)
    assert result.oof_proba is None and result.oof_y is None


# --- the calibrators -----------------------------------------------------------------------------

def test_each_calibrator_applies_what_scikit_learn_fitted():
    rng = np.random.default_rng(7)
    proba = rng.beta(2, 2, 3000)
    y = (rng.random(3000) < proba ** 2).astype(np.int8)  # overconfident above, underconfident below
    probe = np.concatenate([np.linspace(-0.1, 1.1, 301), [0.0, 1.0, 1e-300]])
    isotonic = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(proba, y)
    assert np.max(np.abs(calibration.fit_isotonic(proba, y).apply(probe) - isotonic.predict(probe))) <= 1e-12
    logits = np.log(proba / (1 - proba)).reshape(-1, 1)
    platt = LogisticRegression(C=np.inf).fit(logits, y)
    sigmoid = calibration.fit_sigmoid(proba, y)
    inside = probe[(probe > 0) & (probe < 1)]
    expected = platt.predict_proba(np.log(inside / (1 - inside)).reshape(-1, 1))[:, 1]
    assert np.max(np.abs(sigmoid.apply(inside) - expected)) <= 1e-9
    # Probabilities of exactly 0 and 1 are clipped before the log-odds instead of becoming infinite.
    assert np.isfinite(sigmoid.apply(np.array([0.0, 1.0]))).all()


def test_a_miscalibrated_model_is_calibrated_and_its_brier_score_drops():
    fit, holdout_X, holdout_y, raw = fitted(MISCALIBRATED)
    assert raw.mean() > holdout_y.mean() + 0.2
    pipeline, report = calibrated(fit, holdout_y, raw)
    assert report["applied"] and report["method"] in ("sigmoid", "isotonic")
    assert report["brier_before"] == pytest.approx(brier_score_loss(holdout_y, raw), abs=1e-6)
    assert report["brier_after"] < report["brier_before"] - 0.03
    assert report["brier_after"] == min(report["candidates"].values())
    assert report["fitted_on"] == 2000
    # The returned pipeline serves the calibrated probability; the one given is left as it was.
    served = training.positive_proba(pipeline, holdout_X)
    assert brier_score_loss(holdout_y, served) == pytest.approx(report["brier_after"], abs=1e-6)
    assert type(pipeline.named_steps["model"]) is CalibratedModel and pipeline.named_steps["prepare"] is fit.pipeline.named_steps["prepare"]
    assert np.array_equal(training.positive_proba(fit.pipeline, holdout_X), raw)
    assert np.array_equal(calibration.calibrated_proba(pipeline, raw), served)
    # The reliability curve: predicted far above observed before, close to it after.
    before, after = report["reliability"]["before"], report["reliability"]["after"]
    assert sum(before["rows"]) == sum(after["rows"]) == len(holdout_y)
    assert all(predicted > observed for predicted, observed in zip(before["predicted"], before["observed"]))
    gap = lambda curve: np.average(np.abs(np.subtract(curve["predicted"], curve["observed"])), weights=curve["rows"])  # noqa: E731
    assert gap(after) < 0.05 and gap(before) > 0.2
    assert json.loads(json.dumps(report)) == report


def test_a_calibrated_model_is_left_as_it_is_or_barely_changed():
    for seed in range(3):
        fit, _, holdout_y, raw = fitted(LogisticRegression(), seed=seed)
        pipeline, report = calibrated(fit, holdout_y, raw)
        if report["applied"]:
            assert 0 < report["brier_before"] - report["brier_after"] < 0.001
        else:
            assert pipeline is fit.pipeline and report["method"] == "none"
            assert report["brier_after"] == report["brier_before"] and report["reliability"]["after"] == report["reliability"]["before"]
            assert "neither calibrator lowered" in report["reason"]
            assert min(report["candidates"].values()) >= report["brier_before"]


@pytest.mark.parametrize("oof, reason", [
    ("none", "no out-of-fold predictions"),
    ("one class", "one class"),
    ("few rows", "too few out-of-fold rows"),
    ("few positives", "too few out-of-fold rows"),
])
def test_without_enough_out_of_fold_rows_of_both_classes_nothing_is_calibrated(oof, reason):
    rng = np.random.default_rng(0)
    proba = rng.random(500)
    y = (rng.random(500) < proba).astype(np.int8)
    if oof == "none":
        proba = y = None
    elif oof == "one class":
        y = np.zeros(500, dtype=np.int8)
    elif oof == "few rows":
        proba, y = proba[:40], y[:40]
    else:
        y = (np.arange(500) < 9).astype(np.int8)
    pipeline = object()
    holdout_y, holdout_proba = np.array([0, 1, 1, 0]), np.array([0.2, 0.9, 0.6, 0.5])
    returned, report = calibration.calibrate(pipeline, oof_proba=proba, oof_y=y, holdout_y=holdout_y, holdout_proba=holdout_proba)
    assert returned is pipeline
    assert report["method"] == "none" and not report["applied"] and reason in report["reason"]
    assert report["brier_before"] == report["brier_after"] == pytest.approx((0.04 + 0.01 + 0.16 + 0.25) / 4)
    assert report["candidates"] == {}
    assert report["reliability"]["before"] == {"predicted": [0.2, 0.5, 0.6, 0.9], "observed": [0.0, 0.0, 1.0, 1.0], "rows": [1, 1, 1, 1]}


# --- the calibrated model as a Pipeline step -------------------------------------------------------

def test_a_calibrated_pipeline_survives_joblib_and_a_refit_keeps_its_calibrator(tmp_path):
    fit, holdout_X, holdout_y, raw = fitted(MISCALIBRATED)
    pipeline, _ = calibrated(fit, holdout_y, raw)
    check_is_fitted(pipeline)
    joblib.dump(pipeline, tmp_path / "model.joblib")
    loaded = joblib.load(tmp_path / "model.joblib")
    assert np.array_equal(loaded.predict_proba(holdout_X), pipeline.predict_proba(holdout_X))
    assert list(loaded.classes_) == [0, 1]
    assert np.array_equal(loaded.predict(holdout_X), (loaded.predict_proba(holdout_X)[:, 1] > 0.5).astype(int))
    # A clone is unfitted until fit(), which refits the estimator and keeps the calibrator.
    copy = clone(pipeline)
    assert not copy.named_steps["model"].__sklearn_is_fitted__()
    X, y = logistic_rows(2000, 0)
    copy.fit(X, y)
    assert isinstance(copy.named_steps["model"].calibrator, Calibrator)
    assert np.max(np.abs(copy.predict_proba(holdout_X) - pipeline.predict_proba(holdout_X))) <= 1e-9
