"""Scoring a whole CSV as background work: submitted from the page or the API, scored by the
worker in chunks (memory bounded by the chunk, not the file), its progress on its page, its
result downloaded when done and kept for CL_KEEP_SCORING_HOURS.

The file's header is checked when it is submitted, so a wrong file is refused at once; the
rows are read by the rules every door uses (ingestion.values, modelhub.inputs), each scored row
carrying its warnings, with the version that was active when the job started, whatever happens
meanwhile.

Fair queues: the system's own tasks (a requested retraining, the watchdog, the clean-up) share
django-q2's one queue with scoring, so scoring must never fill it. Jobs wait in the database
(status queued), not in the broker, and they are scored by a chain of ONE task at a time:

- `kick()` hands the next job to the worker when no job is in flight: users in turn (whoever
  was served least recently first), each user's oldest job first. The database decides: at most
  one ScoringJob row is `in_flight` (a partial unique constraint), so two processes kicking at
  once start one chain, on SQLite and PostgreSQL alike, with either broker.
- That task scores its job, then kicks again: the next scoring task goes to the back of the
  queue, behind any system task enqueued meanwhile. Scoring thus holds at most one worker, and
  a system task waits for at most the one job being scored, never for every job queued.
- Whoever submits a job kicks, and so does the watchdog every minute, after `sweep()`: a job
  running whose worker died (modelhub.jobs: its heartbeat silent for a minute, or its process on
  this machine gone; also at a worker's start, ops.repairs) is failed, and a job handed
  over but not started for CL_QUEUED_RUN_MINUTES (its task lost, e.g. a Redis flushed) is
  handed over again with a new attempt number, so the older task, if it ever comes, does
  nothing. A lost task therefore never stops the chain for good.

Each user may have CL_SCORING_MAX_QUEUED_PER_USER jobs waiting; one more is refused
(ScoringLimit) and nothing of it is kept.
"""
import logging
import shutil
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import F, OuterRef, Subquery
from django.utils import timezone

from audit.services import record
from clsite import broker, exports, home, space
from clsite.users import real_user
from ingestion import csvio
from ingestion import values as value_rules

from . import artifacts, inputs, jobs, serving
from .jobs import STALE_AFTER
from .models import ModelVersion, ScoringJob

log = logging.getLogger("clsite.modelhub")

LINE_COUNT_BYTES = 8 << 20
TASK = "modelhub.tasks.run_scoring_job"
FOLDER = "scoring"


class ScoringError(ValueError):
    """The file cannot be scored; the message says why."""


class ScoringLimit(ScoringError):
    """The user already has as many jobs waiting as CL_SCORING_MAX_QUEUED_PER_USER allows."""

    def __init__(self, waiting: int, limit: int):
        self.waiting, self.limit = waiting, limit
        super().__init__(f"you already have {waiting} scoring job{'s' if waiting != 1 else ''} waiting, and the limit is "
                         f"{limit} per user (CL_SCORING_MAX_QUEUED_PER_USER); submit this file when one of them has started")


def submit(*, source: Path, original_name: str, user) -> ScoringJob:
    """Check the file's header against the active model, keep the file, queue the job (after commit).
    The model is loaded by the worker that scores: a request needs only the version's schema, and its
    file's checksum (artifacts.ArtifactError for a file altered or gone), not a model compiled in
    this process (seconds for a calibrated boosting model in a fresh one)."""
    version = ModelVersion.active()
    if version is None:
        raise ScoringError(serving.NO_MODEL)
    artifacts.read_verified(version.artifact, version.sha256)
    schema = version.schema
    try:
        header, _ = csvio.read_header(source)
    except csvio.HeaderError as exc:
        raise ScoringError(str(exc)) from None
    missing = [name for name in schema.feature_names if name not in header]
    if missing:
        raise ScoringError(f"missing columns: {', '.join(missing)}; download the template from the data page")
    owner = real_user(user)
    size, folder = source.stat().st_size, home.path(FOLDER)
    folder.mkdir(parents=True, exist_ok=True)
    if source.stat().st_dev != folder.stat().st_dev:  # kept by a copy, not a rename: it needs the room
        space.require(folder, size)
    with transaction.atomic():
        if owner is not None:
            # One submit at a time per user (PostgreSQL; SQLite's transactions are IMMEDIATE), so
            # two at once cannot both pass the count.
            get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
            waiting = ScoringJob.objects.filter(created_by=owner, status=ScoringJob.Status.QUEUED).count()
            if waiting >= settings.CL_SCORING_MAX_QUEUED_PER_USER:
                raise ScoringLimit(waiting, settings.CL_SCORING_MAX_QUEUED_PER_USER)
        job = ScoringJob.objects.create(original_name=original_name[:255], created_by=owner,
                                        size_bytes=size, version=version)
        job.input_path = f"{FOLDER}/{job.pk:06d}-input.csv"
        with space.guard(folder, needed=size, partial=[home.path(job.input_path)]):
            shutil.move(source, home.path(job.input_path))
        job.save(update_fields=["input_path"])
        record(actor=user, action="scoring.requested", target=str(job), details={"bytes": job.size_bytes})
        transaction.on_commit(kick)
    return job


