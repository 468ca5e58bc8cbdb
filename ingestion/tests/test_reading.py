"""Reading a CSV: every valid file is read as Python's csv module reads it, and the byte scan
finds what the parser cannot report, however the bytes arrive."""
import csv
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestion import csvio
from ingestion.models import DataBatch
from ingestion.schema import learn_schema
from ingestion.services import create_schema, ingest_path

NOTES = ['plain', '"two\nlines"', '"a, comma"', '"say ""hi"""', '"crlf\r\nlines"', '""', '"""quoted"""', "x"]


def tricky_csv(rows: int) -> bytes:
    """Quoted values over several lines, with commas and doubled quotes; blank lines; CRLF ends."""
    lines = ["id,note,amount,label"]
    for i in range(rows):
        lines.append(f"r{i},{NOTES[i % len(NOTES)]},{i * 1.5},{'yes' if i % 3 else 'no'}")
        if i % 17 == 0:
            lines.append("")
    return ("\r\n".join(lines) + "\r\n").encode()


def read_rows(path, *, dictionary=()) -> list[list[str]]:
    """The rows as our reader gives them, with small blocks so that a file spans several."""
    header, delimiter = csvio.read_header(path)
    table = pa.Table.from_batches(list(csvio.stream_batches(path, header=header, delimiter=delimiter, columns=header,
                                                            dictionary=dictionary)))
    columns = [table.column(name).to_pylist() for name in header]
    return [list(row) for row in zip(*columns)]


def rows_as_the_csv_module_reads_them(data: bytes, delimiter: str) -> list[list[str]]:
    text = data.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    return [row for row in rows[1:] if row]  # blank lines are not rows


# Values with what makes CSV hard: delimiters, quotes, line breaks (LF and CRLF) and spaces inside.
VALUE = st.lists(st.sampled_from([*'ab c,;\t"\n\r\u00e9\u4e2d', "\r\n", '""']), max_size=10).map("".join)


def write_csv(rows: list[list[str]], *, delimiter: str, bom: bool, line_end: str, quote_all: bool) -> bytes:
    """RFC 4180 as spreadsheets write it: a field is quoted when it holds the delimiter, a quote
    or a line break (or always), with its quotes doubled."""
    def field(value: str) -> str:
        if quote_all or any(c in value for c in (delimiter, '"', "\r", "\n")):
            return '"' + value.replace('"', '""') + '"'
        return value

    text = "".join(delimiter.join(map(field, row)) + line_end for row in rows)
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.lists(st.lists(VALUE, min_size=3, max_size=3), min_size=1, max_size=40),
    delimiter=st.sampled_from([",", ";", "\t"]),
    bom=st.booleans(),
    line_end=st.sampled_from(["\n", "\r\n"]),
    quote_all=st.booleans(),
)
def test_every_valid_file_is_read_exactly_as_the_csv_module_reads_it(body, delimiter, bom, line_end, quote_all, tmp_path, monkeypatch):
    monkeypatch.setattr(csvio, "BLOCK_SIZE", 64)  # many blocks, so values also cross block edges
    # A row of one empty field is a blank line to every reader: give each row a plain first field.
    rows = [["id", "note", "amount"]] + [[f"r{i}", *row[1:]] for i, row in enumerate(body)]
    data = write_csv(rows, delimiter=delimiter, bom=bom, line_end=line_end, quote_all=quote_all)
    path = tmp_path / "property.csv"
    path.write_bytes(data)

    expected = rows_as_the_csv_module_reads_them(data, delimiter)
    assert expected == rows[1:]  # the file says what we meant
    assert read_rows(path) == expected
    assert read_rows(path, dictionary=["note"]) == expected
    scan = csvio.scan_bytes(path, delimiter=delimiter, limit=100)
    assert not scan.counts, scan.problems  # a valid file has nothing for the byte scan to report


def test_a_file_of_quoted_line_breaks_and_blank_lines_keeps_its_rows_in_order(tmp_path):
    path = tmp_path / "tricky.csv"
    path.write_bytes(data := tricky_csv(400))

    rows = read_rows(path)

    assert rows == rows_as_the_csv_module_reads_them(data, ",")
    assert len(rows) == 400
    assert [row[1] for row in rows[:8]] == ["plain", "two\nlines", "a, comma", 'say "hi"', "crlf\r\nlines", "", '"quoted"', "x"]


@pytest.fixture
def schema(cl_home, db, demo):
    return create_schema(learn_schema(demo.write("initial.csv", slice(0, 2000)), target="churn", id_column="customer_id"))


