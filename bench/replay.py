"""Replay benchmark: a year of labelled batches under four retraining policies, through the real commands.

    .venv/bin/python bench/replay.py [--quick] [--data CSV --target COL [--id-column COL]] [--jobs N]
                                     [--gated FIELD=VALUE ...] [--out DIR]

1. The stream. The data (default demo/telco_churn.csv) is cut, by a seeded permutation, into an
   initial set and 13 batches (12 steps, the 13th only scored). Known events at known steps:
     step 3  covariate shift: from here on the mix of customers moves (a segment more than
             doubles its share of the rows), for good;
     step 5  concept change: for one segment the relation between one feature and the label is
             reversed (labels redrawn from the feature's rank), for good;
     step 7  flipped labels: that batch arrives with every label flipped;
     step 9  broken column: that batch arrives with one numeric feature set to one constant (its
             median: a plausible value, so the schema check passes);
     step 11 unit change: that batch arrives with one numeric feature multiplied by 100 (monthly
             charges sent in cents; still numbers, so the schema check passes);
   and plain good batches between them. Flipped, broken and unit change are errors in the
   *delivered* file: scores always use the true rows.
2. The policies, each from the same start (migrate, init_cl_system: made once, then its CL_HOME
   and database copied into one for each policy), then one step per batch with the real `ingest`
   and `retrain` commands (django's call_command in one process per policy, so Django and
   scikit-learn are imported once, not twice per step):
     never   v1.0 forever: nothing is ingested or retrained;
     always  every batch ingested, `retrain` with the gates wide open (set through
             modelhub.services.update_policy); a candidate that a gate the policy cannot open
             still rejects (broken columns, out of range) is force-deployed as an ML engineer would;
     gated   every batch ingested, `retrain` with the validation policy's current defaults
             (or --gated FIELD=VALUE overrides, to try a change);
     oracle  the flipped, broken and unit-change batches are never ingested, the rest as
             `always`. Up to the first bad batch it is `always` step for step (the same batches,
             gates and seeds make the same models), so it starts from a copy of that policy's
             state there.
3. The scores. After each step every policy's live model (the active version in its CL_HOME, as
   serving loads it) is scored on the next batch's true rows, which no model has seen: AUC,
   accuracy, Brier score (modelhub.evaluation.score). Each run's outcome (deployed, held,
   skipped), its gate values and reasons, and its drift decision (within, adapted, unexplained:
   modelhub.gates.decide_drift, with its evidence) are recorded.
4. The results: bench/results/replay.json (per policy, per step) and bench/results/replay.html
   (plotly.js inlined: AUC and Brier score per step, events marked); the tables for
   bench/README.md are printed. Then the targets are checked and printed: the gated policy holds
   the flipped, broken and unit-change batches; it deploys the covariate shift and the concept
   change as "adapted" (or "within", when the drift stayed under the maximum: reported as such);
   from step 3 on it stays within 0.01 AUC of the oracle; after the covariate shift and after the
   concept change its mean AUC beats "never"; the wall time is under 10 minutes.

--quick is the small variant the test suite runs (3,250 rows, 7 steps). --data replays any
dataset the system accepts; the events' segments and features are then chosen from the data
(or named with --shift, --concept, --concept-feature, --broken-feature, --unit-feature).
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the benchmarks import the project and each other as bench.x

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

DEMO = ROOT / "demo" / "telco_churn.csv"
RESULTS = ROOT / "bench" / "results"
POLICIES = ("never", "always", "gated", "oracle")
# Every gate with a policy field wide open: every candidate passes (the label check's drop is at
# most 1; a drift share at most 1 is always "within", so the drift decision never holds).
OPEN_GATES = {"min_primary": None, "max_primary_drop": 1.0, "require_beats_baseline": False, "min_accuracy": 0.0,
              "max_accuracy_drop": 1.0, "max_drift": 1.0, "max_label_collapse": 1.0, "min_auc": None}
BAD_EVENTS = ("flipped_labels", "broken_column", "unit_change")
OWN_GATE = {"flipped_labels": "labels", "broken_column": "broken_columns", "unit_change": "out_of_range"}  # the gate meant to hold it
UNIT_FACTOR = 100  # the unit change: euros sent as cents
# Before the covariate shift the segment is this fraction of its share in the whole data; after
# it, it takes the rest of its rows (demo: fibre customers, 24% of the rows before, 57% after).
SHIFT_OLD_SHARE = 0.55
POSITIVE_WORDS = ("1", "yes", "y", "true", "t", "positive", "pos")  # as ingestion.schema chooses the positive label
TARGET_GAP = 0.01
TARGET_SECONDS = 600
BRANCH = "branch.json"  # in a policy's CL_HOME: the steps another policy took to the state copied there


@dataclass(frozen=True)
class Plan:
    """How the stream is cut: sizes, steps and which event happens at which step."""
    initial_rows: int
    steps: int
    schedule: dict  # step -> event
    sample_rows: int | None = None  # use only this many rows of the data (seeded), for the quick variant
    seed: int = 2024

    @property
    def batches(self) -> int:
        return self.steps + 1  # the last batch is only scored


FULL = Plan(initial_rows=2000, steps=12, schedule={3: "covariate_shift", 5: "concept_change", 7: "flipped_labels", 9: "broken_column",
                                                  11: "unit_change"})
# 250 more rows than six steps had, so the seventh step leaves the batches as large as before.
QUICK = Plan(initial_rows=1000, steps=7, schedule={2: "covariate_shift", 3: "concept_change", 4: "flipped_labels", 5: "broken_column",
                                                   6: "unit_change"}, sample_rows=3250)

# The demo's events, named: fibre customers become the larger share of the mix; for DSL customers
# churn now rises with tenure instead of falling (a rival's fibre roll-out takes the long-standing
# ones); an export fills monthly_charges with one value; another sends monthly_charges in cents.
DEMO_EVENTS = {"shift": "internet_service==Fiber optic", "concept": "internet_service==DSL", "concept_feature": "tenure",
               "broken_feature": "monthly_charges", "unit_feature": "monthly_charges"}


# ----------------------------------------------------------------------------------------------
# The stream
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Segment:
    column: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> "Segment":
        match = re.fullmatch(r"\s*(.+?)\s*(==|!=|>=|<=|>|<)\s*(.*?)\s*", text)
        if not match:
            raise ValueError(f"{text!r} is not a segment like 'column==value' or 'column>=number'")
        return cls(*match.groups())

    def mask(self, frame: pd.DataFrame) -> np.ndarray:
        if self.column not in frame:
            raise ValueError(f"segment column {self.column!r} is not in the data")
        text = frame[self.column].astype(str).str.strip()
        if self.op in ("==", "!="):
            hit = (text == self.value).to_numpy()
            return hit if self.op == "==" else ~hit
        numbers = pd.to_numeric(text, errors="coerce").to_numpy(float)
        value = float(self.value)
        with np.errstate(invalid="ignore"):
            return {">=": numbers >= value, "<=": numbers <= value, ">": numbers > value, "<": numbers < value}[self.op]

    def __str__(self) -> str:
        return f"{self.column} {self.op} {self.value}"


@dataclass
class Batch:
    step: int
    event: str  # "good" or one of the events
    delivered: pd.DataFrame  # what is ingested
    truth: pd.DataFrame  # what scores are computed on
    note: str = ""

    @property
    def bad(self) -> bool:
        return self.event in BAD_EVENTS


@dataclass
class Stream:
    data: str
    target: str
    id_column: str
    positive_label: str
    initial: pd.DataFrame
    batches: list[Batch]
    events: dict = field(default_factory=dict)  # event -> description
    seed: int = 0

    def write(self, folder: Path) -> dict:
        folder.mkdir(parents=True, exist_ok=True)
        self.initial.to_csv(folder / "initial.csv", index=False)
        files = []
        for batch in self.batches:
            delivered, truth = folder / f"batch_{batch.step:02d}.csv", folder / f"batch_{batch.step:02d}.truth.csv"
            batch.delivered.to_csv(delivered, index=False)
            batch.truth.to_csv(truth, index=False)
            files.append({"step": batch.step, "event": batch.event, "bad": batch.bad, "delivered": str(delivered), "truth": str(truth),
                          "rows": len(batch.delivered), "note": batch.note})
        manifest = {"data": self.data, "target": self.target, "id_column": self.id_column, "positive_label": self.positive_label,
                    "initial": str(folder / "initial.csv"), "initial_rows": len(self.initial), "batches": files, "events": self.events}
        (folder / "stream.json").write_text(json.dumps(manifest, indent=1))
        return manifest


def positive_label_of(labels: pd.Series, requested: str = "") -> str:
    values = sorted(labels.str.strip().unique())
    if len(values) != 2:
        raise ValueError(f"the target must have exactly two labels, found {values[:10]}")
    if requested:
        return requested
    for value in values:
        if value.lower() in POSITIVE_WORDS:
            return value
    counts = labels.str.strip().value_counts()
    return min(values, key=lambda v: (counts[v], v))


def _numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(frame[column].str.strip(), errors="coerce").to_numpy(float)


def numeric_columns(frame: pd.DataFrame, exclude: set) -> list[str]:
    """Columns whose non-empty values are all numbers, and not just two distinct values (flags)."""
    names = []
    for name in frame.columns:
        if name in exclude:
            continue
        text = frame[name].str.strip()
        present = text[text != ""]
        values = pd.to_numeric(present, errors="coerce")
        if len(present) and values.notna().all() and values.nunique() > 2:
            names.append(name)
    return names


def _rank_correlation(x: np.ndarray, y: np.ndarray) -> float:
    ok = ~np.isnan(x)
    if ok.sum() < 10 or np.std(x[ok]) == 0:
        return 0.0
    return float(np.corrcoef(pd.Series(x[ok]).rank().to_numpy(), y[ok])[0, 1])


def choose_events(frame: pd.DataFrame, y: np.ndarray, target: str, id_column: str) -> dict:
    """Segments and features for the events of a dataset without a preset, read off the data.

    shift: the upper third of the numeric feature most related to the label; concept: the level
    (share 20-60%) of a categorical feature with few levels, else the lower 40% of another numeric
    feature; concept feature: the next most related numeric feature that is not a copy of the
    first (rank correlation below 0.9); broken: the most related numeric feature that the
    concept does not use; unit: the most related numeric feature most of whose values, times
    UNIT_FACTOR, leave its range (a unit change on a column of mostly zeros changes nothing to see).
    """
    numeric = numeric_columns(frame, {target, id_column})
    if len(numeric) < 2:
        raise ValueError("the automatic events need at least two numeric features; name them with --shift/--concept/...")
    ranked = sorted(numeric, key=lambda c: -abs(_rank_correlation(_numeric(frame, c), y)))
    shift_feature = ranked[0]
    # Not a copy of the shift feature under another name (minutes and their charge, say).
    concept_feature = next((c for c in ranked[1:] if abs(_rank_correlation(_numeric(frame, c), pd.Series(_numeric(frame, shift_feature))
                                                                         .rank().to_numpy())) < 0.9), ranked[1])
    shift = f"{shift_feature}>={np.nanquantile(_numeric(frame, shift_feature), 2 / 3):g}"
    concept = None
    for name in frame.columns:
        if name in {target, id_column} or name in numeric:
            continue
        shares = frame[name].str.strip().value_counts(normalize=True)
        if 2 <= len(shares) <= 10:
            fitting = shares[(shares >= 0.2) & (shares <= 0.6)]
            if len(fitting):
                concept = f"{name}=={fitting.index[0]}"
                break
    if concept is None:
        other = next((c for c in ranked[2:]), ranked[0])
        concept = f"{other}<={np.nanquantile(_numeric(frame, other), 0.4):g}"
    broken = next(c for c in ranked if c != concept_feature)
    unit = next((c for c in ranked if _share_leaving_range(_numeric(frame, c)) > 0.9), ranked[0])
    return {"shift": shift, "concept": concept, "concept_feature": concept_feature, "broken_feature": broken, "unit_feature": unit}


def _share_leaving_range(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    scaled = values * UNIT_FACTOR
    return float(np.mean((scaled < values.min()) | (scaled > values.max()))) if len(values) else 0.0


def build_stream(data: Path, target: str, id_column: str = "", positive_label: str = "", *, plan: Plan = FULL,
                 events: dict | None = None) -> Stream:
    """Cut `data` into the initial set and the batches of `plan`, with its events (deterministic)."""
    frame = pd.read_csv(data, dtype=str, keep_default_na=False)
    rng = np.random.default_rng(plan.seed)
    if plan.sample_rows and plan.sample_rows < len(frame):
        frame = frame.iloc[np.sort(rng.choice(len(frame), plan.sample_rows, replace=False))].reset_index(drop=True)
    positive = positive_label_of(frame[target], positive_label)
    negative = next(v for v in frame[target].str.strip().unique() if v != positive)
    y = (frame[target].str.strip() == positive).to_numpy(int)
    chosen = dict(events or (DEMO_EVENTS if Path(data).resolve() == DEMO.resolve() else choose_events(frame, y, target, id_column)))
    shift, concept = Segment.parse(chosen["shift"]), Segment.parse(chosen["concept"])
    concept_feature, broken_feature, unit_feature = chosen["concept_feature"], chosen["broken_feature"], chosen["unit_feature"]
    steps_of = {event: step for step, event in plan.schedule.items()}

    # Sizes: the initial set, then the batches as equal as the rows allow.
    n = len(frame)
    rest = n - plan.initial_rows
    sizes = [plan.initial_rows] + [rest // plan.batches + (1 if i < rest % plan.batches else 0) for i in range(plan.batches)]
    # Covariate shift: the segment's share is lower before the shift step and higher from it on,
    # every row used once. Slots 0 (initial) .. shift_step-1 have the old mix.
    in_shift = shift.mask(frame)
    shift_step = steps_of.get("covariate_shift", plan.batches + 1)
    old_slots, new_slots = range(0, min(shift_step, len(sizes))), range(min(shift_step, len(sizes)), len(sizes))
    old_rows, new_rows = sum(sizes[i] for i in old_slots), sum(sizes[i] for i in new_slots)
    base_share = in_shift.mean()
    old_share = base_share * SHIFT_OLD_SHARE if new_rows else base_share
    new_share = (in_shift.sum() - old_share * old_rows) / new_rows if new_rows else base_share
    if new_share > 0.95:  # a large segment: cap the new share; the old mix then keeps more of it
        new_share = 0.95
        old_share = (in_shift.sum() - new_share * new_rows) / old_rows
    order = rng.permutation(n)
    pools = {True: list(order[in_shift[order]]), False: list(order[~in_shift[order]])}
    slots, carry = [], 0.0
    for i, size in enumerate(sizes):
        carry += (old_share if i in old_slots else new_share) * size
        # As near the share as the rows left allow (the last slot takes what is left).
        take = min(max(int(round(carry)), size - len(pools[False]), 0), size, len(pools[True]))
        carry -= take
        picked = pools[True][:take] + pools[False][:size - take]
        pools[True], pools[False] = pools[True][take:], pools[False][size - take:]
        slots.append(rng.permutation(np.array(picked, dtype=int)))

    # Concept change: in the concept segment, from its step on, the label follows the feature's
    # rank in the opposite direction to the one it had (probability 0.05 .. 0.60).
    truth_y = y.copy()
    concept_step = steps_of.get("concept_change")
    in_concept = concept.mask(frame)
    feature = _numeric(frame, concept_feature)
    rank = pd.Series(feature).rank(pct=True).fillna(0.5).to_numpy()
    direction = _rank_correlation(feature[in_concept], y[in_concept])
    new_p = 0.05 + 0.55 * (rank if direction <= 0 else 1 - rank)
    redraw = rng.random(n) < new_p
    if concept_step is not None:
        for step in range(concept_step, plan.batches + 1):
            rows = slots[step][in_concept[slots[step]]]
            truth_y[rows] = redraw[rows]
    labelled = frame.copy()
    labelled[target] = np.where(truth_y == 1, positive, negative)

    broken_value = float(np.nanmedian(_numeric(frame.iloc[slots[0]], broken_feature)))
    batches = []
    for step in range(1, plan.batches + 1):
        truth = labelled.iloc[slots[step]].reset_index(drop=True)
        delivered, event, note = truth.copy(), plan.schedule.get(step, "good"), ""
        if event == "flipped_labels":
            delivered[target] = np.where(truth[target] == positive, negative, positive)
            note = "every label flipped"
        elif event == "broken_column":
            delivered[broken_feature] = f"{broken_value:g}"
            note = f"{broken_feature} set to {broken_value:g} in every row"
        elif event == "unit_change":
            delivered[unit_feature] = _scaled_text(truth[unit_feature], UNIT_FACTOR)
            note = f"{unit_feature} multiplied by {UNIT_FACTOR} in every row"
        elif event == "covariate_shift":
            note = f"{shift}: {in_shift[slots[step - 1]].mean():.0%} of the rows before, {in_shift[slots[step]].mean():.0%} from here on"
        elif event == "concept_change":
            note = f"for {concept}, churn now {'rises' if direction <= 0 else 'falls'} with {concept_feature}"
        batches.append(Batch(step, event, delivered, truth, note))
    initial = labelled.iloc[slots[0]].reset_index(drop=True)
    described = {
        "covariate_shift": {"step": steps_of.get("covariate_shift"), "segment": str(shift),
                            "share_before": round(float(old_share), 3), "share_after": round(float(new_share), 3)},
        "concept_change": {"step": concept_step, "segment": str(concept), "feature": concept_feature,
                           "relation_before": round(direction, 3), "relation": f"P(positive) = 0.05 + 0.55 x rank of {concept_feature}"
                           + (" (reversed)" if direction > 0 else "")},
        "flipped_labels": {"step": steps_of.get("flipped_labels")},
        "broken_column": {"step": steps_of.get("broken_column"), "feature": broken_feature, "value": broken_value},
        "unit_change": {"step": steps_of.get("unit_change"), "feature": unit_feature, "factor": UNIT_FACTOR},
    }
    return Stream(str(data), target, id_column, positive, initial, batches, described, plan.seed)


def _scaled_text(column: pd.Series, factor: float) -> pd.Series:
    """The numbers of a text column times `factor`, as text (12 significant digits: 29.85 x 100 is
    2985, not 2985.0000000000005); empty cells stay empty."""
    numbers = pd.to_numeric(column.str.strip(), errors="coerce")
    return pd.Series([f"{v * factor:.12g}" if pd.notna(v) else text for v, text in zip(numbers, column)], index=column.index)


# ----------------------------------------------------------------------------------------------
# One policy, in a process of its own (Django is configured for one CL_HOME per process)
# ----------------------------------------------------------------------------------------------

def _django(home: Path) -> None:
    """This process's Django, on the SQLite database in the CL_HOME `home`."""
    os.environ.update(CL_HOME=str(home), DJANGO_SECRET_KEY="replay-bench-only", DJANGO_SETTINGS_MODULE="clsite.settings")
    for name in ("DATABASE_URL", "REDIS_URL", "DJANGO_DEBUG"):
        os.environ.pop(name, None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def initialise(manifest: dict, home: Path) -> dict:
    """The start every policy shares: migrate and init_cl_system on the initial rows, once."""
    _django(home)
    import io

    from django.core.management import call_command
    from django.db import connection

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    call_command("init_cl_system", data=manifest["initial"], target=manifest["target"], id_column=manifest["id_column"],
                 positive_label=manifest["positive_label"], stdout=io.StringIO())
    connection.close()  # the last connection: SQLite folds its write-ahead log into the file, ready to copy
    return {"policy": "start", "seconds": round(time.perf_counter() - started, 1)}


def run_policy(policy: str, manifest: dict, home: Path, gated_overrides: dict, branch_to: Path | None = None) -> dict:
    """One policy's steps, in `home`: a copy of the shared start (`initialise`), or of another
    policy's state with the steps it took to get there (BRANCH in `home`: the oracle).

    `branch_to`: where to copy this policy's state just before its first bad batch (the always
    policy, for the oracle)."""
    _django(home)
    import io

    from django.core.management import call_command

    from modelhub import evaluation, serving, services, training
    from modelhub.models import TrainingRun, ValidationPolicy

    started = time.perf_counter()
    changes = dict(OPEN_GATES) if policy in ("always", "oracle") else dict(gated_overrides) if policy == "gated" else {}
    if changes:
        services.update_policy(user=None, changes=changes)
    policy_values = {name: getattr(ValidationPolicy.get(), name) for name in services.POLICY_FIELDS}

    def score(step_file: str) -> dict:
        truth = pd.read_csv(step_file, dtype=str, keep_default_na=False)
        loaded = serving.active()
        version, model = loaded.version, loaded.model
        schema = version.schema
        proba = training.positive_proba(model, training.features_frame(truth, schema), schema.positive_label if version.imported else None)
        metrics = evaluation.score(training.labels(truth, schema), proba)
        return {"version": version.version, "auc": metrics["auc"], "accuracy": metrics["accuracy"], "brier": metrics["brier"],
                "rows": metrics["rows"], "positive_rate": metrics["class_balance"]["positive_rate"]}

    def force_deploy(version):
        reason = f"replay: the {policy} policy deploys every candidate"
        if hasattr(services, "activate_version"):
            services.activate_version(version=version, user=None, reason=reason)
        else:
            services.force_deploy(version=version, user=None, reason=reason)

    batches = manifest["batches"]
    if (home / BRANCH).exists():
        steps = json.loads((home / BRANCH).read_text())
    else:
        steps = [{"step": 0, "event": "initial", "outcome": "initial", **score(batches[0]["truth"]), "retrain_seconds": None}]
    for batch in batches[:-1]:
        if batch["step"] < len(steps):
            continue  # taken before the branch
        if branch_to and batch["bad"]:
            save_branch(home, branch_to, steps)
            branch_to = None
        record = {"step": batch["step"], "event": batch["event"]}
        tick = time.perf_counter()
        if policy == "never":
            record["outcome"] = "not retrained"
        elif policy == "oracle" and batch["bad"]:
            record["outcome"] = "not ingested"
        else:
            call_command("ingest", batch["delivered"], stdout=io.StringIO())
            try:
                call_command("retrain", stdout=io.StringIO(), stderr=io.StringIO())
                code = 0
            except SystemExit as exc:
                code = exc.code
            run = TrainingRun.objects.order_by("-pk").first()
            record.update(outcome={"deployed": "deployed", "rejected": "held", "skipped": "skipped"}.get(run.status, run.status),
                          exit_code=code, reasons=run.reasons, error=run.error)
            candidate = run.candidate
            if policy in ("always", "oracle") and run.status == TrainingRun.Status.REJECTED:
                # A gate the policy cannot open (broken columns) held it: deploy it anyway, as an
                # ML engineer's forced deployment does, with the batches it was trained on.
                force_deploy(candidate)
                record["outcome"] = "forced"
            if candidate is not None:
                validation, drift = candidate.validation or {}, candidate.drift or {}
                record.update(candidate=candidate.version, estimator=candidate.estimator, candidate_holdout_auc=candidate.metrics.get("auc"),
                              gates={g["name"]: {"value": g["value"], "threshold": g["threshold"], "passed": g["passed"]}
                                     for g in validation.get("gates", [])},
                              drifted=drift.get("drifted", []), drift_method=drift.get("method"),
                              drift_decision={k: v for k, v in (validation.get("drift_decision") or {}).items() if k != "drifted"},
                              out_of_range=drift.get("out_of_range"), stages={s["stage"]: s["seconds"] for s in run.stages})
        record["retrain_seconds"] = round(time.perf_counter() - tick, 2)
        record.update(score(batches[batch["step"]]["truth"]))
        steps.append(record)
    return {"policy": policy, "policy_values": policy_values, "seconds": round(time.perf_counter() - started, 1), "steps": steps}


def save_branch(home: Path, target: Path, steps: list) -> None:
    """This policy's CL_HOME and database as they are now, and its steps so far, into `target`;
    the BRANCH file, written last, says the copy is whole."""
    import sqlite3
    from contextlib import closing

    from django.db import connection

    shutil.copytree(home, target, ignore=shutil.ignore_patterns("db.sqlite3*"), dirs_exist_ok=True)
    connection.ensure_connection()
    with closing(sqlite3.connect(target / "db.sqlite3")) as copy:
        connection.connection.backup(copy)
    (target / f"{BRANCH}.part").write_text(json.dumps(steps, default=str))
    (target / f"{BRANCH}.part").rename(target / BRANCH)


def _worker_main(args) -> None:
    manifest = json.loads(Path(args.stream).read_text())
    if args.worker == "start":
        result = initialise(manifest, Path(args.home))
    else:
        result = run_policy(args.worker, manifest, Path(args.home), json.loads(args.gated_json),
                            Path(args.branch_to) if args.branch_to else None)
    Path(args.result).write_text(json.dumps(result, indent=1, default=str))


# ----------------------------------------------------------------------------------------------
# The replay: all policies, in parallel processes
# ----------------------------------------------------------------------------------------------

def _workers(names: list, work: Path, *, jobs: int, gated: dict | None, waits_for: dict | None = None, args: dict | None = None) -> dict:
    """Runs `--worker NAME` for each name (the start or a policy), at most `jobs` at once, in
    work/home_NAME, each as soon as the file `waits_for[NAME]` (if any) exists, with the extra
    arguments `args[NAME]`; returns their results by name."""
    waits_for, args = waits_for or {}, args or {}
    running, pending, results = {}, list(names), {}
    while pending or running:
        startable = [n for n in pending if n not in waits_for or waits_for[n].exists()]
        if not running and not startable:
            raise RuntimeError(f"{pending} wait for files no worker made: {[str(waits_for[n]) for n in pending]}")
        for name in startable[:max(jobs - len(running), 0)]:
            pending.remove(name)
            home, result = work / f"home_{name}", work / f"result_{name}.json"
            home.mkdir(parents=True, exist_ok=True)
            log = open(work / f"{name}.log", "wb")
            proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", name, "--stream", str(work / "stream" / "stream.json"),
                                     "--home", str(home), "--result", str(result), "--gated-json", json.dumps(gated or {}), *args.get(name, [])],
                                    cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            running[name] = (proc, result, log)
        for name, (proc, result, log) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                if proc.returncode != 0:
                    raise RuntimeError(f"{name} failed ({proc.returncode}):\n" + (work / f"{name}.log").read_text()[-4000:])
                results[name] = json.loads(result.read_text())
                del running[name]
        time.sleep(0.2)
    return results


