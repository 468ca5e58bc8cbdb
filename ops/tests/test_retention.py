"""Bounded disk: old temporary, quarantined, discarded and archived files go; the master and
every model version stay."""
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from ingestion.models import DataBatch, MasterPartition
from ingestion.services import discard_batch, hold_batches, ingest_path
from modelhub.models import ModelVersion
from modelhub.retraining import retrain_now
from modelhub.tests.commands import run_command
from ops import retention
from testing.builders import client_for


def age(path, days: float = 0, hours: float = 0) -> None:
    then = time.time() - timedelta(days=days, hours=hours).total_seconds()
    os.utime(path, (then, then))


def _age_files_of_every_kind(demo) -> dict:
    """Files of every kind, some past their keeping time and some not (built once per run)."""
    from django.conf import settings

    from testing.builders import make_users

    home = Path(settings.CL_HOME)
    engineer = make_users()["engineer"]
    old, fresh = timezone.now() - timedelta(days=400), timezone.now() - timedelta(hours=1)
    (home / "tmp" / "upload-stale").write_bytes(b"x" * 1000)
    (home / "tmp" / "upload-in-flight").write_bytes(b"y" * 10)
    age(home / "tmp" / "upload-stale", hours=settings.CL_KEEP_TMP_HOURS + 1)
    bad = demo.frame.iloc[2000:2050].copy()
    bad.iloc[0, bad.columns.get_loc("churn")] = "Maybe"
    refused_old = ingest_path(demo.write("refused_old.csv", frame=bad))
    refused_new = ingest_path(demo.write("refused_new.csv", frame=bad.iloc[:40]))
    discarded = ingest_path(demo.write("discarded.csv", slice(2100, 2200)))
    hold_batches([discarded])
    discard_batch(batch=discarded, user=engineer, reason="wrong month")
    held = ingest_path(demo.write("held.csv", slice(2200, 2300)))
    hold_batches([held])
    merged = ingest_path(demo.write("merged.csv", slice(2300, 2900)))
    assert retrain_now().status == "deployed"
    DataBatch.objects.filter(pk__in=[refused_old.pk, discarded.pk]).update(uploaded_at=old)
    DataBatch.objects.filter(pk=refused_new.pk).update(uploaded_at=fresh)
    DataBatch.objects.filter(pk=held.pk).update(uploaded_at=old)
    DataBatch.objects.filter(status=DataBatch.Status.MERGED).update(merged_at=old)  # the initial batch and `merged`
    return {"refused_old": refused_old.pk, "refused_new": refused_new.pk, "discarded": discarded.pk, "held": held.pk,
            "merged": merged.pk}


@pytest.fixture
def aged(from_snapshot, users):
    """Files of every kind, some past their keeping time and some not."""
    made = {name: DataBatch.objects.get(pk=pk) for name, pk in from_snapshot("retention.aged", _age_files_of_every_kind).items()}
    assert (made["refused_old"].status, made["refused_new"].status) == (DataBatch.Status.REJECTED, DataBatch.Status.REJECTED)
    return made


def test_a_dry_run_lists_what_goes_and_removes_nothing(aged, cl_home):
    before = sorted(p for p in cl_home.rglob("*") if p.is_file())

    code, out, _ = run_command("cleanup", "--dry-run")

    assert code == 0
    assert "tmp/upload-stale" in out and "upload-in-flight" not in out
    assert aged["refused_old"].raw_path in out and aged["refused_new"].raw_path not in out
    assert aged["discarded"].raw_path in out and aged["merged"].raw_path in out
    assert aged["held"].raw_path not in out
    assert "would remove" in out.splitlines()[-1]
    assert sorted(p for p in cl_home.rglob("*") if p.is_file()) == before


def test_cleanup_removes_old_files_but_never_the_master_staged_held_or_any_model(aged, cl_home):
    partitions = [cl_home / p.path for p in MasterPartition.objects.all()]
    artifacts = [cl_home / "models" / "versions" / v.artifact for v in ModelVersion.objects.all()]

    code, out, _ = run_command("cleanup")

    assert code == 0 and out.splitlines()[-1].startswith("removed ")
    assert not (cl_home / "tmp" / "upload-stale").exists() and (cl_home / "tmp" / "upload-in-flight").exists()
    for name in ("refused_old", "discarded", "merged"):
        batch = DataBatch.objects.get(pk=aged[name].pk)
        assert not (cl_home / aged[name].raw_path).exists(), name
        assert batch.raw_path == "" and "removed by the retention policy" in batch.note, name
    assert not (cl_home / f"{aged['refused_old'].raw_path}.report.json").exists()
    assert DataBatch.objects.get(pk=aged["refused_old"].pk).report["errors"]  # the report stays in the database
    assert (cl_home / aged["refused_new"].raw_path).exists()
    assert (cl_home / aged["held"].raw_path).exists() and (cl_home / aged["held"].parquet_path).exists()
    assert all(path.exists() for path in partitions + artifacts)
    assert AuditEvent.objects.filter(action="data.cleanup").count() == 1
    assert retention.plan().removals == []  # nothing left to do
    assert retrain_now(force=True).status == "deployed"  # the master is whole


def test_the_status_page_says_what_the_next_clean_up_frees(aged, users):
    client = client_for(users["viewer"])
    page = client.get(reverse("status")).content.decode()
    plan = retention.plan()
    assert f"Would remove {len(plan.removals)} file(s)" in page
    assert "temporary file older than 6 hours" in page


def test_the_data_page_says_what_the_next_clean_up_frees(aged, users):
    client = client_for(users["analyst"])
    page = client.get(reverse("data")).content.decode()
    assert f"would remove {len(retention.plan().removals)} file(s)" in page and "freed" in page
