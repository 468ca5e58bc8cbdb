"""A corpus of malformed files: each is refused with its reason, line and column, and nothing changes.

Every file is built here from demo rows with one thing broken. The system around it has a
master dataset and a staged batch, so "nothing changes" is checked against real state.
"""
import gzip
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from django.core.management import CommandError, call_command

from audit.models import AuditEvent
from ingestion import csvio, master
from ingestion.models import DatasetSchema, DataBatch
from ingestion.schema import learn_schema
from ingestion.services import create_schema, get_data_stats, ingest_path

pytestmark = pytest.mark.slow  # the whole corpus, each file read twice

KEPT_STATS = ("master_rows", "master_partitions", "staged_files", "staged_rows", "archived_files", "held_files", "class_balance")


class Sample:
    """Demo rows as cells, to break one thing at a time. Row i of the sample is on line i + 2."""

    def __init__(self, frame):
        self.header = list(frame.columns)
        self.rows = frame.values.tolist()

    def text(self, *, header: list[str] | None = None, rows: list[list[str]] | None = None, delimiter: str = ",") -> str:
        lines = [header if header is not None else self.header] + (rows if rows is not None else self.rows)
        return "".join(delimiter.join(line) + "\n" for line in lines)

    def bytes(self, **kwargs) -> bytes:
        return self.text(**kwargs).encode()

    def with_cell(self, row: int, column: str, value: str) -> bytes:
        rows = [list(r) for r in self.rows]
        rows[row][self.header.index(column)] = value
        return self.bytes(rows=rows)

    def with_line(self, row: int, line: str) -> bytes:
        """Row `row` replaced by a raw line of text."""
        lines = self.text().splitlines(keepends=True)
        lines[row + 1] = line + "\n"
        return "".join(lines).encode()

    def renamed(self, old: str, new: str) -> bytes:
        return self.bytes(header=[new if name == old else name for name in self.header])

    def without(self, column: str) -> bytes:
        keep = [i for i, name in enumerate(self.header) if name != column]
        return self.bytes(header=[self.header[i] for i in keep], rows=[[row[i] for i in keep] for row in self.rows])


@dataclass
class Case:
    id: str
    build: Callable[[Sample, Sample], bytes]  # (a 20-row sample, a 1,000-row sample) -> the file
    code: str
    line: int | None
    column: str | None


def _row(sample: Sample, i: int, delimiter: str = ",") -> str:
    return delimiter.join(sample.rows[i])


def _quarter_delimited(sample: Sample) -> bytes:
    """A comma header with rows from row 5 on in semicolons, as when two exports are pasted together."""
    return sample.bytes(rows=[]) + "".join(_row(sample, i, "," if i < 5 else ";") + "\n" for i in range(20)).encode()


def _semicolon_header(sample: Sample) -> bytes:
    """The header in semicolons, the rows in commas: every row is one field to the parser."""
    return sample.text(rows=[]).replace(",", ";").encode() + "".join(_row(sample, i) + "\n" for i in range(20)).encode()


def _late(sample: Sample, row: int, column: str, raw: bytes) -> bytes:
    """`raw` bytes put into a cell past the first 64 KB, which the header sniffing reads."""
    marker = "@@MARK@@"
    return sample.with_cell(row, column, marker).replace(marker.encode(), raw)


