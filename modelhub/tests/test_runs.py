"""One retraining at a time, enforced by the database; a run whose worker died is found and failed."""
from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from modelhub.models import TrainingRun
from modelhub.retraining import execute, fail_stale_runs, request_run, retrain_now


def running(minutes_since_heartbeat: float) -> TrainingRun:
    beat = timezone.now() - timedelta(minutes=minutes_since_heartbeat)
    return TrainingRun.objects.create(trigger=TrainingRun.Trigger.SCHEDULE, status=TrainingRun.Status.RUNNING,
                                      started_at=beat - timedelta(minutes=5), heartbeat_at=beat)


def test_a_run_left_running_without_a_heartbeat_is_failed_when_the_next_run_starts(hub, settings):
    stale = running(settings.CL_STALE_RUN_MINUTES + 1)
    run = retrain_now()
    stale.refresh_from_db()
    assert stale.status == TrainingRun.Status.FAILED
    assert "the worker stopped without finishing this run (no heartbeat)" in stale.error
    assert stale.finished_at <= run.started_at  # failed first, then the new run took its place
    assert run.status == TrainingRun.Status.SKIPPED  # the new run went ahead


def test_a_run_with_a_recent_heartbeat_blocks_the_next_one(hub, settings):
    busy = running(settings.CL_STALE_RUN_MINUTES - 1)
    run = retrain_now()
    assert run.status == TrainingRun.Status.FAILED
    assert run.error == f"another retraining (run {busy.pk}) is running; try again when it ends"
    assert run.started_at is None and run.finished_at is not None
    busy.refresh_from_db()
    assert busy.status == TrainingRun.Status.RUNNING and busy.error == ""
    assert fail_stale_runs() == 0


def test_the_database_refuses_a_second_running_run(fresh_db):
    running(0)
    with pytest.raises(IntegrityError), transaction.atomic():
        running(0)
    queued = request_run(trigger=TrainingRun.Trigger.MANUAL)
    with pytest.raises(IntegrityError), transaction.atomic():
        TrainingRun.objects.filter(pk=queued.pk).update(status=TrainingRun.Status.RUNNING)
    # Finished runs of every other status can be as many as there are.
    for status in (TrainingRun.Status.FAILED, TrainingRun.Status.DEPLOYED, TrainingRun.Status.FAILED):
        TrainingRun.objects.create(trigger=TrainingRun.Trigger.CLI, status=status)
    assert TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING).count() == 1


def test_a_run_is_executed_once(hub):
    run = request_run(trigger=TrainingRun.Trigger.MANUAL)
    assert execute(run).status == TrainingRun.Status.SKIPPED
    again = execute(TrainingRun.objects.get(pk=run.pk))
    assert again.status == TrainingRun.Status.FAILED and again.error == f"run {run.pk} is not queued"
