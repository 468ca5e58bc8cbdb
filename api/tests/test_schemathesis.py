"""The API answers as its OpenAPI schema says, for every role: schemathesis reads the live
schema (/api/v1/openapi.json, with the role's token) and sends each operation valid and invalid
requests through the WSGI application, with every check it has (server errors, status codes,
content types, response bodies and headers against the schema, valid data accepted, invalid
data refused, missing or invalid credentials refused, methods not allowed answered with 405
and Allow, ...). Any finding fails the test.

The system is the session's initialised one (model v1.0 active, one user per role); each role's
run happens inside a transaction that is rolled back, so what it asks for (runs, uploads,
scorings, a deployment) is gone afterwards and nothing is enqueued (that happens on commit).
"""
import pytest
import requests
import schemathesis
from axes.models import AccessAttempt
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from schemathesis.transport.requests import prepare_multipart_parts
from schemathesis.transport.wsgi import WSGI_TRANSPORT
from werkzeug.test import Client

from api import auth
from api.services import create_token
from modelhub import scoring
from modelhub.models import ScoringJob

pytestmark = pytest.mark.slow

ROLES = ("viewer", "analyst", "engineer", "admin")
SEED = 20260501
EXAMPLES = 25


def _operation(operation_id: str, **checks) -> dict:
    return {"include-operation-id": operation_id, "checks": checks}