def test_a_staged_file_holds_each_value_as_the_csv_module_reads_it(schema, demo, cl_home):
    frame = demo.frame.iloc[2000:3500].copy()
    frame.iloc[::7, frame.columns.get_loc("contract")] = "Month-to-month, renewed\nby phone"  # quoted, over two lines
    frame.iloc[::11, frame.columns.get_loc("customer_id")] = [f'id "{i}", x' for i in range(len(frame.iloc[::11]))]
    path = demo.write("batch.csv", frame=frame, lineterminator="\r\n")

    batch = ingest_path(path)

    assert batch.status == DataBatch.Status.STAGED, batch.errors
    table = pq.read_table(cl_home / batch.parquet_path)
    expected = rows_as_the_csv_module_reads_them(path.read_bytes(), ",")
    header = list(frame.columns)
    for name in ("customer_id", "contract", "churn"):
        assert table.column(name).to_pylist() == [row[header.index(name)] for row in expected]
    assert table.column("tenure").to_pylist() == [float(row[header.index("tenure")]) for row in expected]


def test_a_refused_file_names_every_kind_of_problem_with_its_line(schema, demo):
    frame = demo.frame.iloc[2000:3500].copy().astype(str)
    frame.iloc[100, frame.columns.get_loc("tenure")] = "twelve"
    frame.iloc[700, frame.columns.get_loc("monthly_charges")] = "Infinity"
    frame.iloc[1400, frame.columns.get_loc("churn")] = "Maybe"
    lines = demo.write("bad.csv", frame=frame).read_text().splitlines(keepends=True)
    lines[900] = lines[900].rstrip("\n") + ",surplus\n"  # a row of too many fields
    path = demo.folder / "bad.csv"
    path.write_text("".join(lines))

    batch = ingest_path(path)

    assert batch.status == DataBatch.Status.REJECTED
    found = {(e["code"], e["line"], e["column"]) for e in batch.errors}
    assert found == {("not_a_number", 102, "tenure"), ("not_finite", 702, "monthly_charges"), ("ragged_row", 901, None),
                     ("unknown_label", 1402, "churn")}
    assert "'Infinity' is not a finite number" in {e["message"] for e in batch.errors}  # as written, not as parsed


def test_numbers_padded_with_spaces_or_quoted_are_read_as_numbers(schema, demo, cl_home):
    frame = demo.frame.iloc[2000:2100].copy().astype(str)
    frame.iloc[3, frame.columns.get_loc("tenure")] = " 12 "
    frame.iloc[4, frame.columns.get_loc("monthly_charges")] = "\t70.5"
    frame.iloc[5, frame.columns.get_loc("monthly_charges")] = ""
    path = demo.write("padded.csv", frame=frame, quoting=1)  # every field quoted

    batch = ingest_path(path)

    assert batch.status == DataBatch.Status.STAGED, batch.errors
    table = pq.read_table(cl_home / batch.parquet_path)
    assert table.column("tenure")[3].as_py() == 12.0
    assert table.column("monthly_charges")[4].as_py() == 70.5
    assert table.column("monthly_charges")[5].as_py() is None


@pytest.mark.parametrize("text", [
    tricky_csv(300),
    b"\xef\xbb\xbf" + tricky_csv(300),
    tricky_csv(200) + b'r1,ab"c,1,yes\r\nr2,"x"y,2,no\r\n' + tricky_csv(50)[20:],  # stray quotes, late
    tricky_csv(3000) + "r9,Caf\xe9,1,yes\n".encode("latin-1"),  # past the header's first 64 KB
    tricky_csv(3000) + b"r9,a\x00b,1,yes\n",
    "id;note\nr1;caf\u00e9 \u00fcber\nr2;na\u00efve\n".encode(),  # multi-byte characters cut between chunks
])
def test_a_scan_fed_in_small_chunks_as_a_file_is_written_finds_what_a_scan_of_the_file_finds(text, tmp_path):
    path = tmp_path / "scanned.csv"
    path.write_bytes(text)
    delimiter = csvio.read_header(path)[1]
    scanner = csvio.ByteScanner(path, limit=100)  # learns the delimiter from the header

    for at in range(0, len(text), 101):
        scanner.feed(text[at:at + 101])
    streamed = scanner.finish()

    assert streamed == csvio.scan_bytes(path, delimiter=delimiter, limit=100)
    assert streamed.delimiter == delimiter
    assert streamed.header == csvio.read_header(path)[0]  # carried on to validation, which reads no header itself


def test_a_scan_of_a_file_without_a_readable_header_gives_nothing(tmp_path):
    scanner = csvio.ByteScanner(tmp_path / "x.csv", limit=100)
    scanner.feed(b"\x89PNG\r\n\x1a\n\x00\x00")
    assert scanner.finish() is None
