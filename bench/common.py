"""What every benchmark shares: a throw-away CL_HOME, the result header (machine, versions, the
foreign CPU load measured during the run), timing helpers, bench/results/<name>.json and its
section of bench/README.md between markers, the bench CSV builder, child-process peak memory
and a cheap long history.

Each script starts with the same two lines before importing anything else:

    ROOT = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(ROOT))  # the benchmarks import the project and each other as bench.x

Python puts only a script's own folder (bench/) on sys.path, not the project's.
"""
import atexit
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
README = BENCH / "README.md"
DEMO = ROOT / "demo" / "telco_churn.csv"
MB = 1024 * 1024
LIBRARIES = ("Django", "scikit-learn", "numpy", "pandas", "pyarrow", "django-ninja", "gunicorn", "scipy", "whitenoise",
             "threadpoolctl")


# ----------------------------------------------------------------------------------------------
# A throw-away CL_HOME
# ----------------------------------------------------------------------------------------------

def throwaway_home(prefix: str, *, keep: bool = False) -> Path:
    """A fresh CL_HOME under /tmp for this process (and the children it starts), removed at exit
    unless `keep`. Sets the environment Django needs; call before django.setup()."""
    home = Path(tempfile.mkdtemp(prefix=f"cl-bench-{prefix}-"))
    os.environ.update(CL_HOME=str(home), DJANGO_SECRET_KEY="bench-only-not-secret", DJANGO_SETTINGS_MODULE="clsite.settings",
                      DJANGO_DEBUG="false", DJANGO_ALLOWED_HOSTS="testserver,127.0.0.1,localhost")
    if keep:
        atexit.register(lambda: print(f"(files kept in {home})"))
    else:
        atexit.register(shutil.rmtree, home, ignore_errors=True)
    return home


def setup_django(*, migrate: bool = True) -> None:
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)


def initialise_demo(rows: slice = slice(0, 4000)):
    """init_cl_system's work on demo rows (schema, master, model v1.0) and a user per role."""
    from testing import builders

    demo = builders.DemoData(Path(os.environ["CL_HOME"]) / "demo")
    builders.initialise(demo, rows=rows)
    return demo, builders.make_users()


# ----------------------------------------------------------------------------------------------
# The machine, the versions and the foreign load
# ----------------------------------------------------------------------------------------------

