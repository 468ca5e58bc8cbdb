"""Errors tell the truth (issue 23, item 5): a retraining that fails because the database went
away says so, not that its worker died; the failure is recorded once the database is back,
logs/retraining.log has the line, and the next run deploys on the same worker."""
import time
from contextlib import closing

import psycopg
import pytest

from testing import builders
from testing.killed import request_retraining
from testing.worker import INGEST, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def test_a_run_failed_by_a_database_outage_says_so_and_the_next_run_deploys_on_the_same_worker(fault_site, tmp_path):
    site = fault_site

    def run_row(run_id: int) -> tuple | None:
        try:
            with closing(psycopg.connect(host="127.0.0.1", port=site.postgres.port, user="postgres", dbname=site.database,
                                         connect_timeout=2)) as db:
                return db.execute("SELECT status, error FROM modelhub_trainingrun WHERE id = %s", (run_id,)).fetchone()
        except psycopg.OperationalError:
            return None  # the database is down

    batch = builders.DemoData(tmp_path / "csv").write("batch.csv", slice(2000, 7043))  # a training of several seconds
    run_id = request_retraining(site, INGEST.format(path=str(batch)))

    with site.worker() as proc:
        wait_for(lambda: (run_row(run_id) or ("",))[0] == "running", timeout=90, what=f"run {run_id} to run", site=site,
                 proc=proc, every=0.1)
        site.postgres.stop()
        time.sleep(4)
        site.postgres.start()

        def ended():
            ended.last = run_row(run_id)
            return ended.last and ended.last[0] not in ("queued", "running")

        wait_for(ended, timeout=60, what=f"run {run_id} to end", site=site, proc=proc)
        status, error = run_row(run_id)
        assert status == "failed", (status, error)
        assert error.startswith("the database failed or could not be reached ("), error
        assert "worker" not in error and "heartbeat" not in error
        log = (site.home / "logs" / "retraining.log").read_text()
        assert f"run={run_id} outcome=failed error={error}" in log

        # The same worker, never restarted, runs the next retraining: the batch is still staged.
        next_id = request_retraining(site)
        assert next_id != run_id
        def next_ended():
            next_ended.last = run_row(next_id)
            return next_ended.last[0] not in ("queued", "running")

        wait_for(next_ended, timeout=120, what=f"run {next_id} to end", site=site, proc=proc)
        assert run_row(next_id) == ("deployed", ""), run_row(next_id)
        assert proc.poll() is None
    assert f"run={next_id} outcome=deployed" in (site.home / "logs" / "retraining.log").read_text()
