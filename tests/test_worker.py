"""The real django-q2 worker (`manage.py qcluster`) on SQLite with the ORM broker.

The worker is another process, so this test does not use pytest-django's database: it makes a
CL_HOME and a SQLite file of its own (a copy of what `migrate` and `init_cl_system` made once
for the run: conftest's `site_template`), drives the system the
way people do (the web's "Retrain now" view, uploads, the schedule) through `manage.py shell`,
and reads the rows the worker writes straight from the SQLite file.

django-q2's cluster looks at the schedules 30 seconds after it starts and every 30 seconds after
that (its guard loop counts its cycles up to 30 s, whatever `guard_cycle` is). The test starts
the worker as soon as the site exists and does all else before that first pass: the requested
run, then a scheduled run taken up by that same pass (`django_q.scheduler.scheduler`) called at
once from `manage.py shell`; the cluster's own first pass then takes up the second scheduled run.
"""
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from testing import builders
from testing.killed import kill_mid_training_then_restart
from testing.worker import INGEST, RETRAIN_VIA_WEB, Site, wait_for

pytestmark = pytest.mark.slow  # the real worker, in processes of its own

SECRET = "worker-test-secret-key-not-used-anywhere-else"

# Makes the "retraining" schedule due now, as if its time had come.
SCHEDULE_DUE = """
import json
from datetime import timedelta
from django.utils import timezone
from django_q.models import Schedule
from clsite import schedules as schedule
due = Schedule.objects.filter(name=schedule.NAME, func=schedule.TASK).update(next_run=timezone.now() - timedelta(minutes=5))
print("RESULT:" + json.dumps({"due": due}))
"""

# The cluster's scheduler pass, now: the due schedule becomes a task on the site's broker, and
# its next run moves on to the next 02:00. (Two passes at once, this and the cluster's own, make
# one task: each takes the schedules with select_for_update in an IMMEDIATE transaction.)
SCHEDULER_PASS = """
import json
from django.utils import timezone
from django_q.models import Schedule
from django_q.scheduler import scheduler
from clsite import schedules as schedule
last_task = Schedule.objects.get(name=schedule.NAME).task
scheduler()
taken = Schedule.objects.get(name=schedule.NAME)
print("RESULT:" + json.dumps({"taken_up": taken.task != last_task and taken.next_run > timezone.now()}))
"""


class SQLiteRows:
    """Reads the worker's SQLite file directly (WAL: reading never blocks the worker)."""

    def __init__(self, path: Path):
        self.path = path

    def query(self, sql: str, *params):
        with closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute(sql, params)]

    def runs(self):
        return self.query('SELECT id, status, "trigger", error, reasons FROM modelhub_trainingrun ORDER BY id')

    def run(self, pk: int):
        rows = self.query('SELECT id, status, "trigger", error, reasons FROM modelhub_trainingrun WHERE id = ?', pk)
        return rows[0] if rows else None

    def active_versions(self):
        return [f"{r['major']}.{r['minor']}" for r in self.query("SELECT major, minor FROM modelhub_modelversion WHERE status = 'active'")]


def finished(rows: SQLiteRows, pk: int):
    def check():
        check.last = rows.run(pk)
        return check.last if check.last and check.last["status"] not in ("queued", "running") else None
    check.last = None
    return check


def scheduled_run_after(rows: SQLiteRows, after_id: int):
    def check():
        scheduled = [r for r in rows.runs() if r["id"] > after_id and r["trigger"] == "schedule"]
        check.last = scheduled
        done = [r for r in scheduled if r["status"] not in ("queued", "running")]
        return done[0] if done else None
    check.last = None
    return check


def scheduled_task_saved(rows: SQLiteRows):
    """The retraining schedule's row and the row of the task it last ran, once django-q2 has saved both."""
    def check():
        schedule_row = rows.query("SELECT func, cron, repeats, task FROM django_q_schedule WHERE name = 'retraining'")
        task = []
        if len(schedule_row) == 1 and schedule_row[0]["task"]:
            task = rows.query("SELECT func, success, result FROM django_q_task WHERE id = ?", schedule_row[0]["task"])
        check.last = (schedule_row, task)
        return (schedule_row, task) if task else None
    check.last = None
    return check


