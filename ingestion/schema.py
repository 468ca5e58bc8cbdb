"""Learning the schema contract from the first dataset.

Nothing here knows the demo's columns: the target and id column are named by the caller,
every other column becomes a feature whose kind is read off its values.
"""
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from . import csvio

# Category lists longer than this are cut: the schema records the common values only and
# treats the rest as "new category" warnings, like any value it has not seen.
MAX_CATEGORIES = 200
POSITIVE_WORDS = ("1", "yes", "y", "true", "t", "positive", "pos")


class SchemaError(ValueError):
    """The dataset cannot define a schema; the message says why."""


@dataclass
class LearnedSchema:
    target: str
    positive_label: str
    negative_label: str
    id_column: str
    features: list[dict]


def learn_schema(csv_path: Path, *, target: str, id_column: str = "", positive_label: str = "") -> LearnedSchema:
    try:
        header, delimiter = csvio.read_header(csv_path)
    except csvio.HeaderError as exc:
        raise SchemaError(str(exc)) from None
    _check_named_columns(header, target, id_column)
    try:
        table = csvio.read_all_as_strings(csv_path, delimiter=delimiter, columns=header)
    except pa.ArrowInvalid as exc:
        # Callers report SchemaError as a message; the full check with lines comes at ingest.
        raise SchemaError(f"the file could not be read as CSV: {exc}") from None
    if table.num_rows == 0:
        raise SchemaError("the file has a header but no rows")
    labels = _target_labels(table.column(target), target)
    positive = _choose_positive(labels, table.column(target), positive_label, target)
    negative = next(label for label in labels if label != positive)
    if id_column:
        _check_ids(table.column(id_column), id_column)
    features = [_learn_feature(name, table.column(name)) for name in header if name not in (target, id_column)]
    if not features:
        raise SchemaError("the file has no feature columns besides the target and id")
    return LearnedSchema(target, positive, negative, id_column, features)


def _check_named_columns(header: list[str], target: str, id_column: str) -> None:
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise SchemaError(f"duplicated column names: {', '.join(duplicated)}")
    for role, name in (("target", target), ("id", id_column)):
        if name and name not in header:
            raise SchemaError(f"the {role} column {name!r} is not in the file; its columns are: {', '.join(header)}")
    if id_column and id_column == target:
        raise SchemaError("the id column and the target column must differ")


def _target_labels(column: pa.ChunkedArray, target: str) -> list[str]:
    values = pc.utf8_trim_whitespace(column)
    if pc.any(pc.equal(values, "")).as_py():
        raise SchemaError(f"the target column {target!r} has empty values")
    labels = sorted(pc.unique(values).to_pylist())
    if len(labels) != 2:
        shown = ", ".join(map(repr, labels[:10]))
        raise SchemaError(f"the target column {target!r} must have exactly two labels, found {len(labels)}: {shown}")
    return labels


def _choose_positive(labels: list[str], column: pa.ChunkedArray, requested: str, target: str) -> str:
    if requested:
        if requested not in labels:
            raise SchemaError(f"--positive-label {requested!r} is not one of the target's labels {labels}")
        return requested
    for label in labels:
        if label.strip().lower() in POSITIVE_WORDS:
            return label
    # No conventional name: the rarer class is the one people predict (churners, fraud, ...).
    counts = {row["values"]: row["counts"] for row in pc.value_counts(pc.utf8_trim_whitespace(column)).to_pylist()}
    return min(labels, key=lambda label: (counts[label], label))


def _check_ids(column: pa.ChunkedArray, id_column: str) -> None:
    if pc.any(pc.equal(pc.utf8_trim_whitespace(column), "")).as_py():
        raise SchemaError(f"the id column {id_column!r} has empty values")


def _learn_feature(name: str, column: pa.ChunkedArray) -> dict:
    values = pc.utf8_trim_whitespace(column)
    present = pc.filter(values, pc.not_equal(values, ""))
    if len(present) and pc.all(csvio.is_number(present)).as_py():
        return {"name": name, "kind": "numeric"}
    counts = pc.value_counts(present).to_pylist()
    counts.sort(key=lambda row: (-row["counts"], row["values"]))
    categories = sorted(row["values"] for row in counts[:MAX_CATEGORIES])
    return {"name": name, "kind": "categorical", "categories": categories}
