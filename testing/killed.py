"""A worker killed with SIGKILL in the middle of a training, then started again: the scenario
the SQLite and the PostgreSQL + Redis tests share.

`one(sql, *args)` runs a query on the site's database (placeholders written %s) and returns
its first row, so the scenario does not care which database it reads.
"""
import hashlib
import json
import os
import signal
import time
from pathlib import Path

from testing import builders
from testing.worker import INGEST, RETRAIN_VIA_WEB, Site, wait_for

TRAINING_TIMEOUT = 180


def run_row(one, run_id: int) -> dict:
    status, stages, error = one("SELECT status, stages, error FROM modelhub_trainingrun WHERE id = %s", run_id)
    stages = json.loads(stages) if isinstance(stages, str) else stages
    return {"status": status, "stages": [s["stage"] for s in stages], "error": error}


def request_retraining(site: Site, *snippets: str) -> int:
    asked = site.shell(*snippets, RETRAIN_VIA_WEB)
    assert asked["code"] == 302, asked
    return int(asked["location"].rstrip("/").rsplit("/", 1)[1])


def kill_mid_training_then_restart(site: Site, csv_folder: Path, one, *, initialised: str = "") -> dict:
    """Returns the figures a test asserts on; asserts what must hold at every step.

    `initialised`: the output of the `init_cl_system` that made the site's state already (a copy
    of a `SiteTemplate`); without it, the site is migrated and initialised here.
    """
    demo = builders.DemoData(csv_folder)
    if not initialised:
        site.manage("migrate", "--no-input", "-v", "0")
        initialised = site.manage("init_cl_system", "--data", str(demo.write("initial.csv", slice(0, 2000))), "--target", "churn",
                                  "--id-column", "customer_id")
    assert "v1.0" in initialised
    active = one("SELECT major, minor, sha256, artifact FROM modelhub_modelversion WHERE status = 'active'")
    big = demo.write("big_batch.csv", slice(2000, 7043))  # the rest of the demo data: a training of several seconds
    run_id = request_retraining(site, INGEST.format(path=str(big)))
    batch_files = one("SELECT status, raw_path, parquet_path FROM ingestion_databatch WHERE original_name = 'big_batch.csv'")
    assert batch_files[0] == "staged"

    with site.worker() as proc:
        def training():
            row = run_row(one, run_id)
            assert proc.poll() is None, f"the worker exited ({proc.returncode})\n{site.log_tail()}"
            return row["status"] == "running" and "merge" in row["stages"] and "train" not in row["stages"]

        wait_for(training, timeout=TRAINING_TIMEOUT, what=f"run {run_id} to be training", site=site, proc=proc, every=0.1)
        os.killpg(proc.pid, signal.SIGKILL)  # the whole cluster: sentinel, workers, monitor, pusher
        proc.wait(timeout=30)

    killed = run_row(one, run_id)
    assert killed["status"] == "running", killed  # nobody lived to record anything
    assert one("SELECT major, minor, sha256, artifact FROM modelhub_modelversion WHERE status = 'active'") == active
    artifact = site.home / "models" / "versions" / active[3]
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == active[2]
    assert one("SELECT status, raw_path, parquet_path FROM ingestion_databatch WHERE original_name = 'big_batch.csv'") == batch_files
    assert (site.home / batch_files[1]).is_file() and (site.home / batch_files[2]).is_file()

    with site.worker() as proc:
        started = time.monotonic()
        failed = wait_for(lambda: run_row(one, run_id)["status"] == "failed", timeout=90, what=f"run {run_id} to be failed",
                          site=site, proc=proc)
        failed_after = time.monotonic() - started
        error = run_row(one, run_id)["error"]
        assert failed and "heartbeat stopped" in error, error
        next_id = request_retraining(site)
        assert next_id != run_id
        done = wait_for(lambda: run_row(one, next_id)["status"] not in ("queued", "running"), timeout=TRAINING_TIMEOUT,
                        what=f"run {next_id} to end", site=site, proc=proc)
        assert done
        final = run_row(one, next_id)
        assert final["status"] == "deployed", (final, site.log_tail())
    return {"failed_after_seconds": failed_after, "error": error,
            "active": one("SELECT major, minor FROM modelhub_modelversion WHERE status = 'active'"),
            "batch": one("SELECT status FROM ingestion_databatch WHERE original_name = 'big_batch.csv'")[0]}
