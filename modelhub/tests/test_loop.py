"""The whole loop on real SQLite and real files: init, ingest, retrain, reject, hold, rollback."""
import json

from django.core.management import call_command

from ingestion.models import DataBatch
from ingestion.services import get_data_stats, ingest_path
from modelhub import services
from modelhub.models import Deployment, ModelVersion, TrainingRun
from modelhub.retraining import retrain_now


def test_the_whole_loop_deploys_rejects_holds_and_rolls_back(initialised, demo, cl_home):
    assert initialised.version == "1.0"
    assert (cl_home / "models/active/metadata.json").exists()

    good = ingest_path(demo.write("good1.csv", slice(2000, 2600)))
    assert good.status == DataBatch.Status.STAGED
    run = retrain_now()
    assert run.status == TrainingRun.Status.DEPLOYED, run.reasons
    assert ModelVersion.active().version == "1.1"

    flipped = ingest_path(demo.flipped("flipped.csv", slice(2600, 3100)))
    run = retrain_now()
    assert run.status == TrainingRun.Status.REJECTED
    assert any("label" in reason for reason in run.reasons)
    flipped.refresh_from_db()
    assert flipped.status == DataBatch.Status.HELD
    assert ModelVersion.active().version == "1.1"

    ingest_path(demo.write("good2.csv", slice(3100, 3700)))
    run = retrain_now()
    assert run.status == TrainingRun.Status.DEPLOYED, run.reasons
    assert ModelVersion.active().version == "1.3"
    stats = get_data_stats()
    assert stats["master_rows"] == 2000 + 600 + 600
    assert stats["held_files"] == 1

    services.activate_version(version=None, user=None, reason="test")
    assert ModelVersion.active().version == "1.1"
    services.activate_version(version=ModelVersion.objects.get(major=1, minor=3), user=None, reason="forward")
    assert ModelVersion.active().version == "1.3"
    assert Deployment.objects.filter(kind=Deployment.Kind.ROLLBACK).count() == 2

    active = json.loads((cl_home / "models/active/metadata.json").read_text())
    assert active["version"] == "1.3"
    assert set(active["metrics"]) >= {"accuracy", "precision", "recall", "f1", "auc", "confusion_matrix", "feature_importance"}
    ledger = json.loads((cl_home / "logs/deployments.json").read_text())
    assert [row["to_version"] for row in ledger] == ["1.0", "1.1", "1.3", "1.1", "1.3"]


def test_retrain_without_new_data_is_skipped(initialised):
    run = retrain_now()
    assert run.status == TrainingRun.Status.SKIPPED
    assert ModelVersion.active().version == "1.0"
