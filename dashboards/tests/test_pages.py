"""Every page for every role: who sees what, and the forms that act."""
import pytest
from django.urls import reverse

from ingestion.models import DataBatch
from modelhub.models import Deployment, ModelVersion
from testing.builders import PASSWORD

PAGES = ["overview", "data", "models", "runs", "deployments", "predict", "status"]


def login(client, user):
    # Through the real login page, as a person would (django-axes watches it).
    response = client.post(reverse("login"), {"username": user.username, "password": PASSWORD})
    assert response.status_code == 302, response.content[:500]
    return client


@pytest.mark.parametrize("page", PAGES)
def test_every_page_needs_a_login(client, ready, page):
    response = client.get(reverse(page))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("page", PAGES)
def test_every_role_sees_the_dashboards(client, ready, users, page):
    for name in ("viewer", "analyst", "engineer", "admin"):
        client.logout()
        login(client, users[name])
        assert client.get(reverse(page)).status_code == 200, name


def test_a_user_without_a_role_sees_nothing(client, ready, users):
    login(client, users["nobody"])
    assert client.get(reverse("overview")).status_code == 403


def test_the_model_and_run_pages_render(client, ready, users):
    login(client, users["viewer"])
    page = client.get(reverse("model_detail", args=["1.0"]))
    assert page.status_code == 200
    assert b"plotly.min.js" in page.content
    assert b"Confusion matrix" in page.content
    run = ready.run
    assert client.get(reverse("run_detail", args=[run.pk])).status_code == 200
    assert client.get(reverse("model_detail", args=["9.9"])).status_code == 404


def test_a_version_name_that_is_not_one_is_not_found(client, ready, users):
    login(client, users["engineer"])
    assert client.get(reverse("model_detail", args=["latest"])).status_code == 404
    assert client.post(reverse("model_rollback", args=["latest"]), {"reason": "x"}).status_code == 404
    assert client.post(reverse("model_rollback", args=["9.9"]), {"reason": "x"}).status_code == 404


def test_the_viewer_cannot_upload_but_the_analyst_can(client, ready, users, demo):
    login(client, users["viewer"])
    assert client.get(reverse("upload")).status_code == 403
    client.logout()
    login(client, users["analyst"])
    with open(demo.write("web.csv", slice(2000, 2300)), "rb") as fh:
        response = client.post(reverse("upload"), {"file": fh})
    batch = DataBatch.objects.get(original_name="web.csv")
    assert response.status_code == 302 and response["Location"] == reverse("batch_detail", args=[batch.pk])
    assert batch.status == DataBatch.Status.STAGED and batch.uploaded_by == users["analyst"]
    assert b"accepted: 300 rows" in client.get(response["Location"]).content


def test_a_bad_upload_shows_its_report(client, ready, users, demo):
    login(client, users["analyst"])
    frame = demo.frame.iloc[2000:2010].copy()
    frame.loc[frame.index[3], "tenure"] = "twelve"
    with open(demo.write("bad.csv", frame=frame), "rb") as fh:
        response = client.post(reverse("upload"), {"file": fh}, follow=True)
    assert b"twelve" in response.content and b"Refused" in response.content


def test_the_template_has_the_schema_header(client, ready, users):
    login(client, users["viewer"])
    body = client.get(reverse("template_csv")).content.decode()
    assert body.strip().split(",")[0] == "customer_id" and body.strip().endswith("churn")


def test_prediction_for_one_customer(client, ready, users, demo):
    login(client, users["viewer"])
    row = demo.frame.iloc[0].to_dict()
    row.pop("customer_id"), row.pop("churn")
    response = client.post(reverse("predict"), row)
    assert response.status_code == 200
    assert b"Prediction by v1.0" in response.content


