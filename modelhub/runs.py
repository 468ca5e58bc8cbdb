"""The life of a retraining run, apart from its work: asked for, queued, claimed, kept alive, swept.

One way to ask (`request_retraining`), whatever the door; one run at a time, enforced in the
database; a run is alive while its heartbeat thread writes (modelhub.jobs, shared by every
background job), so a slow run is never taken for a dead one, and a run whose worker died is
failed by the next sweep. A run's outcome goes to logs/retraining.log before the database, so
the log has it even when the database is down, and the sweep tells that reason, not a dead worker.
"""
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.services import record
from clsite import broker, home
from clsite.users import real_user

from .jobs import is_dead, worker_name, write_despite_outage
from .models import ModelVersion, TrainingRun

log = logging.getLogger("clsite.modelhub")

# How much of the end of logs/retraining.log the sweep reads for a run's own account of its failure.
LOG_TAIL_BYTES = 1 << 20
PENDING = (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING)
TASK = "modelhub.tasks.run_queued_retraining"
# The key in a queued run's details while the broker refuses it (enqueue_run): why, in words.
WAITING_FOR_BROKER = "waiting_for_broker"


class RetrainingBusy(Exception):
    pass


@dataclass
class Request:
    run: TrainingRun
    created: bool  # False: an earlier run was queued or running, and this request joined it

    @property
    def waiting_for_broker(self) -> bool:
        """Queued, but not handed to the worker: the task broker refused it (enqueue_run)."""
        return self.run.status == TrainingRun.Status.QUEUED and bool(self.run.details.get(WAITING_FOR_BROKER))

    @property
    def message(self) -> str:
        if self.waiting_for_broker:
            return (f"Run {self.run.pk} is {'' if self.created else 'already '}queued but waits for the task broker "
                    f"({broker.describe()}), which does not answer; it is handed to the worker within about a minute "
                    "of the broker coming back, and will use every batch staged when it starts.")
        if self.created:
            return f"Run {self.run.pk} is queued; the worker starts it within seconds."
        return f"Run {self.run.pk} is already {self.run.status}; it will use every batch staged when it starts."


def request_retraining(*, user, trigger: str, force: bool = False, enqueue: bool = True) -> Request:
    """Ask for a retraining: a new queued run, or the one already queued or running.

    The page, the API, the command line and the schedule all come here. A new run is handed
    to the worker once the transaction commits (with enqueue=False the caller runs it itself).
    """
    sweep()
    try:
        with transaction.atomic():
            pending = TrainingRun.objects.select_for_update().filter(status__in=PENDING).order_by("pk").first()
            if pending is None:
                run = TrainingRun.objects.create(trigger=trigger, requested_by=real_user(user), force=force,
                                                 enqueued_at=timezone.now() if enqueue else None)
            elif force and not pending.force and pending.status == TrainingRun.Status.QUEUED:
                TrainingRun.objects.filter(pk=pending.pk).update(force=True)  # the run that starts later must honour it
            record(actor=user, action="run.requested", target=f"run {(pending or run).pk}",
                   details={"trigger": trigger, "force": force, "joined": pending.pk if pending else None})
            if pending is None and enqueue:
                transaction.on_commit(lambda: enqueue_run(run))
    except IntegrityError:
        # Two requests at once: the database kept one queued run, and this request joins it.
        pending = TrainingRun.objects.filter(status__in=PENDING).order_by("pk").first()
        if pending is None:
            raise
    if pending is not None:
        pending.refresh_from_db()
        return Request(pending, created=False)
    return Request(run, created=True)


def enqueue_run(run: TrainingRun) -> bool:
    """Hand the run to the worker (again): a task that finds the run no longer queued does nothing.

    True if this call handed it over. When the broker refuses it (Redis down) the run stays
    queued, recorded as not handed over: no enqueued_at, the same enqueue_count, and why under
    details[WAITING_FOR_BROKER]; the next sweep (every request, the watchdog) hands it over as soon
    as the broker answers. The refusal is never raised: the request that asked gets the truth."""
    from django_q.tasks import async_task

    attempt, now = run.enqueue_count + 1, timezone.now()
    queued = TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.QUEUED)
    # Conditional, so two sweeps at once hand it over once.
    if not queued.filter(enqueue_count=run.enqueue_count).update(enqueued_at=now, enqueue_count=attempt, details={}):
        return False
    try:
        async_task(TASK, run.pk, task_name=f"retraining-{run.pk}" + (f"-again" if attempt > 1 else ""))
    except broker.errors() as exc:
        waiting = {WAITING_FOR_BROKER: f"{broker.describe()} refused it: {exc}"}
        queued.filter(enqueue_count=attempt).update(enqueued_at=None, enqueue_count=run.enqueue_count, details=waiting)
        run.enqueued_at, run.details = None, waiting
        log.warning("run %s stays queued, not handed to the worker: %s", run.pk, waiting[WAITING_FOR_BROKER])
        return False
    run.enqueued_at, run.enqueue_count, run.details = now, attempt, {}
    return True


