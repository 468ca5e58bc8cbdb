"""Plotly figures built on the server; the page draws them with plotly.min.js from our static files.

Each figure goes into the page as a JSON data block beside an empty <div>, and static/js/charts.js
draws every one: no inline script runs, so the Content-Security-Policy allows our own scripts only.
"""
import plotly.graph_objects as go
from django.utils.html import json_script

COLORS = {"accuracy": "#2563eb", "auc": "#16a34a", "f1": "#9333ea", "precision": "#ea580c", "recall": "#0891b2"}
STATUS_SYMBOL = {"active": "star", "retired": "circle", "rejected": "x", "candidate": "diamond"}


def _html(fig: go.Figure, height: int = 320, right: int = 20) -> str:
    fig.update_layout(height=height, margin=dict(l=50, r=right, t=40, b=40), template="plotly_white",
                      font=dict(family="system-ui, sans-serif", size=12))
    if fig.layout.legend.y is None:  # a horizontal legend under the plot (and under its x-axis title)
        fig.update_layout(legend=dict(orientation="h", y=-0.3 if fig.layout.xaxis.title.text else -0.2))
    figure = fig.to_plotly_json()
    figure["config"] = {"displaylogo": False, "responsive": True}
    return f'<div class="chart plotly-graph-div"></div>{json_script(_plain(figure))}'


def _plain(value):
    """plotly's JSON-ready form (numpy arrays and numbers included) as plain Python values."""
    import json

    from plotly.utils import PlotlyJSONEncoder

    return json.loads(json.dumps(value, cls=PlotlyJSONEncoder))


def history(versions) -> str:
    """Holdout metrics of every version, in version order; rejected ones marked with a cross."""
    versions = sorted(versions, key=lambda v: (v.major, v.minor))
    labels = [f"v{v.version}" for v in versions]
    fig = go.Figure()
    for metric, color in COLORS.items():
        fig.add_trace(go.Scatter(
            x=labels, y=[v.metrics.get(metric) for v in versions], name=metric.upper() if metric == "auc" else metric,
            mode="lines+markers", line=dict(color=color),
            marker=dict(symbol=[STATUS_SYMBOL.get(v.status, "circle") for v in versions], size=9),
            hovertemplate="%{x}: %{y:.3f}<extra>" + metric + "</extra>",
        ))
    fig.update_layout(title="Holdout metrics by version (★ active, × rejected)", yaxis=dict(range=[0, 1]))
    return _html(fig)


def confusion(matrix, labels, threshold: float) -> str:
    (tn, fp), (fn, tp) = matrix
    fig = go.Figure(go.Heatmap(
        z=[[tn, fp], [fn, tp]], x=[f"predicted {labels[0]}", f"predicted {labels[1]}"], y=[f"actual {labels[0]}", f"actual {labels[1]}"],
        text=[[tn, fp], [fn, tp]], texttemplate="%{text}", colorscale="Blues", showscale=False,
    ))
    fig.update_layout(title=f"Confusion matrix (holdout rows, threshold {threshold:.3g})", yaxis=dict(autorange="reversed"))
    return _html(fig, 300)