def test_batch_prediction_returns_a_csv_for_analysts_only(client, ready, users, demo):
    path = demo.write("score.csv", slice(3000, 3050))
    login(client, users["viewer"])
    with open(path, "rb") as fh:
        assert client.post(reverse("predict_batch"), {"file": fh}).status_code == 403
    client.logout()
    login(client, users["analyst"])
    with open(path, "rb") as fh:
        response = client.post(reverse("predict_batch"), {"file": fh})
    from modelhub import scoring
    from modelhub.models import ScoringJob

    job = ScoringJob.objects.get()
    assert response["Location"] == reverse("scoring_job", args=[job.pk])
    scoring.run(job)  # the worker's part
    result = client.get(reverse("scoring_result", args=[job.pk]))
    lines = b"".join(result.streaming_content).decode().splitlines()
    assert lines[0] == '"customer_id","probability","prediction","warnings"' and len(lines) == 51
    from django.conf import settings

    assert [p.name for p in (settings.CL_HOME / "tmp").iterdir()] == []


def test_only_ml_engineers_start_a_retraining(client, ready, users):
    login(client, users["analyst"])
    assert client.post(reverse("run_start")).status_code == 403


def _second_version(demo):
    from ingestion.services import ingest_path
    from modelhub.retraining import retrain_now

    ingest_path(demo.write("more.csv", slice(2000, 2600)))
    assert retrain_now().status == "deployed"


def test_rollback_through_the_admin_action_as_an_ml_engineer(client, ready, users, demo):
    _second_version(demo)
    login(client, users["engineer"])
    v10 = ModelVersion.objects.get(major=1, minor=0)
    url = reverse("admin:modelhub_modelversion_changelist")
    confirm = client.post(url, {"action": "rollback_to_version", "_selected_action": [v10.pk]})
    assert confirm.status_code == 200 and b"Roll back to v1.0?" in confirm.content
    done = client.post(url, {"action": "rollback_to_version", "_selected_action": [v10.pk], "post": "yes", "reason": "bad week"})
    assert done.status_code == 302
    assert ModelVersion.active().version == "1.0"
    last = Deployment.objects.first()
    assert last.kind == Deployment.Kind.ROLLBACK and last.user == users["engineer"] and last.reason == "bad week"


def test_rollback_through_the_admin_is_refused_to_an_analyst(client, ready, users, demo):
    _second_version(demo)
    login(client, users["analyst"])
    v10 = ModelVersion.objects.get(major=1, minor=0)
    response = client.post(reverse("admin:modelhub_modelversion_changelist"),
                           {"action": "rollback_to_version", "_selected_action": [v10.pk], "post": "yes", "reason": "x"})
    assert response.status_code in (302, 403)
    assert ModelVersion.active().version == "1.1"
    assert client.post(reverse("model_rollback", args=["1.0"]), {"reason": "x"}).status_code == 403


def test_the_button_on_a_version_page_rolls_back(client, ready, users, demo):
    _second_version(demo)
    login(client, users["engineer"])
    v10 = ModelVersion.objects.get(major=1, minor=0)
    page = client.get(reverse("admin:modelhub_modelversion_change", args=[v10.pk]))
    assert b"Roll back to this version" in page.content
    client.post(reverse("admin:modelhub_modelversion_rollback", args=[v10.pk]), {"post": "yes", "reason": "button"})
    assert ModelVersion.active().version == "1.0"
    client.post(reverse("model_rollback", args=["1.1"]), {"reason": "and back"})
    assert ModelVersion.active().version == "1.1"


def _held_batch(demo):
    from ingestion.services import ingest_path
    from modelhub.retraining import retrain_now

    batch = ingest_path(demo.flipped("flipped.csv", slice(2000, 2400)))
    assert retrain_now().status == "rejected"
    batch.refresh_from_db()
    assert batch.status == DataBatch.Status.HELD
    return batch


