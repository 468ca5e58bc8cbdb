"""A full disk is a message: every door that writes says which folder, what was needed and what is
free, keeps nothing half-written, records no batch, and the disk check (hence the alert) says so.

The site's CL_HOME is a small tmpfs (`small_disk`); the database is elsewhere, so only the files fail.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testing.worker import ROOT, Site

pytestmark = [pytest.mark.faults, pytest.mark.slow]
MIB = 1024 * 1024


def leftovers(home: Path) -> list[str]:
    """Upload files anywhere they could be left: data/new, data/quarantine, the upload temp folder."""
    return sorted(str(p.relative_to(home)) for folder in ("data/new", "data/quarantine", "tmp")
                  for p in (home / folder).rglob("*") if p.is_file())


def free(path: Path) -> int:
    return shutil.disk_usage(path).free


def demo_rows(tmp_path: Path, name: str, size: int) -> Path:
    """A valid labelled CSV of about `size` bytes: demo rows, repeated with new ids."""
    import pandas as pd

    frame = pd.read_csv(ROOT / "demo" / "telco_churn.csv", dtype=str, keep_default_na=False)
    per_row = len(frame.to_csv(index=False)) / len(frame)
    copies = [frame.assign(customer_id=frame["customer_id"] + f"-{i}") for i in range(int(size / per_row / len(frame)) + 1)]
    whole = pd.concat(copies).iloc[: int(size / per_row)]
    path = tmp_path / name
    whole.to_csv(path, index=False)
    return path


@pytest.fixture
def disk_site(site_template, small_disk, tmp_path):
    """A SQLite site whose CL_HOME is a 24 MiB tmpfs; disk warnings only for refused writes (CL_MIN_FREE_MB=1)."""
    disk = small_disk(24)
    home = disk / "cl_home"
    site_template().copy_to(home, tmp_path / "site.sqlite3")
    site = Site(home, f"sqlite:///{tmp_path / 'site.sqlite3'}", secret="disk-test-secret-key")
    site.env["CL_MIN_FREE_MB"] = "1"
    return site


def ingest(site: Site, csv: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", "ingest", str(csv)], cwd=ROOT, env=site.env, capture_output=True,
                          text=True, timeout=120)


STATE = """
import json
from audit.models import AuditEvent
from ingestion.models import DataBatch
from ops import alerts, health
disk = next(c for c in health.report().checks if c.name == "disk")
refused = [e.details | {"folder": e.target} for e in AuditEvent.objects.filter(action="disk.refused")]
print("RESULT:" + json.dumps({"batches": DataBatch.objects.count(), "refused": refused, "disk": disk.status,
                              "disk_summary": disk.summary, "alerts": alerts.evaluate()["opened"]}))
