"""Fair queues: scoring never starves the system's own tasks, and no user fills the queue.

Scoring jobs wait in the database and one task at a time scores them (modelhub.scoring), so a
retraining, the watchdog or the clean-up enqueued after many scoring jobs waits for at most the
one being scored. Each user may have CL_SCORING_MAX_QUEUED_PER_USER jobs waiting.

The broker tests run on the real ORM broker in this process, taking the tasks off it in the
order django-q2's worker would; the last test runs the real worker (`manage.py qcluster`) on
the ORM broker and, under `make test-scaleout`, on Redis.
"""
import os
import random
import sqlite3
from contextlib import closing
from datetime import datetime, timedelta
from itertools import pairwise
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone
from django.utils.module_loading import import_string
from django_q.brokers import get_broker
from django_q.signing import SignedPackage

from api import auth
from api.services import create_token
from audit.models import AuditEvent
from clsite import home
from modelhub import scoring
from modelhub.models import ScoringJob, TrainingRun
from modelhub.runs import request_retraining
from ops import tasks as ops_tasks
from testing import builders
from testing.worker import Site, wait_for

SCORE = "modelhub.tasks.run_scoring_job"
RETRAIN = "modelhub.tasks.run_queued_retraining"


def rows_csv(demo, start: int, stop: int) -> bytes:
    return demo.frame.iloc[start:stop].drop(columns=["churn"]).to_csv(index=False).encode()


def submit(demo, user, name: str, rows: int = 50) -> ScoringJob:
    source = home.path("tmp") / name
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(rows_csv(demo, 0, rows))
    return scoring.submit(source=source, original_name=name, user=user)


def queued_tasks() -> list[tuple]:
    """What waits in the ORM broker, in the order the worker takes it: (func, args)."""
    from django_q.models import OrmQ

    return [(t["func"], tuple(t["args"])) for t in (SignedPackage.loads(q.payload) for q in OrmQ.objects.order_by("pk"))]


def work_one() -> tuple:
    """The worker's part for the next task in the broker: take it, run it, acknowledge it."""
    broker = get_broker()
    taken = broker.dequeue()
    assert taken, "the broker is empty"
    ack_id, payload = taken[0]
    task = SignedPackage.loads(payload)
    import_string(task["func"])(*task["args"])
    broker.acknowledge(ack_id)
    return task["func"], tuple(task["args"])


# --- the per-user limit ------------------------------------------------------------------------


def test_a_user_over_the_limit_is_refused_on_the_api_and_the_page_and_nothing_is_kept(ready, users, demo, session_home, settings):
    settings.CL_SCORING_MAX_QUEUED_PER_USER = 2
    auth.forget()
    analyst_key = create_token(user=users["analyst"], name="test")[1]

    def api_submit(name):
        return Client().post("/api/v1/scorings", {"file": SimpleUploadedFile(name, rows_csv(demo, 0, 20))},
                             HTTP_AUTHORIZATION=f"Bearer {analyst_key}")

    assert [api_submit(n).status_code for n in ("a.csv", "b.csv")] == [202, 202]
    kept = sorted(p.name for p in (session_home / "scoring").iterdir())

    refused = api_submit("c.csv")

    assert refused.status_code == 429 and refused["Content-Type"].startswith("application/json")
    detail = refused.json()["detail"]
    assert "2 scoring jobs waiting" in detail and "the limit is 2 per user" in detail, detail
    page = Client()
    page.force_login(users["analyst"])
    response = page.post("/predict/batch/", {"file": SimpleUploadedFile("d.csv", rows_csv(demo, 0, 20))}, follow=True)
    assert response.redirect_chain == [("/predict/", 302)]
    html = response.content.decode()
    assert "d.csv: you already have 2 scoring jobs waiting, and the limit is 2 per user" in html, html
    # Nothing of the refused files: no job, no file, no audit line, no temporary upload left.
    assert sorted(ScoringJob.objects.values_list("original_name", flat=True)) == ["a.csv", "b.csv"]
    assert sorted(p.name for p in (session_home / "scoring").iterdir()) == kept
    assert AuditEvent.objects.filter(action="scoring.requested").count() == 2
    assert not any((session_home / "tmp").iterdir())
    # The limit is per user, and counts jobs waiting: one started, one more may wait.
    admin = Client()
    admin.force_login(users["admin"])
    assert admin.post("/predict/batch/", {"file": SimpleUploadedFile("e.csv", rows_csv(demo, 0, 20))}).status_code == 302
    assert ScoringJob.objects.filter(original_name="e.csv").exists()
    scoring.run(ScoringJob.objects.get(original_name="a.csv"))
    assert api_submit("f.csv").status_code == 202
    assert api_submit("g.csv").status_code == 429
    auth.forget()


