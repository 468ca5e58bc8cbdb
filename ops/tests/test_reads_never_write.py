"""Reads never write: however unhealthy the loop, /status/ and /healthz only show it, and
importing the settings or clsite.wsgi leaves CL_HOME as it was. Alerts are raised by the
watchdog and `manage.py health`; repairs are ops.repairs.repair(), run by start-up and the
watchdog."""
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone
from django_q.models import Schedule

from audit.models import AuditEvent
from ingestion.models import DataBatch
from ingestion.services import ingest_path
from modelhub.models import TrainingRun
from ops import health, watch
from ops.models import Alert, WorkerBeat

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def broken(initialised, users, demo, cl_home, settings):
    """Every kind of trouble a repair or an alert acts on, all at once."""
    users["engineer"].email = "engineer@example.com"
    users["engineer"].save(update_fields=["email"])
    watch.beat()
    WorkerBeat.objects.update(beat_at=timezone.now() - timedelta(minutes=10))  # the worker is silent
    long_ago = timezone.now() - timedelta(hours=settings.CL_ALERT_NO_SUCCESS_HOURS + 2)
    batch = ingest_path(demo.write("waiting.csv", slice(2000, 2100)))
    DataBatch.objects.filter(pk=batch.pk).update(uploaded_at=long_ago)  # data waits, no success for days
    TrainingRun.objects.update(finished_at=long_ago - timedelta(hours=1))
    TrainingRun.objects.create(trigger=TrainingRun.Trigger.SCHEDULE, status=TrainingRun.Status.FAILED, error="MemoryError",
                               started_at=long_ago, finished_at=long_ago)
    TrainingRun.objects.create(trigger=TrainingRun.Trigger.SCHEDULE, status=TrainingRun.Status.RUNNING,  # its worker died
                               started_at=timezone.now() - timedelta(minutes=20), heartbeat_at=timezone.now() - timedelta(minutes=5))
    (cl_home / "logs" / "deployments.json").write_text("[]")  # a stale mirror
    Schedule.objects.filter(name__in=["watchdog", "cleanup"]).delete()  # missing system schedules
    mail.outbox.clear()
    return users


def state(cl_home: Path) -> dict:
    return {
        "alerts": list(Alert.objects.values_list("key", "opened_at", "resolved_at", "sent_at")),
        "audit": list(AuditEvent.objects.values_list("pk", flat=True)),
        "mail": len(mail.outbox),
        "runs": list(TrainingRun.objects.order_by("pk").values_list("pk", "status", "error", "finished_at")),
        "schedules": list(Schedule.objects.order_by("pk").values_list("pk", "name", "next_run")),
        "files": files(cl_home),
    }


def files(folder: Path) -> dict:
    return {str(path.relative_to(folder)): (path.is_dir(), path.stat().st_size if path.is_file() else 0, path.stat().st_mtime_ns)
            for path in sorted(folder.rglob("*"))}


def test_the_status_page_and_healthz_show_a_failing_loop_and_change_nothing(broken, cl_home):
    before = state(cl_home)
    engineer, viewer = Client(), Client()
    engineer.force_login(broken["engineer"])
    viewer.force_login(broken["viewer"])
    before["audit"] = list(AuditEvent.objects.values_list("pk", flat=True))  # logging in may be audited

    page = engineer.get("/status/")
    assert page.status_code == 200 and "silent for" in page.content.decode() and "heartbeat stopped" in page.content.decode()
    assert viewer.get("/status/").status_code == 200
    health.forget()
    response = Client().get("/healthz")
    assert response.status_code == 503
    assert set(response.json()["failing"]) >= {"worker", "runs", "last_success"}

    assert state(cl_home) == before
    assert not Alert.objects.exists() and mail.outbox == []

    # The same state is what the watchdog acts on: it repairs and tells people.
    done = watch.tick()
    assert done["repaired"]["runs"]["failed_stale"] and "watchdog" in done["repaired"]["schedules"] and done["repaired"]["mirrors"]
    assert {"runs-failing", "check-last_success"} <= set(done["alerts"]["opened"])  # it beats: the worker is alive again
    assert mail.outbox and Alert.objects.filter(resolved_at=None).exists()


def test_the_health_command_says_it_raises_alerts(broken):
    from modelhub.tests.commands import run_command

    code, out, _ = run_command("health", "--help")
    assert code == 0 and "raises the alerts" in " ".join(out.split())
    code, out, _ = run_command("health")
    assert code == 1 and "alerts raised (mailed to the ML engineers): " in out and "worker-silent" in out
    assert Alert.objects.filter(key="worker-silent", resolved_at=None).exists() and mail.outbox


def python(code: str, **env: str) -> subprocess.CompletedProcess:
    """`python -c code` in a fresh process with the real settings and only the given variables."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "REDIS_URL", "CL_"))}
    environment.update(DJANGO_SETTINGS_MODULE="clsite.settings", **env)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120)


def test_a_development_key_is_the_same_in_every_process_and_never_written(tmp_path):
    show = "from django.conf import settings; print(settings.SECRET_KEY)"
    first = python(show, CL_HOME=str(tmp_path), DJANGO_DEBUG="true")
    second = python(show, CL_HOME=str(tmp_path), DJANGO_DEBUG="true")
    assert first.returncode == 0, first.stderr
    assert len(first.stdout.strip()) >= 50 and first.stdout == second.stdout  # sessions survive a restart
    assert [p.name for p in tmp_path.iterdir()] == ["tmp"]  # the folders the database and Django's checks need; no key file
    (tmp_path / "secret_key").write_text("kept-by-make-run-" + "x" * 40 + "\n")
    assert python(show, CL_HOME=str(tmp_path), DJANGO_DEBUG="false").stdout.strip() == "kept-by-make-run-" + "x" * 40
    refused = python(show, CL_HOME=str(tmp_path / "prod"), DJANGO_DEBUG="false")
    assert refused.returncode == 1 and "DJANGO_SECRET_KEY is not set" in refused.stderr


@pytest.mark.slow
def test_importing_the_wsgi_application_writes_nothing_under_cl_home(tmp_path):
    home = tmp_path / "home"
    env = {"CL_HOME": str(home), "DJANGO_DEBUG": "true"}
    migrated = python("from django.core.management import execute_from_command_line as run; run(['manage.py', 'migrate', '-v', '0'])",
                      **env)
    assert migrated.returncode == 0, migrated.stderr
    before = files(home)

    imported = python("import clsite.wsgi", **env)

    assert imported.returncode == 0, imported.stderr
    assert files(home) == before
