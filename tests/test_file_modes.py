"""Everything the app writes under CL_HOME is for its own account only, whatever umask it was
started with: the database (password hashes, sessions), uploaded and staged data, models, logs."""
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(home: Path, *args: str) -> subprocess.CompletedProcess:
    """A process started as a shell with the usual umask 022 would start it."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "REDIS_URL", "CL_"))}
    environment.update(DJANGO_SETTINGS_MODULE="clsite.settings", CL_HOME=str(home), DJANGO_SECRET_KEY="k" * 50)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=environment, capture_output=True, text=True, check=False,
                          timeout=300, umask=0o022)


@pytest.mark.slow
def test_under_umask_022_every_file_and_folder_in_cl_home_is_owner_only(tmp_path):
    home = tmp_path / "fresh" / "cl_home"
    for args in (["manage.py", "migrate", "-v0"],
                 ["manage.py", "init_cl_system", "--data", "demo/telco_initial.csv", "--target", "churn",
                  "--id-column", "customer_id"],
                 ["manage.py", "ingest", "demo/batches/new_customers_1.csv"],
                 # The web server's entry point (its start-up repair writes the mirrors again).
                 ["-c", "import os, clsite.wsgi; print(oct(os.umask(0)))"]):
        done = run(home, *args)
        assert done.returncode == 0, (args, done.stderr)
    assert done.stdout.split()[-1] == "0o77"

    written = [home, *home.rglob("*")]
    assert any(p.name == "db.sqlite3" for p in written) and any(p.parent.name == "new" for p in written)
    assert any(p.name == "metadata.json" for p in written)  # the mirrors too
    shared = [f"{oct(stat.S_IMODE(p.lstat().st_mode))} {p.relative_to(tmp_path)}" for p in written
              if stat.S_IMODE(p.lstat().st_mode) & 0o077]
    assert shared == []
