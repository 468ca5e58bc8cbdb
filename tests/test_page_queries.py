"""Pages that stay fast as history grows: the same number of SQL queries with 5 or 500 versions,
runs, deployments and batches behind them."""
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from ingestion.models import DataBatch
from modelhub.models import Deployment, ModelVersion, TrainingRun

PAGES = ["/", "/models/", "/models/1.0/", "/runs/", "/deployments/", "/data/", "/predict/", "/status/"]


def grow_history(extra: int) -> None:
    """`extra` more retired versions (each with its run and deployment) and staged-looking batches."""
    active = ModelVersion.active()
    start = ModelVersion.objects.count()
    now = timezone.now()
    runs = TrainingRun.objects.bulk_create([
        TrainingRun(trigger=TrainingRun.Trigger.SCHEDULE, status=TrainingRun.Status.DEPLOYED, started_at=now, finished_at=now)
        for _ in range(extra)])
    versions = ModelVersion.objects.bulk_create([
        ModelVersion(major=1, minor=start + i, status=ModelVersion.Status.RETIRED, schema=active.schema, run=run,
                     artifact=active.artifact, sha256=active.sha256, trained_at=now - timedelta(days=extra - i),
                     deployed_at=now - timedelta(days=extra - i), estimator=active.estimator, metrics=active.metrics,
                     validation=active.validation, drift=active.drift, training_rows=active.training_rows)
        for i, run in enumerate(runs)])
    Deployment.objects.bulk_create([
        Deployment(created_at=version.deployed_at, kind=Deployment.Kind.DEPLOY, to_version=version, from_version=active, run=version.run)
        for version in versions])
    DataBatch.objects.bulk_create([
        DataBatch(original_name=f"b{i}.csv", sha256=f"{start}-{i}", size_bytes=10, rows=5, status=DataBatch.Status.REJECTED,
                  report={"summary": "refused"}) for i in range(extra)])


def queries(client: Client) -> dict[str, int]:
    counts = {}
    for page in PAGES:
        client.get(page)  # warm: figures are built once per change, then read
        with CaptureQueriesContext(connection) as captured:
            response = client.get(page)
        assert response.status_code == 200, page
        counts[page] = len(captured)
    return counts


@pytest.mark.slow
def test_query_counts_do_not_grow_with_the_history(ready, users):
    client = Client()
    client.force_login(users["engineer"])
    grow_history(5)
    small = queries(client)

    grow_history(495)
    large = queries(client)

    assert ModelVersion.objects.count() >= 500
    assert large == small, {page: (small[page], large[page]) for page in PAGES if small[page] != large[page]}
