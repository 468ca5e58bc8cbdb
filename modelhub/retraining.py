"""One retraining run: load, train, evaluate, drift, gates, then deploy or reject.

Nothing is merged into the master dataset until the deployment commits, so a run that
fails or is rejected leaves every batch whole: staged (failed) or held (rejected).
"""
import logging
import platform
import time
from contextlib import contextmanager

import numpy as np
import sklearn
from django.db import transaction

from audit.services import record
from clsite import home
from ingestion import master
from ingestion.models import DatasetSchema, DataBatch
from ingestion.services import hold_batches, staged_batches

from . import artifacts, calibration, drift, evaluation, jobs, mirrors, runs, services, thresholds, training
from .gates import decide_drift, evaluate_gates, judged_key
from .models import Deployment, ModelVersion, TrainingRun, ValidationPolicy

log = logging.getLogger("clsite.modelhub")


def retrain_now(*, user=None, trigger: str = TrainingRun.Trigger.CLI, force: bool = False) -> TrainingRun:
    """Retrain in this process (command line, schedule, set-up), asking as every door does.

    When a run is already queued, this process runs it; when one is already running
    elsewhere, that run is returned as it is, still running.
    """
    request = runs.request_retraining(user=user, trigger=trigger, force=force, enqueue=False)
    if request.run.status == TrainingRun.Status.QUEUED:
        return execute(request.run)
    return request.run


def execute(run: TrainingRun) -> TrainingRun:
    """Carry out a queued run to its end; the run row says how it ended. A run that is not
    queued (any more) is returned unchanged: a task presented twice does nothing the second time."""
    home.ensure_layout()
    runs.sweep()
    try:
        if not runs.claim(run):
            run.refresh_from_db()
            return run
    except runs.RetrainingBusy as exc:
        runs.finish(run, TrainingRun.Status.FAILED, error=str(exc))
        return run
    stages = _Stages(run)
    # The heartbeat goes on while a failure is recorded: a run waiting for the database to come
    # back to say why it failed is not a dead one.
    with jobs.Heartbeat(run):
        try:
            with training.limited_threads():
                _run(run, stages)
        except Exception as exc:
            log.exception("run %s failed", run.pk)
            error = jobs.failure_reason(exc)
            stages.line("failed", 0.0, error, save=False)
            runs.finish(run, TrainingRun.Status.FAILED, error=error, retry_seconds=jobs.OUTAGE_RETRY_SECONDS)
        except BaseException as exc:
            # django-q2's timeout (a SystemExit raised in the task) or a shutdown: record it, then let it stop us.
            stages.line("stopped", 0.0, str(exc) or type(exc).__name__, save=False)
            runs.finish(run, TrainingRun.Status.FAILED,
                        error=f"stopped before it finished ({type(exc).__name__}: {exc or 'interrupted'}); "
                              "its batches are still staged for the next run")
            raise
    return run


