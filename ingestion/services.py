"""Writes and reads of the data side: the schema, uploads, the batch life cycle, data stats."""
import os
import re
from pathlib import Path
from typing import BinaryIO

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.services import record
from clsite import home, space
from clsite.users import real_user

from .models import DatasetSchema, DataBatch
from .schema import LearnedSchema
from .uploads import UploadTooLarge, human_bytes, new_upload_path, store_stream
# A read, at home in selectors; re-exported because DESIGN.md's fixed interfaces name ingestion.services.get_data_stats().
from .selectors import data_stats as get_data_stats  # noqa: F401
from .validation import Report, byte_scanner, validate_and_convert


class IngestionError(Exception):
    """Refused before a batch was recorded; the message is for the person who uploaded."""


class DuplicateUpload(IngestionError):
    def __init__(self, first: DataBatch):
        when = timezone.localtime(first.uploaded_at).strftime("%Y-%m-%d %H:%M")
        super().__init__(
            f"this file was already uploaded as batch {first.pk} ({first.original_name!r}, {when}, "
            f"now {first.get_status_display().lower()}); the same bytes are not taken twice"
        )
        self.first = first


class BatchStateError(Exception):
    """The batch is not in a state that allows this change."""


def create_schema(learned: LearnedSchema) -> DatasetSchema:
    current = DatasetSchema.current()
    return DatasetSchema.objects.create(
        major=(current.major + 1) if current else 1,
        target=learned.target,
        positive_label=learned.positive_label,
        negative_label=learned.negative_label,
        missing_markers=learned.missing_markers,
        id_column=learned.id_column,
        features=learned.features,
    )


def safe_name(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name).strip("._") or "upload"
    return stem[:120]


def ingest_file(*, source: BinaryIO, original_name: str, user=None, origin: str = DataBatch.Source.WEB) -> DataBatch:
    """Store the file byte for byte, check it, then stage it or put it in quarantine with its report.

    Returns the batch (staged or rejected); raises IngestionError when nothing was recorded
    (no schema yet, or the same bytes were uploaded before), and NoSpace when the disk cannot
    hold it (nothing is kept). Its files appear in data/new or data/quarantine only together
    with its row (_record_batch).
    """
    schema = DatasetSchema.current()
    if schema is None:
        raise IngestionError("the system is not initialised yet: run `manage.py init_cl_system` first")
    home.ensure_layout()
    # The bytes are scanned as they are stored: one read of the upload instead of two.
    tmp = new_upload_path()
    parquet_tmp, report_tmp = tmp.with_suffix(".parquet"), tmp.with_suffix(".report.json")
    scanner = byte_scanner(tmp)
    try:
        sha, size = store_stream(source, tmp, observe=scanner.feed)
    except UploadTooLarge as exc:
        return _record_too_large(original_name, exc, schema=schema, user=user, origin=origin)
    try:
        _refuse_duplicate(sha)
        with space.guard(parquet_tmp.parent, needed=size, partial=[parquet_tmp]):
            report, column_stats = validate_and_convert(tmp, schema, parquet_tmp, scan=scanner.finish())
        stem = f"{sha[:12]}__{safe_name(original_name)}"
        if report.ok:
            raw_path, parquet_path = f"data/new/{stem}", f"data/new/{sha[:12]}.parquet"
            places = {tmp: raw_path, parquet_tmp: parquet_path}
        else:
            raw_path, parquet_path = f"data/quarantine/{stem}", ""
            with space.guard(report_tmp.parent, needed=len(str(report.as_dict())), partial=[report_tmp]):
                home.atomic_write_json(report_tmp, report.as_dict())
            places = {tmp: raw_path, report_tmp: raw_path + ".report.json"}
        return _record_batch(
            original_name=original_name, sha=sha, size=size, report=report, column_stats=column_stats,
            raw_path=raw_path, parquet_path=parquet_path, schema=schema, user=user, origin=origin, places=places,
        )
    finally:
        for leftover in (tmp, parquet_tmp, report_tmp):
            leftover.unlink(missing_ok=True)


def ingest_path(path: Path, *, user=None, origin: str = DataBatch.Source.CLI) -> DataBatch:
    with open(path, "rb") as fh:
        return ingest_file(source=fh, original_name=Path(path).name, user=user, origin=origin)


def _refuse_duplicate(sha: str) -> None:
    first = DataBatch.objects.exclude(status=DataBatch.Status.DISCARDED).filter(sha256=sha).order_by("pk").first()
    if first:
        raise DuplicateUpload(first)


