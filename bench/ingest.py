"""Ingestion speed, memory and merge cost, measured against the raw library in the same run.

    .venv/bin/python bench/ingest.py [--quick] [--rows N] [--keep]

1. Builds an N-row CSV (default 1,000,000; --quick 200,000) from demo/telco_churn.csv: rows
   resampled, every customer_id fresh and unique (common.build_csv, in a child process).
2. Ingests it with ingestion.services.ingest_path into a throw-away CL_HOME (migrated SQLite,
   initialised on 2,000 demo rows) and parses it with a bare pyarrow.csv.read_csv, interleaved,
   five rounds each (--quick: three); the median round of each, and the median of the rounds'
   speed ratios (target: ingest at least 0.3 of the raw parse speed); the best rounds beside.
3. The peak memory (VmHWM) of `manage.py ingest` on the file, in a process of its own, beside
   that of a process that only reads the file with pyarrow.csv.read_csv (information).
4. Merges 10,000-row batches into a 100,000-row and into a 5,000,000-row master (--quick:
   1,000,000) with ingestion.master.merge_batches (target: median time of the second under 1.5
   times the first). The big master is cheap to build: one Parquet file, hard-linked as partitions.
Writes bench/results/ingest.json and its section of bench/README.md.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the benchmarks import the project and each other as bench.x

import argparse  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

from bench import common  # noqa: E402
from bench.common import build_in_child  # noqa: E402

DEMO = common.DEMO
MB = common.MB
MERGE_BATCH_ROWS = 10_000
PARTITION_ROWS = 100_000
SPEED_TARGET = 0.3
MERGE_TARGET = 1.5
RAW_READ = "import sys, pyarrow.csv\npyarrow.csv.read_csv(sys.argv[1])\n"


def peak_memory_of_ingest_command(path: Path) -> int:
    """Peak resident memory (bytes) of `manage.py ingest path`: the whole process, Django included."""
    from testing.memory import ingest_reporting_peak

    report = Path(os.environ["CL_HOME"]) / "tmp" / "ingest-peak.txt"
    report.parent.mkdir(parents=True, exist_ok=True)
    done = ingest_reporting_peak(path, report, env=dict(os.environ))
    if done.returncode != 0:
        raise SystemExit(f"manage.py ingest failed: {done.stderr[-2000:]}")
    return int(report.read_text()) * 1024


def peak_memory_of_raw_read(path: Path) -> int:
    """Peak resident memory (bytes) of a process that only reads the file with pyarrow.csv.read_csv."""
    script = Path(os.environ["CL_HOME"]) / "tmp" / "raw-read.py"
    script.write_text(RAW_READ)
    peak, _ = common.peak_of_child(script, [str(path)])
    return peak


def initialise(work: Path) -> None:
    """init_cl_system's work on the first 2,000 demo rows: schema, master dataset, model v1.0."""
    import pandas as pd

    from modelhub.setup import initialise as init

    sample = work / "initial.csv"
    pd.read_csv(DEMO, dtype=str, keep_default_na=False).iloc[:2000].to_csv(sample, index=False)
    init(data=sample, target="churn", id_column="customer_id")


def measure_ingest(path: Path) -> dict:
    """One ingest of `path`, timed; the batch is then set aside (discarded, files removed) so the
    same file can be ingested again."""
    from clsite import home
    from ingestion.models import DataBatch
    from ingestion.services import ingest_path

    started = time.perf_counter()
    batch = ingest_path(path)
    seconds = time.perf_counter() - started
    if batch.status != DataBatch.Status.STAGED:
        raise SystemExit(f"the bench file was refused: {batch.report.get('summary')} {batch.errors[:3]}")
    for relative in (batch.raw_path, batch.parquet_path):
        home.path(relative).unlink(missing_ok=True)
    DataBatch.objects.filter(pk=batch.pk).update(status=DataBatch.Status.DISCARDED, raw_path="", parquet_path="")
    return {"seconds": seconds, "rows": batch.rows}


def measure_raw(path: Path) -> dict:
    import pyarrow.csv as pacsv

    started = time.perf_counter()
    table = pacsv.read_csv(path)
    return {"seconds": time.perf_counter() - started, "rows": table.num_rows}


def set_aside_staged() -> None:
    from clsite import home
    from ingestion.models import DataBatch

    for batch in DataBatch.objects.filter(status=DataBatch.Status.STAGED):
        for relative in (batch.raw_path, batch.parquet_path):
            home.path(relative).unlink(missing_ok=True)
    DataBatch.objects.filter(status=DataBatch.Status.STAGED).update(status=DataBatch.Status.DISCARDED)


