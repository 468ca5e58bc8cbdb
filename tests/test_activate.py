"""Making a version active, from every door: the model page, the admin action and button, the
command line, the API. Each is the one service, activate_version, so each behaves the same: a rollback
for a version that served, a forced deployment (reason required, held batches merged) for a
candidate the gates rejected."""
import pytest
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from ingestion.models import DataBatch
from ingestion.services import get_data_stats, ingest_path
from modelhub.models import Deployment, ModelVersion, TrainingRun
from modelhub.retraining import retrain_now
from testing.builders import client_for

pytestmark = pytest.mark.slow  # a retraining (once per run, then copied: conftest's `from_snapshot`) and deployments


def web(version: ModelVersion, reason: str, user) -> str:
    response = client_for(user).post(reverse("model_rollback", args=[version.version]), {"reason": reason}, follow=True)
    return " ".join(str(m) for m in response.context["messages"])


def admin_action(version: ModelVersion, reason: str, user) -> str:
    response = client_for(user).post(reverse("admin:modelhub_modelversion_changelist"),
                                     {"action": "rollback_to_version", "_selected_action": [version.pk], "post": "yes",
                                      "reason": reason},
                                     follow=True)
    return " ".join(str(m) for m in response.context["messages"])


def admin_button(version: ModelVersion, reason: str, user) -> str:
    response = client_for(user).post(reverse("admin:modelhub_modelversion_rollback", args=[version.pk]),
                                     {"post": "yes", "reason": reason}, follow=True)
    return " ".join(str(m) for m in response.context["messages"])


def command_line(version: ModelVersion, reason: str, user) -> str:
    from modelhub.tests.commands import run_command

    code, out, err = run_command("rollback", "--version", version.version, *(["--reason", reason] if reason else []))
    return out + err


def api(version: ModelVersion, reason: str, user) -> str:
    from api.services import create_token

    _, key = create_token(user=user, name="activate")
    response = Client().post(f"/api/v1/models/{version.version}/activate", {"reason": reason}, content_type="application/json",
                             HTTP_AUTHORIZATION=f"Bearer {key}")
    body = response.json()
    return body.get("detail") or f"v{body['version']} is now the active model ({body['kind']})"


DOORS = [web, admin_action, admin_button, command_line, api]


def _reject_a_flipped_batch(demo) -> dict:
    """v1.1, rejected for the flipped labels of the batch its run then holds (built once per run)."""
    held = ingest_path(demo.flipped("flipped.csv", slice(2000, 2500)))
    run = retrain_now()
    return {"run": run.pk, "held": held.pk}


@pytest.fixture
def rejected(from_snapshot, users):
    """v1.1, rejected for the flipped labels of the batch its run now holds."""
    made = from_snapshot("activate.rejected", _reject_a_flipped_batch)
    run = TrainingRun.objects.get(pk=made["run"])
    assert run.status == TrainingRun.Status.REJECTED, (run.error, run.reasons)
    held = DataBatch.objects.get(pk=made["held"])
    assert held.status == DataBatch.Status.HELD
    return run.candidate, held


@pytest.mark.parametrize("door", DOORS, ids=[door.__name__ for door in DOORS])
def test_each_door_deploys_a_rejected_candidate_only_with_a_reason_then_rolls_back(door, rejected, users, cl_home):
    candidate, held = rejected
    before = get_data_stats()["master_rows"]

    said = door(candidate, "", users["engineer"])

    assert "needs a reason" in said, said
    assert ModelVersion.active().version == "1.0"
    held.refresh_from_db()
    assert held.status == DataBatch.Status.HELD

    said = door(candidate, "the labels are right: a new retention campaign", users["engineer"])

    # A forced deployment: the reason in the ledger, the held batch merged with it.
    assert "v1.1" in said and ModelVersion.active().version == "1.1", said
    deployment = Deployment.objects.latest("created_at")
    assert (deployment.kind, deployment.from_version.version, deployment.reason) == (
        Deployment.Kind.FORCED, "1.0", "the labels are right: a new retention campaign")
    held.refresh_from_db()
    assert held.status == DataBatch.Status.MERGED
    assert (cl_home / held.parquet_path).exists() and held.parquet_path.startswith("data/training/")
    assert get_data_stats()["master_rows"] == before + 500
    assert AuditEvent.objects.filter(action="model.forced", target="v1.1").count() == 1

    said = door(ModelVersion.objects.get(major=1, minor=0), "back to the known one", users["engineer"])

    # v1.0 served before: the same door now makes it a rollback.
    assert ModelVersion.active().version == "1.0", said
    deployment = Deployment.objects.latest("created_at")
    assert (deployment.kind, deployment.from_version.version, deployment.reason) == (
        Deployment.Kind.ROLLBACK, "1.1", "back to the known one")


def test_an_analyst_cannot_activate_a_version_through_any_door(rejected, users):
    candidate, _ = rejected
    for door in (web, admin_action, admin_button):
        client = client_for(users["analyst"])
        door_url = {
            web: reverse("model_rollback", args=[candidate.version]),
            admin_action: reverse("admin:modelhub_modelversion_changelist"),
            admin_button: reverse("admin:modelhub_modelversion_rollback", args=[candidate.pk]),
        }[door]
        response = client.post(door_url, {"action": "rollback_to_version", "_selected_action": [candidate.pk], "post": "yes",
                                          "reason": "x"})
        assert response.status_code in (302, 403), door.__name__
        if response.status_code == 302:
            assert "/login/" in response["Location"] or "/admin/login/" in response["Location"], door.__name__
    from api.services import create_token

    _, key = create_token(user=users["analyst"], name="not allowed")
    response = Client().post(f"/api/v1/models/{candidate.version}/activate", {"reason": "x"}, content_type="application/json",
                             HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 403
    assert ModelVersion.active().version == "1.0"