# --- the queue's order, on the real ORM broker ---------------------------------------------------


def test_a_retraining_asked_after_many_scoring_jobs_runs_before_them_and_users_take_turns(initialised, demo, settings):
    settings.CL_SCORING_MAX_QUEUED_PER_USER = 3
    users = builders.make_users()
    mine = [submit(demo, users["analyst"], f"analyst-{i}.csv") for i in range(3)]
    theirs = [submit(demo, users["admin"], f"admin-{i}.csv") for i in range(3)]

    # Six jobs queued, ONE task in the broker; the retraining asked now goes right behind it.
    assert queued_tasks() == [(SCORE, (mine[0].pk, 1))]
    run = request_retraining(user=users["engineer"], trigger=TrainingRun.Trigger.MANUAL).run
    assert queued_tasks() == [(SCORE, (mine[0].pk, 1)), (RETRAIN, (run.pk,))]

    done = [work_one()]
    # Scoring the first job put the next one at the back: behind the retraining.
    assert queued_tasks() == [(RETRAIN, (run.pk,)), (SCORE, (theirs[0].pk, 1))]
    done.append(work_one())
    run.refresh_from_db()
    assert run.status not in (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING), run.status
    assert ScoringJob.objects.filter(status=ScoringJob.Status.QUEUED).count() == 5  # started before them
    while queued_tasks():
        done.append(work_one())
        assert len(queued_tasks()) <= 1  # never more than one scoring task waiting

    # Users in turn, each one's oldest first.
    scored = [args[0] for func, args in done if func == SCORE]
    assert scored == [mine[0].pk, theirs[0].pk, mine[1].pk, theirs[1].pk, mine[2].pk, theirs[2].pk]
    assert set(ScoringJob.objects.values_list("status", flat=True)) == {ScoringJob.Status.DONE}
    assert not ScoringJob.objects.filter(in_flight=True).exists()


def test_the_watchdog_and_clean_up_tasks_wait_for_at_most_the_job_being_scored(initialised, demo):
    users = builders.make_users()
    first, second = submit(demo, users["analyst"], "one.csv"), submit(demo, users["analyst"], "two.csv")
    from django_q.tasks import async_task

    async_task("ops.tasks.watchdog")  # as the scheduler does when they fall due
    async_task("ops.tasks.cleanup")
    assert [f for f, _ in queued_tasks()] == [SCORE, "ops.tasks.watchdog", "ops.tasks.cleanup"]
    assert [work_one()[0] for _ in range(3)] == [SCORE, "ops.tasks.watchdog", "ops.tasks.cleanup"]
    assert queued_tasks() == [(SCORE, (second.pk, 1))]
    work_one()
    assert ScoringJob.objects.get(pk=first.pk).status == ScoringJob.Status.DONE
    assert ScoringJob.objects.get(pk=second.pk).status == ScoringJob.Status.DONE and not queued_tasks()


# --- the chain survives ---------------------------------------------------------------------------


