"""Missing-value markers: NA (and N/A, NaN, null, None, or the dataset's own) mean "no value",
at init_cl_system and in every upload, by one rule (ingestion.values)."""
import io
import json
import math

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from django.core.management import call_command
from django.urls import reverse
from hypothesis import given, settings as hypothesis_settings, strategies as st

from ingestion import values
from ingestion.models import DatasetSchema, DataBatch
from ingestion.schema import SchemaError, learn_schema
from ingestion.services import ingest_path
from testing.builders import PASSWORD

NUMERIC = ("tenure", "monthly_charges", "total_charges")
CATEGORICAL = ("contract", "payment_method")


def r_style(demo, name: str, rows: slice, *, marker: str = "NA", every: int = 7):
    """A slice of the demo as R writes it: `marker` in some numeric and categorical cells."""
    frame = demo.frame.iloc[rows].copy()
    for offset, column in enumerate(NUMERIC + CATEGORICAL):
        frame.iloc[offset::every, frame.columns.get_loc(column)] = marker
    return demo.write(name, frame=frame), frame


def marked(frame, column: str, marker: str = "NA") -> list[int]:
    return [i for i, value in enumerate(frame[column]) if value == marker]


def init(path, *extra) -> str:
    out = io.StringIO()
    call_command("init_cl_system", "--data", str(path), "--target", "churn", "--id-column", "customer_id", *extra, stdout=out)
    return out.getvalue()


@pytest.fixture
def r_system(cl_home, empty_db, demo):
    """Initialised on an R-style file (NA in numeric and categorical cells)."""
    path, frame = r_style(demo, "initial.csv", slice(0, 2000))
    output = init(path)
    return DatasetSchema.current(), frame, output


def test_an_r_style_csv_keeps_its_numeric_columns_numeric_at_init(r_system):
    schema, frame, output = r_system
    kinds = {f["name"]: f["kind"] for f in schema.features}
    assert all(kinds[name] == "numeric" for name in NUMERIC), kinds
    for feature in schema.features:
        if feature["name"] in CATEGORICAL:
            assert "NA" not in feature["categories"]
            assert len(feature["categories"]) < 10
    assert schema.missing_markers == ["", "NA", "N/A", "NaN", "null", "None"]
    assert "NA" in output and "N/A" in output  # the markers used are printed
    initial = DataBatch.objects.get(source=DataBatch.Source.INIT)
    assert initial.stats["numeric"]["tenure"]["missing"] == len(marked(frame, "tenure"))
    assert initial.stats["categorical"]["contract"]["missing"] == len(marked(frame, "contract"))
    assert "NA" not in initial.stats["categorical"]["contract"]["counts"]


def test_the_same_kind_of_file_uploaded_is_staged_with_those_cells_missing(r_system, demo, cl_home):
    schema, _, _ = r_system
    path, frame = r_style(demo, "batch.csv", slice(2000, 3000), marker=" na ", every=5)
    frame.iloc[3, frame.columns.get_loc("monthly_charges")] = "N/A"
    frame.iloc[4, frame.columns.get_loc("total_charges")] = "NULL"
    frame.iloc[9, frame.columns.get_loc("contract")] = "None"
    path = demo.write("batch.csv", frame=frame)

    batch = ingest_path(path)

    assert batch.status == DataBatch.Status.STAGED, batch.errors
    assert not [w for w in batch.warnings if w["code"] == "new_category"], batch.warnings
    table = pq.read_table(cl_home / batch.parquet_path)
    for column in NUMERIC + CATEGORICAL:
        written = table.column(column).to_pylist()
        expected_missing = {i for i, v in enumerate(frame[column]) if v.strip().lower() in {"na", "n/a", "null", "none"}}
        assert {i for i, v in enumerate(written) if v is None} == expected_missing, column
    assert table.column("tenure").null_count == len(marked(frame, "tenure", " na "))
    assert batch.stats["numeric"]["monthly_charges"]["missing"] == len(marked(frame, "monthly_charges", " na ")) + 1
    assert batch.stats["categorical"]["contract"]["missing"] == len(marked(frame, "contract", " na ")) + 1


def test_an_r_style_upload_to_a_schema_learned_from_a_clean_file_is_staged(cl_home, empty_db, demo):
    # Before: refused, "'NA' is not a finite number", for every NA cell of the numeric columns.
    init(demo.write("initial.csv", slice(0, 2000)))
    path, frame = r_style(demo, "batch.csv", slice(2000, 2700))

    batch = ingest_path(path)

    assert batch.status == DataBatch.Status.STAGED, batch.errors
    assert not batch.warnings, batch.warnings
    for column in NUMERIC:
        assert batch.stats["numeric"][column]["missing"] == len(marked(frame, column)), column
    for column in CATEGORICAL:
        assert batch.stats["categorical"][column]["missing"] == len(marked(frame, column)), column
        assert "NA" not in batch.stats["categorical"][column]["counts"]


