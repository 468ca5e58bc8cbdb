"""The replay benchmark's small variant (bench/replay.py --quick): 3,250 demo rows, 7 steps.

Four policies from the same start, each in a CL_HOME of its own through the real `ingest` and
`retrain` commands: covariate shift at step 2, concept change at 3, flipped labels at 4, a
broken column at 5, a unit change (monthly charges x100) at 6. The start is made once and
copied, and the oracle branches off the always policy before the flipped batch
(bench/replay.py).
"""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _replay_module():
    spec = importlib.util.spec_from_file_location("bench_replay", ROOT / "bench" / "replay.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    replay = _replay_module()
    work = tmp_path_factory.mktemp("replay")
    stream = replay.build_stream(replay.DEMO, "churn", "customer_id", plan=replay.QUICK)
    report = replay.replay(stream, work, jobs=2)
    out = work / "results"
    out.mkdir()
    replay.write_html(report, out / "replay.html")
    (out / "replay.json").write_text(json.dumps(report, default=str))
    return replay, stream, report, out


def test_a_unit_change_scales_the_numbers_as_text_and_keeps_empty_cells():
    replay = _replay_module()
    scaled = replay._scaled_text(pd.Series(["29.85", " 7", "", "0.1"]), replay.UNIT_FACTOR)
    assert scaled.tolist() == ["2985", "700", "", "10"]


def test_the_automatic_unit_feature_is_one_whose_values_leave_their_range_when_scaled():
    replay = _replay_module()
    frame = pd.DataFrame({"id": [str(i) for i in range(40)], "y": ["1", "0"] * 20,
                          # The most related to the label, but half zeros: x100 moves only half its values out of its range.
                          "calls": [f"{(i % 2) * (1 + i % 3)}" for i in range(40)],
                          "minutes": [f"{100 + i + 5 * (i % 2)}" for i in range(40)],  # 100-144: x100 all outside
                          "age": [f"{20 + i}" for i in range(40)]})
    y = (frame["y"] == "1").to_numpy(int)
    related = [abs(replay._rank_correlation(replay._numeric(frame, c), y)) for c in ("calls", "minutes")]
    assert related[0] > related[1]
    assert replay.choose_events(frame, y, "y", "id")["unit_feature"] == "minutes"
    assert replay._share_leaving_range(np.array([0.0] * 9 + [3.0])) < 0.9


def outcomes(report, policy):
    return {s["step"]: s["outcome"] for s in report["policies"][policy]["steps"]}


def failed_gates(step: dict) -> set:
    return {name for name, gate in step.get("gates", {}).items() if not gate["passed"]}


@pytest.mark.slow
def test_the_stream_is_deterministic_and_its_events_are_where_the_plan_puts_them(quick):
    replay, stream, _, _ = quick
    again = replay.build_stream(replay.DEMO, "churn", "customer_id", plan=replay.QUICK)
    assert stream.initial.equals(again.initial)
    assert all(a.delivered.equals(b.delivered) and a.truth.equals(b.truth) for a, b in zip(stream.batches, again.batches))
    events = {b.step: b.event for b in stream.batches}
    assert events == {1: "good", 2: "covariate_shift", 3: "concept_change", 4: "flipped_labels", 5: "broken_column", 6: "unit_change",
                      7: "good", 8: "good"}
    ids = [stream.initial["customer_id"]] + [b.truth["customer_id"] for b in stream.batches]
    every = [i for part in ids for i in part]
    assert len(every) == len(set(every)) == 3250  # every row once: scores are on rows no model has seen
    flipped, broken, unit = stream.batches[3], stream.batches[4], stream.batches[5]
    assert (flipped.delivered["churn"] != flipped.truth["churn"]).all()
    assert flipped.delivered.drop(columns="churn").equals(flipped.truth.drop(columns="churn"))
    assert broken.delivered["monthly_charges"].nunique() == 1 and broken.truth["monthly_charges"].nunique() > 100
    charges = [pd.to_numeric(b["monthly_charges"]) for b in (unit.delivered, unit.truth)]
    assert np.allclose(charges[0], charges[1] * 100)
    assert unit.delivered.drop(columns="monthly_charges").equals(unit.truth.drop(columns="monthly_charges"))
    fibre_before = (stream.batches[0].truth["internet_service"] == "Fiber optic").mean()
    fibre_after = (stream.batches[2].truth["internet_service"] == "Fiber optic").mean()
    assert fibre_after > 2 * fibre_before


@pytest.mark.slow
def test_each_policy_replays_through_the_real_commands_and_is_scored_on_the_next_batch(quick):
    replay, _, report, out = quick
    for policy in ("never", "always", "gated", "oracle"):
        steps = report["policies"][policy]["steps"]
        assert [s["step"] for s in steps] == list(range(8))
        assert all(0.5 < s["auc"] <= 1 and 0 <= s["brier"] <= 1 and s["rows"] > 250 for s in steps), policy
    assert {s["version"] for s in report["policies"]["never"]["steps"]} == {"1.0"}
    assert set(outcomes(report, "always").values()) - {"initial"} <= {"deployed", "forced"}
    oracle = outcomes(report, "oracle")
    assert (oracle[4], oracle[5], oracle[6]) == ("not ingested",) * 3
    assert {oracle[s] for s in (1, 2, 3, 7)} == {"deployed"}
    # Same start, same first batch, same gates passed: the same model.
    first = {p: report["policies"][p]["steps"][1]["auc"] for p in ("always", "gated", "oracle")}
    assert len(set(first.values())) == 1, first
    html = (out / "replay.html").read_text()
    assert "Plotly.newPlot" in html and "<script src=" not in html and len(html) > 1_000_000  # plotly.js inlined, no CDN
    assert set(report["targets"]) >= {"gated_holds_bad_batches", "covariate_shift_deploys_as_adapted", "concept_change_deploys_as_adapted",
                                      "within_0.01_of_oracle_from_step_3"}


@pytest.mark.slow
def test_the_open_policies_open_every_gate_with_a_field_so_their_drift_is_always_within(quick):
    replay, _, report, _ = quick
    for policy in ("always", "oracle"):
        assert {k: report["policies"][policy]["policy_values"][k] for k in replay.OPEN_GATES} == replay.OPEN_GATES
        cases = {s["drift_decision"]["case"] for s in report["policies"][policy]["steps"] if s.get("drift_decision")}
        assert cases == {"within"}, policy
    always = report["policies"]["always"]["steps"]
    # Only the gates without a field hold a candidate there: forced, as an engineer would.
    assert [s["step"] for s in always if s["outcome"] == "forced"] == [5, 6]
    assert failed_gates(always[6]) == {"out_of_range"}


@pytest.mark.slow
def test_the_gated_policy_holds_each_bad_batch_by_the_gate_made_for_it(quick):
    _, _, report, _ = quick
    gated = report["policies"]["gated"]["steps"]
    assert gated[4]["outcome"] == "held" and "labels" in failed_gates(gated[4])
    assert gated[5]["outcome"] == "held" and "broken_columns" in failed_gates(gated[5])
    assert gated[6]["outcome"] == "held" and "out_of_range" in failed_gates(gated[6])
    moved = gated[6]["out_of_range"]["monthly_charges"]
    assert moved["share"] > 0.9 and moved["after"][0] > 50 * moved["before"][0]
    assert any("training range" in reason for reason in gated[6]["reasons"])
    assert report["targets"]["gated_holds_bad_batches"]["met"], report["targets"]["gated_holds_bad_batches"]


@pytest.mark.slow
def test_the_gated_policy_runs_on_the_new_defaults_and_each_run_records_its_drift_decision(quick):
    _, _, report, _ = quick
    values = report["policies"]["gated"]["policy_values"]
    # init_cl_system's choice for 26% positives, and the seed's drift maximum.
    chosen = (values["primary_metric"], values["min_primary"], values["max_drift"], values["require_beats_baseline"])
    assert chosen == ("auc", 0.6, 0.15, True)
    gated = report["policies"]["gated"]["steps"]
    assert gated[1]["drift_decision"]["case"] == "within" and gated[1]["outcome"] == "deployed"
    assert gated[2]["drift_decision"]["share"] > 0.5  # the shift moves most columns at once
    for step in gated[1:]:
        decision = step["drift_decision"]
        assert decision["case"] in ("within", "adapted", "unexplained"), step["step"]
        assert step["gates"]["max_drift"]["passed"] == (decision["case"] in ("within", "adapted")), step["step"]
        if decision["case"] != "within":
            assert decision["share"] > decision["threshold"] == 0.15
            assert all(decision["evidence"][part]["rows"] > 30 for part in ("new_rows", "older_rows")), step["step"]


@pytest.mark.slow
def test_the_gated_policy_deploys_the_covariate_shift_as_adapted(quick):
    _, _, report, _ = quick
    target = report["targets"]["covariate_shift_deploys_as_adapted"]
    assert target["met"] and target["case"] == "adapted", target
    shift = report["policies"]["gated"]["steps"][target["step"]]["drift_decision"]
    assert shift["share"] > shift["threshold"] and shift["evidence"]["new_rows"]["high"] >= 0


@pytest.mark.slow
def test_the_gated_policy_deploys_the_concept_change_as_adapted(quick):
    _, _, report, _ = quick
    target = report["targets"]["concept_change_deploys_as_adapted"]
    assert target["met"], target


@pytest.mark.slow
def test_the_gated_policy_stays_within_0_01_auc_of_the_oracle_from_step_3(quick):
    _, _, report, _ = quick
    target = report["targets"]["within_0.01_of_oracle_from_step_3"]
    assert target["met"], target
