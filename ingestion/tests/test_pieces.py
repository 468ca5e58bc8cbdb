"""Clean files are cut at row starts and parsed in pieces on several threads.

The rows, their order, every check and every line number must come out as they do from one
reader streaming the whole file; a file the cuts cannot be trusted on goes to that one reader.
"""
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

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


def read(path, row_starts, **options) -> pa.Table:
    header, delimiter = csvio.read_header(path)
    batches = csvio.stream_batches(path, header=header, delimiter=delimiter, columns=header, row_starts=row_starts, **options)
    return pa.Table.from_batches(list(batches)).cast(pa.schema([("id", pa.string()), ("note", pa.string()),
                                                               ("amount", pa.float64() if options.get("numbers") else pa.string()),
                                                               ("label", pa.string())]))


@pytest.fixture
def small_pieces(monkeypatch):
    monkeypatch.setattr(csvio, "PIECE_BYTES", 64)


def test_cuts_fall_only_on_row_starts_never_inside_a_quoted_value(small_pieces, tmp_path):
    path = tmp_path / "tricky.csv"
    path.write_bytes(data := tricky_csv(400))

    starts = csvio.scan_bytes(path, delimiter=",", limit=100).row_starts

    assert starts is not None and len(starts) > 100
    assert starts[0] == data.index(b"\n") + 1 and starts[-1] == len(data)
    assert starts == sorted(set(starts))
    for start in starts[:-1]:
        assert data[start - 1:start] == b"\n"
        assert data.count(b'"', 0, start) % 2 == 0, start


def test_pieces_read_the_same_rows_in_the_same_order_as_one_reader(small_pieces, tmp_path):
    path = tmp_path / "tricky.csv"
    path.write_bytes(tricky_csv(400))
    starts = csvio.scan_bytes(path, delimiter=",", limit=100).row_starts

    for options in ({}, {"dictionary": ["label", "note"], "numbers": ["amount"]}):
        whole, pieces = read(path, None, **options), read(path, starts, **options)

        assert pieces.num_rows == 400
        assert pieces.equals(whole), options
    assert pieces.column("note").to_pylist()[:8] == ["plain", "two\nlines", "a, comma", 'say "hi"', "crlf\r\nlines", "", '"quoted"', "x"]


@pytest.mark.parametrize("text", [
    b'id,note\nr1,ab"c\nr2,x\n',  # a stray quote: the quote count says nothing any more
    b"id,note\rr1,a\rr2,b\r",  # old Mac line ends: no line feed to cut at
    b"id,note",  # a header without a line end
    b'id,"note\nr1,x\nr2,"y\nz",1\n',  # a header with an odd number of quotes
    b'id,note,t\n1,15",a\n2,x,"p\n3,q,r"\n4,y,b\n',  # a plain quote in a field (15"): the count is off by one
    b'id,note,t\n1, "a",b\n2,x,"p\n3,q,r"\n',  # a quote after a space is a plain character too
    b"id,size,t\r1,2,a\r3,4,b\n5,6,c\n",  # a header ended by a bare carriage return
    b"id,size,t\r1,2,a\r3,4,b\r\n",  # old Mac line ends, but for the last
])
def test_a_file_the_cuts_cannot_be_trusted_on_goes_to_one_reader(text, small_pieces, tmp_path):
    path = tmp_path / "odd.csv"
    path.write_bytes(text)

    assert csvio.scan_bytes(path, delimiter=",", limit=100).row_starts is None


def test_quotes_that_open_close_or_double_a_value_keep_the_file_cut(small_pieces, tmp_path):
    path = tmp_path / "quoted.csv"
    path.write_bytes(b"id,note,t\n" + b'1,"""a"", ok",x\n2,"",y\n3,"p\nq",z\n4,"say ""hi""\r\nthere",w\n' * 5)

    starts = csvio.scan_bytes(path, delimiter=",", limit=100).row_starts

    assert starts is not None and len(starts) >= 4
    header = ["id", "note", "t"]
    rows = [pa.Table.from_batches(list(csvio.stream_batches(path, header=header, delimiter=",", columns=header, row_starts=cuts)))
            for cuts in (starts, None)]
    assert rows[0].num_rows == 20 and rows[0].equals(rows[1])
    assert rows[0].column("note").to_pylist()[:4] == ['"a", ok', "", "p\nq", 'say "hi"\r\nthere']


def test_a_quoted_value_longer_than_a_piece_may_grow_goes_to_one_reader(small_pieces, monkeypatch, tmp_path):
    monkeypatch.setattr(csvio, "MAX_PIECE_BYTES", 1000)
    path = tmp_path / "long.csv"
    path.write_bytes(b'id,note\nr1,"' + b"line\n" * 300 + b'"\nr2,x\n')

    assert csvio.scan_bytes(path, delimiter=",", limit=100).row_starts is None
    monkeypatch.setattr(csvio, "MAX_PIECE_BYTES", 4000)
    assert len(csvio.scan_bytes(path, delimiter=",", limit=100).row_starts) == 3  # header end, r2, the end


@pytest.fixture
def schema(cl_home, db, demo):
    return create_schema(learn_schema(demo.write("initial.csv", slice(0, 2000)), target="churn", id_column="customer_id"))


def ingest_in_pieces_and_whole(path, monkeypatch) -> tuple[DataBatch, DataBatch]:
    monkeypatch.setattr(csvio, "PIECE_BYTES", 4096)
    in_pieces = ingest_path(path)
    DataBatch.objects.filter(pk=in_pieces.pk).update(status=DataBatch.Status.DISCARDED)  # the same bytes may come again
    monkeypatch.setattr(csvio, "MAX_PIECE_BYTES", 0)  # no piece is small enough: the one-thread reader
    whole = ingest_path(path)
    return in_pieces, whole


