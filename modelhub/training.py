"""Training: one scikit-learn Pipeline per version, the estimator chosen by cross-validation.

The candidates are a regularised logistic regression and a gradient-boosted tree model, each
with a few settings. They are compared by ROC AUC on folds of the training rows only (the
holdout is never seen here), and the best is refitted on all training rows.
"""
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from django.conf import settings
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

log = logging.getLogger("clsite.modelhub")

# Cross-validation on more rows than this changes the choice little and costs a lot.
CV_MAX_ROWS = 20_000
# What a missing category becomes before encoding (the imputer's fill value, kept in every
# artifact), and how drift and the predict form name a missing value.
MISSING = "(missing)"
# The worker shares its CPUs with web processes and other jobs. OpenMP and BLAS threads that
# spin-wait for a descheduled sibling made the gradient-boosting fits 10-50x slower on a busy
# 2-core machine (69 s against 1.3 s for one cross-validation); on the few thousand to tens of
# thousands of rows we train on, one thread is never far from the best and never that bad.
TRAINING_THREADS = 1


def limited_threads():
    """Cap the native thread pools (OpenMP, BLAS) for the heavy work of a run."""
    return threadpool_limits(limits=TRAINING_THREADS)


@dataclass(frozen=True)
class Candidate:
    name: str
    estimator: object
    scale: bool


# Each setting earns its place in bench/families.py (nested cross-validation on seven public
# tables against the best of four tuned families); every one is cross-validated on every retraining.
CANDIDATES = (
    # Strong regularisation: on the 5%-positive loans (lending_club) it lifts the chosen model from
    # 0.748 to 0.757 AUC, where the tuned logistic regression picks C=0.01 in every fold.
    Candidate("logistic regression (C=0.01)", LogisticRegression(C=0.01, max_iter=2000), scale=True),
    Candidate("logistic regression (C=0.1)", LogisticRegression(C=0.1, max_iter=2000), scale=True),
    Candidate("logistic regression (C=1)", LogisticRegression(C=1.0, max_iter=2000), scale=True),
    Candidate(
        "gradient boosting (depth 3, rate 0.1)",
        HistGradientBoostingClassifier(max_depth=3, learning_rate=0.1, max_iter=150, random_state=0),
        scale=False,
    ),
    # Few, small, heavily regularised trees, for small or noisy data: chosen on the Telco demo in
    # every fold (0.845 to 0.848 AUC, above the tuned families); about 1 s per retraining there.
    Candidate(
        "gradient boosting (4 leaves, rate 0.03)",
        HistGradientBoostingClassifier(max_leaf_nodes=4, learning_rate=0.03, max_iter=200, min_samples_leaf=30,
                                       l2_regularization=10.0, early_stopping=False, random_state=0),
        scale=False,
    ),
    # On a numeric, imbalanced churn set (MLC) this one beats the best tuned family's
    # cross-validated AUC; it costs about 3 s more per retraining than an early-stopping one.
    Candidate(
        "gradient boosting (31 leaves, rate 0.1)",
        HistGradientBoostingClassifier(max_leaf_nodes=31, learning_rate=0.1, max_iter=200, early_stopping=False, random_state=0),
        scale=False,
    ),
    # For large data: it grows with the rows. Cross-validated on at most CV_MAX_ROWS rows it stops
    # early and scores like the one above; refitted on 218,000 flights it runs on (0.789 to 0.797 AUC).
    Candidate(
        "gradient boosting (31 leaves, early stopping)",
        HistGradientBoostingClassifier(max_leaf_nodes=31, learning_rate=0.1, max_iter=1000, early_stopping=True,
                                       n_iter_no_change=20, validation_fraction=0.1, random_state=0),
        scale=False,
    ),
)


@dataclass
class FitResult:
    pipeline: Pipeline
    name: str
    seconds: float
    candidates: list[dict] = field(default_factory=list)
    # The chosen candidate's positive-class probabilities on the cross-validation rows, each from
    # the fold that did not train on it (in the rows' order), and their labels: what a calibrator
    # and a decision threshold are fitted on. None without two folds or with a failed fold.
    oof_proba: np.ndarray | None = None
    oof_y: np.ndarray | None = None


def features_frame(frame: pd.DataFrame, schema) -> pd.DataFrame:
    """The schema's feature columns with the dtypes every pipeline expects."""
    columns = {}
    for feature in schema.features:
        name = feature["name"]
        values = frame[name] if name in frame else pd.Series([None] * len(frame), index=frame.index)
        if feature["kind"] == "numeric":
            columns[name] = pd.to_numeric(values, errors="coerce").astype("float64")
        elif isinstance(values.dtype, pd.CategoricalDtype):
            columns[name] = values  # text already, its missing values NaN (batch scoring reads chunks so)
        else:
            columns[name] = values.astype(object).where(values.notna(), np.nan)
    return pd.DataFrame(columns, index=frame.index)


def profile(X: pd.DataFrame, schema) -> dict:
    """What the training rows held, per feature (ModelVersion.profile): the share of missing
    values and, for a number, its range. Requests are checked against it (modelhub.inputs)."""
    found = {}
    for feature in schema.features:
        values = X[feature["name"]]
        missing = values.isna()
        entry = {"missing": round(float(missing.mean()), 6) if len(values) else 0.0}
        if feature["kind"] == "numeric" and not missing.all():
            entry.update(min=float(values.min()), max=float(values.max()))
        found[feature["name"]] = entry
    return found


def labels(frame: pd.DataFrame, schema) -> np.ndarray:
    return (frame[schema.target].astype(str) == schema.positive_label).to_numpy(dtype=np.int8)