def _accepting(*statuses: str) -> dict:
    """positive_data_acceptance for an operation whose valid requests may still be refused for their
    content, which no schema can tell beforehand (a CSV's columns and labels, a row's feature names)."""
    return {"expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "429", *statuses]}


CONFIG = {
    "seed": SEED,
    "generation": {"mode": "all", "max-examples": EXAMPLES, "no-shrink": True, "deterministic": True, "database": "none"},
    # Every check is on by default; max_response_time is a budget rather than a check of the schema.
    "checks": {"enabled": True},
    "operations": [
        # Feature names and values are checked against the active model: 400 by row and field.
        _operation("api_endpoints_predict", positive_data_acceptance=_accepting("400")),
        # A well-formed CSV may still be refused by the checks (422, with the report).
        _operation("api_endpoints_upload", positive_data_acceptance=_accepting("422")),
        # A CSV without the model's columns is refused (400, with why).
        _operation("api_endpoints_submit_scoring", positive_data_acceptance=_accepting("400")),
    ],
}


@pytest.fixture(scope="module")
def wsgi_app():
    """Django's WSGI application, as a server runs it, except that a request does not close the
    database connection that holds the test's transaction (Django's test client does the same)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    werkzeugs = WSGI_TRANSPORT._serializers["multipart/form-data"]
    WSGI_TRANSPORT._serializers["multipart/form-data"] = _multipart_as_requests_sends_it(werkzeugs)
    handler = WSGIHandler()

    def app(environ, start_response):
        # With the client's address, and read and closed at once, as a server does (closing ends the
        # request, and its uploaded files with it); werkzeug's test client gives no REMOTE_ADDR.
        environ.setdefault("REMOTE_ADDR", "127.0.0.1")
        answer = handler(environ, start_response)
        try:
            return [b"".join(answer)]
        finally:
            answer.close()

    yield app
    WSGI_TRANSPORT._serializers["multipart/form-data"] = werkzeugs
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def _multipart_as_requests_sends_it(werkzeugs):
    """schemathesis' WSGI transport has werkzeug's test client encode a form, which leaves out the
    blank line that ends an empty file part's headers (werkzeug 3.1, sansio MultipartEncoder): the
    part is then unreadable and the request is a malformed one that no real client sends. So the
    form is encoded as requests (and schemathesis' HTTP transport) encode it."""
    def serialize(ctx, value):
        files, data = prepare_multipart_parts(ctx, value) if isinstance(value, dict) else (None, None)
        if not files:
            return werkzeugs(ctx, value)
        prepared = requests.PreparedRequest()
        prepared.prepare_headers(None)
        prepared.prepare_body(data, files)
        return {"data": prepared.body, "content_type": prepared.headers["Content-Type"]}
    return serialize


@pytest.fixture(params=ROLES)
def api_schema(request, ready, users, wsgi_app, settings):
    # schemathesis sends invalid tokens on purpose (ignored_auth): they must get 401, not lock the
    # test's address out; the lock-out itself is tested in test_api and tests/test_lockout.
    settings.AXES_FAILURE_LIMIT = 1_000_000
    # schemathesis 4.32's lazy loader names each operation's subtest through `Node._nodeid`, which
    # pytest 9 no longer has (only the `nodeid` property).
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid
    auth.forget()
    yield _schema(wsgi_app, create_token(user=users[request.param], name="schemathesis")[1])
    auth.forget()


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_every_operation_answers_as_the_schema_says(case):
    case.call_and_validate()


def test_the_answers_random_data_cannot_reach_match_the_schema_too(ready, users, wsgi_app, demo, settings):
    """Random data never makes a valid prediction, upload or scoring, nor finds a run or a scoring
    that exists: those answers (and 401, 403, 429) are made on purpose here, and checked against
    the schema with every check as above."""
    settings.AXES_FAILURE_LIMIT = 1_000_000  # ignored_auth re-sends each 2xx request with an invalid token
    auth.forget()
    keys = {role: create_token(user=users[role], name="schemathesis")[1] for role in ("analyst", "engineer", "nobody")}
    schema = _schema(wsgi_app, keys["analyst"])

    def call(role, method, path, status, **kwargs):
        response = schema[path][method].Case(**kwargs).call_and_validate(headers={"Authorization": f"Bearer {keys[role]}"})
        assert response.status_code == status, (method, path, response.status_code, response.text[:500])
        return response

    rows = demo.frame.iloc[3000:3005].drop(columns=["customer_id", "churn"]).replace({"": None}).to_dict(orient="records")
    call("analyst", "POST", "/api/v1/predict", 200, body={"rows": rows}, media_type="application/json")
    call("analyst", "POST", "/api/v1/predict", 400, body={"rows": [{**rows[0], "tenure": "twelve"}]}, media_type="application/json")
    call("nobody", "POST", "/api/v1/predict", 403, body={"rows": rows}, media_type="application/json")
    call("analyst", "GET", "/api/v1/models", 200)
    call("nobody", "GET", "/api/v1/models", 403)
    call("analyst", "GET", "/api/v1/models/{version}", 200, path_parameters={"version": "1.0"})
    call("engineer", "POST", "/api/v1/models/{version}/activate", 409, path_parameters={"version": "1.0"},
         body={"reason": "again"}, media_type="application/json")

    good = demo.write("schemathesis_good.csv", slice(3000, 3100)).read_bytes()
    upload = {"media_type": "multipart/form-data"}
    call("analyst", "POST", "/api/v1/batches", 201, body={"file": good}, **upload)
    call("analyst", "POST", "/api/v1/batches", 409, body={"file": good}, **upload)
    call("analyst", "POST", "/api/v1/batches", 422, body={"file": good.replace(b",No\n", b",Maybe\n", 1)}, **upload)

    to_score = demo.frame.iloc[3000:3050].drop(columns=["churn"]).to_csv(index=False).encode()
    job_id = call("analyst", "POST", "/api/v1/scorings", 202, body={"file": to_score}, **upload).json()["id"]
    scoring.run(ScoringJob.objects.get(pk=job_id))  # the worker's part
    call("analyst", "GET", "/api/v1/scorings/{job_id}", 200, path_parameters={"job_id": job_id})
    result = call("analyst", "GET", "/api/v1/scorings/{job_id}/result", 200, path_parameters={"job_id": job_id})
    assert result.headers["content-type"] == ["text/csv"] and result.content.count(b"\n") == 51
    call("engineer", "GET", "/api/v1/scorings/{job_id}/result", 404, path_parameters={"job_id": job_id})  # not his
    call("nobody", "GET", "/api/v1/scorings/{job_id}/result", 403, path_parameters={"job_id": job_id})

    run_id = call("engineer", "POST", "/api/v1/runs", 202).json()["run"]["id"]
    call("analyst", "GET", "/api/v1/runs/{run_id}", 200, path_parameters={"run_id": run_id})

    # 401 and, past the failure limit, 429 for the address: as documented (bodies and headers).
    AccessAttempt.objects.all().delete()  # the invalid tokens ignored_auth sent above
    settings.AXES_FAILURE_LIMIT = 3
    models = schema["/api/v1/models"]["GET"]
    client = Client(wsgi_app)
    statuses = []
    for attempt in range(4):
        response = client.get("/api/v1/models", headers={"Authorization": f"Bearer cl_guess{attempt}"})
        models.Case().validate_response(response)
        statuses.append(response.status_code)
    assert statuses == [401, 401, 429, 429], statuses


def _schema(app, key: str):
    config = schemathesis.Config.from_dict({**CONFIG, "auth": {"openapi": {"TokenAuth": {"bearer": key}}}})
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app, config=config, headers={"Authorization": f"Bearer {key}"})
