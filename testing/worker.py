"""A site of its own for `manage.py` subprocesses, and the real django-q2 worker (`manage.py qcluster`) on it.

The worker is another process, so tests that run it cannot use pytest-django's database: a `Site`
is a throw-away CL_HOME with a database (and, for the Redis broker, a Redis database) of the
test's own, used only by the `manage.py` subprocesses it starts, never by the test process's
Django. What differs between tests (the database URL, the broker, the secret key, the time
zone) are constructor arguments.

Nothing here imports Django, so a test may use it whatever its own settings are.
"""
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARK = "RESULT:"  # `Site.shell` reads the lines of a snippet's output that start with this, as JSON

# The settings a site sets itself: never inherited from the environment the tests run in.
_OWN = {"DATABASE_URL", "REDIS_URL", "CL_HOME", "DJANGO_SETTINGS_MODULE", "DJANGO_DEBUG", "Q_WORKERS", "CL_RUN_TIMEOUT_MINUTES"}

# Ingests a CSV file (format with `path`), as `manage.py ingest` does.
INGEST = """
from django.core.management import call_command
call_command("ingest", {path!r})
"""

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


class Site:
    """One CL_HOME and database, used by manage.py subprocesses (never by this process's Django).

    `redis_url` makes django-q2 use the Redis broker (without it, the ORM broker in the database);
    `time_zone`, when given, is the site's TIME_ZONE.
    """

    def __init__(self, home: Path, database_url: str, *, secret: str, redis_url: str = "", time_zone: str = ""):
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if k not in _OWN}
        self.env.update(CL_HOME=str(home), DATABASE_URL=database_url, DJANGO_SECRET_KEY=secret,
                        DJANGO_SETTINGS_MODULE="clsite.settings", PYTHONUNBUFFERED="1")
        if redis_url:
            self.env["REDIS_URL"] = redis_url
        if time_zone:
            self.env["TIME_ZONE"] = time_zone
        self.worker_log = home / "worker.log"

    def manage(self, *args: str, timeout: float = 240) -> str:
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        assert done.returncode == 0, f"manage.py {args[0]} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def shell(self, *snippets: str) -> dict:
        """Runs the snippets, one after the other, in one `manage.py shell`; returns what they printed after MARK."""
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


class SiteTemplate:
    """A site on SQLite after `migrate` and `init_cl_system` on the first 2,000 demo rows (model
    v1.0 trained), made once and copied into each site that starts from there: the copy is the
    state those two commands leave, in milliseconds instead of half a minute of processes.

    `time_zone` is the site's, as for `Site` (the schedule's next run is worked out in it).
    """

    def __init__(self, folder: Path, *, time_zone: str = ""):
        self.home = folder / "cl_home"
        self.home.mkdir(parents=True)
        self.db_file = folder / "site.sqlite3"
        csv = folder / "initial.csv"
        import pandas as pd  # here, not at the top: this module imports nothing heavy for the tests that only start processes

        demo = ROOT / "demo" / "telco_churn.csv"
        pd.read_csv(demo, dtype=str, keep_default_na=False).iloc[0:2000].to_csv(csv, index=False)
        site = Site(self.home, f"sqlite:///{self.db_file}", secret="site-template-secret-key", time_zone=time_zone)
        site.manage("migrate", "--no-input", "-v", "0")
        self.init_output = site.manage("init_cl_system", "--data", str(csv), "--target", "churn", "--id-column", "customer_id")
        assert "v1.0" in self.init_output, self.init_output

    def copy_to(self, home: Path, db_file: Path) -> None:
        """This state into a site's CL_HOME `home` and SQLite file `db_file` (made or replaced)."""
        import shutil
        import sqlite3

        shutil.copytree(self.home, home, dirs_exist_ok=True)
        db_file.unlink(missing_ok=True)
        source, target = sqlite3.connect(self.db_file), sqlite3.connect(db_file)
        try:
            source.backup(target)
        finally:
            source.close()
            target.close()


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


def wait_for(check, *, timeout: float, what: str, site: Site, proc: subprocess.Popen | None = None, every: float = 0.5):
    """Poll `check()` until it returns something truthy; fail with the worker's log otherwise
    (and at once if `proc`, the worker, exits meanwhile).

    `check.last`, if the check sets it, is what it last saw, for the message when time runs out.
    The one wait loop of the tests that drive processes: wait on the condition, never the clock.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if proc is not None:
            assert proc.poll() is None, f"the worker exited ({proc.returncode}) while waiting for {what}\n{site.log_tail()}"
        last = getattr(check, "last", None)
        assert time.monotonic() < deadline, f"waited {timeout:.0f}s for {what}; last saw {last!r}\n{site.log_tail()}"
        time.sleep(every)