def fair_order():
    """The queued jobs not yet handed over, in the order they are scored: users in turn (the one
    served least recently first; never served: first), each user's oldest first."""
    last_started = (ScoringJob.objects.filter(created_by=OuterRef("created_by"), started_at__isnull=False)
                    .order_by("-started_at").values("started_at")[:1])
    return (ScoringJob.objects.filter(status=ScoringJob.Status.QUEUED, in_flight=False)
            .annotate(last_served=Subquery(last_started))
            .order_by(F("last_served").asc(nulls_first=True), "created_at", "pk"))


def kick() -> int | None:
    """Start the chain if no job is in flight: hand the next job to the worker. Returns its id,
    or None (one is in flight already, or nothing waits). Safe to call from anywhere, any time."""
    sweep()
    for _ in range(3):
        if ScoringJob.objects.filter(in_flight=True).exists():
            return None
        job = fair_order().only("pk", "dispatches").first()
        if job is None:
            return None
        attempt = job.dispatches + 1
        try:
            with transaction.atomic():
                taken = ScoringJob.objects.filter(pk=job.pk, status=ScoringJob.Status.QUEUED, in_flight=False).update(
                    in_flight=True, dispatches=attempt, dispatched_at=timezone.now())
        except IntegrityError:
            return None  # another process started the chain this instant
        if taken:
            return job.pk if _enqueue(job.pk, attempt) else None
    return None


def sweep() -> dict:
    """Put the chain right: fail a running job whose worker died, hand a lost task's job over again."""
    now = timezone.now()
    failed, again = [], []
    for job in ScoringJob.objects.filter(status=ScoringJob.Status.RUNNING):
        if jobs.is_dead(job, now) and _finish(
                job, ScoringJob.Status.FAILED, heartbeat_at=job.heartbeat_at,
                error=f"the worker stopped while scoring this file ({_how_it_died(job, now)}: killed or shut down); "
                      f"{job.rows_done:,} rows were scored and nothing was kept; submit the file again"):
            home.path(result_file(job)).unlink(missing_ok=True)
            failed.append(job.pk)
    lost = now - timedelta(minutes=settings.CL_QUEUED_RUN_MINUTES)
    for job in ScoringJob.objects.filter(status=ScoringJob.Status.QUEUED, in_flight=True, dispatched_at__lt=lost):
        attempt = job.dispatches + 1
        if ScoringJob.objects.filter(pk=job.pk, status=ScoringJob.Status.QUEUED, in_flight=True,
                                     dispatches=job.dispatches).update(dispatches=attempt, dispatched_at=now):
            log.warning("scoring job %s was handed to the worker %s ago and never started; handing it over again",
                        job.pk, now - job.dispatched_at)
            _enqueue(job.pk, attempt)
            again.append(job.pk)
    # A finished job always leaves the chain (its finishing update does it); this is a safety net.
    ScoringJob.objects.filter(in_flight=True).exclude(
        status__in=[ScoringJob.Status.QUEUED, ScoringJob.Status.RUNNING]).update(in_flight=False)
    return {"failed": failed, "handed_again": again}


def _how_it_died(job: ScoringJob, now) -> str:
    if job.heartbeat_at is None or now - job.heartbeat_at > STALE_AFTER:
        return "no heartbeat" + (f" for {int((now - job.heartbeat_at).total_seconds())} s" if job.heartbeat_at else "")
    return f"its process {job.worker} is gone"


def result_file(job: ScoringJob) -> str:
    """Where a job writes its result (relative to CL_HOME): partial while it runs, removed if it fails."""
    return f"{FOLDER}/{job.pk:06d}-result.csv"


