"""Health you can see and script: the checks, `manage.py health`, /status/ and /healthz."""
import json
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from ingestion.models import DataBatch
from ingestion.services import ingest_path
from clsite import schedules as schedule
from modelhub.models import ModelVersion, TrainingRun
from modelhub.retraining import retrain_now
from modelhub.tests.commands import run_command
from ops import health, watch
from ops.models import WorkerBeat


def statuses(report) -> dict:
    return {check.name: check.status for check in report.checks}


@pytest.fixture
def alive(initialised):
    """The system as a running worker keeps it: a fresh beat."""
    watch.beat()
    return initialised


def test_a_fresh_system_with_a_live_worker_is_healthy_and_says_so(alive, cl_home):
    report = health.report()

    assert report.healthy, report.as_dict()
    got = statuses(report)
    assert {name: got[name] for name in ("initialised", "worker", "schedule", "runs", "last_success", "held", "mirrors", "disk")} == {
        name: health.OK for name in ("initialised", "worker", "schedule", "runs", "last_success", "held", "mirrors", "disk")}
    summary = {check.name: check.summary for check in report.checks}
    assert summary["schedule"].startswith("daily at 02:00") and "next" in summary["schedule"]
    assert summary["worker"].startswith("alive: last heartbeat")
    assert "free of" in summary["disk"]


