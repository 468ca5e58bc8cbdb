"""People are told: one mail per problem to the ML engineers with an address, with a link to
the page that explains it, and no more until the problem is solved and comes back."""
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from ingestion.models import DataBatch
from ingestion.services import ingest_path, release_batch
from clsite import schedules as schedule
from modelhub.models import ModelVersion, TrainingRun
from modelhub.retraining import retrain_now
from ops import alerts, watch
from ops.models import Alert, WorkerBeat


@pytest.fixture
def team(initialised, users, settings):
    settings.CL_SITE_URL = "https://churn.example.com"
    for name in ("engineer", "admin", "analyst"):
        users[name].email = f"{name}@example.com"
        users[name].save(update_fields=["email"])
    watch.beat()
    return users


def failed_run(error: str = "MemoryError: out of memory") -> TrainingRun:
    return TrainingRun.objects.create(trigger=TrainingRun.Trigger.SCHEDULE, status=TrainingRun.Status.FAILED, error=error,
                                      started_at=timezone.now(), finished_at=timezone.now())


def test_a_failed_run_is_mailed_once_to_ml_engineers_and_admins_with_a_link(team):
    run = failed_run()

    alerts.evaluate()
    alerts.evaluate()  # the next minute: still failing, nothing more is sent

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert sorted(message.to) == ["admin@example.com", "engineer@example.com"]  # not the analyst
    assert message.subject == f"[Continuous learning] Retraining failed (run {run.pk})"
    assert "MemoryError: out of memory" in message.body and "still staged" in message.body
    assert f"https://churn.example.com/runs/{run.pk}/" in message.body
    alert = Alert.objects.get(key="runs-failing")
    assert alert.sent_to == ["admin@example.com", "engineer@example.com"] and alert.resolved_at is None


def test_a_problem_solved_then_back_is_mailed_again(team):
    failed_run()
    alerts.evaluate()
    assert retrain_now(force=True).status == TrainingRun.Status.DEPLOYED  # a later run succeeds: solved
    alerts.evaluate()
    assert Alert.objects.get(key="runs-failing").resolved_at is not None
    failed_run("the disk is full")
    alerts.evaluate()

    assert [m.subject.split("(")[0] for m in mail.outbox] == ["[Continuous learning] Retraining failed "] * 2
    assert "the disk is full" in mail.outbox[1].body


def test_a_rejected_candidate_and_its_held_data_are_mailed_until_a_person_decides(team, demo):
    ingest_path(demo.flipped("flipped.csv", slice(2000, 2500)))
    run = retrain_now()
    assert run.status == TrainingRun.Status.REJECTED

    watch.tick()

    (message,) = mail.outbox
    assert message.subject == f"[Continuous learning] Candidate rejected, data held (run {run.pk})"
    assert "suspected label problems" in message.body and "flipped.csv" in message.body
    assert f"/runs/{run.pk}/" in message.body
    held = DataBatch.objects.get(status=DataBatch.Status.HELD)
    release_batch(batch=held, user=team["engineer"], reason="checked")
    watch.tick()
    assert Alert.objects.get(key=f"run-rejected-{run.pk}").resolved_at is not None
    assert len(mail.outbox) == 1


def test_a_silent_worker_is_mailed_when_runs_wait_and_resolved_when_it_beats(team):
    WorkerBeat.objects.update(beat_at=timezone.now() - timedelta(minutes=10))
    assert schedule.current() is not None  # the daily schedule waits for the worker

    alerts.evaluate()

    (message,) = mail.outbox
    assert message.subject == "[Continuous learning] The worker is not running"
    assert "manage.py qcluster" in message.body and "https://churn.example.com/status/" in message.body
    watch.beat()
    alerts.evaluate()
    assert Alert.objects.get(key="worker-silent").resolved_at is not None


def test_data_waiting_with_no_success_for_too_long_is_mailed(team, demo, settings):
    batch = ingest_path(demo.write("waiting.csv", slice(2000, 2100)))
    long_ago = timezone.now() - timedelta(hours=settings.CL_ALERT_NO_SUCCESS_HOURS + 1)
    DataBatch.objects.filter(pk=batch.pk).update(uploaded_at=long_ago)
    TrainingRun.objects.update(finished_at=long_ago - timedelta(hours=1))

    alerts.evaluate()

    (message,) = mail.outbox
    assert message.subject.startswith("[Continuous learning] Retraining: ")
    assert "staged file(s) waiting" in message.body


def test_with_no_address_to_send_to_nothing_is_sent_and_the_health_check_says_so(initialised, users):
    from ops import health

    failed_run()
    alerts.evaluate()
    assert mail.outbox == []
    check = next(c for c in health.report().checks if c.name == "mail")
    assert check.status == health.WARNING and "no ML engineer has an email address" in check.summary


def test_a_deployment_that_learned_a_drift_says_once_that_the_data_changed(team):
    version = ModelVersion.active()
    version.validation = {**version.validation, "drift_decision": {
        "case": "adapted", "drifted": ["tenure", "contract"], "share": 0.3, "threshold": 0.15,
        "message": "the data changed (2 features drifted) and the candidate learned it: ROC AUC +0.0100"}}
    version.save(update_fields=["validation"])
    run = TrainingRun.objects.create(trigger=TrainingRun.Trigger.SCHEDULE, status=TrainingRun.Status.DEPLOYED, candidate=version,
                                     started_at=timezone.now(), finished_at=timezone.now())
    alerts.evaluate()
    alerts.evaluate()

    (message,) = mail.outbox
    assert message.subject == f"[Continuous learning] The data changed and v{version.version} learned it (run {run.pk})"
    assert "Drifted features: tenure, contract" in message.body and f"/models/{version.version}/" in message.body
    # The next deployment without such a change closes it.
    assert retrain_now(force=True).status == TrainingRun.Status.DEPLOYED
    alerts.evaluate()
    assert Alert.objects.get(key=f"data-changed-{run.pk}").resolved_at is not None and len(mail.outbox) == 1
