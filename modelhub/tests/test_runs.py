"""One way to ask for a retraining, one run at a time, and runs that never hang and are never killed alive."""
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_q.models import OrmQ
from django_q.timeout import TimeoutHandler

from audit.models import AuditEvent
from ingestion.models import DataBatch
from ingestion.services import ingest_path
from modelhub import jobs, runs
from modelhub.models import ModelVersion, TrainingRun
from modelhub.retraining import execute, retrain_now


def running(seconds_since_heartbeat: float, *, worker: str = "") -> TrainingRun:
    beat = timezone.now() - timedelta(seconds=seconds_since_heartbeat)
    return TrainingRun.objects.create(trigger=TrainingRun.Trigger.SCHEDULE, status=TrainingRun.Status.RUNNING,
                                      started_at=beat - timedelta(minutes=5), heartbeat_at=beat, worker=worker)


def queued_tasks() -> list:
    return [task for task in OrmQ.objects.all() if task.func() == runs.TASK]


def test_a_second_request_while_one_is_queued_joins_it_and_both_are_audited(hub, users, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        first = runs.request_retraining(user=users["engineer"], trigger=TrainingRun.Trigger.MANUAL)
        second = runs.request_retraining(user=users["admin"], trigger=TrainingRun.Trigger.MANUAL, force=True)

    assert first.created and not second.created
    assert second.run.pk == first.run.pk and second.run.force  # the later request's "force" is kept
    assert f"Run {first.run.pk} is already queued" in second.message
    assert TrainingRun.objects.filter(status=TrainingRun.Status.QUEUED).count() == 1
    assert [task.args() for task in queued_tasks()] == [(first.run.pk,)]  # handed to the worker once
    asked = AuditEvent.objects.filter(action="run.requested").order_by("pk")
    assert [(e.actor.username, e.details["joined"]) for e in asked] == [("engineer", None), ("admin", first.run.pk)]


def test_a_request_while_a_run_is_running_points_to_that_run(hub):
    busy = running(1)
    asked = runs.request_retraining(user=None, trigger=TrainingRun.Trigger.SCHEDULE)
    assert not asked.created and asked.run.pk == busy.pk
    assert "already running" in asked.message


def test_the_database_keeps_one_running_and_one_queued_run(empty_db):
    running(0)
    with pytest.raises(IntegrityError), transaction.atomic():
        running(0)
    TrainingRun.objects.create(trigger=TrainingRun.Trigger.MANUAL)
    with pytest.raises(IntegrityError), transaction.atomic():
        TrainingRun.objects.create(trigger=TrainingRun.Trigger.MANUAL)
    for status in (TrainingRun.Status.FAILED, TrainingRun.Status.DEPLOYED, TrainingRun.Status.FAILED):
        TrainingRun.objects.create(trigger=TrainingRun.Trigger.CLI, status=status)
    assert TrainingRun.objects.filter(status__in=runs.PENDING).count() == 2


def test_a_run_whose_heartbeat_stopped_is_failed_by_the_next_request_and_the_new_run_goes_ahead(hub):
    stale = running((jobs.STALE_AFTER + timedelta(seconds=5)).total_seconds())
    candidate = ModelVersion.objects.create(major=1, minor=9, schema=hub.schema, run=stale, artifact="x", sha256="",
                                            trained_at=timezone.now())

    run = retrain_now()

    stale.refresh_from_db()
    candidate.refresh_from_db()
    assert stale.status == TrainingRun.Status.FAILED
    assert "its heartbeat stopped" in stale.error and "still staged" in stale.error
    assert candidate.status == ModelVersion.Status.REJECTED
    assert run.status == TrainingRun.Status.SKIPPED and run.pk != stale.pk


def test_a_run_of_a_process_on_this_machine_that_is_gone_is_failed_at_once(hub):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = running(1, worker=f"{runs.worker_name().rsplit(':', 1)[0]}:{gone.pid}")
    alive = TrainingRun.objects.filter(pk=dead.pk)

    assert runs.sweep()["failed_stale"] == [dead.pk]
    assert alive.get().status == TrainingRun.Status.FAILED


def test_a_slow_run_with_a_live_heartbeat_is_never_taken_for_dead(hub):
    busy = running(1, worker=runs.worker_name())  # this very process, beating a second ago
    assert runs.sweep() == {"failed_stale": [], "requeued": [], "failed_queued": []}
    busy.refresh_from_db()
    assert busy.status == TrainingRun.Status.RUNNING


def test_the_heartbeat_thread_beats_while_the_run_works(hub):
    run = running(30, worker=runs.worker_name())
    before = run.heartbeat_at
    with jobs.Heartbeat(run, every=0.1):
        time.sleep(0.6)  # a stage that writes nothing
    run.refresh_from_db()
    assert run.heartbeat_at > before + timedelta(seconds=25)


def test_executing_a_run_that_is_not_queued_changes_nothing(hub):
    run = retrain_now(force=True)
    assert run.status == TrainingRun.Status.DEPLOYED, run.error or run.reasons
    finished_at, active = run.finished_at, ModelVersion.active().pk

    again = execute(TrainingRun.objects.get(pk=run.pk))

    assert (again.status, again.finished_at, again.error) == (TrainingRun.Status.DEPLOYED, finished_at, "")
    assert ModelVersion.active().pk == active


def test_a_queued_run_no_worker_takes_is_handed_over_once_more_then_failed(hub, settings, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run = runs.request_retraining(user=None, trigger=TrainingRun.Trigger.MANUAL).run
    late = timezone.now() - timedelta(minutes=settings.CL_QUEUED_RUN_MINUTES + 1)

    TrainingRun.objects.filter(pk=run.pk).update(enqueued_at=late)
    assert runs.sweep()["requeued"] == [run.pk]
    assert len(queued_tasks()) == 2
    TrainingRun.objects.filter(pk=run.pk).update(enqueued_at=late)
    assert runs.sweep()["failed_queued"] == [run.pk]

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert "no worker started this run" in run.error and "qcluster" in run.error


def test_a_run_stopped_by_the_task_timeout_is_failed_with_its_reason_and_its_batch_stays_staged(hub, demo, monkeypatch):
    from modelhub import training

    batch = ingest_path(demo.write("batch.csv", slice(1200, 2200)))
    run = runs.request_retraining(user=None, trigger=TrainingRun.Trigger.MANUAL, enqueue=False).run
    # The alarm must land in Python code: landing inside a native library (numpy parsing a buffer
    # format) it can come back as that library's ValueError, and the test would time nothing.
    fit = training.select_and_fit
    monkeypatch.setattr(training, "select_and_fit", lambda *args: (time.sleep(60), fit(*args))[1])

    # django-q2's own timeout: SIGALRM raises its TimeoutException (a SystemExit) in the task.
    with pytest.raises(SystemExit), TimeoutHandler(3):  # the stages before the fit take well under 3 s
        execute(run)
    monkeypatch.setattr(training, "select_and_fit", fit)

    run.refresh_from_db()
    batch.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert "stopped before it finished" in run.error and "TimeoutException" in run.error
    assert batch.status == DataBatch.Status.STAGED
    assert not ModelVersion.objects.filter(run=run, status=ModelVersion.Status.CANDIDATE).exists()
    assert ModelVersion.active().pk == hub.pk
    assert retrain_now().status == TrainingRun.Status.DEPLOYED  # the next run takes the batch


def test_a_run_that_fails_on_the_database_says_so_and_the_log_has_the_line(hub, demo, monkeypatch):
    from django.db import OperationalError

    from clsite import home
    from modelhub import training

    ingest_path(demo.write("batch.csv", slice(1200, 1700)))

    def database_gone(*args, **kwargs):
        raise OperationalError("terminating connection due to administrator command\nserver closed the connection")

    monkeypatch.setattr(training, "select_and_fit", database_gone)
    run = retrain_now()

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert run.error.startswith("the database failed or could not be reached (OperationalError: terminating connection")
    assert "\n" not in run.error and "worker" not in run.error
    assert run.stages[-1]["stage"] == "failed"
    lines = home.path("logs", "retraining.log").read_text().splitlines()
    assert lines[-1].endswith(f"run={run.pk} outcome=failed error={run.error}")
    assert f"run={run.pk} stage=failed" in lines[-2]


def test_a_failure_the_database_could_not_take_is_told_by_the_sweep_from_the_log(hub):
    dead = running((jobs.STALE_AFTER + timedelta(seconds=5)).total_seconds())
    runs.log_line(f"run={dead.pk + 1000} outcome=failed error=not this run")
    runs.log_line(f"run={dead.pk} outcome=failed error=the database failed or could not be reached (OperationalError: gone)")
    runs.log_line(f"run={dead.pk + 1000} stage=merge seconds=0.1 a later line of another run")

    assert runs.sweep()["failed_stale"] == [dead.pk]

    dead.refresh_from_db()
    assert dead.error == "the database failed or could not be reached (OperationalError: gone)"
    assert AuditEvent.objects.get(action="run.failed", target=f"run {dead.pk}").details["error"] == dead.error


def test_the_end_of_a_run_is_written_again_until_the_database_answers(hub, monkeypatch):
    from django.db import OperationalError

    run = running(1, worker=runs.worker_name())
    attempts, pauses = [], []
    save = TrainingRun.save

    def flaky_save(self, *args, **kwargs):
        attempts.append(1)
        if len(attempts) < 3:
            raise OperationalError("connection refused")
        return save(self, *args, **kwargs)

    monkeypatch.setattr(TrainingRun, "save", flaky_save)
    monkeypatch.setattr(jobs.time, "sleep", pauses.append)

    assert runs.finish(run, TrainingRun.Status.FAILED, error="the database failed", retry_seconds=60)

    assert len(attempts) == 3 and pauses == [1.0, 2.0]
    assert TrainingRun.objects.get(pk=run.pk).status == TrainingRun.Status.FAILED


def test_the_end_of_a_run_is_given_up_after_its_time_and_left_to_the_sweep(hub, monkeypatch):
    from django.db import OperationalError

    run = running(1, worker=runs.worker_name())

    def down(self, *args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(TrainingRun, "save", down)
    clock = iter(range(0, 10_000, 7))
    monkeypatch.setattr(jobs.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(jobs.time, "sleep", lambda seconds: None)

    assert not runs.finish(run, TrainingRun.Status.FAILED, error="the database failed (x)", retry_seconds=30)
    assert runs.logged_error(run.pk) == "the database failed (x)"
    assert TrainingRun.objects.get(pk=run.pk).status == TrainingRun.Status.RUNNING


def test_a_failure_names_its_cause_when_it_is_the_database_or_storage():
    from django.db import InterfaceError

    try:
        try:
            raise InterfaceError("connection already closed")
        except InterfaceError:
            raise RuntimeError("while writing the stage")
    except RuntimeError as exc:
        chained = exc
    assert jobs.failure_reason(chained) == "the database failed or could not be reached (InterfaceError: connection already closed)"
    full = OSError(28, "No space left on device", "/var/cl/models/versions/x.joblib")
    assert jobs.failure_reason(full).startswith("storage failed: a file could not be read or written (OSError: [Errno 28]")
    assert jobs.failure_reason(ValueError("a\n  b")) == "ValueError: a b"
