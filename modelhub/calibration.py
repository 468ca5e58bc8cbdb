"""Calibrated probabilities: a calibrator fitted on out-of-fold predictions, kept when it lowers
the Brier score on the held-out rows.

The calibrator learns, from the chosen candidate's out-of-fold probabilities on the training rows
(training.FitResult.oof_proba), how the model's probabilities map to observed positive rates; it
is then applied to the model refitted on all the training rows, as scikit-learn's
CalibratedClassifierCV(ensemble=False) does. Two kinds are fitted and compared on the holdout:

- "sigmoid" (Platt scaling): p' = expit(a * logit(p) + b), a and b by an unregularised logistic
  regression on the one feature logit(p); two parameters, so it needs few rows, but it can only
  stretch or shift the log-odds;
- "isotonic": any non-decreasing map, scikit-learn's IsotonicRegression, applied by linear
  interpolation between its thresholds and clipped at both ends (out_of_bounds="clip"); it
  fits any distortion but needs more rows.

Both are applied by Calibrator.apply, plain numpy, so the Pipeline (through CalibratedModel) and
the fast path (modelhub.fastpath) compute the very same numbers.
"""
from dataclasses import dataclass

import numpy as np
from scipy.special import expit, logit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

METHODS = ("sigmoid", "isotonic")
# Out-of-fold rows a calibrator needs: with fewer, isotonic regression fits noise and the Brier
# score on a small holdout cannot tell the difference.
MIN_ROWS = 50
MIN_MINORITY = 10
# logit(0) and logit(1) are infinite: probabilities are kept this far from either end.
EPS = 1e-12
RELIABILITY_BINS = 10
DIGITS = 6


@dataclass(frozen=True, eq=False)
class Calibrator:
    """A fitted map from a model's positive-class probability to a calibrated one."""
    method: str  # "sigmoid" or "isotonic"
    slope: float = 1.0  # sigmoid: a
    intercept: float = 0.0  # sigmoid: b
    x: np.ndarray | None = None  # isotonic: IsotonicRegression's X_thresholds_
    y: np.ndarray | None = None  # isotonic: its y_thresholds_

    def apply(self, proba) -> np.ndarray:
        proba = np.asarray(proba, dtype=np.float64)
        if self.method == "sigmoid":
            return expit(self.slope * logit(np.clip(proba, EPS, 1 - EPS)) + self.intercept)
        # np.interp holds the end values beyond the thresholds: out_of_bounds="clip".
        return np.interp(proba, self.x, self.y)


def fit_sigmoid(proba: np.ndarray, y: np.ndarray) -> Calibrator:
    feature = logit(np.clip(np.asarray(proba, dtype=np.float64), EPS, 1 - EPS)).reshape(-1, 1)
    # C=inf: no penalty (scikit-learn 1.8 deprecated penalty=None for it); two parameters need none.
    fitted = LogisticRegression(C=np.inf, max_iter=1000).fit(feature, y)
    return Calibrator("sigmoid", slope=float(fitted.coef_[0, 0]), intercept=float(fitted.intercept_[0]))


def fit_isotonic(proba: np.ndarray, y: np.ndarray) -> Calibrator:
    fitted = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(np.asarray(proba, dtype=np.float64), y)
    return Calibrator("isotonic", x=np.asarray(fitted.X_thresholds_, dtype=np.float64),
                      y=np.asarray(fitted.y_thresholds_, dtype=np.float64))


FITTERS = {"sigmoid": fit_sigmoid, "isotonic": fit_isotonic}


class CalibratedModel(ClassifierMixin, BaseEstimator):
    """A fitted binary classifier whose positive-class probability goes through a Calibrator.

    The last step of a calibrated version's Pipeline, so every caller of predict_proba gets the
    calibrated probability. Both are fitted before they are wrapped: fit() refits only the
    estimator and keeps the calibrator, which was fitted on another model's out-of-fold
    predictions and is not refitted here.
    """

    def __init__(self, estimator=None, calibrator: Calibrator | None = None):
        self.estimator = estimator
        self.calibrator = calibrator

    @property
    def classes_(self) -> np.ndarray:
        return self.estimator.classes_

    @property
    def n_features_in_(self) -> int:
        return self.estimator.n_features_in_

    def __sklearn_is_fitted__(self) -> bool:
        # A clone holds an unfitted copy of the estimator until fit() is called.
        try:
            check_is_fitted(self.estimator)
        except NotFittedError:
            return False
        return self.calibrator is not None

    def fit(self, X, y, **fit_params):
        self.estimator.fit(X, y, **fit_params)
        return self

    def predict_proba(self, X) -> np.ndarray:
        # Column 1 (classes_[1]) is calibrated, column 0 is its complement, as the wrapped
        # estimators make them (modelhub.fastpath relies on it).
        positive = self.calibrator.apply(self.estimator.predict_proba(X)[:, 1])
        return np.column_stack((1.0 - positive, positive))

    def predict(self, X) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] > 0.5).astype(np.intp)]


