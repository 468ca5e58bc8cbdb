"""Telling people: a mail to the ML engineers when a decision is theirs or the loop is stuck.

Each problem has a key. When it first appears an Alert row opens and one mail goes out; while
it lasts nothing more is sent; when it is gone the alert is resolved, and only if it comes back
does another mail go. Evaluated from a health report by the watchdog every minute and by
`manage.py health` (so a dead worker is still reported, by a cron job running it). Pages and
GET /healthz only show the report: a read never opens an alert or sends mail.
"""
import logging
from dataclasses import dataclass

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from ingestion.models import DataBatch
from clsite import schedules
from modelhub.models import TrainingRun

from . import health
from .models import Alert, WorkerBeat

log = logging.getLogger("clsite.ops")


@dataclass(frozen=True)
class Problem:
    key: str
    subject: str
    body: str
    link: str


def evaluate(report: health.Report | None = None) -> dict:
    """Open alerts for the report's problems that are new (and mail them), resolve the ones that
    are gone. An action: called by the watchdog and `manage.py health`, never by a page."""
    report = report or health.report()
    problems = {problem.key: problem for problem in current_problems(report)}
    now = timezone.now()
    resolved = list(Alert.objects.filter(resolved_at=None).exclude(key__in=problems).values_list("key", flat=True))
    Alert.objects.filter(key__in=resolved).update(resolved_at=now)
    opened = []
    for problem in problems.values():
        alert = _open(problem, now)
        if alert is not None:
            opened.append(problem.key)
            _send(alert)
    return {"open": sorted(problems), "opened": opened, "resolved": resolved}


def current_problems(report: health.Report) -> list[Problem]:
    status = {check.name: check for check in report.checks}
    problems = []
    latest = TrainingRun.objects.exclude(finished_at=None).order_by("-finished_at", "-pk").first()
    if latest and latest.status == TrainingRun.Status.FAILED:
        problems.append(Problem(
            "runs-failing", f"Retraining failed (run {latest.pk})",
            f"Run {latest.pk} failed: {latest.error}\n\nIts batches are still staged; the next run will take them. "
            "Until a run succeeds, no new data reaches the model.", _url("run_detail", latest.pk)))
    for run in TrainingRun.objects.filter(status=TrainingRun.Status.REJECTED, new_batches__status=DataBatch.Status.HELD).distinct():
        held = ", ".join(f"{b.original_name} (batch {b.pk})" for b in run.new_batches.filter(status=DataBatch.Status.HELD))
        reasons = "\n".join(f"- {reason}" for reason in run.reasons)
        problems.append(Problem(
            f"run-rejected-{run.pk}", f"Candidate rejected, data held (run {run.pk})",
            f"Run {run.pk}'s candidate was rejected:\n{reasons}\n\nThese batches are held until an ML engineer releases or "
            f"discards them, or force-deploys the candidate with a reason: {held}.", _url("run_detail", run.pk)))
    problems += _data_changed()
    worker = status.get("worker")
    # Runs wait: one is queued, or the schedule is on for a worker that has run before (a fresh
    # installation whose worker is still starting is no emergency).
    queued = TrainingRun.objects.filter(status=TrainingRun.Status.QUEUED).exists()
    waiting = queued or (schedules.current() is not None and WorkerBeat.objects.exists())
    if worker and worker.status == health.FAILING and waiting:
        problems.append(Problem("worker-silent", "The worker is not running", f"The worker is {worker.summary}. Queued and scheduled "
                                f"retrainings wait until it runs again.\n\nWhat to do: {worker.fix}", _url("status")))
    for name in ("last_success", "disk", "schedule", "runs", "jobs", "broker"):
        check = status.get(name)
        if check and check.status == health.FAILING:
            problems.append(Problem(f"check-{name}", f"{check.title}: {check.summary}"[:200],
                                    f"{check.summary}\n\nWhat to do: {check.fix}", _url("status")))
    return problems


def _data_changed() -> list[Problem]:
    """The last deployment learned a drift past the policy's maximum ("adapted"): people should know
    the data changed. Open until the next deployment, so it is told once."""
    run = (TrainingRun.objects.filter(status=TrainingRun.Status.DEPLOYED).exclude(candidate=None)
           .select_related("candidate").order_by("-finished_at", "-pk").first())
    decision = (run.candidate.validation or {}).get("drift_decision") if run else None
    if not decision or decision.get("case") != "adapted":
        return []
    version = run.candidate.version
    return [Problem(f"data-changed-{run.pk}", f"The data changed and v{version} learned it (run {run.pk})",
                    f"Run {run.pk}: {decision['message']}.\n\nDrifted features: {', '.join(decision['drifted'])}. v{version} "
                    "is live; look at the change on its page in case it is not what you expect.", _url("model_detail", version))]


def _open(problem: Problem, now) -> Alert | None:
    """The alert for a problem that is new (or back after it was solved); None if it is open already."""
    try:
        with transaction.atomic():
            alert = Alert.objects.select_for_update().filter(key=problem.key).first()
            if alert is not None and alert.resolved_at is None:
                return None
            if alert is None:
                alert = Alert(key=problem.key)
            alert.subject, alert.body, alert.link = problem.subject, problem.body, problem.link
            alert.opened_at, alert.resolved_at, alert.sent_at, alert.sent_to = now, None, None, []
            alert.save()
            return alert
    except IntegrityError:
        return None  # another process opened it at the same moment, and mails it


def _send(alert: Alert) -> None:
    to = health.alert_recipients()
    if not to:
        log.warning("alert with no one to tell (no ML engineer has an email address): %s", alert.subject)
        return
    try:
        send_mail(f"[Continuous learning] {alert.subject}", f"{alert.body}\n\n{alert.link}\n", None, to)
    except Exception:
        log.exception("could not send the alert mail %r", alert.subject)
        return
    Alert.objects.filter(pk=alert.pk).update(sent_at=timezone.now(), sent_to=to)


def _url(name: str, *args) -> str:
    return settings.CL_SITE_URL.rstrip("/") + reverse(name, args=args)
