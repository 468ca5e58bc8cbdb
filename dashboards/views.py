"""Thin views: an access check, a form, one service call, then redirect or render."""
from pathlib import Path

from django.contrib import messages
from django.contrib.auth.decorators import login_not_required, permission_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from clsite import exports, home, schedules
from clsite.space import NoSpace
from ingestion import services as ingestion
from ingestion.models import DatasetSchema, DataBatch
from ingestion.selectors import data_stats
from ingestion.uploads import accepts_upload
from modelhub import scoring, serving, services
from modelhub.models import Deployment, ModelVersion, ScoringJob, TrainingRun
from modelhub.runs import request_retraining
from ops import health, retention

from . import compare, figures, judgement, selectors
from .forms import BatchPredictForm, LiveAtForm, PredictForm, ReasonForm, RetrainForm, ScheduleForm, UploadForm

view_required = permission_required("modelhub.view_modelversion", raise_exception=True)
manage_required = permission_required("ingestion.manage_batches", raise_exception=True)
retrain_required = permission_required("modelhub.retrain_model", raise_exception=True)
deploy_required = permission_required("modelhub.deploy_modelversion", raise_exception=True)
batch_predict_required = permission_required("modelhub.batch_predict", raise_exception=True)


@view_required
def overview(request):
    return render(request, "dashboards/overview.html", {**selectors.overview(), "health": selectors.health_summary()})


@view_required
def data(request):
    status = request.GET.get("status", "")
    batches = DataBatch.objects.select_related("uploaded_by")
    if status in DataBatch.Status.values:
        batches = batches.filter(status=status)
    page = Paginator(batches, 25).get_page(request.GET.get("page"))
    stats = data_stats()
    return render(request, "dashboards/data.html", {
        "page": page, "status": status, "statuses": DataBatch.Status.choices, "stats": stats,
        "schema": DatasetSchema.current(), "cleanup": retention.plan(), "cleanup_next": retention.next_run_words(),
        "balance_chart": figures.class_balance(stats["class_balance"]),
    })


@accepts_upload("ingestion.upload_data")
def upload(request):
    form = UploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST":
        if getattr(request, "upload_refused", None):
            form = UploadForm()
            messages.error(request, request.upload_refused)
        elif form.is_valid():
            uploaded = form.cleaned_data["file"]
            try:
                with uploaded.open("rb") as fh:
                    batch = ingestion.ingest_file(source=fh, original_name=uploaded.name, user=request.user)
            except (ingestion.IngestionError, NoSpace) as exc:
                form.add_error("file", str(exc))
            else:
                level = messages.SUCCESS if batch.status == DataBatch.Status.STAGED else messages.ERROR
                messages.add_message(request, level, f"{batch.original_name}: {batch.report.get('summary')}")
                return redirect("batch_detail", pk=batch.pk)
    return render(request, "dashboards/upload.html", {"form": form, "schema": DatasetSchema.current(), "limit": selectors.upload_limit()})


@view_required
def batch_detail(request, pk: int):
    batch = get_object_or_404(DataBatch.objects.select_related("uploaded_by", "schema"), pk=pk)
    return render(request, "dashboards/batch_detail.html", {**selectors.batch_page(batch), "reason_form": ReasonForm()})


@view_required
def template_csv(request):
    schema = DatasetSchema.current()
    if schema is None:
        raise Http404("no schema yet")
    response = HttpResponse(content_type="text/csv")
    response["Content-Disposition"] = 'attachment; filename="template.csv"'
    exports.write_rows(response, [schema.columns])
    return response


@require_POST
@manage_required
def batch_release(request, pk: int):
    return _batch_change(request, pk, ingestion.release_batch, "released; it will be part of the next retraining")


@require_POST
@manage_required
def batch_discard(request, pk: int):
    return _batch_change(request, pk, ingestion.discard_batch, "discarded")