def test_health_exits_1_with_what_to_do_when_the_worker_is_silent_and_0_when_it_beats(alive):
    WorkerBeat.objects.update(beat_at=timezone.now() - timedelta(minutes=10))

    code, out, _ = run_command("health")

    assert code == 1
    assert "FAIL  Worker" in out and "silent for 10" in out
    assert "→ start the worker: `manage.py qcluster`" in out
    assert out.rstrip().endswith("unhealthy: worker")
    watch.beat()
    code, out, _ = run_command("health", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["healthy"] is True and report["failing"] == []
    assert {c["name"] for c in report["checks"]} >= {"worker", "schedule", "runs", "last_success", "held", "mirrors", "disk", "mail"}


def test_health_before_set_up_says_what_to_run(transactional_db, cl_home):
    code, out, _ = run_command("health")
    assert code == 1
    assert "not initialised" in out and "init_cl_system" in out


def test_healthz_needs_no_login_and_names_only_the_failing_checks(alive, client):
    health.forget()
    response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok", "failing": []})

    WorkerBeat.objects.update(beat_at=timezone.now() - timedelta(minutes=10))
    health.forget()
    response = client.get("/healthz")
    assert (response.status_code, response.json()) == (503, {"status": "failing", "failing": ["worker"]})
    assert b"qcluster" not in response.content  # no details for strangers


def test_a_run_whose_worker_died_is_reported_then_repaired(alive):
    TrainingRun.objects.create(trigger=TrainingRun.Trigger.SCHEDULE, status=TrainingRun.Status.RUNNING,
                               started_at=timezone.now() - timedelta(minutes=20), heartbeat_at=timezone.now() - timedelta(minutes=5))
    report = health.report()
    assert statuses(report)["runs"] == health.FAILING
    assert "heartbeat stopped" in next(c.summary for c in report.checks if c.name == "runs")

    code, out, _ = run_command("health", "--repair")
    assert code == 0, out
    assert TrainingRun.objects.filter(status=TrainingRun.Status.FAILED).count() == 1


def test_data_waiting_long_with_no_successful_run_is_failing(alive, demo, settings):
    batch = ingest_path(demo.write("waiting.csv", slice(2000, 2100)))
    assert statuses(health.report())["last_success"] == health.OK
    DataBatch.objects.filter(pk=batch.pk).update(uploaded_at=timezone.now() - timedelta(hours=settings.CL_ALERT_NO_SUCCESS_HOURS + 1))
    TrainingRun.objects.update(finished_at=timezone.now() - timedelta(hours=settings.CL_ALERT_NO_SUCCESS_HOURS + 2))

    check = next(c for c in health.report().checks if c.name == "last_success")

    assert check.status == health.FAILING and "1 staged file(s) waiting" in check.summary
    assert "Retrain now" in check.fix


def test_a_deploy_stands_when_a_mirror_folder_is_a_plain_file_and_the_mirror_is_repaired(alive, demo, cl_home):
    active_dir = cl_home / "models" / "active"
    for path in active_dir.iterdir():
        path.unlink()
    active_dir.rmdir()
    active_dir.write_text("someone made this a file")
    ingest_path(demo.write("good.csv", slice(2000, 2600)))

    run = retrain_now()

    assert run.status == TrainingRun.Status.DEPLOYED, (run.error, run.reasons)  # reported as done
    assert ModelVersion.active().version == "1.1"
    assert active_dir.is_dir()  # the folder is back, the file moved aside
    assert json.loads((active_dir / "metadata.json").read_text())["version"] == "1.1"
    assert [p.name for p in (cl_home / "models").glob("active.not-a-folder-*")]
    assert health.report().checks and statuses(health.report())["mirrors"] == health.OK


def test_stale_mirrors_are_found_and_rewritten_by_health_repair(alive, cl_home):
    (cl_home / "logs" / "deployments.json").write_text("[]")
    (cl_home / "models" / "active" / "model.joblib").write_bytes(b"not the model")

    check = next(c for c in health.report().checks if c.name == "mirrors")
    assert check.status == health.WARNING and "model.joblib is not v1.0's artifact" in check.summary

    code, out, _ = run_command("health", "--repair")
    assert code == 0 and "repaired" in out
    assert statuses(health.report())["mirrors"] == health.OK
    assert (cl_home / "models/active/model.joblib").read_bytes() == (cl_home / "models/versions/model_v1_0.joblib").read_bytes()


def test_the_status_page_shows_each_check_and_lets_ml_engineers_set_the_schedule(alive, users):
    viewer, engineer = Client(), Client()
    viewer.force_login(users["viewer"])
    engineer.force_login(users["engineer"])

    page = viewer.get(reverse("status")).content.decode()
    assert "Worker" in page and "alive: last heartbeat" in page and "Disk and clean-up" in page
    assert "Save the schedule" not in page
    assert viewer.post(reverse("schedule_change"), {"kind": "off"}).status_code == 403
    assert "Save the schedule" in engineer.get(reverse("status")).content.decode()

    response = engineer.post(reverse("schedule_change"), {"kind": "weekly", "day": "tue", "at": "03:30"}, follow=True)
    assert "Saved: retraining schedule: every Tuesday at 03:30" in response.content.decode()
    assert schedule.current().cron == "30 3 * * 2"
    event = AuditEvent.objects.get(action="schedule.changed")
    assert (event.actor, event.details["old"], event.details["new"]) == (users["engineer"], "daily at 02:00", "every Tuesday at 03:30")

    response = engineer.post(reverse("schedule_change"), {"kind": "cron", "cron": "every hour"}, follow=True)
    assert "is not a five-field cron expression" in response.content.decode()
    engineer.post(reverse("schedule_change"), {"kind": "off"})
    assert schedule.current() is None
    assert "off: retraining runs only when someone asks" in viewer.get(reverse("status")).content.decode()


def test_the_overview_says_healthy_or_names_what_needs_attention(alive, users):
    client = Client()
    client.force_login(users["viewer"])
    health.forget()
    assert "Healthy" in client.get(reverse("overview")).content.decode()
    WorkerBeat.objects.update(beat_at=timezone.now() - timedelta(minutes=10))
    health.forget()
    page = client.get(reverse("overview")).content.decode()
    assert "Needs attention" in page and "silent for" in page


def test_a_silent_worker_while_the_broker_is_down_is_told_to_start_the_broker_first():
    from ops.health import FAILING, OK, Check, _blame_the_broker

    worker = Check("worker", "Worker", FAILING, "silent for 4 minutes", "start the worker")
    checks = [worker, Check("broker", "Task broker", FAILING, "Redis at 127.0.0.1:1 does not answer")]
    _blame_the_broker(checks)
    assert worker.fix.startswith("the task broker is down") and worker.fix.endswith("start the worker")

    alone = Check("worker", "Worker", FAILING, "silent for 4 minutes", "start the worker")
    _blame_the_broker([alone, Check("broker", "Task broker", OK, "answers")])
    assert alone.fix == "start the worker"
