"""Scoring a whole CSV as background work: submitted from the page or the API, scored by the
worker in chunks (memory bounded by the chunk, not the file), its progress on its page, its
result downloaded when done and kept for CL_KEEP_SCORING_HOURS.

The file's header is checked when it is submitted, so a wrong file is refused at once; the
rows are read as the Pipeline would read them (training.features_frame) and scored with the
version that was active when the job started, whatever happens meanwhile.
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
from django.db import transaction
from django.utils import timezone

from audit.services import record
from clsite import exports, home
from clsite.users import real_user
from ingestion import csvio

from . import serving
from .models import ScoringJob

log = logging.getLogger("clsite.modelhub")

LINE_COUNT_BYTES = 8 << 20
TASK = "modelhub.tasks.run_scoring_job"
FOLDER = "scoring"


class ScoringError(ValueError):
    """The file cannot be scored; the message says why."""


def submit(*, source: Path, original_name: str, user) -> ScoringJob:
    """Check the file's header against the active model, keep the file, queue the job (after commit)."""
    try:
        loaded = serving.active()
    except serving.NoActiveModel as exc:
        raise ScoringError(str(exc)) from None
    schema = loaded.version.schema
    try:
        header, _ = csvio.read_header(source)
    except csvio.HeaderError as exc:
        raise ScoringError(str(exc)) from None
    missing = [name for name in schema.feature_names if name not in header]
    if missing:
        raise ScoringError(f"missing columns: {', '.join(missing)}; download the template from the data page")
    with transaction.atomic():
        job = ScoringJob.objects.create(original_name=original_name[:255], created_by=real_user(user),
                                        size_bytes=source.stat().st_size, version=loaded.version)
        job.input_path = f"{FOLDER}/{job.pk:06d}-input.csv"
        home.path(FOLDER).mkdir(parents=True, exist_ok=True)
        shutil.move(source, home.path(job.input_path))
        job.save(update_fields=["input_path"])
        record(actor=user, action="scoring.requested", target=str(job), details={"bytes": job.size_bytes})
        transaction.on_commit(lambda: _enqueue(job))
    return job


def _enqueue(job: ScoringJob) -> None:
    from django_q.tasks import async_task

    async_task(TASK, job.pk, task_name=f"scoring-{job.pk}")


def run(job: ScoringJob) -> ScoringJob:
    """Score a queued job to its end; a job that is not queued (any more) is left as it is."""
    if not ScoringJob.objects.filter(pk=job.pk, status=ScoringJob.Status.QUEUED).update(
            status=ScoringJob.Status.RUNNING, started_at=timezone.now()):
        job.refresh_from_db()
        return job
    job.refresh_from_db()
    result = f"{FOLDER}/{job.pk:06d}-result.csv"
    try:
        loaded = serving.active()
        ScoringJob.objects.filter(pk=job.pk).update(version=loaded.version)
        _score(job, loaded, home.path(job.input_path), home.path(result))
    except Exception as exc:
        log.exception("scoring job %s failed", job.pk)
        home.path(result).unlink(missing_ok=True)
        message = str(exc) if isinstance(exc, (ScoringError, serving.NoActiveModel)) else f"{type(exc).__name__}: {exc}"
        _finish(job, ScoringJob.Status.FAILED, error=message)
        return job
    _finish(job, ScoringJob.Status.DONE, result_path=result)
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
        for batch in batches:
            if not batch.num_rows:
                continue
            proba = loaded.predictor.proba_frame(_typed_frame(batch, schema))
            columns = {}
            if schema.id_column in wanted:
                columns[exports.safe_cell(schema.id_column)] = _safe_text(batch.column(schema.id_column))
            columns["probability"] = pa.array(proba.round(4))
            columns["prediction"] = labels.take(pa.array(proba >= serving.THRESHOLD).cast(pa.int8()))
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
    if writer is None:
        raise ScoringError("the file has a header but no rows")


def _typed_frame(batch: pa.RecordBatch, schema) -> pd.DataFrame:
    """The chunk's features typed by Arrow, several times faster than pandas on text: blanks
    missing, numbers parsed, categories as a Categorical (each distinct value looked up once).
    A numeric column with a value that is not a number stays text, and training.features_frame
    then reads it exactly as for the Pipeline."""
    columns = {}
    for feature in schema.features:
        name = feature["name"]
        if name not in batch.schema.names:
            continue
        values = batch.column(name)
        if pa.types.is_dictionary(values.type):
            categories = values.to_pandas()
            columns[name] = categories.cat.remove_categories([""]) if "" in categories.cat.categories else categories
            continue
        values = pc.if_else(pc.equal(values, ""), pa.scalar(None, pa.string()), values)
        if feature["kind"] == "numeric":
            try:
                values = pc.cast(values, pa.float64())
            except pa.ArrowInvalid:
                pass
        columns[name] = values.to_pandas()
    return pd.DataFrame(columns)


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


def _finish(job: ScoringJob, status: str, *, result_path: str = "", error: str = "") -> None:
    now = timezone.now()
    fields = {"status": status, "finished_at": now, "error": error, "result_path": result_path,
              "expires_at": now + timedelta(hours=settings.CL_KEEP_SCORING_HOURS)}
    if status == ScoringJob.Status.DONE:
        fields["rows_estimate"] = ScoringJob.objects.get(pk=job.pk).rows_done
    ScoringJob.objects.filter(pk=job.pk).update(**fields)
    home.path(job.input_path).unlink(missing_ok=True)  # the scored file is the result; the input goes
    job.refresh_from_db()


def visible_to(user):
    """The jobs a user may see: their own (an admin: everyone's)."""
    jobs = ScoringJob.objects.select_related("version", "created_by")
    return jobs if user.is_superuser else jobs.filter(created_by=user)
