"""The out-of-range gate: a number whose new values mostly fall outside the live model's training
range (a unit change) holds the batch, whatever the drift share; a new record high does not."""
import pandas as pd
import pytest

from ingestion.models import DataBatch
from ingestion.services import ingest_path
from modelhub import drift, training
from modelhub.gates import evaluate_gates
from modelhub.models import ModelVersion, TrainingRun, ValidationPolicy
from modelhub.retraining import retrain_now

from .helpers import HUB_ROWS
from .test_gates import gate, policy, scores

NEW_ROWS = slice(1200, 1800)


def charges_scaled(demo, factor: float) -> pd.DataFrame:
    rows = demo.frame.iloc[NEW_ROWS].copy()
    values = pd.to_numeric(rows["monthly_charges"].replace("", None))
    rows["monthly_charges"] = (values * factor).map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    return rows


@pytest.mark.slow
def test_monthly_charges_sent_in_cents_hold_the_batch_with_both_ranges(hub, demo):
    # The imported logistic regression extrapolates cents into nonsense and the label gate fails too;
    # a tree model would not notice. With that gate set aside, this gate alone must hold the batch.
    ValidationPolicy.objects.filter(pk=ValidationPolicy.get().pk).update(max_label_collapse=1.0)
    before = hub.profile["monthly_charges"]
    cents = charges_scaled(demo, 100)
    batch = ingest_path(demo.write("cents.csv", frame=cents))

    run = retrain_now()

    assert run.status == TrainingRun.Status.REJECTED, run.reasons
    batch.refresh_from_db()
    assert batch.status == DataBatch.Status.HELD
    assert ModelVersion.active().pk == hub.pk
    moved = run.candidate.validation["gates"]
    failed = [g["name"] for g in moved if not g["passed"]]
    assert failed == ["out_of_range"]  # the drift share alone let it through
    (reason,) = run.reasons
    assert reason.startswith("features moved out of their training range, a person should check the units or the export: "
                             "monthly_charges: 100% of ")
    assert f"before {before['min']:g}..{before['max']:g}, after " in reason
    sent = pd.to_numeric(cents["monthly_charges"].replace("", None))
    assert f"after {sent.min():g}..{sent.max():g}" in reason and sent.min() > 10 * before["max"]
    assert list(run.candidate.drift["out_of_range"]) == ["monthly_charges"]


@pytest.mark.slow
def test_a_normal_batch_passes_the_gate_and_deploys(hub, demo):
    ingest_path(demo.write("normal.csv", NEW_ROWS))

    run = retrain_now()

    assert run.status == TrainingRun.Status.DEPLOYED, run.reasons
    checked = gate(run.candidate.validation, "out_of_range")
    assert (checked["value"], checked["passed"], checked["note"]) == (0.0, True, "")


def test_a_new_maximum_within_the_margin_passes_and_one_past_it_on_most_rows_fails(demo):
    frame = demo.frame.iloc[HUB_ROWS].replace({"": None})
    schema = type("Schema", (), {"numeric_features": ["monthly_charges"],
                                 "features": [{"name": "monthly_charges", "kind": "numeric"}]})()
    X = pd.DataFrame({"monthly_charges": pd.to_numeric(frame["monthly_charges"])})
    profile = training.profile(X, schema)
    lo, hi = profile["monthly_charges"]["min"], profile["monthly_charges"]["max"]
    width = hi - lo

    # Every new value above the old maximum, but within the margin: a normal new high.
    within = pd.DataFrame({"monthly_charges": [hi + width * (drift.OUT_OF_RANGE_MARGIN - 0.01)] * 50})
    assert drift.out_of_range(profile, within, schema) == {}
    # Past the margin on exactly half the rows: not "mostly"; on one more row: moved.
    past = hi + width * (drift.OUT_OF_RANGE_MARGIN + 0.01)
    half = pd.DataFrame({"monthly_charges": [past] * 25 + [hi] * 25})
    assert drift.out_of_range(profile, half, schema) == {}
    most = pd.DataFrame({"monthly_charges": [past] * 26 + [hi] * 24 + [None] * 30})  # missing values do not count
    assert drift.out_of_range(profile, most, schema) == {
        "monthly_charges": {"share": 26 / 50, "rows": 50, "before": [lo, hi], "after": [hi, past]}}


def test_a_version_without_a_training_profile_is_not_checked_rather_than_failed():
    schema = type("Schema", (), {"numeric_features": ["x"]})()
    assert drift.out_of_range({}, pd.DataFrame({"x": [1e9] * 50}), schema) is None
    report = evaluate_gates(policy(), candidate=scores(0.80), live=scores(0.80), drift_share=0.0, label_check=None,
                            drift={"share": 0.0, "broken": {}, "out_of_range": None})
    unchecked = gate(report, "out_of_range")
    assert (unchecked["value"], unchecked["passed"], unchecked["note"]) == (None, True, "not checked: no training profile")
    assert report["passed"] is True
