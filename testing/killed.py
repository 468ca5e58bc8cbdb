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
from testing.worker import INGEST, RETRAIN_VIA_WEB, Site

TRAINING_TIMEOUT = 180


def run_row(one, run_id: int) -> dict:
    status, stages, error = one("SELECT status, stages, error FROM modelhub_trainingrun WHERE id = %s", run_id)
    stages = json.loads(stages) if isinstance(stages, str) else stages
    return {"status": status, "stages": [s["stage"] for s in stages], "error": error}


def wait(what: str, check, *, timeout: float, site: Site, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"waited {timeout:.0f}s for {what}\n{site.log_tail()}"
        time.sleep(every)


def request_retraining(site: Site, *snippets: str) -> int:
    asked = site.shell(*snippets, RETRAIN_VIA_WEB)
    assert asked["code"] == 302, asked
    return int(asked["location"].rstrip("/").rsplit("/", 1)[1])


def kill_mid_training_then_restart(site: Site, csv_folder: Path, one) -> dict:
    """Returns the figures a test asserts on; asserts what must hold at every step."""
    demo = builders.DemoData(csv_folder)
    site.manage("migrate", "--no-input", "-v", "0")
    assert "v1.0" in site.manage("init_cl_system", "--data", str(demo.write("initial.csv", slice(0, 2000))), "--target", "churn",
                                 "--id-column", "customer_id")
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

        wait(f"run {run_id} to be training", training, timeout=TRAINING_TIMEOUT, site=site)
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
        failed = wait(f"run {run_id} to be failed", lambda: run_row(one, run_id)["status"] == "failed", timeout=90, site=site,
                      every=0.5)
        failed_after = time.monotonic() - started
        error = run_row(one, run_id)["error"]
        assert failed and "heartbeat stopped" in error, error
        next_id = request_retraining(site)
        assert next_id != run_id
        done = wait(f"run {next_id} to end", lambda: run_row(one, next_id)["status"] not in ("queued", "running"),
                    timeout=TRAINING_TIMEOUT, site=site, every=0.5)
        assert done
        final = run_row(one, next_id)
        assert final["status"] == "deployed", (final, site.log_tail())
    return {"failed_after_seconds": failed_after, "error": error,
            "active": one("SELECT major, minor FROM modelhub_modelversion WHERE status = 'active'"),
            "batch": one("SELECT status FROM ingestion_databatch WHERE original_name = 'big_batch.csv'")[0]}
