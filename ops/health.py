"""Is the loop healthy, and if not, what should a person do? One report for the overview, the
/status/ page, `manage.py health` and GET /healthz.

Each check says ok, warning (a person should look, nothing is broken) or failing (the loop
cannot do its job unattended), with a one-line summary and what to do about it.

Reads only: a report is a function of the database and CL_HOME, and writes nothing. Putting
things right is ops.repairs; telling people is ops.alerts, which reads a report (this module
never imports it).
"""
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import DatabaseError
from django.db.models import Q
from django.utils import timezone
from django.utils.timesince import timesince

from audit.models import AuditEvent
from clsite import home, memo, space
from ingestion.models import DatasetSchema, DataBatch
from ingestion.uploads import human_bytes
from clsite import broker, schedules
from modelhub import jobs, mirrors, roles, runs
from modelhub.models import ModelVersion, ScoringJob, TrainingRun

from .models import WorkerBeat

OK, WARNING, FAILING = "ok", "warning", "failing"


@dataclass
class Check:
    name: str
    title: str
    status: str
    summary: str
    fix: str = ""
    details: dict = field(default_factory=dict)


@dataclass
class Report:
    checks: list[Check]
    checked_at: str

    @property
    def healthy(self) -> bool:
        return all(check.status != FAILING for check in self.checks)

    @property
    def failing(self) -> list[str]:
        return [check.name for check in self.checks if check.status == FAILING]

    def as_dict(self) -> dict:
        return {"healthy": self.healthy, "checked_at": self.checked_at, "failing": self.failing,
                "checks": [asdict(check) for check in self.checks]}


_recent = memo.ProcessCache("health report")  # at, report


def recent(max_age: float = 30.0) -> Report:
    """report(), computed at most once per `max_age` seconds in this process: for pages and
    probes that ask often (it reads every mirror file and walks CL_HOME)."""
    now = time.monotonic()
    if _recent.get("at") is None or now - _recent["at"] > max_age:
        _recent.update(at=now, report=report())
    return _recent["report"]


def forget() -> None:
    """Let the next recent() compute a fresh report (after a change a page must show at once)."""
    _recent.forget()


def report() -> Report:
    """Every check, as things stand now. Writes nothing (ops.repairs puts things right)."""
    try:
        checks = [initialised()]
        if checks[0].status == OK:
            checks += [worker(), retraining_schedule(), pending_runs(), stuck_jobs(), last_success(), held_data(), mirror_files()]
        checks += [task_broker(), disk(), alert_mail()]
        _blame_the_broker(checks)
    except DatabaseError as exc:
        checks = [Check("database", "Database", FAILING, f"the database cannot be read: {exc}",
                        "check DATABASE_URL and that the database server runs; then `manage.py migrate`")]
    return Report(checks=checks, checked_at=timezone.now().isoformat(timespec="seconds"))


def _blame_the_broker(checks: list[Check]) -> None:
    """A worker silent while the broker is down may be running but cannot be handed its watchdog:
    its fix then starts with the broker."""
    by_name = {check.name: check for check in checks}
    silent, broker = by_name.get("worker"), by_name.get("broker")
    if silent and broker and silent.status == FAILING and broker.status == FAILING:
        silent.fix = ("the task broker is down, so a running worker cannot be handed its watchdog either: start the "
                      "broker first, then look again; " + silent.fix)


def initialised() -> Check:
    if DatasetSchema.current() is None or ModelVersion.active() is None:
        return Check("initialised", "Set-up", FAILING, "not initialised: no schema or no active model yet",
                     "run `manage.py init_cl_system --data FILE.csv --target COLUMN` (`make run` does it with the demo data)")
    active = ModelVersion.active()
    return Check("initialised", "Set-up", OK, f"model v{active.version} is active")


def worker_last_seen() -> tuple[object, str]:
    """When a worker was last seen alive (its watchdog beat, or a running run's heartbeat), and which."""
    beat = WorkerBeat.objects.order_by("-beat_at").first()
    run = TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING).exclude(heartbeat_at=None).order_by("-heartbeat_at").first()
    seen = [(beat.beat_at, beat.worker)] if beat else []
    if run:
        seen.append((run.heartbeat_at, f"{run.worker} (running run {run.pk})"))
    return max(seen, key=lambda item: item[0], default=(None, ""))


def worker() -> Check:
    last, who = worker_last_seen()
    fix = ("start the worker: `manage.py qcluster` beside the web server (`make run` starts one); under systemd, "
           "restart its unit. Stop it with SIGTERM to the qcluster process itself.")
    if last is None:
        return Check("worker", "Worker", FAILING, "no worker has run yet", fix)
    silent = timezone.now() - last
    details = {"last_seen": last.isoformat(timespec="seconds"), "worker": who, "silent_seconds": int(silent.total_seconds())}
    if silent > timedelta(seconds=settings.CL_WORKER_SILENT_SECONDS):
        return Check("worker", "Worker", FAILING, f"silent for {timesince(last)} (last seen: {who})", fix, details)
    return Check("worker", "Worker", OK, f"alive: last heartbeat {int(silent.total_seconds())} s ago ({who})", details=details)


