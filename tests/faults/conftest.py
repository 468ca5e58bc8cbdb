"""The fault suite's set-ups: a private PostgreSQL for the session, a private Redis per test, a small disk.

Every fault test stops, kills or fills servers of its own (testing/instances.py), never the
machine's shared PostgreSQL and Redis. The expensive state (migrate + init_cl_system, model
v1.0 trained) is made once per session in a template database and a template CL_HOME; each test
gets a copy of both in milliseconds (`CREATE DATABASE ... TEMPLATE`).
"""
import shutil
import uuid
from contextlib import closing

import psycopg
import pytest

from testing import builders
from testing.instances import PrivatePostgres, PrivateRedis, SmallDisk
from testing.worker import Site

pytestmark = pytest.mark.faults
SECRET = "fault-suite-secret-key-not-for-production"


@pytest.fixture(scope="session")
def fault_postgres():
    with PrivatePostgres() as pg:
        yield pg


@pytest.fixture(scope="session")
def fault_template(fault_postgres, tmp_path_factory):
    """A CL_HOME and the database `cl` after migrate and init_cl_system on 2,000 demo rows (v1.0 live)."""
    folder = tmp_path_factory.mktemp("fault-template")
    home = folder / "cl_home"
    home.mkdir()
    site = Site(home, fault_postgres.url, secret=SECRET)
    initial = builders.DemoData(folder / "csv").write("initial.csv", slice(0, 2000))
    site.manage("migrate", "--no-input", "-v", "0")
    out = site.manage("init_cl_system", "--data", str(initial), "--target", "churn", "--id-column", "customer_id")
    assert "v1.0" in out, out
    return home


@pytest.fixture
def private_redis():
    with PrivateRedis() as r:
        yield r


@pytest.fixture
def fault_site(fault_postgres, fault_template, private_redis, tmp_path):
    """A site of the test's own on the private PostgreSQL (a copy of the template) and a private Redis.

    A test may stop or kill `fault_postgres`: it is started again (and the copy dropped) on the way out.
    """
    name = f"cl_{uuid.uuid4().hex[:12]}"
    admin = dict(host="127.0.0.1", port=fault_postgres.port, user="postgres", dbname="postgres", autocommit=True)
    with closing(psycopg.connect(**admin)) as db:
        db.execute(f'CREATE DATABASE "{name}" TEMPLATE cl')
    home = tmp_path / "cl_home"
    shutil.copytree(fault_template, home)
    site = Site(home, fault_postgres.url.rsplit("/", 1)[0] + f"/{name}", secret=SECRET, redis_url=private_redis.url)
    site.database = name
    site.postgres, site.redis = fault_postgres, private_redis
    try:
        yield site
    finally:
        if fault_postgres.proc is None:
            fault_postgres.start()
        with closing(psycopg.connect(**admin)) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def small_disk():
    """`small_disk(mib)`: a tmpfs of that size (removed at the end); skipped, with the reason, where none can be mounted."""
    why = SmallDisk.unavailable()
    if why:
        pytest.skip(why)
    mounted = []

    def make(mib: int):
        disk = SmallDisk(mib)
        mounted.append(disk)
        return disk.__enter__()

    yield make
    for disk in mounted:
        disk.__exit__(None, None, None)