def test_held_batches_are_released_on_the_data_page_and_discarded_in_the_admin(client, ready, users, demo):
    from audit.models import AuditEvent

    held = _held_batch(demo)
    login(client, users["analyst"])
    assert client.post(reverse("batch_release", args=[held.pk]), {"reason": "x"}).status_code == 403
    client.logout()
    login(client, users["engineer"])
    page = client.get(reverse("batch_detail", args=[held.pk]))
    assert b"Release for the next retraining" in page.content and b"suspected label problems" in page.content
    client.post(reverse("batch_release", args=[held.pk]), {"reason": "labels checked with the CRM team"})
    held.refresh_from_db()
    assert held.status == DataBatch.Status.STAGED
    assert AuditEvent.objects.filter(action="data.released", actor=users["engineer"]).exists()

    assert retrain_rejects_again()
    # Destructive: the action first asks, on a page of its own, and only a confirmed post discards.
    page = client.post(reverse("admin:ingestion_databatch_changelist"), {"action": "discard_batches", "_selected_action": [held.pk]})
    assert b"Yes, discard" in page.content and b"flipped.csv" in page.content
    held.refresh_from_db()
    assert held.status == DataBatch.Status.HELD
    client.post(reverse("admin:ingestion_databatch_changelist"),
                {"action": "discard_batches", "_selected_action": [held.pk], "post": "yes", "reason": "labels are wrong"})
    held.refresh_from_db()
    assert held.status == DataBatch.Status.DISCARDED and held.note == "labels are wrong"
    assert AuditEvent.objects.filter(action="data.discarded", actor=users["engineer"]).exists()


def retrain_rejects_again() -> bool:
    from modelhub.retraining import retrain_now

    return retrain_now().status == "rejected"


def test_cached_parts_of_pages_render_as_html_and_follow_what_they_show(client, ready, users):
    from modelhub import services
    from modelhub.tests.helpers import copy_of_active, deployed_copy

    login(client, users["engineer"])
    overview = client.get(reverse("overview")).content.decode()
    assert '<select name="contract"' in overview and "&lt;select" not in overview
    assert client.get(reverse("models")).content.decode().count('<span class="badge active">Active</span>') == 1

    candidate = copy_of_active()  # a new row of the table, then its status changes twice
    assert f"v{candidate.version}</a>" in client.get(reverse("models")).content.decode()
    newer = deployed_copy()
    table = client.get(reverse("models")).content.decode()
    assert f'v{newer.version}</a></td><td><span class="badge active">' in table
    assert 'v1.0</a></td><td><span class="badge retired">' in table

    services.activate_version(version=ready, user=users["engineer"], reason="back to the first")
    table = client.get(reverse("models")).content.decode()
    assert 'v1.0</a></td><td><span class="badge active">' in table
    assert f'v{newer.version}</a></td><td><span class="badge retired">' in table


def test_the_overview_follows_every_change_it_shows(client, ready, users, demo):
    from ingestion.services import discard_batch, hold_batches, ingest_path
    from clsite import schedules as schedule
    from modelhub import services
    from modelhub.models import TrainingRun
    from modelhub.runs import request_retraining
    from modelhub.tests.helpers import deployed_copy

    login(client, users["engineer"])

    def overview() -> str:
        return " ".join(client.get(reverse("overview")).content.decode().split())

    assert "0 <small>staged files, 0 rows" in overview()
    batch = ingest_path(demo.write("more.csv", slice(2000, 2300)))
    assert "1 <small>staged file, 300 rows" in overview()
    hold_batches([batch])  # as a rejected run does
    assert "0 <small>staged files, 0 rows" in overview() and "1 held</a>" in overview()
    discard_batch(batch=batch, user=users["engineer"], reason="not needed")
    assert "held</a>" not in overview()

    run = request_retraining(user=users["engineer"], trigger=TrainingRun.Trigger.MANUAL, enqueue=False).run
    assert f"Run {run.pk}</a> <span class=\"badge queued\">" in overview()
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.FAILED)  # as the sweep does
    assert f"Run {run.pk}</a> <span class=\"badge failed\">" in overview()

    schedule.change(user=users["engineer"], cron=schedule.weekly_cron("mon", "03:15"))
    assert "every Monday at 03:15" in overview()
    schedule.change(user=users["engineer"], cron=None)
    assert "retraining schedule: off" in overview()

    newer = deployed_copy()
    assert f">v{newer.version}</a> <small>" in overview()
    services.activate_version(version=ready, user=users["engineer"], reason="back")
    assert ">v1.0</a> <small>" in overview() and "(rollback: back)" in overview()