def claim(run: TrainingRun) -> bool:
    """Make a queued run running; False (nothing changed) when it is not queued any more.
    RetrainingBusy when another run is running."""
    now = timezone.now()
    try:
        with transaction.atomic():
            updated = TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.QUEUED).update(
                status=TrainingRun.Status.RUNNING, started_at=now, heartbeat_at=now, worker=worker_name())
    except IntegrityError:
        other = TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING).exclude(pk=run.pk).first()
        raise RetrainingBusy(f"another retraining (run {other.pk if other else '?'}) is running; try again when it ends") from None
    if updated:
        run.refresh_from_db()
    return bool(updated)


def finish(run: TrainingRun, status: str, *, reasons: list[str] | None = None, error: str = "",
           retry_seconds: float = 0) -> bool:
    """End the run: the log line first (it needs no database), then the row. With retry_seconds,
    the row's write is tried again while the database is unreachable; False if it never got
    through (the sweep then fails the run with the reason the log line keeps)."""
    run.status = status
    run.finished_at = timezone.now()
    run.reasons = reasons or run.reasons
    run.error = error
    log_line(f"run={run.pk} outcome={status}" + (f" error={error}" if error else "")
             + (f" reasons={' | '.join(run.reasons)}" if run.reasons else ""))

    def write():
        with transaction.atomic():
            run.save(update_fields=["status", "finished_at", "reasons", "error", "stages"])
            if status == TrainingRun.Status.FAILED:
                # A candidate saved before the failure never passed validation; it must not look pending.
                ModelVersion.objects.filter(run=run, status=ModelVersion.Status.CANDIDATE).update(status=ModelVersion.Status.REJECTED)

    if not retry_seconds:
        write()
        return True
    return write_despite_outage(write, what=f"the end of run {run.pk} ({status})", seconds=retry_seconds)


def log_line(text: str) -> None:
    """A line in logs/retraining.log, for people who read logs (and for the sweep: see logged_error)."""
    path = home.path("logs", "retraining.log")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"{timezone.now().isoformat(timespec='seconds')} {' '.join(text.split())}\n")


def logged_error(pk: int) -> str:
    """The error run `pk` wrote to logs/retraining.log as it failed ('' if none): its own account,
    kept there when the database was down and the row could not take it."""
    path = home.path("logs", "retraining.log")
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, 2) - LOG_TAIL_BYTES))
            tail = fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    mark = f" run={pk} outcome=failed error="
    for line in reversed(tail.splitlines()):
        if mark in line:
            return line.split(mark, 1)[1].split(" reasons=", 1)[0]
    return ""


def sweep() -> dict:
    """Fail running runs whose worker is gone; re-enqueue once, then fail, queued runs no worker took.

    Run by ops.repairs.repair() (the watchdog every minute, a worker's start, `health
    --repair`), before a retraining is asked for or started, and while `retrain` waits for one.
    Returns what it did, for the health report.
    """
    now = timezone.now()
    failed_stale = [run.pk for run in TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING) if is_dead(run, now)]
    for pk in failed_stale:
        # A run that failed while the database was down wrote its own account to the log only: that is the reason.
        told = logged_error(pk)
        _fail_if(pk, TrainingRun.Status.RUNNING, told or "the worker stopped without finishing this run (its heartbeat "
                 "stopped: killed or shut down); its batches are still staged for the next run", logged=bool(told))
    limit = timedelta(minutes=settings.CL_QUEUED_RUN_MINUTES)
    requeued, failed_queued = [], []
    # Refused by the broker (enqueue_run): handed over as soon as it answers, not after the limit.
    for run in TrainingRun.objects.filter(status=TrainingRun.Status.QUEUED, enqueued_at=None):
        if run.details.get(WAITING_FOR_BROKER) and enqueue_run(run):
            requeued.append(run.pk)
    for run in TrainingRun.objects.filter(status=TrainingRun.Status.QUEUED, enqueued_at__lt=now - limit):
        if run.enqueue_count < 2:
            enqueue_run(run)
            requeued.append(run.pk)
        elif _fail_if(run.pk, TrainingRun.Status.QUEUED,
                      f"no worker started this run within {2 * settings.CL_QUEUED_RUN_MINUTES} minutes "
                      "(is `manage.py qcluster` running?); its batches are still staged for the next run"):
            failed_queued.append(run.pk)
    return {"failed_stale": failed_stale, "requeued": requeued, "failed_queued": failed_queued}


def _fail_if(pk: int, status: str, error: str, *, logged: bool = False) -> bool:
    """Fail the run if it is still in `status` (a conditional update: a run that moved on is left alone)."""
    with transaction.atomic():
        changed = TrainingRun.objects.filter(pk=pk, status=status).update(status=TrainingRun.Status.FAILED,
                                                                           finished_at=timezone.now(), error=error)
        if changed:
            ModelVersion.objects.filter(run_id=pk, status=ModelVersion.Status.CANDIDATE).update(status=ModelVersion.Status.REJECTED)
            record(actor=None, action="run.failed", target=f"run {pk}", details={"error": error})
    if changed:
        log.warning("run %s failed: %s", pk, error)
        if not logged:
            log_line(f"run={pk} outcome=failed error={error}")
    return bool(changed)
