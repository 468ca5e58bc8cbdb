"""The master dataset: append-only Parquet partitions, one per merged batch.

The list of partitions lives in the database (MasterPartition); a file in data/training that
no row names is not part of the master. Merging hard-links a batch's Parquet file into
data/training, so it costs the same whatever the size of the master.
"""
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from django.db import transaction
from django.utils import timezone

from clsite import home, space

from .models import DatasetSchema, DataBatch, MasterPartition, MasterSummary
from .stats import StatsAccumulator

BATCH_COLUMN = "_batch"
SUMMARY_ROWS = 64_000  # rows summarised at a time: bounds the memory of the Arrow copy


def link_or_copy(source: Path, target: Path) -> None:
    """A second name for `source`: a hard link, or a copy where the filesystem allows none (NoSpace,
    and no partial copy, when it does not fit)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        with space.guard(target.parent, needed=source.stat().st_size, partial=[target]):
            shutil.copy2(source, target)


@dataclass(frozen=True)
class Merge:
    """Staged batches to add to the master, with what the master will hold once they are in."""

    batches: list[DataBatch]
    rows: int
    replaced_rows: int  # in the whole master after the merge
    stats: dict

    @property
    def newly_replaced(self) -> int:
        """Rows of the master (or of these batches) that this merge's rows replace."""
        return self.replaced_rows - current_summary().replaced_rows


def plan_merge(batches: list[DataBatch], schema, *, frame: pd.DataFrame | None = None, replaced: int | None = None) -> Merge:
    """What merging `batches` makes of the master. `frame` and `replaced` are rows_after_merge()
    for these batches when the caller has read them already (a retraining has)."""
    if frame is None:
        frame, replaced = rows_after_merge(batches, schema)
    return Merge(batches=list(batches), rows=len(frame), replaced_rows=replaced, stats=summarise(frame, schema))


def rows_after_merge(batches: list[DataBatch], schema) -> tuple[pd.DataFrame, int]:
    """The master's rows with `batches` added, newest row of each id only, and how many rows were replaced."""
    return drop_replaced_ids(read_batches(master_batches() + list(batches), schema), schema.id_column)


def summarise(frame: pd.DataFrame, schema) -> dict:
    """The column statistics of these rows, as a batch's are kept (ingestion.stats)."""
    from .validation import arrow_schema

    target = arrow_schema(schema)
    accumulator = StatsAccumulator(schema)
    table = pa.Table.from_pandas(frame[target.names], schema=target, preserve_index=False)
    for batch in table.to_batches(max_chunksize=SUMMARY_ROWS):
        accumulator.add(batch)
    return accumulator.as_dict()


def merge_batches(merge: Merge) -> list[MasterPartition]:
    """Add staged batches to the master and archive their raw files; the summary follows.

    Files are linked to their new places first and the old names removed only after the
    database commits, so a crash at any point leaves every batch whole in one place or the other.
    """
    moves, partitions, made = [], [], []
    try:
        with transaction.atomic():
            for batch in merge.batches:
                part = f"data/training/part-{batch.pk:06d}.parquet"
                archived = f"data/archive/{Path(batch.raw_path).name}"
                for old, new in ((batch.parquet_path, part), (batch.raw_path, archived)):
                    link_or_copy(home.path(old), home.path(new))
                    made.append(home.path(new))
                moves += [batch.parquet_path, batch.raw_path]
                partitions.append(MasterPartition.objects.create(batch=batch, path=part, rows=batch.rows))
                batch.status = DataBatch.Status.MERGED
                batch.parquet_path, batch.raw_path = part, archived
                batch.merged_at = timezone.now()
                batch.save(update_fields=["status", "parquet_path", "raw_path", "merged_at"])
            MasterSummary.objects.update_or_create(pk=1, defaults={"rows": merge.rows, "replaced_rows": merge.replaced_rows, "stats": merge.stats})
            transaction.on_commit(lambda: [home.path(old).unlink(missing_ok=True) for old in moves])
    except BaseException:
        # Not merged (a full disk, the database): the batches keep their old names, the new ones go.
        for path in made:
            path.unlink(missing_ok=True)
        raise
    return partitions


def current_summary() -> MasterSummary:
    """The stored summary of the master; rebuilt from the partitions if it is missing (a
    system merged before summaries were kept)."""
    summary = MasterSummary.objects.filter(pk=1).first()
    if summary is not None:
        return summary
    schema = DatasetSchema.current()
    if schema is None or not MasterPartition.objects.exists():
        return MasterSummary(pk=1)
    frame, replaced = rows_after_merge([], schema)
    summary, _ = MasterSummary.objects.update_or_create(
        pk=1, defaults={"rows": len(frame), "replaced_rows": replaced, "stats": summarise(frame, schema)})
    return summary


def read_batches(batches: list[DataBatch], schema) -> pd.DataFrame:
    """Rows of the given batches (staged or merged), oldest first, with a `_batch` column."""
    from .validation import arrow_schema

    target = arrow_schema(schema)
    tables = []
    for batch in sorted(batches, key=lambda b: b.pk):
        table = pq.read_table(home.path(batch.parquet_path), columns=target.names)
        table = table.cast(target)
        tables.append(table.append_column(BATCH_COLUMN, pa.array([batch.pk] * table.num_rows, pa.int64())))
    if not tables:
        return pd.DataFrame({name: pd.Series(dtype="float64" if pa.types.is_floating(t) else "object") for name, t in zip(target.names, target.types)} | {BATCH_COLUMN: pd.Series(dtype="int64")})
    frame = pa.concat_tables(tables).to_pandas()
    return frame


def master_batches() -> list[DataBatch]:
    return list(DataBatch.objects.filter(partition__isnull=False).order_by("pk"))


def drop_replaced_ids(frame: pd.DataFrame, id_column: str) -> tuple[pd.DataFrame, int]:
    """Keep the newest row of each id (rows are oldest first); returns the rows and how many were replaced."""
    if not id_column or frame.empty:
        return frame, 0
    keep = ~frame.duplicated(subset=[id_column], keep="last")
    return frame[keep].reset_index(drop=True), int((~keep).sum())