def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in _lines("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor() or platform.machine())
    memory_kb = next((int(line.split()[1]) for line in _lines("/proc/meminfo") if line.startswith("MemTotal:")), 0)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory_kb / 1024 / 1024, 1),
            "platform": platform.platform(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def versions(extra: dict | None = None) -> dict:
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return {**found, **(extra or {})}


def _lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def _cpu_ticks() -> tuple[int, int]:
    """(busy, steal) clock ticks of the whole machine since boot: user+nice+system, and steal.
    Interrupt time is left out: loopback traffic between our own processes lands there."""
    fields = [int(x) for x in _lines("/proc/stat")[0].split()[1:]]
    user, nice, system = fields[0], fields[1], fields[2]
    steal = fields[7] if len(fields) > 7 else 0
    return user + nice + system, steal


def _our_ticks() -> int:
    """CPU ticks of this process and every live descendant, each with its reaped children's
    (cutime, cstime): a child that exits between two samples moves into its parent's count."""
    parents, times = {}, {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        rest = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) "
        parents[int(entry.name)] = int(rest[1])
        times[int(entry.name)] = sum(int(x) for x in rest[11:15])  # utime stime cutime cstime
    ours, frontier = {os.getpid()}, [os.getpid()]
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child not in ours:
                ours.add(child)
                frontier.append(child)
    return sum(times.get(pid, 0) for pid in ours)


class LoadMeter:
    """The CPU the rest of the machine used while we measured, in cores (0 = idle, 2 = both
    cores busy with others): the machine's busy time from /proc/stat minus that of this process
    tree (gunicorn, wrk and child processes included), per phase and for the whole run."""

    HZ = os.sysconf("SC_CLK_TCK")

    def __init__(self):
        self.phases: dict[str, dict] = {}
        self._start = self._sample()

    def _sample(self) -> tuple[float, int, int, int]:
        busy, steal = _cpu_ticks()
        return time.monotonic(), busy, steal, _our_ticks()

    @staticmethod
    def _between(a, b) -> dict:
        seconds = max(b[0] - a[0], 1e-9)
        foreign = max(0, (b[1] - a[1]) - (b[3] - a[3])) / LoadMeter.HZ / seconds
        return {"seconds": round(seconds, 1), "foreign_cores": round(foreign, 2),
                "ours_cores": round((b[3] - a[3]) / LoadMeter.HZ / seconds, 2),
                "steal_cores": round((b[2] - a[2]) / LoadMeter.HZ / seconds, 2)}

    @contextmanager
    def phase(self, name: str):
        start = self._sample()
        try:
            yield
        finally:
            found = self._between(start, self._sample())
            if name in self.phases:  # a phase repeated in rounds: time-weighted together
                old = self.phases[name]
                total = old["seconds"] + found["seconds"]
                found = {k: round((old[k] * old["seconds"] + found[k] * found["seconds"]) / total, 2) for k in found if k != "seconds"}
                found["seconds"] = round(total, 1)
            self.phases[name] = found

    def report(self) -> dict:
        whole = self._between(self._start, self._sample())
        return {**whole, "phases": self.phases,
                "how": "machine busy time (user+nice+system, /proc/stat) minus this benchmark's process tree, in cores"}


def foreign_now(seconds: float = 2.0) -> float:
    """The foreign load over the next `seconds`, for a check before measuring."""
    meter = LoadMeter()
    time.sleep(seconds)
    return meter.report()["foreign_cores"]


def wait_for_quiet(limit_cores: float, max_wait: float, *, quiet: bool = False) -> float:
    """Wait (up to max_wait seconds) until others use less than limit_cores; returns the last reading."""
    deadline = time.monotonic() + max_wait
    load = foreign_now()
    while load > limit_cores and time.monotonic() < deadline:
        if not quiet:
            print(f"  the machine is busy ({load:.2f} cores used by others); waiting ...", flush=True)
        time.sleep(10)
        load = foreign_now()
    return load


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------

def call_times(fn, calls: int, *, warm: int = 20) -> list[float]:
    """Seconds of each of `calls` calls of fn(), after `warm` unmeasured ones."""
    for _ in range(warm):
        fn()
    clock = time.perf_counter
    out = [0.0] * calls
    for i in range(calls):
        started = clock()
        fn()
        out[i] = clock() - started
    return out


def percentile(values, q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q / 100
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def summary_ms(seconds: list[float]) -> dict:
    return {"p50_ms": percentile(seconds, 50) * 1e3, "p90_ms": percentile(seconds, 90) * 1e3,
            "p99_ms": percentile(seconds, 99) * 1e3, "calls": len(seconds)}


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def median(values) -> float:
    return float(statistics.median(values))


# ----------------------------------------------------------------------------------------------
# Results: bench/results/<name>.json and a section of bench/README.md
# ----------------------------------------------------------------------------------------------

@dataclass
class Target:
    """One figure beside its raw counterpart measured in the same run."""
    name: str
    ours: float
    unit: str
    raw_name: str
    raw: float | None
    ratio: float | None  # as `ratio_means` says
    ratio_means: str  # e.g. "ours / raw time"
    target: str  # e.g. "p50 < 1 ms"
    met: bool | None  # None: no target, shown for information
    note: str = ""
    rounds: list = field(default_factory=list)


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if unit == "ms":
        return f"{value:.3f} ms" if value < 1 else f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"
    if unit == "s":
        return f"{value:.2f} s" if value < 100 else f"{value:.0f} s"
    if unit == "req/s":
        return f"{value:,.0f} req/s"
    if unit == "MB":
        return f"{value:,.0f} MB"
    if unit == "MB/s":
        return f"{value:,.0f} MB/s"
    if unit == "rows/s":
        return f"{value:,.0f} rows/s"
    if unit == "AUC":
        return f"{value:.4f}"
    return f"{value:,.3g} {unit}".strip()


def verdict(met: bool | None) -> str:
    return "" if met is None else "met" if met else "**missed**"


def targets_markdown(targets: list[Target]) -> str:
    lines = ["| measured | ours | raw counterpart (same run) | raw | ratio | target | |",
             "| --- | ---: | --- | ---: | ---: | --- | --- |"]
    for t in targets:
        ratio = "" if t.ratio is None else f"{t.ratio:.2f} ({t.ratio_means})"
        lines.append(f"| {t.name} | {fmt(t.ours, t.unit)} | {t.raw_name} | {fmt(t.raw, t.unit)} | {ratio} | {t.target} | {verdict(t.met)} |")
    return "\n".join(lines)


def targets_text(targets: list[Target]) -> str:
    width = max(len(t.name) for t in targets)
    out = []
    for t in targets:
        ratio = "" if t.ratio is None else f"  ratio {t.ratio:.3f} ({t.ratio_means})"
        raw = f"  raw {fmt(t.raw, t.unit)} ({t.raw_name})" if t.raw is not None else ""
        out.append(f"  {t.name:<{width}}  {fmt(t.ours, t.unit):>14}{raw}{ratio}  target {t.target}: "
                   f"{'-' if t.met is None else 'met' if t.met else 'MISSED'}")
    return "\n".join(out)


def header_line(result: dict) -> str:
    m, v, load = result["machine"], result["versions"], result["foreign_load"]
    libs = ", ".join(f"{k} {v[k]}" for k in LIBRARIES if v.get(k))
    extra = "".join(f", {k} {v[k]}" for k in v if k not in LIBRARIES and k != "python" and v[k])
    return (f"Run {result['date']} ({result['seconds']:.0f} s) on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; "
            f"Python {v['python']}, {libs}{extra}. Foreign load (CPU used by other processes while it ran): "
            f"{load['foreign_cores']:.2f} cores on average, at most {max([p['foreign_cores'] for p in load['phases'].values()] or [0]):.2f} "
            f"in a phase; steal {load['steal_cores']:.2f}.")


def write_result(name: str, *, started: float, meter: LoadMeter, targets: list[Target], details: dict,
                 markdown: str, quick: bool = False, extra_versions: dict | None = None, out: Path | None = None) -> dict:
    """bench/results/<name>.json with the common header, and bench/README.md's section for `name`
    (between <!-- bench:name --> and <!-- /bench:name -->). A --quick run writes neither: it prints."""
    result = {
        "benchmark": name,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "quick": quick,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine(),
        "versions": versions(extra_versions),
        "foreign_load": meter.report(),
        "targets": [asdict(t) for t in targets],
        **details,
    }
    print()
    print(targets_text(targets))
    print(f"\nforeign load: {result['foreign_load']['foreign_cores']:.2f} cores on average; per phase: "
          + ", ".join(f"{k} {v['foreign_cores']:.2f}" for k, v in result["foreign_load"]["phases"].items()))
    if quick:
        print("(--quick: nothing written to bench/results or bench/README.md)")
        return result
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    update_readme(name, markdown.replace("{header}", header_line(result)))
    print(f"written: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} and bench/README.md (section {name})")
    return result


def update_readme(name: str, body: str, readme: Path = README) -> None:
    """Replace the text between this benchmark's markers; append the section if it has none yet."""
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = readme.read_text() if readme.exists() else "# Benchmarks\n"
    block = f"{begin}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    readme.write_text(text)


# ----------------------------------------------------------------------------------------------
# Data and memory
# ----------------------------------------------------------------------------------------------

def build_csv(target: Path, rows: int, seed: int = 0, id_prefix: str = "B") -> None:
    """Resample the demo's rows with fresh unique ids (run it in a child: build_in_child)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    demo = pacsv.read_csv(DEMO, convert_options=pacsv.ConvertOptions(column_types={}, strings_can_be_null=False,
                                                                     auto_dict_encode=False))
    demo = demo.cast(pa.schema([pa.field(name, pa.string()) for name in demo.column_names]))
    picks = np.random.default_rng(seed).integers(0, demo.num_rows, rows)
    table = demo.take(pa.array(picks))
    ids = pa.array([f"{id_prefix}{i:08d}" for i in range(rows)], pa.string())
    table = table.set_column(table.column_names.index("customer_id"), "customer_id", ids)
    pacsv.write_csv(table, target, pacsv.WriteOptions(quoting_style="none"))


def build_in_child(jobs: list[tuple]) -> None:
    """build_csv(target, rows, seed, id_prefix) for each job, in a child process, so that the
    parent's memory stays as it was."""
    code = ("import json, sys; from pathlib import Path; from bench.common import build_csv\n"
            "for target, rows, seed, prefix in json.loads(sys.argv[1]): build_csv(Path(target), rows, seed, prefix)")
    done = subprocess.run([sys.executable, "-c", code, json.dumps([[str(j[0]), *j[1:]] for j in jobs])], cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit("building the bench files failed")


# Runs a Python snippet, then writes the process's own peak resident memory (VmHWM, kB) to the
# file named by the last argument (testing/memory.py does the same for `manage.py ingest`).
_PEAK_WRAPPER = """
import runpy, sys
report = sys.argv.pop()
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    with open("/proc/self/status") as status, open(report, "w") as out:
        out.write(next(line for line in status if line.startswith("VmHWM:")).split()[1])
"""


def peak_of_child(script: Path, args: list[str], *, env: dict | None = None) -> tuple[int, subprocess.CompletedProcess]:
    """Run `python script args...` in a child process; its peak resident memory in bytes."""
    with tempfile.NamedTemporaryFile(prefix="cl-bench-peak-", delete=False) as fh:
        report = Path(fh.name)
    try:
        done = subprocess.run([sys.executable, "-c", _PEAK_WRAPPER, str(script), *args, str(report)], cwd=ROOT,
                              env=env or dict(os.environ), capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{script.name} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return int(report.read_text()) * 1024, done
    finally:
        report.unlink(missing_ok=True)


def grow_history(versions_wanted: int) -> int:
    """Versions (bulk-made, as tests/test_page_queries.py makes them) until there are `versions_wanted`."""
    from modelhub.models import ModelVersion
    from testing import builders

    extra = versions_wanted - ModelVersion.objects.count()
    return builders.grow_history(extra) if extra > 0 else ModelVersion.objects.count()


def api_row(frame_row) -> dict:
    """A demo row as a program sends it in JSON: numbers for numeric features, text for the rest,
    null for a blank; no id, no target."""
    from ingestion.models import DatasetSchema

    schema = DatasetSchema.current()
    row = {}
    for feature in schema.features:
        value = frame_row[feature["name"]]
        if value in ("", None):
            row[feature["name"]] = None
        elif feature["kind"] == "numeric":
            row[feature["name"]] = float(value)
        else:
            row[feature["name"]] = str(value)
    return row
