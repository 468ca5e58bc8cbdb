"""The web process as gunicorn loads it (clsite.wsgi): native thread pools pinned to one thread,
and concurrent API predictions all answered, each as it would be alone."""
import json
import subprocess
import sys

import pytest

from testing import builders
from testing.worker import MARK, ROOT, Site

pytestmark = pytest.mark.slow  # a site of its own and a process of its own

CONCURRENT = """
import json, os, threading
import clsite.wsgi  # what gunicorn imports
from threadpoolctl import threadpool_info
from django.test import Client
from api.services import create_token
from django.contrib.auth import get_user_model
from modelhub import roles
user, _ = get_user_model().objects.get_or_create(username="thread-test")
roles.assign_role(user, roles.VIEWER)
key = create_token(user=user)[1]
rows = json.loads(os.environ["ROWS"])
def call(row):
    response = Client().post("/api/v1/predict", json.dumps({"rows": [row]}), content_type="application/json",
                             HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_HOST="127.0.0.1")
    return response.status_code, response.json()["predictions"][0]["probability"]
alone = [call(row) for row in rows]
together, lock = [None] * (len(rows) * 8), threading.Lock()
def worker(offset):
    for i, row in enumerate(rows):
        together[offset * len(rows) + i] = call(row)
threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
for t in threads: t.start()
for t in threads: t.join()
pools = [(p["internal_api"], p["num_threads"]) for p in threadpool_info()]
print("RESULT:" + json.dumps({"alone": alone, "together": together, "pools": pools, "omp": os.environ.get("OMP_NUM_THREADS")}))
"""


def test_web_workers_pin_native_threads_and_answer_concurrent_predictions_alike(tmp_path, site_template):
    home = tmp_path / "home"
    home.mkdir()
    site = Site(home, f"sqlite:///{home / 'db.sqlite3'}", secret="threads-test-secret-key-not-used-elsewhere")
    demo = builders.DemoData(tmp_path / "csv")
    site_template().copy_to(home, home / "db.sqlite3")  # `migrate` and `init_cl_system` on demo rows 0-2,000, made once per run
    rows = demo.frame.iloc[3000:3020].drop(columns=["customer_id", "churn"]).replace({"": None}).to_dict(orient="records")
    env = {**site.env, "ROWS": json.dumps(rows)}
    env.pop("OMP_NUM_THREADS", None)

    done = subprocess.run([sys.executable, "-c", CONCURRENT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith(MARK))[len(MARK):])
    assert result["omp"] == "1"
    assert result["pools"] and all(threads == 1 for _, threads in result["pools"]), result["pools"]
    assert all(code == 200 for code, _ in result["alone"] + result["together"])
    assert [p for _, p in result["together"]] == [p for _, p in result["alone"]] * 8
