"""Batch scoring as background work: submitted on the page, scored by the worker in chunks,
its progress shown, its result downloaded, kept for a while, then removed."""
import csv
import io
from datetime import timedelta

import numpy as np
import pandas as pd
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from clsite import home
from ingestion import csvio
from modelhub import scoring, serving, training
from modelhub.models import ScoringJob
from ops import retention
from testing.builders import client_for


def upload(client: Client, name: str, body: bytes):
    return client.post("/predict/batch/", {"file": SimpleUploadedFile(name, body, content_type="text/csv")})


def test_a_csv_is_queued_scored_in_chunks_and_its_result_equals_the_pipeline(ready, users, demo, session_home, monkeypatch):
    monkeypatch.setattr(csvio, "BLOCK_SIZE", 16 << 10)  # several chunks
    monkeypatch.setattr(csvio, "CHECK_BYTES", 64 << 10)
    frame = demo.frame.iloc[:3000].drop(columns=["churn"])
    analyst = client_for(users["analyst"])

    response = upload(analyst, "march.csv", frame.to_csv(index=False).encode())

    job = ScoringJob.objects.get(original_name="march.csv")
    assert response.status_code == 302 and response["Location"] == f"/predict/jobs/{job.pk}/"
    assert job.status == ScoringJob.Status.QUEUED and (session_home / job.input_path).is_file()
    page = analyst.get(f"/predict/jobs/{job.pk}/").content.decode()
    assert "Waiting for the worker" in page and 'http-equiv="refresh"' in page

    scoring.run(job)  # as the worker does

    job.refresh_from_db()
    assert job.status == ScoringJob.Status.DONE, job.error
    assert job.rows_done == 3000 and job.version.version == "1.0" and job.progress == 1.0
    assert not (session_home / job.input_path).exists() and job.expires_at > timezone.now() + timedelta(hours=23)
    page = analyst.get(f"/predict/jobs/{job.pk}/").content.decode()
    assert "3000 rows scored with" in page and "Download march_predictions_v1.0.csv" in page
    result = analyst.get(f"/predict/jobs/{job.pk}/result.csv")
    assert result["Content-Disposition"] == 'attachment; filename="march_predictions_v1.0.csv"'
    rows = list(csv.DictReader(io.StringIO(b"".join(result.streaming_content).decode())))
    assert [r["customer_id"] for r in rows] == frame["customer_id"].tolist()
    loaded = serving.active()
    version, model = loaded.version, loaded.model
    expected = training.positive_proba(model, training.features_frame(frame.replace({"": None}), version.schema))
    assert np.allclose([float(r["probability"]) for r in rows], expected.round(4), atol=1e-9)
    assert [r["prediction"] for r in rows] == ["Yes" if p >= version.threshold else "No" for p in expected]


def test_a_file_without_the_model_s_columns_is_refused_when_submitted(ready, users, session_home):
    response = upload(client_for(users["analyst"]), "wrong.csv", b"customer_id,tenure\nA,1\n")
    assert response.status_code == 302 and response["Location"] == "/predict/"
    assert not ScoringJob.objects.exists()
    assert not any((session_home / "tmp").iterdir())


def test_a_job_whose_model_file_was_altered_fails_with_the_reason_and_keeps_nothing(ready, users, demo, session_home):
    upload(client_for(users["analyst"]), "april.csv", demo.frame.iloc[:100].to_csv(index=False).encode())
    job = ScoringJob.objects.get()
    artifact = session_home / "models" / "versions" / job.version.artifact
    original = artifact.read_bytes()
    try:
        artifact.write_bytes(original[:-4] + b"XXXX")
        serving.forget()
        scoring.run(job)
    finally:
        artifact.write_bytes(original)
        serving.forget()
    job.refresh_from_db()
    assert job.status == ScoringJob.Status.FAILED and "has been altered" in job.error
    assert job.result_path == "" and not any((session_home / "scoring").glob(f"{job.pk:06d}-*"))
    assert "has been altered" in client_for(users["analyst"]).get(f"/predict/jobs/{job.pk}/").content.decode()