def curves(metrics: dict, live: dict | None = None, threshold: float | None = None) -> str:
    """The ROC curve (and the live model's), with the point the decision threshold picks on it,
    read off the confusion matrix taken at that threshold."""
    fig = go.Figure()
    roc = metrics.get("roc_curve")
    if roc:
        fig.add_trace(go.Scatter(x=roc["fpr"], y=roc["tpr"], name=f"ROC (AUC {metrics['auc']:.3f})", mode="lines"))
    if threshold is not None and metrics.get("confusion_matrix"):
        (tn, fp), (fn, tp) = metrics["confusion_matrix"]
        if tn + fp and tp + fn:
            fig.add_trace(go.Scatter(x=[fp / (tn + fp)], y=[tp / (tp + fn)], name=f"decision threshold {threshold:.3g}", mode="markers",
                                     marker=dict(color="#dc2626", size=11, symbol="x"),
                                     hovertemplate="threshold " + f"{threshold:.3g}" + ": FPR %{x:.3f}, TPR %{y:.3f}<extra></extra>"))
    if live and live.get("roc_curve"):
        fig.add_trace(go.Scatter(x=live["roc_curve"]["fpr"], y=live["roc_curve"]["tpr"], name=f"live model (AUC {live['auc']:.3f})",
                                 mode="lines", line=dict(dash="dot")))
    pr = metrics.get("pr_curve")
    if pr:
        fig.add_trace(go.Scatter(x=pr["recall"], y=pr["precision"], name=f"precision-recall (AP {metrics['pr_auc']:.3f})",
                                 mode="lines", xaxis="x", visible="legendonly"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], name="chance", mode="lines", line=dict(color="#aaa", dash="dash")))
    fig.update_layout(title="ROC curve (holdout)", xaxis_title="false positive rate / recall", yaxis_title="true positive rate / precision")
    return _html(fig, 320)


def importance(feature_importance: dict, top: int = 15) -> str:
    items = list(feature_importance.items())[:top][::-1]
    fig = go.Figure(go.Bar(x=[v for _, v in items], y=[k for k, _ in items], orientation="h", marker_color="#2563eb"))
    fig.update_layout(title="Permutation importance", xaxis_title="drop in holdout AUC when the feature is shuffled")
    return _html(fig, max(260, 22 * len(items) + 80))


def drift(features: dict, psi_threshold: float | None = None) -> str:
    """`psi_threshold`: drawn when PSI decided (large samples); small ones are decided by p-values."""
    items = sorted(features.items(), key=lambda item: item[1]["psi"])
    fig = go.Figure(go.Bar(
        x=[r["psi"] for _, r in items], y=[name for name, _ in items], orientation="h",
        marker_color=["#dc2626" if r["drifted"] else "#94a3b8" for _, r in items],
    ))
    fig.update_layout(title="PSI per feature vs the live model's training data<br><sup>red: drifted</sup>",
                      xaxis_title="population stability index (PSI, unitless)")
    if psi_threshold is not None:
        fig.add_vline(x=psi_threshold, line_dash="dash", line_color="#dc2626",
                      annotation_text=f"drifted above {psi_threshold:g}", annotation_position="top right")
    return _html(fig, max(260, 20 * len(items) + 80))


def class_balance(balance: dict) -> str:
    fig = go.Figure(go.Pie(labels=list(balance), values=[v["rows"] for v in balance.values()], hole=0.5))
    fig.update_layout(title="Class balance in the master dataset")
    return _html(fig, 260)


def threshold_curve(threshold: dict) -> str:
    """Precision, recall and F1 (and the expected cost, on its own axis) against the decision
    threshold, on the rows the threshold was chosen on; the chosen value drawn as a line."""
    curve, value = threshold["curve"], threshold["value"]
    fig = go.Figure()
    for metric in ("precision", "recall", "f1"):
        if curve.get(metric):
            name = "F1" if metric == "f1" else metric
            fig.add_trace(go.Scatter(x=curve["threshold"], y=curve[metric], name=name, mode="lines", line=dict(color=COLORS[metric]),
                                     hovertemplate="threshold %{x:.3f}: %{y:.3f}<extra>" + name + "</extra>"))
    right = 20
    if curve.get("cost"):
        fig.add_trace(go.Scatter(x=curve["threshold"], y=curve["cost"], name="expected cost (right axis)", yaxis="y2", mode="lines",
                                 line=dict(color="#475569", dash="dot"), hovertemplate="threshold %{x:.3f}: cost %{y:.3f}<extra></extra>"))
        fig.update_layout(yaxis2=dict(title="expected cost (cost units)", overlaying="y", side="right", rangemode="tozero", showgrid=False,
                                      tickmode="auto"))
        right = 60
    fig.add_vline(x=value, line=dict(color="#dc2626", dash="dash", width=2), annotation_text=f"chosen {value:.3g}",
                  annotation_position="top right", annotation_font_color="#dc2626")
    rows = f"{threshold['rows']:,} " if threshold.get("rows") else ""
    fig.update_layout(title=f"Metrics by decision threshold<br><sup>out-of-fold, on {rows}training rows</sup>",
                      xaxis=dict(title="threshold (probability of positive)", range=[0, 1]),
                      yaxis=dict(title="score (0 to 1)", range=[0, 1.05]))
    return _html(fig, 340, right=right)