def test_a_lost_scoring_task_is_handed_over_again_and_the_chain_goes_on(initialised, demo, settings):
    users = builders.make_users()
    first = submit(demo, users["analyst"], "lost.csv")
    assert queued_tasks() == [(SCORE, (first.pk, 1))]
    get_broker().purge_queue()  # the task is lost (a Redis flushed, a broker row deleted)

    second = submit(demo, users["admin"], "next.csv")
    assert queued_tasks() == []  # handed over recently: it may still be on its way, so no second chain
    assert scoring.kick() is None and queued_tasks() == []

    ScoringJob.objects.filter(pk=first.pk).update(
        dispatched_at=timezone.now() - timedelta(minutes=settings.CL_QUEUED_RUN_MINUTES + 1))
    ops_tasks.watchdog()  # every minute, in the worker
    assert queued_tasks() == [(SCORE, (first.pk, 2))]

    # The old task, should it turn up after all, does nothing (and starts no second chain).
    assert import_string(SCORE)(first.pk, 1) == ScoringJob.Status.QUEUED
    assert queued_tasks() == [(SCORE, (first.pk, 2))]
    assert work_one() == (SCORE, (first.pk, 2))
    assert queued_tasks() == [(SCORE, (second.pk, 1))]
    work_one()
    assert list(ScoringJob.objects.order_by("pk").values_list("status", flat=True)) == ["done", "done"]


def test_a_job_whose_worker_died_is_failed_and_the_next_submit_restarts_the_chain(initialised, demo):
    users = builders.make_users()
    dead = submit(demo, users["analyst"], "dead.csv")
    waiting = submit(demo, users["analyst"], "waiting.csv")
    get_broker().purge_queue()
    # The worker claimed the job, wrote part of the result, then was killed.
    silent = timezone.now() - scoring.STALE_AFTER - timedelta(seconds=5)
    ScoringJob.objects.filter(pk=dead.pk).update(status=ScoringJob.Status.RUNNING, started_at=silent, heartbeat_at=silent)
    partial = home.path(f"scoring/{dead.pk:06d}-result.csv")
    partial.write_text("customer_id,probability\n")

    third = submit(demo, users["analyst"], "third.csv")

    dead.refresh_from_db()
    assert dead.status == ScoringJob.Status.FAILED and "the worker stopped" in dead.error and not dead.in_flight
    assert not partial.exists() and not home.path(dead.input_path).exists()
    assert queued_tasks() == [(SCORE, (waiting.pk, 1))]
    work_one()
    work_one()
    assert ScoringJob.objects.get(pk=third.pk).status == ScoringJob.Status.DONE and not queued_tasks()


def test_two_processes_kicking_at_once_start_one_chain(initialised, demo):
    from django.db import IntegrityError, transaction

    users = builders.make_users()
    first = submit(demo, users["analyst"], "a.csv")
    second = submit(demo, users["analyst"], "b.csv")
    assert ScoringJob.objects.get(pk=first.pk).in_flight
    # Whatever a process saw a moment ago, the database keeps one job in flight.
    with pytest.raises(IntegrityError), transaction.atomic():
        ScoringJob.objects.filter(pk=second.pk).update(in_flight=True)
    assert scoring.kick() is None and len(queued_tasks()) == 1


# --- the real worker -------------------------------------------------------------------------------

SUBMIT_THEN_RETRAIN = """
import json
from pathlib import Path
from django.contrib.auth import get_user_model
from modelhub import roles, scoring
from modelhub.models import TrainingRun
from modelhub.runs import request_retraining
from django_q.brokers import get_broker
jobs = []
for name in ("first-analyst", "second-analyst"):
    user, _ = get_user_model().objects.get_or_create(username=name)
    roles.assign_role(user, roles.ANALYST)
    for i in range(3):
        source = Path({folder!r}) / f"{{name}}-{{i}}.csv"
        source.write_bytes(Path({csv!r}).read_bytes())
        jobs.append(scoring.submit(source=source, original_name=source.name, user=user).pk)
run = request_retraining(user=None, trigger=TrainingRun.Trigger.MANUAL).run
print("RESULT:" + json.dumps({{"jobs": jobs, "run": run.pk, "broker": type(get_broker()).__name__,
                              "queued": get_broker().queue_size()}}))
"""


