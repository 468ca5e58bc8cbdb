"""The deployment gates at their boundaries: a value exactly at a threshold passes, just past it fails."""
from modelhub.models import ValidationPolicy
from modelhub.gates import decide_drift, evaluate_gates, no_skill


def policy(**fields) -> ValidationPolicy:
    return ValidationPolicy(**fields)  # the model's defaults where not given; not saved


def scores(accuracy: float, auc: float | None = 0.85, baseline: float = 0.73) -> dict:
    return {"accuracy": accuracy, "auc": auc, "baseline_accuracy": baseline}


def gate(report: dict, name: str) -> dict:
    return next(g for g in report["gates"] if g["name"] == name)


def run(candidate_accuracy=0.80, live_accuracy=0.80, drift_share=0.0, label_check=None, **policy_fields) -> dict:
    return evaluate_gates(policy(**policy_fields), candidate=scores(candidate_accuracy),
                          live=None if live_accuracy is None else scores(live_accuracy), drift_share=drift_share,
                          label_check=label_check)


def test_accuracy_exactly_at_the_minimum_passes_and_just_below_fails():
    at = run(candidate_accuracy=0.70, live_accuracy=None)
    assert gate(at, "min_accuracy") == {"name": "min_accuracy", "label": "Accuracy", "value": 0.70, "threshold": 0.70,
                                         "comparison": ">=", "passed": True, "note": ""}
    below = run(candidate_accuracy=0.6999, live_accuracy=None)
    assert gate(below, "min_accuracy")["passed"] is False
    assert below["passed"] is False
    assert below["reasons"] == ["Accuracy: 0.6999 is not >= 0.7000"]


def test_an_accuracy_drop_exactly_at_the_maximum_passes_despite_float_noise():
    # 0.75 - 0.70 is 0.05000000000000004 in floating point: still "exactly" the allowed drop.
    at = run(candidate_accuracy=0.70, live_accuracy=0.75)
    drop = gate(at, "max_accuracy_drop")
    assert drop["value"] > 0.05 and drop["passed"] is True
    assert at["passed"] is True

    over = run(candidate_accuracy=0.70, live_accuracy=0.7501)
    assert gate(over, "max_accuracy_drop")["passed"] is False
    assert over["reasons"] == ["Accuracy drop vs live model: 0.0501 is not <= 0.0500 (live 0.7501 on the same rows)"]


def test_a_better_candidate_has_a_negative_drop_and_no_live_model_means_no_drop_gate_to_fail():
    assert gate(run(candidate_accuracy=0.90, live_accuracy=0.80), "max_accuracy_drop")["value"] < 0
    first = gate(run(live_accuracy=None), "max_accuracy_drop")
    assert (first["value"], first["passed"], first["note"]) == (None, True, "no live model to compare with")


def test_a_drift_share_exactly_at_the_maximum_passes():
    # A policy that holds drifted data (max_drift below 1; bench/README.md proposes 1, drift reported only, as the default).
    assert gate(run(drift_share=3 / 20, max_drift=0.15), "max_drift")["passed"] is True
    over = run(drift_share=3 / 19, max_drift=0.15)
    assert gate(over, "max_drift")["passed"] is False
    assert over["reasons"] == ["Share of drifted features: 0.1579 is not <= 0.1500"]
    assert gate(run(drift_share=None, max_drift=0.15), "max_drift")["passed"] is True


def test_the_optional_gates_appear_only_when_the_policy_asks_for_them():
    names = [g["name"] for g in run()["gates"]]
    assert names == ["min_primary", "max_primary_drop", "beats_baseline", "min_accuracy", "max_accuracy_drop", "max_drift"]
    names = [g["name"] for g in run(min_auc=0.8, require_beats_baseline=False, min_primary=None)["gates"]]
    assert names == ["max_primary_drop", "min_accuracy", "max_accuracy_drop", "max_drift", "min_auc"]


