"""An upload's files and its row move together, on the private PostgreSQL:

- PostgreSQL stopped after the upload was validated, before its row is written: the upload fails
  and leaves no file anywhere; once the server is back, the same upload is taken.
- the process crashing between the files' renames and the commit: the files no row names are
  quarantined by the repair (start-up, watchdog) and listed by `cleanup`; the same upload is then taken.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testing import builders
from testing.worker import ROOT

pytestmark = [pytest.mark.faults, pytest.mark.slow]

# Runs `ingest` with the validation (or the renames) wrapped: PAUSE waits after validating until
# the test says go; CRASH ends the process the instant the files are in place, before the commit.
PAUSE = """
import time
from pathlib import Path
from django.core.management import call_command
from ingestion import services
validate = services.validate_and_convert
def validated_then_wait(*args, **kwargs):
    answer = validate(*args, **kwargs)
    Path({marker!r}).write_text("validated")
    while not Path({go!r}).exists():
        time.sleep(0.05)
    return answer
services.validate_and_convert = validated_then_wait
call_command("ingest", {csv!r})
"""
CRASH = """
import os
from django.core.management import call_command
from ingestion import services
place = services._place
def placed_then_crash(places, placed):
    place(places, placed)
    os._exit(9)
services._place = placed_then_crash
call_command("ingest", {csv!r})
"""
BATCHES = """
import json
from ingestion.models import DataBatch
print("RESULT:" + json.dumps({"names": sorted(DataBatch.objects.values_list("original_name", flat=True))}))
"""
REPAIR = """
import json
from ops import repairs
print("RESULT:" + json.dumps({"orphans": repairs.repair()["orphans"]}))
"""


def upload_files(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for folder in ("data/new", "data/quarantine", "tmp")
                  for p in (home / folder).glob("*") if p.is_file())


def shell(site, snippet: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "manage.py", "shell", "-c", snippet], cwd=ROOT, env=site.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_file(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_the_database_stopping_after_validation_leaves_no_file_and_the_upload_is_taken_later(fault_site, tmp_path):
    csv = builders.DemoData(tmp_path / "csv").write("april.csv", slice(2000, 7000))
    before = upload_files(fault_site.home)
    marker, go = tmp_path / "validated", tmp_path / "go"
    proc = shell(fault_site, PAUSE.format(marker=str(marker), go=str(go), csv=str(csv)))
    try:
        wait_file(marker, proc)
        fault_site.postgres.stop()
        go.write_text("go")
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and ("OperationalError" in err or "InterfaceError" in err), err[-2000:]
    assert upload_files(fault_site.home) == before  # nothing in data/new, data/quarantine or tmp

    fault_site.postgres.start()
    assert fault_site.shell(REPAIR)["orphans"] == []
    assert "april.csv" not in fault_site.shell(BATCHES)["names"]
    out = fault_site.manage("ingest", str(csv))
    assert "staged 5,000 rows" in out, out
    assert fault_site.shell(BATCHES)["names"].count("april.csv") == 1


def test_files_a_crash_left_without_a_row_are_quarantined_reported_and_the_upload_is_taken_again(fault_site, tmp_path):
    csv = builders.DemoData(tmp_path / "csv").write("may.csv", slice(2000, 4000))
    before = set(upload_files(fault_site.home))
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", CRASH.format(csv=str(csv))], cwd=ROOT,
                          env=fault_site.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 9, done
    left = sorted(set(upload_files(fault_site.home)) - before)
    assert len(left) == 2 and all(name.startswith("data/new/") for name in left), left  # the raw file and its Parquet
    assert "may.csv" not in fault_site.shell(BATCHES)["names"]

    assert fault_site.shell(REPAIR)["orphans"] == []  # too young: it could be an upload in progress
    then = time.time() - 15 * 60
    for name in left:
        os.utime(fault_site.home / name, (then, then))
    assert sorted(fault_site.shell(REPAIR)["orphans"]) == left
    assert set(upload_files(fault_site.home)) == before

    report = fault_site.manage("cleanup")
    assert "kept 2 quarantined orphan file(s)" in report, report
    for name in left:
        assert f"data/quarantine/orphans/{Path(name).name}" in report and (fault_site.home / "data/quarantine/orphans" / Path(name).name).exists()

    out = fault_site.manage("ingest", str(csv))
    assert "staged 2,000 rows" in out, out
    assert sorted(set(upload_files(fault_site.home)) - before) == left  # the new batch's own files, under the same names
    assert json.dumps(fault_site.shell(REPAIR)["orphans"]) == "[]"
