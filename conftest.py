"""Shared fixtures: a fresh CL_HOME per test, named users per role, demo data builders.

Two ways to get an initialised system:
- `ready`: initialised once per test session (model v1.0 trained on 2,000 demo rows); each
  test runs in a transaction that is rolled back. Fast; for pages and anything that does not
  depend on work done after commit (file mirrors).
- `initialised`: a fresh CL_HOME and real commits per test, so on_commit work (mirrors,
  file moves) happens as in production. Slower; for the loop and concurrency tests.
"""
import pytest
from django.test import override_settings

from testing import builders


def _home_settings(home):
    from django.conf import settings

    return {
        "CL_HOME": home,
        "FILE_UPLOAD_TEMP_DIR": str(home / "tmp"),
        "STORAGES": {
            **settings.STORAGES,
            "models": {"BACKEND": "django.core.files.storage.FileSystemStorage",
                       "OPTIONS": {"location": str(home / "models" / "versions"), "base_url": None}},
        },
    }


def _forget_served_model():
    from django.core.cache import cache

    from modelhub import serving

    serving.forget()
    cache.clear()


@pytest.fixture
def cl_home(tmp_path, settings):
    """A fresh runtime tree; the models storage follows it."""
    home = tmp_path / "cl_home"
    (home / "tmp").mkdir(parents=True)
    for name, value in _home_settings(home).items():
        setattr(settings, name, value)
    _forget_served_model()
    return home


@pytest.fixture
def users(db):
    return builders.make_users()


@pytest.fixture
def demo(tmp_path):
    return builders.DemoData(tmp_path / "demo_files")


@pytest.fixture
def initialised(cl_home, demo, transactional_db):
    """The system initialised on the first 2,000 demo rows; real commits, so on_commit work runs."""
    from django.core.management import call_command

    from ingestion.models import DatasetSchema

    if DatasetSchema.objects.exists():
        # The session-wide `ready` data is still committed when no transactional test has run yet.
        call_command("flush", interactive=False, verbosity=0)
    return builders.initialise(demo)


@pytest.fixture(scope="session")
def session_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("session_home")
    (home / "tmp").mkdir()
    override = override_settings(**_home_settings(home))
    override.enable()
    yield home
    override.disable()


@pytest.fixture(scope="session")
def _initialised_once(django_db_setup, django_db_blocker, session_home, tmp_path_factory):
    with django_db_blocker.unblock():
        version = builders.initialise(builders.DemoData(tmp_path_factory.mktemp("session_demo")))
        builders.make_users()
    return version.pk


@pytest.fixture
def ready(_initialised_once, session_home, db):
    """Model v1.0 active (trained once per session); this test's changes are rolled back."""
    from modelhub.models import ModelVersion

    _forget_served_model()
    return ModelVersion.objects.get(pk=_initialised_once)