def test_the_real_worker_runs_requested_and_scheduled_retrainings(tmp_path, site_template):
    home = tmp_path / "cl_home"
    home.mkdir()
    db_file = home / "worker.sqlite3"
    # `migrate` and `init_cl_system` on the first 2,000 demo rows, made once per run and copied.
    template = site_template()
    template.copy_to(home, db_file)
    # The schedule's own time (02:00 on the site's clock) must not come round during the test:
    # run the site in the template's zone, where it is early afternoon now.
    site = Site(home, f"sqlite:///{db_file}", secret=SECRET, time_zone=template.time_zone)
    demo = builders.DemoData(tmp_path / "csv")
    first = demo.write("requested_batch.csv", slice(2000, 2600))
    second = demo.write("scheduled_batch.csv", slice(3100, 3700))
    rows = SQLiteRows(db_file)

    with site.worker() as proc:
        out = template.init_output
        assert "v1.0" in out
        assert rows.active_versions() == ["1.0"]
        assert proc.poll() is None, site.log_tail()

        # (a) a batch is uploaded and an ML engineer presses "Retrain now" on the web.
        queued = site.shell(INGEST.format(path=str(first)), RETRAIN_VIA_WEB)
        assert queued["code"] == 302, queued
        assert queued["broker"] == "ORM", queued
        requested_id = int(queued["location"].rstrip("/").rsplit("/", 1)[1])
        requested = wait_for(finished(rows, requested_id), timeout=120, what=f"requested run {requested_id}", site=site, proc=proc)
        assert requested["trigger"] == "manual"
        assert requested["status"] == "deployed", requested
        assert rows.active_versions() == ["1.1"]
        assert json.loads((home / "models/active/metadata.json").read_text())["version"] == "1.1"
        assert rows.query("SELECT status FROM ingestion_databatch WHERE original_name = 'requested_batch.csv'") == [{"status": "merged"}]

        # (b) then the schedule falls due, with nothing staged, and is taken up at once: the worker
        # runs the scheduled retraining and it is skipped.
        due = site.shell(SCHEDULE_DUE, SCHEDULER_PASS)
        assert due["due"] == 1 and due["taken_up"], due
        skipped = wait_for(scheduled_run_after(rows, requested_id), timeout=90, what="the scheduled run (no data)", site=site, proc=proc)
        assert skipped["status"] == "skipped", skipped
        assert rows.active_versions() == ["1.1"]
        # django-q2 saves the task's row (and the schedule's pointer to it) after the run's own row
        # says "skipped": wait for that, not for a while.
        schedule_row, task = wait_for(scheduled_task_saved(rows), timeout=60, what="django-q2 to save the scheduled task",
                                      site=site, proc=proc)
        assert len(schedule_row) == 1 and schedule_row[0]["task"], schedule_row
        assert schedule_row[0]["repeats"] == -1 and schedule_row[0]["cron"] == "0 2 * * *"
        assert task and task[0]["func"] == "modelhub.tasks.scheduled_retraining" and task[0]["success"] == 1, task

        # (c) a staged batch and the schedule due again, taken up by the cluster's own pass (at
        # most 30 s away): the scheduled run deploys v1.2.
        due = site.shell(INGEST.format(path=str(second)), SCHEDULE_DUE)
        assert due["due"] == 1
        deployed = wait_for(scheduled_run_after(rows, skipped["id"]), timeout=90, what="the scheduled run (staged batch)", site=site, proc=proc)
        assert deployed["status"] == "deployed", deployed
        assert rows.active_versions() == ["1.2"]
        assert json.loads((home / "models/active/metadata.json").read_text())["version"] == "1.2"
        assert rows.query("SELECT status FROM ingestion_databatch WHERE original_name = 'scheduled_batch.csv'") == [{"status": "merged"}]
        ledger = json.loads((home / "logs/deployments.json").read_text())
        assert [row["to_version"] for row in ledger] == ["1.0", "1.1", "1.2"]
        assert [r["trigger"] for r in rows.runs()] == ["init", "manual", "schedule", "schedule"]
        assert not rows.query("SELECT id FROM django_q_task WHERE success = 0")
    assert proc.poll() is not None


def test_a_worker_killed_mid_training_loses_nothing_and_its_run_is_failed_at_the_next_start(tmp_path, site_template):
    home = tmp_path / "cl_home"
    home.mkdir()
    db_file = home / "worker.sqlite3"
    template = site_template()
    site = Site(home, f"sqlite:///{db_file}", secret=SECRET, time_zone=template.time_zone)
    template.copy_to(home, db_file)
    rows = SQLiteRows(db_file)

    def one(sql, *args):
        found = rows.query(sql.replace("%s", "?"), *args)
        return tuple(found[0].values()) if found else None

    outcome = kill_mid_training_then_restart(site, tmp_path / "csv", one, initialised=template.init_output)

    assert outcome["failed_after_seconds"] < 60, outcome
    assert outcome["active"] == (1, 1) and outcome["batch"] == "merged"
