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


def evaluate_gates(policy, *, candidate: dict, live: dict | None, drift_share: float | None, label_check: dict | None,
                   drift: dict | None = None) -> dict:
    """`candidate` and `live` are evaluation.score() results on the same holdout rows.

    `drift` is the run's drift.dataset_drift() report on the new batches (None without new
    batches): any broken column in it (one value in every new row, where the reference varies)
    fails the broken-columns gate, whatever the drift share, since one broken column is a small
    share of the features but can teach the model a falsehood about every new row. Its
    `out_of_range` (drift.out_of_range) fails the out-of-range gate likewise: a unit change.
    """
    gates = [Gate("min_accuracy", "Accuracy", candidate["accuracy"], policy.min_accuracy, ">=",
                  _at_least(candidate["accuracy"], policy.min_accuracy))]
    if live is not None:
        drop = live["accuracy"] - candidate["accuracy"]
        gates.append(Gate("max_accuracy_drop", "Accuracy drop vs live model", drop, policy.max_accuracy_drop, "<=",
                          _at_most(drop, policy.max_accuracy_drop), note=f"live {live['accuracy']:.4f} on the same rows"))
    else:
        gates.append(Gate("max_accuracy_drop", "Accuracy drop vs live model", None, policy.max_accuracy_drop, "<=", True,
                          note="no live model to compare with"))
    if drift_share is not None:
        gates.append(Gate("max_drift", "Share of drifted features", drift_share, policy.max_drift, "<=",
                          _at_most(drift_share, policy.max_drift)))
    else:
        gates.append(Gate("max_drift", "Share of drifted features", None, policy.max_drift, "<=", True, note="no new batches to compare"))
    if policy.min_auc is not None:
        gates.append(Gate("min_auc", "ROC AUC", candidate.get("auc"), policy.min_auc, ">=", _at_least(candidate.get("auc"), policy.min_auc)))
    if policy.require_beats_baseline:
        baseline = candidate["baseline_accuracy"]
        gates.append(Gate("beats_baseline", "Accuracy above majority-class baseline", candidate["accuracy"], baseline, ">",
                          candidate["accuracy"] > baseline + TOLERANCE))
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
    return {"passed": passed, "gates": [asdict(g) for g in gates], "reasons": [describe_failure(g) for g in gates if not g.passed]}


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
    if gate.name == "out_of_range":
        return f"features moved out of their training range, a person should check the units or the export: {gate.note}"
    value = "n/a" if gate.value is None else f"{gate.value:.4f}"
    return f"{gate.label}: {value} is not {gate.comparison} {gate.threshold:.4f}" + (f" ({gate.note})" if gate.note else "")
