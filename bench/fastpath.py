"""Benchmark: one-row predictions through the Pipeline against the compiled fast path.

For each estimator family of training.CANDIDATES, fitted on the demo rows the hash does not hold
out, it measures per call (p50 and p99, native threads limited to one):
- the Pipeline: features_frame of a one-row DataFrame + positive_proba, as serving did before the fast path;
- the fitted estimator alone on the already encoded row (what "just skip the preprocessing"
  would cost: its validation, and for the boosted trees one OpenMP region per tree);
- the fast path: Predictor.proba_one on the raw dict;
and, once per family, the compile time, 10,000 rows through the Pipeline and through
proba_many, and the largest difference from the Pipeline over every holdout row.
Rows are dicts of text as a CSV upload gives them ("" read as None).

Writes bench/results/fastpath.json and its section of bench/README.md (--quick: fewer calls,
writes nothing). Needs no database.

    .venv/bin/python bench/fastpath.py [--quick]
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the benchmarks import the project and each other as bench.x

import argparse  # noqa: E402
import time  # noqa: E402

from bench import common  # noqa: E402

common.throwaway_home("fastpath")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from django.conf import settings  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from ingestion.schema import learn_schema  # noqa: E402
from modelhub import evaluation, fastpath, training  # noqa: E402
from modelhub.tests.helpers import schema_like  # noqa: E402
from testing import builders  # noqa: E402

CALLS = {"pipeline": 200, "fast": 5000}
BATCH_ROWS = 10_000
MAX_DIFFERENCE = 1e-9


def timings(fn, rows: list, calls: int) -> dict:
    """p50/p99 in milliseconds of fn(row), cycling through the rows after a short warm-up."""
    for row in rows[:20]:
        fn(row)
    seconds = np.empty(calls)
    clock = time.perf_counter
    for i in range(calls):
        row = rows[i % len(rows)]
        started = clock()
        fn(row)
        seconds[i] = clock() - started
    return {"p50_ms": float(np.percentile(seconds, 50) * 1e3), "p99_ms": float(np.percentile(seconds, 99) * 1e3), "calls": calls}


def once(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def load_demo():
    learned = learn_schema(builders.DEMO, target="churn", id_column="customer_id")
    schema = schema_like(learned.features, target=learned.target, positive_label=learned.positive_label)
    frame = pd.read_csv(builders.DEMO, dtype=str, keep_default_na=False).replace({"": None})
    held_out = evaluation.holdout_mask(frame, "customer_id", schema.feature_names + ["churn"], settings.CL_HOLDOUT_PERCENT)
    train = frame[~held_out]
    rows = [{name: (None if pd.isna(value) else value) for name, value in row.items()}
            for row in frame[held_out][schema.feature_names].to_dict("records")]
    return schema, training.features_frame(train, schema), training.labels(train, schema), rows


def measure_family(candidate, schema, X, y, rows: list[dict]) -> dict:
    pipeline = training.build_pipeline(schema, candidate.estimator, scale=candidate.scale).fit(X, y)

    def through_pipeline(some: list[dict]) -> np.ndarray:  # as serving did before the fast path
        return training.positive_proba(pipeline, training.features_frame(pd.DataFrame(some), schema))

    compile_seconds = once(lambda: fastpath.compile_model(pipeline, schema))
    predictor = fastpath.compile_model(pipeline, schema)
    if not predictor.compiled:
        raise SystemExit(f"{candidate.name}: the fast path is off: {predictor.fallback_reason}")
    expected = through_pipeline(rows)
    one = np.array([predictor.proba_one(row) for row in rows])
    estimator = pipeline[-1]
    encoded = [pipeline[:-1].transform(training.features_frame(pd.DataFrame([row]), schema)) for row in rows[:200]]
    batch = (rows * (BATCH_ROWS // len(rows) + 1))[:BATCH_ROWS]
    return {
        "family": candidate.name,
        "compiled": predictor.compiled,
        "compile_ms": compile_seconds * 1e3,
        "holdout_rows": len(rows),
        "max_abs_difference_one": float(np.max(np.abs(one - expected))),
        "max_abs_difference_many": float(np.max(np.abs(predictor.proba_many(rows) - expected))),
        "pipeline": timings(lambda row: through_pipeline([row]), rows, CALLS["pipeline"]),
        "estimator_on_encoded_row": timings(estimator.predict_proba, encoded, CALLS["pipeline"] * 3),
        "fast_path": timings(predictor.proba_one, rows, CALLS["fast"]),
        "batch_10000_rows_s": {
            "pipeline": once(lambda: through_pipeline(batch)),
            "proba_many": once(lambda: predictor.proba_many(batch)),
        },
    }


MARKDOWN = """### Fast path (`bench/fastpath.py`)

{header}

{table}

Each family of `training.CANDIDATES` fitted on the {training_rows:,} demo rows the hash does not
hold out; one row per call (dicts of text, as a CSV gives them) over the {holdout_rows:,} held-out
rows, in-process, one native thread: the Pipeline (`features_frame` of a one-row DataFrame +
`positive_proba`), the bare estimator on the already encoded row, and the compiled fast path
(`Predictor.proba_one`). The largest difference from the Pipeline is over every held-out row,
one at a time and all at once.

| family | Pipeline p50 / p99 | estimator only p50 | fast path p50 / p99 | compile | 10,000 rows: Pipeline / proba_many |
| --- | ---: | ---: | ---: | ---: | ---: |
{rows}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls; writes nothing")
    args = parser.parse_args()
    if args.quick:
        CALLS.update(pipeline=50, fast=1000)
    started = time.perf_counter()
    meter = common.LoadMeter()
    schema, X, y, rows = load_demo()
    families = []
    with threadpool_limits(limits=1):
        for candidate in training.CANDIDATES:
            with meter.phase(candidate.name):
                families.append(measure_family(candidate, schema, X, y, rows))
    targets = []
    for f in families:
        pipe, fast = f["pipeline"], f["fast_path"]
        difference = max(f["max_abs_difference_one"], f["max_abs_difference_many"])
        targets.append(common.Target(f"{f['family']}: fast path p50", fast["p50_ms"], "ms", "the Pipeline p50", pipe["p50_ms"],
                                     fast["p50_ms"] / pipe["p50_ms"], "ours / raw time", f"same probabilities (<= {MAX_DIFFERENCE:g})",
                                     difference <= MAX_DIFFERENCE, note=f"largest difference {difference:.1e}"))
    lines = []
    for f in families:
        pipe, est, fast, b = f["pipeline"], f["estimator_on_encoded_row"], f["fast_path"], f["batch_10000_rows_s"]
        lines.append(f"| {f['family']} | {pipe['p50_ms']:.2f} / {pipe['p99_ms']:.2f} ms | {est['p50_ms']:.3f} ms | "
                     f"{fast['p50_ms']:.3f} / {fast['p99_ms']:.3f} ms | {f['compile_ms']:.0f} ms | {b['pipeline']:.3f} / {b['proba_many']:.3f} s |")
    markdown = MARKDOWN.format(header="{header}", table=common.targets_markdown(targets), training_rows=len(X), holdout_rows=len(rows),
                               rows="\n".join(lines))
    common.write_result("fastpath", started=started, meter=meter, targets=targets, markdown=markdown, quick=args.quick,
                        details={"threads": 1, "calls": CALLS,
                                 "data": {"file": "demo/telco_churn.csv", "training_rows": len(X), "holdout_rows": len(rows)},
                                 "families": families})


if __name__ == "__main__":
    main()
