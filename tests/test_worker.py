"""The real django-q2 worker (`manage.py qcluster`) on SQLite with the ORM broker.

The worker is another process, so this test does not use pytest-django's database: it makes a
CL_HOME and a SQLite file of its own with `migrate` and `init_cl_system`, drives the system the
way people do (the web's "Retrain now" view, uploads, the schedule) through `manage.py shell`,
and reads the rows the worker writes straight from the SQLite file.

django-q2's scheduler looks at the schedules every ~30 seconds, so the test starts the worker as
soon as the tables exist and overlaps the rest of the set-up with that wait.
"""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path

from testing import builders

ROOT = Path(__file__).resolve().parent.parent
MARK = "RESULT:"
SECRET = "worker-test-secret-key-not-used-anywhere-else"

# Logs in an ML engineer and presses "Retrain now": the view creates the queued run and
# enqueues modelhub.tasks.run_queued_retraining, exactly as in production.
RETRAIN_VIA_WEB = """
import json
from django.contrib.auth import get_user_model
from django.test import Client
from django_q.brokers import get_broker
from modelhub import roles
user, _ = get_user_model().objects.get_or_create(username="worker-test-engineer")
roles.assign_role(user, roles.ML_ENGINEER)
client = Client(HTTP_HOST="127.0.0.1")
client.force_login(user)
response = client.post("/runs/start/")
broker = get_broker()
print("RESULT:" + json.dumps({"code": response.status_code, "location": response.get("Location", ""),
                              "broker": type(broker).__name__, "queued": broker.queue_size()}))
"""

# Makes the "retraining" schedule due now, as if its time had come.
SCHEDULE_DUE = """
import json
from datetime import timedelta
from django.utils import timezone
from django_q.models import Schedule
from modelhub import schedule
due = Schedule.objects.filter(name=schedule.NAME, func=schedule.TASK).update(next_run=timezone.now() - timedelta(minutes=5))
print("RESULT:" + json.dumps({"due": due}))
"""

INGEST = """
from django.core.management import call_command
call_command("ingest", {path!r})
"""


def afternoon_zone() -> str:
    offset = (14 - datetime.now(timezone.utc).hour) % 24
    offset = offset - 24 if offset > 14 else offset
    return "UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


class Site:
    """One CL_HOME and database, used by manage.py subprocesses (never by this process's Django)."""

    def __init__(self, home: Path, database_url: str, redis_url: str = ""):
        self.home = home
        drop = {"DATABASE_URL", "REDIS_URL", "CL_HOME", "DJANGO_SETTINGS_MODULE", "DJANGO_DEBUG", "Q_WORKERS", "Q_TIMEOUT"}
        self.env = {k: v for k, v in os.environ.items() if k not in drop}
        self.env.update(CL_HOME=str(home), DATABASE_URL=database_url, DJANGO_SECRET_KEY=SECRET,
                        DJANGO_SETTINGS_MODULE="clsite.settings", PYTHONUNBUFFERED="1")
        if redis_url:
            self.env["REDIS_URL"] = redis_url
        # The schedule's own time (02:00 on the site's clock) must not come round during the test:
        # run the site in a zone where it is early afternoon now.
        self.env["TIME_ZONE"] = afternoon_zone()
        self.worker_log = home / "worker.log"

    def manage(self, *args: str, timeout: float = 240) -> str:
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        assert done.returncode == 0, f"manage.py {args[0]} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def shell(self, *snippets: str) -> dict:
        out = self.manage("shell", "-c", "\n".join(snippets))
        result = {}
        for line in out.splitlines():
            if line.startswith(MARK):
                result.update(json.loads(line[len(MARK):]))
        return result

    @contextmanager
    def worker(self):
        """`manage.py qcluster` in its own process group; always stopped, the whole group, on the way out."""
        with open(self.worker_log, "wb") as log:
            proc = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=self.env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            stop_group(proc)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.worker_log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no worker log)"


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to qcluster itself (it stops its own children within seconds), then SIGKILL whatever is left of the group.

    (A SIGTERM to the whole group kills the children under the sentinel, which then waits for them forever.)
    """
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(timeout=10)


def wait_for(check, *, timeout: float, what: str, site: Site, proc: subprocess.Popen, every: float = 0.5):
    """Poll `check()` until it returns something truthy; fail with the worker's log otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert proc.poll() is None, f"the worker exited ({proc.returncode}) while waiting for {what}\n{site.log_tail()}"
        assert time.monotonic() < deadline, f"waited {timeout:.0f}s for {what}; last saw {check.last!r}\n{site.log_tail()}"
        time.sleep(every)


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


def test_the_real_worker_runs_requested_and_scheduled_retrainings(tmp_path):
    home = tmp_path / "cl_home"
    home.mkdir()
    db_file = home / "worker.sqlite3"
    site = Site(home, f"sqlite:///{db_file}")
    demo = builders.DemoData(tmp_path / "csv")
    initial = demo.write("initial.csv", slice(0, 2000))
    first = demo.write("requested_batch.csv", slice(2000, 2600))
    second = demo.write("scheduled_batch.csv", slice(3100, 3700))
    rows = SQLiteRows(db_file)

    site.manage("migrate", "--no-input", "-v", "0")
    with site.worker() as proc:
        # The worker starts while v1.0 trains, so its first scheduler pass (~30 s) comes sooner.
        out = site.manage("init_cl_system", "--data", str(initial), "--target", "churn", "--id-column", "customer_id")
        assert "v1.0" in out
        assert rows.active_versions() == ["1.0"]
        assert proc.poll() is None, site.log_tail()

        # (a) a batch is uploaded and an ML engineer presses "Retrain now" on the web; then the
        # schedule falls due. The worker runs the requested run first, then the scheduled one.
        queued = site.shell(INGEST.format(path=str(first)), RETRAIN_VIA_WEB, SCHEDULE_DUE)
        assert queued["code"] == 302, queued
        assert queued["broker"] == "ORM", queued
        assert queued["due"] == 1, queued
        requested_id = int(queued["location"].rstrip("/").rsplit("/", 1)[1])
        requested = wait_for(finished(rows, requested_id), timeout=120, what=f"requested run {requested_id}", site=site, proc=proc)
        assert requested["trigger"] == "manual"
        assert requested["status"] == "deployed", requested
        assert rows.active_versions() == ["1.1"]
        assert json.loads((home / "models/active/metadata.json").read_text())["version"] == "1.1"
        assert rows.query("SELECT status FROM ingestion_databatch WHERE original_name = 'requested_batch.csv'") == [{"status": "merged"}]

        # (b) the scheduled retraining, with nothing staged: the worker runs it and it is skipped.
        skipped = wait_for(scheduled_run_after(rows, requested_id), timeout=90, what="the scheduled run (no data)", site=site, proc=proc)
        assert skipped["status"] == "skipped", skipped
        assert rows.active_versions() == ["1.1"]
        schedule_row = rows.query("SELECT func, cron, repeats, task FROM django_q_schedule WHERE name = 'retraining'")
        assert len(schedule_row) == 1 and schedule_row[0]["task"], schedule_row
        assert schedule_row[0]["repeats"] == -1 and schedule_row[0]["cron"] == "0 2 * * *"
        task = rows.query("SELECT func, success, result FROM django_q_task WHERE id = ?", schedule_row[0]["task"])
        assert task and task[0]["func"] == "modelhub.tasks.scheduled_retraining" and task[0]["success"] == 1, task

        # (c) a staged batch and the schedule due again: the scheduled run deploys v1.2.
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