CASES = [
    Case("with_a_missing_column", lambda s, big: s.without("tenure"), "missing_column", 1, "tenure"),
    Case("with_a_duplicated_column", lambda s, big: s.renamed("phone_service", "tenure"), "duplicated_column", 1, "tenure"),
    Case("with_an_empty_column_name", lambda s, big: s.renamed("partner", ""), "header", 1, None),
    Case("with_another_dataset_s_columns", lambda s, big: b"sepal_length,sepal_width,species\n5.1,3.5,setosa\n", "missing_column", 1, "customer_id"),
    Case("with_an_unknown_target_label", lambda s, big: s.with_cell(3, "churn", "Maybe"), "unknown_label", 5, "churn"),
    Case("with_a_target_label_in_the_wrong_case", lambda s, big: s.with_cell(12, "churn", "yes"), "unknown_label", 14, "churn"),
    Case("with_an_empty_target", lambda s, big: s.with_cell(4, "churn", ""), "empty_label", 6, "churn"),
    Case("with_an_empty_id", lambda s, big: s.with_cell(13, "customer_id", " "), "empty_id", 15, "customer_id"),
    Case("with_text_in_a_numeric_column", lambda s, big: s.with_cell(2, "tenure", "twelve"), "not_a_number", 4, "tenure"),
    Case("with_a_thousands_separator_in_a_number", lambda s, big: s.with_cell(0, "total_charges", '"3,899.05"'), "not_a_number", 2, "total_charges"),
    Case("with_a_number_with_two_decimal_points", lambda s, big: s.with_cell(14, "monthly_charges", "1.5.2"), "not_a_number", 16, "monthly_charges"),
    Case("with_inf_in_a_numeric_column", lambda s, big: s.with_cell(5, "monthly_charges", "inf"), "not_finite", 7, "monthly_charges"),
    # (NaN, like NA, is a missing-value marker by default: test_missing_markers.)
    Case("with_infinity_in_a_numeric_column", lambda s, big: s.with_cell(6, "total_charges", "-Infinity"), "not_finite", 8, "total_charges"),
    Case("with_a_number_too_large_for_a_float", lambda s, big: s.with_cell(7, "total_charges", "1e999"), "not_finite", 9, "total_charges"),
    Case("with_a_row_of_too_many_fields", lambda s, big: s.with_line(7, _row(s, 7) + ",surplus"), "ragged_row", 9, None),
    Case("with_a_row_of_too_few_fields", lambda s, big: s.with_line(8, _row(s, 8).rsplit(",", 1)[0]), "ragged_row", 10, None),
    Case("with_a_line_of_only_spaces", lambda s, big: s.with_line(4, "    "), "ragged_row", 6, None),
    Case("with_rows_in_another_delimiter_than_the_header", lambda s, big: _quarter_delimited(s), "ragged_row", 7, None),
    Case("with_a_semicolon_header_over_comma_rows", lambda s, big: _semicolon_header(s), "ragged_row", 2, None),
    Case("with_an_unclosed_quote", lambda s, big: s.with_cell(9, "contract", '"Month-to-month'), "bad_quoting", 11, None),
    Case("with_an_unclosed_quote_in_the_last_row", lambda s, big: s.with_cell(19, "contract", '"Month-to-month'), "bad_quoting", 21, None),
    Case("with_text_after_a_closing_quote", lambda s, big: s.with_cell(10, "contract", '"One"year'), "bad_quoting", 12, "contract"),
    Case("with_a_stray_quote_in_a_number", lambda s, big: s.with_cell(11, "tenure", '"3"4'), "bad_quoting", 13, "tenure"),
    Case("with_latin1_bytes", lambda s, big: s.with_cell(11, "payment_method", "Caf\xe9").decode().encode("latin-1"), "encoding", 13, None),
    Case("with_latin1_bytes_past_the_first_64_kb", lambda s, big: _late(big, 900, "payment_method", b"Caf\xe9"), "encoding", 902, "payment_method"),
    Case("with_nul_bytes", lambda s, big: s.with_cell(3, "contract", "One\x00\x00year"), "binary", 5, None),
    Case("with_nul_bytes_past_the_first_64_kb", lambda s, big: _late(big, 950, "contract", b"One\x00year"), "binary", 952, "contract"),
    Case("that_is_a_png_image", lambda s, big: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00", "binary", 1, None),
    Case("that_is_gzip_compressed", lambda s, big: gzip.compress(s.bytes(), mtime=0), "binary", 1, None),
    Case("that_is_an_xlsx_workbook", lambda s, big: b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00[Content_Types].xml", "binary", 1, None),
    Case("that_is_utf16_text", lambda s, big: s.text().encode("utf-16"), "binary", 1, None),
    Case("that_is_empty", lambda s, big: b"", "empty_file", None, None),
    Case("that_is_only_whitespace", lambda s, big: b"  \n\t\n   \r\n", "empty_file", None, None),
    Case("that_is_a_header_only", lambda s, big: s.bytes(rows=[]), "no_rows", None, None),
    Case("that_is_a_header_without_a_line_end", lambda s, big: s.bytes(rows=[]).rstrip(b"\n"), "no_rows", None, None),
]


@pytest.fixture
def system(cl_home, db, demo, django_capture_on_commit_callbacks):
    """A schema learned from 2,000 demo rows, a 300-row master and a staged 50-row batch."""
    create_schema(learn_schema(demo.write("initial.csv", slice(0, 2000)), target="churn", id_column="customer_id"))
    merged = ingest_path(demo.write("merged.csv", slice(2100, 2400)))
    with django_capture_on_commit_callbacks(execute=True):
        master.merge_batches(master.plan_merge([merged], DatasetSchema.current()))
    staged = ingest_path(demo.write("staged.csv", slice(2400, 2450)))
    assert staged.status == DataBatch.Status.STAGED
    return cl_home


@pytest.fixture
def sample(demo):
    return Sample(demo.frame.iloc[2000:2020])


@pytest.fixture
def big_sample(demo):
    return Sample(demo.frame.iloc[3000:4000])


def state(home: Path) -> dict:
    stats = get_data_stats()
    return {
        "stats": {key: stats[key] for key in KEPT_STATS},
        "rejected_files": stats["rejected_files"],
        "files": {folder: sorted(p.name for p in (home / folder).iterdir()) for folder in ("data/new", "data/training", "data/archive", "tmp")},
    }


def test_the_corpus_holds_at_least_25_distinct_files(sample, big_sample):
    files = [case.build(sample, big_sample) for case in CASES]
    assert len(CASES) >= 25
    assert len(set(files)) == len(files)
    assert len({case.id for case in CASES}) == len(CASES)


# Each case is also read in blocks of a few rows, so that its problem lies in a later block.
@pytest.mark.parametrize("block_bytes", [csvio.BLOCK_SIZE, 512], ids=["default_blocks", "blocks_of_512_bytes"])
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_it_refuses_a_file(case, block_bytes, system, sample, big_sample, tmp_path, monkeypatch):
    monkeypatch.setattr(csvio, "BLOCK_SIZE", block_bytes)
    path = tmp_path / f"{case.id}.csv"
    path.write_bytes(case.build(sample, big_sample))
    before = state(system)

    batch = ingest_path(path)

    assert batch.status == DataBatch.Status.REJECTED
    assert case.code in batch.report["error_counts"], batch.report["summary"]
    first = next(error for error in batch.errors if error["code"] == case.code)
    assert (first["line"], first["column"]) == (case.line, case.column), first
    assert first["message"]
    assert batch.report["summary"].startswith("refused")
    assert (batch.rows, batch.parquet_path) == (0, "")
    # Nothing changed: no partial merge, nothing staged, no file left behind.
    after = state(system)
    assert after["stats"] == before["stats"]
    assert after["files"] == before["files"]
    assert after["rejected_files"] == before["rejected_files"] + 1
    # The raw file is kept byte for byte in quarantine, its report beside it.
    raw = system / batch.raw_path
    assert raw.parent == system / "data" / "quarantine"
    assert raw.read_bytes() == path.read_bytes()
    assert json.loads(Path(f"{raw}.report.json").read_text()) == batch.report
    assert AuditEvent.objects.filter(action="data.rejected", target=str(batch)).exists()


def test_it_refuses_a_file_over_the_size_limit_and_keeps_nothing_of_it(system, sample, tmp_path, settings):
    settings.CL_UPLOAD_MAX_BYTES = 1000
    path = tmp_path / "too_large.csv"
    path.write_bytes(sample.bytes())
    assert path.stat().st_size > 1000
    before = state(system)

    batch = ingest_path(path)

    assert batch.status == DataBatch.Status.REJECTED
    assert list(batch.report["error_counts"]) == ["too_large"]
    assert "upload limit" in batch.errors[0]["message"]
    after = state(system)
    assert (after["stats"], after["files"]) == (before["stats"], before["files"])
    assert after["rejected_files"] == before["rejected_files"] + 1
    # The limit protects the disk, so the refused upload is not kept (only its record is).
    assert batch.raw_path == ""
    assert not any((system / "data" / "quarantine").iterdir())


def test_it_counts_every_problem_and_lists_the_first_hundred_in_line_order(system, demo, tmp_path, monkeypatch):
    # Small blocks, so the problems are spread over many of them.
    monkeypatch.setattr(csvio, "BLOCK_SIZE", 8 << 10)
    monkeypatch.setattr(csvio, "CHECK_BYTES", 16 << 10)
    frame = demo.frame.iloc[2000:2600].copy()
    frame.iloc[0:300:2, frame.columns.get_loc("tenure")] = "inf"  # rows 0, 2, ... 298: 150 "inf"
    frame.iloc[1:300:2, frame.columns.get_loc("tenure")] = "ten"  # rows 1, 3, ... 299: 150 text
    frame.iloc[0:600:20, frame.columns.get_loc("churn")] = "Maybe"  # 30 unknown labels
    path = demo.write("many_problems.csv", frame=frame)

    batch = ingest_path(path)

    report = batch.report
    assert report["error_counts"] == {"not_finite": 150, "not_a_number": 150, "unknown_label": 30}
    assert report["error_count"] == 330
    assert len(report["errors"]) == 100
    lines = [error["line"] for error in report["errors"]]
    assert lines == sorted(lines)
    # Rows 0..89 hold 90 tenure problems and 5 labels (rows 0, 20, ... 80); the next five are rows 90..94.
    assert lines[0] == 2 and lines[-1] == 96
    assert {(e["line"], e["column"], e["code"]) for e in report["errors"][:3]} == {
        (2, "tenure", "not_finite"), (2, "churn", "unknown_label"), (3, "tenure", "not_a_number"),
    }
    assert "330 problem(s)" in report["summary"]


def test_it_gives_real_line_numbers_after_blank_lines_skipped_rows_and_values_over_two_lines(system, sample, tmp_path):
    header, rows = sample.text().splitlines()[0], sample.text().splitlines()[1:]
    contract = sample.header.index("contract")
    multiline = rows[1].split(",")
    multiline[contract] = '"Month-\nto-month"'
    bad = rows[4].split(",")
    bad[sample.header.index("tenure")] = "twelve"
    text = "\n".join([header, rows[0], ",".join(multiline), "", rows[2], rows[3] + ",surplus", ",".join(bad), rows[5]]) + "\n"
    path = tmp_path / "lines.csv"
    path.write_text(text)

    batch = ingest_path(path)

    found = {(e["code"], e["line"], e["column"]) for e in batch.errors}
    # 1 header, 2 row, 3-4 a value over two lines, 5 blank, 6 row, 7 too many fields, 8 the bad number.
    assert found == {("ragged_row", 7, None), ("not_a_number", 8, "tenure")}


def test_it_accepts_semicolon_and_tab_delimited_files(system, sample, tmp_path):
    for name, delimiter in (("semicolons.csv", ";"), ("tabs.tsv", "\t")):
        path = tmp_path / name
        path.write_text(sample.text(delimiter=delimiter))

        batch = ingest_path(path)

        assert batch.status == DataBatch.Status.STAGED, batch.errors
        assert (batch.rows, batch.report["delimiter"]) == (20, delimiter)


def test_it_accepts_a_utf8_bom_windows_line_ends_and_quoted_fields(system, sample, tmp_path):
    path = tmp_path / "excel.csv"
    rows = [[f'"{value}"' if value else value for value in row] for row in sample.rows]
    path.write_bytes(b"\xef\xbb\xbf" + sample.text(rows=rows).replace("\n", "\r\n").encode())

    batch = ingest_path(path)

    assert batch.status == DataBatch.Status.STAGED, batch.errors
    assert batch.rows == 20
    assert batch.report["columns"][0] == "customer_id"  # the BOM is not part of the first name
    churn = sample.header.index("churn")
    assert batch.stats["labels"] == dict(Counter(row[churn] for row in sample.rows))  # unquoted


def test_extra_columns_and_new_categories_are_warnings_not_errors(system, sample, tmp_path):
    rows = [row + [f"note {i}"] for i, row in enumerate(sample.rows)]
    rows[0][sample.header.index("contract")] = "Ten year"
    rows[1][sample.header.index("payment_method")] = "Crypto"
    path = tmp_path / "extra.csv"
    path.write_text(sample.text(header=sample.header + ["sales_note"], rows=rows))
    before = get_data_stats()

    batch = ingest_path(path)

    assert batch.status == DataBatch.Status.STAGED, batch.errors
    assert batch.errors == []
    warnings = {warning["code"]: warning for warning in batch.warnings}
    assert warnings["extra_columns"]["columns"] == ["sales_note"]
    new = {w["column"]: w["values"] for w in batch.warnings if w["code"] == "new_category"}
    assert new == {"contract": {"Ten year": 1}, "payment_method": {"Crypto": 1}}
    after = get_data_stats()
    assert (after["staged_files"], after["staged_rows"]) == (before["staged_files"] + 1, before["staged_rows"] + 20)


def test_the_ingest_command_prints_the_report_and_exits_with_an_error(system, sample, tmp_path, capsys):
    path = tmp_path / "bad_label.csv"
    path.write_bytes(sample.with_cell(3, "churn", "Maybe"))

    with pytest.raises(CommandError, match="bad_label.csv was refused"):
        call_command("ingest", str(path))

    err = capsys.readouterr().err
    assert "line 5, column churn: 'Maybe' is not a target label" in err
