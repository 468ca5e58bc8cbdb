"""Checking a CSV against the schema contract and converting it to typed Parquet, block by block.

A file is accepted whole or refused whole: `validate_and_convert` always reads to the end so
the report counts every problem (and lists the first 100 with line and column), and the
caller keeps the Parquet output only when the report has no errors.
"""
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import csvio, hashing
from . import values as value_rules
from .buffers import string_buffers
from .stats import StatsAccumulator, value_counts

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
    "not_finite": "inf or a number too large in a numeric column",
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
        kinds = ", ".join(f"{CODES.get(code, code).lower()} ×{n}" for code, n in self._counts_in_order())
        return f"refused: {self.error_count:,} problem(s): {kinds}"

    def _counts_in_order(self) -> list[tuple[str, int]]:
        """Most frequent first, ties in CODES order: the same however the file was cut up to be read."""
        order = {code: i for i, code in enumerate(CODES)}
        return sorted(self.error_counts.items(), key=lambda item: (-item[1], order.get(item[0], len(order)), item[0]))

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "delimiter": self.delimiter,
            "columns": self.columns,
            "error_count": self.error_count,
            "error_counts": dict(self._counts_in_order()),
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


def byte_scanner(raw: Path) -> csvio.ByteScanner:
    """A scanner to feed the bytes of `raw` as they are written; its scan goes to validate_and_convert."""
    return csvio.ByteScanner(raw, limit=MAX_LISTED)


def validate_and_convert(raw: Path, schema, parquet_out: Path, *, scan: csvio.ByteScan | None = None) -> tuple[Report, dict]:
    """Check `raw` against `schema`, writing typed rows to `parquet_out`; returns the report and column stats.

    `scan` is the byte scan of `raw` when it was made as the file was written (byte_scanner):
    its header, delimiter and problems are then taken as they are, and the file is read once,
    to parse it. Without one the file is scanned first.
    """
    report = Report()
    try:
        csv = csvio.CsvFile.scanned(raw, scan=scan, limit=MAX_LISTED)
    except csvio.HeaderError as exc:
        report.error(exc.code, str(exc), line=exc.line)
        return report, {}
    report.delimiter, report.columns = csv.delimiter, csv.header
    if not _check_header(csv.header, schema, report) or not _check_bytes(csv, report):
        return report, {}
    checker = _check_rows(csv, schema, report, parquet_out=parquet_out)
    if report.ok and report.rows == 0:
        report.error("no_rows", "the file has a header but no rows")
    checker.finish()
    if not report.ok:
        _locate(csv, report)
    return report, checker.stats.as_dict()


def _check_rows(csv: csvio.CsvFile, schema, report: Report, *, parquet_out: Path) -> "_BlockChecker":
    """Read every row, check it, and write the typed rows while the report has no errors.

    Three threads: the parser runs ahead of the checks, and the checks ahead of the writer,
    so writing one block overlaps checking the next (csvio.read_ahead, both).
    """
    checker = _BlockChecker(schema, report)
    skipped = _SkippedRows()
    encoded = schema.categorical_features + [schema.target]

    def checked():
        for block in csv.batches(schema.columns, on_bad_row=skipped, dictionary=encoded):
            typed = checker.check(block)
            if report.ok and not skipped.count:
                yield typed

    try:
        with _parquet_writer(parquet_out, checker.block_schema, dictionary=encoded, split=schema.numeric_features) as writer:
            for typed in csvio.read_ahead(checked(), name="csv-checker"):
                writer.write_batch(typed)
    except pa.ArrowInvalid as exc:
        _report_arrow_error(exc, csv, report)
    else:
        if skipped.count:
            _report_ragged(csv, report)
    return checker


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


def _check_bytes(csv: csvio.CsvFile, report: Report) -> bool:
    """Report the scan's NUL bytes, invalid UTF-8 and stray quotes; False when the file cannot be read as text at all."""
    header, scan = csv.header, csv.scan
    for problem in scan.problems:
        column = header[problem["field"]] if problem["field"] < len(header) else None
        report.error(problem["code"], problem["message"], line=problem["line"], column=column)
    for code, n in scan.counts.items():
        report.error_counts[code] += n - sum(1 for p in scan.problems if p["code"] == code)
    return scan.readable


class _SkippedRows:
    """pyarrow's handler for rows with the wrong number of fields: count them, skip them.
    (Keeping the rows themselves would cost memory in proportion to a badly broken file.)
    Several parser threads may call it at once."""

    def __init__(self):
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, row) -> str:
        with self._lock:
            self.count += 1
        return "skip"


def _parquet_writer(path: Path, schema: pa.Schema, *, dictionary: list[str], split: list[str]) -> pq.ParquetWriter:
    # Dictionary encoding only where it pays (categories, labels), not for numbers and ids,
    # and no column statistics (nothing filters on them): a third less work writing.
    # Those columns arrive dictionary-encoded already, so the writer takes their dictionaries
    # as they are. The Arrow schema is not stored: Parquet's own types then read back as
    # arrow_schema's plain strings and floats, as if the columns had been written decoded.
    # Numbers are stored byte-stream-split: snappy then compresses them in about half the
    # time, into a smaller file.
    return pq.ParquetWriter(path, schema, compression="snappy", use_dictionary=dictionary, write_statistics=False,
                            store_schema=False, use_byte_stream_split=split or False)


