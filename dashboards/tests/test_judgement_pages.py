"""How a version was judged, on its pages: the decision threshold, the calibration, the primary
metric, and the run's drift decision with pictures of the change (issue 19).

Versions are the session's v1.0 copied with the metadata a judged version keeps; their drift is
measured by modelhub.drift on real demo rows, so the pictures show what drift.py stores."""
import json
import re

import numpy as np
import pandas as pd
import pytest
from django.urls import reverse
from django.utils import timezone

from dashboards import charts
from ingestion.models import DataBatch
from modelhub import drift
from modelhub.models import ModelVersion, TrainingRun

from .test_compare import compare_url
from .test_pages import login

CURVE = [round(t, 2) for t in np.linspace(0.05, 0.95, 19)]
THRESHOLD = {
    "value": 0.31, "rule": "expected_cost", "rows": 5600, "costs": {"false_positive": 1.0, "false_negative": 5.0},
    "reason": "lowest expected cost on out-of-fold predictions",
    "curve": {"threshold": CURVE, "precision": [0.3 + 0.6 * t for t in CURVE], "recall": [1 - t for t in CURVE],
              "f1": [0.5 - (t - 0.4) ** 2 for t in CURVE], "cost": [0.2 + (t - 0.31) ** 2 for t in CURVE]},
}
RELIABILITY = {"predicted": [0.05, 0.3, 0.6, 0.9], "observed": [0.02, 0.22, 0.55, 0.93], "rows": [900, 400, 200, 100]}
CALIBRATION = {
    "method": "isotonic", "applied": True, "brier_before": 0.141, "brier_after": 0.136, "fitted_on": 5600,
    "reason": "isotonic lowered the Brier score most", "candidates": {"sigmoid": 0.137, "isotonic": 0.136},
    "reliability": {"before": {**RELIABILITY, "observed": [0.01, 0.15, 0.5, 0.97]}, "after": RELIABILITY},
}
EVIDENCE = {"new_rows": {"metric": "auc", "delta": 0.0123, "low": -0.0041, "high": 0.0287, "rows": 400},
            "older_rows": {"metric": "auc", "delta": -0.0021, "low": -0.0102, "high": 0.0061, "rows": 1200}}


def _judged(version: ModelVersion, *, minor: int, validation: dict | None = None, drift_report: dict | None = None,
            status=ModelVersion.Status.RETIRED, **metrics) -> ModelVersion:
    """A sibling of `version` with a judged version's metadata (as test_compare._copy_of)."""
    copy = ModelVersion.objects.get(pk=version.pk)
    copy.pk, copy.minor, copy.status, copy.deployed_at = None, minor, status, None
    copy.metrics = {**version.metrics, **metrics}
    copy.validation = {**(version.validation or {}), **(validation or {})}
    copy.drift = drift_report if drift_report is not None else version.drift
    copy.save()
    return copy


def _typed(schema, rows: pd.DataFrame) -> pd.DataFrame:
    """Demo rows (read as text) as the features training sees: numbers as floats."""
    frame = rows[schema.feature_names].copy()
    for name in schema.numeric_features:
        frame[name] = pd.to_numeric(frame[name], errors="coerce")
    return frame.reset_index(drop=True)


def _before_judgement(version: ModelVersion, *, minor: int) -> ModelVersion:
    """A sibling of `version` as trained before issue 19: none of the metadata these pages read."""
    copy = _judged(version, minor=minor)
    copy.metrics = {k: v for k, v in copy.metrics.items() if k not in ("primary_metric", "balanced_accuracy", "threshold", "calibration")}
    copy.validation = {k: v for k, v in copy.validation.items() if k not in ("primary_metric", "drift_decision")}
    copy.save(update_fields=["metrics", "validation"])
    return copy


def _real_drift(schema, demo) -> dict:
    """modelhub.drift on demo rows: 1,000 reference rows against 600 later ones whose tenure was
    cut to a third and half of whose contracts became month-to-month."""
    reference, current = _typed(schema, demo.frame.iloc[:1000]), _typed(schema, demo.frame.iloc[2000:2600])
    current["tenure"] = (current["tenure"] / 3).round()
    current.loc[::2, "contract"] = "Month-to-month"
    labels = demo.frame["churn"].eq(schema.positive_label).astype(int).to_numpy()
    return drift.dataset_drift(reference, current, schema, psi_threshold=0.2, p_threshold=0.05,
                               reference_labels=labels[:1000], current_labels=labels[2000:2600])