def build_pipeline(schema, estimator, *, scale: bool) -> Pipeline:
    numeric_steps = [SimpleImputer(strategy="median")] + ([StandardScaler()] if scale else [])
    categorical = make_pipeline(
        SimpleImputer(strategy="constant", fill_value=MISSING),
        OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=5, max_categories=50, sparse_output=False),
    )
    transformers = []
    if schema.numeric_features:
        transformers.append(("numeric", make_pipeline(*numeric_steps), schema.numeric_features))
    if schema.categorical_features:
        transformers.append(("categorical", categorical, schema.categorical_features))
    return Pipeline([("prepare", ColumnTransformer(transformers)), ("model", clone(estimator))])


def select_and_fit(X: pd.DataFrame, y: np.ndarray, schema, *, candidates=CANDIDATES) -> FitResult:
    """Cross-validate every candidate on the training rows, refit the best (by AUC) on all of them."""
    if len(np.unique(y)) < 2:
        raise ValueError("the training rows hold only one class; a classifier needs both labels")
    with limited_threads():
        return _select_and_fit(X, y, schema, candidates)


def _select_and_fit(X: pd.DataFrame, y: np.ndarray, schema, candidates) -> FitResult:
    started = time.perf_counter()
    sample_X, sample_y = _cv_sample(X, y)
    folds = min(settings.CL_CV_FOLDS, int(np.bincount(sample_y).min()))
    if folds >= 2:
        aucs, seconds, oof = _cross_validate(candidates, schema, sample_X, sample_y, folds)
    else:
        aucs, seconds, oof = [[float("nan")] for _ in candidates], [0.0] * len(candidates), [None] * len(candidates)
    scores = [
        {"name": c.name, "cv_auc": float(np.mean(auc)), "cv_auc_std": float(np.std(auc)), "seconds": s}
        for c, auc, s in zip(candidates, aucs, seconds)
    ]
    best_index = max(range(len(scores)), key=lambda i: -np.inf if np.isnan(scores[i]["cv_auc"]) else scores[i]["cv_auc"])
    best = candidates[best_index]
    scores[best_index]["chosen"] = True
    pipeline = build_pipeline(schema, best.estimator, scale=best.scale).fit(X, y)
    oof_proba = oof[best_index] if oof[best_index] is not None and not np.isnan(oof[best_index]).any() else None
    return FitResult(pipeline=pipeline, name=best.name, seconds=time.perf_counter() - started, candidates=scores,
                     oof_proba=oof_proba, oof_y=None if oof_proba is None else sample_y)


def _cross_validate(candidates, schema, X: pd.DataFrame, y: np.ndarray, folds: int) -> tuple[list[list[float]], list[float], list[np.ndarray]]:
    """Each candidate's ROC AUC on each fold, the seconds each took, and its out-of-fold
    probabilities (each row scored by the fold that left it out; NaN where the candidate failed).

    The same as cross_val_score on each candidate's whole pipeline, but the preparation step
    (imputers, one-hot encoder, scaler) depends only on the fold and on whether the estimator
    wants scaled numbers, so it is fitted once per fold and kind instead of once per candidate:
    it was a fifth of the training time. A candidate that fails on a fold scores NaN there.
    """
    aucs = [[] for _ in candidates]
    seconds = [0.0] * len(candidates)
    oof = [np.full(len(y), np.nan) for _ in candidates]
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    for train, test in cv.split(X, y):
        prepared = {}
        for i, candidate in enumerate(candidates):
            tick = time.perf_counter()
            try:
                if candidate.scale not in prepared:
                    prepare = build_pipeline(schema, candidate.estimator, scale=candidate.scale).named_steps["prepare"]
                    prepared[candidate.scale] = (prepare.fit_transform(X.iloc[train], y[train]), prepare.transform(X.iloc[test]))
                train_rows, test_rows = prepared[candidate.scale]
                model = clone(candidate.estimator).fit(train_rows, y[train])
                oof[i][test] = model.predict_proba(test_rows)[:, 1]
                aucs[i].append(float(roc_auc_score(y[test], oof[i][test])))
            except Exception:  # as cross_val_score's error_score=nan: the other candidates still compete
                log.warning("candidate %s failed on a fold", candidate.name, exc_info=True)
                aucs[i].append(float("nan"))
            seconds[i] += time.perf_counter() - tick
    return aucs, seconds, oof


def _cv_sample(X: pd.DataFrame, y: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    if len(X) <= CV_MAX_ROWS:
        return X, y
    chosen = np.random.default_rng(0).choice(len(X), CV_MAX_ROWS, replace=False)
    return X.iloc[chosen], y[chosen]


def version_proba(version, model, X: pd.DataFrame) -> np.ndarray:
    """Probability of the positive class from `model`, the loaded artifact of `version`.

    Our own pipelines encode the positive class as 1; an imported classifier may name it by
    the schema's positive label instead.
    """
    return positive_proba(model, X, version.schema.positive_label if version.imported else None)


def positive_proba(pipeline, X: pd.DataFrame, positive_label: str | None = None) -> np.ndarray:
    """Probability of the positive class. Ours encode it as 1; for an imported classifier,
    pass the positive label, which its classes_ may hold as text."""
    proba = np.asarray(pipeline.predict_proba(X))
    classes = [str(c) for c in getattr(pipeline, "classes_", [0, 1])]
    keys = (positive_label, "1", "True") if positive_label is not None else ("1", "True")
    for key in keys:
        if key in classes:
            return proba[:, classes.index(key)]
    return proba[:, -1]
