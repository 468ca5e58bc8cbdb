"""Scale-out: PostgreSQL as the database and Redis as django-q2's broker (`make test-scaleout`).

`make test-scaleout` sets DATABASE_URL (PostgreSQL) and REDIS_URL; pytest-django makes its own
test_ database on that server. Every test first checks that it really is on PostgreSQL, so this
file can never pass by quietly running on SQLite.

The races are real: threads with their own database connections, and, for the worker, a
`qcluster` process with its own PostgreSQL database and the Redis broker.
"""
import json
import os
import random
import shutil
import threading
import time
import uuid
from contextlib import closing
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
from django.db import IntegrityError, connection, transaction
from django_q import core_signing
from django_q.signing import PickleSerializer

from ingestion.models import DataBatch
from ingestion.services import DuplicateUpload, get_data_stats, ingest_path
from modelhub import artifacts, retraining, services
from modelhub.models import Deployment, ModelVersion, TrainingRun
from testing import builders
from testing.killed import kill_mid_training_then_restart
from testing.worker import INGEST, RETRAIN_VIA_WEB, Site

pytestmark = pytest.mark.scaleout

SECRET = "scaleout-worker-test-secret-key"
QUEUE_KEY = "django_q:clsite:q"  # django-q2's Redis list for the cluster named "clsite" (Q_CLUSTER["name"])


@pytest.fixture(autouse=True)
def on_postgresql():
    assert connection.vendor == "postgresql", (
        f"the scale-out tests need PostgreSQL (run `make test-scaleout`); DATABASE_URL gave {connection.vendor}"
    )


def in_threads(functions, timeout: float = 180) -> list:
    """Run each function in its own thread, released together; returns each result or exception, in order."""
    barrier = threading.Barrier(len(functions))
    outcomes = [None] * len(functions)

    def body(i, fn):
        try:
            barrier.wait(timeout=30)
            outcomes[i] = fn()
        except BaseException as exc:  # noqa: BLE001 - the test looks at what each thread got
            outcomes[i] = exc
        finally:
            connection.close()  # this thread's own connection; pytest-django must be able to drop the database

    threads = [threading.Thread(target=body, args=(i, fn), daemon=True) for i, fn in enumerate(functions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), "a thread did not finish"
    return outcomes


def active_versions() -> list[str]:
    return [v.version for v in ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE)]


# --- the whole loop ---------------------------------------------------------------------------


def test_the_whole_loop_on_postgresql(initialised, demo, cl_home):
    assert initialised.version == "1.0"
    assert active_versions() == ["1.0"]

    good = ingest_path(demo.write("good1.csv", slice(2000, 2600)))
    assert good.status == DataBatch.Status.STAGED
    run = retraining.retrain_now()
    assert run.status == TrainingRun.Status.DEPLOYED, (run.reasons, run.error)
    assert active_versions() == ["1.1"]
    good.refresh_from_db()
    assert good.status == DataBatch.Status.MERGED

    flipped = ingest_path(demo.flipped("flipped.csv", slice(2600, 3100)))
    run = retraining.retrain_now()
    assert run.status == TrainingRun.Status.REJECTED, (run.reasons, run.error)
    assert any("label" in reason for reason in run.reasons), run.reasons
    flipped.refresh_from_db()
    assert flipped.status == DataBatch.Status.HELD
    assert ModelVersion.objects.get(major=1, minor=2).status == ModelVersion.Status.REJECTED
    assert active_versions() == ["1.1"]

    ingest_path(demo.write("good2.csv", slice(3100, 3700)))
    run = retraining.retrain_now()
    assert run.status == TrainingRun.Status.DEPLOYED, (run.reasons, run.error)
    assert active_versions() == ["1.3"]
    stats = get_data_stats()
    assert stats["master_rows"] == 2000 + 600 + 600
    assert stats["held_files"] == 1 and stats["staged_files"] == 0

    services.activate_version(version=None, user=None, reason="back to the previous version")
    assert active_versions() == ["1.1"]
    services.activate_version(version=ModelVersion.objects.get(major=1, minor=3), user=None, reason="forward again")
    assert active_versions() == ["1.3"]
    with pytest.raises(services.DeploymentError, match="rejected by validation.*needs a reason"):
        services.activate_version(version=ModelVersion.objects.get(major=1, minor=2), user=None, reason="")
    assert Deployment.objects.filter(kind=Deployment.Kind.ROLLBACK).count() == 2

    active = json.loads((cl_home / "models/active/metadata.json").read_text())
    assert active["version"] == "1.3" and active["status"] == "active"
    ledger = json.loads((cl_home / "logs/deployments.json").read_text())
    assert [row["to_version"] for row in ledger] == ["1.0", "1.1", "1.3", "1.1", "1.3"]