def _enqueue(job_id: int, attempt: int) -> bool:
    """Hand the job's task over; False when the broker refuses it (Redis down). The job then leaves
    the chain, still queued, so the next kick (the watchdog's, every minute, or the next submission)
    hands it over as soon as the broker answers, not after CL_QUEUED_RUN_MINUTES."""
    from django_q.tasks import async_task

    try:
        async_task(TASK, job_id, attempt, task_name=f"scoring-{job_id}" + (f"-{attempt}" if attempt > 1 else ""))
    except broker.errors() as exc:
        ScoringJob.objects.filter(pk=job_id, status=ScoringJob.Status.QUEUED, dispatches=attempt).update(in_flight=False)
        log.warning("scoring job %s stays queued, not handed to the worker: %s refused it: %s", job_id, broker.describe(), exc)
        return False
    return True


def run_task(job_id: int, attempt: int | None = None) -> str:
    """The worker's part: score the job handed over (if this task is still the one for it), then
    hand the next job over, at the back of the queue."""
    try:
        job = ScoringJob.objects.filter(pk=job_id).first()
        return run(job, attempt=attempt).status if job else "missing"
    finally:
        try:
            kick()
        except Exception:  # the watchdog kicks again within a minute
            log.exception("could not hand the next scoring job to the worker")


def run(job: ScoringJob, *, attempt: int | None = None) -> ScoringJob:
    """Score a queued job to its end; a job that is not queued (any more) is left as it is, and
    so is one handed over again since `attempt` (the task is not the job's latest)."""
    now = timezone.now()
    claim = ScoringJob.objects.filter(pk=job.pk, status=ScoringJob.Status.QUEUED)
    if attempt is not None:
        claim = claim.filter(in_flight=True, dispatches=attempt)
    if not claim.update(status=ScoringJob.Status.RUNNING, started_at=now, heartbeat_at=now, worker=jobs.worker_name()):
        job.refresh_from_db()
        return job
    job.refresh_from_db()
    result = result_file(job)
    # The heartbeat goes on while a failure is recorded (the database may be down meanwhile).
    with jobs.Heartbeat(job):
        try:
            loaded = serving.active()
            ScoringJob.objects.filter(pk=job.pk).update(version=loaded.version)
            _score(job, loaded, home.path(job.input_path), home.path(result))
        except Exception as exc:
            log.exception("scoring job %s failed", job.pk)
            home.path(result).unlink(missing_ok=True)
            message = str(exc) if isinstance(exc, (ScoringError, serving.NoActiveModel)) else jobs.failure_reason(exc)
            jobs.write_despite_outage(lambda: _finish(job, ScoringJob.Status.FAILED, error=message),
                                      what=f"the failure of scoring job {job.pk}")
            return job
        except BaseException as exc:
            # django-q2's timeout (a SystemExit raised in the task) or a shutdown: record it, then let it stop us.
            home.path(result).unlink(missing_ok=True)
            _finish(job, ScoringJob.Status.FAILED, error=f"stopped before it finished ({type(exc).__name__}); submit the file again")
            raise
    if not _finish(job, ScoringJob.Status.DONE, result_path=result):
        home.path(result).unlink(missing_ok=True)  # failed meanwhile by a sweep: its result is not kept
    return job


