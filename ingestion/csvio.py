"""Reading CSV files with pyarrow, in blocks, every column as text first.

Values are read as strings and converted by us, so one bad cell is a counted problem with
its line and column rather than an exception that hides every other problem.
"""
import codecs
import csv
import io
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

DELIMITERS = (",", ";", "\t")
BLOCK_SIZE = 8 << 20  # bytes per parsed block: bounds memory whatever the file's size
SNIFF_BYTES = 1 << 16
# A number as people write it in a CSV; "inf", "nan" and "1,5" are not numbers here.
NUMBER_PATTERN = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"


class HeaderError(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def sniff(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(SNIFF_BYTES)


def read_header(path: Path) -> tuple[list[str], str]:
    """The header's column names and the file's delimiter (comma, semicolon or tab)."""
    head = sniff(path)
    if not head:
        raise HeaderError("empty_file", "the file is empty")
    if b"\x00" in head:
        raise HeaderError("binary", "the file is binary, not a CSV text file (it contains NUL bytes)")
    if head.startswith(codecs.BOM_UTF8):
        head = head[len(codecs.BOM_UTF8):]
    try:
        # A multi-byte character may be cut at the end of the sniffed block; that is fine.
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as exc:
        line = head[: exc.start].count(b"\n") + 1
        raise HeaderError("encoding", f"the file is not UTF-8 text (line {line}, byte {exc.start}); save it as UTF-8") from None
    first_line = text.splitlines()[0] if text.strip() else ""
    if not first_line.strip():
        raise HeaderError("empty_file", "the file has no header row")
    delimiter = max(DELIMITERS, key=first_line.count)
    header = next(csv.reader(io.StringIO(first_line), delimiter=delimiter))
    header = [name.strip() for name in header]
    if any(not name for name in header):
        raise HeaderError("header", "the header has an empty column name")
    return header, delimiter


def is_number(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return pc.match_substring_regex(values, NUMBER_PATTERN)


def read_options(header: list[str]) -> pacsv.ReadOptions:
    return pacsv.ReadOptions(column_names=header, skip_rows=1, block_size=BLOCK_SIZE)


def convert_options(columns: list[str]) -> pacsv.ConvertOptions:
    return pacsv.ConvertOptions(
        column_types={name: pa.string() for name in columns},
        include_columns=columns,
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
        check_utf8=True,
    )


def stream_batches(
    path: Path, *, header: list[str], delimiter: str, columns: list[str], on_bad_row: Callable | None = None
) -> Iterator[pa.RecordBatch]:
    """Record batches of `columns` as strings; rows with the wrong number of fields go to on_bad_row."""
    parse = pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True, invalid_row_handler=on_bad_row)
    reader = pacsv.open_csv(path, read_options=read_options(header), parse_options=parse, convert_options=convert_options(columns))
    yield from reader


def read_all_as_strings(path: Path, *, delimiter: str, columns: list[str]) -> pa.Table:
    return pa.Table.from_batches(list(stream_batches(path, header=columns, delimiter=delimiter, columns=columns)))


def locate_ragged_rows(path: Path, *, delimiter: str, expected: int, limit: int) -> tuple[list[dict], int]:
    """Line numbers of rows with the wrong number of fields (a slow pass, run only on bad files)."""
    found, total = [], 0
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter, strict=True)
        next(reader, None)
        line = reader.line_num
        try:
            for row in reader:
                start, line = line + 1, reader.line_num
                if len(row) != expected and row:
                    total += 1
                    if len(found) < limit:
                        found.append({"line": start, "fields": len(row)})
        except csv.Error as exc:
            total += 1
            found.append({"line": reader.line_num, "fields": None, "error": str(exc)})
    return found, total
