"""Scoring models on the held-out rows, and comparing two models on the same rows."""
import numpy as np
import pandas as pd
from django.conf import settings
from sklearn import metrics as skm

from .models import DEFAULT_DECISION_THRESHOLD

CURVE_POINTS = 60
BOOTSTRAP_ROUNDS = 200
BOOTSTRAP_MAX_ROWS = 20_000
BOOTSTRAP_BLOCK_CELLS = 500_000  # rounds x rows resampled at once: bounds the memory (4 MB a matrix)
PERMUTATION_CELLS_PER_CALL = 2_000_000  # rows x columns scored per prediction call: bounds the memory
COMPARED = ("accuracy", "accuracy_at_half", "balanced_accuracy", "precision", "recall", "f1", "auc", "pr_auc", "brier")


def held_out(frame, schema) -> np.ndarray:
    """The rows of `frame` that no model trains on: CL_HOLDOUT_PERCENT of them, by holdout_mask."""
    return holdout_mask(frame, schema.id_column, schema.feature_names + [schema.target], settings.CL_HOLDOUT_PERCENT)


def holdout_mask(frame, id_column: str, feature_and_target: list[str], percent: int):
    """Which rows are held out, decided by a hash of the id (or the row's content), never by chance.

    The same row is held out in every run, so no model ever trains on a row that any model
    is evaluated on, and the live model and a candidate meet the same unseen rows.
    """
    if id_column:
        keys = frame[id_column].astype(str)
        hashes = pd.util.hash_pandas_object(keys, index=False)
    else:
        hashes = pd.util.hash_pandas_object(frame[feature_and_target].astype(str), index=False)
    return (hashes.to_numpy() % 100) < percent


def score(y: np.ndarray, proba: np.ndarray, *, threshold: float = DEFAULT_DECISION_THRESHOLD) -> dict:
    y = np.asarray(y, dtype=int)
    proba = np.asarray(proba, dtype=float)
    predicted = (proba >= threshold).astype(int)
    both = len(np.unique(y)) == 2
    tn, fp, fn, tp = skm.confusion_matrix(y, predicted, labels=[0, 1]).ravel().tolist()
    positive_rate = float(y.mean()) if len(y) else 0.0
    result = {
        "rows": int(len(y)),
        "accuracy": float(skm.accuracy_score(y, predicted)),
        # The accuracy gates' figure: calibrated probabilities cut at 0.5 are the most accurate
        # labels, whatever threshold the labels use (F1 or cost may rightly trade accuracy away).
        "accuracy_at_half": float(skm.accuracy_score(y, proba >= 0.5)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y, predicted)) if both else None,
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


