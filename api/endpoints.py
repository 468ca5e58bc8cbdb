"""The JSON API under /api/v1/: thin operations, each one service call, as the pages do.

Authentication is a per-user Bearer token (api.auth); the token's user's role decides what it
may do, as on the site: 401 without a valid token, 403 without the permission.
"""
from pathlib import Path
from typing import Annotated

import numpy as np
import orjson
from django.contrib.auth.decorators import login_required
from django.db import InterfaceError, OperationalError
from django.http import FileResponse, Http404, HttpResponse
from django.urls import reverse
from django.utils.log import log_response
from ninja import File, NinjaAPI, Path as PathParam, Query, Status
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.files import UploadedFile

from clsite import home
from clsite.space import NoSpace
from ingestion import services as ingestion
from ingestion.models import DataBatch
from modelhub import artifacts, scoring, serving, services
from modelhub.models import ModelVersion, ScoringJob, TrainingRun
from modelhub.runs import request_retraining

from . import rows as row_reader
from .auth import TokenAuth
from .schemas import (
    MAX_ID, MAX_LIMIT, MAX_OFFSET, PREDICT_BODY, ActivateIn, Activated, BatchOut, ErrorOut, PredictOut, RunOut, RunRequested,
    ScoringOut, VersionDetail, VersionSummary,
)


class DocumentedAPI(NinjaAPI):
    """NinjaAPI whose schema also tells what every operation may answer besides its own statuses:
    400 when a parameter or body does not match the schema (the ValidationError handler below),
    and for a token-authenticated operation 401 (no valid token), 403 (the token's user lacks
    the operation's permission) and 429 (a locked-out address, or a limit reached). Each
    operation declares the statuses its handler gives itself; `openapi_extra` adds what ninja
    cannot say (a required file part, a CSV answer)."""

    def get_openapi_schema(self, *, path_prefix=None, path_params=None):
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        operations = {op.operation_id or self.get_openapi_operation_id(op): op
                      for router in self._get_bound_routers() for view in router.path_operations.values() for op in view.operations}
        for item in schema["paths"].values():
            for details in item.values():
                operation = operations.get(details.get("operationId"))
                if operation is not None:
                    _document(details, operation)
        schema["components"].setdefault("schemas", {}).setdefault("ErrorOut", ErrorOut.model_json_schema(ref_template=ERROR_REF))
        return schema


ERROR_REF = "#/components/schemas/{model}"
_ERROR = {"application/json": {"schema": {"$ref": ERROR_REF.format(model="ErrorOut")}}}


def _error(description: str, **headers: dict) -> dict:
    answer = {"description": description, "content": _ERROR}
    if headers:
        answer["headers"] = {name.replace("_", "-"): header for name, header in headers.items()}
    return answer


INVALID = _error("The request does not match the schema: `errors` has every problem, by field (and row).")
UNAUTHENTICATED = _error("No valid token: send `Authorization: Bearer <token>`.",
                         WWW_Authenticate={"description": "`Bearer`", "required": True, "schema": {"type": "string"}})
LOCKED_OUT = _error("Too many failed attempts from this address (locked out), or a limit reached: try again later.",
                    Retry_After={"description": "Seconds to wait, when known", "schema": {"type": "string"}})
SERVER_ERROR = _error("The server failed to answer (a fault of ours): `detail` says so, the traceback is in the server's log.")
UNAVAILABLE = _error("A part the system needs does not answer (the database): try again shortly.",
                     Retry_After={"description": "Seconds to wait", "schema": {"type": "string"}})


def _document(details: dict, operation) -> None:
    responses = details["responses"]
    if operation.models:
        responses.setdefault(400, INVALID)
    responses.setdefault(500, SERVER_ERROR)
    responses.setdefault(503, UNAVAILABLE)
    for auth in operation.auth_callbacks:
        if isinstance(auth, TokenAuth):
            responses.setdefault(401, UNAUTHENTICATED)
            if auth.permission:
                responses.setdefault(403, _error(f"The token's user may not do this (needs `{auth.permission}`)."))
            responses.setdefault(429, LOCKED_OUT)