def retraining_schedule() -> Check:
    current = schedules.current()
    if current is None:
        return Check("schedule", "Schedule", OK, "off: retraining runs only when someone asks",
                     "set one on the Runs page or with `manage.py schedule_retraining --daily 02:00`")
    next_run = timezone.localtime(current.next_run)
    details = {"cron": current.cron, "next_run": next_run.isoformat(timespec="minutes")}
    summary = f"{schedules.in_words(current.cron)} ({next_run:%Z}); next {next_run:%Y-%m-%d %H:%M}"
    if timezone.now() - current.next_run > timedelta(minutes=5):
        return Check("schedule", "Schedule", FAILING, f"{summary}, which has passed without running",
                     "the worker's scheduler is not running: start or restart `manage.py qcluster`", details)
    return Check("schedule", "Schedule", OK, summary, details=details)


def pending_runs() -> Check:
    pending = list(TrainingRun.objects.filter(status__in=runs.PENDING).order_by("pk"))
    if not pending:
        return Check("runs", "Runs", OK, "none queued or running")
    now = timezone.now()
    details = {"runs": [{"id": r.pk, "status": r.status} for r in pending]}
    for run in pending:
        if run.status == TrainingRun.Status.RUNNING and runs.is_dead(run, now):
            return Check("runs", "Runs", FAILING, f"run {run.pk} is running but its heartbeat stopped (its worker died)",
                         "`manage.py health --repair` marks it failed now (the watchdog does within a minute); its batches stay staged",
                         details)
        if run.status == TrainingRun.Status.QUEUED and run.enqueued_at and now - run.enqueued_at > timedelta(minutes=settings.CL_QUEUED_RUN_MINUTES):
            return Check("runs", "Runs", FAILING, f"run {run.pk} has waited {timesince(run.enqueued_at)} for a worker",
                         "check that `manage.py qcluster` runs; the run is handed over once more, then failed", details)
    described = ", ".join(f"run {r.pk} {r.status}" + (f" since {timesince(r.started_at)}" if r.started_at else "") for r in pending)
    return Check("runs", "Runs", OK, described, details=details)


def stuck_jobs() -> Check:
    """Scoring jobs (any background job but runs, which pending_runs watches) that will not end by
    themselves: running on a dead worker, or handed to a worker that never took them."""
    now = timezone.now()
    running = list(ScoringJob.objects.filter(status=ScoringJob.Status.RUNNING))
    dead = [job.pk for job in running if jobs.is_dead(job, now)]
    lost = list(ScoringJob.objects.filter(status=ScoringJob.Status.QUEUED, in_flight=True, dispatched_at__lt=now - timedelta(
        minutes=settings.CL_QUEUED_RUN_MINUTES)).values_list("pk", flat=True))
    queued = ScoringJob.objects.filter(status=ScoringJob.Status.QUEUED).count()
    details = {"running": len(running), "queued": queued, "stuck": len(dead) + len(lost), "dead_worker": dead, "never_started": lost}
    if dead or lost:
        words = [f"scoring job(s) {', '.join(map(str, dead))} running on a worker that died"] if dead else []
        words += [f"scoring job(s) {', '.join(map(str, lost))} handed to a worker that never started them"] if lost else []
        return Check("jobs", "Background jobs", FAILING, f"{len(dead) + len(lost)} stuck: " + "; ".join(words),
                     "`manage.py health --repair` fails the dead ones and hands the others over again now (the watchdog does "
                     "within a minute); if it comes back, check that `manage.py qcluster` runs", details)
    return Check("jobs", "Background jobs", OK, f"no job stuck; {len(running)} scoring, {queued} waiting", details=details)


def last_success() -> Check:
    success = TrainingRun.objects.filter(status__in=[TrainingRun.Status.DEPLOYED, TrainingRun.Status.SKIPPED]).order_by("-finished_at").first()
    staged = DataBatch.objects.filter(status=DataBatch.Status.STAGED).order_by("uploaded_at")
    oldest = staged.first()
    details = {"last_success": success.finished_at.isoformat(timespec="seconds") if success else None,
               "staged_files": staged.count(), "waiting_since": oldest.uploaded_at.isoformat(timespec="seconds") if oldest else None}
    last = f"last success {timesince(success.finished_at)} ago (run {success.pk}, {success.status})" if success else "no successful run yet"
    if oldest is None:
        return Check("last_success", "Retraining", OK, f"{last}; no data waiting", details=details)
    waiting = f"{details['staged_files']} staged file(s) waiting for {timesince(oldest.uploaded_at)}"
    limit = timedelta(hours=settings.CL_ALERT_NO_SUCCESS_HOURS)
    since = max(success.finished_at, oldest.uploaded_at) if success else oldest.uploaded_at
    if timezone.now() - since > limit:
        return Check("last_success", "Retraining", FAILING, f"{last}; {waiting}",
                     "open the Runs page: look at the latest failed runs, then press Retrain now", details)
    return Check("last_success", "Retraining", OK, f"{last}; {waiting}", details=details)