def write_template(target: Path) -> None:
    """A 100,000-row partition in the schema's typed layout, cut from a CSV ingested for the purpose."""
    import pyarrow.parquet as pq

    from clsite import home
    from ingestion.models import DataBatch
    from ingestion.services import ingest_path

    source = target.with_suffix(".csv")
    build_in_child([(source, PARTITION_ROWS, 7, "P")])
    batch = ingest_path(source)
    pq.write_table(pq.read_table(home.path(batch.parquet_path)), target)
    DataBatch.objects.filter(pk=batch.pk).update(status=DataBatch.Status.DISCARDED)


def build_master(rows: int, template: Path) -> int:
    """Register MasterPartition rows for links to one Parquet file until the master holds `rows` rows."""
    from django.db.models import Sum

    from clsite import home
    from ingestion.models import DatasetSchema, DataBatch, MasterPartition

    schema = DatasetSchema.current()
    have = MasterPartition.objects.aggregate(n=Sum("rows"))["n"] or 0
    while have < rows:
        batch = DataBatch.objects.create(
            original_name="bench-master.csv", sha256=os.urandom(32).hex(), size_bytes=0, rows=PARTITION_ROWS,
            status=DataBatch.Status.MERGED, source=DataBatch.Source.CLI, schema=schema,
        )
        part = f"data/training/part-{batch.pk:06d}.parquet"
        os.link(template, home.path(part))
        batch.parquet_path = part
        batch.save(update_fields=["parquet_path"])
        MasterPartition.objects.create(batch=batch, path=part, rows=PARTITION_ROWS)
        have += PARTITION_ROWS
    return have


def measure_merges(batch_files: list[Path]) -> list[float]:
    """Stage each file, then time merging it alone into the master."""
    from ingestion import master
    from ingestion.models import DataBatch, MasterPartition
    from ingestion.services import ingest_path

    times = []
    for path in batch_files:
        batch = ingest_path(path)
        assert batch.status == DataBatch.Status.STAGED, batch.report.get("summary")
        # The plan a retraining makes from the rows it has read anyway; the merge itself is timed.
        plan = master.Merge(batches=[batch], rows=batch.rows, replaced_rows=0, stats=batch.stats)
        started = time.perf_counter()
        master.merge_batches(plan)
        times.append(time.perf_counter() - started)
        # Keep the master at its nominal size for the next measurement.
        MasterPartition.objects.filter(batch=batch).delete()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200,000 rows, 3 rounds, a 1,000,000-row big master; writes nothing")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    args = parser.parse_args()
    started = time.perf_counter()
    home = common.throwaway_home("ingest", keep=args.keep)
    rows = args.rows or (200_000 if args.quick else 1_000_000)
    plan = {"rounds": 3 if args.quick else 5, "masters": (100_000, 1_000_000 if args.quick else 5_000_000),
            "merge_repeats": 7 if args.quick else 15}
    common.setup_django()
    meter = common.LoadMeter()
    work = home / "bench-files"
    work.mkdir()
    measured = run(work, rows, plan, meter)
    shutil.rmtree(work, ignore_errors=True)
    targets, markdown = report(measured, plan)
    common.write_result("ingest", started=started, meter=meter, targets=targets, markdown=markdown, quick=args.quick,
                        details={"rows": rows, "file_mb": measured["size_mb"], "rounds": {"ingest": measured["ingests"], "raw": measured["raws"]},
                                 "peak_bytes": {"ingest": measured["peak"], "raw_read": measured["raw_peak"]},
                                 "merge_seconds": {str(k): v for k, v in measured["merges"].items()}})


