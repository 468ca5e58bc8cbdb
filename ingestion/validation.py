"""Checking a CSV against the schema contract and converting it to typed Parquet, block by block.

A file is accepted whole or refused whole: `validate_and_convert` always reads to the end so
the report counts every problem (and lists the first 100 with line and column), and the
caller keeps the Parquet output only when the report has no errors.
"""
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import csvio
from .stats import StatsAccumulator

MAX_LISTED = 100
CODES = {
    "empty_file": "Empty file",
    "binary": "Binary content",
    "encoding": "Not UTF-8 text",
    "header": "Bad header",
    "missing_column": "Missing column",
    "duplicated_column": "Duplicated column",
    "no_rows": "Header without rows",
    "ragged_row": "Wrong number of fields",
    "bad_quoting": "Bad quoting",
    "not_a_number": "Text in a numeric column",
    "not_finite": "inf or NaN in a numeric column",
    "unknown_label": "Unknown target label",
    "empty_label": "Empty target label",
    "empty_id": "Empty id",
    "too_large": "File over the size limit",
    "parse_error": "Unreadable CSV",
}


@dataclass
class Report:
    errors: list[dict] = field(default_factory=list)
    error_counts: Counter = field(default_factory=Counter)
    warnings: list[dict] = field(default_factory=list)
    rows: int = 0
    delimiter: str = ","
    columns: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.error_counts

    @property
    def error_count(self) -> int:
        return sum(self.error_counts.values())

    def error(self, code: str, message: str, *, line: int | None = None, column: str | None = None, count: int = 1) -> None:
        self.error_counts[code] += count
        if len(self.errors) < MAX_LISTED:
            self.errors.append({"code": code, "line": line, "column": column, "message": message})

    def warn(self, code: str, message: str, **extra) -> None:
        self.warnings.append({"code": code, "message": message, **extra})

    def summary(self) -> str:
        if self.ok:
            return f"accepted: {self.rows:,} rows" + (f", {len(self.warnings)} warning(s)" if self.warnings else "")
        kinds = ", ".join(f"{CODES.get(code, code).lower()} ×{n}" for code, n in self.error_counts.most_common())
        return f"refused: {self.error_count:,} problem(s): {kinds}"

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "delimiter": self.delimiter,
            "columns": self.columns,
            "error_count": self.error_count,
            "error_counts": dict(self.error_counts),
            "errors": self.errors,
            "warnings": self.warnings,
            "summary": self.summary(),
        }


def arrow_schema(schema) -> pa.Schema:
    """The typed columns of a staged batch and of every master partition."""
    fields = []
    if schema.id_column:
        fields.append(pa.field(schema.id_column, pa.string()))
    for feature in schema.features:
        fields.append(pa.field(feature["name"], pa.float64() if feature["kind"] == "numeric" else pa.string()))
    fields.append(pa.field(schema.target, pa.string()))
    return pa.schema(fields)


def validate_and_convert(raw: Path, schema, parquet_out: Path) -> tuple[Report, dict]:
    """Check `raw` against `schema`, writing typed rows to `parquet_out`; returns the report and column stats."""
    report = Report()
    try:
        header, report.delimiter = csvio.read_header(raw)
    except csvio.HeaderError as exc:
        report.error(exc.code, str(exc))
        return report, {}
    report.columns = header
    if not _check_header(header, schema, report):
        return report, {}
    checker = _BlockChecker(schema, report)
    ragged = []
    target_schema = arrow_schema(schema)
    try:
        with pq.ParquetWriter(parquet_out, target_schema, compression="snappy") as writer:
            for block in csvio.stream_batches(
                raw, header=header, delimiter=report.delimiter, columns=schema.columns,
                on_bad_row=lambda row: ragged.append(row) or "skip",
            ):
                typed = checker.check(block)
                if report.ok and not ragged:
                    writer.write_table(pa.Table.from_batches([typed], schema=target_schema))
    except pa.ArrowInvalid as exc:
        _report_arrow_error(exc, report)
    if ragged:
        _report_ragged(raw, report, expected=len(header))
    if report.ok and report.rows == 0:
        report.error("no_rows", "the file has a header but no rows")
    checker.finish()
    return report, checker.stats.as_dict()


def _check_header(header: list[str], schema, report: Report) -> bool:
    counts = Counter(header)
    for name, n in counts.items():
        if n > 1:
            report.error("duplicated_column", f"column {name!r} appears {n} times in the header", line=1, column=name)
    for name in schema.columns:
        if name not in counts:
            report.error("missing_column", f"column {name!r} is missing", line=1, column=name)
    extra = [name for name in header if name not in schema.columns]
    if extra:
        report.warn("extra_columns", f"unknown columns ignored: {', '.join(extra)}", columns=extra)
    return report.ok


