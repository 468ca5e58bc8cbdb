"""Several processes at once on the default SQLite set-up: uploads, retrainings (with their
heartbeat threads) and page views, as a team and the worker make them. Nobody may see
"database is locked": writers wait their turn (WAL, IMMEDIATE transactions, a busy timeout).
"""
import json
import subprocess
import sys

import pytest

from testing import builders
from testing.worker import MARK, ROOT, Site

pytestmark = pytest.mark.slow  # processes of their own, several retrainings

SECRET = "concurrency-test-secret-key-not-used-anywhere-else"

UPLOADS = """
import json, sys
from ingestion.services import ingest_path
statuses = [ingest_path(path).status for path in sys.argv[1:]]
print("RESULT:" + json.dumps({"statuses": statuses}))
"""

RETRAININGS = """
import json
from modelhub.retraining import retrain_now
outcomes = [retrain_now(force=True).status for _ in range(3)]
print("RESULT:" + json.dumps({"outcomes": outcomes}))
"""

PAGES = """
import json
from django.contrib.auth import get_user_model
from django.test import Client
from modelhub import roles
user, _ = get_user_model().objects.get_or_create(username="page-reader")
roles.assign_role(user, roles.ML_ENGINEER)
client = Client(HTTP_HOST="127.0.0.1")
client.force_login(user)
codes = []
for _ in range(15):
    for url in ("/", "/data/", "/models/", "/runs/", "/deployments/", "/status/", "/models/1.0/"):
        codes.append(client.get(url).status_code)
    codes.append(client.post("/predict/", {"tenure": "12", "monthly_charges": "70"}).status_code)
print("RESULT:" + json.dumps({"codes": sorted(set(codes)), "pages": len(codes)}))
"""


def run_at_once(site: Site, jobs: dict[str, list[str]]) -> dict:
    """Start each `manage.py shell -c` job at the same time; wait for all; their results and output."""
    procs = {name: subprocess.Popen([sys.executable, "-c", _runner(code), *args], cwd=ROOT, env=site.env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, (code, *args) in jobs.items()}
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        found = {}
        for line in out.splitlines():
            if line.startswith(MARK):
                found.update(json.loads(line[len(MARK):]))
        results[name] = {"code": proc.returncode, "result": found, "output": out + err}
    return results


def _runner(code: str) -> str:
    return "import django, os\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'clsite.settings')\ndjango.setup()\n" + code


def test_uploads_retrainings_and_pages_at_once_never_meet_a_locked_database(tmp_path, site_template):
    home = tmp_path / "cl_home"
    home.mkdir()
    site = Site(home, f"sqlite:///{home / 'db.sqlite3'}", secret=SECRET)
    demo = builders.DemoData(tmp_path / "csv")
    site_template().copy_to(home, home / "db.sqlite3")  # `migrate` and `init_cl_system`, made once per run
    uploads = [str(demo.write(f"part{i}.csv", slice(2000 + 300 * i, 2300 + 300 * i))) for i in range(8)]

    results = run_at_once(site, {"uploads": [UPLOADS, *uploads], "retrainings": [RETRAININGS], "pages": [PAGES]})

    for name, outcome in results.items():
        assert "database is locked" not in outcome["output"], (name, outcome["output"][-3000:])
        assert outcome["code"] == 0, (name, outcome["output"][-3000:])
    assert results["uploads"]["result"]["statuses"] == ["staged"] * 8
    assert results["retrainings"]["result"]["outcomes"] and set(results["retrainings"]["result"]["outcomes"]) <= {"deployed", "rejected"}
    assert results["pages"]["result"] == {"codes": [200], "pages": 120}
