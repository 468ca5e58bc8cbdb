"""The life of a batch: duplicates, hold, release, discard, merge, replaced ids, concurrent uploads."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from audit.models import AuditEvent
from ingestion import master
from ingestion.models import DatasetSchema, DataBatch, MasterPartition, MasterSummary
from ingestion.schema import learn_schema
from ingestion.services import (
    BatchStateError, DuplicateUpload, create_schema, discard_batch, get_data_stats, hold_batches, ingest_path, release_batch,
)
from modelhub.models import TrainingRun
from modelhub.retraining import retrain_now
from testing import builders

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def schema(cl_home, db, demo):
    """The schema contract learned from 2,000 demo rows (no model: these tests need none).

    A system the session committed before this test (conftest's `ready`) is deleted first, inside
    this test's transaction, so the master starts empty whatever ran before."""
    from modelhub.models import Deployment, ModelVersion, ScoringJob
    for model in (Deployment, ScoringJob, ModelVersion, TrainingRun, MasterSummary, MasterPartition, DataBatch, DatasetSchema):
        model.objects.all().delete()
    return create_schema(learn_schema(demo.write("initial.csv", slice(0, 2000)), target="churn", id_column="customer_id"))


def files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_the_same_bytes_twice_are_refused_naming_the_first_upload(schema, demo, cl_home):
    path = demo.write("march.csv", slice(2000, 2100))
    first = ingest_path(path)
    again = demo.folder / "march_copy.csv"  # another name, the same bytes
    again.write_bytes(path.read_bytes())
    batches, events, new = DataBatch.objects.count(), AuditEvent.objects.count(), files(cl_home / "data/new")

    with pytest.raises(DuplicateUpload) as refused:
        ingest_path(again)

    assert refused.value.first == first
    assert f"batch {first.pk} ('march.csv'" in str(refused.value)
    assert "now staged" in str(refused.value)
    assert (DataBatch.objects.count(), AuditEvent.objects.count()) == (batches, events)
    assert files(cl_home / "data/new") == new
    assert files(cl_home / "tmp") == []


def test_a_refused_file_uploaded_again_is_a_duplicate_of_the_refused_one(schema, demo):
    frame = demo.frame.iloc[2000:2050].copy()
    frame.iloc[3, frame.columns.get_loc("churn")] = "Maybe"
    bad = demo.write("bad.csv", frame=frame)
    first = ingest_path(bad)
    assert first.status == DataBatch.Status.REJECTED

    with pytest.raises(DuplicateUpload, match=f"batch {first.pk} .*now rejected"):
        ingest_path(bad)


def test_a_file_is_taken_again_once_its_first_copy_is_discarded(schema, demo, users, cl_home, django_capture_on_commit_callbacks):
    path = demo.write("april.csv", slice(2100, 2200))
    first = ingest_path(path)
    hold_batches([first])
    with django_capture_on_commit_callbacks(execute=True):
        discard_batch(batch=first, user=users["engineer"], reason="wrong month")

    second = ingest_path(path)

    assert second.pk != first.pk
    assert second.status == DataBatch.Status.STAGED
    assert second.sha256 == first.sha256
    assert (cl_home / second.raw_path).read_bytes() == path.read_bytes()
    assert (cl_home / second.parquet_path).exists()


def test_a_held_batch_is_released_back_to_staged_and_the_act_is_audited(schema, demo, users):
    batch = ingest_path(demo.write("may.csv", slice(2200, 2300)))

    hold_batches([batch])

    batch.refresh_from_db()
    assert batch.status == DataBatch.Status.HELD
    stats = get_data_stats()
    assert (stats["held_files"], stats["held_rows"], stats["staged_files"]) == (1, 100, 0)

    release_batch(batch=batch, user=users["engineer"], reason="the labels were checked by hand")

    batch.refresh_from_db()
    assert (batch.status, batch.note) == (DataBatch.Status.STAGED, "the labels were checked by hand")
    stats = get_data_stats()
    assert (stats["held_files"], stats["staged_files"], stats["staged_rows"]) == (0, 1, 100)
    event = AuditEvent.objects.get(action="data.released")
    assert (event.actor, event.target, event.details) == (users["engineer"], str(batch), {"reason": "the labels were checked by hand"})
    with pytest.raises(BatchStateError, match="only held batches can be released"):
        release_batch(batch=batch, user=users["engineer"])


def test_discarding_a_held_batch_moves_its_raw_file_to_quarantine_and_drops_its_rows(schema, demo, users, cl_home,
                                                                                       django_capture_on_commit_callbacks):
    path = demo.write("june.csv", slice(2300, 2400))
    batch = ingest_path(path)
    staged_parquet = cl_home / batch.parquet_path
    hold_batches([batch])

    with django_capture_on_commit_callbacks(execute=True):
        discard_batch(batch=batch, user=users["engineer"], reason="duplicate of the CRM export")

    batch.refresh_from_db()
    assert batch.status == DataBatch.Status.DISCARDED
    assert batch.raw_path.startswith("data/quarantine/")
    assert (cl_home / batch.raw_path).read_bytes() == path.read_bytes()
    assert files(cl_home / "data/new") == []
    assert not staged_parquet.exists()
    stats = get_data_stats()
    assert (stats["held_files"], stats["discarded_files"], stats["master_rows"]) == (0, 1, 0)
    event = AuditEvent.objects.get(action="data.discarded")
    assert (event.actor, event.details["reason"]) == (users["engineer"], "duplicate of the CRM export")


def test_discarding_a_rejected_batch_keeps_its_file_and_report_in_quarantine(schema, demo, users, cl_home):
    frame = demo.frame.iloc[2400:2450].copy()
    frame.iloc[0, frame.columns.get_loc("tenure")] = "many"
    batch = ingest_path(demo.write("july.csv", frame=frame))
    raw = cl_home / batch.raw_path

    discard_batch(batch=batch, user=users["engineer"], reason="sent again, fixed")

    batch.refresh_from_db()
    assert batch.status == DataBatch.Status.DISCARDED
    assert cl_home / batch.raw_path == raw
    assert raw.exists() and Path(f"{raw}.report.json").exists()
    assert AuditEvent.objects.filter(action="data.discarded", actor=users["engineer"]).count() == 1
    assert get_data_stats()["rejected_files"] == 0


def test_staged_and_merged_batches_cannot_be_discarded(schema, demo, users, cl_home, django_capture_on_commit_callbacks):
    staged = ingest_path(demo.write("staged.csv", slice(2500, 2550)))
    merged = ingest_path(demo.write("merged.csv", slice(2550, 2600)))
    with django_capture_on_commit_callbacks(execute=True):
        master.merge_batches(master.plan_merge([merged], schema))

    for batch in (staged, merged):
        with pytest.raises(BatchStateError, match="only held or rejected batches can be discarded"):
            discard_batch(batch=batch, user=users["engineer"])

    assert AuditEvent.objects.filter(action="data.discarded").count() == 0
    stats = get_data_stats()
    assert (stats["staged_files"], stats["master_rows"]) == (1, 50)


def test_merging_moves_the_rows_to_training_and_the_raw_file_to_archive(schema, demo, cl_home, django_capture_on_commit_callbacks):
    path = demo.write("august.csv", slice(2600, 2800))
    batch = ingest_path(path)
    staged_raw, staged_parquet = cl_home / batch.raw_path, cl_home / batch.parquet_path
    rows = staged_parquet.read_bytes()

    with django_capture_on_commit_callbacks(execute=True):
        (partition,) = master.merge_batches(master.plan_merge([batch], schema))

    batch.refresh_from_db()
    assert batch.status == DataBatch.Status.MERGED and batch.merged_at is not None
    assert (partition.batch, partition.rows, partition.path) == (batch, 200, batch.parquet_path)
    assert batch.parquet_path.startswith("data/training/") and batch.raw_path.startswith("data/archive/")
    assert (cl_home / batch.parquet_path).read_bytes() == rows
    assert (cl_home / batch.raw_path).read_bytes() == path.read_bytes()
    assert not staged_raw.exists() and not staged_parquet.exists()
    assert files(cl_home / "data/new") == []
    stats = get_data_stats()
    assert (stats["master_rows"], stats["master_partitions"], stats["archived_files"], stats["staged_files"]) == (200, 1, 1, 0)


def test_merging_and_data_stats_never_read_the_master_s_rows(schema, demo, cl_home, django_capture_on_commit_callbacks):
    """The cost of a merge is the batch's, not the master's: given the plan of a run that has
    read the rows already, it must not even open the partitions, nor must data stats."""
    older = [ingest_path(demo.write(f"old{i}.csv", slice(2800 + 100 * i, 2900 + 100 * i))) for i in range(3)]
    with django_capture_on_commit_callbacks(execute=True):
        master.merge_batches(master.plan_merge(older, schema))
    new = ingest_path(demo.write("new.csv", slice(3100, 3150)))
    plan = master.plan_merge([new], schema)
    for partition in MasterPartition.objects.all():
        (cl_home / partition.path).write_bytes(b"not parquet any more")

    with django_capture_on_commit_callbacks(execute=True):
        master.merge_batches(plan)

    stats = get_data_stats()
    assert (stats["master_rows"], stats["master_partitions"]) == (350, 4)
    assert sum(v["rows"] for v in stats["class_balance"].values()) == 350
    assert stats["columns"]["tenure"]["count"] == 350


def test_duplicate_ids_in_a_file_are_a_counted_warning(schema, demo):
    frame = demo.frame.iloc[3200:3300].copy()
    frame.iloc[10:15, frame.columns.get_loc("customer_id")] = frame.iloc[0:5, frame.columns.get_loc("customer_id")].to_numpy()

    batch = ingest_path(demo.write("repeats.csv", frame=frame))

    assert batch.status == DataBatch.Status.STAGED
    (warning,) = [w for w in batch.warnings if w["code"] == "duplicate_ids"]
    assert warning["count"] == 5


def test_the_newest_row_of_an_id_replaces_the_master_s_row_and_is_counted(cl_home, demo, empty_db, settings):
    settings.CL_CV_FOLDS = 2
    builders.initialise(demo, rows=slice(0, 800))
    frame = demo.frame.iloc[750:1000].copy()  # rows 750..799 repeat ids already in the master
    tenure = frame.columns.get_loc("tenure")
    frame.iloc[:50, tenure] = [str(100 + i) for i in range(50)]
    corrections = ingest_path(demo.write("corrections.csv", frame=frame))

    run = retrain_now()

    # The run counted the replaced rows on the way.
    assert run.status == TrainingRun.Status.DEPLOYED, (run.error, run.reasons)
    assert run.details["replaced_ids"] == 50
    assert run.details["rows"] == 800 + 250 - 50
    assert "50 replaced by newer rows with the same id" in run.stages[0]["detail"]
    rows, replaced = master.rows_after_merge([], DatasetSchema.current())
    assert replaced == 50
    newest = rows.set_index("customer_id").loc[demo.frame.customer_id.iloc[750:800], "tenure"]
    assert newest.tolist() == [float(100 + i) for i in range(50)]
    # The master counts each id once: its rows, class balance and column counts.
    stats = get_data_stats()
    assert (stats["master_rows"], stats["master_replaced_rows"]) == (1000, 50)
    assert sum(v["rows"] for v in stats["class_balance"].values()) == 1000
    assert stats["columns"]["tenure"]["count"] + stats["columns"]["tenure"]["missing"] == 1000
    expected = demo.frame.iloc[0:1000].churn.value_counts().to_dict()
    assert {label: v["rows"] for label, v in stats["class_balance"].items()} == expected

    # The next run reports the rows it replaced itself, not the running total.
    again = demo.frame.iloc[980:1100].copy()  # 20 ids already in the master
    ingest_path(demo.write("more.csv", frame=again))
    run = retrain_now()
    assert run.details["replaced_ids"] == 20, run.details
    assert get_data_stats()["master_rows"] == 1100


# Several threads ingesting at once, in a process of its own on the production database set-up:
# SQLite in a file, in WAL mode, with IMMEDIATE transactions (clsite/settings.py). The test
# database is SQLite in memory with a shared cache, whose table locks fail at once instead of
# waiting, so it cannot stand for the real thing here.
CONCURRENT_UPLOADS = """
import json, sys, threading
import django
django.setup()
from django.core.management import call_command
from django.db import connection
from audit.models import AuditEvent
from ingestion.models import DataBatch
from ingestion.schema import learn_schema
from ingestion.services import DuplicateUpload, create_schema, get_data_stats, ingest_path

call_command("migrate", verbosity=0)
create_schema(learn_schema(sys.argv[1], target="churn", id_column="customer_id"))
paths = sys.argv[2:]
start = threading.Barrier(len(paths))
outcomes = [None] * len(paths)

def upload(i):
    try:
        start.wait()
        batch = ingest_path(paths[i])
        outcomes[i] = {"batch": batch.pk, "status": batch.status}
    except DuplicateUpload as exc:
        outcomes[i] = {"duplicate_of": exc.first.pk}
    except Exception as exc:
        outcomes[i] = {"error": repr(exc)}
    finally:
        connection.close()

threads = [threading.Thread(target=upload, args=(i,)) for i in range(len(paths))]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(120)
stats = get_data_stats()
print(json.dumps({
    "outcomes": outcomes,
    "batches": list(DataBatch.objects.order_by("pk").values("pk", "original_name", "status", "rows", "raw_path", "parquet_path")),
    "staged_events": AuditEvent.objects.filter(action="data.staged").count(),
    "staged_files": stats["staged_files"], "staged_rows": stats["staged_rows"],
    "journal_mode": connection.cursor().execute("PRAGMA journal_mode").fetchone()[0],
}))
"""


def upload_concurrently(home: Path, initial: Path, paths: list[Path]) -> dict:
    env = dict(os.environ, CL_HOME=str(home), DJANGO_SETTINGS_MODULE="clsite.settings", DJANGO_SECRET_KEY="concurrency-test")
    env.pop("DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-c", CONCURRENT_UPLOADS, str(initial), *map(str, paths)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_concurrent_uploads_from_several_threads_are_all_recorded(tmp_path, demo):
    home = tmp_path / "concurrent_home"
    paths = [demo.write(f"upload{i}.csv", slice(2000 + 150 * i, 2150 + 150 * i)) for i in range(8)]

    result = upload_concurrently(home, demo.write("initial.csv", slice(0, 2000)), paths)

    assert result["journal_mode"] == "wal"
    assert all(outcome.get("status") == "staged" for outcome in result["outcomes"]), result["outcomes"]
    assert sorted(b["original_name"] for b in result["batches"]) == sorted(p.name for p in paths)
    assert {b["rows"] for b in result["batches"]} == {150}
    assert result["staged_events"] == 8
    assert (result["staged_files"], result["staged_rows"]) == (8, 1200)
    kept = sorted(p.name for p in (home / "data" / "new").iterdir())
    assert kept == sorted(Path(b[key]).name for b in result["batches"] for key in ("raw_path", "parquet_path"))
    assert [p.name for p in (home / "tmp").iterdir() if p.name.startswith("upload-")] == []


def test_the_same_file_uploaded_from_two_threads_at_once_is_recorded_once(tmp_path, demo):
    home = tmp_path / "concurrent_home"
    path = demo.write("twice.csv", slice(2000, 2300))

    result = upload_concurrently(home, demo.write("initial.csv", slice(0, 2000)), [path, path, path])

    (batch,) = result["batches"]
    assert batch["status"] == "staged"
    assert sorted(map(str, result["outcomes"])) == sorted(map(str, [{"batch": batch["pk"], "status": "staged"},
                                                                    {"duplicate_of": batch["pk"]}, {"duplicate_of": batch["pk"]}]))
    kept = sorted(p.name for p in (home / "data" / "new").iterdir())
    assert kept == sorted([Path(batch["raw_path"]).name, Path(batch["parquet_path"]).name])
    assert [p.name for p in (home / "tmp").iterdir() if p.name.startswith("upload-")] == []