def replay(stream: Stream, work: Path, *, jobs: int = 3, gated: dict | None = None, policies=POLICIES) -> dict:
    started = time.perf_counter()
    stream.write(work / "stream")
    # The start (migrate, init_cl_system) is the same for every policy: made once, then copied.
    start = _workers(["start"], work, jobs=1, gated=gated)["start"]
    order = [p for p in ("gated", "always", "oracle", "never") if p in policies]
    # The oracle branches off the always policy before the first bad batch (see run_policy).
    branch = {"always", "oracle"} <= set(order) and any(b.bad for b in stream.batches[:-1])
    for policy in order:
        if not (branch and policy == "oracle"):
            shutil.copytree(work / "home_start", work / f"home_{policy}")
    oracle_home = work / "home_oracle"
    results = _workers(order, work, jobs=jobs, gated=gated, waits_for={"oracle": oracle_home / BRANCH} if branch else {},
                       args={"always": ["--branch-to", str(oracle_home)]} if branch else {})
    report = {
        "data": _shown(stream.data), "target": stream.target, "rows": len(stream.initial) + sum(len(b.delivered) for b in stream.batches),
        "initial_rows": len(stream.initial), "batch_rows": [len(b.delivered) for b in stream.batches],
        "events": stream.events, "schedule": {b.step: b.event for b in stream.batches if b.event != "good"},
        "seed": stream.seed, "gated_overrides": gated or {}, "jobs": jobs, "cores": os.cpu_count(),
        "start_seconds": start["seconds"], "policies": {p: results[p] for p in policies},
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["targets"] = check_targets(report)
    return report


def _shown(path: str) -> str:
    """A path inside the project, relative to it (the results do not name the machine's folders)."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def _auc(report, policy, step):
    return report["policies"][policy]["steps"][step]["auc"]


def failed_gates(step: dict) -> list[str]:
    return [name for name, gate in step.get("gates", {}).items() if not gate["passed"]]


def change_text(change: dict | None) -> str:
    """A drift decision's evidence: candidate minus live, its 95% interval, on how many rows."""
    if not change:
        return ""
    interval = f" [{change['low']:+.3f}, {change['high']:+.3f}]" if change.get("low") is not None else ""
    return f"{change['delta']:+.3f}{interval}, {change['rows']:,} rows"


def check_targets(report: dict) -> dict:
    steps = range(len(report["policies"]["gated"]["steps"]))
    schedule = {int(k): v for k, v in report["schedule"].items()}
    bad_steps = [s for s, e in schedule.items() if e in BAD_EVENTS]
    gated = report["policies"]["gated"]["steps"]
    # Held by the gate made for that error, not only by another (a drift gate holding every batch would hold them too).
    own = {s: gated[s]["outcome"] == "held" and OWN_GATE[schedule[s]] in failed_gates(gated[s]) for s in bad_steps}
    targets = {"gated_holds_bad_batches": {"met": all(own.values()), "bad_steps": bad_steps, "held_by_own_gate": sum(own.values()),
                                           "outcomes": {s: f"{schedule[s]}: {gated[s]['outcome']}"
                                                        + (f" ({', '.join(failed_gates(gated[s]))})" if failed_gates(gated[s]) else "")
                                                        for s in bad_steps}}}
    for event in ("covariate_shift", "concept_change"):
        step = next((s for s, e in schedule.items() if e == event), None)
        if step is not None:
            record, decision = gated[step], gated[step].get("drift_decision") or {}
            evidence = decision.get("evidence") or {}
            targets[f"{event}_deploys_as_adapted"] = {
                "met": record["outcome"] == "deployed" and decision.get("case") in ("adapted", "within"), "step": step,
                "outcome": record["outcome"], "case": decision.get("case"),
                "share": None if decision.get("share") is None else round(decision["share"], 3),
                "threshold": decision.get("threshold"),
                "new_rows": change_text(evidence.get("new_rows")), "older_rows": change_text(evidence.get("older_rows"))}
    if "oracle" in report["policies"]:
        gaps = {s: round(_auc(report, "oracle", s) - _auc(report, "gated", s), 4) for s in steps if s >= 3}
        worst = max(gaps.items(), key=lambda kv: kv[1]) if gaps else (None, 0.0)
        targets["within_0.01_of_oracle_from_step_3"] = {"met": all(g <= TARGET_GAP + 1e-12 for g in gaps.values()),
                                                       "oracle_minus_gated": gaps, "worst_step": worst[0], "worst_gap": worst[1]}
    if "never" in report["policies"]:
        shift = next((s for s, e in schedule.items() if e == "covariate_shift"), None)
        concept = next((s for s, e in schedule.items() if e == "concept_change"), None)
        last = max(steps)
        for name, first, end in (("covariate_shift", shift, concept - 1 if concept and shift and concept > shift else last),
                                 ("concept_change", concept, last)):
            if first is None:
                continue
            window = [s for s in steps if first <= s <= end]
            g = float(np.mean([_auc(report, "gated", s) for s in window]))
            n = float(np.mean([_auc(report, "never", s) for s in window]))
            wins = sum(_auc(report, "gated", s) > _auc(report, "never", s) for s in window)
            targets[f"beats_never_after_{name}"] = {"met": g > n, "steps": [window[0], window[-1]], "gated_mean_auc": round(g, 4),
                                                    "never_mean_auc": round(n, 4), "steps_won": f"{wins}/{len(window)}"}
    targets["under_10_minutes"] = {"met": report["seconds"] < TARGET_SECONDS, "seconds": report["seconds"]}
    return targets


# ----------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------

MARK = {"deployed": "D", "forced": "F", "held": "H", "skipped": "", "not retrained": "", "not ingested": "-", "initial": ""}
EVENT_NAMES = {"initial": "initial model", "good": "", "covariate_shift": "covariate shift", "concept_change": "concept change",
               "flipped_labels": "flipped labels", "broken_column": "broken column", "unit_change": "unit change"}


def drift_case(step: dict) -> str:
    """The run's drift decision and share ("adapted, 0.684"), empty where nothing was retrained."""
    decision = step.get("drift_decision") or {}
    if not decision.get("case"):
        return ""
    return decision["case"] + (f", {decision['share']:.3f}" if decision.get("share") is not None else "")


def markdown_table(report: dict) -> str:
    """AUC and outcome of every policy per step, and the gated policy's drift decision (the open
    policies' is always "within": their maximum is 1)."""
    policies = list(report["policies"])
    gated = "gated" in policies
    lines = ["| step | event (batch ingested) | " + " | ".join(policies) + (" | gated: drift decision, share |" if gated else " |"),
             "| ---: | --- | " + " | ".join("---:" for _ in policies) + (" | --- |" if gated else " |")]
    for i, row in enumerate(report["policies"][policies[0]]["steps"]):
        cells = []
        for p in policies:
            s = report["policies"][p]["steps"][i]
            mark = MARK.get(s["outcome"], s["outcome"])
            cells.append(f"{s['auc']:.3f}" + (f" {mark}" if mark else ""))
        if gated:
            cells.append(drift_case(report["policies"]["gated"]["steps"][i]))
        lines.append(f"| {row['step']} | {EVENT_NAMES.get(row['event'], row['event'])} | " + " | ".join(cells) + " |")
    means = [float(np.mean([s["auc"] for s in report["policies"][p]["steps"]])) for p in policies]
    lines.append("| mean | | " + " | ".join(f"{m:.3f}" for m in means) + (" | |" if gated else " |"))
    return "\n".join(lines)


def gated_table(report: dict) -> str:
    """The gated policy's gate values per step, and its drift decision's evidence: the primary
    metric, candidate minus live, on the held-out new rows and on the older held-out rows."""
    lines = ["| step | event | outcome | primary drop | accuracy drop | drift share | drift decision | new rows: change [95%], rows "
             "| older rows: change [95%], rows | label check drop | broken columns | out of range | drifted features |",
             "| ---: | --- | --- | ---: | ---: | ---: | --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for s in report["policies"]["gated"]["steps"][1:]:
        g = s.get("gates", {})
        decision = s.get("drift_decision") or {}
        evidence = decision.get("evidence") or {}

        def cell(name):
            gate = g.get(name)
            if not gate or gate["value"] is None:
                return ""
            return f"{gate['value']:.3f}" + ("" if gate["passed"] else " **fail**")
        lines.append(f"| {s['step']} | {EVENT_NAMES.get(s['event'], s['event'])} | {s['outcome']} | {cell('max_primary_drop')} | "
                     f"{cell('max_accuracy_drop')} | {cell('max_drift')} | {decision.get('case', '')} | "
                     f"{change_text(evidence.get('new_rows'))} | {change_text(evidence.get('older_rows'))} | {cell('labels')} | "
                     f"{cell('broken_columns')} | {cell('out_of_range')} | {len(s.get('drifted', []))} |")
    return "\n".join(lines)


def targets_text(report: dict) -> str:
    out = []
    for name, t in report["targets"].items():
        detail = {k: v for k, v in t.items() if k not in ("met", "oracle_minus_gated")}
        out.append(f"- {name}: {'met' if t['met'] else 'NOT met'} ({', '.join(f'{k} {v}' for k, v in detail.items())})")
    return "\n".join(out)


def write_html(report: dict, path: Path) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    colours = {"never": "#7f7f7f", "always": "#d62728", "gated": "#1f77b4", "oracle": "#2ca02c"}
    # The oracle wide and pale underneath, the gated policy dashed on top: where they agree both show.
    lines = {"never": dict(width=2), "always": dict(width=2), "oracle": dict(width=7), "gated": dict(width=2.5, dash="dash")}
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32], vertical_spacing=0.05)
    symbols = {"deployed": "circle", "forced": "circle", "held": "x", "not ingested": "circle-open", "initial": "diamond"}
    order = [p for p in ("never", "always", "oracle", "gated") if p in report["policies"]]
    for policy in order:
        steps = report["policies"][policy]["steps"]
        x = [s["step"] for s in steps]
        text = [f"{policy}, step {s['step']} ({EVENT_NAMES.get(s['event'], s['event']) or 'good batch'}): {s['outcome']}, live v{s['version']}"
                + (f"<br>{'<br>'.join(s.get('reasons', [])[:3])}" if s.get("reasons") else "") for s in steps]
        marker = dict(symbol=[symbols.get(s["outcome"], "circle-open") for s in steps], size=11 if policy == "gated" else 9,
                      color=colours.get(policy), line=dict(width=2, color=colours.get(policy)))
        line = dict(color=colours.get(policy), **lines.get(policy, {}))
        opacity = 0.45 if policy == "oracle" else 1.0
        for row, metric in ((1, "auc"), (2, "brier")):
            fig.add_trace(go.Scatter(x=x, y=[s[metric] for s in steps], mode="lines+markers", name=policy, legendgroup=policy,
                                     showlegend=row == 1, line=line, marker=marker, opacity=opacity, hovertext=text,
                                     hoverinfo="text+y"), row=row, col=1)
    for step, event in report["schedule"].items():
        fig.add_vline(x=int(step), line=dict(color="#999", dash="dot"))
        fig.add_annotation(x=int(step), y=1.0, yref="paper", text=EVENT_NAMES.get(event, event), showarrow=False, yanchor="bottom",
                           font=dict(size=12))
    fig.update_layout(title=dict(text=f"Replay of {Path(report['data']).name}: four retraining policies, scored on the next batch "
                                      "(● deployed, ✕ held by the gates, ○ not ingested or not retrained)", y=0.97, font=dict(size=15)),
                      height=740, margin=dict(t=100), hovermode="closest", template="plotly_white")
    fig.update_yaxes(title_text="AUC (higher is better)", row=1, col=1)
    fig.update_yaxes(title_text="Brier score (lower is better)", row=2, col=1)
    fig.update_xaxes(title_text="step (batch ingested; scored on the next batch)", dtick=1, row=2, col=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path, include_plotlyjs=True, full_html=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the small variant: 3,250 rows, 7 steps")
    parser.add_argument("--data", type=Path, default=DEMO, help="a CSV the system accepts (default: the demo data)")
    parser.add_argument("--target", default="churn")
    parser.add_argument("--id-column", default=None)
    parser.add_argument("--positive-label", default="")
    for name in ("shift", "concept", "concept-feature", "broken-feature", "unit-feature"):
        parser.add_argument(f"--{name}", default=None, help="override the automatic choice for other data")
    parser.add_argument("--seed", type=int, default=None, help="another cut of the same data (default: the plan's seed, 2024)")
    parser.add_argument("--jobs", type=int, default=3, help="policies replayed at once (default 3: the three that retrain)")
    parser.add_argument("--gated", action="append", default=[], metavar="FIELD=VALUE", help="a validation-policy value for the gated policy")
    parser.add_argument("--policies", default=",".join(POLICIES), help="which policies to replay (default: all four)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where replay.json and replay.html go")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    # worker mode
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--stream", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--gated-json", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--branch-to", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker_main(args)
        return
    id_column = args.id_column if args.id_column is not None else ("customer_id" if args.data.resolve() == DEMO.resolve() else "")
    events = None
    overrides = {"shift": args.shift, "concept": args.concept, "concept_feature": args.concept_feature,
                 "broken_feature": args.broken_feature, "unit_feature": args.unit_feature}
    if any(overrides.values()):
        frame = pd.read_csv(args.data, dtype=str, keep_default_na=False)
        y = (frame[args.target].str.strip() == positive_label_of(frame[args.target], args.positive_label)).to_numpy(int)
        base = DEMO_EVENTS if args.data.resolve() == DEMO.resolve() else choose_events(frame, y, args.target, id_column)
        events = {k: v or base[k] for k, v in overrides.items()}
    gated = dict(_policy_value(item) for item in args.gated)
    plan = QUICK if args.quick else FULL
    if args.seed is not None:
        plan = replace(plan, seed=args.seed)
    from bench import common

    started = time.perf_counter()
    meter = common.LoadMeter()
    stream = build_stream(args.data, args.target, id_column, args.positive_label, plan=plan, events=events)
    work = args.work or Path(tempfile.mkdtemp(prefix="cl-replay-"))
    policies = tuple(p for p in POLICIES if p in args.policies.split(","))
    with meter.phase("replay"):
        report = replay(stream, work, jobs=args.jobs, gated=gated, policies=policies)
    print(markdown_table(report), "", gated_table(report), "", targets_text(report),
          f"\nreplay: {report['seconds']:.0f} s; work folder {work}", sep="\n")
    # Only the standard replay (the demo data, every policy, no overrides) is the benchmark's
    # result; other runs write only where --out says.
    standard = (args.data.resolve() == DEMO.resolve() and not gated and args.seed is None and policies == POLICIES
                and not any(overrides.values()))
    if args.out != RESULTS or (standard and not args.quick):
        args.out.mkdir(parents=True, exist_ok=True)
        write_html(report, args.out / "replay.html")
        if args.out == RESULTS:
            targets = common_targets(report)
            common.write_result("replay", started=started, meter=meter, targets=targets, details={"replay": report},
                                markdown=readme_section(report, targets))
        else:
            (args.out / "replay.json").write_text(json.dumps(report, indent=1, default=str))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


def _policy_value(item: str) -> tuple[str, object]:
    """FIELD=VALUE as the policy field takes it: None, a bool, a number, or text (primary_metric=pr_auc)."""
    name, _, value = item.partition("=")
    if value.lower() in ("", "none"):
        return name, None
    if value.lower() in ("true", "false"):
        return name, value.lower() == "true"
    try:
        return name, float(value)
    except ValueError:
        return name, value


def common_targets(report: dict) -> list:
    """The replay's targets in the benchmarks' common form."""
    from bench import common

    t = report["targets"]
    held = t["gated_holds_bad_batches"]
    out = [common.Target("gated: flipped, broken and unit-change batches held by their own gate", held["held_by_own_gate"],
                         "", "bad batches in the stream", len(held["bad_steps"]), None, "", "all", held["met"],
                         note="; ".join(f"step {s} {o}" for s, o in held["outcomes"].items()))]
    for name, label in (("covariate_shift", "covariate shift"), ("concept_change", "concept change")):
        a = t.get(f"{name}_deploys_as_adapted")
        if a:
            out.append(common.Target(f"gated: the {label} (step {a['step']}): {a['outcome']}, drift {a['case']}; its drift share",
                                     a["share"], "", "the maximum", a["threshold"], None, "", "deployed as adapted (or within)", a["met"],
                                     note=f"new rows {a['new_rows'] or '-'}; older rows {a['older_rows'] or '-'}"))
    if "within_0.01_of_oracle_from_step_3" in t:
        w = t["within_0.01_of_oracle_from_step_3"]
        out.append(common.Target("gated: largest AUC gap to the oracle from step 3", w["worst_gap"], "AUC",
                                 "(the oracle ingests only the good batches)", None, None, "", f"<= {TARGET_GAP}", w["met"],
                                 note=f"step {w['worst_step']}"))
    for name, label in (("covariate_shift", "covariate shift"), ("concept_change", "concept change")):
        b = t.get(f"beats_never_after_{name}")
        if b:
            out.append(common.Target(f"gated: mean AUC after the {label} (steps {b['steps'][0]}-{b['steps'][1]})", b["gated_mean_auc"],
                                     "AUC", "never retrained", b["never_mean_auc"], b["gated_mean_auc"] / b["never_mean_auc"],
                                     "ours / raw AUC", "> never's", b["met"], note=f"won {b['steps_won']} steps"))
    out.append(common.Target("whole replay", t["under_10_minutes"]["seconds"], "s", "", None, None, "",
                             f"< {TARGET_SECONDS} s", t["under_10_minutes"]["met"], note=f"{report['jobs']} policies at once"))
    return out


def readme_section(report: dict, targets: list) -> str:
    from bench import common

    return "\n\n".join([
        "### Latest run (`make bench`, written by `bench/replay.py`)", "{header}", common.targets_markdown(targets),
        f"AUC of each policy's live model on the next batch ({report['rows']:,} rows: {report['initial_rows']:,} initial, "
        f"{len(report['batch_rows'])} batches; {report['jobs']} policies at once):", markdown_table(report),
        "The gated policy's gates:", gated_table(report)])


if __name__ == "__main__":
    main()