"""


def test_ingest_of_a_file_bigger_than_the_free_space_says_so_in_one_line_and_keeps_nothing(disk_site, tmp_path):
    before = disk_site.shell(STATE)
    big = demo_rows(tmp_path, "big.csv", free(disk_site.home) + 4 * MIB)

    done = ingest(disk_site, big)

    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"big.csv was not taken: not enough free space under {disk_site.home / 'tmp'}: " in done.stderr
    assert " MB needed, " in done.stderr and " MB free" in done.stderr
    assert leftovers(disk_site.home) == []
    after = disk_site.shell(STATE)
    assert after["batches"] == before["batches"]
    assert [r["needed"] for r in after["refused"]] == [big.stat().st_size]
    # The watchdog's alert: the disk check fails on the refusal although more than CL_MIN_FREE_MB is free.
    assert after["disk"] == "failing" and "refused for lack of space" in after["disk_summary"], after
    assert "check-disk" in after["alerts"]


def test_a_file_that_fits_but_whose_checked_copy_does_not_is_refused_the_same_way(disk_site, tmp_path):
    batches = disk_site.shell(STATE)["batches"]
    csv = demo_rows(tmp_path, "tight.csv", 6 * MIB)
    # Room for the stored copy and a few pages more, not for its Parquet conversion.
    filler = disk_site.home / "filler"
    with open(filler, "wb") as fh:
        fh.write(b"\0" * (free(disk_site.home) - csv.stat().st_size - 64 * 1024))

    done = ingest(disk_site, csv)

    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr and "not enough free space under" in done.stderr, done.stderr
    assert leftovers(disk_site.home) == []
    assert disk_site.shell(STATE)["batches"] == batches
    filler.unlink()
    assert ingest(disk_site, csv).returncode == 0  # with room again, the same file is taken


@pytest.fixture
def site_on_disk(from_snapshot, users, small_disk, settings):
    """This process's site (the session's v1.0) moved onto a 24 MiB tmpfs, for requests in-process."""
    from clsite import memo

    from_snapshot()
    home = small_disk(24) / "cl_home"
    shutil.copytree(settings.CL_HOME, home)
    settings.CL_HOME, settings.FILE_UPLOAD_TEMP_DIR = home, str(home / "tmp")
    settings.STORAGES = {**settings.STORAGES, "models": {"BACKEND": "django.core.files.storage.FileSystemStorage",
                                                         "OPTIONS": {"location": str(home / "models" / "versions"), "base_url": None}}}
    settings.CL_MIN_FREE_MB = 1
    memo.forget_all()
    return home


def big_file(name: str, size: int):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, b"customer_id,tenure\n" + b"1,2\n" * (size // 4), content_type="text/csv")


def test_the_api_and_the_upload_page_answer_a_full_disk_with_the_sizes(site_on_disk, users):
    from django.test import Client

    from api import auth
    from api.services import create_token
    from audit.models import AuditEvent
    from ingestion.models import DataBatch
    from ops import health

    auth.forget()
    key = create_token(user=users["analyst"], name="disk")[1]
    api = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    batches = DataBatch.objects.count()
    room = free(site_on_disk)

    # Bigger than the free space: the request's own temporary file does not fit.
    answer = api.post("/api/v1/batches", {"file": big_file("big.csv", room + 2 * MIB)})
    assert answer.status_code == 507, answer.content
    body = answer.json()
    assert body["errors"] == [] and body["detail"].startswith(f"not enough free space under {site_on_disk / 'tmp'}: "), body
    assert leftovers(site_on_disk) == []

    # It fits as the request's temporary file, but not twice (the stored copy).
    answer = api.post("/api/v1/batches", {"file": big_file("half.csv", room * 2 // 3)})
    assert answer.status_code == 507, answer.content
    assert "not enough free space under" in answer.json()["detail"] and " needed, " in answer.json()["detail"]
    assert leftovers(site_on_disk) == []

    answer = api.post("/api/v1/scorings", {"file": big_file("score.csv", room + 2 * MIB)})
    assert answer.status_code == 507 and "not enough free space under" in answer.json()["detail"], answer.content

    page = Client()
    page.force_login(users["analyst"])
    answer = page.post("/data/upload/", {"file": big_file("page.csv", room * 2 // 3)}, follow=True)
    assert answer.status_code == 200 and b"not enough free space under" in answer.content.replace(b"Not", b"not")
    assert leftovers(site_on_disk) == []

    assert DataBatch.objects.count() == batches
    assert AuditEvent.objects.filter(action="disk.refused").count() == 4
    disk = next(c for c in health.report().checks if c.name == "disk")
    assert disk.status == health.FAILING and "refused for lack of space" in disk.summary


def fill(home: Path, leave: int) -> Path:
    """A file taking all the free space under `home` but `leave` bytes."""
    filler = home / "filler"
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(free(home) - leave, 0))
    return filler


def test_a_scoring_job_whose_result_does_not_fit_fails_with_the_sizes_and_keeps_no_partial_result(site_on_disk, users, demo):
    from modelhub import scoring
    from modelhub.models import ScoringJob

    csv = demo.write("to_score.csv", slice(0, 7000))
    job = scoring.submit(source=csv, original_name="to_score.csv", user=users["analyst"])
    fill(site_on_disk, 64 * 1024)

    scoring.run(job)

    job.refresh_from_db()
    assert job.status == ScoringJob.Status.FAILED, job.error
    assert job.error.startswith(f"the result could not be written: not enough free space under {site_on_disk / 'scoring'}: "), job.error
    assert sorted(p.name for p in (site_on_disk / "scoring").iterdir()) == []  # no partial result (and the input went)


def test_a_model_file_that_does_not_fit_fails_the_retraining_with_the_sizes_and_leaves_no_partial_file(site_on_disk, demo,
                                                                                                      monkeypatch):
    import numpy as np

    from clsite.space import NoSpace, human_bytes
    from ingestion.services import ingest_path
    from modelhub import artifacts
    from modelhub.models import ModelVersion, TrainingRun
    from modelhub.retraining import retrain_now

    folder = site_on_disk / "models" / "versions"
    versions = sorted(folder.iterdir())
    big = artifacts.dump(np.random.default_rng(0).random(400_000))  # about 3 MB that does not compress
    ingest_path(demo.write("june.csv", slice(2000, 2600)))
    fill(site_on_disk, 1 * MIB)  # room for the log lines and mirrors, not for this model file

    with pytest.raises(NoSpace, match=f"not enough free space under {folder}: "):
        artifacts.write(big, "model_v9_9.joblib")  # met halfway: the partial file is removed
    assert sorted(folder.iterdir()) == versions

    monkeypatch.setattr(artifacts, "dump", lambda model: big)
    run = retrain_now(force=True)
    assert run.status == TrainingRun.Status.FAILED
    assert f"not enough free space under {folder}: {human_bytes(len(big))} needed, " in run.error, run.error
    assert sorted(folder.iterdir()) == versions
    assert not ModelVersion.objects.filter(run=run).exists()
