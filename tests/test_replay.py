"""The replay benchmark's small variant (bench/replay.py --quick): 3,000 demo rows, 6 steps.

Four policies from the same start, each in a CL_HOME of its own through the real `ingest` and
`retrain` commands: covariate shift at step 2, concept change at 3, flipped labels at 4, a
broken column at 5. The start is made once and copied, and the oracle branches off the always
policy before the flipped batch (bench/replay.py): about 20 s on two quiet cores.
"""
import importlib.util
import json
from pathlib import Path

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
    assert events == {1: "good", 2: "covariate_shift", 3: "concept_change", 4: "flipped_labels", 5: "broken_column", 6: "good", 7: "good"}
    ids = [stream.initial["customer_id"]] + [b.truth["customer_id"] for b in stream.batches]
    every = [i for part in ids for i in part]
    assert len(every) == len(set(every)) == 3000  # every row once: scores are on rows no model has seen
    flipped, broken = stream.batches[3], stream.batches[4]
    assert (flipped.delivered["churn"] != flipped.truth["churn"]).all()
    assert flipped.delivered.drop(columns="churn").equals(flipped.truth.drop(columns="churn"))
    assert broken.delivered["monthly_charges"].nunique() == 1 and broken.truth["monthly_charges"].nunique() > 100
    fibre_before = (stream.batches[0].truth["internet_service"] == "Fiber optic").mean()
    fibre_after = (stream.batches[2].truth["internet_service"] == "Fiber optic").mean()
    assert fibre_after > 2 * fibre_before


@pytest.mark.slow
def test_each_policy_replays_through_the_real_commands_and_is_scored_on_the_next_batch(quick):
    _, _, report, out = quick
    for policy in ("never", "always", "gated", "oracle"):
        steps = report["policies"][policy]["steps"]
        assert [s["step"] for s in steps] == list(range(7))
        assert all(0.5 < s["auc"] <= 1 and 0 <= s["brier"] <= 1 and s["rows"] > 250 for s in steps), policy
    assert {s["version"] for s in report["policies"]["never"]["steps"]} == {"1.0"}
    assert set(outcomes(report, "always").values()) - {"initial"} <= {"deployed", "forced"}
    oracle = outcomes(report, "oracle")
    assert (oracle[4], oracle[5]) == ("not ingested", "not ingested")
    assert {oracle[s] for s in (1, 2, 3, 6)} == {"deployed"}
    # Same start, same first batch, same gates passed: the same model.
    first = {p: report["policies"][p]["steps"][1]["auc"] for p in ("always", "gated", "oracle")}
    assert len(set(first.values())) == 1, first
    html = (out / "replay.html").read_text()
    assert "Plotly.newPlot" in html and "<script src=" not in html and len(html) > 1_000_000  # plotly.js inlined, no CDN
    assert set(report["targets"]) >= {"gated_never_deploys_bad", "within_0.01_of_oracle_from_step_3"}


@pytest.mark.slow
def test_the_gated_policy_holds_the_flipped_batch_on_its_labels_and_never_deploys_a_bad_batch(quick):
    _, _, report, _ = quick
    gated = report["policies"]["gated"]["steps"]
    assert gated[4]["outcome"] == "held" and "labels" in failed_gates(gated[4])
    assert gated[5]["outcome"] != "deployed"
    assert report["targets"]["gated_never_deploys_bad"]["met"]


@pytest.mark.slow
def test_the_gated_policy_holds_the_broken_batch_on_the_broken_column_and_follows_the_shift(quick):
    _, _, report, _ = quick
    gated = report["policies"]["gated"]["steps"]
    assert report["policies"]["gated"]["policy_values"]["max_drift"] == 1.0  # the default the replay chose
    assert gated[5]["outcome"] == "held" and failed_gates(gated[5]) == {"broken_columns"}
    assert {gated[s]["outcome"] for s in (2, 3, 6)} == {"deployed"}
    assert report["targets"]["within_0.01_of_oracle_from_step_3"]["met"], report["targets"]
