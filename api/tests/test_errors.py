"""Every failure of the API answers its error shape, {"detail": ..., "errors": [...]}, and the schema
says so (issue 23, item 6). A database that stops under a real server: tests/faults/test_api_errors.py."""
from django.test import Client


def error(response, status: int) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"] and body["errors"] == [], body
    return body


def test_an_unknown_address_a_wrong_method_and_a_refusal_answer_the_error_shape(tokens):
    client = Client(HTTP_AUTHORIZATION=f"Bearer {tokens['viewer']}")
    assert "/api/v1/nothing-here" in error(client.get("/api/v1/nothing-here"), 404)["detail"]
    wrong = client.delete("/api/v1/models")
    assert "DELETE is not allowed" in error(wrong, 405)["detail"] and "GET" in wrong["Allow"]
    assert "needs modelhub.retrain_model" in error(client.post("/api/v1/runs"), 403)["detail"]
    assert "Bearer" in error(Client().get("/api/v1/models"), 401)["detail"]


def test_the_schema_tells_that_any_operation_may_fail_with_500_or_503_and_what_a_run_waiting_for_the_broker_says(tokens):
    schema = Client().get("/api/v1/openapi.json", HTTP_AUTHORIZATION=f"Bearer {tokens['viewer']}").json()
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            for status in ("500", "503"):
                answer = operation["responses"][status]
                assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut"), (method, path, status)
    runs = schema["paths"]["/api/v1/runs"]["post"]["responses"]["202"]
    assert "waiting_for_broker" in runs["description"] and "broker" in runs["description"]
    assert "waiting_for_broker" in schema["components"]["schemas"]["RunRequested"]["properties"]