MESSAGES = {
    "not_finite": "{value!r} is not a finite number",
    "not_a_number": "{value!r} is not a number",
    "empty_label": "the target is empty",
    "unknown_label": "{value!r} is not a target label ({labels})",
    "empty_id": "the id is empty",
}


class _BlockChecker:
    """Vectorised checks of one block of rows; keeps the running row count and stats."""

    def __init__(self, schema, report: Report):
        self.schema = schema
        self.report = report
        self.stats = StatsAccumulator(schema)
        # arrow_schema, but with categories and labels kept dictionary-encoded (as read).
        self.encoded = set(schema.categorical_features) | {schema.target}
        self.block_schema = pa.schema([pa.field(f.name, csvio.DICTIONARY) if f.name in self.encoded else f for f in arrow_schema(schema)])
        self.numeric = set(schema.numeric_features)
        # The schema's missing-value markers (NA, N/A, ... and the empty string), trimmed and lower-cased.
        self.markers = schema.markers
        # A label that is a marker can only be an old schema's (learning refuses them): it stays a label.
        self.target_markers = self.markers - {label.strip().lower() for label in schema.labels}
        self.marker_chars = max(map(len, self.markers))
        self.order = {name: i for i, name in enumerate(schema.columns)}
        self.labels = pa.array(schema.labels, pa.string())
        self.label_text = " or ".join(map(repr, schema.labels))
        self.id_hashes: list[np.ndarray] = []  # 8 bytes a row, not the ids themselves
        self.duplicate_ids = 0
        self.found: list[tuple] = []
        self.counts: dict[str, list[tuple[str, int]]] = {}

    def check(self, block: pa.RecordBatch) -> pa.RecordBatch:
        first_record = self.report.rows  # the parser's 0-based row number of the block's first row
        self.report.rows += block.num_rows
        self.found = []
        self.counts = {}
        arrays = []
        for name in self.schema.columns:
            values = block.column(name)
            if name in self.numeric:
                values = self._numeric(name, values)
            elif name == self.schema.target:
                values = self._target(values)
            elif name == self.schema.id_column:
                values = self._ids(values)
            else:
                values = self._categorical(name, values)
            arrays.append(values)
        self._list_found(first_record)
        typed = pa.RecordBatch.from_arrays(arrays, schema=self.block_schema)
        self.stats.add(typed, counts=self.counts)
        return typed

    def _numeric(self, name: str, values: pa.Array) -> pa.Array:
        # By values.number's rule: a clean block costs one cast; markers (NA, ...) are missing values.
        reading = value_rules.read_numbers(values, self.markers)
        if reading.not_finite is not None:
            self._problem("not_finite", reading.not_finite, values, name)
            self._problem("not_a_number", reading.not_a_number, values, name)
        return reading.numbers

    def _target(self, values: pa.Array) -> pa.Array:
        # Read dictionary-encoded: counting works on the indices, not the text.
        counts = value_counts(values)
        if all(value in self.schema.labels for value, _ in counts):
            self.counts[self.schema.target] = counts  # the usual case: nothing to trim or report
            return _encoded(values)
        values = pc.utf8_trim_whitespace(_decoded(values))
        empty = value_rules.missing_mask(values, self.target_markers)  # "" or a marker such as NA
        unknown = pc.and_(pc.invert(pc.is_in(values, value_set=self.labels)), pc.invert(empty))
        self._problem("empty_label", empty, values, self.schema.target)
        self._problem("unknown_label", unknown, values, self.schema.target)
        return _encoded(values)

    def _ids(self, values: pa.Array) -> pa.Array:
        if _may_need_trim(values):
            values = pc.utf8_trim_whitespace(values)
        self._problem("empty_id", self._missing_ids(values), values, self.schema.id_column)
        self.id_hashes.append(np.sort(hashing.hash_strings(values)))
        return values

    def _missing_ids(self, values: pa.Array) -> pa.Array:
        """Empty ids and ids that are markers (NA); only ids as short as a marker are looked at."""
        short = pc.less_equal(pc.utf8_length(values), self.marker_chars)
        if not pc.any(short).as_py():
            return short
        return pc.and_(short, value_rules.missing_mask(values, self.markers))

    def _categorical(self, name: str, values: pa.Array) -> pa.Array:
        # values.read_texts: trimmed, empty values and markers (NA, ...) missing. The column is
        # read dictionary-encoded, so that and the counting (which the stats need anyway) work
        # on the block's distinct values and the indices, not the text.
        texts = value_rules.read_texts(values, self.markers)
        self.counts[name] = value_counts(pc.drop_null(texts) if texts.null_count else texts)
        return _encoded(texts)

    def _problem(self, code: str, mask: pa.Array, values: pa.Array, column: str) -> None:
        count = pc.sum(mask).as_py()
        if count:
            self.found.append((code, count, mask, values, column))

    def _list_found(self, first_record: int) -> None:
        """Count every problem of the block; list the earliest ones, in row order, while there is room."""
        room = MAX_LISTED - len(self.report.errors)
        candidates = []
        for code, count, mask, values, column in self.found:
            self.report.error_counts[code] += count
            if room > 0:
                for i in pc.indices_nonzero(mask).slice(0, room).to_pylist():
                    candidates.append((i, self.order[column], code, column, values))
        candidates.sort(key=lambda c: (c[0], c[1]))
        for i, _, code, column, values in candidates[:max(room, 0)]:
            value = values[i].as_py()
            if code in ("empty_label", "empty_id") and value and value.strip():
                message = f"the {'target' if code == 'empty_label' else 'id'} is {value!r}, which marks a missing value"
            else:
                message = MESSAGES[code].format(value=value, labels=self.label_text)
            record = first_record + i
            # A provisional line (header + row number); _locate corrects it for blank lines,
            # skipped rows and values that span lines.
            self.report.errors.append({"code": code, "line": record + 2, "column": column, "message": message, "_record": record})

    def finish(self) -> None:
        if self.id_hashes:
            self.duplicate_ids = hashing.count_repeats(self.id_hashes)
            self.id_hashes = []
        for feature in self.schema.features:
            if feature["kind"] != "categorical":
                continue
            known = set(feature.get("categories", []))
            unseen = Counter({value: n for value, n in self.stats.categorical[feature["name"]].items() if value not in known})
            if unseen:
                name = feature["name"]
                shown = ", ".join(f"{value!r} ×{n}" for value, n in unseen.most_common(10))
                self.report.warn("new_category", f"{name}: values not seen before: {shown}", column=name, values=dict(unseen.most_common(50)))
        if self.duplicate_ids:
            self.report.warn("duplicate_ids", f"{self.duplicate_ids} row(s) repeat an id already in the file; the last one wins", count=self.duplicate_ids)


