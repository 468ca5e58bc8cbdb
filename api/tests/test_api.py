"""The JSON API: tokens, roles, predictions in row order with every problem by row and field,
versions, uploads, runs and scorings through the same services as the pages."""
import json

import numpy as np
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from api import auth
from api.models import ApiToken
from api.schemas import PredictOut
from api.services import revoke_token
from audit.models import AuditEvent
from modelhub import scoring, serving, training
from modelhub.models import ScoringJob, TrainingRun
from modelhub.tests.commands import run_command


def call(method: str, path: str, key: str | None = None, **kwargs):
    client = Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    if "json" in kwargs:
        kwargs = {"data": json.dumps(kwargs.pop("json")), "content_type": "application/json", **kwargs}
    return getattr(client, method)(f"/api/v1{path}", **headers, **kwargs)


def demo_rows(demo, start: int, stop: int) -> list[dict]:
    frame = demo.frame.iloc[start:stop].drop(columns=["customer_id", "churn"]).replace({"": None})
    return frame.to_dict(orient="records")


def test_predict_answers_in_row_order_as_the_pipeline_does(tokens, demo):
    rows = demo_rows(demo, 3000, 3050)
    response = call("post", "/predict", tokens["viewer"], json={"rows": rows})

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["version"] == "1.0" and len(body["predictions"]) == 50
    assert PredictOut.model_validate(body).model_dump() == body  # the documented schema, exactly
    loaded = serving.active()
    version, model = loaded.version, loaded.model
    expected = training.positive_proba(model, training.features_frame(demo.frame.iloc[3000:3050].replace({"": None}), version.schema))
    assert np.allclose([p["probability"] for p in body["predictions"]], expected, atol=1e-6)
    assert version.threshold != 0.5  # chosen when it was trained (maximise F1)
    assert [p["label"] for p in body["predictions"]] == ["Yes" if p >= version.threshold else "No" for p in expected]
    one = call("post", "/predict", tokens["viewer"], json={"rows": rows[7:8]}).json()
    assert one["predictions"][0] == body["predictions"][7]


def test_bad_rows_get_400_with_every_problem_by_row_and_field(tokens, demo):
    rows = demo_rows(demo, 3000, 3003)
    rows[0]["tenure"] = "twelve"
    rows[1]["contract"] = 12
    rows[2]["colour"] = "red"
    rows[2]["monthly_charges"] = True
    response = call("post", "/predict", tokens["viewer"], json={"rows": rows})
    assert response.status_code == 400
    errors = {(e["row"], e["field"]): e["message"] for e in response.json()["errors"]}
    assert errors == {(0, "tenure"): "'twelve' is not a number", (1, "contract"): "12 is not text; categories are strings",
                      (2, "colour"): "not a feature of the model", (2, "monthly_charges"): "True is not a number; send 0 or 1"}
    for body, expected in (({"rows": []}, "send at least one row"), ({"rows": [{}] * 10_001}, "send at most 10,000")):
        response = call("post", "/predict", tokens["viewer"], json=body)
        assert response.status_code == 400 and expected in response.json()["errors"][0]["message"]
    for broken in ({"rows": "x"}, {"rows": [1, 2]}, {}):
        response = call("post", "/predict", tokens["viewer"], json=broken)
        assert response.status_code == 400 and response.json()["errors"], broken
    response = call("post", "/predict", tokens["viewer"], data="{not json", content_type="application/json")
    assert response.status_code == 400


def test_no_token_a_wrong_token_and_a_revoked_one_get_401_and_a_role_without_the_permission_403(tokens, users, demo):
    rows = demo_rows(demo, 3000, 3001)
    assert call("post", "/predict", json={"rows": rows}).status_code == 401
    response = call("post", "/predict", "cl_not-a-real-token", json={"rows": rows})
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Bearer"
    assert call("post", "/predict", tokens["nobody"], json={"rows": rows}).status_code == 403
    assert call("post", "/runs", tokens["analyst"]).status_code == 403
    token = ApiToken.objects.get(user=users["viewer"])
    revoke_token(token=token, actor=users["admin"])
    auth.forget()  # another process, or this one TOKEN_CACHE_SECONDS later
    assert call("post", "/predict", tokens["viewer"], json={"rows": rows}).status_code == 401
    assert AuditEvent.objects.filter(action="auth.login_failed", target__startswith="api token cl_not-a-r").exists()


