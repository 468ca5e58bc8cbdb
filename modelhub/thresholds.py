"""Decision thresholds: the probability from which a version predicts the positive label.

A row is predicted positive when its probability is at least the threshold. choose() picks one
by a rule (ValidationPolicy.ThresholdRule) on the rows it is given:

- "max_f1": the highest F1 score;
- "expected_cost": the lowest expected cost per row, (FP * cost of a false positive + FN * cost
  of a false negative) / rows; with calibrated probabilities it lands near
  cost_fp / (cost_fp + cost_fn), the threshold at which an offer pays for itself;
- "fixed": the given value.

The search: every threshold between two neighbouring distinct probabilities predicts the rows
alike, so only the distinct probabilities are scored, all at once from sorted counts. The value
returned is the midpoint between the best one and the next lower distinct probability (the
middle of the interval of equally good thresholds, so that new rows near the boundary are not
all on one side of it by accident), or the best one itself when none is lower. For the expected
cost, predicting no row positive is a candidate too, halfway between the highest probability and
1. Ties go to the higher threshold. The value is not rounded: rounding could carry it past a
probability and change the decisions it was chosen for.
"""
import numpy as np

RULES = ("max_f1", "expected_cost", "fixed")
DEFAULT = 0.5
CURVE_POINTS = np.linspace(0.02, 0.98, 49)
DIGITS = 6


def choose(y, proba, *, rule: str, false_positive_cost: float = 1.0, false_negative_cost: float = 5.0,
           fixed: float = DEFAULT) -> dict:
    """The threshold by `rule` on these labels (0/1) and positive-class probabilities, with the
    precision, recall, F1 (and cost) it and ~50 other thresholds give; JSON-safe."""
    if rule not in RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; one of {', '.join(RULES)}")
    y, proba = np.asarray(y).astype(bool), np.asarray(proba, dtype=np.float64)
    if y.shape != proba.shape:
        raise ValueError("labels and probabilities differ in length")
    costs = (float(false_positive_cost), float(false_negative_cost))
    both = 0 < int(y.sum()) < len(y)
    if rule == "fixed":
        value, reason = float(fixed), "the policy's fixed value"
    elif not both:
        value = DEFAULT
        reason = (f"{len(y):,} rows of one class: a threshold cannot be chosen on them; {DEFAULT} is used" if len(y)
                  else f"no rows to choose a threshold on; {DEFAULT} is used")
    elif rule == "max_f1":
        value, best = _max_f1(y, proba)
        reason = f"the highest F1 on {len(y):,} rows ({best:.4f})"
    else:
        value, best = _lowest_cost(y, proba, costs)
        reason = (f"the lowest expected cost on {len(y):,} rows ({best:.4f} a row; a false positive costs "
                  f"{costs[0]:g}, a false negative {costs[1]:g})")
    report = {"value": value, "rule": rule, "rows": int(len(y)), "reason": reason,
              "curve": _curve(y, proba, value, costs if rule == "expected_cost" else None, both)}
    if rule == "expected_cost":
        report["costs"] = {"false_positive": costs[0], "false_negative": costs[1]}
    return report


def _counts(y: np.ndarray, proba: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives at each threshold (predicted positive: proba >= threshold)."""
    positives, negatives = np.sort(proba[y]), np.sort(proba[~y])
    true_positives = len(positives) - np.searchsorted(positives, thresholds, side="left")
    false_positives = len(negatives) - np.searchsorted(negatives, thresholds, side="left")
    return true_positives, false_positives


def _f1(true_positives, false_positives, positives: int) -> np.ndarray:
    # 2TP / (2TP + FP + FN); FN = positives - TP.
    denominator = true_positives + false_positives + positives
    return np.divide(2.0 * true_positives, denominator, out=np.zeros(len(denominator)), where=denominator > 0)


def _cost(true_positives, false_positives, positives: int, rows: int, costs: tuple[float, float]) -> np.ndarray:
    return (false_positives * costs[0] + (positives - true_positives) * costs[1]) / rows


def _max_f1(y: np.ndarray, proba: np.ndarray) -> tuple[float, float]:
    distinct = np.unique(proba)[::-1]
    scores = _f1(*_counts(y, proba, distinct), int(y.sum()))
    best = int(np.argmax(scores))
    return _between(distinct, best), float(scores[best])


def _lowest_cost(y: np.ndarray, proba: np.ndarray, costs: tuple[float, float]) -> tuple[float, float]:
    distinct = np.unique(proba)[::-1]
    cost = _cost(*_counts(y, proba, distinct), int(y.sum()), len(y), costs)
    none = int(y.sum()) * costs[1] / len(y)  # no row predicted positive
    best = int(np.argmin(cost))
    if distinct[0] < 1.0 and none <= cost[best]:
        return (distinct[0] + 1.0) / 2, float(none)
    return _between(distinct, best), float(cost[best])


def _between(descending: np.ndarray, index: int) -> float:
    """Midway from descending[index] to the next lower value: the same rows are at or above it."""
    value = float(descending[index])
    if index + 1 < len(descending):
        middle = (value + float(descending[index + 1])) / 2
        if middle > descending[index + 1]:  # neighbouring floats have no midpoint between them
            return middle
    return value


def _curve(y: np.ndarray, proba: np.ndarray, value: float, costs: tuple[float, float] | None, both: bool) -> dict:
    keys = ("threshold", "precision", "recall", "f1") + (("cost",) if costs else ())
    if not both:
        return {key: [] for key in keys}
    thresholds = np.unique(np.append(CURVE_POINTS, value))
    positives = int(y.sum())
    true_positives, false_positives = _counts(y, proba, thresholds)
    predicted = true_positives + false_positives
    curve = {
        "threshold": thresholds,
        # No row predicted positive: precision 0, as scikit-learn's zero_division default gives.
        "precision": np.divide(true_positives, predicted, out=np.zeros(len(thresholds)), where=predicted > 0),
        "recall": true_positives / positives,
        "f1": _f1(true_positives, false_positives, positives),
    }
    if costs:
        curve["cost"] = _cost(true_positives, false_positives, positives, len(y), costs)
    return {key: [round(float(v), DIGITS) for v in values] for key, values in curve.items()}
