"""Model families: the family a retraining chooses against the best of several families, tuned.

    .venv/bin/python bench/families.py [--only TABLE] [--folds N] [--out FILE]

Seven public tables of different character (DATASETS: the two churn sets in demo/, and the five
in bench/data/, whose README.md says where each comes from). For each, by nested
cross-validation on all its rows (outer: stratified folds, seed 0; 5, or the table's own):
- "system": on each outer training part, modelhub.training.select_and_fit, exactly as a
  retraining does (its candidates cross-validated by AUC on at most training.CV_MAX_ROWS rows,
  the best refitted on all), scored on the outer test part; the candidates it picked are counted;
- each family in FAMILIES: its small grid tuned by 3-fold inner cross-validation (AUC) on the
  outer training part (on a sample of `tune_rows` of it where the table sets that), the best
  refitted on the whole outer training part, scored on the outer test part.
Every pipeline is training.build_pipeline (the system's imputers, one-hot encoder, scaler), on
one thread, as the worker trains. Prints a table per table and writes the JSON; the target is
the system within 0.005 AUC of the best tuned family on every table. `--only TABLE` runs one
table and replaces its entry in bench/results/families.json (the others keep their last run);
`--folds` or `--out` make a trial run that leaves bench/results and bench/README.md alone.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the benchmarks import the project and each other as bench.x

import argparse  # noqa: E402
import datetime  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from bench import common  # noqa: E402

HOME = common.throwaway_home("families")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.ensemble import ExtraTreesClassifier, HistGradientBoostingClassifier, RandomForestClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.model_selection import GridSearchCV, StratifiedKFold  # noqa: E402

from ingestion.schema import learn_schema  # noqa: E402
from modelhub import training  # noqa: E402

DATA = ROOT / "bench" / "data"
# The 100k+ table: 3 outer folds, and each family's grid tuned on 20,000 rows of the outer training
# part (the rows the system cross-validates on too) before its refit on all: on all 218,000 rows
# the forests' grids alone would take hours on one thread.
DATASETS = {
    "telco": {"data": ROOT / "demo" / "telco_churn.csv", "target": "churn", "id_column": "customer_id",
              "character": "the demo churn set: mostly categorical"},
    "mlc": {"data": ROOT / "demo" / "mlc_churn.csv", "target": "churn", "character": "churn, mostly numeric counters"},
    "two_class": {"data": DATA / "two_class_dat.csv", "target": "Class", "character": "tiny: 791 rows, 2 features"},
    "attrition": {"data": DATA / "attrition.csv", "target": "Attrition", "character": "many categoricals"},
    "credit": {"data": DATA / "credit_data.csv", "target": "Status", "character": "missing values"},
    "lending_club": {"data": DATA / "lending_club.csv", "target": "Class", "character": "heavily imbalanced"},
    "flights": {"data": DATA / "flights.csv.gz", "target": "late", "character": "100k+ rows", "folds": 3,
                "tune_rows": training.CV_MAX_ROWS},
}
RESULT = ROOT / "bench" / "results" / "families.json"
TARGET_GAP = 0.005

# Each family: (estimator, scale the numbers?, grid over the pipeline's "model__" parameters).
FAMILIES = {
    "logistic regression": (LogisticRegression(max_iter=3000), True, {"model__C": [0.01, 0.1, 1.0, 10.0]}),
    "gradient boosting": (HistGradientBoostingClassifier(random_state=0), False, [
        {"model__learning_rate": [0.1], "model__max_leaf_nodes": [7, 31], "model__max_iter": [100, 200]},
        {"model__learning_rate": [0.05], "model__max_leaf_nodes": [15], "model__max_iter": [300], "model__l2_regularization": [0.0, 1.0]},
    ]),
    "random forest": (RandomForestClassifier(n_estimators=200, max_features="sqrt", random_state=0, n_jobs=1), False,
                      {"model__min_samples_leaf": [1, 5]}),
    "extra trees": (ExtraTreesClassifier(n_estimators=200, max_features=0.5, random_state=0, n_jobs=1), False,
                    {"model__min_samples_leaf": [2, 10]}),
}

def load(name: str):
    spec = DATASETS[name]
    path = spec["data"]
    if path.suffix == ".gz":  # the schema is learned from a plain CSV
        path = HOME / path.stem
        with gzip.open(spec["data"]) as packed, path.open("wb") as plain:
            shutil.copyfileobj(packed, plain)
    learned = learn_schema(path, target=spec["target"], id_column=spec.get("id_column", ""))
    schema = SimpleNamespace(
        features=learned.features, target=learned.target, positive_label=learned.positive_label, id_column=learned.id_column,
        numeric_features=[f["name"] for f in learned.features if f["kind"] == "numeric"],
        categorical_features=[f["name"] for f in learned.features if f["kind"] == "categorical"],
    )
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return schema, training.features_frame(frame, schema), training.labels(frame, schema)


def tuned(estimator, scale: bool, grid, schema, X: pd.DataFrame, y: np.ndarray, tune_rows: int | None):
    """The family's grid searched by 3-fold CV (on `tune_rows` of the rows, drawn as the system
    draws its cross-validation rows, when there are more), the best refitted on all the rows."""
    tune_X, tune_y = X, y
    if tune_rows and len(y) > tune_rows:
        chosen = np.random.default_rng(0).choice(len(y), tune_rows, replace=False)
        tune_X, tune_y = X.iloc[chosen], y[chosen]
    search = GridSearchCV(training.build_pipeline(schema, estimator, scale=scale), grid, scoring="roc_auc",
                          cv=StratifiedKFold(n_splits=3, shuffle=True, random_state=0), n_jobs=1, refit=False)
    search.fit(tune_X, tune_y)
    return clone(search.estimator).set_params(**search.best_params_).fit(X, y), search.best_params_


def evaluate(name: str, folds: int) -> dict:
    schema, X, y = load(name)
    tune_rows = DATASETS[name].get("tune_rows")
    outer = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    results = {key: {"aucs": [], "seconds": 0.0, "picked": {}} for key in ["system", *FAMILIES]}
    with training.limited_threads():
        for train, test in outer.split(X, y):
            X_train, y_train, X_test, y_test = X.iloc[train], y[train], X.iloc[test], y[test]
            tick = time.perf_counter()
            fit = training.select_and_fit(X_train, y_train, schema)
            results["system"]["seconds"] += time.perf_counter() - tick
            results["system"]["aucs"].append(roc_auc_score(y_test, training.positive_proba(fit.pipeline, X_test)))
            results["system"]["picked"][fit.name] = results["system"]["picked"].get(fit.name, 0) + 1
            for family, (estimator, scale, grid) in FAMILIES.items():
                tick = time.perf_counter()
                model, params = tuned(estimator, scale, grid, schema, X_train, y_train, tune_rows)
                results[family]["seconds"] += time.perf_counter() - tick
                results[family]["aucs"].append(roc_auc_score(y_test, model.predict_proba(X_test)[:, 1]))
                best = ", ".join(f"{k.removeprefix('model__')}={v}" for k, v in params.items())
                results[family]["picked"][best] = results[family]["picked"].get(best, 0) + 1
    summary = {}
    for key, r in results.items():
        summary[key] = {"cv_auc": float(np.mean(r["aucs"])), "cv_auc_std": float(np.std(r["aucs"])), "fold_aucs": r["aucs"],
                        "seconds": round(r["seconds"], 1), "picked": r["picked"]}
    best = max(FAMILIES, key=lambda f: summary[f]["cv_auc"])
    return {"character": DATASETS[name]["character"], "rows": int(len(y)), "features": len(schema.features),
            "categorical": len(schema.categorical_features), "positive_rate": float(y.mean()), "folds": folds,
            "tune_rows": tune_rows, "results": summary, "best_family": best,
            "system_gap": summary[best]["cv_auc"] - summary["system"]["cv_auc"],
            "target_met": summary[best]["cv_auc"] - summary["system"]["cv_auc"] <= TARGET_GAP}


def table(name: str, report: dict) -> str:
    tuning = f", each grid tuned on {report['tune_rows']:,} rows" if report.get("tune_rows") else ""
    lines = [f"{name} ({report['character']}): {report['rows']:,} rows, {report['features']} features ({report['categorical']} "
             f"categorical), {report['positive_rate']:.1%} positive, {report['folds']}-fold nested CV{tuning}; "
             f"run {report['date']}, {report['seconds']:.0f} s, foreign load {report['foreign_cores']:.2f} cores",
             "| model | CV AUC | ± | seconds (all folds, incl. tuning) | chosen in the folds |", "| --- | ---: | ---: | ---: | --- |"]
    for key, r in report["results"].items():
        star = " (best family)" if key == report["best_family"] else ""
        lines.append(f"| {key}{star} | {r['cv_auc']:.4f} | {r['cv_auc_std']:.4f} | {r['seconds']:.0f} | {picked(r)} |")
    lines.append(f"best family minus system: {report['system_gap']:+.4f} AUC (target <= {TARGET_GAP}: "
                 f"{'met' if report['target_met'] else 'NOT met'})")
    return "\n".join(lines)


def picked(result: dict) -> str:
    return "; ".join(f"{k} ×{v}" for k, v in sorted(result["picked"].items(), key=lambda kv: -kv[1]))


def summary(reports: dict) -> str:
    lines = ["| table | rows | character | system | best tuned family | its AUC | gap | the system picked |",
             "| --- | ---: | --- | ---: | --- | ---: | ---: | --- |"]
    for name, r in reports.items():
        best = r["best_family"]
        lines.append(f"| {name} | {r['rows']:,} | {r['character']} | {r['results']['system']['cv_auc']:.4f} | {best} | "
                     f"{r['results'][best]['cv_auc']:.4f} | {r['system_gap']:+.4f} | {picked(r['results']['system'])} |")
    return "\n".join(lines)


MARKDOWN = """### Latest run (`make bench-families`, written by `bench/families.py`)