def _run(run: TrainingRun, stages: "_Stages") -> None:
    schema = DatasetSchema.current()
    new = staged_batches()
    live = ModelVersion.active()
    if not new and not run.force and live is not None:
        stages.line("skip", 0.0, "no staged data")
        runs.finish(run, TrainingRun.Status.SKIPPED, reasons=["no new data was staged; nothing to retrain"])
        return
    policy = ValidationPolicy.get()
    run.live_version = live
    run.new_batches.set(new)
    with stages("merge") as note:
        frame, replaced = master.rows_after_merge(new, schema)
        merge = master.plan_merge(new, schema, frame=frame, replaced=replaced)
        held_out = evaluation.held_out(frame, schema)
        is_new = frame[master.BATCH_COLUMN].isin([b.pk for b in new]).to_numpy()
        X, y = training.features_frame(frame, schema), training.labels(frame, schema)
        note(f"{len(frame):,} rows ({sum(b.rows for b in new):,} new in {len(new)} batch(es)), {int(held_out.sum()):,} held out, "
             f"{merge.newly_replaced:,} replaced by newer rows with the same id")
    with stages("train") as note:
        fit = training.select_and_fit(X[~held_out], y[~held_out], schema)
        note(f"chose {fit.name}")
    with stages("calibrate") as note:
        model, calibration, threshold = _calibrate(fit, X[held_out], y[held_out], policy)
        note(f"{calibration['method']} ({calibration['reason']}); threshold {threshold['value']:.4f} ({threshold['rule']})")
    with stages("evaluate") as note:
        cand_proba = _proba_where(held_out | is_new, lambda rows: training.positive_proba(model, X[rows]))
        metrics = evaluation.score(y[held_out], cand_proba[held_out], threshold=threshold["value"])
        metrics.update(primary_metric=policy.primary_metric, threshold=threshold, calibration=calibration)
        metrics["feature_importance"] = evaluation.permutation_importance(model, X[held_out], y[held_out],
                                                                          proba_fn=training.positive_proba)
        compared = _compare_with_live(live, frame, X, y, held_out, is_new, cand_proba, threshold["value"])
        key = judged_key(policy.primary_metric)
        note(f"candidate {policy.get_primary_metric_display()} {_figure(metrics.get(key))}"
             + (f", live {_figure(compared['live'].get(key))} on {compared['live']['rows']:,} rows it never trained on" if compared else ""))
    with stages("drift") as note:
        drift_report = _drift(live, schema, frame, X, y, held_out, is_new, policy)
        compared_share = drift_report.get("share") if new and live is not None else None
        decision = decide_drift(policy, share=compared_share, drifted=drift_report.get("drifted", []),
                                evidence=_drift_evidence(compared, policy, compared_share))
        note(f"{len(drift_report.get('drifted', []))} of {len(schema.features)} features drifted ({decision['case']})")
    with stages("gates") as note:
        validation = evaluate_gates(policy, candidate=compared["candidate"] if compared else metrics,
                                    live=compared["live"] if compared else None,
                                    drift_share=drift_report.get("share") if new else None,
                                    label_check=compared["label_check"] if compared else None,
                                    drift=drift_report if new else None,
                                    comparison=compared["comparison"] if compared else None, drift_decision=decision)
        validation["drift_decision"] = decision
        if compared:
            validation.update(comparison=compared["comparison"], label_check=compared["label_check"], live_metrics=compared["live"],
                              compared_on=compared["rows_note"])
        note("passed" if validation["passed"] else "; ".join(validation["reasons"]))
    version = services.register_version(
        model=model, schema=schema, run=run, estimator=fit.name, training_rows=int((~held_out).sum()),
        holdout_rows=int(held_out.sum()), training_seconds=fit.seconds, candidates=fit.candidates, metrics=metrics,
        validation=validation, drift=drift_report, environment=environment(), profile=training.profile(X[~held_out], schema),
        trained_on=sorted({int(b) for b in frame[master.BATCH_COLUMN].unique()}),
    )
    run.candidate = version
    run.details = {"rows": len(frame), "replaced_ids": merge.newly_replaced, "new_batches": [b.pk for b in new]}
    run.save(update_fields=["candidate", "live_version", "details"])
    _decide(run, version, validation, new, merge, stages, live)


def _calibrate(fit: training.FitResult, X_holdout, y_holdout, policy) -> tuple[object, dict, dict]:
    """The model to keep (calibrated when that lowers the holdout's Brier score), its calibration
    report, and its decision threshold, chosen by the policy's rule on the out-of-fold predictions
    of the training rows (calibrated as the model will be): the holdout only ever judges."""
    raw = training.positive_proba(fit.pipeline, X_holdout)
    model, report = calibration.calibrate(fit.pipeline, oof_proba=fit.oof_proba, oof_y=fit.oof_y, holdout_y=y_holdout, holdout_proba=raw)
    oof = calibration.calibrated_proba(model, fit.oof_proba) if fit.oof_proba is not None else None
    threshold = thresholds.choose(fit.oof_y if oof is not None else [], oof if oof is not None else [], rule=policy.threshold_rule,
                                  false_positive_cost=policy.false_positive_cost, false_negative_cost=policy.false_negative_cost,
                                  fixed=policy.fixed_threshold)
    return model, report, threshold


def _compare_with_live(live: ModelVersion | None, frame, X, y, held_out, is_new, cand_proba, threshold: float) -> dict | None:
    """Both models scored on the same held-out rows the live model never trained on (each at its own
    decision threshold), and the live model's accuracy on the new batches against its accuracy on
    older held-out rows; `parts` keeps what the drift decision needs (_drift_evidence).

    An imported live model may have been fitted on any row it was imported with, so only the
    rows of later batches count as unseen for it; its own holdout scores are not evidence.
    """
    if live is None:
        return None
    model = artifacts.load(live.artifact, live.sha256)
    live_proba = _proba_where(held_out | is_new, lambda rows: training.version_proba(live, model, X[rows]))
    unseen = held_out & ~frame[master.BATCH_COLUMN].isin(live.trained_on).to_numpy() if live.imported else held_out
    if not unseen.any():
        return None  # an imported model and no new batch: no row it cannot have seen
    thresholds_ = {"candidate_threshold": threshold, "live_threshold": live.threshold}
    result = {
        "candidate": evaluation.score(y[unseen], cand_proba[unseen], threshold=threshold),
        "live": evaluation.score(y[unseen], live_proba[unseen], threshold=live.threshold),
        "comparison": evaluation.paired_bootstrap(y[unseen], cand_proba[unseen], live_proba[unseen], **thresholds_),
        "rows_note": f"{int(unseen.sum()):,} held-out rows" + (" of batches newer than the imported model" if live.imported else ""),
        "label_check": None,
        "parts": {"y": y, "candidate": cand_proba, "live": live_proba, "new": unseen & is_new, "older": unseen & ~is_new,
                  "thresholds": thresholds_},
    }
    if is_new.any():
        older = held_out & ~is_new & (unseen if live.imported else True)
        if older.any():
            reference = evaluation.score(y[older], live_proba[older], threshold=live.threshold)["accuracy"]
            source = "its accuracy on older held-out rows"
        else:
            # An imported model's older rows may all be in-sample: what the candidate reaches there is the yardstick.
            reference = evaluation.score(y[held_out & ~is_new], cand_proba[held_out & ~is_new], threshold=threshold)["accuracy"]
            source = "the candidate's accuracy on older held-out rows (the imported model may have trained on them)"
        new_accuracy = evaluation.score(y[is_new], live_proba[is_new], threshold=live.threshold)["accuracy"]
        result["label_check"] = {"rows": int(is_new.sum()), "new_accuracy": new_accuracy, "holdout_accuracy": reference,
                                 "drop": reference - new_accuracy, "reference": source}
    return result


