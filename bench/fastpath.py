"""Benchmark: one-row predictions through the Pipeline against the compiled fast path.

For each estimator family of training.CANDIDATES, fitted on the demo rows the hash does not hold
out, it measures per call (p50 and p99, native threads limited to one):
- the Pipeline: features_frame of a one-row DataFrame + positive_proba, as serving.predict does;
- the fitted estimator alone on the already encoded row (what "just skip the preprocessing"
  would cost: its validation, and for the boosted trees one OpenMP region per tree);
- the fast path: Predictor.proba_one on the raw dict;
and, once per family, the compile time, 10,000 rows through the Pipeline and through
proba_many, and the largest difference from the Pipeline over every holdout row.
Rows are dicts of text as a CSV upload gives them ("" read as None).

Prints a table and writes bench/results/fastpath.json. Needs no database.
"""
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.update(CL_HOME=tempfile.mkdtemp(prefix="cl-bench-fastpath-"), DJANGO_SECRET_KEY="bench-only",
                  DJANGO_SETTINGS_MODULE="clsite.settings")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy  # noqa: E402
import sklearn  # noqa: E402
import threadpoolctl  # noqa: E402
from django.conf import settings  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from ingestion.schema import learn_schema  # noqa: E402
from modelhub import evaluation, fastpath, training  # noqa: E402
from modelhub.tests.helpers import schema_like  # noqa: E402
from testing import builders  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "fastpath.json"
PIPELINE_CALLS = 200
FAST_CALLS = 5000
BATCH_ROWS = 10_000


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

    def through_pipeline(some: list[dict]) -> np.ndarray:  # as serving.predict does today
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
        "pipeline": timings(lambda row: through_pipeline([row]), rows, PIPELINE_CALLS),
        "estimator_on_encoded_row": timings(estimator.predict_proba, encoded, PIPELINE_CALLS * 3),
        "fast_path": timings(predictor.proba_one, rows, FAST_CALLS),
        "batch_10000_rows_s": {
            "pipeline": once(lambda: through_pipeline(batch)),
            "proba_many": once(lambda: predictor.proba_many(batch)),
        },
    }


def machine() -> dict:
    return {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def main() -> None:
    schema, X, y, rows = load_demo()
    families = []
    with threadpool_limits(limits=1):
        for candidate in training.CANDIDATES:
            families.append(measure_family(candidate, schema, X, y, rows))
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": {"numpy": np.__version__, "pandas": pd.__version__, "scikit-learn": sklearn.__version__,
                     "scipy": scipy.__version__, "threadpoolctl": threadpoolctl.__version__},
        "threads": 1,
        "data": {"file": "demo/telco_churn.csv", "training_rows": len(X), "holdout_rows": len(rows)},
        "families": families,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"one row, in-process, 1 thread; {len(X)} training rows, {len(rows)} holdout rows;"
          f" load average {report['machine']['load_average_1_5_15']}")
    print(f"{'family':<42}{'pipeline p50/p99':>20}{'estimator only':>20}{'fast path p50/p99':>20}{'speed-up':>10}{'max diff':>10}")
    for f in families:
        pipe, est, fast = f["pipeline"], f["estimator_on_encoded_row"], f["fast_path"]
        print(f"{f['family']:<42}{pipe['p50_ms']:>9.2f} /{pipe['p99_ms']:>6.2f} ms{est['p50_ms']:>9.2f} /{est['p99_ms']:>6.2f} ms"
              f"{fast['p50_ms']:>9.3f} /{fast['p99_ms']:>6.3f} ms{pipe['p50_ms'] / fast['p50_ms']:>9.0f}x"
              f"{max(f['max_abs_difference_one'], f['max_abs_difference_many']):>10.1e}")
    print(f"\n{'family':<42}{'compile':>10}{'10,000 rows: pipeline':>24}{'proba_many':>12}")
    for f in families:
        b = f["batch_10000_rows_s"]
        print(f"{f['family']:<42}{f['compile_ms']:>7.0f} ms{b['pipeline']:>22.3f} s{b['proba_many']:>10.3f} s")
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
