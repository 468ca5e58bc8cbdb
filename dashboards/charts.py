"""Plotly figures built on the server; the page draws them with plotly.min.js from our static files.

Each figure goes into the page as a JSON data block beside an empty <div>, and static/js/charts.js
draws every one: no inline script runs, so the Content-Security-Policy allows our own scripts only.
"""
import plotly.graph_objects as go
from django.utils.html import json_script

COLORS = {"accuracy": "#2563eb", "auc": "#16a34a", "f1": "#9333ea", "precision": "#ea580c", "recall": "#0891b2"}
STATUS_SYMBOL = {"active": "star", "retired": "circle", "rejected": "x", "candidate": "diamond"}


def _html(fig: go.Figure, height: int = 320) -> str:
    fig.update_layout(height=height, margin=dict(l=50, r=20, t=40, b=40), template="plotly_white",
                      legend=dict(orientation="h", y=-0.2), font=dict(family="system-ui, sans-serif", size=12))
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


def confusion(matrix, labels) -> str:
    (tn, fp), (fn, tp) = matrix
    fig = go.Figure(go.Heatmap(
        z=[[tn, fp], [fn, tp]], x=[f"predicted {labels[0]}", f"predicted {labels[1]}"], y=[f"actual {labels[0]}", f"actual {labels[1]}"],
        text=[[tn, fp], [fn, tp]], texttemplate="%{text}", colorscale="Blues", showscale=False,
    ))
    fig.update_layout(title="Confusion matrix (holdout)", yaxis=dict(autorange="reversed"))
    return _html(fig, 300)


def curves(metrics: dict, live: dict | None = None) -> str:
    fig = go.Figure()
    roc = metrics.get("roc_curve")
    if roc:
        fig.add_trace(go.Scatter(x=roc["fpr"], y=roc["tpr"], name=f"ROC (AUC {metrics['auc']:.3f})", mode="lines"))
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
    fig.update_layout(title="Permutation importance (drop in holdout AUC)")
    return _html(fig, max(260, 22 * len(items) + 80))


def drift(features: dict) -> str:
    items = sorted(features.items(), key=lambda item: item[1]["psi"])
    fig = go.Figure(go.Bar(
        x=[r["psi"] for _, r in items], y=[name for name, _ in items], orientation="h",
        marker_color=["#dc2626" if r["drifted"] else "#94a3b8" for _, r in items],
    ))
    fig.update_layout(title="PSI per feature vs the live model's training data<br><sup>red: drifted</sup>")
    return _html(fig, max(260, 20 * len(items) + 80))


def class_balance(balance: dict) -> str:
    fig = go.Figure(go.Pie(labels=list(balance), values=[v["rows"] for v in balance.values()], hole=0.5))
    fig.update_layout(title="Class balance in the master dataset")
    return _html(fig, 260)