def test_a_job_is_seen_only_by_whoever_submitted_it_and_admins(ready, users, demo):
    upload(client_for(users["analyst"]), "may.csv", demo.frame.iloc[:10].to_csv(index=False).encode())
    job = ScoringJob.objects.get()
    scoring.run(job)
    assert client_for(users["engineer"]).get(f"/predict/jobs/{job.pk}/").status_code == 404
    assert client_for(users["engineer"]).get(f"/predict/jobs/{job.pk}/result.csv").status_code == 404
    assert client_for(users["viewer"]).get(f"/predict/jobs/{job.pk}/").status_code == 403
    assert client_for(users["admin"]).get(f"/predict/jobs/{job.pk}/result.csv").status_code == 200


def test_a_result_past_its_keeping_time_is_removed_by_the_clean_up(ready, users, demo, session_home):
    upload(client_for(users["analyst"]), "june.csv", demo.frame.iloc[:10].to_csv(index=False).encode())
    job = scoring.run(ScoringJob.objects.get())
    result = session_home / job.result_path
    assert result.is_file()
    ScoringJob.objects.filter(pk=job.pk).update(expires_at=timezone.now() - timedelta(minutes=1))

    retention.apply()

    job.refresh_from_db()
    assert job.status == ScoringJob.Status.EXPIRED and not result.exists()
    assert "The result was removed" in client_for(users["analyst"]).get(f"/predict/jobs/{job.pk}/").content.decode()


def test_a_job_that_is_not_queued_is_left_alone(ready, users, demo):
    upload(client_for(users["analyst"]), "july.csv", demo.frame.iloc[:10].to_csv(index=False).encode())
    job = scoring.run(ScoringJob.objects.get())
    finished = job.finished_at
    again = scoring.run(ScoringJob.objects.get(pk=job.pk))
    assert again.status == ScoringJob.Status.DONE and again.finished_at == finished
    assert pd.notna(finished)


def test_blanks_unknown_categories_and_text_in_a_numeric_column_score_as_the_pipeline_scores_them(ready, users, demo, monkeypatch):
    monkeypatch.setattr(csvio, "BLOCK_SIZE", 4 << 10)  # several chunks, each typed on its own
    monkeypatch.setattr(csvio, "CHECK_BYTES", 16 << 10)
    frame = demo.frame.iloc[:600].drop(columns=["churn"]).reset_index(drop=True)
    frame.loc[::7, "tenure"] = ""
    frame.loc[::11, "contract"] = ""
    frame.loc[::13, "payment_method"] = "Cheque in the post"  # never seen in training
    frame.loc[450, "monthly_charges"] = "n/a"  # that chunk's column stays text: read as missing
    source = home.path("tmp") / "odd.csv"
    source.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(source, index=False)

    job = scoring.run(scoring.submit(source=source, original_name="odd.csv", user=users["analyst"]))

    assert job.status == ScoringJob.Status.DONE, job.error
    scored = pd.read_csv(home.path(job.result_path))
    loaded = serving.active()
    version, model = loaded.version, loaded.model
    expected = training.positive_proba(model, training.features_frame(frame.replace({"": None}), version.schema))
    assert len(scored) == 600 and np.allclose(scored["probability"], expected.round(4), atol=1e-9)
    # Each row says what the model had not seen (modelhub.inputs, the API's rules).
    warnings = scored["warnings"].fillna("")
    assert all("payment_method: a category the model has not seen" in warnings[i] for i in range(0, 600, 13))
    assert all("tenure: missing, never missing in training" in warnings[i] for i in range(0, 600, 7))
    assert "monthly_charges: missing, never missing in training" in warnings[450]
    assert warnings[1] == ""


def test_a_job_whose_worker_died_is_failed_by_the_repair_and_its_page_says_so_without_refreshing(ready, users, demo, session_home):
    import subprocess
    import sys

    from modelhub import jobs
    from ops import health, repairs

    analyst = client_for(users["analyst"])
    upload(analyst, "killed.csv", demo.frame.iloc[:50].to_csv(index=False).encode())
    job = ScoringJob.objects.get()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    # The worker claimed the job and wrote part of the result, then was killed (its heartbeat is fresh).
    ScoringJob.objects.filter(pk=job.pk).update(status=ScoringJob.Status.RUNNING, started_at=timezone.now(), rows_done=20,
                                                heartbeat_at=timezone.now(), worker=f"{jobs.worker_name().rsplit(':', 1)[0]}:{gone.pid}")
    partial = session_home / scoring.result_file(job)
    partial.write_text("customer_id,probability\n")
    check = health.stuck_jobs()
    assert check.status == health.FAILING and check.details["dead_worker"] == [job.pk] and check.details["stuck"] == 1
    assert 'http-equiv="refresh"' in analyst.get(f"/predict/jobs/{job.pk}/").content.decode()

    assert repairs.repair()["scoring"]["failed"] == [job.pk]

    job.refresh_from_db()
    assert job.status == ScoringJob.Status.FAILED and not job.in_flight
    assert f"its process {job.worker} is gone" in job.error and "20 rows were scored" in job.error
    page = analyst.get(f"/predict/jobs/{job.pk}/").content.decode()
    assert "the worker stopped while scoring this file" in page and 'http-equiv="refresh"' not in page
    assert not partial.exists() and not (session_home / job.input_path).exists()
    assert health.stuck_jobs().status == health.OK


