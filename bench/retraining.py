"""Benchmark: one whole retraining beside a plain scikit-learn script doing the same learning,
in the same process, on the same rows.

    .venv/bin/python bench/retraining.py [--quick] [--keep]

A throw-away CL_HOME is initialised on demo rows 0-3,999 (model v1.0) and demo rows 4,000-7,042
are ingested (staged): all 7,043 rows. Each round copies that CL_HOME and runs, in a child
process of its own (Django and the libraries imported, nothing else warmed), in alternating order:
- ours: modelhub.retraining.retrain_now(): merge, hash holdout, the candidates' cross-validation,
  the final fit, both models scored on the same held-out rows (with the paired bootstrap,
  permutation importance and the label check), drift, gates, register and deploy;
- raw: a plain scikit-learn script on the same 7,043 rows and the same held-out rows: for each
  of training.CANDIDATES, cross_val_score of its whole Pipeline (training.build_pipeline) with
  StratifiedKFold(n_splits=settings.CL_CV_FOLDS, shuffle=True, random_state=0) and ROC AUC; the
  final fit of the best; the candidate and the previous model (v1.0, loaded with joblib)
  scored on the held-out rows with sklearn.metrics (accuracy, precision, recall, F1, ROC AUC,
  Brier). Reading the rows (pandas.read_csv) is timed apart and not counted.
Both on one native thread (as the worker trains: training.TRAINING_THREADS). Target: ours within
2x of raw (median of the rounds). Writes bench/results/retraining.json and its section of
bench/README.md, with the retraining's own stage times.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the benchmarks import the project and each other as bench.x

from bench import common  # noqa: E402

RATIO_TARGET = 2.0
INITIAL, ALL = 4000, 7043


def raw_script(schema, live_version) -> dict:
    """The plain scikit-learn work; returns its seconds (reading the CSV apart) and what it found."""
    import joblib
    import numpy as np
    import pandas as pd
    from django.conf import settings
    from sklearn import metrics
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    from clsite import home
    from modelhub import evaluation, training

    read_started = time.perf_counter()
    frame = pd.read_csv(common.DEMO, dtype=str, keep_default_na=False).iloc[:ALL]
    X, y = training.features_frame(frame, schema), training.labels(frame, schema)
    held = evaluation.holdout_mask(frame, schema.id_column, schema.feature_names + [schema.target], settings.CL_HOLDOUT_PERCENT)
    read_seconds = time.perf_counter() - read_started

    started = time.perf_counter()
    X_train, y_train, X_test, y_test = X[~held], y[~held], X[held], y[held]
    folds = StratifiedKFold(n_splits=settings.CL_CV_FOLDS, shuffle=True, random_state=0)
    aucs = {}
    for candidate in training.CANDIDATES:
        pipeline = training.build_pipeline(schema, candidate.estimator, scale=candidate.scale)
        aucs[candidate.name] = float(np.mean(cross_val_score(pipeline, X_train, y_train, cv=folds, scoring="roc_auc")))
    cv_done = time.perf_counter()
    best = max(training.CANDIDATES, key=lambda c: aucs[c.name])
    model = training.build_pipeline(schema, best.estimator, scale=best.scale).fit(X_train, y_train)
    fit_done = time.perf_counter()
    previous = joblib.load(home.path("models/versions") / live_version.artifact)
    scores = {}
    for name, fitted in (("candidate", model), ("previous", previous)):
        proba = fitted.predict_proba(X_test)[:, 1]
        predicted = (proba >= 0.5).astype(int)
        scores[name] = {"accuracy": metrics.accuracy_score(y_test, predicted), "precision": metrics.precision_score(y_test, predicted),
                        "recall": metrics.recall_score(y_test, predicted), "f1": metrics.f1_score(y_test, predicted),
                        "auc": metrics.roc_auc_score(y_test, proba), "brier": metrics.brier_score_loss(y_test, proba)}
    done = time.perf_counter()
    return {"seconds": done - started, "read_seconds": read_seconds, "cv_seconds": cv_done - started,
            "fit_seconds": fit_done - cv_done, "score_seconds": done - fit_done, "chosen": best.name, "cv_auc": aucs,
            "training_rows": int((~held).sum()), "held_out_rows": int(held.sum()), "scores": scores}


def ours() -> dict:
    from modelhub.retraining import retrain_now

    started = time.perf_counter()
    run = retrain_now()
    seconds = time.perf_counter() - started
    run.refresh_from_db()
    candidate = run.candidate
    return {"seconds": seconds, "status": run.status, "chosen": candidate.estimator if candidate else None,
            "training_rows": candidate.training_rows if candidate else None, "held_out_rows": candidate.holdout_rows if candidate else None,
            "stages": run.stages, "candidates": candidate.candidates if candidate else None}


def child(args) -> None:
    """--child-round: in a copy of the prepared CL_HOME, time ours and raw in the given order."""
    common.setup_django(migrate=False)
    # Everything both sides use is imported first: threadpoolctl caps only the native libraries
    # already loaded, and OpenMP (libgomp, for the boosted trees) comes with sklearn.ensemble.
    import sklearn.metrics  # noqa: F401
    import sklearn.model_selection  # noqa: F401
    from threadpoolctl import threadpool_info, threadpool_limits

    from ingestion.models import DatasetSchema
    from modelhub import evaluation, retraining, training  # noqa: F401
    from modelhub.models import ModelVersion

    schema, live = DatasetSchema.current(), ModelVersion.active()
    result = {}
    for which in args.order.split(","):
        if which == "ours":
            result["ours"] = ours()  # limits its own threads, as the worker does
        else:
            with threadpool_limits(limits=1):
                result["threads"] = {f"{i['internal_api']} {Path(i['filepath']).name}": i["num_threads"] for i in threadpool_info()}
                result["raw"] = raw_script(schema, live)
    Path(args.result).write_text(json.dumps(result, default=str))


def prepare(base: Path) -> None:
    from django.db import connections

    from ingestion.services import ingest_path

    demo, _ = common.initialise_demo(slice(0, INITIAL))
    batch = ingest_path(demo.write("new-rows.csv", slice(INITIAL, ALL)))
    assert batch.status == batch.Status.STAGED, batch.report.get("summary")
    connections.close_all()


def run_round(base: Path, work: Path, i: int) -> dict:
    home = work / f"round-{i}"
    shutil.copytree(base, home, ignore=shutil.ignore_patterns("cache", "bench-rounds"))
    result = work / f"round-{i}.json"
    order = "ours,raw" if i % 2 == 0 else "raw,ours"
    env = dict(os.environ, CL_HOME=str(home))
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child-round", "--order", order, "--result", str(result)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"round {i} failed:\n{done.stderr[-4000:]}")
    found = json.loads(result.read_text())
    shutil.rmtree(home, ignore_errors=True)
    return found


MARKDOWN = """### Retraining (`bench/retraining.py`)

