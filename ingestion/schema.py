"""Learning the schema contract from the first dataset.

Nothing here knows the demo's columns: the target and id column are named by the caller,
every other column becomes a feature whose kind is read off its values.
"""
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import csvio, values

# Category lists longer than this are cut: the schema records the common values only and
# treats the rest as "new category" warnings, like any value it has not seen.
MAX_CATEGORIES = 200
# Distinct values counted per column while learning; past this the rarest are let go.
MAX_TRACKED = 100_000
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
    # The values that mean "no value" in this dataset's files (values.marker_list: "" first).
    missing_markers: list[str] = field(default_factory=values.marker_list)


def learn_schema(csv_path: Path, *, target: str, id_column: str = "", positive_label: str = "",
                 missing_markers: Iterable[str] | None = None) -> LearnedSchema:
    """Read the file once, block by block, keeping per column only its distinct values' counts.

    A value that is one of `missing_markers` (default values.DEFAULT_MISSING_MARKERS; the empty
    string always is one), trimmed and in any case, is a missing value: never a category, no
    obstacle to a column being numeric, never a target label or an id.
    """
    stored = values.marker_list(missing_markers)
    markers = values.marker_set(stored)
    try:
        csv = csvio.CsvFile.open(csv_path)
    except csvio.HeaderError as exc:
        raise SchemaError(str(exc)) from None
    header = csv.header
    _check_named_columns(header, target, id_column)
    profiles = {name: _Profile(markers, count=name != id_column) for name in header}
    try:
        # Dictionary-encoded: each block's checks and counts work on its distinct values only.
        for block in csv.batches(header, dictionary=header):
            for name, profile in profiles.items():
                profile.add(block.column(name))
    except pa.ArrowInvalid as exc:
        # Callers report SchemaError as a message; the full check with lines comes at ingest.
        raise SchemaError(f"the file could not be read as CSV: {exc}") from None
    if profiles[target].rows == 0:
        raise SchemaError("the file has a header but no rows")
    labels = _target_labels(profiles[target], target)
    positive = _choose_positive(labels, profiles[target], positive_label)
    negative = next(label for label in labels if label != positive)
    if id_column and profiles[id_column].empty:
        raise SchemaError(f"the id column {id_column!r} has {profiles[id_column].missing_words()}")
    features = [_feature(name, profiles[name]) for name in header if name not in (target, id_column)]
    if not features:
        raise SchemaError("the file has no feature columns besides the target and id")
    return LearnedSchema(target, positive, negative, id_column, features, stored)


class _Profile:
    """What schema learning needs of one column: rows, missing values (empty or a marker), whether
    every other value is a number, and (unless `count` is off, as for ids) how often each other
    trimmed value occurs."""

    def __init__(self, markers: frozenset[str], *, count: bool = True):
        self.markers = markers
        self.rows = 0
        self.empty = 0  # missing values: empty or a marker
        self.missing: Counter = Counter()  # the markers as written (trimmed), "" for empty
        self.numbers = True
        self.counts: Counter | None = Counter() if count else None

    def add(self, column: pa.Array) -> None:
        self.rows += len(column)
        names = pc.utf8_trim_whitespace(column.dictionary)
        used = np.bincount(column.indices.to_numpy(zero_copy_only=False), minlength=len(names))
        missing = values.missing_mask(names, self.markers).to_numpy(zero_copy_only=False)
        self.empty += int(used[missing].sum())
        seen = missing & (used > 0)
        if seen.any():
            for name, n in zip(pc.filter(names, pa.array(seen)).to_pylist(), used[seen].tolist()):
                self.missing[name] += n
        present = pc.filter(names, pa.array(~missing & (used > 0)))
        if self.numbers and len(present) and not pc.all(values.number_mask(present)).as_py():
            self.numbers = False
        if self.counts is not None:
            for name, n, gone in zip(names.to_pylist(), used.tolist(), missing.tolist()):
                if n and not gone:
                    self.counts[name] += n
            if len(self.counts) > MAX_TRACKED:
                # A column of this many distinct values is a number or an id, not a category;
                # its commonest values are all that could ever become categories.
                self.counts = Counter(dict(self.counts.most_common(MAX_TRACKED // 2)))

    def missing_words(self) -> str:
        """"3 empty values" or "12 missing values ('NA' ×10, '' ×2)", for a message."""
        if set(self.missing) == {""}:
            return f"{self.empty:,} empty value(s)"
        shown = ", ".join(f"{value!r} ×{n:,}" for value, n in self.missing.most_common(5))
        return f"{self.empty:,} missing value(s) ({shown})"


def _check_named_columns(header: list[str], target: str, id_column: str) -> None:
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise SchemaError(f"duplicated column names: {', '.join(duplicated)}")
    for role, name in (("target", target), ("id", id_column)):
        if name and name not in header:
            raise SchemaError(f"the {role} column {name!r} is not in the file; its columns are: {', '.join(header)}")
    if id_column and id_column == target:
        raise SchemaError("the id column and the target column must differ")


def _target_labels(profile: _Profile, target: str) -> list[str]:
    if profile.empty:
        raise SchemaError(f"the target column {target!r} has {profile.missing_words()}; every row needs a label "
                          "(empty cells and the missing-value markers, see --missing-values, are not labels)")
    labels = sorted(profile.counts)
    if len(labels) != 2:
        shown = ", ".join(map(repr, labels[:10]))
        raise SchemaError(f"the target column {target!r} must have exactly two labels, found {len(labels)}: {shown}")
    return labels


def _choose_positive(labels: list[str], profile: _Profile, requested: str) -> str:
    if requested:
        if requested not in labels:
            raise SchemaError(f"--positive-label {requested!r} is not one of the target's labels {labels}")
        return requested
    for label in labels:
        if label.strip().lower() in POSITIVE_WORDS:
            return label
    # No conventional name: the rarer class is the one people predict (churners, fraud, ...).
    return min(labels, key=lambda label: (profile.counts[label], label))


def _feature(name: str, profile: _Profile) -> dict:
    if profile.numbers and profile.rows > profile.empty:
        return {"name": name, "kind": "numeric"}
    common = sorted(profile.counts.items(), key=lambda item: (-item[1], item[0]))[:MAX_CATEGORIES]
    return {"name": name, "kind": "categorical", "categories": sorted(value for value, _ in common)}
