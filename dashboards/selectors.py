"""Reads for the pages: what each page shows, gathered in one place per page."""
import hashlib

from django.conf import settings
from django.core.cache import cache
from django.core.paginator import Paginator
from django.db import connection
from django.template.loader import render_to_string
from django_q.models import Schedule

from ingestion import master
from ingestion.models import DatasetSchema, DataBatch, MasterSummary
from ingestion.selectors import batch_counts
from ingestion.selectors import data_stats as get_data_stats
from ingestion.uploads import human_bytes
from clsite import schedules
from modelhub.models import Deployment, ModelVersion, TrainingRun

from . import figures
from .forms import PredictForm

METRIC_NAMES = ("accuracy", "precision", "recall", "f1", "auc", "pr_auc", "brier")
# What a row of the versions table needs: not the drift, candidates or validation of each.
VERSION_ROW = ("major", "minor", "status", "estimator", "metrics", "training_rows", "trained_at", "deployed_at")


def upload_limit() -> str:
    return human_bytes(settings.CL_UPLOAD_MAX_BYTES)


def overview() -> dict:
    """The overview's facts, gathered once per change of what they show (overview_stamp)."""
    key = "page:overview:" + hashlib.sha256(repr(overview_stamp()).encode()).hexdigest()
    facts = cache.get(key)
    if facts is None:
        facts = _overview_facts(DatasetSchema.current())
        if facts["active"]:  # the parts of the page that only show these facts, rendered once with them
            facts["cards_html"] = render_to_string("dashboards/overview_cards.html", facts)
            facts["metrics_html"] = render_to_string("dashboards/overview_metrics.html", facts)
        cache.set(key, facts, timeout=24 * 3600)
    return facts


def overview_stamp() -> tuple:
    """What the overview shows depends on, in one statement of indexed lookups: the newest
    schema, version, deployment and run (with its status), the rejected versions, the batches
    waiting and held, the master summary's last change and the schedule's next run. A deploy or
    rollback adds a deployment; a run's outcome changes its status; a merge, release or discard
    changes the batch counts; a new version, schema or upload adds a row."""
    tables = {model: connection.ops.quote_name(model._meta.db_table)
              for model in (DatasetSchema, ModelVersion, Deployment, TrainingRun, DataBatch, MasterSummary, Schedule)}
    rows = connection.ops.quote_name("rows")
    sql = f"""SELECT
        (SELECT MAX(id) FROM {tables[DatasetSchema]}),
        (SELECT MAX(id) FROM {tables[ModelVersion]}),
        (SELECT COUNT(*) FROM {tables[ModelVersion]} WHERE status = %s),
        (SELECT MAX(id) FROM {tables[Deployment]}),
        (SELECT MAX(id) FROM {tables[TrainingRun]}),
        (SELECT status FROM {tables[TrainingRun]} ORDER BY id DESC LIMIT 1),
        (SELECT MAX(id) FROM {tables[DataBatch]}),
        (SELECT COUNT(*) FROM {tables[DataBatch]} WHERE status = %s),
        (SELECT SUM({rows}) FROM {tables[DataBatch]} WHERE status = %s),
        (SELECT COUNT(*) FROM {tables[DataBatch]} WHERE status = %s),
        (SELECT updated_at FROM {tables[MasterSummary]} WHERE id = 1),
        (SELECT next_run FROM {tables[Schedule]} WHERE name = %s),
        (SELECT cron FROM {tables[Schedule]} WHERE name = %s)"""
    staged, held = DataBatch.Status.STAGED, DataBatch.Status.HELD
    with connection.cursor() as cursor:
        cursor.execute(sql, [ModelVersion.Status.REJECTED, staged, staged, held, schedules.NAME, schedules.NAME])
        return cursor.fetchone()


def _overview_facts(schema) -> dict:
    # The active version comes with its last deployment: one query for both.
    last_deployment = (Deployment.objects.select_related("user", "to_version__schema")
                       .filter(to_version__status=ModelVersion.Status.ACTIVE).first())
    active = last_deployment.to_version if last_deployment else ModelVersion.active()
    summary = master.current_summary()
    return {
        "active": active,
        "last_deployment": last_deployment,
        "metrics": [(name, active.metrics.get(name)) for name in METRIC_NAMES] if active else [],
        "stats": {**batch_counts(), "master_rows": summary.rows},
        # A queued or running run is always the newest (runs.request_retraining joins it).
        "last_run": TrainingRun.objects.defer("stages", "details").first(),
        "schedule": schedules.describe(),
        "history_chart": figures.history(last=30),
        "predict_fields": predict_fields(schema) if schema else "",
    }


