"""Calibration and the decision threshold on every benchmark table, as a retraining makes them.

    .venv/bin/python bench/calibration.py [--only NAME]

For each table of bench/families.py: the hash-chosen holdout (evaluation.held_out's rule,
CL_HOLDOUT_PERCENT of the rows), modelhub.training.select_and_fit on the other rows, then
modelhub.calibration.calibrate and modelhub.thresholds.choose (maximise F1, on the calibrated
out-of-fold predictions), as modelhub.retraining does. Reports the chosen family, the holdout's
Brier score before and after calibration, the method kept, the threshold, and F1 and accuracy on
the holdout at 0.5 and at the threshold. Target: calibration never raises the holdout Brier score
(it is kept only when it lowers it). Writes bench/results/calibration.json and its README section.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the benchmarks import the project and each other as bench.x

import argparse  # noqa: E402
import time  # noqa: E402

from bench import families  # noqa: E402  (sets up Django in its own throw-away CL_HOME)
from bench import common  # noqa: E402

from django.conf import settings  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from modelhub import calibration, evaluation, thresholds, training  # noqa: E402


def measure(name: str) -> dict:
    schema, X, y = families.load(name)
    held = evaluation.holdout_mask(X.assign(_y=y), "", list(X.columns) + ["_y"], settings.CL_HOLDOUT_PERCENT)
    with training.limited_threads():
        fit = training.select_and_fit(X[~held], y[~held], schema)
        raw = training.positive_proba(fit.pipeline, X[held])
        model, report = calibration.calibrate(fit.pipeline, oof_proba=fit.oof_proba, oof_y=fit.oof_y, holdout_y=y[held],
                                              holdout_proba=raw)
        served = training.positive_proba(model, X[held])
    oof = calibration.calibrated_proba(model, fit.oof_proba) if fit.oof_proba is not None else []
    chosen = thresholds.choose(fit.oof_y if fit.oof_proba is not None else [], oof, rule="max_f1")
    at = {cut: {"f1": skm.f1_score(y[held], served >= cut), "accuracy": skm.accuracy_score(y[held], served >= cut)}
          for cut in (0.5, chosen["value"])}
    return {"rows": int(len(y)), "holdout": int(held.sum()), "positive_rate": round(float(y.mean()), 4), "chosen": fit.name,
            "method": report["method"], "brier_before": report["brier_before"], "brier_after": report["brier_after"],
            "candidates": report["candidates"], "threshold": round(chosen["value"], 4),
            "f1_at_half": round(at[0.5]["f1"], 4), "f1_at_threshold": round(at[chosen["value"]]["f1"], 4),
            "accuracy_at_half": round(at[0.5]["accuracy"], 4), "accuracy_at_threshold": round(at[chosen["value"]]["accuracy"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=sorted(families.DATASETS))
    args = parser.parse_args()
    started, meter = time.perf_counter(), common.LoadMeter()
    tables = {}
    for name in [args.only] if args.only else families.DATASETS:
        with meter.phase(name):
            tables[name] = measure(name)
        t = tables[name]
        print(f"{name}: {t['chosen']}, Brier {t['brier_before']} -> {t['brier_after']} ({t['method']}), threshold {t['threshold']}")
    targets = [common.Target(f"{name}: holdout Brier after calibration", t["brier_after"], "", "before", t["brier_before"],
                             round(t["brier_after"] / t["brier_before"], 4), "after / before", "<= before",
                             t["brier_after"] <= t["brier_before"]) for name, t in tables.items()]
    lines = ["| table | rows | positives | chosen | Brier before | after | method | threshold (max F1) | F1 at 0.5 -> at threshold | accuracy at 0.5 -> at threshold |",
             "| --- | ---: | ---: | --- | ---: | ---: | --- | ---: | --- | --- |"]
    lines += [f"| {name} | {t['rows']:,} | {t['positive_rate']:.1%} | {t['chosen']} | {t['brier_before']:.4f} | {t['brier_after']:.4f} | "
              f"{t['method']} | {t['threshold']:.3f} | {t['f1_at_half']:.3f} -> {t['f1_at_threshold']:.3f} | "
              f"{t['accuracy_at_half']:.3f} -> {t['accuracy_at_threshold']:.3f} |" for name, t in tables.items()]
    markdown = "### Latest run (`bench/calibration.py`)\n\n{header}\n\n" + "\n".join(lines)
    common.write_result("calibration", started=started, meter=meter, targets=targets, details={"tables": tables},
                        markdown=markdown, quick=bool(args.only))


if __name__ == "__main__":
    main()
