"""The deployment gates: each with its value, threshold and verdict, decided in one place."""
from dataclasses import asdict, dataclass

# Float noise must not flip a verdict exactly at a threshold (0.75 - 0.70 is 0.05000000000000004).
TOLERANCE = 1e-9


@dataclass
class Gate:
    name: str
    label: str
    value: float | None
    threshold: float | None
    comparison: str  # ">=" or "<=" or ">"
    passed: bool
    note: str = ""


def _at_least(value, threshold) -> bool:
    return value is not None and value >= threshold - TOLERANCE


def _at_most(value, threshold) -> bool:
    return value is not None and value <= threshold + TOLERANCE


METRIC_LABELS = {"auc": "ROC AUC", "pr_auc": "PR AUC", "accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "f1": "F1"}


def no_skill(metric: str, positive_rate: float) -> float:
    """What a model with no skill scores: a random ranking for the AUCs (0.5; the positive rate for
    PR AUC), always the majority class for accuracy, always the positive class for F1 (its best)."""
    return {"auc": 0.5, "pr_auc": positive_rate, "balanced_accuracy": 0.5, "accuracy": max(positive_rate, 1 - positive_rate),
            "f1": 2 * positive_rate / (1 + positive_rate)}[metric]


def real_drop(change: dict | None, allowed: float) -> bool:
    """A drop (candidate minus live, with its paired bootstrap interval) larger than allowed and
    shown to be real: the whole 95% interval below zero. A drop inside the noise is not a failure."""
    if not change or change.get("delta") is None:
        return False
    beyond = -change["delta"] > allowed + TOLERANCE
    return beyond and (change.get("high") is None or change["high"] < 0)


def evaluate_gates(policy, *, candidate: dict, live: dict | None, drift_share: float | None, label_check: dict | None,
                   drift: dict | None = None, comparison: dict | None = None, drift_decision: dict | None = None) -> dict:
    """`candidate` and `live` are evaluation.score() results on the same holdout rows, `comparison`
    their evaluation.paired_bootstrap() (the intervals that decide whether a drop is real).

    `drift` is the run's drift.dataset_drift() report on the new batches (None without new
    batches): any broken column in it (one value in every new row, where the reference varies)
    fails the broken-columns gate, whatever the drift share, since one broken column is a small
    share of the features but can teach the model a falsehood about every new row. Its
    `out_of_range` (drift.out_of_range) fails the out-of-range gate likewise: a unit change.
    `drift_decision` (decide_drift) lets a drift past the maximum through when the candidate explains it.
    """
    gates = _primary_gates(policy, candidate, live, comparison)
    accuracy = _get(candidate, "accuracy")
    gates.append(Gate("min_accuracy", "Accuracy", accuracy, policy.min_accuracy, ">=", _at_least(accuracy, policy.min_accuracy)))
    if live is not None:
        drop = _get(live, "accuracy") - accuracy
        gates.append(Gate("max_accuracy_drop", "Accuracy drop vs live model", drop, policy.max_accuracy_drop, "<=",
                          _at_most(drop, policy.max_accuracy_drop), note=f"live {_get(live, 'accuracy'):.4f} on the same rows"))
    else:
        gates.append(Gate("max_accuracy_drop", "Accuracy drop vs live model", None, policy.max_accuracy_drop, "<=", True,
                          note="no live model to compare with"))
    gates.append(_drift_gate(policy, drift_share, drift_decision))
    if policy.min_auc is not None:
        gates.append(Gate("min_auc", "ROC AUC", candidate.get("auc"), policy.min_auc, ">=", _at_least(candidate.get("auc"), policy.min_auc)))
    if label_check is not None:
        gates.append(Gate("labels", "Live model's accuracy drop on the new batches", label_check["drop"], policy.max_label_collapse, "<=",
                          _at_most(label_check["drop"], policy.max_label_collapse),
                          note=f"live accuracy {label_check['new_accuracy']:.4f} on {label_check['rows']} new rows "
                               f"vs {label_check['holdout_accuracy']:.4f} "
                               + (f"({label_check['reference']})" if label_check.get("reference") else "on its holdout")))
    if drift is not None:
        broken = drift.get("broken") or {}
        gates.append(Gate("broken_columns", "Broken columns in the new batches", float(len(broken)), 0.0, "<=", not broken,
                          note="; ".join(f"{name}: {why}" for name, why in broken.items())))
        gates.append(_range_gate(drift.get("out_of_range")))
    passed = all(g.passed for g in gates)
    return {"passed": passed, "primary_metric": policy.primary_metric, "gates": [asdict(g) for g in gates],
            "reasons": [describe_failure(g) for g in gates if not g.passed]}


def judged_key(metric: str) -> str:
    """The key of evaluation.score() (and paired_bootstrap) that the gates judge a metric by:
    accuracy on the probabilities cut at 0.5, so a threshold chosen for F1 or cost, which may
    rightly trade accuracy away, never fails an accuracy gate by itself."""
    return "accuracy_at_half" if metric == "accuracy" else metric


def _get(scores: dict, metric: str) -> float | None:
    # Scores from before accuracy_at_half existed were all cut at 0.5.
    return scores.get(judged_key(metric), scores.get(metric))


def _primary_gates(policy, candidate: dict, live: dict | None, comparison: dict | None) -> list[Gate]:
    metric = policy.primary_metric
    label = METRIC_LABELS[metric]
    value = _get(candidate, metric)
    gates = []
    if policy.min_primary is not None:
        gates.append(Gate("min_primary", label, value, policy.min_primary, ">=", _at_least(value, policy.min_primary)))
    if live is not None and _get(live, metric) is not None and value is not None:
        change = (comparison or {}).get(judged_key(metric)) or {"delta": value - _get(live, metric)}
        interval = (f"; change {change['delta']:+.4f}, 95% interval {change['low']:+.4f} to {change['high']:+.4f}"
                    if change.get("low") is not None else "")
        gates.append(Gate("max_primary_drop", f"{label} drop vs live model", _get(live, metric) - value, policy.max_primary_drop, "<=",
                          not real_drop(change, policy.max_primary_drop), note=f"live {_get(live, metric):.4f} on the same rows{interval}"))
    if policy.require_beats_baseline:
        rate = (candidate.get("class_balance") or {}).get("positive_rate")
        baseline = candidate["baseline_accuracy"] if metric == "accuracy" and rate is None else no_skill(metric, rate or 0.0)
        gates.append(Gate("beats_baseline", f"{label} above a model with no skill", value, baseline, ">",
                          value is not None and value > baseline + TOLERANCE))
    return gates


def decide_drift(policy, *, share: float | None, drifted: list[str], evidence: dict | None) -> dict:
    """Whether a drift past the maximum is one the candidate explains.

    adapted: the candidate, trained with the new rows, is not shown to be worse than the live model
    on the held-out part of the new rows (their paired interval is not wholly below zero) nor really
    worse on the older held-out rows (real_drop): it deploys, and an alert says the data changed.
    unexplained: it is: even trained with them, it predicts the new rows worse than a model that
    never saw them, so they teach nothing it can use; the batches wait for a person.
    Why not demand a proven gain: under a shift in the mix the old relation still holds, so there is
    no gain to prove, and one batch's held-out part (tens of rows) gives intervals of +-0.02 AUC;
    demanding the interval above zero held every batch after a lasting shift, and demanding a
    change of at least zero held good batches on the sign of noise (bench/README.md, the replay).
    `evidence`: {"new_rows": change, "older_rows": change}, each a paired_bootstrap entry of the
    judged metric with its "rows".
    """
    decision = {"share": share, "threshold": policy.max_drift, "drifted": list(drifted), "evidence": evidence or {}}
    if share is None:
        return {**decision, "case": "not checked", "message": "no new batches compared with a live model"}
    if share <= policy.max_drift + TOLERANCE:
        return {**decision, "case": "within", "message": f"{len(drifted)} feature(s) drifted, within the allowed share"}
    new, older = (evidence or {}).get("new_rows"), (evidence or {}).get("older_rows")
    label = METRIC_LABELS[policy.primary_metric]
    if not new or new.get("high") is None:
        why = "there are no held-out new rows to show that the candidate learned the change"
    elif new["high"] < 0:
        why = (f"the candidate does worse than the live model on the new rows ({label} {new['delta']:+.4f}, "
               f"95% interval {new['low']:+.4f} to {new['high']:+.4f}, {new['rows']:,} rows)")
    elif real_drop(older, policy.max_primary_drop):
        why = f"the candidate is worse on the older rows ({label} {older['delta']:+.4f}, interval up to {older['high']:+.4f})"
    else:
        return {**decision, "case": "adapted", "message": (
            f"the data changed ({len(drifted)} features drifted) and the candidate learned it: {label} {new['delta']:+.4f} "
            f"against the live model on the {new['rows']:,} held-out new rows (95% interval {new['low']:+.4f} to "
            f"{new['high']:+.4f}), no real drop on the older rows")}
    return {**decision, "case": "unexplained", "message": f"the data changed ({len(drifted)} features drifted) and {why}"}


def _drift_gate(policy, share: float | None, decision: dict | None) -> Gate:
    label = "Share of drifted features"
    if share is None:
        return Gate("max_drift", label, None, policy.max_drift, "<=", True, note="no new batches to compare")
    if decision is None:
        return Gate("max_drift", label, share, policy.max_drift, "<=", _at_most(share, policy.max_drift))
    passed = decision["case"] != "unexplained"
    return Gate("max_drift", label, share, policy.max_drift, "<=", passed,
                note="" if decision["case"] == "within" else f"{decision['case']}: {decision['message']}")


def _range_gate(moved: dict | None) -> Gate:
    """Numbers whose new values mostly lie outside the live model's training range (drift.out_of_range):
    a unit or export change, held like a broken column whatever the drift share."""
    label = "Features moved out of their training range"
    if moved is None:
        return Gate("out_of_range", label, None, 0.0, "<=", True, note="not checked: no training profile")
    return Gate("out_of_range", label, float(len(moved)), 0.0, "<=", not moved, note="; ".join(
        f"{name}: {m['share']:.0%} of {m['rows']:,} new values outside the training range, "
        f"before {m['before'][0]:g}..{m['before'][1]:g}, after {m['after'][0]:g}..{m['after'][1]:g}" for name, m in moved.items()))


def describe_failure(gate: Gate) -> str:
    if gate.name == "labels":
        return (f"suspected label problems: the live model's accuracy on the new batches fell by {gate.value:.3f} "
                f"(allowed {gate.threshold:.3f}); a person should check these labels ({gate.note})")
    if gate.name == "broken_columns":
        return f"broken columns in the new batches, a person should check the export: {gate.note}"
    if gate.name == "max_drift" and gate.note.startswith("unexplained"):
        return f"unexplained drift, a person should look at the change: {gate.note.removeprefix('unexplained: ')}"
    if gate.name == "out_of_range":
        return f"features moved out of their training range, a person should check the units or the export: {gate.note}"
    value = "n/a" if gate.value is None else f"{gate.value:.4f}"
    return f"{gate.label}: {value} is not {gate.comparison} {gate.threshold:.4f}" + (f" ({gate.note})" if gate.note else "")
