"""Scoring models on the held-out rows, and comparing two models on the same rows."""
import numpy as np
from sklearn import metrics as skm

THRESHOLD = 0.5
CURVE_POINTS = 60
BOOTSTRAP_ROUNDS = 200
BOOTSTRAP_MAX_ROWS = 20_000
COMPARED = ("accuracy", "precision", "recall", "f1", "auc", "brier")


def holdout_mask(frame, id_column: str, feature_and_target: list[str], percent: int):
    """Which rows are held out, decided by a hash of the id (or the row's content), never by chance.

    The same row is held out in every run, so no model ever trains on a row that any model
    is evaluated on, and the live model and a candidate meet the same unseen rows.
    """
    import pandas as pd

    if id_column:
        keys = frame[id_column].astype(str)
        hashes = pd.util.hash_pandas_object(keys, index=False)
    else:
        hashes = pd.util.hash_pandas_object(frame[feature_and_target].astype(str), index=False)
    return (hashes.to_numpy() % 100) < percent


def score(y: np.ndarray, proba: np.ndarray) -> dict:
    y = np.asarray(y, dtype=int)
    proba = np.asarray(proba, dtype=float)
    predicted = (proba >= THRESHOLD).astype(int)
    both = len(np.unique(y)) == 2
    tn, fp, fn, tp = skm.confusion_matrix(y, predicted, labels=[0, 1]).ravel().tolist()
    positive_rate = float(y.mean()) if len(y) else 0.0
    result = {
        "rows": int(len(y)),
        "accuracy": float(skm.accuracy_score(y, predicted)),
        "precision": float(skm.precision_score(y, predicted, zero_division=0)),
        "recall": float(skm.recall_score(y, predicted, zero_division=0)),
        "f1": float(skm.f1_score(y, predicted, zero_division=0)),
        "auc": float(skm.roc_auc_score(y, proba)) if both else None,
        "pr_auc": float(skm.average_precision_score(y, proba)) if both else None,
        "brier": float(skm.brier_score_loss(y, proba, pos_label=1)) if len(y) else None,
        "confusion_matrix": [[tn, fp], [fn, tp]],
        "class_balance": {"positive": int(y.sum()), "negative": int(len(y) - y.sum()), "positive_rate": positive_rate},
        "baseline_accuracy": max(positive_rate, 1 - positive_rate),
    }
    if both:
        fpr, tpr, _ = skm.roc_curve(y, proba)
        precision, recall, _ = skm.precision_recall_curve(y, proba)
        result["roc_curve"] = _thin({"fpr": fpr, "tpr": tpr})
        result["pr_curve"] = _thin({"recall": recall[::-1], "precision": precision[::-1]})
    return result


def _thin(curve: dict) -> dict:
    n = len(next(iter(curve.values())))
    keep = np.unique(np.linspace(0, n - 1, min(n, CURVE_POINTS)).round().astype(int))
    return {key: [round(float(v), 4) for v in np.asarray(values)[keep]] for key, values in curve.items()}


def paired_bootstrap(y: np.ndarray, candidate: np.ndarray, live: np.ndarray, *, rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0) -> dict:
    """95% intervals for candidate minus live, resampling the same rows for both models."""
    y, candidate, live = (np.asarray(a) for a in (y, candidate, live))
    rng = np.random.default_rng(seed)
    if len(y) > BOOTSTRAP_MAX_ROWS:
        keep = rng.choice(len(y), BOOTSTRAP_MAX_ROWS, replace=False)
        y, candidate, live = y[keep], candidate[keep], live[keep]
    point = {name: _metric(name, y, candidate) - _metric(name, y, live) for name in COMPARED if _metric(name, y, live) is not None}
    draws = {name: [] for name in point}
    for _ in range(rounds):
        idx = rng.integers(0, len(y), len(y))
        ys = y[idx]
        for name in point:
            a, b = _metric(name, ys, candidate[idx]), _metric(name, ys, live[idx])
            if a is not None and b is not None:
                draws[name].append(a - b)
    return {
        name: {
            "delta": float(point[name]),
            "low": float(np.percentile(draws[name], 2.5)) if draws[name] else None,
            "high": float(np.percentile(draws[name], 97.5)) if draws[name] else None,
        }
        for name in point
    }


def _metric(name: str, y: np.ndarray, proba: np.ndarray):
    predicted = proba >= THRESHOLD
    if name == "accuracy":
        return float(np.mean(predicted == y))
    if name == "brier":
        return float(np.mean((proba - y) ** 2))
    if name == "auc":
        return float(skm.roc_auc_score(y, proba)) if 0 < y.sum() < len(y) else None
    tp = float(np.sum(predicted & (y == 1)))
    precision = tp / predicted.sum() if predicted.sum() else 0.0
    recall = tp / y.sum() if y.sum() else 0.0
    if name == "precision":
        return precision
    if name == "recall":
        return recall
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def permutation_importance(pipeline, X, y, *, proba_fn, max_rows: int = 2000, repeats: int = 3, seed: int = 0) -> dict:
    """Drop in holdout AUC when each original column is shuffled, largest first."""
    rng = np.random.default_rng(seed)
    if len(X) > max_rows:
        keep = rng.choice(len(X), max_rows, replace=False)
        X, y = X.iloc[keep], np.asarray(y)[keep]
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return {}
    base = skm.roc_auc_score(y, proba_fn(pipeline, X))
    result = {}
    for column in X.columns:
        drops = []
        for _ in range(repeats):
            shuffled = X.copy()
            shuffled[column] = rng.permutation(shuffled[column].to_numpy())
            drops.append(base - skm.roc_auc_score(y, proba_fn(pipeline, shuffled)))
        result[column] = float(np.mean(drops))
    return dict(sorted(result.items(), key=lambda item: -item[1]))
