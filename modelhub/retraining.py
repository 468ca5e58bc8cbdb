"""One retraining run: load, train, evaluate, drift, gates, then deploy or reject.

Nothing is merged into the master dataset until the deployment commits, so a run that
fails or is rejected leaves every batch whole: staged (failed) or held (rejected).
"""
import logging
import platform
import time
from contextlib import contextmanager
from datetime import timedelta

import numpy as np
import sklearn
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.services import record
from clsite import home
from ingestion import master
from ingestion.models import DatasetSchema, DataBatch
from ingestion.services import hold_batches, staged_batches

from . import artifacts, drift, evaluation, mirrors, services, training
from .models import Deployment, ModelVersion, TrainingRun, ValidationPolicy
from .validation import evaluate_gates

log = logging.getLogger("clsite.modelhub")


class RetrainingBusy(Exception):
    pass


def request_run(*, user=None, trigger: str, force: bool = False, override_reason: str = "") -> TrainingRun:
    return TrainingRun.objects.create(
        trigger=trigger, requested_by=user if getattr(user, "pk", None) else None, force=force, override_reason=override_reason,
    )


def retrain_now(*, user=None, trigger: str = TrainingRun.Trigger.CLI, force: bool = False, override_reason: str = "") -> TrainingRun:
    return execute(request_run(user=user, trigger=trigger, force=force, override_reason=override_reason))


def fail_stale_runs() -> int:
    """Mark failed the runs whose worker died: running, with no heartbeat for CL_STALE_RUN_MINUTES."""
    cutoff = timezone.now() - timedelta(minutes=settings.CL_STALE_RUN_MINUTES)
    stale = TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING, heartbeat_at__lt=cutoff)
    return stale.update(status=TrainingRun.Status.FAILED, finished_at=timezone.now(),
                        error="the worker stopped without finishing this run (no heartbeat); its batches are still staged")


def _claim(run: TrainingRun) -> None:
    fail_stale_runs()
    now = timezone.now()
    try:
        with transaction.atomic():
            updated = TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.QUEUED).update(
                status=TrainingRun.Status.RUNNING, started_at=now, heartbeat_at=now
            )
    except IntegrityError:
        other = TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING).exclude(pk=run.pk).first()
        raise RetrainingBusy(f"another retraining (run {other.pk if other else '?'}) is running; try again when it ends") from None
    if not updated:
        raise RetrainingBusy(f"run {run.pk} is not queued")
    run.refresh_from_db()


def execute(run: TrainingRun) -> TrainingRun:
    """Carry out a queued run to its end; the run row says how it ended."""
    home.ensure_layout()
    try:
        _claim(run)
    except RetrainingBusy as exc:
        _finish(run, TrainingRun.Status.FAILED, error=str(exc))
        return run
    stages = _Stages(run)
    try:
        with training.limited_threads():
            _run(run, stages)
    except Exception as exc:
        log.exception("run %s failed", run.pk)
        stages.line("failed", 0.0, str(exc))
        # A candidate saved before the failure never passed validation; it must not look pending.
        ModelVersion.objects.filter(run=run, status=ModelVersion.Status.CANDIDATE).update(status=ModelVersion.Status.REJECTED)
        _finish(run, TrainingRun.Status.FAILED, error=f"{type(exc).__name__}: {exc}")
    return run


def _run(run: TrainingRun, stages: "_Stages") -> None:
    schema = DatasetSchema.current()
    new = staged_batches()
    live = ModelVersion.active()
    if not new and not run.force and live is not None:
        stages.line("skip", 0.0, "no staged data")
        _finish(run, TrainingRun.Status.SKIPPED, reasons=["no new data was staged; nothing to retrain"])
        return
    policy = ValidationPolicy.get()
    run.live_version = live
    with stages("merge") as note:
        frame, replaced = _load(schema, new)
        held_out = evaluation.holdout_mask(frame, schema.id_column, schema.feature_names + [schema.target], settings.CL_HOLDOUT_PERCENT)
        X, y = training.features_frame(frame, schema), training.labels(frame, schema)
        note(f"{len(frame):,} rows ({sum(b.rows for b in new):,} new in {len(new)} batch(es)), {int(held_out.sum()):,} held out, {replaced} replaced by newer rows with the same id")
    with stages("train") as note:
        fit = training.select_and_fit(X[~held_out], y[~held_out], schema)
        note(f"chose {fit.name}")
    with stages("evaluate") as note:
        X_hold, y_hold = X[held_out], y[held_out]
        cand_proba = training.positive_proba(fit.pipeline, X_hold)
        metrics = evaluation.score(y_hold, cand_proba)
        metrics["feature_importance"] = evaluation.permutation_importance(fit.pipeline, X_hold, y_hold, proba_fn=training.positive_proba)
        comparison, label_check, live_metrics = _compare_with_live(live, schema, X_hold, y_hold, cand_proba, frame, X, y, new)
        note(f"candidate accuracy {metrics['accuracy']:.4f}" + (f", live {live_metrics['accuracy']:.4f}" if live_metrics else ""))
    with stages("drift") as note:
        drift_report = _drift(live, schema, frame, X, y, held_out, new, policy)
        note(f"{len(drift_report.get('drifted', []))} of {len(schema.features)} features drifted")
    with stages("gates") as note:
        validation = evaluate_gates(policy, candidate=metrics, live=live_metrics, drift_share=drift_report.get("share") if new else None,
                                    label_check=label_check)
        validation["comparison"] = comparison
        validation["label_check"] = label_check
        validation["live_metrics"] = live_metrics
        note("passed" if validation["passed"] else "; ".join(validation["reasons"]))
    version = services.register_version(
        model=fit.pipeline, schema=schema, run=run, estimator=fit.name, training_rows=int((~held_out).sum()),
        holdout_rows=int(held_out.sum()), training_seconds=fit.seconds, candidates=fit.candidates, metrics=metrics,
        validation=validation, drift=drift_report, environment=environment(),
        trained_on=sorted({int(b) for b in frame[master.BATCH_COLUMN].unique()}),
    )
    run.candidate = version
    run.details = {"rows": len(frame), "replaced_ids": replaced, "new_batches": [b.pk for b in new]}
    run.save(update_fields=["candidate", "live_version", "details"])
    _decide(run, version, validation, new, stages, live)