def _empty_redis_database(url: str) -> str:
    import redis

    parts = urlsplit(url)
    for index in random.sample(range(1, 16), 15):
        candidate = urlunsplit(parts._replace(path=f"/{index}"))
        if redis.from_url(candidate).dbsize() == 0:
            return candidate
    pytest.fail("no empty Redis database for the worker")


@pytest.mark.slow
@pytest.mark.parametrize("broker", ["orm", pytest.param("redis", marks=pytest.mark.scaleout)])
def test_the_real_worker_starts_a_retraining_asked_after_six_scoring_jobs_before_them(tmp_path, broker, site_template):
    import redis

    redis_url = _empty_redis_database(os.environ["REDIS_URL"]) if broker == "redis" else ""
    home_dir = tmp_path / "cl_home"
    home_dir.mkdir()
    db_file = home_dir / "worker.sqlite3"
    site = Site(home_dir, f"sqlite:///{db_file}", secret="fair-queue-test-secret-key", redis_url=redis_url)
    demo = builders.DemoData(tmp_path / "csv")
    to_score = demo.write("score.csv", frame=demo.frame.iloc[2000:4000].drop(columns=["churn"]))
    site_template().copy_to(home_dir, db_file)  # `migrate` and `init_cl_system`, made once per run

    # All asked for before the worker starts: six scoring jobs of two analysts, then a retraining.
    asked = site.shell(SUBMIT_THEN_RETRAIN.format(folder=str(tmp_path / "csv"), csv=str(to_score)))
    assert asked["broker"] == ("Redis" if redis_url else "ORM") and asked["queued"] == 2, asked  # one scoring task, the run

    def query(sql, *params):
        with closing(sqlite3.connect(db_file, timeout=30, isolation_level=None)) as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute(sql, params)]

    def all_done():
        all_done.last = query("SELECT status FROM modelhub_scoringjob") + query(
            "SELECT status FROM modelhub_trainingrun WHERE id = ?", asked["run"])
        return all(r["status"] not in ("queued", "running") for r in all_done.last)
    all_done.last = None

    try:
        with site.worker() as proc:
            wait_for(all_done, timeout=120, what="the six jobs and the run", site=site, proc=proc)
    finally:
        if redis_url:
            client = redis.from_url(redis_url)
            for key in client.scan_iter("django_q:*"):
                client.delete(key)
            client.close()

    run = query("SELECT status, started_at FROM modelhub_trainingrun WHERE id = ?", asked["run"])[0]
    jobs = query("SELECT id, status, started_at, finished_at, created_by_id, error FROM modelhub_scoringjob")
    assert [j["status"] for j in jobs] == ["done"] * 6, ([j["error"] for j in jobs], site.log_tail())
    assert run["started_at"], run
    for row in [run, *jobs]:
        row.update({k: datetime.fromisoformat(row[k]) for k in ("started_at", "finished_at") if row.get(k)})
    jobs.sort(key=lambda j: j["started_at"])
    # The run started before the scoring was all done. The job in flight goes first; the next
    # one is enqueued behind the run, so only a race of the two processes' first steps could
    # let it start first too. (With one task per job in the queue, all six started first.)
    assert sum(j["started_at"] < run["started_at"] for j in jobs) <= 2, (run, jobs)
    # One job at a time (the other worker stays free for the system), users in turn.
    for before, after in pairwise(jobs):
        assert after["started_at"] >= before["finished_at"], jobs
    owners = [j["created_by_id"] for j in jobs]
    assert all(a != b for a, b in pairwise(owners)), owners
