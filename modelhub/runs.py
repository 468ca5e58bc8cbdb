"""The life of a retraining run, apart from its work: asked for, queued, claimed, kept alive, swept.

One way to ask (`request_retraining`), whatever the door; one run at a time, enforced in the
database; a run is alive while its heartbeat thread writes, so a slow run is never taken for a
dead one, and a run whose worker died is failed by the next sweep.
"""
import logging
import os
import socket
import threading
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.utils import timezone

from audit.services import record
from clsite import home
from clsite.users import real_user

from .models import ModelVersion, TrainingRun

log = logging.getLogger("clsite.modelhub")

# A running run writes its heartbeat this often, whatever it is doing; one silent for
# STALE_AFTER has lost its worker (killed, machine gone). Neither depends on how long the
# work takes: CL_RUN_TIMEOUT_MINUTES (django-q2's timeout) bounds that.
HEARTBEAT_SECONDS = 5
STALE_AFTER = timedelta(seconds=60)
PENDING = (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING)
TASK = "modelhub.tasks.run_queued_retraining"


class RetrainingBusy(Exception):
    pass


@dataclass
class Request:
    run: TrainingRun
    created: bool  # False: an earlier run was queued or running, and this request joined it

    @property
    def message(self) -> str:
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


def enqueue_run(run: TrainingRun) -> None:
    """Hand the run to the worker (again): a task that finds the run no longer queued does nothing."""
    from django_q.tasks import async_task

    attempt = run.enqueue_count + 1
    # Conditional, so two sweeps at once hand it over once.
    if TrainingRun.objects.filter(pk=run.pk, enqueue_count=run.enqueue_count).update(enqueued_at=timezone.now(), enqueue_count=attempt):
        run.enqueue_count = attempt
        async_task(TASK, run.pk, task_name=f"retraining-{run.pk}" + (f"-again" if attempt > 1 else ""))


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


def finish(run: TrainingRun, status: str, *, reasons: list[str] | None = None, error: str = "") -> None:
    run.status = status
    run.finished_at = timezone.now()
    run.reasons = reasons or run.reasons
    run.error = error
    run.save(update_fields=["status", "finished_at", "reasons", "error", "stages"])
    if status == TrainingRun.Status.FAILED:
        # A candidate saved before the failure never passed validation; it must not look pending.
        ModelVersion.objects.filter(run=run, status=ModelVersion.Status.CANDIDATE).update(status=ModelVersion.Status.REJECTED)
    log_line(f"run={run.pk} outcome={status}" + (f" error={error}" if error else "")
             + (f" reasons={' | '.join(run.reasons)}" if run.reasons else ""))


def log_line(text: str) -> None:
    """A line in logs/retraining.log, for people who read logs."""
    path = home.path("logs", "retraining.log")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"{timezone.now().isoformat(timespec='seconds')} {text}\n")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    """While a run works, a thread of its own writes the run's heartbeat every HEARTBEAT_SECONDS."""

    def __init__(self, run: TrainingRun, every: float = HEARTBEAT_SECONDS):
        self.run_pk, self.every = run.pk, every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat-run-{run.pk}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def _beat(self) -> None:
        try:
            while not self.stop.wait(self.every):
                try:
                    TrainingRun.objects.filter(pk=self.run_pk, status=TrainingRun.Status.RUNNING).update(heartbeat_at=timezone.now())
                except Exception:  # a busy database now and then must not end the beat
                    log.warning("heartbeat of run %s not written", self.run_pk, exc_info=True)
                    close_old_connections()
        finally:
            connection.close()  # this thread's own connection


def sweep() -> dict:
    """Fail running runs whose worker is gone; re-enqueue once, then fail, queued runs no worker took.

    Run by ops.repairs.repair() (the watchdog every minute, a worker's start, `health
    --repair`), before a retraining is asked for or started, and while `retrain` waits for one.
    Returns what it did, for the health report.
    """
    now = timezone.now()
    failed_stale = [run.pk for run in TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING) if is_dead(run, now)]
    for pk in failed_stale:
        _fail_if(pk, TrainingRun.Status.RUNNING,
                 "the worker stopped without finishing this run (its heartbeat stopped: killed or shut down); "
                 "its batches are still staged for the next run")
    limit = timedelta(minutes=settings.CL_QUEUED_RUN_MINUTES)
    requeued, failed_queued = [], []
    for run in TrainingRun.objects.filter(status=TrainingRun.Status.QUEUED, enqueued_at__lt=now - limit):
        if run.enqueue_count < 2:
            enqueue_run(run)
            requeued.append(run.pk)
        elif _fail_if(run.pk, TrainingRun.Status.QUEUED,
                      f"no worker started this run within {2 * settings.CL_QUEUED_RUN_MINUTES} minutes "
                      "(is `manage.py qcluster` running?); its batches are still staged for the next run"):
            failed_queued.append(run.pk)
    return {"failed_stale": failed_stale, "requeued": requeued, "failed_queued": failed_queued}


def is_dead(run: TrainingRun, now) -> bool:
    if run.heartbeat_at is None or now - run.heartbeat_at > STALE_AFTER:
        return True
    host, _, pid = run.worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's worker: only its silence tells
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True  # its process on this machine is gone
    except PermissionError:
        pass
    return False


def _fail_if(pk: int, status: str, error: str) -> bool:
    """Fail the run if it is still in `status` (a conditional update: a run that moved on is left alone)."""
    with transaction.atomic():
        changed = TrainingRun.objects.filter(pk=pk, status=status).update(status=TrainingRun.Status.FAILED,
                                                                           finished_at=timezone.now(), error=error)
        if changed:
            ModelVersion.objects.filter(run_id=pk, status=ModelVersion.Status.CANDIDATE).update(status=ModelVersion.Status.REJECTED)
            record(actor=None, action="run.failed", target=f"run {pk}", details={"error": error})
    if changed:
        log.warning("run %s failed: %s", pk, error)
        log_line(f"run={pk} outcome=failed error={error}")
    return bool(changed)
