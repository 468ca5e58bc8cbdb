"""Figures built once per change of what they show and kept in the shared cache (CACHES), so a
page view never rebuilds a plotly figure: a version's figures never change once it is trained;
the history figures change when a version is added or its status changes.
"""
from django.core.cache import cache
from django.db.models import Count, Max

from modelhub.models import ModelVersion

from . import charts

HISTORY_FIELDS = ("major", "minor", "status", "metrics")
PICTURED = 6  # drifted features drawn for an unexplained drift, highest PSI first


def history_stamp() -> str:
    """What the history figures and the versions table show, read off one small index: it changes
    when a version is added, changes status, or is deployed or rolled back to (deployed_at)."""
    groups = (ModelVersion.objects.order_by("status").values("status")
              .annotate(n=Count("pk"), last=Max("pk"), deployed=Max("deployed_at")))
    return ";".join(f"{g['status']}:{g['n']}:{g['last']}:{g['deployed'].timestamp() if g['deployed'] else 0}" for g in groups)


def history(*, last: int | None = None, stamp: str | None = None) -> str:
    """The metrics-by-version chart of every version (or of the `last` ones); "" with fewer than two."""
    key = f"figure:history:{stamp or history_stamp()}:{last}"
    figure = cache.get(key)
    if figure is None:
        versions = ModelVersion.objects.order_by("-major", "-minor").only(*HISTORY_FIELDS)
        versions = list(versions[:last] if last else versions)
        figure = charts.history(versions) if len(versions) > 1 else ""
        cache.set(key, figure, timeout=None)
    return figure


def for_version(version: ModelVersion) -> dict:
    """The version page's figures (confusion matrix, curves, importance, drift, decision threshold,
    calibration)."""
    key = f"figure:version:{version.pk}:{version.sha256}"
    figures = cache.get(key)
    if figures is None:
        metrics, drift = version.metrics, version.drift or {}
        threshold, calibration = metrics.get("threshold"), metrics.get("calibration")
        live = (version.validation or {}).get("live_metrics") or None
        labels = [version.schema.negative_label, version.schema.positive_label]
        figures = {
            "confusion_chart": charts.confusion(metrics["confusion_matrix"], labels, version.threshold) if metrics.get("confusion_matrix") else "",
            "curve_chart": charts.curves(metrics, live, version.threshold) if metrics.get("roc_curve") else "",
            "importance_chart": charts.importance(metrics["feature_importance"]) if metrics.get("feature_importance") else "",
            "drift_chart": charts.drift(drift["features"], drift.get("psi_threshold")) if drift.get("features") else "",
            "threshold_chart": charts.threshold_curve(threshold) if _curve(threshold) else "",
            "reliability_chart": charts.reliability(calibration) if _reliability(calibration) else "",
        }
        cache.set(key, figures, timeout=None)
    return figures


def _curve(threshold) -> bool:
    return isinstance(threshold, dict) and threshold.get("value") is not None and bool((threshold.get("curve") or {}).get("threshold"))


def _reliability(calibration) -> bool:
    return isinstance(calibration, dict) and any((curve or {}).get("predicted") for curve in (calibration.get("reliability") or {}).values())


def change(version: ModelVersion) -> list[str]:
    """Pictures of an unexplained drift: for the most drifted features, their distribution in the
    reference rows against the new rows, from the shares drift.feature_drift keeps per bin."""
    key = f"figure:change:{version.pk}:{version.sha256}"
    pictures = cache.get(key)
    if pictures is None:
        features = (version.drift or {}).get("features") or {}
        drifted = ((version.validation or {}).get("drift_decision") or {}).get("drifted") or []
        shown = sorted((n for n in drifted if features.get(n, {}).get("reference_share")), key=lambda n: -(features[n].get("psi") or 0))
        pictures = [charts.change(name, features[name]) for name in shown[:PICTURED]]
        cache.set(key, pictures, timeout=None)
    return pictures


def class_balance(balance: dict) -> str:
    """The master's class balance chart; it changes only when the master does."""
    key = "figure:balance:" + "-".join(f"{label}={v['rows']}" for label, v in sorted(balance.items()))
    figure = cache.get(key)
    if figure is None:
        figure = charts.class_balance(balance) if balance else ""
        cache.set(key, figure, timeout=None)
    return figure
