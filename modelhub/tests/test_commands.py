"""The model hub's commands as a shell runs them: output, stderr and exit codes."""
import os
import subprocess
import sys
import threading
import time
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.utils import timezone
from django_q.models import Schedule

from ingestion.services import ingest_path
from modelhub import training
from modelhub.models import Deployment, ModelVersion, TrainingRun

from .commands import run_command
from .helpers import HUB_ROWS, deployed_copy


def test_a_refused_command_exits_1_with_its_reason_on_stderr_in_a_real_process(tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "clsite.test_settings", "CL_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "manage.py", "rollback", "--at", "yesterday"], cwd=settings.BASE_DIR, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stdout == ""
    # A fresh CL_HOME: no database tables yet, and the command says what to do about it.
    assert done.stderr.strip() == "CommandError: the database is not set up: run `manage.py migrate` first (`make run` does it)"


def test_every_command_has_help():
    for command, option in (("rollback", "--version VERSION"), ("retrain", "--force"), ("schedule_retraining", "--weekly DAY HH:MM"),
                            ("init_cl_system", "--model MODEL")):
        code, out, _ = run_command(command, "--help")
        assert code == 0 and option in out, command
    assert "the version to make active" in run_command("rollback", "--help")[1]  # ours, not Django's --version


def test_rollback_list_shows_versions_and_the_ledger_as_a_table(hub):
    deployed_copy(reason="monthly refresh")
    code, out, err = run_command("rollback", "--list")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["version", "status", "accuracy", "auc", "trained", "deployed", "estimator"]
    assert lines[1].split()[:3] == ["v1.1", "active", f"{hub.metrics['accuracy']:.3f}"]
    assert lines[2].split()[:2] == ["v1.0", "retired"]
    assert "deployments (newest first):" in lines
    ledger = lines[lines.index("deployments (newest first):") + 1:]
    assert "deploy" in ledger[0] and "v1.0 -> v1.1" in ledger[0] and ledger[0].rstrip().endswith("monthly refresh")
    assert "initial" in ledger[1] and "- -> v1.0" in ledger[1]


def test_rollback_goes_to_the_previous_version_or_the_one_named(hub):
    deployed_copy()
    deployed_copy()
    code, out, _ = run_command("rollback")
    assert code == 0 and "rolled back: v1.2 -> v1.1 is active" in out
    code, out, _ = run_command("rollback", "--version", "1.0", "--reason", "bad week")
    assert code == 0 and "rolled back: v1.1 -> v1.0 is active" in out
    last = Deployment.objects.order_by("-created_at", "-id").first()
    assert (last.kind, last.reason, last.user) == ("rollback", "bad week", None)
    code, out, _ = run_command("rollback", "--version", "v1.2")
    assert code == 0 and ModelVersion.active().version == "1.2"
    assert Deployment.objects.order_by("-created_at", "-id").first().reason == "rollback"


def test_rollback_errors_exit_1_with_the_reason_on_stderr_and_change_nothing(hub):
    code, out, err = run_command("rollback")
    assert (code, out) == (1, "") and "there is no earlier version to roll back to" in err
    deployed_copy()
    for args, message in ((["--version", "9.9"], "there is no version 9.9; `rollback --list` shows them"),
                          (["--version", "banana"], "'banana' is not a version number like 1.2"),
                          (["--version", "1.1"], "v1.1 is already the active version"),
                          (["--list", "--version", "1.0"], "leave out --version"),
                          (["--at", "last tuesday"], "'last tuesday' is not a date and time like 2026-11-20 14:00")):
        code, out, err = run_command("rollback", *args)
        assert (code, out) == (1, ""), args
        assert err.startswith("CommandError: ") and message in err, (args, err)
    assert ModelVersion.active().version == "1.1"
    assert Deployment.objects.count() == 2


def test_rollback_at_tells_which_version_was_live_and_changes_nothing(hub):
    deployed_copy()
    initial, second = Deployment.objects.order_by("created_at", "id")
    Deployment.objects.filter(pk=initial.pk).update(created_at=timezone.make_aware(datetime(2026, 11, 20, 10, 0)))
    Deployment.objects.filter(pk=second.pk).update(created_at=timezone.make_aware(datetime(2026, 11, 20, 14, 0)))
    for at, expected in (("2026-11-20 09:59", "no model"), ("2026-11-20 10:00", "v1.0"), ("2026-11-20 13:59", "v1.0"),
                         ("2026-11-20 14:00", "v1.1"), ("2026-12-01T08:30", "v1.1")):
        code, out, _ = run_command("rollback", "--list", "--at", at)
        assert code == 0 and out.startswith(f"live at {at[:10]} {at[11:16]}") and out.rstrip().endswith(f": {expected}"), (at, out)
    # Without --list too: a question never rolls anything back.
    code, out, _ = run_command("rollback", "--at", "2026-11-20 12:00")
    assert code == 0 and out.rstrip().endswith(": v1.0")
    assert ModelVersion.active().version == "1.1" and Deployment.objects.count() == 2


def test_retrain_exits_0_when_deployed_or_skipped_3_when_rejected_1_when_failed(hub, demo, cl_home):
    code, out, _ = run_command("retrain")
    assert code == 0 and "skipped: no new data was staged" in out

    ingest_path(demo.write("good.csv", slice(HUB_ROWS.stop, HUB_ROWS.stop + 400)))
    code, out, err = run_command("retrain")
    assert code == 0, err
    assert "deployed v1.1" in out
    for stage in ("merge", "train", "evaluate", "drift", "gates", "deploy"):
        assert any(line.split()[:1] == [stage] and line.split()[1].endswith("s") for line in out.splitlines()), stage
    version = ModelVersion.active()
    assert version.version == "1.1" and not version.imported
    assert [c["name"] for c in version.candidates] == [c.name for c in training.CANDIDATES]
    assert all(0.5 < c["cv_auc"] <= 1 for c in version.candidates)
    assert [c["name"] for c in version.candidates if c.get("chosen")] == [version.estimator]
    assert set(version.validation["comparison"]["accuracy"]) == {"delta", "low", "high"}
    log = (cl_home / "logs/retraining.log").read_text().splitlines()
    run = TrainingRun.objects.get(candidate=version)
    assert [line.split()[2] for line in log if f"run={run.pk} stage=" in line] == [
        "stage=merge", "stage=train", "stage=calibrate", "stage=evaluate", "stage=drift", "stage=gates", "stage=deploy"]
    assert any(f"run={run.pk} outcome=deployed" in line for line in log)

    ingest_path(demo.flipped("flipped.csv", slice(HUB_ROWS.stop + 400, HUB_ROWS.stop + 700)))
    code, out, err = run_command("retrain")
    assert code == 3
    assert "candidate v1.2 rejected; its new batches are held:" in err and "suspected label problems" in err
    assert ModelVersion.active().version == "1.1"

    # A run already running elsewhere: the command waits for it and reports how it ended.
    elsewhere = TrainingRun.objects.create(trigger=TrainingRun.Trigger.SCHEDULE, status=TrainingRun.Status.RUNNING,
                                           started_at=timezone.now(), heartbeat_at=timezone.now(), worker="another-host:1")

    def it_ends():
        time.sleep(1.5)
        TrainingRun.objects.filter(pk=elsewhere.pk).update(status=TrainingRun.Status.FAILED, error="out of memory",
                                                            finished_at=timezone.now())
        connection.close()

    ender = threading.Thread(target=it_ends)
    ender.start()
    code, out, err = run_command("retrain", "--force")
    ender.join()
    assert f"run {elsewhere.pk} is already running; waiting for it to end" in out
    assert code == 1 and f"run {elsewhere.pk}: failed: out of memory" in err


def test_schedule_retraining_sets_shows_and_turns_off_the_one_schedule(empty_db):
    code, out, _ = run_command("schedule_retraining", "--daily", "03:30")
    assert code == 0 and "daily at 03:30" in out and Schedule.objects.get().cron == "30 3 * * *"
    code, out, _ = run_command("schedule_retraining", "--weekly", "Monday", "02:00")
    assert code == 0 and "every Monday at 02:00" in out and Schedule.objects.get().cron == "0 2 * * 1"
    code, out, _ = run_command("schedule_retraining", "--cron", "0  */6 * * *")
    assert code == 0 and Schedule.objects.get().cron == "0 */6 * * *"
    schedule = Schedule.objects.get()
    assert (schedule.name, schedule.func, schedule.repeats) == ("retraining", "modelhub.tasks.scheduled_retraining", -1)
    assert schedule.next_run > timezone.now()
    for args, message in ((["--daily", "25:00"], "'25:00' is not a time like 02:00"),
                          (["--weekly", "someday", "02:00"], "'someday' is not a day of the week"),
                          (["--cron", "61 * * * *"], "is not a five-field cron expression"),
                          (["--cron", "* * * * * *"], "is not a five-field cron expression")):
        code, out, err = run_command("schedule_retraining", *args)
        assert code == 1 and message in err, (args, err)
    assert Schedule.objects.get().cron == "0 */6 * * *"
    code, out, _ = run_command("schedule_retraining", "--show")
    assert code == 0 and "cron '0 */6 * * *'" in out
    code, out, _ = run_command("schedule_retraining", "--off")
    assert code == 0 and "off" in out and not Schedule.objects.exists()


def test_every_command_before_set_up_says_what_to_run_instead_of_a_traceback(empty_db, tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_text("a,b\n1,2\n")
    for args in (["retrain"], ["rollback"], ["rollback", "--list"], ["data_stats"], ["ingest", str(csv)]):
        code, out, err = run_command(*args)
        assert code == 1, args
        assert "not initialised yet" in err and "init_cl_system" in err, (args, err)
        assert "Traceback" not in err, args


def test_a_closed_pipe_ends_a_listing_quietly(hub, settings):
    env = {**os.environ, "DJANGO_SECRET_KEY": "x", "CL_HOME": str(settings.CL_HOME),
           "DATABASE_URL": f"sqlite:///{settings.DATABASES['default']['NAME']}"}
    # `true` reads nothing and is gone long before Django has started: every write meets a closed pipe.
    done = subprocess.run(f"{sys.executable} manage.py rollback --list | true", shell=True, cwd=settings.BASE_DIR, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.stderr == ""
    done = subprocess.run(f"{sys.executable} manage.py rollback --list | head -n 1", shell=True, cwd=settings.BASE_DIR, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("version") and done.stderr == ""