def _record_batch(*, original_name, sha, size, report: Report, column_stats, raw_path, parquet_path, schema, user, origin,
                  places: dict[Path, str]) -> DataBatch:
    """Record the batch and move its files (`places`: temporary file -> path under CL_HOME) into place.

    The files are renamed last inside the row's transaction, and removed again if it does
    not commit: they are never visible without their row, whatever fails (the database stopping
    at the insert or at the commit). Only a crash in the instant between the renames and the
    commit leaves files no row names; the repair quarantines those (ingestion.orphans).
    """
    status = DataBatch.Status.STAGED if report.ok else DataBatch.Status.REJECTED
    placed: list[Path] = []
    try:
        with transaction.atomic():
            batch = DataBatch.objects.create(
                original_name=original_name[:255], sha256=sha, size_bytes=size, rows=report.rows if report.ok else 0,
                status=status, source=origin, uploaded_by=real_user(user),
                schema=schema, raw_path=raw_path, parquet_path=parquet_path, report=report.as_dict(), stats=column_stats,
            )
            record(actor=user, action=f"data.{status}", target=str(batch), details={"sha256": sha, "summary": report.summary()})
            _place(places, placed)
    except IntegrityError:
        _unplace(placed)
        # Another upload of the same bytes won the race; it keeps the files.
        first = DataBatch.objects.exclude(status=DataBatch.Status.DISCARDED).filter(sha256=sha).first()
        if first is None:
            raise
        raise DuplicateUpload(first) from None
    except BaseException:
        _unplace(placed)
        raise
    return batch


def _place(places: dict[Path, str], placed: list[Path]) -> None:
    """Rename each file to its place, adding to `placed` the places that did not exist before (the ones to undo)."""
    for source, relative in places.items():
        target = home.path(relative)
        existed = target.exists()  # the same bytes under the same name (a discarded batch's): left as they were
        os.utime(source)  # a file's age in data/ is then the time it got its row: the orphan sweep counts from it
        source.replace(target)
        if not existed:
            placed.append(target)


def _unplace(placed: list[Path]) -> None:
    for target in placed:
        target.unlink(missing_ok=True)


def _record_too_large(original_name, exc: UploadTooLarge, *, schema, user, origin) -> DataBatch:
    report = Report()
    report.error("too_large", f"the file is over the upload limit of {human_bytes(exc.limit)}; split it into smaller files")
    with transaction.atomic():
        batch = DataBatch.objects.create(
            original_name=original_name[:255], sha256="", size_bytes=exc.size, status=DataBatch.Status.REJECTED,
            source=origin, uploaded_by=real_user(user), schema=schema, report=report.as_dict(),
        )
        record(actor=user, action="data.rejected", target=str(batch), details={"summary": report.summary()})
    return batch


def staged_batches() -> list[DataBatch]:
    return list(DataBatch.objects.filter(status=DataBatch.Status.STAGED).order_by("pk"))


def hold_batches(batches: list[DataBatch]) -> None:
    """Set aside the new batches of a rejected run, so later uploads can still be deployed."""
    DataBatch.objects.filter(pk__in=[b.pk for b in batches], status=DataBatch.Status.STAGED).update(status=DataBatch.Status.HELD)


def release_batch(*, batch: DataBatch, user, reason: str = "") -> DataBatch:
    """Put a held batch back in the queue for the next retraining."""
    with transaction.atomic():
        batch = DataBatch.objects.select_for_update().get(pk=batch.pk)
        if batch.status != DataBatch.Status.HELD:
            raise BatchStateError(f"batch {batch.pk} is {batch.get_status_display().lower()}, only held batches can be released")
        batch.status = DataBatch.Status.STAGED
        batch.note = reason
        batch.save(update_fields=["status", "note"])
        record(actor=user, action="data.released", target=str(batch), details={"reason": reason})
    return batch


def discard_batch(*, batch: DataBatch, user, reason: str = "") -> DataBatch:
    """Drop a held or rejected batch; its raw file stays in quarantine for the record."""
    with transaction.atomic():
        batch = DataBatch.objects.select_for_update().get(pk=batch.pk)
        if batch.status not in (DataBatch.Status.HELD, DataBatch.Status.REJECTED):
            raise BatchStateError(f"batch {batch.pk} is {batch.get_status_display().lower()}; only held or rejected batches can be discarded")
        old_parquet = batch.parquet_path
        if batch.raw_path.startswith("data/new/"):
            quarantined = "data/quarantine/" + Path(batch.raw_path).name
            home.path(batch.raw_path).replace(home.path(quarantined))
            batch.raw_path = quarantined
        batch.status = DataBatch.Status.DISCARDED
        batch.parquet_path = ""
        batch.note = reason
        batch.save(update_fields=["status", "raw_path", "parquet_path", "note"])
        record(actor=user, action="data.discarded", target=str(batch), details={"reason": reason})
        if old_parquet:
            transaction.on_commit(lambda: home.path(old_parquet).unlink(missing_ok=True))
    return batch
