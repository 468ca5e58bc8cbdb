"""A scoring job whose worker is killed mid-job is swept like a run: failed with its reason when
the next worker starts, its page says so and stops refreshing, health counts it until then, and
nothing of it stays on disk (issue 23, item 1)."""
import os
import signal
import time
from contextlib import closing

import psycopg
import pytest

from testing.worker import ROOT, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]

COPIES = 30  # the demo file 30 times: about 210,000 rows, 26 MB, several seconds of scoring

SUBMIT = """
import json, shutil
from pathlib import Path
from django.contrib.auth import get_user_model
from modelhub import roles, scoring
user, _ = get_user_model().objects.get_or_create(username="fault-analyst")
roles.assign_role(user, roles.ANALYST)
job = scoring.submit(source=Path(shutil.copy({path!r}, {path!r} + ".sent")), original_name="big.csv", user=user)
print("RESULT:" + json.dumps({{"job": job.pk, "input": job.input_path}}))
"""

STUCK = """
import json
from ops import health
check = {c.name: c for c in health.report().checks}["jobs"]
print("RESULT:" + json.dumps({"status": check.status, "summary": check.summary, "stuck": check.details["stuck"]}))
"""

PAGE = """
import json
from django.contrib.auth import get_user_model
from django.test import Client
from ops import retention
client = Client(HTTP_HOST="127.0.0.1")
client.force_login(get_user_model().objects.get(username="fault-analyst"))
response = client.get("/predict/jobs/{job}/")
print("RESULT:" + json.dumps({{"code": response.status_code, "page": response.content.decode(),
                              "cleanup": [r.path for r in retention.plan().removals if r.path.startswith("scoring/")]}}))
"""


def big_csv(folder) -> str:
    lines = (ROOT / "demo" / "telco_churn.csv").read_bytes().splitlines(keepends=True)
    path = folder / "big.csv"
    with open(path, "wb") as fh:
        fh.write(lines[0])
        for _ in range(COPIES):
            fh.writelines(lines[1:])
    return str(path)


def test_a_scoring_job_whose_worker_is_killed_is_failed_when_the_next_worker_starts(fault_site, tmp_path):
    site = fault_site

    def job_row(job_id: int) -> tuple:
        with closing(psycopg.connect(host="127.0.0.1", port=site.postgres.port, user="postgres", dbname=site.database)) as db:
            return db.execute("SELECT status, rows_done, error, worker FROM modelhub_scoringjob WHERE id = %s", (job_id,)).fetchone()

    submitted = site.shell(SUBMIT.format(path=big_csv(tmp_path)))
    job, files = submitted["job"], [site.home / submitted["input"], site.home / f"scoring/{submitted['job']:06d}-result.csv"]

    with site.worker() as proc:
        def scoring_under_way():
            scoring_under_way.last = job_row(job)
            return scoring_under_way.last[0] == "running" and scoring_under_way.last[1] > 0

        wait_for(scoring_under_way, timeout=90, what=f"job {job} to be scoring", site=site, proc=proc, every=0.1)
        os.killpg(proc.pid, signal.SIGKILL)  # the whole cluster, the worker scoring the job with it
        proc.wait(timeout=30)

    status, rows_done, _, worker = job_row(job)
    assert status == "running" and 0 < rows_done < COPIES * 7043, (status, rows_done)  # nobody lived to record anything
    assert all(path.is_file() for path in files)
    # SIGKILL is sent; the scoring process is gone once the kernel has freed it (a moment, for its memory).
    wait_for(lambda: not os.path.exists(f"/proc/{worker.rsplit(':', 1)[1]}"), timeout=15, what=f"{worker} to be gone", site=site)
    stuck = site.shell(STUCK)
    assert stuck["status"] == "failing" and stuck["stuck"] == 1 and f"scoring job(s) {job} running on a worker that died" in stuck["summary"]
    assert 'http-equiv="refresh"' in site.shell(PAGE.format(job=job))["page"]

    with site.worker() as proc:
        started = time.monotonic()
        wait_for(lambda: job_row(job)[0] == "failed", timeout=60, what=f"job {job} to be failed", site=site, proc=proc)
        failed_after = time.monotonic() - started

    error = job_row(job)[2]
    assert f"the worker stopped while scoring this file (its process {worker} is gone" in error, error
    assert f"{rows_done:,} rows were scored and nothing was kept" in error, error
    seen = site.shell(PAGE.format(job=job))
    assert seen["code"] == 200 and "the worker stopped while scoring this file" in seen["page"]
    assert 'http-equiv="refresh"' not in seen["page"] and "refreshes every" not in seen["page"]
    assert not any(path.exists() for path in files) and seen["cleanup"] == []
    assert site.shell(STUCK)["status"] == "ok"
    print(f"killed job failed {failed_after:.1f} s after the new worker started")
