"""Peak memory of `manage.py ingest FILE` in a child process (the memory test and bench/ingest.py)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs the ingest command and writes the process's own peak resident memory (VmHWM, in kB) to the
# file named by the last argument. getrusage is no use here: after fork and exec, Linux counts
# the parent's memory at the fork in the child's ru_maxrss.
INGEST_AND_REPORT_PEAK = """
import runpy, sys
path, report = sys.argv[1], sys.argv[2]
sys.argv = ["manage.py", "ingest", path]
try:
    runpy.run_path("manage.py", run_name="__main__")
finally:
    with open("/proc/self/status") as status, open(report, "w") as out:
        out.write(next(line for line in status if line.startswith("VmHWM:")).split()[1])
"""


def ingest_reporting_peak(path: Path, report: Path, *, env: dict, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run the ingest; on success `report` holds the peak in kB."""
    return subprocess.run([sys.executable, "-c", INGEST_AND_REPORT_PEAK, str(path), str(report)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
