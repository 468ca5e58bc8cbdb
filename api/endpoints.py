"""The JSON API under /api/v1/: thin operations, each one service call, as the pages do.

Authentication is a per-user Bearer token (api.auth); the token's user's role decides what it
may do, as on the site: 401 without a valid token, 403 without the permission.
"""
from pathlib import Path

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, JsonResponse
from django.urls import reverse
from ninja import File, NinjaAPI, Status
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.files import UploadedFile

from clsite import home
from ingestion import services as ingestion
from ingestion.models import DataBatch
from modelhub import artifacts, scoring, serving, services
from modelhub.models import ModelVersion, ScoringJob, TrainingRun
from modelhub.runs import request_retraining

from . import rows as row_checks
from .auth import TokenAuth
from .schemas import (
    ActivateIn, Activated, BatchOut, ErrorOut, PredictIn, PredictOut, RunOut, RunRequested, ScoringOut, VersionDetail,
    VersionSummary,
)

api = NinjaAPI(
    title="Continuous learning API", version="1", urls_namespace="api",
    description="Predictions with the live model, its versions, uploads, retraining and batch scoring. "
                "Send `Authorization: Bearer <token>`; make a token with `manage.py api_token USERNAME`.",
    auth=TokenAuth(), docs_decorator=login_required,
)


@api.exception_handler(ValidationError)
def invalid(request, exc: ValidationError):
    problems = [{"row": _row_of(e.get("loc", ())), "field": ".".join(map(str, e.get("loc", ()))), "message": e.get("msg", "")}
                for e in exc.errors]
    return api.create_response(request, {"detail": "the request does not match the schema", "errors": problems}, status=400)


@api.exception_handler(AuthenticationError)
def unauthenticated(request, exc):
    response = api.create_response(request, {"detail": "a valid token is needed: Authorization: Bearer <token>"}, status=401)
    response["WWW-Authenticate"] = "Bearer"
    return response


def _row_of(loc: tuple) -> int | None:
    return next((part for part in loc[loc.index("rows") + 1:] if isinstance(part, int)), None) if "rows" in loc else None


@api.post("/predict", response={200: PredictOut, 400: ErrorOut, 503: ErrorOut}, summary="Predict for 1 to 10,000 rows",
          auth=TokenAuth("modelhub.view_modelversion"))
def predict(request, body: PredictIn):
    try:
        loaded = serving.active()
    except (serving.NoActiveModel, artifacts.ArtifactError) as exc:
        return Status(503, {"detail": str(exc)})
    found = row_checks.problems(body.rows, loaded.version.schema)
    if found:
        return Status(400, {"detail": f"{len(found)} problem(s) in the rows", "errors": found})
    loaded, proba = serving.predict_rows(body.rows)
    labels = loaded.labels(proba)
    # Answered as is rather than validated against PredictOut by ninja, which took a sixth of a
    # one-row call; the shape is fixed here and checked against the schema in the tests.
    return JsonResponse({"version": loaded.version.version,
                         "predictions": [{"probability": round(float(p), 6), "label": label} for p, label in zip(proba, labels)]})


@api.get("/models", response=list[VersionSummary], summary="Every model version, newest first",
          auth=TokenAuth("modelhub.view_modelversion"))
def models(request, limit: int = 100, offset: int = 0):
    versions = ModelVersion.objects.order_by("-major", "-minor").only(
        "major", "minor", "status", "estimator", "trained_at", "deployed_at", "metrics")[offset:offset + min(limit, 1000)]
    return [_summary(v) for v in versions]


@api.get("/models/{version}", response={200: VersionDetail, 404: ErrorOut}, summary="One version: status, metrics, gates",
          auth=TokenAuth("modelhub.view_modelversion"))
def model(request, version: str):
    try:
        found = ModelVersion.named(version, ModelVersion.objects.select_related("schema"))
    except (ValueError, ModelVersion.DoesNotExist):
        return Status(404, {"detail": f"there is no version {version!r}"})
    validation = found.validation or {}
    metrics = {k: v for k, v in found.metrics.items() if k not in ("roc_curve", "pr_curve")}
    return {**_summary(found), "imported": found.imported, "training_rows": found.training_rows, "holdout_rows": found.holdout_rows,
            "metrics": metrics, "gates": validation.get("gates", []), "validation_passed": validation.get("passed"),
            "drifted_features": (found.drift or {}).get("drifted", []), "run": found.run_id}


@api.post("/models/{version}/activate", response={200: Activated, 404: ErrorOut, 409: ErrorOut},
          summary="Make a version the active model (a rollback, or a forced deployment with a reason)",
          auth=TokenAuth("modelhub.deploy_modelversion"))
def activate(request, version: str, body: ActivateIn):
    try:
        target = ModelVersion.named(version)
    except (ValueError, ModelVersion.DoesNotExist):
        return Status(404, {"detail": f"there is no version {version!r}"})
    try:
        deployment = services.activate_version(version=target, user=request.user, reason=body.reason)
    except services.DeploymentError as exc:
        return Status(409, {"detail": str(exc)})
    return {"version": target.version, "kind": deployment.kind, "reason": deployment.reason,
            "replaced": deployment.from_version.version if deployment.from_version else None}


