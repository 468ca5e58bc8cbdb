"""An upload is read once: the bytes are scanned as they are stored, and the one object that
scan makes (csvio.CsvFile: header, delimiter, byte problems) goes on to validation, which
parses the stored copy once and sniffs nothing again. Categories are read by values.py's rule."""
import builtins
import io
import threading
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestion import csvio, validation, values
from ingestion.models import DataBatch
from ingestion.schema import learn_schema
from ingestion.services import create_schema, ingest_path


@contextmanager
def reads_of(folder: Path, monkeypatch):
    """Every opening for reading of a file under `folder` (by name), by Python's open or by
    pyarrow handed a path; files opened for writing are not counted."""
    opened: list[str] = []
    real_open = builtins.open

    def counted_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, Path)) and Path(file).is_relative_to(folder) and not set(mode) & set("wax+"):
            opened.append(Path(file).name)
        return real_open(file, mode, *args, **kwargs)

    def counted(read):
        def spy(source, *args, **kwargs):
            if isinstance(source, (str, Path)) and Path(source).is_relative_to(folder):
                opened.append(Path(source).name)
            return read(source, *args, **kwargs)
        return spy

    monkeypatch.setattr(builtins, "open", counted_open)
    monkeypatch.setattr(io, "open", counted_open)  # Path.open
    for module, name in ((pacsv, "read_csv"), (pacsv, "open_csv"), (pa, "memory_map"), (pa, "input_stream")):
        monkeypatch.setattr(module, name, counted(getattr(module, name)))
    yield opened


@pytest.fixture
def schema(cl_home, db, demo):
    return create_schema(learn_schema(demo.write("initial.csv", slice(0, 2000)), target="churn", id_column="customer_id"))


def test_an_accepted_upload_is_read_once_as_it_is_stored_and_parsed_once(schema, demo, tmp_path, monkeypatch):
    path = demo.write("batch.csv", slice(2000, 3000))

    with reads_of(tmp_path, monkeypatch) as opened:
        batch = ingest_path(path)

    assert batch.status == DataBatch.Status.STAGED, batch.errors
    # The upload is read once (stored, hashed and scanned on the way) and the stored copy parsed
    # once: its header and delimiter come from the scan, nothing sniffs them again.
    assert opened.count("batch.csv") == 1, opened
    assert len([name for name in opened if name.startswith("upload-")]) == 1, opened
    assert len(opened) == 2, opened


def test_a_refused_upload_is_parsed_once_and_read_again_only_to_place_its_problems(schema, demo, tmp_path, monkeypatch):
    frame = demo.frame.iloc[2000:2500].copy().astype(str)
    frame.iloc[40, frame.columns.get_loc("tenure")] = "twelve"
    path = demo.write("bad.csv", frame=frame)

    with reads_of(tmp_path, monkeypatch) as opened:
        batch = ingest_path(path)

    assert batch.status == DataBatch.Status.REJECTED
    assert {(e["code"], e["line"], e["column"]) for e in batch.errors} == {("not_a_number", 42, "tenure")}
    assert opened.count("bad.csv") == 1, opened
    assert len([name for name in opened if name.startswith("upload-")]) == 2, opened  # the parse, then the line of the bad row
    assert len(opened) == 3, opened


def test_a_file_checked_without_a_scan_is_read_twice_scanned_then_parsed(schema, demo, tmp_path, monkeypatch):
    path = demo.write("batch.csv", slice(2000, 2500))

    with reads_of(tmp_path, monkeypatch) as opened:
        report, _ = validation.validate_and_convert(path, schema, tmp_path / "out.parquet")

    assert report.ok, report.errors
    assert (report.rows, report.delimiter) == (500, ",")
    assert opened == ["batch.csv", "batch.csv"]  # one pass learns header, delimiter and byte problems


def test_categories_are_staged_by_values_read_texts_rule(schema, demo, cl_home):
    frame = demo.frame.iloc[2000:2400].copy().astype(str)
    contract = frame.columns.get_loc("contract")
    frame.iloc[0, contract] = "  One year "
    frame.iloc[1, contract] = " n/a"
    frame.iloc[2, contract] = "NULL "
    frame.iloc[3, contract] = "\u00a0Two year\u2003"
    path = demo.write("padded.csv", frame=frame)

    batch = ingest_path(path)

    assert batch.status == DataBatch.Status.STAGED, batch.errors
    staged = pq.read_table(cl_home / batch.parquet_path).column("contract").to_pylist()
    expected = values.read_texts(pa.array(frame["contract"].tolist()), schema.markers).to_pylist()
    assert staged == expected
    assert staged[:4] == ["One year", None, None, "Two year"]
    stats = batch.stats["categorical"]["contract"]
    assert stats["missing"] == 2 and "One year" in stats["counts"] and " n/a" not in stats["counts"]


TEXTS = st.one_of(st.sampled_from(["", " ", "NA", " na ", "N/A", "null", "None ", "a", " a", "a ", "\u00a0b\u2003", "\x1cc", "-999", "?"]),
                  st.text(max_size=6))
MARKER_SETS = st.sampled_from([values.DEFAULT_MARKERS, values.marker_set(["?"]), values.marker_set(["-999", "NA"])])


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(TEXTS, min_size=1, max_size=10), markers=MARKER_SETS, encoded=st.booleans())
def test_the_arrow_reading_of_categories_is_values_text_on_each_value(texts, markers, encoded):
    column = pa.array(texts, pa.string())
    if encoded:
        column = column.dictionary_encode().cast(csvio.DICTIONARY)  # as csvio reads categories

    read = values.read_texts(column, markers)

    assert pa.types.is_dictionary(read.type)
    assert read.to_pylist() == [values.text(text, markers) for text in texts]
    assert len(set(read.dictionary.to_pylist())) == len(read.dictionary)  # each value once: counting stays right


def test_a_reader_stopped_early_stops_its_thread_and_closes_its_source():
    closed = []

    def items():
        try:
            yield from range(1000)
        finally:
            closed.append(threading.current_thread().name)

    ahead = csvio.read_ahead(items(), name="test-ahead")
    assert [next(ahead), next(ahead)] == [0, 1]
    ahead.close()

    assert closed == ["test-ahead"]  # closed by its own thread, as soon as the reader stopped
    assert "test-ahead" not in {thread.name for thread in threading.enumerate()}


def test_an_error_in_the_thread_is_raised_in_the_reader():
    def items():
        yield 1
        raise ValueError("broken block")

    ahead = csvio.read_ahead(items())
    assert next(ahead) == 1
    with pytest.raises(ValueError, match="broken block"):
        next(ahead)
