"""Bounded disk: files nobody needs any more are removed after a while, by a daily task and
`manage.py cleanup`.

What goes, and when (settings, README "Running it unattended"):
- temporary files (unfinished uploads, spooled files) after CL_KEEP_TMP_HOURS;
- the raw file and report of a refused or discarded batch after CL_KEEP_QUARANTINE_DAYS;
- the raw file of a merged batch after CL_KEEP_ARCHIVE_DAYS (its rows stay in the master);
- an upload file no batch names (left by a crash, quarantined by the repair in
  data/quarantine/orphans) after CL_KEEP_QUARANTINE_DAYS; until then the plan lists it (`orphans`);
- a scoring job's result after CL_KEEP_SCORING_HOURS; the input (and any partial result) of a
  job that ended, at once: a failed job keeps nothing (its worker may have died mid-job);
- logs/retraining.log is rotated once it passes CL_KEEP_LOG_MB.
Never touched: the master dataset (data/training), staged and held batches, any model
version's artifact or metadata, the database. A batch's row and report stay in the database;
its page says the raw file was removed and when.
"""
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone as dt_timezone

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import record
from clsite import home
from ingestion import orphans
from ingestion.models import DataBatch
from ingestion.uploads import human_bytes
from modelhub import scoring
from modelhub.models import ScoringJob

log = logging.getLogger("clsite.ops")


@dataclass
class Removal:
    path: str  # relative to CL_HOME
    size: int
    why: str
    batch: int | None = None


@dataclass
class Plan:
    removals: list[Removal] = field(default_factory=list)
    rotate_log: bool = False
    done: bool = False
    orphans: list[Removal] = field(default_factory=list)  # quarantined orphan files kept for now (ingestion.orphans)

    @property
    def bytes(self) -> int:
        return sum(r.size for r in self.removals)

    def summary(self) -> str:
        if not self.removals and not self.rotate_log:
            return "nothing to remove"
        verb = "removed" if self.done else "would remove"
        return f"{verb} {len(self.removals)} file(s), {human_bytes(self.bytes)}" + ("; rotated logs/retraining.log" if self.rotate_log else "")

    def by_reason(self) -> dict[str, dict]:
        groups: dict[str, dict] = {}
        for removal in self.removals:
            group = groups.setdefault(removal.why, {"files": 0, "bytes": 0})
            group["files"] += 1
            group["bytes"] += removal.size
        return groups

    def as_dict(self) -> dict:
        return {"summary": self.summary(), "files": len(self.removals), "bytes": self.bytes, "rotate_log": self.rotate_log,
                "by_reason": self.by_reason(), "removals": [r.__dict__ for r in self.removals],
                "orphans": [r.__dict__ for r in self.orphans]}


def plan() -> Plan:
    """What the next clean-up removes, without removing anything."""
    now = timezone.now()
    removals = _temporary(now - timedelta(hours=settings.CL_KEEP_TMP_HOURS))
    quarantine_before = now - timedelta(days=settings.CL_KEEP_QUARANTINE_DAYS)
    refused = DataBatch.objects.filter(status__in=[DataBatch.Status.REJECTED, DataBatch.Status.DISCARDED],
                                       raw_path__startswith="data/quarantine/", uploaded_at__lt=quarantine_before)
    for batch in refused:
        why = f"refused or discarded over {settings.CL_KEEP_QUARANTINE_DAYS} days ago"
        removals += [_removal(path, why, batch.pk) for path in (batch.raw_path, batch.raw_path + ".report.json")]
    archived = DataBatch.objects.filter(status=DataBatch.Status.MERGED, raw_path__startswith="data/archive/",
                                        merged_at__lt=now - timedelta(days=settings.CL_KEEP_ARCHIVE_DAYS))
    for batch in archived:
        removals.append(_removal(batch.raw_path, f"raw file of a batch merged over {settings.CL_KEEP_ARCHIVE_DAYS} days ago", batch.pk))
    for job in ScoringJob.objects.filter(expires_at__lt=now).exclude(result_path=""):
        removals.append(_removal(job.result_path, f"scoring result older than {settings.CL_KEEP_SCORING_HOURS} hours", None))
    removals += _scoring_leftovers(now - timedelta(hours=settings.CL_KEEP_TMP_HOURS))
    gone, kept = _orphans(quarantine_before)
    removals += gone
    log_file = home.path("logs", "retraining.log")
    rotate = log_file.exists() and log_file.stat().st_size > settings.CL_KEEP_LOG_MB * 1024 * 1024
    return Plan([r for r in removals if r is not None], rotate_log=rotate, orphans=kept)