def paired_bootstrap(y: np.ndarray, candidate: np.ndarray, live: np.ndarray, *, rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0,
                     candidate_threshold: float = DEFAULT_DECISION_THRESHOLD,
                     live_threshold: float = DEFAULT_DECISION_THRESHOLD) -> dict:
    """95% intervals for candidate minus live, resampling the same rows for both models, each
    model's labels at its own decision threshold.

    A resample is a vector of how often each row was drawn, so every round's metrics are
    weighted sums over the rows, computed for a block of rounds at once (no Python loop per
    round and metric, which took seconds per run).
    """
    y, candidate, live = np.asarray(y, dtype=int), np.asarray(candidate, dtype=float), np.asarray(live, dtype=float)
    rng = np.random.default_rng(seed)
    if len(y) > BOOTSTRAP_MAX_ROWS:
        keep = rng.choice(len(y), BOOTSTRAP_MAX_ROWS, replace=False)
        y, candidate, live = y[keep], candidate[keep], live[keep]
    n = len(y)
    if n == 0:
        return {}
    ones = np.ones((1, n))
    live_point = weighted_metrics(y, live, ones, threshold=live_threshold)
    cand_point = weighted_metrics(y, candidate, ones, threshold=candidate_threshold)
    names = [name for name in COMPARED if not np.isnan(live_point[name][0])]
    draws = {name: [] for name in names}
    block = max(1, BOOTSTRAP_BLOCK_CELLS // n)
    for first in range(0, rounds, block):
        size = min(block, rounds - first)
        drawn = rng.integers(0, n, (size, n))
        weights = np.bincount((drawn + n * np.arange(size)[:, None]).ravel(), minlength=size * n).reshape(size, n)
        cand = weighted_metrics(y, candidate, weights, threshold=candidate_threshold)
        base = weighted_metrics(y, live, weights, threshold=live_threshold)
        for name in names:
            draws[name].append(cand[name] - base[name])
    result = {}
    for name in names:
        values = np.concatenate(draws[name]) if draws[name] else np.array([])
        values = values[~np.isnan(values)]  # rounds that drew a single class have no AUC
        result[name] = {
            "delta": float(cand_point[name][0] - live_point[name][0]),
            "low": float(np.percentile(values, 2.5)) if len(values) else None,
            "high": float(np.percentile(values, 97.5)) if len(values) else None,
        }
    return result


def weighted_metrics(y: np.ndarray, proba: np.ndarray, weights: np.ndarray, *,
                     threshold: float = DEFAULT_DECISION_THRESHOLD) -> dict[str, np.ndarray]:
    """The COMPARED metrics for each row of `weights` (how many times each row counts).

    Row r gives what the metric would be on the rows repeated weights[r] times; NaN where it is
    undefined (the AUCs and balanced accuracy with one class). Precision, recall and F1 are 0 when
    undefined, as in score().
    """
    y = np.asarray(y, dtype=int)
    proba = np.asarray(proba, dtype=float)
    weights = np.asarray(weights, dtype=float)
    predicted = proba >= threshold
    positive = y == 1
    total = weights.sum(axis=1)
    tp = weights @ (predicted & positive)
    predicted_positive = weights @ predicted
    positives = weights @ positive
    negatives = total - positives
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted_positive > 0, tp / predicted_positive, 0.0)
        recall = np.where(positives > 0, tp / positives, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        accuracy = (weights @ (predicted == positive)) / total
        accuracy_at_half = (weights @ ((proba >= 0.5) == positive)) / total
        specificity = (weights @ (~predicted & ~positive)) / negatives
        balanced = np.where((positives > 0) & (negatives > 0), (recall + specificity) / 2, np.nan)
        brier = (weights @ (proba - y) ** 2) / total
    return {"accuracy": accuracy, "accuracy_at_half": accuracy_at_half, "balanced_accuracy": balanced, "precision": precision, "recall": recall, "f1": f1,
            "auc": weighted_auc(y, proba, weights), "pr_auc": weighted_average_precision(y, proba, weights), "brier": brier}


def weighted_auc(y: np.ndarray, proba: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC for each row of `weights` (how many times each row counts); NaN with one class.

    skm.roc_auc_score gives the same figures one call per row of weights; this does every row in
    one pass, 18x faster on the bootstrap's 25 x 20,000 blocks (the bootstrap took seconds with it).
    AUC = P(score of a positive > score of a negative) + half the ties, from weighted counts per
    distinct score, in ascending order of score.
    """
    positive = np.asarray(y, dtype=int) == 1
    proba = np.asarray(proba, dtype=float)
    weights = np.asarray(weights, dtype=float)
    positives = weights @ positive
    negatives = weights.sum(axis=1) - positives
    order = np.argsort(proba, kind="stable")
    sorted_proba = proba[order]
    starts = np.flatnonzero(np.r_[True, sorted_proba[1:] != sorted_proba[:-1]])
    w = weights[:, order]
    pos_per_score, neg_per_score = w * positive[order], w * ~positive[order]
    if len(starts) < len(proba):  # tied scores: one column per distinct score
        pos_per_score = np.add.reduceat(pos_per_score, starts, axis=1)
        neg_per_score = np.add.reduceat(neg_per_score, starts, axis=1)
    positives_above = positives[:, None] - np.cumsum(pos_per_score, axis=1)
    pairs = positives * negatives
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, (neg_per_score * (positives_above + 0.5 * pos_per_score)).sum(axis=1) / pairs, np.nan)


def weighted_average_precision(y: np.ndarray, proba: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision (PR AUC, as skm.average_precision_score) for each row of `weights`; NaN
    without both classes. Sum over distinct scores, highest first, of the recall gained there times
    the precision at that score."""
    positive = np.asarray(y, dtype=int) == 1
    proba = np.asarray(proba, dtype=float)
    weights = np.asarray(weights, dtype=float)
    positives = weights @ positive
    negatives = weights.sum(axis=1) - positives
    order = np.argsort(-proba, kind="stable")
    sorted_proba = proba[order]
    starts = np.flatnonzero(np.r_[True, sorted_proba[1:] != sorted_proba[:-1]])
    w = weights[:, order]
    tp_here, fp_here = w * positive[order], w * ~positive[order]
    if len(starts) < len(proba):
        tp_here, fp_here = np.add.reduceat(tp_here, starts, axis=1), np.add.reduceat(fp_here, starts, axis=1)
    tp, predicted = np.cumsum(tp_here, axis=1), np.cumsum(tp_here + fp_here, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        return np.where((positives > 0) & (negatives > 0), (tp_here * precision).sum(axis=1) / positives, np.nan)


def permutation_importance(pipeline, X, y, *, proba_fn, max_rows: int = 2000, repeats: int = 3, seed: int = 0) -> dict:
    """Drop in holdout AUC when each original column is shuffled, largest first.

    All the shuffled copies are scored in a few large predictions instead of one small one per
    column and repeat: the fixed cost of each pipeline call dominated on a few thousand rows.
    """
    rng = np.random.default_rng(seed)
    if len(X) > max_rows:
        keep = rng.choice(len(X), max_rows, replace=False)
        X, y = X.iloc[keep], np.asarray(y)[keep]
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return {}
    n = len(X)
    ones = np.ones((1, n))
    base = skm.roc_auc_score(y, proba_fn(pipeline, X))
    values = {column: X[column].to_numpy() for column in X.columns}
    columns = list(X.columns)
    per_call = max(1, PERMUTATION_CELLS_PER_CALL // (n * repeats * len(columns)))
    result = {}
    for first in range(0, len(columns), per_call):
        chunk = columns[first:first + per_call]
        copies = len(chunk) * repeats
        data = {column: np.tile(v, copies) for column, v in values.items()}
        for i, column in enumerate(chunk):
            for r in range(repeats):
                at = (i * repeats + r) * n
                data[column][at:at + n] = rng.permutation(values[column])
        # The columns keep X's dtypes: pandas would otherwise turn object columns into its string
        # dtype, which the pipeline then converts back row by row.
        shuffled = pd.DataFrame({column: pd.Series(data[column], dtype=X[column].dtype, copy=False) for column in columns})
        proba = np.asarray(proba_fn(pipeline, shuffled)).reshape(copies, n)
        aucs = np.array([weighted_auc(y, row, ones)[0] for row in proba])
        for i, column in enumerate(chunk):
            result[column] = float(np.mean(base - aucs[i * repeats:(i + 1) * repeats]))
    return dict(sorted(result.items(), key=lambda item: -item[1]))

