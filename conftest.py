"""Shared fixtures: a fresh CL_HOME per test, named users per role, demo data builders.

Three ways to get an initialised system (model v1.0 trained on 2,000 demo rows, once per run):
- `ready`: the session's system, committed once; each test runs in a transaction that is rolled
  back. Fastest; for pages and anything that does not depend on work done after commit.
- `initialised`: that same state copied into a fresh CL_HOME and the test's own database, with
  real commits, so on_commit work (mirrors, file moves) happens as in production. For the loop
  and concurrency tests.
- `from_snapshot(name, build)`: as `initialised`, but from a state built on top of it once per
  run (a rejected candidate, aged files, ...) by `build(demo)`; see testing/state.py.
`empty_db` is a transactional database with nothing in it (not even the session's system).
"""
import pytest
from django.test import override_settings

from testing import builders
from testing.state import Snapshot, copy_tree, load_db, save_db
from testing.worker import SiteTemplate


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


def _forget_kept_state():
    """What a process keeps between requests (clsite.memo: the served model, tokens, the health
    report) and the shared figures cache: each test starts from what its state says."""
    from django.core.cache import cache

    from clsite import memo

    memo.forget_all()
    cache.clear()


@pytest.fixture
def cl_home(tmp_path, settings):
    """A fresh runtime tree; the models storage follows it."""
    home = tmp_path / "cl_home"
    (home / "tmp").mkdir(parents=True)
    for name, value in _home_settings(home).items():
        setattr(settings, name, value)
    _forget_kept_state()
    return home


@pytest.fixture
def users(request, db):
    """One user per role (testing/builders.py). A snapshot restored later in the test makes them
    again, in this same dict: see `from_snapshot`."""
    made = builders.make_users()
    request.node.stash[_USERS] = made
    return made


_USERS = pytest.StashKey[dict]()


@pytest.fixture
def demo(tmp_path):
    return builders.DemoData(tmp_path / "demo_files")


@pytest.fixture
def empty_db(transactional_db):
    """A transactional database that starts empty.

    The session's `ready` system is committed once for the whole run; pytest-django runs the
    transactional tests after the others, and a transactional test empties the database only
    at its end, so the first one would otherwise start on that system.
    """
    from django.core.management import call_command

    from ingestion.models import DatasetSchema

    if DatasetSchema.objects.exists():
        call_command("flush", interactive=False, verbosity=0)


@pytest.fixture(scope="session")
def session_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("session_home")
    (home / "tmp").mkdir()
    override = override_settings(**_home_settings(home))
    override.enable()
    yield home
    override.disable()


class Snapshots:
    """The states tests start from, each built once per run on top of the initialised one."""

    def __init__(self, folder, initialised: Snapshot | None, version: int, session_db=None):
        self.folder = folder
        self.made = {"initialised": initialised} if initialised else {}
        self.version = version  # the session's v1.0 (`ready`)
        self.session_db = session_db  # the committed session system, users included (SQLite only)

    def get(self, name: str, build=None) -> Snapshot:
        """The state `name`; the first time, built by `build(demo)` (run with real commits in the
        calling test's database and a CL_HOME of the snapshot's own; returns a dict of ids)."""
        if name not in self.made:
            assert build is not None, f"no snapshot {name!r} yet and nothing to build it with"
            assert "initialised" in self.made, "snapshots need the SQLite test database"
            where = self.folder / name
            home = where / "cl_home"
            (home / "tmp").mkdir(parents=True)
            self.made["initialised"].restore(home)
            _forget_kept_state()
            with override_settings(**_home_settings(home)):
                data = build(builders.DemoData(where / "demo_files")) or {}
                save_db(where / "db.sqlite3")
            _forget_kept_state()
            self.made[name] = Snapshot(where / "db.sqlite3", home, data)
        return self.made[name]


@pytest.fixture(scope="session")
def _initialised_once(django_db_setup, django_db_blocker, session_home, tmp_path_factory):
    """The session's system, and a snapshot of it taken before the users were made."""
    from django.db import connection

    folder = tmp_path_factory.mktemp("snapshots")
    with django_db_blocker.unblock():
        version = builders.initialise(builders.DemoData(tmp_path_factory.mktemp("session_demo")))
        snapshot = None
        if _copies_databases(connection):
            copy_tree(session_home, folder / "initialised" / "cl_home")
            snapshot = Snapshot(save_db(folder / "initialised" / "db.sqlite3"), folder / "initialised" / "cl_home",
                                {"version": version.pk})
        builders.make_users()
        session_db = save_db(folder / "session.sqlite3") if snapshot else None
    return Snapshots(folder, snapshot, version.pk, session_db)


def _copies_databases(connection) -> bool:
    """Snapshots copy SQLite files; on PostgreSQL (the scale-out run) each test builds its state itself."""
    return connection.vendor == "sqlite"


@pytest.fixture(autouse=True)
def _session_system_back(request, django_db_blocker):
    """Before a `ready` test's transaction opens: the session's system committed again if a
    transactional test emptied the database meanwhile. pytest-django runs transactional tests
    last, so a plain run never needs it; `pytest -n 2` (pytest-xdist) interleaves them."""
    if "ready" not in request.fixturenames:
        return
    from modelhub.models import ModelVersion

    snapshots = request.getfixturevalue("_initialised_once")
    with django_db_blocker.unblock():
        if snapshots.session_db and not ModelVersion.objects.filter(pk=snapshots.version).exists():
            load_db(snapshots.session_db)


@pytest.fixture
def ready(_initialised_once, session_home, db):
    """Model v1.0 active (trained once per session); this test's changes are rolled back."""
    from modelhub.models import ModelVersion

    _forget_kept_state()
    return ModelVersion.objects.get(pk=_initialised_once.version)


@pytest.fixture
def from_snapshot(request, _initialised_once, cl_home, transactional_db):
    """`from_snapshot(name="initialised", build=None)`: that state in this test's database and
    CL_HOME, with real commits; returns the ids its builder returned.

    The whole database is replaced: users the `users` fixture made already are made again (in
    its dict, so the test's `users` stays right whichever fixture came first)."""
    def restore(name: str = "initialised", build=None) -> dict:
        data = _initialised_once.get(name, build).restore(cl_home)
        _forget_kept_state()
        if _USERS in request.node.stash:
            request.node.stash[_USERS].update(builders.make_users())
        return data
    return restore


@pytest.fixture
def initialised(request, _initialised_once, cl_home, demo, transactional_db):
    """The system initialised on the first 2,000 demo rows (`demo`'s initial.csv); real commits,
    so on_commit work runs. A copy of the session's snapshot on SQLite; on PostgreSQL, made here."""
    from django.db import connection

    from modelhub.models import ModelVersion

    if not _copies_databases(connection):
        request.getfixturevalue("empty_db")
        return builders.initialise(demo)
    demo.write("initial.csv", slice(0, 2000))
    return ModelVersion.objects.get(pk=request.getfixturevalue("from_snapshot")()["version"])


@pytest.fixture(scope="session")
def site_template(tmp_path_factory):
    """`site_template()`: a SQLite site after `migrate` and `init_cl_system`, made once per run,
    at the first call (testing/worker.py); `.copy_to(home, db_file)` starts a `Site` from it."""
    made = []

    def get() -> SiteTemplate:
        if not made:
            made.append(SiteTemplate(tmp_path_factory.mktemp("site_template")))
        return made[0]
    return get