def apply(*, dry_run: bool = False) -> Plan:
    """Remove what plan() lists; with dry_run, only say so."""
    todo = plan()
    if dry_run:
        return todo
    for removal in todo.removals:
        home.path(removal.path).unlink(missing_ok=True)
    emptied = sorted({r.batch for r in todo.removals if r.batch is not None and not r.path.endswith(".report.json")})
    with transaction.atomic():
        ScoringJob.objects.filter(result_path__in=[r.path for r in todo.removals]).update(
            status=ScoringJob.Status.EXPIRED, result_path="")
        for batch in DataBatch.objects.filter(pk__in=emptied):
            batch.note = (f"{batch.note} " if batch.note else "") + f"Raw file {batch.raw_path} removed by the retention policy on {timezone.now():%Y-%m-%d}."
            batch.raw_path = ""
            batch.save(update_fields=["raw_path", "note"])
        if todo.removals or todo.rotate_log:
            record(actor=None, action="data.cleanup", target="CL_HOME", details={"summary": todo.summary(), "by_reason": todo.by_reason()})
    if todo.rotate_log:
        os.replace(home.path("logs", "retraining.log"), home.path("logs", "retraining.log.1"))
    todo.done = True
    log.info("clean-up: %s", todo.summary())
    return todo


def _scoring_leftovers(orphan_before) -> list[Removal]:
    """Files in the scoring folder that no job needs: the input (and any partial result) of a job
    that ended (ending removes them, unless it was cut short), and, after CL_KEEP_TMP_HOURS, a
    file whose job was never recorded (a submit that failed after keeping it)."""
    folder = home.path(scoring.FOLDER)
    files = {}
    for path in folder.glob("*-*.csv") if folder.is_dir() else []:
        number = path.name.split("-", 1)[0]
        if number.isdigit():
            files[path] = int(number)
    jobs = {job.pk: job for job in ScoringJob.objects.filter(pk__in=set(files.values())).only("pk", "status", "result_path")}
    removals = []
    for path, pk in sorted(files.items()):
        relative, job = f"{scoring.FOLDER}/{path.name}", jobs.get(pk)
        if job is None:
            if path.exists() and path.stat().st_mtime < orphan_before.timestamp():
                removals.append(_removal(relative, f"scoring file without a job, older than {settings.CL_KEEP_TMP_HOURS} hours", None))
        elif job.status not in (ScoringJob.Status.QUEUED, ScoringJob.Status.RUNNING) and relative != job.result_path:
            removals.append(_removal(relative, f"left by a scoring job that ended ({job.status})", None))
    return removals


def _orphans(before) -> tuple[list[Removal], list[Removal]]:
    """The quarantined files no batch names: those to remove (quarantined before `before`), those kept."""
    gone, kept = [], []
    for path, size, mtime in orphans.quarantined():
        if mtime < before.timestamp():
            gone.append(Removal(path, size, f"file no batch named (left by a crash), quarantined over {settings.CL_KEEP_QUARANTINE_DAYS} days ago"))
        else:
            since = timezone.localtime(datetime.fromtimestamp(mtime, tz=dt_timezone.utc))
            kept.append(Removal(path, size, f"no batch names it (left by a crash); quarantined {since:%Y-%m-%d %H:%M}, "
                                            f"removed after {settings.CL_KEEP_QUARANTINE_DAYS} days"))
    return gone, kept


def _temporary(before) -> list[Removal]:
    removals = []
    folder = home.path("tmp")
    for path in folder.rglob("*") if folder.is_dir() else []:
        try:
            stat = path.stat()
        except OSError:
            continue
        if path.is_file() and stat.st_mtime < before.timestamp():
            removals.append(Removal(str(path.relative_to(home.home())), stat.st_size, f"temporary file older than {settings.CL_KEEP_TMP_HOURS} hours"))
    return removals


def _removal(relative: str, why: str, batch: int | None) -> Removal | None:
    path = home.path(relative)
    if not path.is_file():
        return None
    return Removal(relative, path.stat().st_size, why, batch)


def next_run_words() -> str:
    from django_q.models import Schedule

    schedule = Schedule.objects.filter(name="cleanup").first()
    return f"next clean-up {timezone.localtime(schedule.next_run):%Y-%m-%d %H:%M}" if schedule else "the daily clean-up is not scheduled"