def _described(**descriptions: str) -> dict:
    """openapi_extra giving each status (`_404=...`) its own description."""
    return {"responses": {int(status.lstrip("_")): {"description": text} for status, text in descriptions.items()}}


def _file_part(**descriptions: str) -> dict:
    """openapi_extra saying that the multipart `file` is required (the handler takes it as optional so that a
    role without the permission gets 403 before a missing file is noticed)."""
    return {"requestBody": {"content": {"multipart/form-data": {"schema": {"required": ["file"]}}}}, **_described(**descriptions)}


# Bounded so that no number reaches the database past what it stores (SQLite's and PostgreSQL's bigint).
Id = Annotated[int, PathParam(ge=1, le=MAX_ID)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"At most this many (1 to {MAX_LIMIT:,})")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Skip this many, newest first")]

api = DocumentedAPI(
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
    response = _json({"detail": "a valid token is needed: Authorization: Bearer <token>", "errors": []}, 401)
    response["WWW-Authenticate"] = "Bearer"
    return response


@api.exception_handler(HttpError)
def refused(request, exc: HttpError):
    return _json({"detail": exc.message, "errors": []}, exc.status_code)


@api.exception_handler(Http404)
def not_found(request, exc):
    return _json({"detail": str(exc) or "not found", "errors": []}, 404)


# Every other exception, in authentication or in an operation: the error shape, never Django's HTML
# page, and the traceback in the web log (django.request, settings.LOGGING). A database that does
# not answer is a part failing for a while (503, try again); anything else is a fault of ours (500).
# A handler for a narrower exception (an operation's own) comes first: ninja picks by the MRO.
UNREACHABLE_DATABASE = (OperationalError, InterfaceError)
RETRY_AFTER_SECONDS = 30


@api.exception_handler(Exception)
def server_error(request, exc: Exception):
    if isinstance(exc, UNREACHABLE_DATABASE):
        response = _json({"detail": "the database does not answer; try again in a minute", "errors": []}, 503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    else:
        response = _json({"detail": "the server failed to answer this request (a fault of ours); the error is in its log",
                          "errors": []}, 500)
    log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request, exception=exc)
    return response


def _row_of(loc: tuple) -> int | None:
    return next((part for part in loc[loc.index("rows") + 1:] if isinstance(part, int)), None) if "rows" in loc else None


@api.post("/predict", response={200: PredictOut, 400: ErrorOut, 413: ErrorOut, 503: ErrorOut}, summary="Predict for 1 to 10,000 rows",
          auth=TokenAuth("modelhub.view_modelversion"), openapi_extra={"requestBody": PREDICT_BODY})
def predict(request):
    try:
        rows = row_reader.read_rows(request)
    except row_reader.BodyError as exc:
        return _json({"detail": str(exc), "errors": [{"row": None, "field": exc.field, "message": str(exc)}]}, exc.status)
    try:
        loaded, checked, proba = serving.predict_request(rows)
    except (serving.NoActiveModel, artifacts.ArtifactError) as exc:
        return _json({"detail": str(exc), "errors": []}, 503)
    if proba is None:
        shown = "" if checked.problem_count <= len(checked.problems) else f"; the first {len(checked.problems)} are listed"
        return _json({"detail": f"{_count(checked.problem_count, 'problem')} in the rows{shown}", "errors": checked.problems}, 400)
    labels, warnings = loaded.labels(proba), checked.warnings
    # Answered as is rather than validated against PredictOut by ninja, which took a sixth of a
    # one-row call; the shape is fixed here and checked against the schema in the tests.
    return _json({"version": loaded.version.version, "predictions": [
        {"probability": p, "label": label, "warnings": warnings.get(i, [])}
        for i, (p, label) in enumerate(zip(np.round(proba, 6).tolist(), labels))]})


def _json(body: dict, status: int = 200) -> HttpResponse:
    return HttpResponse(orjson.dumps(body), status=status, content_type="application/json")


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


@api.get("/models", response=list[VersionSummary], summary="Every model version, newest first",
         auth=TokenAuth("modelhub.view_modelversion"))
def models(request, limit: Limit = 100, offset: Offset = 0):
    versions = ModelVersion.objects.order_by("-major", "-minor").only(
        "major", "minor", "status", "estimator", "trained_at", "deployed_at", "metrics")[offset:offset + limit]
    return [_summary(v) for v in versions]


@api.get("/models/{version}", response={200: VersionDetail, 404: ErrorOut}, summary="One version: status, metrics, gates",
         auth=TokenAuth("modelhub.view_modelversion"), openapi_extra=_described(_404="There is no such version."))
def model(request, version: str):
    try:
        found = ModelVersion.named(version, ModelVersion.objects.select_related("schema"))
    except (ValueError, OverflowError, ModelVersion.DoesNotExist):
        return Status(404, {"detail": f"there is no version {version!r}"})
    validation = found.validation or {}
    metrics = {k: v for k, v in found.metrics.items() if k not in ("roc_curve", "pr_curve")}
    return {**_summary(found), "imported": found.imported, "training_rows": found.training_rows, "holdout_rows": found.holdout_rows,
            "metrics": metrics, "gates": validation.get("gates", []), "validation_passed": validation.get("passed"),
            "drifted_features": (found.drift or {}).get("drifted", []), "run": found.run_id,
            "threshold": found.threshold, "primary_metric": found.primary_metric,
            "drift_decision": validation.get("drift_decision")}


@api.post("/models/{version}/activate", response={200: Activated, 404: ErrorOut, 409: ErrorOut},
          summary="Make a version the active model (a rollback, or a forced deployment with a reason)",
          auth=TokenAuth("modelhub.deploy_modelversion"),
          openapi_extra=_described(_404="There is no such version.",
                                   _409="Refused, with the reason: already active, not deployable, or a reason needed."))
def activate(request, version: str, body: ActivateIn):
    try:
        target = ModelVersion.named(version)
    except (ValueError, OverflowError, ModelVersion.DoesNotExist):
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
@api.post("/batches", response={201: BatchOut, 400: ErrorOut, 409: ErrorOut, 413: ErrorOut, 422: BatchOut, 507: ErrorOut},
          summary="Upload a labelled CSV", auth=TokenAuth("ingestion.upload_data"),
          openapi_extra=_file_part(_201="Staged: the report.", _400="No `file` part.",
                                   _409="Refused before checking: the same file again, or the system is not initialised.",
                                   _413="The file is over the upload limit, or more than one file was sent.",
                                   _422="Refused by the checks: the report, with every error.",
                                   _507="Not enough free disk space to keep the file: the folder and the sizes; nothing was kept."))
def upload(request, file: File[UploadedFile] = None):
    if getattr(request, "upload_no_space", None):  # the request's own temporary file did not fit
        return Status(507, {"detail": str(request.upload_no_space), "errors": []})
    _one_file(request, file)
    try:
        with file.open("rb") as fh:
            batch = ingestion.ingest_file(source=fh, original_name=file.name, user=request.user, origin=DataBatch.Source.WEB)
    except ingestion.IngestionError as exc:
        return Status(409, {"detail": str(exc)})
    except NoSpace as exc:
        return Status(507, {"detail": str(exc), "errors": []})
    report = batch.report
    body = {"id": batch.pk, "status": batch.status, "rows": batch.rows, "summary": report.get("summary", ""),
            "errors": report.get("errors", []), "error_count": report.get("error_count", 0), "warnings": report.get("warnings", [])}
    return Status(201 if batch.status == DataBatch.Status.STAGED else 422, body)


@api.post("/runs", response={202: RunRequested}, summary="Ask for a retraining (joins one already queued or running)",
          auth=TokenAuth("modelhub.retrain_model"),
          openapi_extra=_described(_202="Queued, or joined the run already queued or running; `message` says when it starts. "
                                        "While the task broker (Redis) does not answer, the run is queued all the same and "
                                        "waits for it: `waiting_for_broker` is true, `message` names the broker, and the run "
                                        "is handed to the worker within about a minute of the broker answering again."))
def start_run(request, force: bool = False):
    asked = request_retraining(user=request.user, trigger=TrainingRun.Trigger.API, force=force)
    return Status(202, {"run": _run(asked.run), "created": asked.created, "waiting_for_broker": asked.waiting_for_broker,
                        "message": asked.message})


@api.get("/runs/{run_id}", response={200: RunOut, 404: ErrorOut}, summary="A retraining run's state",
         auth=TokenAuth("modelhub.view_trainingrun"), openapi_extra=_described(_404="There is no such run."))
def run(request, run_id: Id):
    found = TrainingRun.objects.select_related("candidate", "live_version").filter(pk=run_id).first()
    return _run(found) if found else Status(404, {"detail": f"there is no run {run_id}"})


@api.post("/scorings", response={202: ScoringOut, 400: ErrorOut, 413: ErrorOut, 429: ErrorOut, 507: ErrorOut},
          summary="Score a whole CSV in the background", auth=TokenAuth("modelhub.batch_predict"),
          openapi_extra=_file_part(_202="Queued.", _400="No `file` part, a CSV that cannot be scored (why), or no active model.",
                                   _413="The file is over the upload limit, or more than one file was sent.",
                                   _429="This user already has CL_SCORING_MAX_QUEUED_PER_USER jobs waiting: "
                                        "the limit and how many wait.",
                                   _507="Not enough free disk space to keep the file: the folder and the sizes; nothing was kept."))
def submit_scoring(request, file: File[UploadedFile] = None):
    if getattr(request, "upload_no_space", None):  # the request's own temporary file did not fit
        return Status(507, {"detail": str(request.upload_no_space), "errors": []})
    _one_file(request, file)
    try:
        job = scoring.submit(source=Path(file.temporary_file_path()), original_name=file.name, user=request.user)
    except scoring.ScoringLimit as exc:  # nothing of this file is kept
        return Status(429, {"detail": str(exc)})
    except (scoring.ScoringError, artifacts.ArtifactError) as exc:
        return Status(400, {"detail": str(exc)})
    except NoSpace as exc:
        return Status(507, {"detail": str(exc), "errors": []})
    return Status(202, _scoring(job))


@api.get("/scorings/{job_id}", response={200: ScoringOut, 404: ErrorOut}, summary="A scoring job's progress",
         auth=TokenAuth("modelhub.batch_predict"), openapi_extra=_described(_404="No such scoring of this user's."))
def scoring_state(request, job_id: Id):
    job = scoring.visible_to(request.user).filter(pk=job_id).first()
    return _scoring(job) if job else Status(404, {"detail": f"there is no scoring {job_id} of yours"})


@api.get("/scorings/{job_id}/result", response={200: None, 404: ErrorOut}, summary="The scored CSV, once done",
         auth=TokenAuth("modelhub.batch_predict"), openapi_extra={"responses": {
             200: {"description": "The scored CSV (an attachment): the input's columns, then the probability and the label.",
                   "content": {"text/csv": {"schema": {"type": "string"}}},
                   "headers": {"Content-Disposition": {"required": True, "schema": {"type": "string"}}}},
             404: {"description": "No result: not this user's scoring, not done, or expired."}}})
def scoring_result(request, job_id: Id):
    job = scoring.visible_to(request.user).filter(pk=job_id, status=ScoringJob.Status.DONE).first()
    try:
        result = open(home.path(job.result_path), "rb") if job is not None else None
    except FileNotFoundError:  # removed by the retention policy since
        result = None
    if result is None:
        return Status(404, {"detail": f"scoring {job_id} has no result (not yours, not done, or expired)"})
    return FileResponse(result, as_attachment=True, filename=job.result_name, content_type="text/csv")


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