def test_a_job_with_a_live_heartbeat_is_left_running(ready, users, demo):
    from modelhub import jobs
    from ops import health

    upload(client_for(users["analyst"]), "slow.csv", demo.frame.iloc[:10].to_csv(index=False).encode())
    job = ScoringJob.objects.get()
    ScoringJob.objects.filter(pk=job.pk).update(status=ScoringJob.Status.RUNNING, heartbeat_at=timezone.now(), worker=jobs.worker_name())
    assert scoring.sweep()["failed"] == [] and ScoringJob.objects.get(pk=job.pk).status == ScoringJob.Status.RUNNING
    assert health.stuck_jobs().status == health.OK
    ScoringJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - jobs.STALE_AFTER - timedelta(seconds=1))
    assert scoring.sweep()["failed"] == [job.pk]
    assert "no heartbeat for 6" in ScoringJob.objects.get(pk=job.pk).error


def test_files_a_job_left_behind_are_removed_by_the_clean_up(ready, users, demo, session_home, settings):
    import os

    analyst = client_for(users["analyst"])
    for name in ("cut-short.csv", "still-running.csv"):
        upload(analyst, name, demo.frame.iloc[:10].to_csv(index=False).encode())
    cut, running = ScoringJob.objects.order_by("pk")
    ScoringJob.objects.filter(pk=cut.pk).update(status=ScoringJob.Status.FAILED, error="stopped")  # its files were never removed
    ScoringJob.objects.filter(pk=running.pk).update(status=ScoringJob.Status.RUNNING)
    for job in (cut, running):
        (session_home / scoring.result_file(job)).write_text("partial\n")
    orphan, young = session_home / "scoring" / "999998-input.csv", session_home / "scoring" / "999999-input.csv"
    orphan.write_text("x\n")
    young.write_text("x\n")
    old = timezone.now().timestamp() - settings.CL_KEEP_TMP_HOURS * 3600 - 60
    os.utime(orphan, (old, old))

    planned = {r.path: r.why for r in retention.plan().removals if r.path.startswith("scoring/")}

    assert planned == {cut.input_path: "left by a scoring job that ended (failed)",
                       scoring.result_file(cut): "left by a scoring job that ended (failed)",
                       "scoring/999998-input.csv": f"scoring file without a job, older than {settings.CL_KEEP_TMP_HOURS} hours"}
    retention.apply()
    assert not any(home.path(path).exists() for path in planned)
    assert (session_home / running.input_path).exists() and (session_home / scoring.result_file(running)).exists() and young.exists()


def test_a_job_that_fails_on_the_database_says_so_and_its_failure_is_written_once_it_is_back(ready, users, demo, monkeypatch):
    from django.db import OperationalError

    from modelhub import jobs

    upload(client_for(users["analyst"]), "outage.csv", demo.frame.iloc[:10].to_csv(index=False).encode())
    job = ScoringJob.objects.get()

    def database_gone(*args):
        raise OperationalError("server closed the connection unexpectedly")

    finish, attempts = scoring._finish, []

    def finish_once_back(*args, **kwargs):
        attempts.append(1)
        if len(attempts) == 1:
            database_gone()
        return finish(*args, **kwargs)

    monkeypatch.setattr(scoring, "_score", database_gone)
    monkeypatch.setattr(scoring, "_finish", finish_once_back)
    monkeypatch.setattr(jobs.time, "sleep", lambda seconds: None)

    scoring.run(job)

    job.refresh_from_db()
    assert len(attempts) == 2 and job.status == ScoringJob.Status.FAILED
    assert job.error == "the database failed or could not be reached (OperationalError: server closed the connection unexpectedly)"
