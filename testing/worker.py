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
from datetime import datetime, timezone
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

# Makes a user with a role (a modelhub.roles constant's name) and an API token for it; prints the token.
API_TOKEN = """
import json
from django.contrib.auth import get_user_model
from api.services import create_token
from modelhub import roles
user, _ = get_user_model().objects.get_or_create(username={username!r})
roles.assign_role(user, getattr(roles, {role!r}))
print("RESULT:" + json.dumps({{"token": create_token(user=user, name="test")[1]}}))
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


def afternoon_zone() -> str:
    """A time zone where it is early afternoon now: a daily schedule at night there (the
    retraining's 02:00) does not come round during a test run."""
    offset = (14 - datetime.now(timezone.utc).hour) % 24
    offset = offset - 24 if offset > 14 else offset
    return "UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


class SiteTemplate:
    """A site on SQLite after `migrate` and `init_cl_system` on the first 2,000 demo rows (model
    v1.0 trained), made once and copied into each site that starts from there: the copy is the
    state those two commands leave, in milliseconds instead of half a minute of processes.

    It is made in `time_zone`, by default `afternoon_zone()`: the retraining schedule's next run
    (02:00 there) is then half a day away, whatever zone a site copied from it runs in. A test
    that waits on the schedule runs its `Site` in `template.time_zone`.

    The database as `migrate` left it, before `init_cl_system`, is kept too (`copy_migrated_to`).
    """

    def __init__(self, folder: Path, *, time_zone: str = ""):
        self.time_zone = time_zone or afternoon_zone()
        self.home = folder / "cl_home"
        self.home.mkdir(parents=True)
        self.db_file = folder / "site.sqlite3"
        csv = folder / "initial.csv"
        import pandas as pd  # here, not at the top: this module imports nothing heavy for the tests that only start processes

        demo = ROOT / "demo" / "telco_churn.csv"
        pd.read_csv(demo, dtype=str, keep_default_na=False).iloc[0:2000].to_csv(csv, index=False)
        site = Site(self.home, f"sqlite:///{self.db_file}", secret="site-template-secret-key", time_zone=self.time_zone)
        site.manage("migrate", "--no-input", "-v", "0")
        self.migrated_db = folder / "migrated.sqlite3"
        _copy_db(self.db_file, self.migrated_db)
        self.init_output = site.manage("init_cl_system", "--data", str(csv), "--target", "churn", "--id-column", "customer_id")
        assert "v1.0" in self.init_output, self.init_output

    def copy_to(self, home: Path, db_file: Path) -> None:
        """This state into a site's CL_HOME `home` and SQLite file `db_file` (made or replaced)."""
        import shutil

        shutil.copytree(self.home, home, dirs_exist_ok=True)
        _copy_db(self.db_file, db_file)

    def copy_migrated_to(self, db_file: Path) -> None:
        """The database as `migrate` made it (no system yet) into the SQLite file `db_file`."""
        _copy_db(self.migrated_db, db_file)


def _copy_db(source_file: Path, target_file: Path) -> None:
    """A whole SQLite database (its write-ahead log included) into `target_file`, made or replaced."""
    import sqlite3

    target_file.unlink(missing_ok=True)
    source, target = sqlite3.connect(source_file), sqlite3.connect(target_file)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to qcluster itself (it stops its own children within seconds), then SIGKILL whatever
    is left of the group, and wait until none of it is left.

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
        _wait_until_gone(proc.pid)


def _wait_until_gone(group: int, timeout: float = 15) -> None:
    """Until no process of the group is left. Killed children are the init process's to reap, which
    takes it about 2 s here; until then their pids still answer, and a worker started meanwhile
    would take a killed worker's run for a live one (ops.startup's repair would not fail it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)


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
