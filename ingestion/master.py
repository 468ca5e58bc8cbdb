"""The master dataset: append-only Parquet partitions, one per merged batch.

The list of partitions lives in the database (MasterPartition); a file in data/training that
no row names is not part of the master. Merging hard-links a batch's Parquet file into
data/training, so it costs the same whatever the size of the master.
"""
import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from django.db import transaction
from django.utils import timezone

from clsite import home

from .models import DataBatch, MasterPartition

BATCH_COLUMN = "_batch"


def link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def merge_batches(batches: list[DataBatch], *, run=None) -> list[MasterPartition]:
    """Add staged batches to the master and archive their raw files.

    Files are linked to their new places first and the old names removed only after the
    database commits, so a crash at any point leaves every batch whole in one place or the other.
    """
    moves, partitions = [], []
    with transaction.atomic():
        for batch in batches:
            part = f"data/training/part-{batch.pk:06d}.parquet"
            archived = f"data/archive/{Path(batch.raw_path).name}"
            link_or_copy(home.path(batch.parquet_path), home.path(part))
            link_or_copy(home.path(batch.raw_path), home.path(archived))
            moves += [batch.parquet_path, batch.raw_path]
            partitions.append(MasterPartition.objects.create(batch=batch, path=part, rows=batch.rows))
            batch.status = DataBatch.Status.MERGED
            batch.parquet_path, batch.raw_path = part, archived
            batch.merged_at = timezone.now()
            batch.run = run
            batch.save(update_fields=["status", "parquet_path", "raw_path", "merged_at", "run"])
        transaction.on_commit(lambda: [home.path(old).unlink(missing_ok=True) for old in moves])
    return partitions


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