def _decision(case: str, report: dict, message: str) -> dict:
    return {"case": case, "share": report["share"], "threshold": 0.15, "drifted": report["drifted"],
            "message": message, "evidence": EVIDENCE}


def _figures(content: bytes) -> list[dict]:
    """Every plotly figure of a page (the JSON blocks static/js/charts.js draws)."""
    blocks = re.findall(r'<div class="chart plotly-graph-div"></div><script type="application/json">(.*?)</script>', content.decode(), re.S)
    return [json.loads(block) for block in blocks]


def _figure(content: bytes, title: str) -> dict:
    found = [f for f in _figures(content) if f["layout"]["title"]["text"].startswith(title)]
    assert len(found) == 1, [f["layout"]["title"]["text"] for f in _figures(content)]
    return found[0]


def _metric_order(content: bytes) -> list[str]:
    table = content.decode().split("<h2>Metrics on held-out rows</h2>")[1].split("</table>")[0]
    return re.findall(r'<tr data-metric="([a-z_]+)">', table)


@pytest.fixture
def unexplained(ready, demo):
    """A rejected candidate whose run saw the data change and could not explain it; its batch held."""
    report = _real_drift(ready.schema, demo)
    candidate = _judged(ready, minor=5, status=ModelVersion.Status.REJECTED, drift_report=report,
                        validation={"drift_decision": _decision("unexplained", report, "the data changed (2 features drifted) and "
                                                                "the candidate is not better than the live model on the new rows")})
    run = TrainingRun.objects.create(status=TrainingRun.Status.REJECTED, trigger=TrainingRun.Trigger.MANUAL, live_version=ready,
                                     candidate=candidate, reasons=["unexplained drift, a person should look at the change"])
    batch = DataBatch.objects.create(original_name="april.csv", sha256="a" * 64, size_bytes=1000, rows=600,
                                     status=DataBatch.Status.HELD, schema=ready.schema)
    run.new_batches.add(batch)
    return {"report": report, "candidate": candidate, "run": run, "batch": batch}


def test_the_model_page_shows_the_threshold_its_rule_costs_and_the_curve(client, ready, users):
    _judged(ready, minor=3, threshold=THRESHOLD)
    login(client, users["viewer"])
    content = client.get(reverse("model_detail", args=["1.3"])).content
    card = content.decode().split('id="threshold"')[1].split('id="calibration"')[0]
    assert "0.310" in card and "Lowest expected cost" in card and "5,600 out-of-fold" in card
    assert "a false positive 1.0, a false negative 5.0" in card
    figure = _figure(content, "Metrics by decision threshold")
    traces = {trace["name"]: trace for trace in figure["data"]}
    assert set(traces) == {"precision", "recall", "F1", "expected cost (right axis)"}
    assert traces["expected cost (right axis)"]["yaxis"] == "y2" and traces["F1"]["y"] == THRESHOLD["curve"]["f1"]
    layout = figure["layout"]
    assert layout["xaxis"]["title"]["text"].startswith("threshold") and layout["yaxis2"]["title"]["text"] == "expected cost (cost units)"
    (line,) = layout["shapes"]
    assert line["x0"] == line["x1"] == 0.31 and line["yref"].endswith("domain")
    # The confusion matrix and the ROC curve were taken at that threshold, and say so.
    assert "threshold 0.31" in _figure(content, "Confusion matrix")["layout"]["title"]["text"]
    assert "decision threshold 0.31" in [trace["name"] for trace in _figure(content, "ROC curve")["data"]]


