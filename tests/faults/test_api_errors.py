"""JSON errors for JSON callers (issue 23, item 6): every failure of the API answers its error shape
({"detail": ..., "errors": [...]}), never Django's HTML page, and every server error leaves its
traceback in the web server's log.

The database is stopped under a real gunicorn serving the site: a call whose token is known to the
web process fails in the operation, a call with a new token fails in authentication; both are a
JSON 503 with Retry-After, logged with the traceback, and the API answers again, without a restart,
once the database is back. An operation that raises anything else is a JSON 500, logged likewise.
"""
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from testing.instances import free_port
from testing.worker import API_TOKEN, ROOT, stop_group, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]


# An operation failing with an error of ours (not the database's), called as the site is served.
BROKEN_OPERATION = """
import json
from django.test import Client
from api import endpoints
def broken(*args, **kwargs):
    raise RuntimeError("a fault of ours, on purpose")
endpoints.ModelVersion.objects.order_by = broken
response = Client(HTTP_HOST="127.0.0.1", raise_request_exception=False).get(
    "/api/v1/models", HTTP_AUTHORIZATION="Bearer {token}")
print("RESULT:" + json.dumps({{"code": response.status_code, "type": response["Content-Type"],
                               "body": response.content.decode()}}))
"""


def call(port: int, path: str, token: str, method: str = "GET") -> tuple[int, dict, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     headers={"Authorization": f"Bearer {token}", "Host": "127.0.0.1"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as answer:
        return answer.code, dict(answer.headers), answer.read().decode()


def error_shape(code: int, headers: dict, body: str) -> dict:
    assert headers.get("Content-Type", "").startswith("application/json"), (code, headers, body[:300])
    parsed = json.loads(body)
    assert isinstance(parsed.get("detail"), str) and parsed["detail"] and parsed.get("errors") == [], parsed
    return parsed


@pytest.fixture
def served(fault_site, tmp_path):
    """gunicorn serving the fault site (one sync worker, as production's), its log in a file."""
    port, log = free_port(), tmp_path / "web.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "gunicorn"), "clsite.wsgi:application", "-b", f"127.0.0.1:{port}",
                                 "-w", "1", "--timeout", "60"], cwd=ROOT, env=fault_site.env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    fault_site.web_log = log

    def answering():
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status
        except urllib.error.HTTPError as answer:
            return answer.code
        except OSError:
            return None

    try:
        wait_for(answering, timeout=60, what="gunicorn to answer", site=fault_site, proc=proc)
        yield port
    finally:
        stop_group(proc)


def test_the_database_stopped_gives_json_503s_with_a_logged_traceback_and_the_api_recovers(fault_site, served):
    token = fault_site.shell(API_TOKEN.format(username="fault-viewer", role="VIEWER"))["token"]
    assert call(served, "/api/v1/models", token)[0] == 200  # the web process now knows this token

    fault_site.postgres.stop()
    try:
        started = time.monotonic()
        in_operation = call(served, "/api/v1/models", token)
        in_auth = call(served, "/api/v1/models", "a-token-it-must-look-up-in-the-database")
        seconds = time.monotonic() - started
    finally:
        fault_site.postgres.start()

    for code, headers, body in (in_operation, in_auth):
        assert code == 503, (code, body[:500])
        assert "database does not answer" in error_shape(code, headers, body)["detail"]
        assert headers.get("Retry-After") == "30"
    assert seconds < 10, seconds
    log = fault_site.web_log.read_text(errors="replace")
    assert log.count("Service Unavailable: /api/v1/models") == 2, log[-3000:]
    assert log.count("Traceback (most recent call last)") >= 2 and "OperationalError" in log, log[-3000:]
    assert "api/auth.py" in log, "the failure in authentication is logged where it happened"

    # Back without a restart: the same web process answers from the database again.
    code, _, body = call(served, "/api/v1/models", token)
    assert code == 200 and json.loads(body)[0]["version"] == "1.0", body[:300]


def test_an_unhandled_error_unknown_address_and_wrong_method_answer_json(fault_site, served):
    token = fault_site.shell(API_TOKEN.format(username="fault-viewer", role="VIEWER"))["token"]
    unknown = call(served, "/api/v1/no-such-thing", token)
    assert unknown[0] == 404 and "/api/v1/no-such-thing" in error_shape(*unknown)["detail"]
    wrong = call(served, "/api/v1/models", token, method="DELETE")
    assert wrong[0] == 405 and "DELETE is not allowed" in error_shape(*wrong)["detail"]
    assert "GET" in wrong[1].get("Allow", ""), wrong[1]

    # A fault of ours inside an operation, through the site's own request handling and logging.
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", BROKEN_OPERATION.format(token=token)], cwd=ROOT,
                          env=fault_site.env, capture_output=True, text=True, timeout=120)
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT:"))[len("RESULT:"):])
    assert result["code"] == 500, result
    assert "a fault of ours" in error_shape(500, {"Content-Type": result["type"]}, result["body"])["detail"]
    assert "Internal Server Error: /api/v1/models" in done.stderr, done.stderr[-2000:]
    assert "Traceback (most recent call last)" in done.stderr and "RuntimeError: a fault of ours, on purpose" in done.stderr
    assert "on purpose" not in result["body"], "the error's own text stays in the log"