def _score(job: ScoringJob, loaded: serving.Loaded, source: Path, target: Path) -> None:
    schema = loaded.version.schema
    header, delimiter = csvio.read_header(source)
    wanted = [name for name in [schema.id_column, *schema.feature_names] if name and name in header]
    # The ingestion's reader: small blocks read ahead (memory bounded by the block, not the
    # file), categories dictionary-encoded, and the CRLF-in-quotes workaround.
    batches = csvio.stream_batches(source, header=header, delimiter=delimiter, columns=wanted,
                                   dictionary=[name for name in schema.categorical_features if name in header])
    labels = pa.array([exports.safe_cell(schema.negative_label), exports.safe_cell(schema.positive_label)])
    ScoringJob.objects.filter(pk=job.pk).update(rows_estimate=_count_lines(source) - 1)
    writer = None
    done = 0
    try:
        # A full disk: the partial result removed, the job failed with the folder and the sizes (the input's size as the estimate).
        with space.guard(target.parent, needed=source.stat().st_size, partial=[target]):
            try:
                for batch in batches:
                    if not batch.num_rows:
                        continue
                    features, warnings = _typed_frame(batch, loaded.version)
                    proba = loaded.predictor.proba_frame(features)
                    columns = {}
                    if schema.id_column in wanted:
                        columns[exports.safe_cell(schema.id_column)] = _safe_text(batch.column(schema.id_column))
                    columns["probability"] = pa.array(proba.round(4))
                    columns["prediction"] = labels.take(pa.array(proba >= loaded.version.threshold).cast(pa.int8()))
                    columns["warnings"] = _safe_text(warnings)
                    table = pa.table(columns)
                    if writer is None:
                        writer = pacsv.CSVWriter(target, table.schema)
                    writer.write_table(table)
                    done += batch.num_rows
                    ScoringJob.objects.filter(pk=job.pk).update(rows_done=done)
            except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
                raise ScoringError(f"the file could not be read as CSV: {exc}") from None
            finally:
                if writer is not None:
                    writer.close()
    except space.NoSpace as exc:
        raise ScoringError(f"the result could not be written: {exc}") from exc
    if writer is None:
        raise ScoringError("the file has a header but no rows")


def _typed_frame(batch: pa.RecordBatch, version) -> tuple[pd.DataFrame, pa.Array]:
    """The chunk's features read by the rules every door uses (modelhub.inputs, typed by Arrow,
    several times faster than pandas on text): numbers parsed, blanks and missing-value markers
    missing, categories trimmed as a Categorical (each distinct value looked up once); and each
    row's warnings. A value that is not a number is scored as missing, and says so there."""
    schema = version.schema
    markers = schema.markers
    typed, not_numbers = {}, {}
    for feature in schema.features:
        name = feature["name"]
        if name not in batch.schema.names:
            continue
        column = batch.column(name)
        if feature["kind"] == "numeric":
            if pa.types.is_dictionary(column.type):
                column = column.dictionary_decode()
            reading = value_rules.read_numbers(column, markers)
            typed[name] = reading.numbers
            if reading.not_a_number is not None:
                refused = pc.or_(reading.not_a_number, reading.not_finite)
                if pc.any(refused).as_py():
                    not_numbers[name] = refused
        else:
            typed[name] = value_rules.read_texts(column, markers)
    warnings = inputs.batch_warnings(typed, schema, version.profile or {}, not_numbers)
    frame = {}
    for name, column in typed.items():
        values = column.to_pandas()
        frame[name] = values.cat.remove_unused_categories() if isinstance(values.dtype, pd.CategoricalDtype) else values
    return pd.DataFrame(frame), warnings


def _count_lines(path: Path) -> int:
    """Line feeds in the file: the rows to expect, give or take values that span lines (for progress only)."""
    lines = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(LINE_COUNT_BYTES):
            lines += chunk.count(b"\n")
    return max(lines, 1)


def _safe_text(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    """exports.safe_cell over a column of text, vectorised."""
    risky = pc.match_substring_regex(values, r"^[=+\-@\t\r]")
    return pc.if_else(risky, pc.binary_join_element_wise("'", values, ""), values)


def _finish(job: ScoringJob, status: str, *, result_path: str = "", error: str = "", heartbeat_at=None) -> bool:
    """End a running job (and its place in the chain); False when it was not running any more
    (or, with heartbeat_at, has beaten since): then nothing changes."""
    now = timezone.now()
    fields = {"status": status, "finished_at": now, "error": error, "result_path": result_path, "in_flight": False,
              "expires_at": now + timedelta(hours=settings.CL_KEEP_SCORING_HOURS)}
    if status == ScoringJob.Status.DONE:
        fields["rows_estimate"] = F("rows_done")
    running = ScoringJob.objects.filter(pk=job.pk, status=ScoringJob.Status.RUNNING)
    if heartbeat_at is not None:
        running = running.filter(heartbeat_at=heartbeat_at)
    ended = bool(running.update(**fields))
    if ended:
        home.path(job.input_path).unlink(missing_ok=True)  # the scored file is the result; the input goes
    job.refresh_from_db()
    return ended


def visible_to(user):
    """The jobs a user may see: their own (an admin: everyone's)."""
    jobs = ScoringJob.objects.select_related("version", "created_by")
    return jobs if user.is_superuser else jobs.filter(created_by=user)
