"""Reading CSV files with pyarrow, in blocks, every column as text first.

Values are read as strings and converted by us, so one bad cell is a counted problem with
its line and column rather than an exception that hides every other problem.
"""
import codecs
import csv
import io
import queue
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

DELIMITERS = (",", ";", "\t")
# pyarrow's streaming reader parses some forty blocks ahead of its consumer, so its block
# size, not the file's size, sets the memory an ingest needs (about 25 MB at 512 KB). Blocks
# are then joined into batches of about CHECK_BYTES, so per-batch overhead stays small.
BLOCK_SIZE = 512 << 10
CHECK_BYTES = 2 << 20
SNIFF_BYTES = 1 << 16
SCAN_CHUNK = 8 << 20
# Files people upload by mistake, recognised by their first bytes (not all of them hold a NUL early).
MAGIC = {
    b"\x1f\x8b": "gzip-compressed",
    b"PK\x03\x04": "a ZIP archive (an Excel .xlsx file is one)",
    b"\x89PNG": "a PNG image",
    b"%PDF": "a PDF document",
    b"\xd0\xcf\x11\xe0": "an old Excel/Office file",
    b"BZh": "bzip2-compressed",
    b"\xfd7zXZ": "xz-compressed",
    b"7z\xbc\xaf": "a 7-Zip archive",
}


class HeaderError(ValueError):
    def __init__(self, code: str, message: str, *, line: int | None = None):
        super().__init__(message)
        self.code = code
        self.line = line


def sniff(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(SNIFF_BYTES)


def read_header(path: Path) -> tuple[list[str], str]:
    """The header's column names and the file's delimiter (comma, semicolon or tab)."""
    head = sniff(path)
    return parse_header(head, whole=len(head) < SNIFF_BYTES)


def parse_header(head: bytes, *, whole: bool, delimiter: str | None = None) -> tuple[list[str], str]:
    """read_header on the first bytes of a file (`whole` when they are the whole file); the
    delimiter is the header's commonest of DELIMITERS unless given."""
    if not head:
        raise HeaderError("empty_file", "the file is empty")
    for magic, kind in MAGIC.items():
        if head.startswith(magic):
            raise HeaderError("binary", f"the file is {kind}, not a CSV text file", line=1)
    if b"\x00" in head:
        nul = head.index(b"\x00")
        raise HeaderError("binary", "the file is binary, not a CSV text file (it contains NUL bytes)", line=head.count(b"\n", 0, nul) + 1)
    if head.startswith(codecs.BOM_UTF8):
        head = head[len(codecs.BOM_UTF8):]
    try:
        # A multi-byte character may be cut at the end of the sniffed block; that is fine,
        # unless the block is the whole file.
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=whole)
    except UnicodeDecodeError as exc:
        line = head[: exc.start].count(b"\n") + 1
        raise HeaderError("encoding", f"the file is not UTF-8 text (line {line}, byte {exc.start}); save it as UTF-8", line=line) from None
    first_line = text.splitlines()[0] if text.strip() else ""
    if not first_line.strip():
        raise HeaderError("empty_file", "the file has no header row")
    delimiter = delimiter or max(DELIMITERS, key=first_line.count)
    header = next(csv.reader(io.StringIO(first_line), delimiter=delimiter))
    header = [name.strip() for name in header]
    if any(not name for name in header):
        position = [i for i, name in enumerate(header, start=1) if not name][0]
        raise HeaderError("header", f"the header has an empty column name (column {position})", line=1)
    return header, delimiter


def read_options(header: list[str]) -> pacsv.ReadOptions:
    return pacsv.ReadOptions(column_names=header, skip_rows=1, block_size=BLOCK_SIZE)


# Columns with few distinct values (categories, labels) can be read dictionary-encoded: the
# parser then hands over each distinct string once plus an index per row, and counting,
# trimming and checking work on the few distinct strings instead of on every row.
DICTIONARY = pa.dictionary(pa.int32(), pa.string())


def convert_options(columns: list[str], *, check_utf8: bool = True, dictionary=()) -> pacsv.ConvertOptions:
    types = {name: pa.string() for name in columns}
    types.update({name: DICTIONARY for name in dictionary})
    return pacsv.ConvertOptions(
        column_types=types,
        include_columns=columns,
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
        check_utf8=check_utf8,
    )