def run(work: Path, rows: int, plan: dict, meter) -> dict:
    csv_path = work / f"bench-{rows}.csv"
    repeats, masters = plan["merge_repeats"], plan["masters"]
    batch_files = [work / f"batch-{i}.csv" for i in range(repeats * len(masters))]
    with meter.phase("set-up"):
        print(f"building a {rows:,}-row CSV from {DEMO.name} ...", flush=True)
        build_in_child([(csv_path, rows, 0, "B")] + [(path, MERGE_BATCH_ROWS, 100 + i, f"M{i:02d}-") for i, path in enumerate(batch_files)])
        initialise(work)
        measure_raw(csv_path)  # warm the page cache and the code paths, so neither side pays for the first read
    size_mb = csv_path.stat().st_size / MB

    print(f"ingesting {csv_path.name} ({size_mb:,.1f} MB) and parsing it with pyarrow, {plan['rounds']} rounds ...", flush=True)
    ingests, raws = [], []
    with meter.phase("ingest vs raw parse"):
        for _ in range(plan["rounds"]):  # interleaved, so both sides see the same machine
            ingests.append(measure_ingest(csv_path))
            raws.append(measure_raw(csv_path))
    print("peak memory of `manage.py ingest` and of a bare read, each in a process of its own ...", flush=True)
    with meter.phase("peak memory"):
        peak = peak_memory_of_ingest_command(csv_path)
        raw_peak = peak_memory_of_raw_read(csv_path)
    set_aside_staged()

    print("merges into a small and a big master ...", flush=True)
    merges = {}
    with meter.phase("merges"):
        template = work / "partition-template.parquet"
        write_template(template)
        for i, size in enumerate(masters):
            actual = build_master(size, template)
            merges[actual] = measure_merges(batch_files[i * repeats:(i + 1) * repeats])
    return {"size_mb": size_mb, "rows": rows, "ingests": ingests, "raws": raws, "peak": peak, "raw_peak": raw_peak, "merges": merges}


MARKDOWN = """### Ingestion (`bench/ingest.py`)

{header}

{table}

A {rows:,}-row CSV ({mb:,.0f} MB) resampled from the demo rows with fresh ids, ingested with
`ingest_path` (checked block by block against the schema, staged as Parquet) and parsed with
a bare `pyarrow.csv.read_csv`, interleaved, {rounds} rounds each: median rounds {ingest_s:.2f} s and
{raw_s:.2f} s ({ingest_mbs:,.0f} and {raw_mbs:,.0f} MB/s); the best rounds give {best_ratio:.2f}. The peaks are
whole processes (Django and the libraries included) on the same file. Merges: {repeats} batches of
{batch:,} rows, each merged alone into a master of {small:,} and of {big:,} rows (medians
{small_s:.4f} s and {big_s:.4f} s)."""


def report(m: dict, plan: dict) -> tuple[list, str]:
    ratios = [r["seconds"] / i["seconds"] for i, r in zip(m["ingests"], m["raws"])]  # speed ratio: raw time / ingest time
    ingest_s = statistics.median(r["seconds"] for r in m["ingests"])
    raw_s = statistics.median(r["seconds"] for r in m["raws"])
    ratio = statistics.median(ratios)
    best_ratio = min(r["seconds"] for r in m["raws"]) / min(r["seconds"] for r in m["ingests"])
    rows = m["rows"]
    (small, small_times), (big, big_times) = m["merges"].items()
    small_s, big_s = statistics.median(small_times), statistics.median(big_times)
    targets = [
        common.Target(f"ingest a {rows:,}-row CSV: speed", rows / ingest_s, "rows/s", "bare pyarrow.csv.read_csv of the file",
                      rows / raw_s, ratio, "ours / raw speed", f">= {SPEED_TARGET} of raw", ratio >= SPEED_TARGET,
                      note=f"{m['size_mb'] / ingest_s:.0f} MB/s against {m['size_mb'] / raw_s:.0f} MB/s",
                      rounds=[r["seconds"] for r in m["ingests"]]),
        common.Target("peak memory of `manage.py ingest` on it", m["peak"] / MB, "MB", "a process only reading it with read_csv",
                      m["raw_peak"] / MB, m["peak"] / m["raw_peak"], "ours / raw memory", "(information)", None),
        common.Target(f"merge a {MERGE_BATCH_ROWS:,}-row batch into a {big:,}-row master", big_s * 1e3, "ms",
                      f"the same into a {small:,}-row master", small_s * 1e3, big_s / small_s, "ours / raw time",
                      f"< {MERGE_TARGET}x", big_s / small_s < MERGE_TARGET, rounds=big_times),
    ]
    markdown = MARKDOWN.format(header="{header}", table=common.targets_markdown(targets), rows=rows, mb=m["size_mb"],
                               rounds=plan["rounds"], ingest_s=ingest_s, raw_s=raw_s, ingest_mbs=m["size_mb"] / ingest_s,
                               raw_mbs=m["size_mb"] / raw_s, best_ratio=best_ratio, repeats=plan["merge_repeats"],
                               batch=MERGE_BATCH_ROWS, small=small, big=big, small_s=small_s, big_s=big_s)
    return targets, markdown


if __name__ == "__main__":
    main()