def test_a_threshold_without_costs_draws_no_cost_axis(client, ready, users):
    chosen = {**THRESHOLD, "rule": "max_f1", "costs": None, "curve": {k: v for k, v in THRESHOLD["curve"].items() if k != "cost"}}
    _judged(ready, minor=3, threshold=chosen)
    login(client, users["viewer"])
    content = client.get(reverse("model_detail", args=["1.3"])).content
    figure = _figure(content, "Metrics by decision threshold")
    assert "yaxis2" not in figure["layout"] and len(figure["data"]) == 3
    assert b"Maximise F1" in content and b"a false positive" not in content


def test_the_model_page_shows_the_calibration_and_its_reliability_chart(client, ready, users):
    _judged(ready, minor=3, calibration=CALIBRATION)
    login(client, users["viewer"])
    content = client.get(reverse("model_detail", args=["1.3"])).content
    card = content.decode().split('id="calibration"')[1].split("</div>\n</div>")[0]
    assert "Isotonic</strong>, applied; fitted on 5,600 rows" in card and "0.1410 → 0.1360" in card
    assert "Tried: isotonic 0.1360, sigmoid 0.1370." in card  # best first
    figure = _figure(content, "Reliability on held-out rows")
    diagonal, before, after = figure["data"]
    assert diagonal["x"] == diagonal["y"] == [0, 1]
    assert before["y"] == CALIBRATION["reliability"]["before"]["observed"] and before["name"] == "before, Brier 0.141"
    assert after["x"] == RELIABILITY["predicted"] and after["name"] == "after (isotonic), Brier 0.136"
    assert figure["layout"]["xaxis"]["range"] == figure["layout"]["yaxis"]["range"] == [-0.02, 1.02]  # a point at 0 or 1 shows whole


def test_the_primary_metric_is_named_and_shown_first(client, ready, users):
    _judged(ready, minor=3, primary_metric="balanced_accuracy", balanced_accuracy=0.7345)
    login(client, users["viewer"])
    content = client.get(reverse("model_detail", args=["1.3"])).content
    order = _metric_order(content)
    assert order[0] == "balanced_accuracy" and "balanced_accuracy" not in order[1:] and "accuracy" in order
    assert b"Primary metric: <strong>Balanced accuracy</strong>" in content and b"0.7345" in content
    _before_judgement(ready, minor=2)
    assert _metric_order(client.get(reverse("model_detail", args=["1.2"])).content)[0] == "accuracy"  # none named: as before


def test_a_version_trained_before_these_were_kept_shows_the_defaults(client, ready, users):
    _before_judgement(ready, minor=2)
    login(client, users["viewer"])
    page = client.get(reverse("model_detail", args=["1.2"]))
    content = page.content.decode()
    assert page.status_code == 200
    assert "The default: this version was trained before a threshold" in content and '<div class="kpi">0.50</div>' in content
    assert "Not calibrated" in content and "Drift decision" not in content and "Primary metric" not in content
    titles = [f["layout"]["title"]["text"] for f in _figures(page.content)]
    assert not any(t.startswith(("Metrics by decision threshold", "Reliability")) for t in titles)


def test_the_run_page_says_the_drift_was_unexplained_with_the_evidence(client, ready, users, unexplained):
    report, run = unexplained["report"], unexplained["run"]
    login(client, users["viewer"])
    content = client.get(reverse("run_detail", args=[run.pk])).content.decode()
    assert 'data-case="unexplained"' in content
    assert "The data changed and the candidate does not explain it: the batches wait for a person." in content
    assert "The data changed (2 features drifted) and the candidate is not better than the live model on the new rows." in content
    new_rows = content.split('data-evidence="the held-out part of the new rows"')[1].split("</tr>")[0]
    assert "0.0123" in new_rows and "[-0.0041, 0.0287]" in new_rows and "400" in new_rows
    assert "[-0.0102, 0.0061]" in content.split('data-evidence="the older held-out rows"')[1].split("</tr>")[0]
    target = report["target"]
    assert f"Positive rate {target['reference_positive_rate']:.3f} → {target['current_positive_rate']:.3f}" in content
    for name in report["drifted"]:
        row = content.split(f"<code>{name}</code>")[1].split("</tr>")[0]
        assert f"{report['features'][name]['psi']:.4f}" in row
    assert "<th>Note</th>" not in content.split("<h3>Drifted features</h3>")[1]  # nothing broken or out of range