def reliability(calibration: dict) -> str:
    """Predicted probability against the observed share of positives, before and after the
    calibration, with the diagonal a perfectly calibrated model would follow."""
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], name="perfectly calibrated", mode="lines", line=dict(color="#aaa", dash="dash"),
                               hoverinfo="skip"))
    curves = calibration.get("reliability") or {}
    for key, color in (("before", "#94a3b8"), ("after", "#2563eb")):
        curve, brier = curves.get(key) or {}, calibration.get(f"brier_{key}")
        if not curve.get("predicted"):
            continue
        name = ("before" if key == "before" else f"after ({calibration.get('method', '?')})") + (f", Brier {brier:.3f}" if brier is not None else "")
        rows = curve.get("rows")
        fig.add_trace(go.Scatter(x=curve["predicted"], y=curve["observed"], name=name, mode="lines+markers", line=dict(color=color),
                                 customdata=rows, hovertemplate="predicted %{x:.2f}, observed %{y:.2f}"
                                 + (" (%{customdata} rows)" if rows else "") + "<extra>" + key + "</extra>"))
    fig.update_layout(title="Reliability on held-out rows",
                      xaxis=dict(title="mean predicted probability (0 to 1)", range=[-0.02, 1.02]),
                      yaxis=dict(title="observed positive rate (0 to 1)", range=[-0.02, 1.02]))
    return _html(fig, 340)


def change(name: str, feature: dict) -> str:
    """One feature's distribution in the reference rows and in the new rows, bin by bin (the
    bins drift.feature_drift measured the PSI on); bins empty on both sides are left out."""
    labels = bin_labels(feature)
    reference, current = feature["reference_share"], feature["current_share"]
    shown = [i for i in range(min(len(labels), len(reference), len(current))) if reference[i] or current[i]]
    fig = go.Figure()
    for shares, label, rows, color in ((reference, "reference", feature.get("reference_rows"), "#94a3b8"),
                                       (current, "new", feature.get("current_rows"), "#dc2626")):
        fig.add_trace(go.Bar(x=[labels[i] for i in shown], y=[shares[i] for i in shown], marker_color=color,
                             name=f"{label} ({rows:,} rows)" if rows else label, hovertemplate="%{x}: %{y:.1%}<extra>" + label + "</extra>"))
    psi = feature.get("psi")
    # The legend above the bars: a number's bin names are slanted and take the room below.
    fig.update_layout(barmode="group", title=f"{name}: PSI {psi:.2f}" if psi is not None else name,
                      legend=dict(orientation="h", x=1, xanchor="right", y=1.02, yanchor="bottom"),
                      xaxis=dict(title=name + (" (reference deciles)" if feature.get("kind") == "numeric" else ""), type="category"),
                      yaxis=dict(title="share of rows (%)", tickformat=".0%", rangemode="tozero"))
    return _html(fig, 280)


def bin_labels(feature: dict) -> list[str]:
    """Readable names of drift.feature_drift's bins: a number's bins are the values up to each
    edge, then above the last, then missing; a category's are its values."""
    if feature.get("kind") != "numeric":
        return [str(b) for b in feature.get("bins", [])]
    edges = [f"{float(e):.6g}" for e in feature.get("bins", [])]
    if not edges:
        return ["any value", "missing"]
    inner = [f"{low} to {high}" for low, high in zip(edges, edges[1:])]
    return [f"≤ {edges[0]}", *inner, f"> {edges[-1]}", "missing"]