# --- races between threads --------------------------------------------------------------------


def _lock_waiters() -> int:
    """Backends of this database waiting on a row or transaction lock right now."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def test_two_concurrent_deploys_one_wins_and_one_version_is_active(initialised, cl_home, monkeypatch):
    v10 = initialised
    model = artifacts.load(v10.artifact, v10.sha256)
    a, b = (
        services.register_version(model=model, schema=v10.schema, run=None, estimator=v10.estimator, training_rows=v10.training_rows,
                                  holdout_rows=v10.holdout_rows, metrics=v10.metrics, trained_on=v10.trained_on)
        for _ in range(2)
    )
    assert {a.version, b.version} == {"1.1", "1.2"}

    # The deployment that gets the locks first pauses inside its transaction (in its audit
    # write) until the other one is seen waiting on PostgreSQL's locks, so the two really overlap.
    real_record, gate, holders = services.record, threading.Lock(), []
    holding, release = threading.Event(), threading.Event()

    def record_and_hold(**kwargs):
        with gate:
            first = not holders
            holders.append(kwargs.get("target"))
        if first:
            holding.set()
            release.wait(30)
        return real_record(**kwargs)

    monkeypatch.setattr(services, "record", record_and_hold)
    waiters = 0

    def referee():
        nonlocal waiters
        try:
            if holding.wait(60):
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and not waiters:
                    waiters = _lock_waiters()
                    time.sleep(0.05)
        finally:
            release.set()
            connection.close()

    watcher = threading.Thread(target=referee, daemon=True)
    watcher.start()
    outcome = dict(zip((a.pk, b.pk), in_threads([
        lambda: services.deploy_version(version=a, user=None, reason="race a", kind=Deployment.Kind.DEPLOY, replacing=v10),
        lambda: services.deploy_version(version=b, user=None, reason="race b", kind=Deployment.Kind.DEPLOY, replacing=v10),
    ])))
    watcher.join(30)

    assert waiters >= 1, "the second deployment never waited on the first one's locks; the race was not exercised"
    won = [pk for pk, got in outcome.items() if isinstance(got, Deployment)]
    lost = [pk for pk, got in outcome.items() if isinstance(got, services.DeploymentError)]
    assert len(won) == 1 and len(lost) == 1, outcome
    # Refused by the check of the version it meant to replace, or by the one-active constraint.
    assert "nothing was changed" in str(outcome[lost[0]]), outcome[lost[0]]
    winner, loser = ModelVersion.objects.get(pk=won[0]), ModelVersion.objects.get(pk=lost[0])
    assert active_versions() == [winner.version]
    assert loser.status == ModelVersion.Status.CANDIDATE and loser.deployed_at is None
    assert ModelVersion.objects.get(pk=v10.pk).status == ModelVersion.Status.RETIRED
    assert list(Deployment.objects.order_by("created_at", "id").values_list("to_version__minor", flat=True)) == [0, winner.minor]
    assert json.loads((cl_home / "models/active/metadata.json").read_text())["version"] == winner.version

    # Behind both: PostgreSQL itself refuses a second active version, whoever writes it.
    with pytest.raises(IntegrityError, match="one_active_version"), transaction.atomic():
        ModelVersion.objects.filter(pk=loser.pk).update(status=ModelVersion.Status.ACTIVE)

    # Nothing was left half-done: the loser deploys cleanly now.
    monkeypatch.setattr(services, "record", real_record)
    services.deploy_version(version=loser, user=None, reason="after the race", kind=Deployment.Kind.DEPLOY, replacing=winner)
    assert active_versions() == [loser.version]
    assert ModelVersion.objects.get(pk=winner.pk).status == ModelVersion.Status.RETIRED


def test_two_concurrent_requests_make_one_run_that_runs_once(initialised, demo):
    batch = ingest_path(demo.write("good.csv", slice(2000, 2600)))

    outcomes = in_threads([lambda: retraining.retrain_now(trigger=TrainingRun.Trigger.MANUAL) for _ in range(2)])

    assert all(isinstance(o, TrainingRun) for o in outcomes), outcomes
    assert len({o.pk for o in outcomes}) == 1  # the second request joined the first one's run
    run = TrainingRun.objects.get(pk=outcomes[0].pk)
    assert run.status == TrainingRun.Status.DEPLOYED, (run.error, run.reasons)
    assert [r.trigger for r in TrainingRun.objects.order_by("pk")] == ["init", "manual"]
    assert not TrainingRun.objects.filter(status__in=[TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING]).exists()
    assert active_versions() == ["1.1"]
    assert ModelVersion.objects.count() == 2
    batch.refresh_from_db()
    assert batch.status == DataBatch.Status.MERGED
    assert get_data_stats()["master_rows"] == 2600

    # The constraints free up as soon as the run ends: the next one is not blocked.
    again = retraining.retrain_now()
    assert again.status == TrainingRun.Status.SKIPPED, (again.status, again.error)


def test_concurrent_uploads_are_all_kept_and_a_twin_is_refused_once(initialised, demo, cl_home):
    parts = [demo.write(f"part{i}.csv", slice(2000 + 300 * i, 2300 + 300 * i)) for i in range(4)]
    twin_a = demo.write("twin_a.csv", slice(3200, 3500))
    twin_b = demo.folder / "twin_b.csv"
    shutil.copyfile(twin_a, twin_b)  # the same bytes under another name
    paths = parts + [twin_a, twin_b]

    outcomes = dict(zip((p.name for p in paths), in_threads([lambda p=p: ingest_path(p) for p in paths])))

    for part in parts:
        got = outcomes[part.name]
        assert isinstance(got, DataBatch) and got.status == DataBatch.Status.STAGED, (part.name, got)
    twins = [outcomes["twin_a.csv"], outcomes["twin_b.csv"]]
    kept = [t for t in twins if isinstance(t, DataBatch)]
    refused = [t for t in twins if isinstance(t, DuplicateUpload)]
    assert len(kept) == 1 and len(refused) == 1, twins
    assert refused[0].first.pk == kept[0].pk
    assert DataBatch.objects.filter(status=DataBatch.Status.STAGED).count() == 5
    stats = get_data_stats()
    assert stats["staged_files"] == 5 and stats["staged_rows"] == 1500 and stats["rejected_files"] == 0

    new = sorted(p.name for p in (cl_home / "data/new").iterdir())
    assert len([n for n in new if n.endswith(".parquet")]) == 5, new
    assert len([n for n in new if n.endswith(".csv")]) == 5, new
    assert not [n for n in new if "twin" in n and kept[0].original_name not in n], new
    assert not list((cl_home / "data/quarantine").iterdir())
    assert not [p for p in (cl_home / "tmp").iterdir() if p.name.startswith("upload-")]

    run = retraining.retrain_now()
    assert run.status == TrainingRun.Status.DEPLOYED, (run.reasons, run.error)
    assert get_data_stats()["master_rows"] == 2000 + 1500
    assert DataBatch.objects.filter(status=DataBatch.Status.MERGED).count() == 6  # the initial data and the five uploads


# --- the real worker with the Redis broker -----------------------------------------------------


def _postgres_params() -> dict:
    s = connection.settings_dict
    return {k: v for k, v in {"host": s["HOST"], "port": s["PORT"], "user": s["USER"], "password": s["PASSWORD"]}.items() if v}


def _database_url(name: str) -> str:
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{name}"


def _drop_database(name: str, params: dict) -> None:
    with closing(psycopg.connect(dbname="postgres", autocommit=True, **params)) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class WorkerTemplate:
    """A PostgreSQL database and a CL_HOME after `migrate` and `init_cl_system` on the first 2,000
    demo rows, made once per run: each worker test's database is a copy (CREATE DATABASE ...
    TEMPLATE), its CL_HOME a copy of the folder, in a moment instead of two processes' work."""

    def __init__(self, folder, params: dict):
        self.name, self.home = f"cl_worker_template_{uuid.uuid4().hex[:12]}", folder / "cl_home"
        self.home.mkdir()
        with closing(psycopg.connect(dbname="postgres", autocommit=True, **params)) as admin:
            admin.execute(f'CREATE DATABASE "{self.name}"')
        site = Site(self.home, _database_url(self.name), secret=SECRET)  # the ORM broker: neither command hands over a task
        initial = builders.DemoData(folder / "csv").write("initial.csv", slice(0, 2000))
        site.manage("migrate", "--no-input", "-v", "0")
        self.init_output = site.manage("init_cl_system", "--data", str(initial), "--target", "churn", "--id-column", "customer_id")
        assert "v1.0" in self.init_output, self.init_output

    def copy_home_to(self, home) -> None:
        shutil.copytree(self.home, home, dirs_exist_ok=True)


