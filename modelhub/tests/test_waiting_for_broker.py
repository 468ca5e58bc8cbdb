"""A retraining asked for while the task broker refuses work (Redis down) stays queued, is told as
such, and is handed over by the next sweep once the broker answers (issue 23, item 3).

The broker is django-q2's Redis broker pointed at a port where nothing listens: a real refusal.
The whole path through a real qcluster and a stopped Redis is tests/faults/test_broker.py.
"""
import pytest
from django_q.conf import Conf
from django_q.models import OrmQ

from modelhub import runs
from modelhub.models import TrainingRun
from ops import health
from testing.instances import free_port


def queued_tasks() -> list:
    return [task for task in OrmQ.objects.all() if task.func() == runs.TASK]


class Broker:
    def __init__(self, where: str, back):
        self.where, self.back = where, back


@pytest.fixture
def redis_down(settings, monkeypatch) -> Broker:
    """django-q2 on Redis at a port nobody listens on; `back()` puts the (ORM) broker back."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    orm = Conf.ORM
    settings.REDIS_URL = url
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "REDIS", url)

    def back():
        settings.REDIS_URL = ""
        Conf.ORM = orm

    return Broker(f"Redis at 127.0.0.1:{port}", back)


def test_a_run_the_broker_refuses_stays_queued_says_so_and_is_handed_over_when_it_answers(
        hub, users, redis_down, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        asked = runs.request_retraining(user=users["engineer"], trigger=TrainingRun.Trigger.API)
    assert asked.created and asked.waiting_for_broker
    assert f"waits for the task broker ({redis_down.where}), which does not answer" in asked.message
    run = TrainingRun.objects.get(pk=asked.run.pk)
    assert (run.status, run.enqueued_at, run.enqueue_count) == (TrainingRun.Status.QUEUED, None, 0)
    assert redis_down.where in run.details[runs.WAITING_FOR_BROKER]

    joined = runs.request_retraining(user=users["admin"], trigger=TrainingRun.Trigger.MANUAL)
    assert (joined.created, joined.run.pk, joined.waiting_for_broker) == (False, run.pk, True)
    assert "already queued but waits for the task broker" in joined.message
    check = health.task_broker()
    assert check.status == health.FAILING and check.summary.startswith(f"{redis_down.where} does not answer")

    redis_down.back()
    assert runs.sweep()["requeued"] == [run.pk]  # at once, not after CL_QUEUED_RUN_MINUTES
    run.refresh_from_db()
    assert run.enqueued_at is not None and run.enqueue_count == 1 and run.details == {}
    assert len(queued_tasks()) == 1
    assert runs.sweep()["requeued"] == [] and len(queued_tasks()) == 1  # handed over once
    assert health.task_broker().status == health.OK


def test_a_run_the_caller_runs_itself_is_never_handed_to_the_worker_by_a_sweep(hub):
    run = runs.request_retraining(user=None, trigger=TrainingRun.Trigger.CLI, enqueue=False).run
    assert run.enqueued_at is None and runs.sweep()["requeued"] == [] and queued_tasks() == []