def model_page(version: ModelVersion) -> dict:
    metrics = version.metrics
    validation = version.validation or {}
    comparison = validation.get("comparison") or {}
    rows = []
    live = validation.get("live_metrics") or {}
    for name in METRIC_NAMES:
        if name in metrics:
            rows.append({"name": name, "value": metrics.get(name), "live": live.get(name), "ci": comparison.get(name)})
    return {
        "version": version,
        "metric_rows": rows,
        "gates": validation.get("gates", []),
        "drift": version.drift or {},
        "drift_rows": sorted((version.drift or {}).get("features", {}).items(), key=lambda item: -item[1]["psi"]),
        "active": ModelVersion.active(),
        "deployments": Deployment.objects.filter(to_version=version).select_related("user", "from_version"),
        **figures.for_version(version),
    }


def run_page(run: TrainingRun) -> dict:
    candidate = run.candidate
    return {
        "run": run,
        "gates": (candidate.validation or {}).get("gates", []) if candidate else [],
        "batches": run.new_batches.order_by("pk"),
        "in_progress": run.status in (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING),
        "total_seconds": sum(stage["seconds"] for stage in run.stages),
    }


def batch_page(batch) -> dict:
    """The batch and the last run that took it up (the one that merged it, or put it on hold)."""
    run = batch.training_runs.select_related("candidate").order_by("-pk").first()
    return {"batch": batch, "run": run}


def predict_hints() -> dict:
    """Starting values for the prediction form (mean of numbers, commonest category) and which
    numeric columns are 0/1 flags, read off the master's stored column summaries."""
    typical, flags = {}, set()
    for name, column in get_data_stats()["columns"].items():
        if column["kind"] == "numeric" and column.get("mean") is not None:
            mean, std = column["mean"], column["std"]
            # Values within [0, 1] whose variance is mean - mean² are all exactly 0 or 1.
            if column["min"] == 0 and column["max"] == 1 and abs(std * std - (mean - mean * mean)) < 1e-9:
                flags.add(name)
                typical[name] = str(round(mean))
            elif float(column["min"]).is_integer() and float(column["max"]).is_integer():
                typical[name] = round(mean)
            else:
                typical[name] = round(mean, 2)
        elif column["kind"] == "categorical" and column.get("top"):
            typical[name] = next(iter(column["top"]))
    return {"typical": typical, "flags": flags}


def versions_table(page_number, stamp: str) -> str:
    """A page of the versions table, rendered once per change of the history (figures.history_stamp):
    formatting 25 rows of metrics and dates costs more than the rest of the page."""
    versions = ModelVersion.objects.order_by("-major", "-minor").only(*VERSION_ROW)
    page = Paginator(versions, 25).get_page(page_number)
    key = f"table:versions:{stamp}:{page.number}"
    html = cache.get(key)
    if html is None:
        html = render_to_string("dashboards/versions_table.html", {"page": page})
        cache.set(key, html, timeout=24 * 3600)
    return html


def predict_fields(schema) -> str:
    """The overview's (unbound) prediction form fields as HTML. Django renders every widget
    through a template, about 12 ms for the demo's 19, so the overview keeps this with its facts."""
    form = PredictForm(schema=schema, **predict_hints())
    return render_to_string("dashboards/predict_fields.html", {"form": form})


def schedule_initial(current) -> dict:
    """The schedule form's starting values, read back from the cron expression."""
    if current is None:
        return {"kind": "off"}
    minute, hour, day, month, weekday = current.cron.split()
    if minute.isdigit() and hour.isdigit() and (day, month) == ("*", "*"):
        at = f"{int(hour):02d}:{int(minute):02d}"
        if weekday == "*":
            return {"kind": "daily", "at": at}
        day = schedules.day_of(weekday)
        if day is not None:
            return {"kind": "weekly", "at": at, "day": day}
    return {"kind": "cron", "cron": current.cron}


def health_summary() -> dict:
    """The overview's line of health: healthy or not, and the checks that are not ok."""
    from ops import health

    report = health.recent()
    return {"healthy": report.healthy, "checks": report.checks, "warnings": any(c.status != health.OK for c in report.checks)}