def _one_file(request, file) -> None:
    """The file part, or why there is none: refused by the upload handler, or not sent."""
    refused = getattr(request, "upload_refused", None)
    if refused:
        raise HttpError(413, refused)
    if file is None:
        raise HttpError(400, "send the CSV as a multipart form field named `file`")


# `file` is optional in the signature so that the permission is checked before the file is
# missed: a role without it gets 403, whatever it sent (the upload handler stored nothing).
@api.post("/batches", response={201: BatchOut, 409: ErrorOut, 422: BatchOut}, summary="Upload a labelled CSV",
          auth=TokenAuth("ingestion.upload_data"))
def upload(request, file: File[UploadedFile] = None):
    _one_file(request, file)
    try:
        with file.open("rb") as fh:
            batch = ingestion.ingest_file(source=fh, original_name=file.name, user=request.user, origin=DataBatch.Source.WEB)
    except ingestion.IngestionError as exc:
        return Status(409, {"detail": str(exc)})
    report = batch.report
    body = {"id": batch.pk, "status": batch.status, "rows": batch.rows, "summary": report.get("summary", ""),
            "errors": report.get("errors", []), "error_count": report.get("error_count", 0), "warnings": report.get("warnings", [])}
    return Status(201 if batch.status == DataBatch.Status.STAGED else 422, body)


@api.post("/runs", response={202: RunRequested}, summary="Ask for a retraining (joins one already queued or running)",
          auth=TokenAuth("modelhub.retrain_model"))
def start_run(request, force: bool = False):
    asked = request_retraining(user=request.user, trigger=TrainingRun.Trigger.API, force=force)
    return Status(202, {"run": _run(asked.run), "created": asked.created, "message": asked.message})


@api.get("/runs/{run_id}", response={200: RunOut, 404: ErrorOut}, summary="A retraining run's state",
          auth=TokenAuth("modelhub.view_trainingrun"))
def run(request, run_id: int):
    found = TrainingRun.objects.select_related("candidate", "live_version").filter(pk=run_id).first()
    return _run(found) if found else Status(404, {"detail": f"there is no run {run_id}"})


@api.post("/scorings", response={202: ScoringOut, 400: ErrorOut}, summary="Score a whole CSV in the background",
          auth=TokenAuth("modelhub.batch_predict"))
def submit_scoring(request, file: File[UploadedFile] = None):
    _one_file(request, file)
    try:
        job = scoring.submit(source=Path(file.temporary_file_path()), original_name=file.name, user=request.user)
    except (scoring.ScoringError, artifacts.ArtifactError) as exc:
        return Status(400, {"detail": str(exc)})
    return Status(202, _scoring(job))


@api.get("/scorings/{job_id}", response={200: ScoringOut, 404: ErrorOut}, summary="A scoring job's progress",
          auth=TokenAuth("modelhub.batch_predict"))
def scoring_state(request, job_id: int):
    job = scoring.visible_to(request.user).filter(pk=job_id).first()
    return _scoring(job) if job else Status(404, {"detail": f"there is no scoring {job_id} of yours"})


@api.get("/scorings/{job_id}/result", response={404: ErrorOut}, summary="The scored CSV, once done",
          auth=TokenAuth("modelhub.batch_predict"))
def scoring_result(request, job_id: int):
    job = scoring.visible_to(request.user).filter(pk=job_id, status=ScoringJob.Status.DONE).first()
    if job is None:
        return Status(404, {"detail": f"scoring {job_id} has no result (not yours, not done, or expired)"})
    return FileResponse(open(home.path(job.result_path), "rb"), as_attachment=True, filename=job.result_name, content_type="text/csv")


def _summary(version: ModelVersion) -> dict:
    return {"version": version.version, "status": version.status, "estimator": version.estimator, "trained_at": version.trained_at,
            "deployed_at": version.deployed_at, "accuracy": version.metrics.get("accuracy"), "auc": version.metrics.get("auc")}


def _run(run: TrainingRun) -> dict:
    return {"id": run.pk, "status": run.status, "trigger": run.trigger, "created_at": run.created_at, "started_at": run.started_at,
            "finished_at": run.finished_at, "candidate": run.candidate.version if run.candidate_id else None,
            "live_version": run.live_version.version if run.live_version_id else None, "stages": run.stages,
            "reasons": run.reasons, "error": run.error}


def _scoring(job: ScoringJob) -> dict:
    done = job.status == ScoringJob.Status.DONE
    return {"id": job.pk, "status": job.status, "rows_done": job.rows_done, "rows_estimate": job.rows_estimate,
            "progress": job.progress, "version": job.version.version if job.version_id else None, "error": job.error,
            "result": reverse("api:scoring_result", args=[job.pk]) if done else None, "expires_at": job.expires_at}