{header}

{table}

All {rows:,} demo rows: v1.0 trained on the first {initial:,}, the other {new:,} ingested, then
`retrain_now()` ({status}, chose {chosen}; {train_rows:,} training and {held:,} held-out rows).
Raw is a plain scikit-learn script on the same rows and held-out rows: `cross_val_score` of
each of the {candidates} candidates' whole Pipeline ({folds} stratified folds, seed 0), the
final fit of the best ({raw_chosen}), the candidate and v1.0 scored with `sklearn.metrics`
(reading the CSV, {read:.2f} s, not counted). Both on one native thread, each round in a fresh
child process on a copy of the prepared `CL_HOME`, the order alternating; {rounds} rounds,
median. Raw's parts: cross-validation {raw_cv:.2f} s, final fit {raw_fit:.2f} s, scoring {raw_score:.2f} s.
The retraining's stages (median seconds): {stages}."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds; writes nothing")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--child-round", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--order", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_round:
        child(args)
        return
    started = time.perf_counter()
    base = common.throwaway_home("retraining", keep=args.keep)
    rounds = args.rounds or (2 if args.quick else 3)
    common.setup_django()
    from django.conf import settings

    from modelhub import training

    meter = common.LoadMeter()
    with meter.phase("set-up"):
        prepare(base)
    work = base / "bench-rounds"
    work.mkdir()
    results = []
    with meter.phase("retrain_now vs scikit-learn"):
        for i in range(rounds):
            print(f"round {i + 1} of {rounds} ...", flush=True)
            results.append(run_round(base, work, i))
            r = results[-1]
            print(f"  retrain_now {r['ours']['seconds']:.2f} s ({r['ours']['status']}), scikit-learn {r['raw']['seconds']:.2f} s", flush=True)
    ours_s = common.median(r["ours"]["seconds"] for r in results)
    raw_s = common.median(r["raw"]["seconds"] for r in results)
    statuses = {r["ours"]["status"] for r in results}
    target = common.Target(f"retrain_now, {ALL:,} rows ({', '.join(sorted(statuses))})", ours_s, "s",
                           "scikit-learn: same CV, final fit, both models scored", raw_s, ours_s / raw_s, "ours / raw time",
                           f"<= {RATIO_TARGET:g}x raw", ours_s / raw_s <= RATIO_TARGET, rounds=[r["ours"]["seconds"] for r in results])
    stage_names = [s["stage"] for s in results[0]["ours"]["stages"]]
    stages = {name: common.median(next((s["seconds"] for s in r["ours"]["stages"] if s["stage"] == name), 0.0) for r in results)
              for name in stage_names}
    first_ours, first_raw = results[0]["ours"], results[0]["raw"]
    markdown = MARKDOWN.format(
        header="{header}", table=common.targets_markdown([target]), rows=ALL, initial=INITIAL, new=ALL - INITIAL,
        status=", ".join(sorted(statuses)), chosen=first_ours["chosen"], train_rows=first_ours["training_rows"] or 0,
        held=first_ours["held_out_rows"] or 0, candidates=len(training.CANDIDATES), folds=settings.CL_CV_FOLDS,
        raw_chosen=first_raw["chosen"], read=common.median(r["raw"]["read_seconds"] for r in results), rounds=rounds,
        raw_cv=common.median(r["raw"]["cv_seconds"] for r in results), raw_fit=common.median(r["raw"]["fit_seconds"] for r in results),
        raw_score=common.median(r["raw"]["score_seconds"] for r in results),
        stages=", ".join(f"{name} {seconds:.2f}" for name, seconds in stages.items()))
    common.write_result("retraining", started=started, meter=meter, targets=[target],
                        details={"rounds": results, "stages_median_s": stages, "threads": 1}, markdown=markdown, quick=args.quick)


if __name__ == "__main__":
    main()