def stream_batches(
    path: Path, *, header: list[str], delimiter: str, columns: list[str], on_bad_row: Callable | None = None,
    utf8_checked: bool = False, dictionary=(),
) -> Iterator[pa.RecordBatch]:
    """Record batches of `columns` as strings, in file order; rows with the wrong number of
    fields go to on_bad_row.

    Columns named in `dictionary` come dictionary-encoded (DICTIONARY), the rest as plain
    strings; no value is ever null. One pyarrow streaming reader parses the file on a thread
    of its own, ahead of the caller, so parsing overlaps the caller's work on the previous
    batch. Pass utf8_checked=True when a ByteScanner has already checked the whole file, so the
    parser need not do it again.
    """
    parse = pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True, invalid_row_handler=on_bad_row)
    convert = convert_options(columns, check_utf8=not utf8_checked, dictionary=dictionary)
    with open(path, "rb") as fh:
        reader = pacsv.open_csv(_NoCarriageReturnAtEnd(fh), read_options=read_options(header), parse_options=parse,
                                convert_options=convert)
        yield from read_ahead(_joined_batches(reader), name="csv-reader")


class _NoCarriageReturnAtEnd(io.RawIOBase):
    """The file, read so that no read ends in a carriage return (it waits for the next read).

    pyarrow's CSV reader drops the line feed of a CRLF inside a quoted value when its input
    blocks split the pair: it takes a block's leading LF after a block ending in CR for the
    rest of a line end (apache/arrow#51368, open in pyarrow 26). The reader takes each read as
    one block, so holding the CR back keeps the pair together.
    """

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.held = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.held + self.raw.read(max(len(buffer) - len(self.held), 0))
        self.held = b""
        if len(data) > 1 and data.endswith(b"\r"):
            data, self.held = data[:-1], b"\r"
        buffer[:len(data)] = data
        return len(data)