def _batch_change(request, pk: int, service, done: str):
    batch = get_object_or_404(DataBatch, pk=pk)
    form = ReasonForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    try:
        service(batch=batch, user=request.user, reason=reason)
        messages.success(request, f"Batch {batch.pk} {done}.")
    except ingestion.BatchStateError as exc:
        messages.error(request, str(exc))
    return redirect("batch_detail", pk=pk)


@view_required
def models(request):
    stamp = figures.history_stamp()
    versions = compare.choices()
    a, b = compare.suggested_pair(versions)
    return render(request, "dashboards/models.html", {
        "versions_table": selectors.versions_table(request.GET.get("page"), stamp), "history_chart": figures.history(stamp=stamp),
        "choices": versions, "a": a, "b": b,
    })


@view_required
def model_detail(request, version: str):
    obj = _version_or_404(version, ModelVersion.objects.select_related("schema", "run"))
    return render(request, "dashboards/model_detail.html", {**selectors.model_page(obj), **judgement.for_version(obj), "reason_form": ReasonForm()})


@view_required
def model_compare(request):
    """Two versions side by side; a choice that cannot be compared shows why, with the form (400)."""
    versions = compare.choices()
    a, b = request.GET.get("a"), request.GET.get("b")
    context = {"choices": versions, "a": a, "b": b}
    try:
        context.update(compare.page(*compare.choose(a, b)))
    except compare.ChoiceError as exc:
        asked = a is not None or b is not None  # the bare page is the form, not a mistake
        first, second = compare.suggested_pair(versions)
        context.update(problem=str(exc) if asked else "", a=a or first, b=b or second)
        return render(request, "dashboards/model_compare.html", context, status=400 if asked else 200)
    return render(request, "dashboards/model_compare.html", context)


def _version_or_404(version: str, versions=None) -> ModelVersion:
    """The version named like "1.2" in a URL; 404 for a name that is not one."""
    try:
        return ModelVersion.named(version, versions)
    except (ValueError, ModelVersion.DoesNotExist):
        raise Http404(version) from None


@require_POST
@deploy_required
def model_rollback(request, version: str):
    target = _version_or_404(version)
    form = ReasonForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    try:
        services.activate_version(version=target, user=request.user, reason=reason)
    except services.DeploymentError as exc:
        messages.error(request, f"Refused: {exc}")
    else:
        messages.success(request, f"v{target.version} is now the active model.")
    return redirect("model_detail", version=version)


@view_required
def runs(request):
    page = Paginator(TrainingRun.objects.select_related("requested_by", "candidate", "live_version"), 25).get_page(request.GET.get("page"))
    return render(request, "dashboards/runs.html", {
        "page": page, "retrain_form": RetrainForm(), "schedule": schedules.describe(),
        "staged": DataBatch.objects.filter(status=DataBatch.Status.STAGED).count(),
    })


@view_required
def run_detail(request, pk: int):
    run = get_object_or_404(TrainingRun.objects.select_related("requested_by", "candidate", "live_version"), pk=pk)
    return render(request, "dashboards/run_detail.html", {**selectors.run_page(run), **judgement.for_run(run)})


@require_POST
@retrain_required
def run_start(request):
    form = RetrainForm(request.POST)
    force = form.is_valid() and form.cleaned_data["force"]
    asked = request_retraining(user=request.user, trigger=TrainingRun.Trigger.MANUAL, force=force)
    say = messages.warning if asked.waiting_for_broker else messages.success if asked.created else messages.info
    say(request, asked.message + " This page refreshes until it ends.")
    return redirect("run_detail", pk=asked.run.pk)


@view_required
def deployments(request):
    form = LiveAtForm(request.GET or None)
    live_at = None
    if form.is_valid() and form.cleaned_data["at"]:
        live_at = {"at": form.cleaned_data["at"], "version": services.version_live_at(form.cleaned_data["at"])}
    page = Paginator(Deployment.objects.select_related("from_version", "to_version", "user"), 30).get_page(request.GET.get("page"))
    return render(request, "dashboards/deployments.html", {"page": page, "form": form, "live_at": live_at},
                  status=400 if form.errors else 200)