def test_a_marker_in_the_target_or_the_id_is_refused_like_an_empty_one(r_system, demo):
    frame = demo.frame.iloc[3000:3100].copy()
    frame.iloc[5, frame.columns.get_loc("churn")] = "NA"
    frame.iloc[6, frame.columns.get_loc("customer_id")] = "null"
    batch = ingest_path(demo.write("bad.csv", frame=frame))

    assert batch.status == DataBatch.Status.REJECTED
    assert batch.report["error_counts"] == {"empty_label": 1, "empty_id": 1}
    messages = {e["line"]: e["message"] for e in batch.errors}
    assert messages == {7: "the target is 'NA', which marks a missing value", 8: "the id is 'null', which marks a missing value"}


def test_learning_refuses_a_target_or_an_id_with_markers(demo):
    frame = demo.frame.iloc[0:300].copy()
    frame.iloc[[3, 9], frame.columns.get_loc("churn")] = "NA"
    with pytest.raises(SchemaError, match=r"the target column 'churn' has 2 missing value\(s\) \('NA' ×2\)"):
        learn_schema(demo.write("t.csv", frame=frame), target="churn", id_column="customer_id")
    frame = demo.frame.iloc[0:300].copy()
    frame.iloc[4, frame.columns.get_loc("customer_id")] = "N/A"
    with pytest.raises(SchemaError, match=r"the id column 'customer_id' has 1 missing value\(s\) \('N/A' ×1\)"):
        learn_schema(demo.write("i.csv", frame=frame), target="churn", id_column="customer_id")
    # With markers of its own, NA is a label like any other (and the target then has three).
    with pytest.raises(SchemaError, match="exactly two labels, found 3"):
        learn_schema(demo.write("t.csv", frame=frame.assign(churn=["NA"] + list(frame.churn[1:]))), target="churn",
                     missing_markers=["?"])


def test_custom_markers_are_stored_and_honoured_and_na_is_then_a_plain_value(cl_home, empty_db, demo):
    frame = demo.frame.iloc[0:2000].copy()
    frame.iloc[0::9, frame.columns.get_loc("tenure")] = "?"
    frame.iloc[1::9, frame.columns.get_loc("contract")] = " ? "
    frame.iloc[2::9, frame.columns.get_loc("payment_method")] = "NA"  # a category now
    output = init(demo.write("initial.csv", frame=frame), "--missing-values", "?")

    schema = DatasetSchema.current()
    assert schema.missing_markers == ["", "?"]
    assert schema.markers == frozenset({"", "?"})
    assert "'?'" in output and "'NA'" not in output
    features = {f["name"]: f for f in schema.features}
    assert features["tenure"]["kind"] == "numeric"
    assert "?" not in features["contract"]["categories"]
    assert "NA" in features["payment_method"]["categories"]

    batch_frame = demo.frame.iloc[2000:2400].copy()
    batch_frame.iloc[0::4, batch_frame.columns.get_loc("tenure")] = "?"
    batch_frame.iloc[1::4, batch_frame.columns.get_loc("payment_method")] = "NA"
    staged = ingest_path(demo.write("ok.csv", frame=batch_frame))
    assert staged.status == DataBatch.Status.STAGED, staged.errors
    assert staged.stats["numeric"]["tenure"]["missing"] == 100
    assert staged.stats["categorical"]["payment_method"]["counts"]["NA"] == 100
    assert staged.stats["categorical"]["payment_method"]["missing"] == 0

    batch_frame.iloc[2, batch_frame.columns.get_loc("monthly_charges")] = "NA"
    batch_frame.iloc[3, batch_frame.columns.get_loc("total_charges")] = "NaN"
    refused = ingest_path(demo.write("na.csv", frame=batch_frame))
    assert refused.status == DataBatch.Status.REJECTED
    assert refused.report["error_counts"] == {"not_a_number": 2}
    assert {e["message"] for e in refused.errors} == {"'NA' is not a number", "'NaN' is not a number"}


def test_inf_stays_not_a_finite_number_with_markers_in_the_same_block(r_system, demo):
    frame = demo.frame.iloc[3000:3100].copy()
    frame.iloc[1, frame.columns.get_loc("tenure")] = "NA"
    frame.iloc[2, frame.columns.get_loc("tenure")] = "-Infinity"
    frame.iloc[3, frame.columns.get_loc("tenure")] = "1e999"
    frame.iloc[4, frame.columns.get_loc("tenure")] = "twelve"
    frame.iloc[5, frame.columns.get_loc("tenure")] = "NaN"
    batch = ingest_path(demo.write("inf.csv", frame=frame))
    assert batch.report["error_counts"] == {"not_finite": 2, "not_a_number": 1}
    assert {e["message"] for e in batch.errors} == {"'-Infinity' is not a finite number", "'1e999' is not a finite number",
                                                    "'twelve' is not a number"}