def held_data() -> Check:
    held = DataBatch.objects.filter(status=DataBatch.Status.HELD)
    if not held.exists():
        return Check("held", "Held data", OK, "no batch is held")
    return Check("held", "Held data", WARNING, f"{held.count()} batch(es) held after a rejected run, waiting for an ML engineer",
                 "open Data → held: release each batch for the next retraining, discard it, or force-deploy its candidate with a reason",
                 {"batches": list(held.values_list("pk", flat=True))})


def mirror_files() -> Check:
    problems = mirrors.check()
    if problems:
        return Check("mirrors", "Mirror files", WARNING, "; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""),
                     "`manage.py health --repair` rewrites them from the database (the watchdog does within a minute)",
                     {"problems": problems})
    return Check("mirrors", "Mirror files", OK, "models/active, models/metadata and logs/deployments.json match the database")


def task_broker() -> Check:
    """Whether the worker can be handed work: a PING of Redis with a short timeout (broker.problem)."""
    why = broker.problem()
    if why:
        return Check("broker", "Task broker", FAILING, why,
                     "start Redis or check REDIS_URL; retrainings and scoring asked for meanwhile wait, queued, and are "
                     "handed to the worker within a minute of Redis answering again (nothing is lost)",
                     {"broker": broker.describe()})
    return Check("broker", "Task broker", OK, f"{broker.describe()} answers", details={"broker": broker.describe()})


def disk() -> Check:
    usage = shutil.disk_usage(home.home())
    used = home_size()
    details = {"cl_home_bytes": used, "free_bytes": usage.free, "total_bytes": usage.total}
    summary = f"CL_HOME holds {human_bytes(used)}; {human_bytes(usage.free)} free of {human_bytes(usage.total)}"
    # A write refused for lack of space (clsite.space) within the hour: failing whatever
    # CL_MIN_FREE_MB says, so that the alert tells someone (the refused file's room is free again).
    refused = AuditEvent.objects.filter(action=space.REFUSED, created_at__gte=timezone.now() - timedelta(hours=1)).first()
    if refused:
        return Check("disk", "Disk", FAILING, f"a write of {human_bytes(refused.details['needed'])} under {refused.target} was "
                     f"refused for lack of space at {timezone.localtime(refused.created_at):%Y-%m-%d %H:%M}; {summary}",
                     "run `manage.py cleanup` (see what it frees with --dry-run), shorten the retention times, or give that folder "
                     "more room; then send the file again", details)
    if usage.free < settings.CL_MIN_FREE_MB * 1024 * 1024:
        return Check("disk", "Disk", FAILING, summary,
                     f"free space is under {settings.CL_MIN_FREE_MB:,} MB: run `manage.py cleanup` (see what it frees with --dry-run), "
                     "shorten the retention times, or give CL_HOME more room", details)
    return Check("disk", "Disk", OK, summary, details=details)


def home_size() -> int:
    total = 0
    for path in home.home().rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:
            continue  # removed while we walked
    return total


def alert_recipients() -> list[str]:
    """Who alerts are mailed to: every active ML engineer and admin with an address."""
    users = get_user_model().objects.filter(is_active=True).exclude(email="")
    users = users.filter(Q(is_superuser=True) | Q(groups__name=roles.ML_ENGINEER)).distinct()
    return sorted(users.values_list("email", flat=True))


def alert_mail() -> Check:
    recipients = alert_recipients()
    if settings.EMAIL_BACKEND.endswith("console.EmailBackend"):
        return Check("mail", "Alert mail", WARNING, "alerts go to the worker's console output (no EMAIL_HOST set)",
                     "set EMAIL_HOST (and EMAIL_PORT, EMAIL_HOST_USER, EMAIL_HOST_PASSWORD, EMAIL_USE_TLS) so alerts are mailed",
                     {"recipients": recipients})
    if not recipients:
        return Check("mail", "Alert mail", WARNING, "no ML engineer has an email address",
                     "give ML engineers an email address in the admin (Users)", {"recipients": []})
    return Check("mail", "Alert mail", OK, f"alerts are mailed to {', '.join(recipients)}", details={"recipients": recipients})