def test_the_pictures_of_an_unexplained_change_are_the_stored_shares_of_the_most_drifted_features(client, ready, users, unexplained):
    report = unexplained["report"]
    assert {"tenure", "contract"} <= set(report["drifted"])
    login(client, users["viewer"])
    content = client.get(reverse("run_detail", args=[unexplained["run"].pk])).content
    assert b"plotly.min.js" in content
    pictures = [f for f in _figures(content) if f["layout"]["barmode"] == "group"]
    expected = sorted(report["drifted"], key=lambda n: -report["features"][n]["psi"])[:6]
    assert [p["layout"]["title"]["text"].split(":")[0] for p in pictures] == expected
    tenure = next(p for p in pictures if p["layout"]["title"]["text"].startswith("tenure:"))
    reference, new = tenure["data"]
    stored = report["features"]["tenure"]
    assert new["y"] == [s for s, r in zip(stored["current_share"], stored["reference_share"]) if s or r]
    assert sum(reference["y"]) == pytest.approx(1, abs=1e-3) and new["x"][0].startswith("≤ ")
    assert tenure["layout"]["yaxis"]["tickformat"] == ".0%" and tenure["layout"]["xaxis"]["title"]["text"] == "tenure (reference deciles)"
    # The candidate's own page shows the same decision and pictures.
    page = client.get(reverse("model_detail", args=[unexplained["candidate"].version])).content
    assert b'data-case="unexplained"' in page and len([f for f in _figures(page) if f["layout"].get("barmode") == "group"]) == len(expected)


def test_an_adapted_drift_says_the_candidate_explains_it_and_draws_no_pictures(client, ready, users, demo):
    report = _real_drift(ready.schema, demo)
    evidence = {**EVIDENCE, "new_rows": {**EVIDENCE["new_rows"], "low": 0.004}}
    version = _judged(ready, minor=6, drift_report=report, validation={"drift_decision": {
        **_decision("adapted", report, "the data changed and the candidate learned it"), "evidence": evidence}})
    version.deployed_at = timezone.now()
    version.save(update_fields=["deployed_at"])
    login(client, users["viewer"])
    content = client.get(reverse("model_detail", args=["1.6"])).content
    assert b"The data changed and the candidate explains it: deployed." in content and b'data-case="adapted"' in content
    assert b"[0.0040, 0.0287]" in content
    assert not [f for f in _figures(content) if f["layout"].get("barmode") == "group"]


@pytest.mark.parametrize("case, says", [("within", b"The new data stayed within the drift limit."),
                                        ("not checked", b"Drift was not checked.")])
def test_a_quiet_drift_decision_is_one_line(client, ready, users, case, says):
    # A decision kept without a drift report (no new batches): names no feature, draws nothing.
    _judged(ready, minor=4, validation={"drift_decision": {"case": case, "share": None, "drifted": ["tenure"], "message": "no new batches"}},
            drift_report={})
    login(client, users["viewer"])
    content = client.get(reverse("model_detail", args=["1.4"])).content
    assert says in content and b"No new batches." in content and b"<h3>Drifted features</h3>" in content
    assert b"Share of drifted features <strong>" not in content and b"Pictures of the change" not in content


def test_a_feature_out_of_its_training_range_shows_both_ranges(client, ready, users, demo):
    schema = ready.schema
    reference, current = _typed(schema, demo.frame.iloc[:1000]), _typed(schema, demo.frame.iloc[2000:2300])
    current["monthly_charges"] *= 100  # sent in cents
    report = drift.dataset_drift(reference, current, schema, psi_threshold=0.2, p_threshold=0.05,
                                 reference_labels=np.zeros(1000, int), current_labels=np.zeros(300, int))
    profile = {"monthly_charges": {"min": reference["monthly_charges"].min(), "max": reference["monthly_charges"].max()}}
    report["out_of_range"] = drift.out_of_range(profile, current, schema)
    moved = report["out_of_range"]["monthly_charges"]
    _judged(ready, minor=4, drift_report=report, validation={"drift_decision": _decision("unexplained", report, "the data changed")})
    login(client, users["viewer"])
    content = client.get(reverse("model_detail", args=["1.4"])).content.decode()
    row = content.split("<code>monthly_charges</code>")[1].split("</tr>")[0]
    assert f"Out of range: {moved['before'][0]:g} to {moved['before'][1]:g} in training, {moved['after'][0]:g} to {moved['after'][1]:g} now" in row
    assert "<th>Note</th>" in content and '<td class="num">0.0000</td>' in row  # a p-value of 1e-302, rounded


