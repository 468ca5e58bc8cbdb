"""The task broker (Redis) down (issue 23, item 3): asking for work answers at once with the truth,
health names the broker, and the work waiting starts on its own once Redis answers again.

A qcluster runs on the fault site's private Redis; Redis is stopped under it. An ML engineer's
retraining request and a scoring job are then a 202 within a second whose message names the broker
(the run stays queued, not handed over), a second request joining the run is told the same,
`manage.py health --json` and /healthz fail on the broker. Redis is started again: the same
qcluster, never restarted, starts the run (the watchdog's sweep hands it over) within about a
minute, deploys it, and scores the job.
"""
import json
import subprocess
import sys
import time
from contextlib import closing

import psycopg
import pytest

from testing import builders
from testing.worker import API_TOKEN, INGEST, ROOT, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]


# Two retraining requests and a scoring job through the API, each timed, then /healthz.
ASK = """
import json, time
from django.test import Client
client = Client(HTTP_HOST="127.0.0.1", raise_request_exception=False, HTTP_AUTHORIZATION="Bearer {token}")
def timed(call):
    started = time.monotonic()
    response = call()
    return {{"code": response.status_code, "type": response["Content-Type"], "body": response.content.decode(),
             "seconds": time.monotonic() - started}}
client.get("/api/v1/models")  # loads the API's code: the calls below are timed for the broker alone
runs = [timed(lambda: client.post("/api/v1/runs")) for _ in range(2)]
with open({scoring!r}, "rb") as fh:
    scoring = timed(lambda: client.post("/api/v1/scorings", {{"file": fh}}))
healthz = client.get("/healthz")
print("RESULT:" + json.dumps({{"runs": runs, "scoring": scoring, "healthz": [healthz.status_code, healthz.json()]}}))
"""


class Rows:
    """Reads the site's PostgreSQL database directly."""

    def __init__(self, site):
        self.args = dict(host="127.0.0.1", port=site.postgres.port, user="postgres", dbname=site.database, autocommit=True)

    def one(self, sql: str, *params) -> dict | None:
        with closing(psycopg.connect(**self.args)) as db:
            cursor = db.execute(sql, params)
            row = cursor.fetchone()
            return dict(zip([c.name for c in cursor.description], row)) if row else None


def test_redis_down_answers_the_truth_at_once_and_the_work_starts_when_it_is_back(fault_site, tmp_path):
    site, rows = fault_site, Rows(fault_site)
    demo = builders.DemoData(tmp_path / "csv")
    staged = demo.write("staged.csv", slice(2000, 2600))
    to_score = demo.write("to_score.csv", slice(3000, 3200))
    token = site.shell(INGEST.format(path=str(staged)), API_TOKEN.format(username="fault-engineer", role="ML_ENGINEER"))["token"]

    with site.worker() as proc:
        wait_for(lambda: rows.one("SELECT worker FROM ops_workerbeat LIMIT 1"), timeout=60, what="the worker's start",
                 site=site, proc=proc)
        site.redis.stop()

        asked = site.shell(ASK.format(token=token, scoring=str(to_score)))
        where = f"Redis at 127.0.0.1:{site.redis.port}"
        first, joined = asked["runs"]
        print("answered in", [round(a["seconds"], 2) for a in (*asked["runs"], asked["scoring"])], "s")
        for answer in (first, joined, asked["scoring"]):
            assert answer["code"] == 202 and answer["type"].startswith("application/json"), answer
            assert answer["seconds"] < 2, answer
        first, joined = json.loads(first["body"]), json.loads(joined["body"])
        assert first["created"] and first["waiting_for_broker"] and first["run"]["status"] == "queued", first
        assert f"waits for the task broker ({where}), which does not answer" in first["message"], first
        assert not joined["created"] and joined["waiting_for_broker"] and joined["run"]["id"] == first["run"]["id"], joined
        assert "already queued but waits for the task broker" in joined["message"], joined
        run_id, job_id = first["run"]["id"], json.loads(asked["scoring"]["body"])["id"]
        waiting = rows.one("SELECT status, enqueued_at, enqueue_count, details FROM modelhub_trainingrun WHERE id = %s", run_id)
        assert waiting["status"] == "queued" and waiting["enqueued_at"] is None and waiting["enqueue_count"] == 0, waiting
        assert where in waiting["details"]["waiting_for_broker"], waiting
        assert rows.one("SELECT status, in_flight FROM modelhub_scoringjob WHERE id = %s", job_id) == {
            "status": "queued", "in_flight": False}
        assert asked["healthz"][0] == 503 and "broker" in asked["healthz"][1]["failing"], asked["healthz"]

        health = subprocess.run([sys.executable, "manage.py", "health", "--json"], cwd=ROOT, env=site.env,
                                capture_output=True, text=True, timeout=60)
        assert health.returncode == 1, health.stdout + health.stderr
        report = json.loads(health.stdout)
        broker = next(check for check in report["checks"] if check["name"] == "broker")
        assert broker["status"] == "failing" and f"{where} does not answer" in broker["summary"], broker
        assert "broker" in report["failing"], report["failing"]
        assert proc.poll() is None, site.log_tail()

        site.redis.start()
        back = time.monotonic()

        def started():
            started.last = rows.one("SELECT status, started_at FROM modelhub_trainingrun WHERE id = %s", run_id)
            return started.last["status"] != "queued"

        wait_for(started, timeout=120, what=f"run {run_id} to start after Redis came back", site=site, proc=proc)
        waited = time.monotonic() - back
        print(f"run {run_id} started {waited:.0f} s after Redis answered again")
        assert waited < 100, waited

        def finished(table: str, pk: int, pending=("queued", "running")):
            def check():
                check.last = rows.one(f"SELECT status, error FROM {table} WHERE id = %s", pk)
                return check.last if check.last["status"] not in pending else None
            check.last = None
            return check

        done = wait_for(finished("modelhub_trainingrun", run_id), timeout=180, what=f"run {run_id}", site=site, proc=proc)
        assert done["status"] == "deployed", done
        assert rows.one("SELECT major, minor FROM modelhub_modelversion WHERE status = 'active'") == {"major": 1, "minor": 1}
        scored = wait_for(finished("modelhub_scoringjob", job_id), timeout=120, what=f"scoring job {job_id}", site=site, proc=proc)
        assert scored["status"] == "done", scored
        assert rows.one("SELECT details FROM modelhub_trainingrun WHERE id = %s", run_id)["details"].get("waiting_for_broker") is None