@pytest.fixture(scope="session")
def worker_template(tmp_path_factory):
    params = _postgres_params()
    template = WorkerTemplate(tmp_path_factory.mktemp("worker_template"), params)
    yield template
    _drop_database(template.name, params)


@pytest.fixture
def worker_database(worker_template):
    """A PostgreSQL database of the worker's own (it is another process, so not pytest's test_
    database): a copy of `worker_template`'s, the system initialised."""
    params = _postgres_params()
    name = f"cl_worker_{uuid.uuid4().hex[:12]}"
    deadline = time.monotonic() + 30
    with closing(psycopg.connect(dbname="postgres", autocommit=True, **params)) as admin:
        while True:
            try:
                admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{worker_template.name}"')
                break
            except psycopg.errors.ObjectInUse:  # a backend of the commands that made it, still closing
                assert time.monotonic() < deadline, "the worker template database stayed in use"
                time.sleep(0.1)
    try:
        yield name, _database_url(name), params
    finally:
        _drop_database(name, params)


@pytest.fixture
def worker_redis():
    """The Redis server of REDIS_URL, on an empty database number, so no other worker on that server takes our tasks."""
    url = os.environ.get("REDIS_URL", "")
    assert url, "REDIS_URL is not set; run `make test-scaleout`"
    assert redis.from_url(url).ping()
    parts = urlsplit(url)
    chosen = None
    for index in random.sample(range(1, 16), 15):
        candidate = urlunsplit(parts._replace(path=f"/{index}"))
        try:
            if redis.from_url(candidate).dbsize() == 0:
                chosen = candidate
                break
        except redis.ResponseError:  # fewer databases configured
            break
    client = redis.from_url(chosen or url)
    try:
        yield chosen or url, client
    finally:
        # Clear what the worker left (status keys, the queue), only in a database that was empty before.
        for key in client.scan_iter("django_q:*") if chosen else [QUEUE_KEY]:
            client.delete(key)
        client.close()


