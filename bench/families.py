"""Model families: the family a retraining chooses against the best of several families, tuned.

    .venv/bin/python bench/families.py [--folds 5] [--only telco|mlc] [--out bench/results/families.json]

For each dataset (demo/telco_churn.csv, and demo/mlc_churn.csv: see demo/mlc_churn.README.md),
by nested cross-validation on all its rows (outer: stratified folds, seed 0):
- "system": on each outer training part, modelhub.training.select_and_fit, exactly as a
  retraining does (its candidates cross-validated by AUC, the best refitted), scored on the
  outer test part; the families it picked are counted;
- each family in FAMILIES: its small grid tuned by 3-fold inner cross-validation (AUC) on the
  outer training part, refitted, scored on the outer test part.
Every pipeline is training.build_pipeline (the system's imputers, one-hot encoder, scaler), on
one thread, as the worker trains. Prints a table and writes the JSON; the target is the system
within 0.005 AUC of the best tuned family.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the benchmarks import the project and each other as bench.x

import argparse  # noqa: E402
import time  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from bench import common  # noqa: E402

common.throwaway_home("families")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.ensemble import ExtraTreesClassifier, HistGradientBoostingClassifier, RandomForestClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.model_selection import GridSearchCV, StratifiedKFold  # noqa: E402

from ingestion.schema import learn_schema  # noqa: E402
from modelhub import training  # noqa: E402

DATASETS = {
    "telco": {"data": ROOT / "demo" / "telco_churn.csv", "target": "churn", "id_column": "customer_id"},
    "mlc": {"data": ROOT / "demo" / "mlc_churn.csv", "target": "churn", "id_column": ""},
}
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
    learned = learn_schema(spec["data"], target=spec["target"], id_column=spec["id_column"])
    schema = SimpleNamespace(
        features=learned.features, target=learned.target, positive_label=learned.positive_label, id_column=learned.id_column,
        numeric_features=[f["name"] for f in learned.features if f["kind"] == "numeric"],
        categorical_features=[f["name"] for f in learned.features if f["kind"] == "categorical"],
    )
    frame = pd.read_csv(spec["data"], dtype=str, keep_default_na=False)
    return schema, training.features_frame(frame, schema), training.labels(frame, schema)


def evaluate(name: str, folds: int) -> dict:
    schema, X, y = load(name)
    outer = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    variants = {"system": training.CANDIDATES}
    results = {key: {"aucs": [], "seconds": 0.0, "picked": {}} for key in [*variants, *FAMILIES]}
    with training.limited_threads():
        for train, test in outer.split(X, y):
            X_train, y_train, X_test, y_test = X.iloc[train], y[train], X.iloc[test], y[test]
            for key, candidates in variants.items():
                tick = time.perf_counter()
                fit = training.select_and_fit(X_train, y_train, schema, candidates=candidates)
                results[key]["seconds"] += time.perf_counter() - tick
                results[key]["aucs"].append(roc_auc_score(y_test, training.positive_proba(fit.pipeline, X_test)))
                results[key]["picked"][fit.name] = results[key]["picked"].get(fit.name, 0) + 1
            for family, (estimator, scale, grid) in FAMILIES.items():
                tick = time.perf_counter()
                search = GridSearchCV(training.build_pipeline(schema, estimator, scale=scale), grid, scoring="roc_auc",
                                      cv=StratifiedKFold(n_splits=3, shuffle=True, random_state=0), n_jobs=1)
                search.fit(X_train, y_train)
                results[family]["seconds"] += time.perf_counter() - tick
                results[family]["aucs"].append(roc_auc_score(y_test, search.predict_proba(X_test)[:, 1]))
                best = ", ".join(f"{k.removeprefix('model__')}={v}" for k, v in search.best_params_.items())
                results[family]["picked"][best] = results[family]["picked"].get(best, 0) + 1
    summary = {}
    for key, r in results.items():
        summary[key] = {"cv_auc": float(np.mean(r["aucs"])), "cv_auc_std": float(np.std(r["aucs"])), "fold_aucs": r["aucs"],
                        "seconds": round(r["seconds"], 1), "picked": r["picked"]}
    best = max(FAMILIES, key=lambda f: summary[f]["cv_auc"])
    return {"rows": int(len(y)), "features": len(schema.features), "positive_rate": float(y.mean()), "folds": folds,
            "results": summary, "best_family": best,
            "system_gap": summary[best]["cv_auc"] - summary["system"]["cv_auc"],
            "target_met": summary[best]["cv_auc"] - summary["system"]["cv_auc"] <= TARGET_GAP}


def table(name: str, report: dict) -> str:
    lines = [f"{name}: {report['rows']:,} rows, {report['features']} features, {report['positive_rate']:.1%} positive, "
             f"{report['folds']}-fold nested CV",
             "| model | CV AUC | ± | seconds (all folds, incl. tuning) | chosen in the folds |", "| --- | ---: | ---: | ---: | --- |"]
    for key, r in report["results"].items():
        picked = "; ".join(f"{k} ×{v}" for k, v in sorted(r["picked"].items(), key=lambda kv: -kv[1]))
        star = " (best family)" if key == report["best_family"] else ""
        lines.append(f"| {key}{star} | {r['cv_auc']:.4f} | {r['cv_auc_std']:.4f} | {r['seconds']:.0f} | {picked} |")
    lines.append(f"best family minus system: {report['system_gap']:+.4f} AUC (target <= {TARGET_GAP}: "
                 f"{'met' if report['target_met'] else 'NOT met'})")
    return "\n".join(lines)


MARKDOWN = """### Latest run (`make bench-families`, written by `bench/families.py`)

{header}

{table}

{details}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only", choices=sorted(DATASETS))
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here instead of bench/results (and leave bench/README.md)")
    args = parser.parse_args()
    started = time.perf_counter()
    meter = common.LoadMeter()
    reports = {}
    for name in [args.only] if args.only else DATASETS:
        with meter.phase(name):
            reports[name] = evaluate(name, args.folds)
        reports[name]["seconds"] = round(time.perf_counter() - started, 1)
        print(table(name, reports[name]), f"({reports[name]['seconds']:.0f} s)\n", flush=True)
    targets = []
    for name, r in reports.items():
        best, system = r["results"][r["best_family"]]["cv_auc"], r["results"]["system"]["cv_auc"]
        targets.append(common.Target(f"{name}: the system's choice, nested CV AUC", system, "AUC", f"best tuned family ({r['best_family']})",
                                     best, system / best, "ours / raw AUC", f"within {TARGET_GAP} AUC", r["target_met"],
                                     note=f"gap {best - system:+.4f}"))
    markdown = MARKDOWN.format(header="{header}", table=common.targets_markdown(targets),
                               details="\n\n".join(table(name, r).replace("\n| model |", "\n\n| model |")
                                                   .replace("\nbest family minus", "\n\nbest family minus")
                                                   for name, r in reports.items()))
    standard = args.out is None and not args.only and args.folds == 5
    if not standard and args.out:
        import json

        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(reports, indent=1))
    common.write_result("families", started=started, meter=meter, targets=targets, details={"datasets": reports},
                        markdown=markdown, quick=not standard)


if __name__ == "__main__":
    main()