def test_a_batch_held_by_an_unexplained_drift_says_so_and_links_its_run(client, ready, users, unexplained):
    login(client, users["viewer"])
    run = unexplained["run"]
    content = client.get(reverse("batch_detail", args=[unexplained["batch"].pk])).content.decode()
    assert "does not explain it: this batch waits for a person" in content
    assert f'href="{reverse("run_detail", args=[run.pk])}#drift-decision"' in content
    # Held for another reason (no drift decision): the page says nothing about drift.
    candidate = unexplained["candidate"]
    candidate.validation = {}
    candidate.save(update_fields=["validation"])
    assert "does not explain it" not in client.get(reverse("batch_detail", args=[unexplained["batch"].pk])).content.decode()


def test_compare_shows_each_versions_threshold_primary_metric_and_calibration(client, ready, users):
    _before_judgement(ready, minor=2)
    _judged(ready, minor=7, threshold=THRESHOLD, calibration=CALIBRATION, primary_metric="pr_auc", pr_auc=0.6123)
    login(client, users["viewer"])
    content = client.get(compare_url("1.2", "1.7")).content.decode()
    row = content.split('<tr data-row="threshold">')[1].split("</tr>")[0]
    _, default, chosen = row.split("</td><td>")
    assert "0.500" in default and "the default" in default
    assert "0.310" in chosen and "Lowest expected cost: a false positive costs 1.0, a false negative 5.0" in chosen
    assert "<td>Primary metric</td><td>–</td><td>PR AUC (average precision)</td>" in content
    rows = re.findall(r'<tr data-metric="([a-z_]+)">', content)
    assert rows[0] == "pr_auc" and "primary of B" in content.split('<tr data-metric="pr_auc">')[1].split("</tr>")[0]
    calibration = dict(re.findall(r'<tr data-calibration="([a-z_]+)"><td>[^<]+</td><td[^>]*>[^<]*</td><td[^>]*>([^<]*)</td>', content))
    assert calibration == {"method": "isotonic", "applied": "yes", "brier_before": "0.1410", "brier_after": "0.1360",
                           "fitted_on": "5600", "reason": CALIBRATION["reason"]}  # nested candidates and curves left out
    _before_judgement(ready, minor=3)  # two versions from before: the page as it was
    content = client.get(compare_url("1.2", "1.3")).content.decode()
    assert "<h2>Calibration</h2>" not in content and "primary of" not in content and content.count("the default (trained before") == 2


def test_bins_are_named_from_what_drift_keeps():
    numeric = {"kind": "numeric", "bins": ["2.0", "70.35000000000001"], "reference_share": [0.2, 0.8, 0, 0], "current_share": [0.9, 0.1, 0, 0]}
    assert charts.bin_labels(numeric) == ["≤ 2", "2 to 70.35", "> 70.35", "missing"]
    assert charts.bin_labels({"kind": "numeric", "bins": []}) == ["any value", "missing"]
    assert charts.bin_labels({"kind": "categorical", "bins": ["DSL", "(missing)"]}) == ["DSL", "(missing)"]
    figure = json.loads(re.search(r'<script type="application/json">(.*)</script>', charts.change("charges", {**numeric, "psi": 1.234})).group(1))
    assert figure["data"][0]["x"] == ["≤ 2", "2 to 70.35"] and figure["layout"]["title"]["text"] == "charges: PSI 1.23"


def test_the_psi_chart_draws_its_threshold_when_psi_decided_and_not_when_p_values_did():
    from dashboards import charts

    features = {"tenure": {"psi": 0.31, "drifted": True}, "contract": {"psi": 0.05, "drifted": False}}
    assert "drifted above 0.2" in charts.drift(features, 0.2)
    assert "drifted above" not in charts.drift(features, None)