def test_the_real_worker_on_postgresql_with_the_redis_broker(tmp_path, worker_template, worker_database, worker_redis):
    db_name, db_url, pg_params = worker_database
    redis_url, r = worker_redis
    home = tmp_path / "cl_home"
    home.mkdir()
    site = Site(home, db_url, secret=SECRET, redis_url=redis_url)
    demo = builders.DemoData(tmp_path / "csv")
    batch = demo.write("batch.csv", slice(2000, 2600))

    # `migrate` and `init_cl_system` on the first 2,000 demo rows: made once per run and copied.
    worker_template.copy_home_to(home)
    assert "v1.0" in worker_template.init_output

    # Upload and "Retrain now" on the web, before any worker runs: the task waits in Redis.
    queued = site.shell(INGEST.format(path=str(batch)), RETRAIN_VIA_WEB)
    assert queued["code"] == 302, queued
    assert queued["broker"] == "Redis" and queued["queued"] == 1, queued
    run_id = int(queued["location"].rstrip("/").rsplit("/", 1)[1])
    assert r.llen(QUEUE_KEY) == 1
    task = core_signing.loads(r.lindex(QUEUE_KEY, 0).decode(), key=SECRET, salt="clsite", serializer=PickleSerializer)
    assert task["func"] == "modelhub.tasks.run_queued_retraining" and tuple(task["args"]) == (run_id,), task

    with closing(psycopg.connect(dbname=db_name, autocommit=True, **pg_params)) as db:
        def one(sql, *args):
            return db.execute(sql, args).fetchone()

        assert one("SELECT count(*) FROM django_q_ormq")[0] == 0  # nothing went to the ORM broker
        assert one("SELECT status FROM modelhub_trainingrun WHERE id = %s", run_id)[0] == "queued"

        with site.worker() as proc:
            deadline, status, saw_stats = time.monotonic() + 120, "queued", False
            while status in ("queued", "running"):
                assert proc.poll() is None, f"the worker exited ({proc.returncode})\n{site.log_tail()}"
                assert time.monotonic() < deadline, f"run {run_id} still {status} after 120 s\n{site.log_tail()}"
                saw_stats = saw_stats or bool(list(r.scan_iter("django_q:clsite:cluster*")))
                time.sleep(0.5)
                status = one("SELECT status FROM modelhub_trainingrun WHERE id = %s", run_id)[0]
            assert status == "deployed", (status, one("SELECT error, reasons FROM modelhub_trainingrun WHERE id = %s", run_id), site.log_tail())
            # The worker reports its status to the same Redis database it took the task from.
            saw_stats = saw_stats or bool(list(r.scan_iter("django_q:clsite:cluster*")))
            assert saw_stats, "the worker never wrote its cluster status to Redis"

        assert r.llen(QUEUE_KEY) == 0
        assert one("SELECT major, minor FROM modelhub_modelversion WHERE status = 'active'") == (1, 1)
        assert one("SELECT status FROM ingestion_databatch WHERE original_name = 'batch.csv'")[0] == "merged"
        done = one("SELECT func, success, name FROM django_q_task WHERE name = %s", f"retraining-{run_id}")
        assert done == ("modelhub.tasks.run_queued_retraining", True, f"retraining-{run_id}"), done
        assert one("SELECT count(*) FROM django_q_ormq")[0] == 0
    assert json.loads((home / "models/active/metadata.json").read_text())["version"] == "1.1"


def test_a_worker_killed_mid_training_on_postgresql_with_redis_loses_nothing(tmp_path, worker_template, worker_database, worker_redis):
    db_name, db_url, pg_params = worker_database
    redis_url, _ = worker_redis
    home = tmp_path / "cl_home"
    home.mkdir()
    site = Site(home, db_url, secret=SECRET, redis_url=redis_url)
    worker_template.copy_home_to(home)

    with closing(psycopg.connect(dbname=db_name, autocommit=True, **pg_params)) as db:
        outcome = kill_mid_training_then_restart(site, tmp_path / "csv", lambda sql, *args: db.execute(sql, args).fetchone(),
                                                 initialised=worker_template.init_output)

    assert outcome["failed_after_seconds"] < 60, outcome
    assert outcome["active"] == (1, 1) and outcome["batch"] == "merged"