def brier(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean squared difference between the probability and the 0/1 label (lower is better)."""
    return float(np.mean((np.asarray(proba, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2))


def reliability(y: np.ndarray, proba: np.ndarray, bins: int = RELIABILITY_BINS) -> dict:
    """Mean predicted probability against the observed positive rate in equal-width bins of the
    predicted probability; empty bins are left out."""
    proba, y = np.asarray(proba, dtype=np.float64), np.asarray(y, dtype=np.float64)
    which = np.minimum((proba * bins).astype(np.intp), bins - 1)
    rows = np.bincount(which, minlength=bins)
    kept = rows > 0
    predicted = np.bincount(which, weights=proba, minlength=bins)[kept] / rows[kept]
    observed = np.bincount(which, weights=y, minlength=bins)[kept] / rows[kept]
    return {"predicted": _rounded(predicted), "observed": _rounded(observed), "rows": rows[kept].tolist()}


def calibrate(pipeline: Pipeline, *, oof_proba: np.ndarray | None, oof_y: np.ndarray | None,
              holdout_y: np.ndarray, holdout_proba: np.ndarray) -> tuple[Pipeline, dict]:
    """The pipeline with its estimator calibrated, if that lowers the Brier score on the holdout,
    and the report kept as metrics["calibration"].

    Both calibrators are fitted on the out-of-fold predictions and scored on the holdout's raw
    probabilities; the better one is kept if it beats the raw probabilities. Otherwise, or
    without enough out-of-fold rows of both classes, the pipeline comes back unchanged.
    """
    holdout_y, holdout_proba = np.asarray(holdout_y), np.asarray(holdout_proba, dtype=np.float64)
    before = brier(holdout_y, holdout_proba) if len(holdout_y) else None
    report = {"method": "none", "applied": False, "brier_before": _round(before), "brier_after": _round(before),
              "fitted_on": 0 if oof_y is None else int(len(oof_y)), "reason": "", "candidates": {},
              "reliability": {"before": reliability(holdout_y, holdout_proba)}}
    report["reliability"]["after"] = report["reliability"]["before"]
    refused = _why_not(oof_proba, oof_y, holdout_y)
    if refused:
        return pipeline, report | {"reason": refused}
    fitted = {method: fit(oof_proba, oof_y) for method, fit in FITTERS.items()}
    scores = {method: brier(holdout_y, calibrator.apply(holdout_proba)) for method, calibrator in fitted.items()}
    report["candidates"] = {method: _round(score) for method, score in scores.items()}
    method = min(scores, key=scores.get)
    if not scores[method] < before:
        return pipeline, report | {"reason": f"neither calibrator lowered the holdout Brier score ({before:.4f}; best {method} {scores[method]:.4f})"}
    calibrated = fitted[method].apply(holdout_proba)
    name, estimator = pipeline.steps[-1]
    wrapped = Pipeline(pipeline.steps[:-1] + [(name, CalibratedModel(estimator, fitted[method]))])
    report.update(method=method, applied=True, brier_after=_round(scores[method]),
                  reason=f"{method} lowered the holdout Brier score from {before:.4f} to {scores[method]:.4f}")
    report["reliability"]["after"] = reliability(holdout_y, calibrated)
    return wrapped, report


def calibrated_proba(pipeline: Pipeline, proba: np.ndarray) -> np.ndarray:
    """Raw probabilities of the pipeline's estimator (out-of-fold ones, say) as the pipeline
    serves them: through its calibrator when calibrate() gave it one. A threshold is chosen on these."""
    model = pipeline.steps[-1][1]
    return model.calibrator.apply(proba) if isinstance(model, CalibratedModel) else np.asarray(proba, dtype=np.float64)


def _why_not(oof_proba, oof_y, holdout_y) -> str | None:
    if oof_proba is None or oof_y is None:
        return "no out-of-fold predictions (too few rows of a class for two cross-validation folds)"
    if len(holdout_y) == 0:
        return "no held-out rows to compare the Brier scores on"
    counts = np.bincount(np.asarray(oof_y, dtype=np.intp), minlength=2)
    if (counts == 0).any():
        return "the out-of-fold predictions hold one class only"
    if len(oof_y) < MIN_ROWS or counts.min() < MIN_MINORITY:
        return (f"too few out-of-fold rows to fit a calibrator ({len(oof_y):,} rows, {int(counts.min()):,} of the rarer class; "
                f"at least {MIN_ROWS} and {MIN_MINORITY} needed)")
    return None


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), DIGITS)


def _rounded(values: np.ndarray) -> list[float]:
    return [round(float(value), DIGITS) for value in values]
