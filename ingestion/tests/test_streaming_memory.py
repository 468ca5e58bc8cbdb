"""A file many times larger than the upload memory limit is ingested with bounded memory.

`manage.py ingest` runs in processes of its own, on a tiny, a ~100 MB and a ~300 MB file: what
the big file costs beyond the tiny one must be a fraction of its size, and beyond the medium
one, little (memory does not grow with the file). Each process reports its own VmHWM:
getrusage's ru_maxrss would also count this (large) test process, which Linux carries over
into a child's figure at fork and exec.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from django.conf import settings

from testing.memory import ingest_reporting_peak

pytestmark = pytest.mark.slow  # files of hundreds of megabytes

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "demo" / "telco_churn.csv"
MB = 1 << 20

SETUP = """
import django
django.setup()
from django.core.management import call_command
from ingestion.schema import learn_schema
from ingestion.services import create_schema
call_command("migrate", verbosity=0)
create_schema(learn_schema(sys.argv[1], target="churn", id_column="customer_id"))
"""

def write_resampled_demo(path: Path, rows: int, id_prefix: str) -> Path:
    """Demo rows drawn at random, each with a fresh id, written without quotes."""
    options = pacsv.ConvertOptions(column_types={}, strings_can_be_null=False, auto_dict_encode=False)
    demo = pacsv.read_csv(DEMO, convert_options=options)
    demo = demo.cast(pa.schema([pa.field(name, pa.string()) for name in demo.column_names]))
    table = demo.take(pa.array(np.random.default_rng(0).integers(0, demo.num_rows, rows)))
    ids = pa.array([f"{id_prefix}{i:08d}" for i in range(rows)], pa.string())
    table = table.set_column(table.column_names.index("customer_id"), "customer_id", ids)
    pacsv.write_csv(table, path, pacsv.WriteOptions(quoting_style="none"))
    return path


def run_python(code: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-c", "import sys\n" + code, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def peak_of_ingest(path: Path, env: dict, report: Path) -> tuple[int, str]:
    done = ingest_reporting_peak(path, report, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return int(report.read_text()) * 1024, done.stdout


def test_a_file_over_100_times_the_upload_memory_limit_is_ingested_in_bounded_memory(tmp_path):
    home = tmp_path / "cl_home"
    env = dict(os.environ, CL_HOME=str(home), DJANGO_SETTINGS_MODULE="clsite.settings", DJANGO_SECRET_KEY="memory-test")
    env.pop("DATABASE_URL", None)  # the child's own SQLite under its CL_HOME
    run_python(SETUP, str(write_resampled_demo(tmp_path / "initial.csv", 2000, "I")), env=env)
    files = {name: write_resampled_demo(tmp_path / f"{name}.csv", rows, name[0].upper())
             for name, rows in (("tiny", 1000), ("medium", 800_000), ("big", 2_500_000))}
    size = {name: path.stat().st_size for name, path in files.items()}
    assert size["big"] > 100 * settings.FILE_UPLOAD_MAX_MEMORY_SIZE

    peak, out = {}, {}
    for name, path in files.items():
        peak[name], out[name] = peak_of_ingest(path, env, tmp_path / f"{name}.peak")

    assert "staged 2,500,000 rows" in out["big"]
    assert len(list((home / "data" / "new").glob("*.parquet"))) == 3
    growth = peak["big"] - peak["tiny"]
    extra = peak["big"] - peak["medium"]
    print(f"files {size['medium'] / MB:.0f} and {size['big'] / MB:.0f} MB; ingest peaks {peak['tiny'] / MB:.0f} (tiny file), "
          f"{peak['medium'] / MB:.0f}, {peak['big'] / MB:.0f} MB")
    # The big file costs a fraction of its size, not a multiple of it ...
    assert growth < 0.75 * size["big"], f"{growth / MB:.0f} MB for a {size['big'] / MB:.0f} MB file"
    # ... and memory hardly grows with the file: 200 MB more file, 14 MB more for the 8 bytes a
    # row kept to count repeated ids, plus what the allocator happens to keep from the pieces in
    # flight (5-35 MB seen, more on a busy machine): well under a third of the extra file.
    assert extra < (size["big"] - size["medium"]) / 3, f"{extra / MB:.0f} MB more for {(size['big'] - size['medium']) / MB:.0f} MB more file"
    assert peak["big"] < 512 * MB
