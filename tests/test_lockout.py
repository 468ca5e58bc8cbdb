"""Login lock-out: failures count per username and per address, either reaching the limit locks,
and a successful login forgets only that username's failures, never another user's."""
import pytest
from django.conf import settings
from django.test import Client

from api import auth
from api.services import create_token
from testing.builders import PASSWORD


def login(client: Client, username: str, password: str, url: str = "/login/"):
    return client.post(url, {"username": username, "password": password, "next": "/"})


@pytest.mark.parametrize("url, target", [("/login/", "engineer"), ("/admin/login/", "admin")], ids=["site", "admin"])
def test_another_account_s_logins_do_not_reset_the_count_of_a_guessed_password(url, target, ready, users):
    # The replayed attack: a few guesses, then a good login as the attacker's own account, again and again.
    client = Client()
    answers = []
    for _ in range(5):
        answers += [login(client, target, "wrong password", url).status_code for _ in range(settings.AXES_FAILURE_LIMIT - 1)]
        login(client, "viewer", PASSWORD)
        client.logout()
    limit = settings.AXES_FAILURE_LIMIT
    assert answers[:limit - 1] == [200] * (limit - 1) and set(answers[limit - 1:]) == {429}
    assert login(client, target, PASSWORD, url).status_code == 429
    assert login(Client(REMOTE_ADDR="10.0.0.7"), target, PASSWORD, url).status_code == 429  # the username is locked
    assert "_auth_user_id" not in client.session


def test_a_user_s_own_login_clears_their_own_failures(ready, users):
    client = Client()
    for _ in range(2):
        for _ in range(settings.AXES_FAILURE_LIMIT - 1):
            assert login(client, "engineer", "wrong password").status_code == 200
        assert login(client, "engineer", PASSWORD).status_code == 302
        client.logout()


def test_a_locked_username_does_not_lock_another_user_on_another_address(ready, users):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        login(Client(REMOTE_ADDR="10.0.0.1"), "engineer", "wrong password")
    assert login(Client(REMOTE_ADDR="10.0.0.1"), "engineer", PASSWORD).status_code == 429
    assert login(Client(REMOTE_ADDR="10.0.0.2"), "engineer", PASSWORD).status_code == 429
    assert login(Client(REMOTE_ADDR="10.0.0.2"), "viewer", PASSWORD).status_code == 302


def test_a_login_does_not_reset_the_count_of_bad_api_tokens_from_its_address(ready, users):
    auth.forget()
    key = create_token(user=users["viewer"], name="test")[1]
    api = Client()

    def models(token: str):
        return api.get("/api/v1/models", HTTP_AUTHORIZATION=f"Bearer {token}").status_code

    for i in range(settings.AXES_FAILURE_LIMIT - 1):
        assert models(f"cl_guess{i}") == 401
    assert login(Client(), "viewer", PASSWORD).status_code == 302
    assert models("cl_one-guess-too-many") == 429
    assert models(key) == 429  # the address is locked, even for a good token not yet known here
    auth.forget()


def test_the_openapi_schema_answers_a_locked_out_address_with_429_json(ready, users):
    auth.forget()
    key = create_token(user=users["viewer"], name="test")[1]
    api = Client()
    for i in range(settings.AXES_FAILURE_LIMIT):
        api.get("/api/v1/models", HTTP_AUTHORIZATION=f"Bearer cl_guess{i}")
    schema = api.get("/api/v1/openapi.json", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert schema.status_code == 429 and "too many failed attempts" in schema.json()["detail"]
    auth.forget()
