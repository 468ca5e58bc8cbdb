"""The web server's front asks the app, before it reads an upload's body, whether the caller may
upload there (clsite/gate.py): the same answer as the upload handler's, from the headers alone."""
import pytest
from axes.models import AccessAttempt
from django.test import Client

from api import auth
from api.services import create_token
from ingestion.uploads import upload_paths


def ask(client, path: str, method: str = "POST", **headers) -> int:
    return client.get("/__cl/upload-gate", HTTP_X_ORIGINAL_URI=path, HTTP_X_ORIGINAL_METHOD=method, **headers).status_code


def test_the_addresses_that_take_a_file_are_the_four_the_front_guards():
    assert upload_paths() == ["/api/v1/batches", "/api/v1/scorings", "/data/upload/", "/predict/batch/"]


@pytest.mark.parametrize("path", ["/data/upload/", "/predict/batch/"])
def test_pages_answer_by_the_session_s_user_and_role(ready, users, path):
    assert ask(Client(), path) == 401
    assert ask(Client(), path, method="GET") == 204  # the page itself decides
    for name, expected in (("nobody", 403), ("viewer", 403), ("analyst", 204), ("engineer", 204), ("admin", 204)):
        client = Client()
        client.force_login(users[name])
        assert ask(client, path) == expected, name
    viewer = Client()
    viewer.force_login(users["viewer"])
    assert ask(viewer, "/models/") == 403  # a page that takes no file


def test_api_calls_answer_by_the_token_and_a_wrong_token_counts_as_a_failed_login(ready, users):
    auth.forget()
    viewer, analyst = (create_token(user=users[name])[1] for name in ("viewer", "analyst"))
    for path in ("/api/v1/batches", "/api/v1/scorings"):
        assert ask(Client(), path) == 401
        assert ask(Client(), path, HTTP_AUTHORIZATION=f"Bearer {viewer}") == 403
        assert ask(Client(), path, HTTP_AUTHORIZATION=f"Bearer {analyst}") == 204
    assert not AccessAttempt.objects.exists()
    assert ask(Client(), "/api/v1/batches", HTTP_AUTHORIZATION="Bearer cl_not-a-token") == 401
    assert AccessAttempt.objects.get().failures_since_start == 1
    # An analyst logged in on the site is no token: the API's door needs one.
    client = Client()
    client.force_login(users["analyst"])
    assert ask(client, "/api/v1/batches") == 401
    auth.forget()