{header}

{table}

{summary}

Each table can be run on its own (`--only TABLE`, one at a time on a shared machine); its date,
seconds and the foreign load while it ran are beside its table below. Gap: best tuned family
minus system (nested CV AUC).

{details}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folds", type=int, default=None, help="outer folds for every table (a trial: writes only --out)")
    parser.add_argument("--only", choices=list(DATASETS), help="run this table and replace its entry in the results")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here instead of bench/results (and leave bench/README.md)")
    args = parser.parse_args()
    started = time.perf_counter()
    meter = common.LoadMeter()
    reports = {}
    for name in [args.only] if args.only else DATASETS:
        tick = time.perf_counter()
        with meter.phase(name):
            reports[name] = evaluate(name, args.folds or DATASETS[name].get("folds", 5))
        reports[name].update(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                             seconds=round(time.perf_counter() - tick, 1), foreign_cores=meter.phases[name]["foreign_cores"])
        print(table(name, reports[name]), "\n", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(reports, indent=1))
    standard = args.out is None and args.folds is None
    if standard and args.only and RESULT.exists():
        previous = {name: r for name, r in json.loads(RESULT.read_text()).get("datasets", {}).items() if "date" in r}
        reports = {name: reports.get(name) or previous[name] for name in DATASETS if name in reports or name in previous}
    targets = []
    for name, r in reports.items():
        best, system = r["results"][r["best_family"]]["cv_auc"], r["results"]["system"]["cv_auc"]
        targets.append(common.Target(f"{name}: the system's choice, nested CV AUC", system, "AUC", f"best tuned family ({r['best_family']})",
                                     best, system / best, "ours / raw AUC", f"within {TARGET_GAP} AUC", r["target_met"],
                                     note=f"gap {best - system:+.4f}"))
    markdown = MARKDOWN.format(header="{header}", table=common.targets_markdown(targets), summary=summary(reports),
                               details="\n\n".join(table(name, r).replace("\n| model |", "\n\n| model |")
                                                   .replace("\nbest family minus", "\n\nbest family minus")
                                                   for name, r in reports.items()))
    common.write_result("families", started=started, meter=meter, targets=targets, details={"datasets": reports},
                        markdown=markdown, quick=not standard)


if __name__ == "__main__":
    main()