def test_min_auc_at_the_threshold_passes_below_or_missing_fails():
    def auc_gate(auc):
        report = evaluate_gates(policy(min_auc=0.8, primary_metric="accuracy", min_primary=None), candidate=scores(0.8, auc=auc),
                                live=None, drift_share=None, label_check=None)
        return gate(report, "min_auc"), report

    assert auc_gate(0.8)[0]["passed"] is True
    low, report = auc_gate(0.7999)
    assert low["passed"] is False and report["reasons"] == ["ROC AUC: 0.7999 is not >= 0.8000"]
    missing, report = auc_gate(None)  # a holdout with one class has no AUC: not a pass
    assert missing["passed"] is False and report["reasons"] == ["ROC AUC: n/a is not >= 0.8000"]


def test_the_candidate_must_strictly_beat_a_model_with_no_skill_in_the_primary_metric():
    def baseline_gate(accuracy, baseline):
        report = evaluate_gates(policy(primary_metric="accuracy", min_primary=None), candidate=scores(accuracy, baseline=baseline),
                                live=None, drift_share=None, label_check=None)
        return gate(report, "beats_baseline"), report

    equal, report = baseline_gate(0.73, 0.73)  # always answering "no" does as well: no skill
    assert equal["passed"] is False
    assert report["reasons"] == ["Accuracy above a model with no skill: 0.7300 is not > 0.7300"]
    assert baseline_gate(0.7301, 0.73)[0]["passed"] is True
    # PR AUC's no-skill value is the positive rate; the ROC AUC's a random ranking's 0.5.
    rare = {**scores(0.95), "pr_auc": 0.05, "class_balance": {"positive_rate": 0.05}}
    held = evaluate_gates(policy(primary_metric="pr_auc", min_primary=None), candidate=rare, live=None, drift_share=None, label_check=None)
    assert gate(held, "beats_baseline")["passed"] is False and gate(held, "min_accuracy")["passed"] is True
    assert (no_skill("auc", 0.05), no_skill("pr_auc", 0.05), no_skill("accuracy", 0.05)) == (0.5, 0.05, 0.95)
    assert abs(no_skill("f1", 0.25) - 0.4) < 1e-12  # always "yes": precision 0.25, recall 1


def test_a_primary_drop_fails_only_when_it_is_larger_than_allowed_and_its_interval_says_it_is_real():
    def drop_gate(delta, low, high):
        live, cand = scores(0.8, auc=0.85), scores(0.8, auc=0.85 + delta)
        report = evaluate_gates(policy(), candidate=cand, live=live, drift_share=0.0, label_check=None,
                                comparison={"auc": {"delta": delta, "low": low, "high": high}})
        return gate(report, "max_primary_drop"), report

    real, report = drop_gate(-0.05, -0.08, -0.02)
    assert real["passed"] is False and report["passed"] is False
    assert report["reasons"] == ["ROC AUC drop vs live model: 0.0500 is not <= 0.0200 "
                                 "(live 0.8500 on the same rows; change -0.0500, 95% interval -0.0800 to -0.0200)"]
    assert drop_gate(-0.05, -0.09, +0.01)[0]["passed"] is True  # the interval includes no change: noise
    assert drop_gate(-0.015, -0.02, -0.01)[0]["passed"] is True  # real, but within the allowed drop
    assert drop_gate(+0.03, +0.01, +0.05)[0]["value"] < 0