def _decoded(values: pa.Array) -> pa.Array:
    """Plain strings from a dictionary-encoded column (as csvio reads categories and labels)."""
    if pa.types.is_dictionary(values.type):
        return values.dictionary_decode()
    return values


def _encoded(values: pa.Array) -> pa.Array:
    """The column as csvio.DICTIONARY, encoding it again if a check had to decode it."""
    if values.type == csvio.DICTIONARY:
        return values
    return pc.dictionary_encode(_decoded(values)).cast(csvio.DICTIONARY)


def _may_need_trim(values: pa.Array) -> bool:
    """False when trimming whitespace surely changes nothing: every non-empty string starts
    and ends with a visible ASCII character (whitespace, and any byte of a multi-byte
    character, lies outside 0x21-0x7e). Cheaper than trimming ids that hardly ever need it."""
    if values.null_count or not len(values) or values.type != pa.string():
        return True
    offsets, text = string_buffers(values)
    starts, ends = offsets[:-1], offsets[1:]
    filled = ends > starts
    if not filled.all():
        starts, ends = starts[filled], ends[filled]
    edges = np.concatenate((text[starts], text[ends - 1]))
    return bool(((edges < 0x21) | (edges > 0x7E)).any())


def _report_arrow_error(exc: pa.ArrowInvalid, csv: csvio.CsvFile, report: Report) -> None:
    message = str(exc)
    if "skip initial" in message.lower():
        return  # a header without a line ending and nothing after it: "no rows" follows
    if "UTF8" in message or "utf8" in message.lower():
        report.error("encoding", "the file is not UTF-8 text; save it as UTF-8", line=None)
        return
    # Usually a quote left open, which swallows the rest of the file: find where it starts.
    if not _report_ragged(csv, report, fallback=False):
        report.error("parse_error", f"the CSV could not be read: {message}")


def _report_ragged(csv: csvio.CsvFile, report: Report, *, fallback: bool = True) -> bool:
    room = max(MAX_LISTED - len(report.errors), 1)
    expected = len(csv.header)
    rows, total = csv.ragged_rows(limit=room)
    for row in rows:
        if row.get("error") or row["fields"] is None:
            report.error("bad_quoting", f"a quoted field starting on this line is not closed properly ({row.get('error')})", line=row["line"])
        else:
            report.error("ragged_row", f"{row['fields']} fields where the header has {expected}", line=row["line"])
    if total > len(rows):
        report.error_counts["ragged_row"] += total - len(rows)
    if not rows and fallback:
        report.error("bad_quoting", "a quoted field runs past the end of its row (check the quote characters)")
    return bool(rows)


def _locate(csv: csvio.CsvFile, report: Report) -> None:
    """Give the listed row problems their real line numbers, then list everything in line order."""
    records = {error["_record"] for error in report.errors if "_record" in error}
    lines = csv.lines_of(records) if records else {}
    for error in report.errors:
        record = error.pop("_record", None)
        if record in lines:
            error["line"] = lines[record]
    report.errors.sort(key=lambda error: error.get("line") or 0)
