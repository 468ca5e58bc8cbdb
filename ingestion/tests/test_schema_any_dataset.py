"""Nothing assumes the demo: a loan-default dataset of the test's own goes through the whole loop.

Different column names, a target labelled "default"/"repaid", no id column, semicolons.
"""
import csv
from pathlib import Path

import numpy as np
import pytest

from ingestion.models import DatasetSchema, DataBatch
from ingestion.schema import SchemaError, learn_schema
from ingestion.services import create_schema, get_data_stats, ingest_path
from modelhub.models import ModelVersion, TrainingRun
from modelhub.retraining import retrain_now
from modelhub.setup import initialise

COLUMNS = ["applicant_income", "loan_amount", "term_months", "credit_grade", "home_ownership", "purpose", "past_delinquencies", "outcome"]
GRADES = ["A", "B", "C", "D", "E"]


def write_loans(path: Path, rows: int, *, seed: int, delimiter: str = ";") -> Path:
    """Synthetic loans whose default risk follows grade, debt-to-income and delinquencies."""
    rng = np.random.default_rng(seed)
    income = rng.lognormal(10.8, 0.4, rows).round(-2)
    amount = (income * rng.uniform(0.05, 0.6, rows)).round(-2)
    term = rng.choice([36, 60], rows)
    grade = rng.choice(len(GRADES), rows, p=[0.25, 0.3, 0.25, 0.15, 0.05])
    home = rng.choice(["RENT", "OWN", "MORTGAGE"], rows)
    purpose = rng.choice(["car", "debt consolidation", "home improvement", "small business"], rows)
    delinquencies = rng.poisson(0.4, rows)
    risk = -3.2 + 0.9 * grade + 4.0 * amount / income + 0.6 * delinquencies + 0.3 * (term == 60)
    default = rng.random(rows) < 1 / (1 + np.exp(-risk))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(COLUMNS)
        for i in range(rows):
            writer.writerow([f"{income[i]:.0f}", f"{amount[i]:.0f}", term[i], GRADES[grade[i]], home[i], purpose[i],
                             delinquencies[i], "default" if default[i] else "repaid"])
    return path


@pytest.fixture
def loans(tmp_path):
    folder = tmp_path / "loans"
    folder.mkdir()
    return folder


def test_it_learns_the_schema_of_a_semicolon_file_without_an_id_column(loans):
    learned = learn_schema(write_loans(loans / "loans.csv", 300, seed=1), target="outcome")

    assert learned.target == "outcome"
    assert learned.id_column == ""
    # "default" is no conventional positive word, so the rarer class is taken as positive.
    assert (learned.positive_label, learned.negative_label) == ("default", "repaid")
    kinds = {feature["name"]: feature["kind"] for feature in learned.features}
    assert kinds == {
        "applicant_income": "numeric", "loan_amount": "numeric", "term_months": "numeric", "credit_grade": "categorical",
        "home_ownership": "categorical", "purpose": "categorical", "past_delinquencies": "numeric",
    }
    grades = next(feature for feature in learned.features if feature["name"] == "credit_grade")
    assert grades["categories"] == GRADES


def test_a_loan_dataset_goes_through_init_ingest_and_retraining(loans, cl_home, transactional_db, settings):
    settings.CL_CV_FOLDS = 2

    first = initialise(data=write_loans(loans / "loans_2023.csv", 1200, seed=2), target="outcome")

    assert first.version == "1.0"
    schema = DatasetSchema.current()
    assert schema.columns == COLUMNS[:-1] + ["outcome"]
    assert schema.labels == ["repaid", "default"]
    assert get_data_stats()["master_rows"] == 1200

    batch = ingest_path(write_loans(loans / "loans_2024_q1.csv", 500, seed=3))

    assert batch.status == DataBatch.Status.STAGED, batch.report
    assert batch.report["delimiter"] == ";"
    stats = get_data_stats()
    assert (stats["staged_files"], stats["staged_rows"]) == (1, 500)
    assert set(stats["class_balance"]) == {"default", "repaid"}
    assert set(stats["columns"]) == set(COLUMNS[:-1])

    run = retrain_now()

    assert run.status == TrainingRun.Status.DEPLOYED, (run.reasons, run.error)
    assert ModelVersion.active().version == "1.1"
    assert run.details["rows"] == 1700
    assert run.details["replaced_ids"] == 0  # no id column: no row replaces another
    stats = get_data_stats()
    assert (stats["master_rows"], stats["staged_files"]) == (1700, 0)
    assert sum(v["rows"] for v in stats["class_balance"].values()) == 1700


def test_a_loan_system_refuses_a_file_with_the_demo_columns(loans, cl_home, db, demo):
    create_schema(learn_schema(write_loans(loans / "loans.csv", 200, seed=4), target="outcome"))

    batch = ingest_path(demo.write("telco.csv", slice(0, 50)))

    assert batch.status == DataBatch.Status.REJECTED
    missing = {error["column"] for error in batch.errors if error["code"] == "missing_column"}
    assert missing == set(COLUMNS)


def test_a_comma_file_with_a_bom_and_padded_labels_is_read_like_the_semicolon_one(loans, cl_home, db):
    create_schema(learn_schema(write_loans(loans / "loans.csv", 200, seed=5), target="outcome"))
    plain = write_loans(loans / "comma.csv", 100, seed=6, delimiter=",")
    text = plain.read_text(encoding="utf-8").replace(",default\n", ", default \n").replace(",B,", ", B ,")
    padded = loans / "padded.csv"
    padded.write_bytes(b"\xef\xbb\xbf" + text.encode())

    batch = ingest_path(padded)

    assert batch.status == DataBatch.Status.STAGED, batch.errors
    assert batch.report["delimiter"] == ","
    assert set(batch.stats["labels"]) == {"default", "repaid"}
    assert "B" in batch.stats["categorical"]["credit_grade"]["counts"]
    assert " B " not in batch.stats["categorical"]["credit_grade"]["counts"]


def test_learning_a_schema_from_an_unreadable_file_says_why_instead_of_crashing(loans):
    image = loans / "scan.csv"
    image.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    ragged = write_loans(loans / "ragged.csv", 50, seed=7)
    ragged.write_text(ragged.read_text() + "1;2;3\n")

    with pytest.raises(SchemaError, match="PNG image"):
        learn_schema(image, target="outcome")
    with pytest.raises(SchemaError, match="could not be read as CSV: .*Expected 8 columns, got 3"):
        learn_schema(ragged, target="outcome")