@view_required
def predict(request):
    schema = DatasetSchema.current()
    if schema is None:
        return render(request, "dashboards/predict.html", {"schema": None})
    form = PredictForm(request.POST or None, schema=schema, **selectors.predict_hints())
    result = None
    if request.method == "POST" and form.is_valid():
        try:
            loaded, checked, proba = serving.predict_request([form.row()])
        except (serving.NoActiveModel, services.artifacts.ArtifactError) as exc:
            messages.error(request, str(exc))
        else:
            for problem in checked.problems:  # the API's rules: a 400 there is a field's error here
                form.add_error(problem["field"] if problem["field"] in form.fields else None, problem["message"])
            if proba is not None:
                result = {"version": loaded.version, "probability": proba[0], "prediction": loaded.labels(proba)[0],
                          "warnings": checked.warnings.get(0, [])}
    jobs = scoring.visible_to(request.user)[:5] if request.user.has_perm("modelhub.batch_predict") else []
    return render(request, "dashboards/predict.html", {
        "schema": schema, "form": form, "result": result, "batch_form": BatchPredictForm(), "jobs": jobs,
    })


@require_POST
@accepts_upload("modelhub.batch_predict")
def predict_batch(request):
    form = BatchPredictForm(request.POST, request.FILES)
    if getattr(request, "upload_refused", None):
        messages.error(request, request.upload_refused)
        return redirect("predict")
    if not form.is_valid():
        messages.error(request, "Choose a CSV file to score.")
        return redirect("predict")
    uploaded = form.cleaned_data["file"]
    try:
        job = scoring.submit(source=Path(uploaded.temporary_file_path()), original_name=uploaded.name, user=request.user)
    except (scoring.ScoringError, services.artifacts.ArtifactError, NoSpace) as exc:
        messages.error(request, f"{uploaded.name}: {exc}")
        return redirect("predict")
    messages.success(request, f"{uploaded.name} is queued for scoring; this page shows its progress.")
    return redirect("scoring_job", pk=job.pk)


@batch_predict_required
def scoring_job(request, pk: int):
    job = get_object_or_404(scoring.visible_to(request.user), pk=pk)
    return render(request, "dashboards/scoring_job.html", {"job": job})


@batch_predict_required
def scoring_result(request, pk: int):
    job = get_object_or_404(scoring.visible_to(request.user), pk=pk, status=ScoringJob.Status.DONE)
    return FileResponse(open(home.path(job.result_path), "rb"), as_attachment=True, filename=job.result_name, content_type="text/csv")


@view_required
def status(request):
    return _status_page(request)


def _status_page(request, schedule_form=None):
    # Shows the report only: alerts are raised by the watchdog and `manage.py health` (ops.alerts).
    report = health.report()
    if schedule_form is None and request.user.has_perm("modelhub.retrain_model"):
        schedule_form = ScheduleForm(initial=selectors.schedule_initial(schedules.current()))
    return render(request, "dashboards/status.html", {
        "report": report, "checked_at": timezone.now(), "schedule_form": schedule_form, "schedule": schedules.describe(),
        "cleanup": retention.plan(), "cleanup_next": retention.next_run_words(),
    }, status=400 if schedule_form is not None and schedule_form.errors else 200)


@require_POST
@retrain_required
def schedule_change(request):
    form = ScheduleForm(request.POST)
    if not form.is_valid():
        # The page again with what was typed, and a 400: nothing was saved.
        messages.error(request, " ".join(form.non_field_errors()) or "Check the schedule's fields.")
        return _status_page(request, schedule_form=form)
    schedules.change(user=request.user, cron=form.cleaned_data["expression"])
    messages.success(request, f"Saved: {schedules.describe()}.")
    return redirect("status")


@login_not_required
def healthz(request):
    """For load balancers and orchestrators: 200 healthy or 503, with the failing checks' names
    only. A read: it raises no alert (the watchdog and `manage.py health` do)."""
    report = health.recent(max_age=10)
    return JsonResponse({"status": "ok" if report.healthy else "failing", "failing": report.failing},
                        status=200 if report.healthy else 503)