def test_drift_past_the_maximum_deploys_only_when_the_candidate_explains_it():
    def decide(new, older, share=0.3):
        return decide_drift(policy(), share=share, drifted=["tenure", "contract"], evidence={"new_rows": new, "older_rows": older})

    gain = {"metric": "auc", "delta": 0.04, "low": 0.01, "high": 0.07, "rows": 400}
    steady = {"metric": "auc", "delta": -0.002, "low": -0.01, "high": 0.006, "rows": 1200}
    adapted = decide(gain, steady)
    assert adapted["case"] == "adapted" and "learned it" in adapted["message"]
    assert decide(gain, steady, share=0.15)["case"] == "within"  # exactly at the maximum
    # No gain to prove (a shift in the mix), or a loss within the noise: not shown to be worse, learned.
    assert decide({**gain, "delta": 0.001, "low": -0.015, "high": 0.024}, steady)["case"] == "adapted"
    assert decide({**gain, "delta": -0.011, "low": -0.062, "high": 0.033}, steady)["case"] == "adapted"
    lost = decide({**gain, "delta": -0.04, "low": -0.07, "high": -0.001}, steady)
    assert lost["case"] == "unexplained" and "does worse than the live model on the new rows (ROC AUC -0.0400" in lost["message"]
    worse = decide(gain, {**steady, "delta": -0.05, "low": -0.07, "high": -0.03})
    assert worse["case"] == "unexplained" and "worse on the older rows" in worse["message"]
    assert decide(None, steady)["case"] == "unexplained"
    assert decide_drift(policy(), share=None, drifted=[], evidence=None)["case"] == "not checked"

    report = evaluate_gates(policy(), candidate=scores(0.8), live=scores(0.8), drift_share=0.3, label_check=None,
                            drift_decision=lost)
    assert gate(report, "max_drift")["passed"] is False
    assert report["reasons"][0].startswith("unexplained drift, a person should look at the change: the data changed (2 features")
    report = evaluate_gates(policy(), candidate=scores(0.8), live=scores(0.8), drift_share=0.3, label_check=None, drift_decision=adapted)
    assert gate(report, "max_drift")["passed"] is True and gate(report, "max_drift")["note"].startswith("adapted: ")


def test_a_collapse_on_the_new_batches_fails_the_label_gate_and_asks_for_a_person():
    def check(drop):
        return {"rows": 500, "new_accuracy": 0.80 - drop, "holdout_accuracy": 0.80, "drop": drop}

    assert gate(run(label_check=check(0.20)), "labels")["passed"] is True
    collapsed = run(label_check=check(0.55))
    assert gate(collapsed, "labels")["passed"] is False
    assert collapsed["passed"] is False
    (reason,) = collapsed["reasons"]
    assert reason.startswith("suspected label problems: the live model's accuracy on the new batches fell by 0.550 (allowed 0.200)")
    assert "a person should check these labels" in reason and "live accuracy 0.2500 on 500 new rows vs 0.8000 on its holdout" in reason
    assert "labels" not in [g["name"] for g in run(label_check=None)["gates"]]


def test_every_failed_gate_is_a_reason_and_the_policy_thresholds_are_used():
    report = run(candidate_accuracy=0.60, live_accuracy=0.80, drift_share=0.5, min_accuracy=0.5, max_accuracy_drop=0.1, max_drift=0.6)
    assert gate(report, "min_accuracy")["threshold"] == 0.5
    assert [g["passed"] for g in report["gates"]] == [True, True, True, True, False, True]
    assert len(report["reasons"]) == 1 and report["reasons"][0].startswith("Accuracy drop vs live model: 0.2000 is not <= 0.1000")


def test_a_broken_column_in_the_drift_report_fails_its_own_gate_whatever_the_drift_share():
    why = "every one of the 388 new values is 54.75, while the reference has 1,406 distinct values (chance of that 0.0e+00)"

    def with_drift(broken):
        return evaluate_gates(policy(), candidate=scores(0.80), live=scores(0.80), drift_share=1 / 19, label_check=None,
                              drift={"share": 1 / 19, "broken": broken})

    report = with_drift({"monthly_charges": why})
    assert gate(report, "max_drift")["passed"] is True  # one feature of 19: a small share
    broken = gate(report, "broken_columns")
    assert (broken["value"], broken["threshold"], broken["passed"]) == (1.0, 0.0, False)
    assert report["passed"] is False
    assert report["reasons"] == [f"broken columns in the new batches, a person should check the export: monthly_charges: {why}"]

    clean = with_drift({})
    assert gate(clean, "broken_columns")["passed"] is True and clean["passed"] is True
    # Without a drift report (no new batches, or a caller that has none) there is no such gate.
    assert "broken_columns" not in [g["name"] for g in run()["gates"]]