def test_api_calls_take_the_short_middleware_stack_with_the_sites_header_and_https_rules(tokens, users, demo, settings):
    rows = demo_rows(demo, 3000, 3001)
    answer = call("post", "/predict", tokens["viewer"], json={"rows": rows})
    assert answer.status_code == 200
    assert answer["Content-Length"] == str(len(answer.content)) and answer["X-Content-Type-Options"] == "nosniff"
    assert answer["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert not answer.cookies and "Cookie" not in answer.get("Vary", "")  # no session, no CSRF cookie
    logged_in = Client()
    logged_in.force_login(users["admin"])
    assert logged_in.post("/api/v1/predict", {"rows": rows}, content_type="application/json").status_code == 401
    assert logged_in.get("/").headers["X-Frame-Options"] == "DENY"  # pages keep the site's stack
    assert call("get", "/no-such-call", tokens["viewer"]).status_code == 404  # the 404 page needs no session
    settings.SECURE_SSL_REDIRECT = True
    redirected = call("post", "/predict", tokens["viewer"], json={"rows": rows})
    assert redirected.status_code == 301 and redirected["Location"].startswith("https://")


def test_repeated_bad_tokens_from_one_address_are_locked_out(tokens, settings):
    for i in range(settings.AXES_FAILURE_LIMIT - 1):
        assert call("get", "/models", f"cl_guess{i}").status_code == 401
    locked = call("get", "/models", "cl_one-guess-too-many")
    assert locked.status_code == 429 and "try again in 15 minutes" in locked.json()["detail"] and locked["Retry-After"] == "900"
    assert call("get", "/models", tokens["viewer"]).status_code == 429  # even a good token not yet known here


def test_tokens_are_stored_hashed_shown_once_and_record_their_last_use(tokens, users):
    key = tokens["analyst"]
    token = ApiToken.objects.get(user=users["analyst"])
    assert key not in token.key_hash and token.prefix == key[:10] and token.last_used_at is None
    assert call("get", "/models", key).status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_the_api_token_command_prints_the_token_as_its_last_line(transactional_db, users, cl_home):
    code, out, err = run_command("api_token", "analyst", "--name", "crm")
    assert code == 0, err
    key = out.strip().splitlines()[-1]
    assert key.startswith("cl_") and len(key) > 40
    assert ApiToken.objects.get(name="crm").key_hash != key
    assert AuditEvent.objects.filter(action="api.token_created", details__user="analyst").exists()
    code, _, err = run_command("api_token", "ghost")
    assert code == 1 and "there is no user 'ghost'" in err


def test_models_and_one_model_show_status_metrics_and_gates(tokens):
    listing = call("get", "/models", tokens["viewer"]).json()
    assert [v["version"] for v in listing] == ["1.0"] and listing[0]["status"] == "active"
    detail = call("get", "/models/1.0", tokens["viewer"]).json()
    assert detail["accuracy"] > 0.7 and "confusion_matrix" in detail["metrics"] and "roc_curve" not in detail["metrics"]
    assert detail["deployed_at"] and isinstance(detail["gates"], list)
    assert call("get", "/models/9.9", tokens["viewer"]).status_code == 404
    assert call("get", "/models/banana", tokens["viewer"]).status_code == 404


def test_an_upload_gets_the_same_checks_and_report_as_the_page(tokens, demo):
    good = demo.write("api_good.csv", slice(3000, 3100)).read_bytes()
    response = call("post", "/batches", tokens["analyst"], data={"file": SimpleUploadedFile("good.csv", good)})
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "staged" and response.json()["rows"] == 100
    bad = good.replace(b",No\n", b",Maybe\n", 1)
    response = call("post", "/batches", tokens["analyst"], data={"file": SimpleUploadedFile("bad.csv", bad)})
    assert response.status_code == 422 and response.json()["errors"][0]["code"] == "unknown_label"
    response = call("post", "/batches", tokens["analyst"], data={"file": SimpleUploadedFile("again.csv", good)})
    assert response.status_code == 409 and "already uploaded" in response.json()["detail"]
    assert call("post", "/batches", tokens["viewer"], data={"file": SimpleUploadedFile("v.csv", good)}).status_code == 403


def test_asking_for_a_run_joins_the_one_queued_and_its_state_can_be_read(tokens):
    first = call("post", "/runs", tokens["engineer"])
    second = call("post", "/runs?force=true", tokens["engineer"])
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json()["created"] and not second.json()["created"]
    run_id = first.json()["run"]["id"]
    assert second.json()["run"]["id"] == run_id and TrainingRun.objects.get(pk=run_id).trigger == "api"
    state = call("get", f"/runs/{run_id}", tokens["viewer"]).json()
    assert state["status"] == "queued" and state["stages"] == []
    assert call("get", "/runs/999999", tokens["viewer"]).status_code == 404


def test_a_scoring_is_submitted_followed_and_downloaded(tokens, demo):
    body = demo.frame.iloc[3000:3200].drop(columns=["churn"]).to_csv(index=False).encode()
    response = call("post", "/scorings", tokens["analyst"], data={"file": SimpleUploadedFile("s.csv", body)})
    assert response.status_code == 202 and response.json()["status"] == "queued"
    job_id = response.json()["id"]
    scoring.run(ScoringJob.objects.get(pk=job_id))  # the worker's part
    state = call("get", f"/scorings/{job_id}", tokens["analyst"]).json()
    assert state["status"] == "done" and state["rows_done"] == 200 and state["progress"] == 1.0
    result = call("get", state["result"].removeprefix("/api/v1"), tokens["analyst"])
    assert b"".join(result.streaming_content).count(b"\n") == 201
    assert call("get", f"/scorings/{job_id}", tokens["engineer"]).status_code == 404  # not his
    wrong = call("post", "/scorings", tokens["analyst"], data={"file": SimpleUploadedFile("w.csv", b"a,b\n1,2\n")})
    assert wrong.status_code == 400 and "missing columns" in wrong.json()["detail"]


def test_the_openapi_schema_lists_every_operation_and_needs_a_token_or_a_login(tokens, users):
    assert call("get", "/openapi.json").status_code == 401
    schema = call("get", "/openapi.json", tokens["viewer"]).json()
    assert schema["openapi"].startswith("3.")
    operations = {(path, method) for path, item in schema["paths"].items() for method in item}
    assert operations >= {("/api/v1/predict", "post"), ("/api/v1/models", "get"), ("/api/v1/models/{version}", "get"),
                          ("/api/v1/batches", "post"), ("/api/v1/runs", "post"), ("/api/v1/runs/{run_id}", "get"),
                          ("/api/v1/scorings", "post"), ("/api/v1/scorings/{job_id}", "get")}
    assert schema["components"]["securitySchemes"]["TokenAuth"]["scheme"] == "bearer"
    client = Client()
    assert client.get("/api/v1/docs").status_code == 302  # the interactive docs: for people logged in
    client.force_login(users["viewer"])
    docs = client.get("/api/v1/docs")
    assert docs.status_code == 200 and b"swagger-ui" in docs.content and b"cdn" not in docs.content.lower()


def test_admins_make_and_revoke_tokens_in_the_admin_and_both_are_audited(ready, users):
    client = Client()
    client.force_login(users["admin"])
    response = client.post("/admin/api/apitoken/add/", {"user": users["analyst"].pk, "name": "nightly"}, follow=True)
    shown = " ".join(str(m) for m in response.context["messages"])
    key = shown.split("Token for analyst: ")[1].split(" ")[0]
    token = ApiToken.objects.get(name="nightly")
    assert token.key_hash != key and token.prefix == key[:10]
    assert call("get", "/models", key).status_code == 200
    client.post("/admin/api/apitoken/", {"action": "revoke", "_selected_action": [token.pk]})
    token.refresh_from_db()
    auth.forget()
    assert token.revoked_at is not None and call("get", "/models", key).status_code == 401
    assert [e.action for e in AuditEvent.objects.filter(action__startswith="api.token").order_by("pk")] == [
        "api.token_created", "api.token_revoked"]


def test_the_schema_tells_every_status_bound_and_required_part(tokens):
    schema = call("get", "/openapi.json", tokens["viewer"]).json()
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            answers = operation["responses"]
            assert {"401", "403", "429"} <= set(answers), (method, path)
            assert answers["401"]["headers"]["WWW-Authenticate"]["required"]
            assert all("application/json" in answer["content"] for code, answer in answers.items() if int(code) >= 400)
    models = {p["name"]: p["schema"] for p in schema["paths"]["/api/v1/models"]["get"]["parameters"]}
    assert (models["limit"]["minimum"], models["limit"]["maximum"], models["offset"]["minimum"]) == (1, 1000, 0)
    for path in ("/api/v1/batches", "/api/v1/scorings"):
        operation = schema["paths"][path]["post"]
        assert operation["requestBody"]["content"]["multipart/form-data"]["schema"]["required"] == ["file"]
        assert {"400", "413"} <= set(operation["responses"])
    assert {"409", "422"} <= set(schema["paths"]["/api/v1/batches"]["post"]["responses"])
    result = schema["paths"]["/api/v1/scorings/{job_id}/result"]["get"]["responses"]["200"]
    assert "text/csv" in result["content"] and result["headers"]["Content-Disposition"]["required"]
    predict = schema["paths"]["/api/v1/predict"]["post"]
    rows = predict["requestBody"]["content"]["application/json"]["schema"]["properties"]["rows"]
    assert (rows["minItems"], rows["maxItems"]) == (1, 10_000) and {"400", "413", "503"} <= set(predict["responses"])


def test_paging_the_models_out_of_bounds_is_a_400_with_the_problem(tokens):
    for query, field in (("limit=-1", "query.limit"), ("limit=0", "query.limit"), ("limit=1001", "query.limit"),
                         ("limit=x", "query.limit"), ("offset=-1", "query.offset"), ("offset=99999999999999999999", "query.offset")):
        response = call("get", f"/models?{query}", tokens["viewer"])
        assert response.status_code == 400, query
        assert response.json()["detail"] and [e["field"] for e in response.json()["errors"]] == [field], query
    assert [v["version"] for v in call("get", "/models?limit=1&offset=0", tokens["viewer"]).json()] == ["1.0"]
    assert call("get", "/models?offset=5", tokens["viewer"]).json() == []
    assert call("get", "/runs/0", tokens["viewer"]).status_code == 400
    assert call("get", f"/runs/{2**63}", tokens["viewer"]).status_code == 400
    assert call("get", "/models/1.99999999999999999999", tokens["viewer"]).status_code == 404
