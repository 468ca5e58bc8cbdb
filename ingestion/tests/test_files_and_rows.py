"""An upload's files and its row move together; files a crash leaves without a row are quarantined and listed."""
import os
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import OperationalError

from ingestion import orphans, services
from ingestion.models import DataBatch
from ingestion.schema import learn_schema
from ingestion.services import create_schema, ingest_path
from ops import repairs, retention


@pytest.fixture
def schema(cl_home, transactional_db, demo):
    """The schema learned from 2,000 demo rows, committed for real (no model: these tests need none)."""
    return create_schema(learn_schema(demo.write("initial.csv", slice(0, 2000)), target="churn", id_column="customer_id"))


def files(home: Path, folder: str) -> list[str]:
    where = home / folder
    return sorted(path.name for path in where.iterdir() if path.is_file()) if where.is_dir() else []


def age(paths, minutes: float) -> None:
    then = time.time() - minutes * 60
    for path in paths:
        os.utime(path, (then, then))


def test_a_database_failing_at_the_insert_leaves_no_file_anywhere(schema, demo, cl_home, monkeypatch):
    def stopped(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(DataBatch.objects, "create", stopped)
    with pytest.raises(OperationalError):
        ingest_path(demo.write("april.csv", slice(2000, 2300)))
    assert files(cl_home, "data/new") == [] and files(cl_home, "tmp") == []


def test_a_commit_that_fails_after_the_files_were_placed_takes_them_away_again(schema, demo, cl_home, monkeypatch):
    place = services._place

    def then_the_database_stops(places, placed):
        place(places, placed)
        assert files(cl_home, "data/new"), "the files are in place inside the transaction"
        raise OperationalError("terminating connection due to administrator command")

    monkeypatch.setattr(services, "_place", then_the_database_stops)
    with pytest.raises(OperationalError):
        ingest_path(demo.write("april.csv", slice(2000, 2300)))
    assert not DataBatch.objects.exists()
    assert files(cl_home, "data/new") == [] and files(cl_home, "tmp") == []


def test_a_refused_upload_keeps_its_file_and_report_in_quarantine_with_its_row(schema, demo, cl_home):
    bad = demo.frame.iloc[2000:2050].drop(columns=["tenure"])
    batch = ingest_path(demo.write("no_tenure.csv", frame=bad))
    assert batch.status == DataBatch.Status.REJECTED
    assert files(cl_home, "data/quarantine") == sorted([Path(batch.raw_path).name, Path(batch.raw_path).name + ".report.json"])
    assert files(cl_home, "tmp") == []


def test_files_a_crash_left_without_a_row_are_quarantined_and_listed_by_cleanup(schema, demo, cl_home, capsys):
    staged = ingest_path(demo.write("april.csv", slice(2000, 2300)))
    lost = [cl_home / "data/new/0123456789ab__may.csv", cl_home / "data/new/0123456789ab.parquet",
            cl_home / "tmp/upload-0f0f.parquet"]
    for path in lost:
        path.write_bytes(b"x" * 1000)
    age([*lost, cl_home / staged.raw_path, cl_home / staged.parquet_path], minutes=30)
    young = cl_home / "tmp/upload-beef"  # an upload in progress
    young.write_bytes(b"y" * 10)

    done = repairs.repair()

    assert sorted(done["orphans"]) == sorted(str(p.relative_to(cl_home)) for p in lost)
    assert files(cl_home, "data/new") == sorted([Path(staged.raw_path).name, Path(staged.parquet_path).name])
    assert files(cl_home, orphans.FOLDER) == sorted(p.name for p in lost)
    assert young.exists()
    assert repairs.repair()["orphans"] == []  # nothing twice
    plan = retention.plan()
    assert sorted(Path(r.path).name for r in plan.orphans) == sorted(p.name for p in lost)
    assert not any(r.path.startswith(orphans.FOLDER) for r in plan.removals)  # kept until CL_KEEP_QUARANTINE_DAYS

    call_command("cleanup", "--dry-run")
    out = capsys.readouterr().out
    assert "kept 3 quarantined orphan file(s)" in out and "data/quarantine/orphans/0123456789ab__may.csv" in out


def test_quarantined_orphans_go_after_the_quarantine_time(schema, cl_home, settings):
    (cl_home / orphans.FOLDER).mkdir(parents=True)
    old = cl_home / orphans.FOLDER / "0123456789ab__may.csv"
    old.write_bytes(b"x" * 100)
    age([old], minutes=(settings.CL_KEEP_QUARANTINE_DAYS + 1) * 24 * 60)
    done = retention.apply()
    assert [r.path for r in done.removals] == [f"{orphans.FOLDER}/0123456789ab__may.csv"]
    assert not old.exists()
