"""A prediction request gets an honest answer: what cannot be answered is a 400 naming it, what
the model has not seen is answered with warnings, a value of any length is judged in
milliseconds, and the documented 10,000 rows fit in one call."""
import json
import re
import time
from pathlib import Path

import pytest
from django.test import Client

from api.schemas import PredictOut
from api.tests.test_api import call, demo_rows
from modelhub import serving


def predict(key, rows, **kwargs):
    return call("post", "/predict", key, json={"rows": rows}, **kwargs)


def test_a_long_value_is_refused_in_milliseconds_whatever_its_length(tokens, demo):
    row = demo_rows(demo, 3000, 3001)[0]
    assert predict(tokens["viewer"], [row]).status_code == 200  # the model loaded and compiled: not what is timed
    for value in ("1" * 6_000 + "x", "1" * 100_000 + "x", "1" * 100_000):
        started = time.perf_counter()
        response = predict(tokens["viewer"], [{**row, "tenure": value}])
        seconds = time.perf_counter() - started
        assert response.status_code == 400, response.content
        assert "characters is not a number" in response.json()["errors"][0]["message"]
        assert seconds < 0.5, seconds


@pytest.mark.parametrize("value, message", [
    ("1e309", "not a finite number"), ("-1e400", "not a finite number"), (True, "send 0 or 1"), ("inf", "not a finite number"),
    ("1_000", "not a number"), ([1], "not a number"),
])
def test_values_that_are_not_finite_numbers_get_a_400_not_a_server_error(tokens, demo, value, message):
    row = demo_rows(demo, 3000, 3001)[0]
    response = predict(tokens["viewer"], [{**row, "tenure": value}])
    assert response.status_code == 400, response.content
    assert message in response.json()["errors"][0]["message"]


def test_a_huge_whole_number_gets_a_400(tokens, demo):
    row = demo_rows(demo, 3000, 3001)[0]
    body = json.dumps({"rows": [{**row, "tenure": 0}]}).replace('"tenure": 0', '"tenure": ' + "9" * 4000)
    response = call("post", "/predict", tokens["viewer"], data=body, content_type="application/json")
    assert response.status_code == 400, response.content


def test_an_empty_row_and_a_row_missing_features_never_missing_in_training_are_refused(tokens, demo, ready):
    empty = predict(tokens["viewer"], [{}])
    assert empty.status_code == 400 and len(empty.json()["errors"]) == 1, empty.json()  # the row, not each feature again
    assert "the row is empty" in empty.json()["errors"][0]["message"]
    # The README's three-field example: every feature left out and never missing in training is named.
    response = predict(tokens["viewer"], [{"tenure": 3, "contract": "Month-to-month", "monthly_charges": 70.5}])
    assert response.status_code == 400
    named = {e["field"] for e in response.json()["errors"]}
    never_missing = {name for name, seen in ready.profile.items() if seen["missing"] == 0}
    assert named == never_missing - {"tenure", "contract", "monthly_charges"} and len(named) > 10
    # A feature that was missing in training may be left out, and null and "NA" mean missing.
    sometimes = [name for name, seen in ready.profile.items() if seen["missing"] > 0]
    row = demo_rows(demo, 3000, 3001)[0]
    for missing in (None, "NA", " n/a ", ""):
        answer = predict(tokens["viewer"], [{**row, **{name: missing for name in sometimes}}])
        assert answer.status_code == 200, (missing, answer.content)


def test_unknown_categories_and_numbers_out_of_range_are_answered_with_warnings(tokens, demo, ready):
    rows = demo_rows(demo, 3000, 3003)
    rows[1]["contract"] = "Weekly"
    rows[2]["monthly_charges"] = -5
    response = predict(tokens["viewer"], rows)
    assert response.status_code == 200, response.content
    body = response.json()
    assert PredictOut.model_validate(body).model_dump() == body
    warnings = [p["warnings"] for p in body["predictions"]]
    assert warnings[0] == []
    assert warnings[1] == [{"field": "contract", "message": "'Weekly' is a category the model has not seen"}]
    assert warnings[2][0]["field"] == "monthly_charges" and "outside the range" in warnings[2][0]["message"]


def test_the_documented_10000_rows_fit_in_one_call_and_a_body_over_the_limit_gets_a_json_413(tokens, demo, settings):
    rows = (demo_rows(demo, 0, 2000) * 5)
    body = json.dumps({"rows": rows})
    assert len(body) > 2_621_440  # more than Django's request-body limit
    response = call("post", "/predict", tokens["viewer"], data=body, content_type="application/json")
    assert response.status_code == 200, response.content[:300]
    assert len(response.json()["predictions"]) == 10_000
    settings.CL_PREDICT_MAX_BYTES = 1000
    response = call("post", "/predict", tokens["viewer"], data=body, content_type="application/json")
    assert response.status_code == 413 and response["Content-Type"] == "application/json"
    assert "at most 1,000 bytes" in response.json()["detail"]


def test_the_page_the_api_and_the_fast_path_read_a_value_alike(tokens, demo, ready):
    """One rule: what the API accepts as a number is what the fast path and the Pipeline read."""
    row = demo_rows(demo, 3000, 3001)[0]
    loaded = serving.active()
    for text, number in (("12", 12.0), (" 12 ", 12.0), ("1.5e1", 15.0), (".5", 0.5), ("5.", 5.0)):
        answer = predict(tokens["viewer"], [{**row, "tenure": text}])
        expected = predict(tokens["viewer"], [{**row, "tenure": number}])
        assert answer.json()["predictions"] == expected.json()["predictions"], text
        assert loaded.predictor.proba_one({**row, "tenure": number}) == pytest.approx(answer.json()["predictions"][0]["probability"], abs=1e-6)


def test_the_readme_example_is_answered(tokens, ready):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    body = re.search(r"-d '(\{\"rows\".*?)' \\", readme, re.S).group(1)
    response = call("post", "/predict", tokens["viewer"], data=body, content_type="application/json")
    assert response.status_code == 200, response.content
    assert response.json()["predictions"][0]["warnings"] == []


def test_the_predict_page_refuses_and_warns_by_the_same_rules(users, ready, demo):
    client = Client()
    client.force_login(users["viewer"])
    row = {k: ("" if v is None else v) for k, v in demo_rows(demo, 3000, 3001)[0].items()}
    page = client.post("/predict/", {**row, "contract": ""}).content.decode()
    assert "was never missing in the model&#x27;s training data" in page and "Prediction by" not in page
    page = client.post("/predict/", {**row, "monthly_charges": "-5"}).content.decode()
    assert "Prediction by v1.0" in page and "outside the range of the training data" in page