def _load(schema, new: list[DataBatch]):
    frame = master.read_batches(master.master_batches() + new, schema)
    return master.drop_replaced_ids(frame, schema.id_column)


def _compare_with_live(live, schema, X_hold, y_hold, cand_proba, frame, X, y, new):
    if live is None:
        return None, None, None
    model = artifacts.load(live.artifact, live.sha256)
    label = schema.positive_label if live.imported else None
    live_proba = training.positive_proba(model, X_hold, label)
    live_metrics = evaluation.score(y_hold, live_proba)
    comparison = evaluation.paired_bootstrap(y_hold, cand_proba, live_proba)
    label_check = None
    is_new = frame[master.BATCH_COLUMN].isin([b.pk for b in new]).to_numpy()
    if is_new.any():
        new_accuracy = evaluation.score(y[is_new], training.positive_proba(model, X[is_new], label))["accuracy"]
        reference = live.metrics.get("accuracy", live_metrics["accuracy"])
        label_check = {"rows": int(is_new.sum()), "new_accuracy": new_accuracy, "holdout_accuracy": reference,
                       "drop": reference - new_accuracy}
    return comparison, label_check, live_metrics


def _drift(live, schema, frame, X, y, held_out, new, policy) -> dict:
    if not new:
        return {"share": 0.0, "features": {}, "drifted": [], "note": "no new batches"}
    batch = frame[master.BATCH_COLUMN]
    is_new = batch.isin([b.pk for b in new]).to_numpy()
    reference_ids = live.trained_on if live else []
    is_reference = batch.isin(reference_ids).to_numpy() & ~held_out & ~is_new
    return drift.dataset_drift(
        X[is_reference], X[is_new], schema, psi_threshold=policy.psi_threshold, p_threshold=policy.drift_p_value,
        reference_labels=y[is_reference], current_labels=y[is_new],
    )


def _decide(run, version, validation, new, stages, live) -> None:
    forced = bool(run.override_reason.strip())
    if live is None or validation["passed"] or forced:
        kind = Deployment.Kind.INITIAL if live is None else Deployment.Kind.DEPLOY if validation["passed"] else Deployment.Kind.FORCED
        with stages("deploy") as note:
            services.deploy_version(version=version, user=run.requested_by, kind=kind, run=run, merge=new,
                                    reason=run.override_reason or ("initial model" if live is None else "passed validation"),
                                    check=False, replacing=live)
            note(f"v{version.version} is live ({kind})")
        reasons = [] if validation["passed"] else [f"forced past failed gates: {run.override_reason}"] + validation["reasons"]
        _finish(run, TrainingRun.Status.DEPLOYED, reasons=reasons)
        return
    with transaction.atomic():
        version.status = ModelVersion.Status.REJECTED
        version.save(update_fields=["status"])
        hold_batches(new, run=run)
        record(actor=run.requested_by, action="model.rejected", target=str(version), details={"reasons": validation["reasons"], "held_batches": [b.pk for b in new]})
    mirrors.write_version(version)
    stages.line("reject", 0.0, f"v{version.version} rejected; {len(new)} batch(es) held")
    _finish(run, TrainingRun.Status.REJECTED, reasons=validation["reasons"])


def _finish(run: TrainingRun, status: str, *, reasons: list[str] | None = None, error: str = "") -> None:
    run.status = status
    run.finished_at = timezone.now()
    run.reasons = reasons or run.reasons
    run.error = error
    run.save(update_fields=["status", "finished_at", "reasons", "error", "stages"])
    _log_line(f"run={run.pk} outcome={status}" + (f" error={error}" if error else "") + (f" reasons={' | '.join(run.reasons)}" if run.reasons else ""))


def environment() -> dict:
    import joblib
    import pandas
    import pyarrow

    return {"python": platform.python_version(), "scikit-learn": sklearn.__version__, "pandas": pandas.__version__,
            "pyarrow": pyarrow.__version__, "joblib": joblib.__version__, "numpy": np.__version__}


def _log_line(text: str) -> None:
    path = home.path("logs", "retraining.log")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"{timezone.now().isoformat(timespec='seconds')} {text}\n")


class _Stages:
    """Times each stage, keeps it on the run (with a heartbeat) and in logs/retraining.log."""

    def __init__(self, run: TrainingRun):
        self.run = run

    @contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        detail = []
        yield detail.append
        self.line(name, time.perf_counter() - started, "; ".join(detail))

    def line(self, name: str, seconds: float, detail: str) -> None:
        self.run.stages = [*self.run.stages, {"stage": name, "seconds": round(seconds, 3), "detail": detail}]
        self.run.heartbeat_at = timezone.now()
        TrainingRun.objects.filter(pk=self.run.pk).update(stages=self.run.stages, heartbeat_at=self.run.heartbeat_at)
        _log_line(f"run={self.run.pk} stage={name} seconds={seconds:.3f} {detail}".rstrip())
