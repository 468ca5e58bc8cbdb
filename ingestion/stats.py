"""Per-column summaries kept with each batch, so data pages never re-read the data.

A summary is made of sums (count, sum of squares, value counts), so the summaries of several
batches add up to the summary of their union.
"""
import math
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

TOP_CATEGORIES = 50


class StatsAccumulator:
    def __init__(self, schema):
        self.schema = schema
        self.rows = 0
        self.numeric = {name: {"count": 0, "missing": 0, "sum": 0.0, "sumsq": 0.0, "min": None, "max": None} for name in schema.numeric_features}
        self.categorical = {name: Counter() for name in schema.categorical_features}
        self.missing = Counter()
        self.labels = Counter()

    def add(self, batch: pa.RecordBatch, counts: dict[str, list[tuple[str, int]]] | None = None) -> None:
        """Add a typed batch; `counts` may hold value counts already made for some columns."""
        counts = counts or {}
        self.rows += batch.num_rows
        for name, acc in self.numeric.items():
            values = batch.column(name)
            present = len(values) - values.null_count
            acc["missing"] += values.null_count
            if present:
                acc["count"] += present
                total, squares, low, high = _moments(values)
                acc["sum"] += total
                acc["sumsq"] += squares
                acc["min"] = _pick(min, acc["min"], low)
                acc["max"] = _pick(max, acc["max"], high)
        for name, counter in self.categorical.items():
            values = batch.column(name)
            self.missing[name] += values.null_count
            for value, n in counts.get(name) or value_counts(pc.drop_null(values)):
                counter[value] += n
        target = self.schema.target
        for value, n in counts.get(target) or value_counts(batch.column(target)):
            self.labels[value] += n

    def as_dict(self) -> dict:
        return {
            "rows": self.rows,
            "labels": dict(self.labels),
            "numeric": self.numeric,
            "categorical": {
                name: {"missing": self.missing[name], "counts": dict(counter.most_common(TOP_CATEGORIES)), "distinct": len(counter)}
                for name, counter in self.categorical.items()
            },
        }


def value_counts(values: pa.Array) -> list[tuple[str, int]]:
    """(value, count) pairs of an array's distinct values."""
    if pa.types.is_dictionary(values.type) and not values.null_count and pa.types.is_int32(values.type.index_type):
        # A count per dictionary entry straight from the indices: several times faster than
        # hashing them again. Entries no row uses are left out, as value_counts would.
        indices = values.indices
        index = np.frombuffer(indices.buffers()[1], dtype=np.int32, count=len(indices), offset=indices.offset * 4)
        counts = np.bincount(index, minlength=len(values.dictionary))
        names = values.dictionary.to_pylist()
        return [(names[i], n) for i, n in enumerate(counts.tolist()) if n]
    counts = pc.value_counts(values)
    return list(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))


def _moments(values: pa.Array) -> tuple[float, float, float, float]:
    """Sum, sum of squares, min and max of a float column's non-null values."""
    if values.null_count == 0:
        # No copy, and numpy's reductions are several times faster here. (Not numbers @ numbers:
        # BLAS threads would spin on the cores the parser needs.)
        numbers = values.to_numpy()
        return float(numbers.sum()), float(np.square(numbers).sum()), float(numbers.min()), float(numbers.max())
    low, high = pc.min_max(values).values()  # the aggregates skip nulls: no need to drop them first
    return pc.sum(values).as_py(), pc.sum(pc.multiply(values, values)).as_py(), low.as_py(), high.as_py()


def _pick(fn, a, b):
    return b if a is None else fn(a, b)


def combine(summaries: list[dict]) -> dict:
    """The summary of the union of several batches."""
    total = {"rows": 0, "labels": Counter(), "numeric": {}, "categorical": {}}
    for summary in summaries:
        total["rows"] += summary.get("rows", 0)
        total["labels"].update(summary.get("labels", {}))
        for name, acc in summary.get("numeric", {}).items():
            into = total["numeric"].setdefault(name, {"count": 0, "missing": 0, "sum": 0.0, "sumsq": 0.0, "min": None, "max": None})
            for key in ("count", "missing", "sum", "sumsq"):
                into[key] += acc[key]
            if acc["min"] is not None:
                into["min"] = _pick(min, into["min"], acc["min"])
                into["max"] = _pick(max, into["max"], acc["max"])
        for name, acc in summary.get("categorical", {}).items():
            into = total["categorical"].setdefault(name, {"missing": 0, "counts": Counter()})
            into["missing"] += acc["missing"]
            into["counts"].update(acc["counts"])
    total["labels"] = dict(total["labels"])
    return total


def describe(combined: dict) -> dict:
    """Readable per-column figures (mean, std, top values, missing count and share of rows) from a combined summary."""
    columns = {}
    rows = combined.get("rows", 0)
    for name, acc in combined["numeric"].items():
        n = acc["count"]
        mean = acc["sum"] / n if n else None
        var = max(acc["sumsq"] / n - mean * mean, 0.0) if n else None
        columns[name] = {
            "kind": "numeric", "count": n, "missing": acc["missing"], "missing_share": _share(acc["missing"], rows), "mean": mean,
            "std": math.sqrt(var) if var is not None else None, "min": acc["min"], "max": acc["max"],
        }
    for name, acc in combined["categorical"].items():
        counts = Counter(acc["counts"])
        columns[name] = {
            "kind": "categorical", "count": sum(counts.values()), "missing": acc["missing"], "missing_share": _share(acc["missing"], rows),
            "top": dict(counts.most_common(10)), "distinct_seen": len(counts),
        }
    return columns


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0
