"""Reads of the data side for pages and commands: stored aggregates only, never the data files."""
from django.db.models import Count, Sum

from . import master
from . import stats as batch_stats
from .models import DatasetSchema, DataBatch, MasterPartition


def batch_counts() -> dict:
    """Files and rows by batch status, in one query (the overview needs no more)."""
    counts = {status: 0 for status in DataBatch.Status.values}
    rows = {status: 0 for status in DataBatch.Status.values}
    for row in DataBatch.objects.values("status").annotate(n=Count("id"), r=Sum("rows")):
        counts[row["status"]], rows[row["status"]] = row["n"], row["r"] or 0
    return {
        "staged_files": counts["staged"],
        "staged_rows": rows["staged"],
        "archived_files": counts["merged"],
        "rejected_files": counts["rejected"],
        "held_files": counts["held"],
        "held_rows": rows["held"],
        "discarded_files": counts["discarded"],
    }


def data_stats() -> dict:
    """Batch counts by status and the master's summary (rows after replaced ids, class balance, columns)."""
    summary = master.current_summary()
    labels = summary.stats.get("labels", {})
    total = sum(labels.values())
    schema = DatasetSchema.current()
    return {
        "initialised": schema is not None,
        "master_rows": summary.rows,
        "master_replaced_rows": summary.replaced_rows,
        "master_partitions": MasterPartition.objects.count(),
        **batch_counts(),
        "class_balance": {label: {"rows": n, "share": n / total if total else 0.0} for label, n in sorted(labels.items())},
        "positive_label": schema.positive_label if schema else None,
        "columns": batch_stats.describe(batch_stats.combine([summary.stats])),
    }
