"""The API tests' shared fixture: a token for each named user."""
import pytest

from api import auth
from api.services import create_token


@pytest.fixture
def tokens(ready, users):
    auth.forget()
    made = {name: create_token(user=users[name], name="test")[1] for name in ("nobody", "viewer", "analyst", "engineer", "admin")}
    yield made
    auth.forget()