class _BlockChecker:
    """Vectorised checks of one block of rows; keeps the running line number and stats."""

    def __init__(self, schema, report: Report):
        self.schema = schema
        self.report = report
        self.stats = StatsAccumulator(schema)
        self.new_categories: dict[str, Counter] = {name: Counter() for name in schema.categorical_features}
        self.known = {f["name"]: pa.array(f.get("categories", []), pa.string()) for f in schema.features}
        self.id_hashes: list[np.ndarray] = []  # 8 bytes a row, not the ids themselves
        self.duplicate_ids = 0

    def check(self, block: pa.RecordBatch) -> pa.RecordBatch:
        first_line = self.report.rows + 2  # line 1 is the header
        self.report.rows += block.num_rows
        arrays = []
        for name in self.schema.columns:
            values = pc.utf8_trim_whitespace(block.column(name))
            if name in self.schema.numeric_features:
                values = self._numeric(name, values, first_line)
            elif name == self.schema.target:
                self._target(values, first_line)
            elif name == self.schema.id_column:
                self._ids(values, first_line)
            else:
                values = self._categorical(name, values)
            arrays.append(values)
        typed = pa.RecordBatch.from_arrays(arrays, schema=arrow_schema(self.schema))
        self.stats.add(typed)
        return typed

    def _numeric(self, name: str, values: pa.Array, first_line: int) -> pa.Array:
        empty = pc.equal(values, "")
        bad = pc.and_(pc.invert(csvio.is_number(values)), pc.invert(empty))
        self._report_rows(bad, values, first_line, name, self._numeric_problem)
        clean = pc.if_else(pc.or_(bad, empty), pa.scalar(None, pa.string()), values)
        return pc.cast(clean, pa.float64())

    @staticmethod
    def _numeric_problem(value: str) -> tuple[str, str]:
        if value.lower().lstrip("+-") in ("inf", "infinity", "nan", "na", "n/a", "null", "none"):
            return "not_finite", f"{value!r} is not a finite number"
        return "not_a_number", f"{value!r} is not a number"

    def _target(self, values: pa.Array, first_line: int) -> None:
        empty = pc.equal(values, "")
        unknown = pc.and_(pc.invert(pc.is_in(values, value_set=pa.array(self.schema.labels))), pc.invert(empty))
        target = self.schema.target
        self._report_rows(empty, values, first_line, target, lambda v: ("empty_label", "the target is empty"))
        labels = " or ".join(map(repr, self.schema.labels))
        self._report_rows(unknown, values, first_line, target, lambda v: ("unknown_label", f"{v!r} is not a target label ({labels})"))

    def _ids(self, values: pa.Array, first_line: int) -> None:
        column = self.schema.id_column
        self._report_rows(pc.equal(values, ""), values, first_line, column, lambda v: ("empty_id", "the id is empty"))
        self.id_hashes.append(pd.util.hash_array(values.to_numpy(zero_copy_only=False)))

    def _categorical(self, name: str, values: pa.Array) -> pa.Array:
        values = pc.if_else(pc.equal(values, ""), pa.scalar(None, pa.string()), values)
        unseen = pc.filter(values, pc.invert(pc.is_in(values, value_set=self.known[name], skip_nulls=True)))
        unseen = pc.drop_null(unseen)
        if len(unseen):
            for row in pc.value_counts(unseen).to_pylist():
                self.new_categories[name][row["values"]] += row["counts"]
        return values

    def _report_rows(self, mask: pa.Array, values: pa.Array, first_line: int, column: str, describe) -> None:
        count = pc.sum(mask).as_py() or 0
        if not count:
            return
        positions = pc.indices_nonzero(mask)
        room = MAX_LISTED - len(self.report.errors)
        for i in positions.slice(0, max(room, 1)).to_pylist():
            code, message = describe(values[i].as_py())
            self.report.error(code, message, line=first_line + i, column=column)
        if count > room:
            code, _ = describe(values[positions[0].as_py()].as_py())
            self.report.error_counts[code] += count - max(room, 1)

    def finish(self) -> None:
        if self.id_hashes:
            hashes = np.concatenate(self.id_hashes)
            self.duplicate_ids = len(hashes) - len(np.unique(hashes))
        for name, counter in self.new_categories.items():
            if counter:
                shown = ", ".join(f"{value!r} ×{n}" for value, n in counter.most_common(10))
                self.report.warn("new_category", f"{name}: values not seen before: {shown}", column=name, values=dict(counter.most_common(50)))
        if self.duplicate_ids:
            self.report.warn("duplicate_ids", f"{self.duplicate_ids} row(s) repeat an id already in the file; the last one wins", count=self.duplicate_ids)


def _report_arrow_error(exc: pa.ArrowInvalid, report: Report) -> None:
    message = str(exc)
    if "UTF8" in message or "utf8" in message.lower():
        report.error("encoding", "the file is not UTF-8 text; save it as UTF-8", line=None)
    elif "quote" in message.lower():
        report.error("bad_quoting", f"a quoted field is not closed: {message}")
    else:
        report.error("parse_error", f"the CSV could not be read: {message}")


def _report_ragged(raw: Path, report: Report, *, expected: int) -> None:
    room = max(MAX_LISTED - len(report.errors), 1)
    rows, total = csvio.locate_ragged_rows(raw, delimiter=report.delimiter, expected=expected, limit=room)
    for row in rows:
        if row.get("error") or row["fields"] is None:
            report.error("bad_quoting", f"bad quoting: {row.get('error')}", line=row["line"])
        else:
            report.error("ragged_row", f"{row['fields']} fields where the header has {expected}", line=row["line"])
    if total > len(rows):
        report.error_counts["ragged_row"] += total - len(rows)
    if not rows:
        report.error("bad_quoting", "a quoted field runs past the end of its row (check the quote characters)")