def test_an_accepted_file_read_in_pieces_is_staged_exactly_as_when_read_whole(schema, demo, cl_home, monkeypatch):
    frame = demo.frame.iloc[2000:3500].copy()
    frame.iloc[::7, frame.columns.get_loc("contract")] = "Month-to-month, renewed\nby phone"  # quoted, over two lines
    path = demo.write("batch.csv", frame=frame)
    lines = path.read_bytes().split(b"\n")
    # Old Mac line ends for the first rows: the one-thread reader takes them as line ends too.
    path.write_bytes(b"\r".join(lines[:40]) + b"\n" + b"\n".join(lines[40:]))

    in_pieces, whole = ingest_in_pieces_and_whole(path, monkeypatch)

    assert in_pieces.status == whole.status == DataBatch.Status.STAGED, in_pieces.errors
    assert in_pieces.rows == whole.rows == 1500
    # Sums over other blocks may differ in the last bits; everything else is the same.
    sums = {(name, key): pytest.approx(acc[key], rel=1e-12) for name, acc in whole.stats["numeric"].items() for key in ("sum", "sumsq")}
    assert {(name, key): acc[key] for name, acc in in_pieces.stats["numeric"].items() for key in ("sum", "sumsq")} == sums
    for stats in (in_pieces.stats, whole.stats):
        for acc in stats["numeric"].values():
            del acc["sum"], acc["sumsq"]
    assert in_pieces.stats == whole.stats
    assert in_pieces.warnings == whole.warnings
    assert pq.read_table(cl_home / in_pieces.parquet_path).equals(pq.read_table(cl_home / whole.parquet_path))


def test_a_refused_file_read_in_pieces_gets_the_same_report_as_when_read_whole(schema, demo, monkeypatch):
    frame = demo.frame.iloc[2000:3500].copy().astype(str)
    frame.iloc[100, frame.columns.get_loc("tenure")] = "twelve"
    frame.iloc[700, frame.columns.get_loc("monthly_charges")] = "Infinity"
    frame.iloc[1400, frame.columns.get_loc("churn")] = "Maybe"
    lines = demo.write("bad.csv", frame=frame).read_text().splitlines(keepends=True)
    lines[900] = lines[900].rstrip("\n") + ",surplus\n"  # a row of too many fields, past the first pieces
    path = demo.folder / "bad.csv"
    path.write_text("".join(lines))

    in_pieces, whole = ingest_in_pieces_and_whole(path, monkeypatch)

    assert in_pieces.status == DataBatch.Status.REJECTED
    assert in_pieces.report == whole.report
    found = {(e["code"], e["line"], e["column"]) for e in in_pieces.errors}
    assert found == {("not_a_number", 102, "tenure"), ("not_finite", 702, "monthly_charges"), ("ragged_row", 901, None),
                     ("unknown_label", 1402, "churn")}
    assert "'Infinity' is not a finite number" in {e["message"] for e in in_pieces.errors}  # as written, not as parsed


def test_numbers_padded_with_spaces_or_quoted_are_read_as_numbers(schema, demo, cl_home):
    frame = demo.frame.iloc[2000:2100].copy().astype(str)
    frame.iloc[3, frame.columns.get_loc("tenure")] = " 12 "
    frame.iloc[4, frame.columns.get_loc("monthly_charges")] = "\t70.5"
    path = demo.write("padded.csv", frame=frame, quoting=1)  # every field quoted

    batch = ingest_path(path)

    assert batch.status == DataBatch.Status.STAGED, batch.errors
    table = pq.read_table(cl_home / batch.parquet_path)
    assert table.column("tenure")[3].as_py() == 12.0
    assert table.column("monthly_charges")[4].as_py() == 70.5


@pytest.mark.parametrize("text", [
    tricky_csv(300),
    b"\xef\xbb\xbf" + tricky_csv(300),
    tricky_csv(200) + b'r1,ab"c,1,yes\r\nr2,"x"y,2,no\r\n' + tricky_csv(50)[20:],  # stray quotes, late
    tricky_csv(3000) + "r9,Caf\xe9,1,yes\n".encode("latin-1"),  # past the header's first 64 KB
    tricky_csv(3000) + b"r9,a\x00b,1,yes\n",
    "id;note\nr1;caf\u00e9 \u00fcber\nr2;na\u00efve\n".encode(),  # multi-byte characters cut between chunks
])
def test_a_scan_fed_in_small_chunks_as_a_file_is_written_finds_what_a_scan_of_the_file_finds(text, small_pieces, tmp_path):
    path = tmp_path / "scanned.csv"
    path.write_bytes(text)
    delimiter = csvio.read_header(path)[1]
    scanner = csvio.ByteScanner(path, limit=100)  # learns the delimiter from the header

    for at in range(0, len(text), 101):
        scanner.feed(text[at:at + 101])
    streamed = scanner.finish()

    assert streamed == csvio.scan_bytes(path, delimiter=delimiter, limit=100)
    assert streamed.delimiter == delimiter


def test_a_scan_of_a_file_without_a_readable_header_gives_nothing(tmp_path):
    scanner = csvio.ByteScanner(tmp_path / "x.csv", limit=100)
    scanner.feed(b"\x89PNG\r\n\x1a\n\x00\x00")
    assert scanner.finish() is None
