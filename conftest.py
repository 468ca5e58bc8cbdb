"""Shared fixtures: a fresh CL_HOME per test, named users per role, demo data builders."""
import csv
import io
from pathlib import Path

import pytest

from testing import builders


@pytest.fixture
def cl_home(tmp_path, settings):
    """A fresh runtime tree; the models storage follows it."""
    home = tmp_path / "cl_home"
    (home / "tmp").mkdir(parents=True)
    settings.CL_HOME = home
    settings.FILE_UPLOAD_TEMP_DIR = str(home / "tmp")
    settings.STORAGES = {
        **settings.STORAGES,
        "models": {"BACKEND": "django.core.files.storage.FileSystemStorage",
                   "OPTIONS": {"location": str(home / "models" / "versions"), "base_url": None}},
    }
    from modelhub import serving

    serving._cached.update(key=None, version=None, model=None)
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
    return builders.initialise(demo)