def _joined_batches(reader: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    pending, size = [], 0
    for batch in reader:
        pending.append(batch)
        size += batch.nbytes
        if size >= CHECK_BYTES:
            yield _joined(pending)
            pending, size = [], 0
    if pending:
        yield _joined(pending)


_END = object()


def read_ahead(items: Iterator, depth: int = 2, *, name: str = "read-ahead") -> Iterator:
    """Iterate `items` on a thread of its own, at most `depth` items ahead of the consumer.

    The one producer/consumer hand-over of ingestion: the parser runs ahead of the checks
    (stream_batches), the checks ahead of the Parquet writer (validation). pyarrow works with
    the GIL released, so this is real parallelism. An error in the producer is raised in the
    consumer; a consumer that stops early stops the producer, which closes `items`.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as exc:  # handed to the consumer
            put((_END, exc))
        finally:
            if hasattr(items, "close"):
                items.close()  # a generator's own clean-up (its file, its own reader thread) runs now, not at collection

    producer = threading.Thread(target=produce, name=name, daemon=True)
    producer.start()
    try:
        while True:
            item, error = ready.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        producer.join()


def _joined(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    filled = [batch for batch in batches if batch.num_rows]  # a block of skipped rows comes out empty
    if len(filled) <= 1:
        return filled[0] if filled else batches[0]
    return pa.Table.from_batches(filled).combine_chunks().to_batches()[0]


class BrokenRow(Exception):
    """The csv module gave up on a row (a quote left open); `line` is where that row starts."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line


def _rows_with_lines(path: Path, *, delimiter: str, strict: bool = False) -> Iterator[tuple[int, list[str]]]:
    """Each row after the header with the line it starts on (a quoted value may span lines);
    raises BrokenRow where the csv module gives up."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter, strict=strict)
        next(reader, None)
        end = reader.line_num
        try:
            for row in reader:
                yield end + 1, row
                end = reader.line_num
        except csv.Error as exc:
            # The reader stops where it noticed the problem, often the end of the file for an
            # unclosed quote; the row that went wrong started on the line after the last good one.
            raise BrokenRow(end + 1, str(exc)) from None


def locate_ragged_rows(path: Path, *, delimiter: str, expected: int, limit: int) -> tuple[list[dict], int]:
    """Line numbers of rows with the wrong number of fields (a slow pass, run only on bad files)."""
    found, total = [], 0
    try:
        for line, row in _rows_with_lines(path, delimiter=delimiter, strict=True):
            if len(row) != expected and row:
                total += 1
                if len(found) < limit:
                    found.append({"line": line, "fields": len(row)})
    except BrokenRow as exc:
        total += 1
        found.append({"line": exc.line, "fields": None, "error": str(exc)})
    return found, total


def record_lines(path: Path, *, delimiter: str, expected: int, records: set[int]) -> dict[int, int]:
    """The line each of the given records (0-based, as the parser numbers rows) starts on.

    The parser skips blank lines and rows with the wrong number of fields and lets a quoted
    value run over several lines, so its row numbers are not line numbers. A slow pass, run
    only on refused files, and only as far as the last record asked for.
    """
    found: dict[int, int] = {}
    wanted = sorted(records)
    index = 0
    try:
        for line, row in _rows_with_lines(path, delimiter=delimiter):
            if len(found) == len(wanted):
                break
            if len(row) != expected:
                continue
            if index == wanted[len(found)]:
                found[index] = line
            index += 1
    except BrokenRow:
        pass
    return found


def field_index(line_text: bytes, delimiter: str) -> int:
    """Which field (0-based) the end of `line_text` falls in, minding quoted delimiters."""
    quoted, index, sep = False, 0, delimiter.encode()[0]
    for byte in line_text:
        if byte == 0x22:
            quoted = not quoted
        elif byte == sep and not quoted:
            index += 1
    return index


@dataclass
class ByteScan:
    delimiter: str
    problems: list[dict]  # the first `limit` problems, each with its line and 0-based field
    counts: Counter  # every problem, by code
    header: list[str] | None = None  # the header's names, read off the first bytes (None: they are no header)

    @property
    def readable(self) -> bool:
        """Text to the end: no NUL byte, no invalid UTF-8 (the scan stops at the first of either)."""
        return not (self.counts["binary"] or self.counts["encoding"])


@dataclass(frozen=True)
class CsvFile:
    """A CSV file and what is known of it, learned once and handed on to whatever reads it, so
    nobody sniffs its header or scans its bytes again: the header's names, the delimiter and
    (CsvFile.scanned) the byte scan of the whole file."""

    path: Path
    header: list[str]
    delimiter: str
    scan: ByteScan | None = None

    @classmethod
    def open(cls, path: Path) -> "CsvFile":
        """The file with its header, read off its first bytes; HeaderError when they are none."""
        return cls(path, *read_header(path))

    @classmethod
    def scanned(cls, path: Path, *, scan: ByteScan | None = None, limit: int) -> "CsvFile":
        """The file with its byte scan: `scan` when a ByteScanner saw the bytes as they were
        written, else a scan made now, in one pass that reads the header too. HeaderError when
        the first bytes are no CSV header."""
        if scan is None or scan.header is None:
            scanner = _fed_from(path, ByteScanner(path, limit=limit))
            scan = scanner.finish()
            if scan is None:
                raise scanner.header_error
        return cls(path, scan.header, scan.delimiter, scan)

    def batches(self, columns: list[str], *, on_bad_row: Callable | None = None, dictionary=()) -> Iterator[pa.RecordBatch]:
        """stream_batches of the file; the parser leaves the UTF-8 check to a scan that made it."""
        return stream_batches(self.path, header=self.header, delimiter=self.delimiter, columns=columns, on_bad_row=on_bad_row,
                              utf8_checked=self.scan is not None and self.scan.readable, dictionary=dictionary)

    def ragged_rows(self, *, limit: int) -> tuple[list[dict], int]:
        return locate_ragged_rows(self.path, delimiter=self.delimiter, expected=len(self.header), limit=limit)

    def lines_of(self, records: set[int]) -> dict[int, int]:
        return record_lines(self.path, delimiter=self.delimiter, expected=len(self.header), records=records)


def scan_bytes(path: Path, *, delimiter: str | None = None, limit: int) -> ByteScan | None:
    """ByteScanner over the whole of a file."""
    return _fed_from(path, ByteScanner(path, delimiter=delimiter, limit=limit)).finish()


def _fed_from(path: Path, scanner: "ByteScanner") -> "ByteScanner":
    with open(path, "rb") as fh:
        while not scanner.done and (chunk := fh.read(SCAN_CHUNK)):
            scanner.feed(chunk)
    return scanner


class ByteScanner:
    """One pass over the raw bytes, fed in chunks, for what the CSV parser cannot see or would hide.

    Finds NUL bytes (binary content) and invalid UTF-8, stopping at the first one, and lists
    stray quotes (all counted). It reads the header from the first bytes (the scan carries it on,
    see CsvFile) and, without a delimiter, learns the delimiter there; it then gives up
    (finish() returns None, header_error says why) on a file whose header cannot be read. A
    problem's line is counted from `path`, which must hold every byte fed so far.
    """

    def __init__(self, path: Path, *, delimiter: str | None = None, limit: int):
        self.path, self.delimiter, self.limit = path, delimiter, limit
        self.header: list[str] | None = None
        self.header_error: HeaderError | None = None
        self.problems: list[dict] = []
        self.counts: Counter = Counter()
        self.skip: int | None = None  # the length of a BOM, once the first bytes are in
        self.offset = 0  # where the carried-over bytes start, in bytes after any BOM
        self.carry = b""
        self.done = False
        # Lines are counted only once there is a problem to place: clean files never pay for it.
        self.lines_before: int | None = None

    def feed(self, chunk: bytes) -> None:
        if self.done or not chunk:
            return
        data = self.carry + chunk
        if self.skip is None or self.delimiter is None:
            if len(data) < SNIFF_BYTES:
                self.carry = data  # the header and the BOM are judged on the first bytes
                return
            self._start(data)
            if self.done:
                return
            data = data[self.skip:]
        self._scan(data, _safe_end(data))

    def finish(self) -> ByteScan | None:
        if not self.done and (self.skip is None or self.delimiter is None):
            self._start(self.carry)
            self.carry = self.carry[self.skip or 0:]
        if not self.done and self.carry:
            self._scan(self.carry, len(self.carry))
        if self.delimiter is None:
            return None
        return ByteScan(self.delimiter, self.problems, self.counts, self.header)

    def _start(self, head: bytes) -> None:
        self.skip = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
        try:
            self.header, self.delimiter = parse_header(head[:SNIFF_BYTES], whole=len(head) < SNIFF_BYTES, delimiter=self.delimiter)
        except HeaderError as exc:
            self.header_error = exc
            self.done = self.delimiter is None  # with a delimiter given, the scan goes on and places the problem

    def _scan(self, data: bytes, end: int) -> None:
        """Scan data[:end] and carry the rest over to the next chunk."""
        self.carry = data[end:]
        nul = data.find(b"\x00", 0, end)
        if nul >= 0:
            self._add("binary", data, nul, "the file is binary, not a CSV text file (it contains NUL bytes)")
            self.done = True
            return
        if not data.isascii():
            try:
                codecs.utf_8_decode(memoryview(data)[:end], "strict", True)
            except UnicodeDecodeError as exc:
                self._add("encoding", data, exc.start, f"byte 0x{data[exc.start]:02x} is not UTF-8 text; save the file as UTF-8")
                self.done = True
                return
        for at in stray_quotes(data, end, self.delimiter):
            self._add("bad_quoting", data, at,
                      "a quote inside a field that is not quoted, or text after a closing quote; "
                      "quote the whole field and double the quotes inside it")
        if self.lines_before is not None:
            self.lines_before += data.count(b"\n", 0, end)
        self.offset += end

    def _add(self, code: str, data: bytes, at: int, message: str) -> None:
        self.counts[code] += 1
        if len(self.problems) < self.limit:
            if self.lines_before is None:
                self.lines_before = _count_lines(self.path, self.skip, self.offset)
            start = data.rfind(b"\n", 0, at) + 1
            self.problems.append({"code": code, "line": self.lines_before + data.count(b"\n", 0, at) + 1,
                                  "field": field_index(data[start:at], self.delimiter), "message": message})


def _count_lines(path: Path, skip: int, size: int) -> int:
    """Line breaks in the `size` bytes after the first `skip`."""
    lines = 0
    with open(path, "rb") as fh:
        fh.seek(skip)
        while size > 0:
            chunk = fh.read(min(SCAN_CHUNK, size))
            if not chunk:
                break
            lines += chunk.count(b"\n")
            size -= len(chunk)
    return lines


def stray_quotes(data: bytes, end: int, delimiter: str) -> list[int]:
    """Positions of runs of quotes, starting before `end`, with ordinary text on both sides.

    Inside a quoted field quotes come in pairs (""), so an odd run there is a field closed
    too early ("ab"c, which pyarrow would silently read as abc); in an unquoted field it is a
    quote that belongs in a quoted field, doubled. The start and the end of `data` count as
    line breaks.
    """
    first = data.find(b'"', 0, end)
    if first < 0:
        return []
    # Byte masks over the stretch from the byte before the first quote: cheaper than
    # following each quote when a file quotes every field.
    low = max(first - 1, 0)
    text = np.frombuffer(data, dtype=np.uint8)[low:]
    quote = text == 0x22
    ordinary = ~(quote | (text == 0x0A) | (text == 0x0D) | (text == ord(delimiter)))
    if low == 0:
        ordinary[0] &= not quote[0]
    run_start = quote[1:] & ordinary[:-1]  # at i: a quote at i + 1 after ordinary text
    found = (np.flatnonzero(run_start[:-1] & ordinary[2:]) + 1).tolist()
    size = len(text)
    for start in (np.flatnonzero(run_start[:-1] & quote[2:]) + 1).tolist():  # "" and longer runs: rare
        stop = start
        while stop < size and quote[stop]:
            stop += 1
        if (stop - start) % 2 and stop < size and ordinary[stop]:
            found.append(start)
    return sorted(at + low for at in found if at + low < end)


def _safe_end(data: bytes) -> int:
    """Where to cut a chunk so that no UTF-8 character and no run of quotes is split: before
    the character that precedes a trailing run of quotes (the next chunk needs it to judge
    that run), or before the last character."""
    end = len(data) - 1
    while end > 0 and data[end] == 0x22:
        end -= 1
    lead = end
    while lead > 0 and 0x80 <= data[lead] < 0xC0 and end - lead < 3:
        lead -= 1
    return lead