def test_the_data_page_and_data_stats_show_the_missing_share(r_system, client, users):
    assert client.post(reverse("login"), {"username": users["viewer"].username, "password": PASSWORD}).status_code == 302
    _, frame, _ = r_system
    out = io.StringIO()
    call_command("data_stats", "--json", stdout=out)
    columns = json.loads(out.getvalue())["columns"]
    rows = len(frame)
    assert columns["tenure"]["missing"] == len(marked(frame, "tenure"))
    assert columns["tenure"]["missing_share"] == pytest.approx(len(marked(frame, "tenure")) / rows)
    assert columns["contract"]["missing_share"] == pytest.approx(len(marked(frame, "contract")) / rows)
    assert columns["female"]["missing_share"] == 0

    page = client.get(reverse("data")).content.decode()
    share = round(100 * len(marked(frame, "tenure")) / rows)
    assert f'class="muted small missing-share">({share}%)' in page
    assert "Missing values: empty cells, <code>NA</code>" in page


# One rule everywhere: the Arrow-side reading of a column answers as values.number does.

def python_reading(text: str, markers) -> tuple:
    try:
        number = values.number(text, markers)
    except values.ValueProblem:
        return ("refused",)
    return ("missing",) if math.isnan(number) else ("number", number)


def arrow_readings(texts: list[str], markers) -> list[tuple]:
    reading = values.read_numbers(pa.array(texts, pa.string()), markers)
    found = []
    for i, number in enumerate(reading.numbers.to_pylist()):
        refused = reading.not_finite is not None and (reading.not_finite[i].as_py() or reading.not_a_number[i].as_py())
        found.append(("refused",) if refused else ("missing",) if number is None else ("number", number))
    return found


NUMBERISH = st.text(alphabet="0123456789+-.eE ", max_size=12)
WORDS = st.sampled_from(["", " ", "NA", " na ", "N/A", "nan", "NaN", "-nan", "null", "NULL", "None", "none ", "inf", "-Infinity",
                         "INF", "1e999", "-1e400", "?", "-999", " -999 ", "1,5", "0x1F", "1_000", "\t3\n", "\u00a07\u2003",
                         "\x1c8", "1" * 101, " " * 120, "9" * 40, "1e-400", ".", "+", "e5", "5.", ".5", "++1"])
STRINGS = st.one_of(NUMBERISH, WORDS, st.text(max_size=8), st.builds(lambda a, b: a + b, WORDS, NUMBERISH))
MARKER_SETS = st.sampled_from([values.DEFAULT_MARKERS, values.marker_set(["?"]), values.marker_set(["-999", "NA"])])


@hypothesis_settings(max_examples=400, deadline=None)
@given(texts=st.lists(STRINGS, min_size=1, max_size=8), markers=MARKER_SETS)
def test_the_arrow_reading_of_a_column_is_values_number_on_each_value(texts, markers):
    # A whole column at once (so its fast path is tested too) and each value alone.
    expected = [python_reading(text, markers) for text in texts]
    assert arrow_readings(texts, markers) == expected
    assert [arrow_readings([text], markers)[0] for text in texts] == expected


@hypothesis_settings(max_examples=300, deadline=None)
@given(text=STRINGS)
def test_number_mask_and_missing_mask_after_trimming_are_the_number_rule(text):
    if len(text) > values.MAX_NUMBER_CHARS or values._NUMBER_RE.fullmatch(text.strip()) and math.isinf(float(text.strip())):
        return  # refused by its length, or a number past a float's range: read_numbers covers those
    column = pa.array([text])
    trimmed = pc.utf8_trim_whitespace(column)
    accepted = values.missing_mask(column)[0].as_py() or values.number_mask(trimmed)[0].as_py()
    assert accepted == (python_reading(text, values.DEFAULT_MARKERS) != ("refused",))


@hypothesis_settings(max_examples=300, deadline=None)
@given(texts=st.lists(STRINGS, min_size=1, max_size=8), markers=MARKER_SETS)
def test_every_door_reads_a_value_as_values_number_does(texts, markers):
    """The API and the predict page (modelhub.inputs) and the fast path read the same strings
    as the CSV reader and batch scoring (read_numbers, above): one rule, the same answer."""
    from modelhub import fastpath, inputs

    expected = [python_reading(text, markers) for text in texts]
    numbers, bad = inputs._numbers(list(texts), markers)
    refused = {i for i, _ in bad}
    api = [("refused",) if i in refused else ("missing",) if math.isnan(n) else ("number", n) for i, n in enumerate(numbers)]
    assert api == expected
    if markers != values.DEFAULT_MARKERS:
        return  # the fast path reads raw values as training.features_frame does; the doors apply a schema's own markers first
    for text, reading in zip(texts, expected):
        try:
            read = fastpath._number(text)
        except fastpath._Unusual:
            continue  # the Pipeline reads it; the API never sends it there unchecked
        if reading[0] == "number":
            assert read == reading[1]
        else:  # only plain numbers and "" pass the fast path's own check
            assert text == "" and math.isnan(read)
