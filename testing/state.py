"""A system's state (the database and the CL_HOME tree) saved once and copied into each test that needs it.

Training the demo's v1.0, or retraining on top of it, costs seconds; copying a SQLite database
and a folder of files costs milliseconds. A `Snapshot` is built once per test run (conftest's
`snapshots`) and `restore`d into the test's own database and CL_HOME: the test then starts from
that state with real commits, exactly as if it had built it itself.

The database copy goes through SQLite's online backup API on Django's own connection, so it
replaces the whole database under every connection at once (nothing else holds the file open
between tests) and needs no reconnect.
"""
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path


def _django_sqlite():
    from django.db import connection

    assert connection.vendor == "sqlite", "snapshots copy SQLite databases only"
    assert not connection.in_atomic_block, "a snapshot needs a transactional test (real commits)"
    connection.ensure_connection()
    return connection.connection


def save_db(target: Path) -> Path:
    """The test database, as it is now, into the file `target`."""
    target.unlink(missing_ok=True)
    with sqlite3.connect(target) as copy:
        _django_sqlite().backup(copy)
    copy.close()
    return target


def load_db(source: Path) -> None:
    """The test database becomes the copy in `source`; Django's caches of row ids are forgotten."""
    from django.contrib.contenttypes.models import ContentType

    saved = sqlite3.connect(source)
    try:
        saved.backup(_django_sqlite())
    finally:
        saved.close()
    ContentType.objects.clear_cache()


def copy_tree(source: Path, target: Path) -> None:
    """Every file of `source` into `target` (made if missing), times and modes kept."""
    shutil.copytree(source, target, dirs_exist_ok=True, symlinks=True)


@dataclass
class Snapshot:
    """A database file and a CL_HOME tree, plus what the builder returned (ids, never model objects)."""

    db_file: Path
    home: Path
    data: dict = field(default_factory=dict)

    def restore(self, home: Path) -> dict:
        load_db(self.db_file)
        copy_tree(self.home, home)
        return self.data