def _drift_evidence(compared: dict | None, policy, share: float | None) -> dict | None:
    """The primary metric, candidate minus live with its paired interval, on the held-out new rows
    and on the older held-out rows: asked only when the drift share passes the maximum."""
    if compared is None or share is None or share <= policy.max_drift:
        return None
    parts, metric = compared["parts"], policy.primary_metric
    evidence = {}
    for name in ("new_rows", "older_rows"):
        rows = parts["new" if name == "new_rows" else "older"]
        change = evaluation.paired_bootstrap(parts["y"][rows], parts["candidate"][rows], parts["live"][rows],
                                             **parts["thresholds"]).get(judged_key(metric)) if rows.any() else None
        evidence[name] = {"metric": metric, "rows": int(rows.sum()), **change} if change else None
    return evidence


def _figure(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _proba_where(rows: np.ndarray, predict) -> np.ndarray:
    """predict(rows) on the rows marked (only those are ever compared), NaN elsewhere."""
    proba = np.full(len(rows), np.nan)
    proba[rows] = predict(rows)
    return proba


def _drift(live, schema, frame, X, y, held_out, is_new, policy) -> dict:
    if not is_new.any():
        return {"share": 0.0, "features": {}, "drifted": [], "note": "no new batches"}
    reference_ids = live.trained_on if live else []
    is_reference = frame[master.BATCH_COLUMN].isin(reference_ids).to_numpy() & ~held_out & ~is_new
    report = drift.dataset_drift(
        X[is_reference], X[is_new], schema, psi_threshold=policy.psi_threshold, p_threshold=policy.drift_p_value,
        reference_labels=y[is_reference], current_labels=y[is_new],
    )
    # Against the live model's own training range: it needs no reference rows, only the profile.
    report["out_of_range"] = drift.out_of_range(live.profile if live else None, X[is_new], schema)
    return report


def _decide(run, version, validation, new, merge, stages, live) -> None:
    if live is None or validation["passed"]:
        kind = Deployment.Kind.INITIAL if live is None else Deployment.Kind.DEPLOY
        with stages("deploy") as note:
            services.deploy_version(version=version, user=run.requested_by, kind=kind, run=run, merge=merge, replacing=live,
                                    reason="initial model" if live is None else "passed validation")
            note(f"v{version.version} is live ({kind})")
        runs.finish(run, TrainingRun.Status.DEPLOYED)
        return
    with transaction.atomic():
        version.status = ModelVersion.Status.REJECTED
        version.save(update_fields=["status"])
        hold_batches(new)
        record(actor=run.requested_by, action="model.rejected", target=str(version),
               details={"reasons": validation["reasons"], "held_batches": [b.pk for b in new]})
    mirrors.refresh_after_change(version, deployed=False)
    stages.line("reject", 0.0, f"v{version.version} rejected; {len(new)} batch(es) held")
    runs.finish(run, TrainingRun.Status.REJECTED, reasons=validation["reasons"])


def environment() -> dict:
    import joblib
    import pandas
    import pyarrow

    return {"python": platform.python_version(), "scikit-learn": sklearn.__version__, "pandas": pandas.__version__,
            "pyarrow": pyarrow.__version__, "joblib": joblib.__version__, "numpy": np.__version__}


class _Stages:
    """Times each stage and keeps it on the run and in logs/retraining.log."""

    def __init__(self, run: TrainingRun):
        self.run = run

    @contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        detail = []
        yield detail.append
        self.line(name, time.perf_counter() - started, "; ".join(detail))

    def line(self, name: str, seconds: float, detail: str, *, save: bool = True) -> None:
        """The stage on the run and in the log, the log first (it needs no database); save=False
        leaves the row to the next save of the run's stages (runs.finish)."""
        self.run.stages = [*self.run.stages, {"stage": name, "seconds": round(seconds, 3), "detail": detail}]
        runs.log_line(f"run={self.run.pk} stage={name} seconds={seconds:.3f} {detail}".rstrip())
        if save:
            TrainingRun.objects.filter(pk=self.run.pk).update(stages=self.run.stages)
