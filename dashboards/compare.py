"""Two versions side by side: what the compare page shows, read off each version's metadata."""
from modelhub.models import ModelVersion

from . import judgement
from .selectors import METRIC_NAMES

TOP_FEATURES = 10
SHOWN = ("major", "minor", "status")
# The pages' metrics, with balanced accuracy (a primary metric one can choose) beside accuracy.
METRICS = ("accuracy", "balanced_accuracy", *(n for n in METRIC_NAMES if n not in ("accuracy", "balanced_accuracy")))
# The single figures of metrics["calibration"], in this order; its candidates and curves are
# nested, shown on the version page.
CALIBRATION = (("method", "Method"), ("applied", "Applied"), ("brier_before", "Brier before"), ("brier_after", "Brier after"),
               ("fitted_on", "Rows fitted on"), ("reason", "Why"))


class ChoiceError(ValueError):
    """The two versions asked for cannot be compared; the message says why, for the page."""


def choices() -> list[ModelVersion]:
    """Every version, newest first, for the page's two selects."""
    return list(ModelVersion.objects.order_by("-major", "-minor").only(*SHOWN))


def suggested_pair(versions: list[ModelVersion]) -> tuple[str, str]:
    """What the selects start at: the live model against the newest other version."""
    live = next((v for v in versions if v.status == ModelVersion.Status.ACTIVE), versions[0] if versions else None)
    other = next((v for v in versions if v != live), None)
    return (live.version if live else "", other.version if other else "")


def choose(a: str | None, b: str | None) -> tuple[ModelVersion, ModelVersion]:
    if not a or not b:
        raise ChoiceError("Choose two versions to compare.")
    if a == b:
        raise ChoiceError(f"v{a} was chosen twice: choose two different versions.")
    versions = ModelVersion.objects.select_related("schema", "run")
    return _named(a, versions), _named(b, versions)


def _named(name: str, versions) -> ModelVersion:
    try:
        return ModelVersion.named(name, versions)
    except (ValueError, ModelVersion.DoesNotExist):
        raise ChoiceError(f"There is no version {name!r}: choose one from the lists.") from None


def page(a: ModelVersion, b: ModelVersion) -> dict:
    return {
        "va": a, "vb": b,
        "primaries": [judgement.METRIC_LABELS.get(judgement.primary_name(v)) for v in (a, b)],
        "thresholds": [threshold_cell(a), threshold_cell(b)],
        "metric_rows": metric_rows(a, b),
        "gate_rows": gate_rows(a, b),
        "confusions": [confusion(a), confusion(b)],
        "calibration_rows": calibration_rows(a, b),
        "importance_rows": importance_rows(a, b), "top_features": TOP_FEATURES,
        "drifts": [drift_summary(a), drift_summary(b)],
    }


def metric_rows(a: ModelVersion, b: ModelVersion) -> list[dict]:
    """Each holdout metric either version has: both values, each one's intervals, and b − a; the
    primary metrics first, each marked with the versions ("A", "B") judged by it.
    The interval kept today is against the live model of the version's own run (validation
    comparison); a metric's own interval (metrics["intervals"]) is shown when there is one."""
    primaries = [judgement.primary_name(a), judgement.primary_name(b)]
    first = [name for name in dict.fromkeys(primaries) if name]
    rows = []
    for name in first + [n for n in METRICS if n not in first]:
        va, vb = a.metrics.get(name), b.metrics.get(name)
        if va is None and vb is None:
            continue
        rows.append({
            "name": name,
            "primary_for": [column for column, primary in zip("AB", primaries) if primary == name],
            "cells": [_metric_cell(a, name), _metric_cell(b, name)],
            "diff": vb - va if _number(va) and _number(vb) else None,
        })
    return rows


def threshold_cell(version: ModelVersion) -> dict:
    """The threshold a version labels with, and how it was chosen (None for the default)."""
    return {"value": version.threshold, "chosen": judgement.threshold(version)}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _metric_cell(version: ModelVersion, name: str) -> dict:
    own = (version.metrics.get("intervals") or {}).get(name)
    versus_live = ((version.validation or {}).get("comparison") or {}).get(name)
    return {"value": version.metrics.get(name), "interval": own, "versus_live": versus_live}


def gate_rows(a: ModelVersion, b: ModelVersion) -> list[dict]:
    """The gates of each version's run, matched by label (a gate one run did not have is empty)."""
    per_version = [{g.get("label", g.get("name", "?")): g for g in (v.validation or {}).get("gates", [])} for v in (a, b)]
    labels = list(per_version[0]) + [label for label in per_version[1] if label not in per_version[0]]
    return [{"label": label, "cells": [gates.get(label) for gates in per_version]} for label in labels]


def confusion(version: ModelVersion) -> dict | None:
    matrix = version.metrics.get("confusion_matrix")
    if not matrix:
        return None
    (tn, fp), (fn, tp) = matrix
    schema = version.schema
    return {"negative": schema.negative_label, "positive": schema.positive_label, "tn": tn, "fp": fp, "fn": fn, "tp": tp}


def calibration_rows(a: ModelVersion, b: ModelVersion) -> list[dict]:
    """The single figures of each version's calibration (CALIBRATION) either version has; none
    when neither version has been calibrated."""
    found = [v.metrics.get("calibration") for v in (a, b)]
    found = [c if isinstance(c, dict) else {} for c in found]
    return [{"name": label, "key": key, "cells": [c.get(key) for c in found]}
            for key, label in CALIBRATION if any(c.get(key) is not None for c in found)]


def importance_rows(a: ModelVersion, b: ModelVersion) -> list[dict]:
    """The features in either version's top ten, most important (in either) first."""
    ia, ib = (v.metrics.get("feature_importance") or {} for v in (a, b))
    names = list(ia)[:TOP_FEATURES] + [n for n in list(ib)[:TOP_FEATURES] if n not in list(ia)[:TOP_FEATURES]]
    names.sort(key=lambda n: -max(ia.get(n, float("-inf")), ib.get(n, float("-inf"))))
    rank_a, rank_b = ({n: i + 1 for i, n in enumerate(imp)} for imp in (ia, ib))
    return [{"name": n, "cells": [(ia.get(n), rank_a.get(n)), (ib.get(n), rank_b.get(n))]} for n in names]


def drift_summary(version: ModelVersion) -> dict | None:
    drift = version.drift or {}
    if not drift.get("features"):
        return None
    features = drift["features"]
    drifted = sorted((n for n, d in features.items() if d.get("drifted")), key=lambda n: -(features[n].get("psi") or 0))
    return {"share": drift.get("share"), "drifted": drifted, "features": len(features), "method": drift.get("method"),
            "reference_rows": drift.get("reference_rows"), "current_rows": drift.get("current_rows"),
            "target": drift.get("target") or {}}
