"""How a version was judged, read off its metadata for the pages: its primary metric, decision
threshold, calibration, and its run's drift decision with pictures of the change.

Every part is optional: a version trained before these were kept has none of them, and each
reader then gives None, so its pages show what they showed before.
"""
from modelhub.models import ModelVersion, TrainingRun, ValidationPolicy

from . import figures

METRIC_LABELS = dict(ValidationPolicy.Metric.choices)
RULE_LABELS = dict(ValidationPolicy.ThresholdRule.choices)
EVIDENCE = (("new_rows", "the held-out part of the new rows"), ("older_rows", "the older held-out rows"))


def for_version(version: ModelVersion) -> dict:
    return {"primary": primary(version), "threshold": threshold(version), "calibration": calibration(version),
            "decision": decision(version)}


def for_run(run: TrainingRun) -> dict:
    return {"decision": decision(run.candidate) if run.candidate else None}


def primary_name(version: ModelVersion) -> str | None:
    """The metric the version was judged by first (kept with its metrics, and by the gates)."""
    name = version.metrics.get("primary_metric") or (version.validation or {}).get("primary_metric")
    return name if name in METRIC_LABELS else None


def primary(version: ModelVersion) -> dict | None:
    """The primary metric as a row of the model page's metrics table."""
    name = primary_name(version)
    if name is None:
        return None
    validation = version.validation or {}
    return {"name": name, "label": METRIC_LABELS[name], "value": version.metrics.get(name),
            "live": (validation.get("live_metrics") or {}).get(name), "ci": (validation.get("comparison") or {}).get(name)}


def threshold(version: ModelVersion) -> dict | None:
    chosen = version.metrics.get("threshold")
    if not isinstance(chosen, dict) or chosen.get("value") is None:
        return None
    return {**chosen, "rule_label": RULE_LABELS.get(chosen.get("rule"), chosen.get("rule")), "costs": chosen.get("costs") or {}}


def calibration(version: ModelVersion) -> dict | None:
    found = version.metrics.get("calibration")
    if not isinstance(found, dict):
        return None
    candidates = sorted((found.get("candidates") or {}).items(), key=lambda item: item[1])
    return {**found, "candidates": candidates}


def decision(version: ModelVersion) -> dict | None:
    """The run's drift decision, with the evidence, the drifted features (highest PSI first) with
    their scores, the target rate, and for an unexplained hold the pictures of the change."""
    found = (version.validation or {}).get("drift_decision")
    if not isinstance(found, dict) or not found.get("case"):
        return None
    drift = version.drift or {}
    features, moved = drift.get("features") or {}, drift.get("out_of_range") or {}
    drifted = [_drifted(name, features.get(name, {}), moved.get(name)) for name in found.get("drifted") or []]
    drifted.sort(key=lambda f: -(f["psi"] or 0))
    evidence = found.get("evidence") or {}
    return {
        **found,
        "message": _sentence(found.get("message") or ""),
        "deployed": version.deployed_at is not None,
        "evidence": [{"where": where, "label": METRIC_LABELS.get(e.get("metric"), e.get("metric")), **e}
                     for key, where in EVIDENCE if (e := evidence.get(key))],
        "drifted": drifted,
        "notes": any(f["note"] for f in drifted),
        "target": drift.get("target"),
        "pictures": figures.change(version) if found["case"] == "unexplained" else [],
    }


def _drifted(name: str, feature: dict, moved: dict | None) -> dict:
    """A drifted feature's scores, and what makes it more than drift: a broken column, a move out
    of the training range (drift.broken, drift.out_of_range)."""
    notes = [f"broken: {feature['broken']}"] if feature.get("broken") else []
    if moved:
        notes.append(f"out of range: {moved['before'][0]:g} to {moved['before'][1]:g} in training, "
                     f"{moved['after'][0]:g} to {moved['after'][1]:g} now")
    p_value = feature.get("p_value_adjusted")
    # Rounded here: Django's floatformat prints a p-value as small as 1e-300 whole.
    return {"name": name, "psi": feature.get("psi"), "decided_by": feature.get("decided_by"),
            "p_value_adjusted": round(p_value, 4) if isinstance(p_value, float) else p_value, "note": "; ".join(notes)}


def _sentence(text: str) -> str:
    """The decision's message ("the data changed and ...") as a sentence of the page."""
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if not text or text.endswith(".") else ".")
