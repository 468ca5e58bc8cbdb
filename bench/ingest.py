"""Ingestion speed and merge cost, measured against the raw library in the same run.

    .venv/bin/python bench/ingest.py [--rows N] [--keep]

1. Builds an N-row CSV (default 1,000,000) from demo/telco_churn.csv: rows resampled, every
   customer_id fresh and unique.
2. Ingests it with ingestion.services.ingest_path into a throw-away CL_HOME (migrated SQLite,
   initialised on 2,000 demo rows) and parses it with a bare pyarrow.csv.read_csv, interleaved,
   five rounds each; prints rows/s and MB/s of the best round of both and their ratio (target:
   ingest >= 1/3 of the raw parse), the ratio of the median rounds beside it, then the peak
   memory of `manage.py ingest` on the file, in a process of its own.
3. Merges 10,000-row batches into a 100,000-row and into a 5,000,000-row master with
   ingestion.master.merge_batches (target: median time of the second under 1.5 times the
   first). The big master is cheap to build: one Parquet file, hard-linked as 50 partitions.
"""
import argparse
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for the testing package
DEMO = ROOT / "demo" / "telco_churn.csv"
MB = 1024 * 1024
MERGE_BATCH_ROWS = 10_000
MASTER_SIZES = (100_000, 5_000_000)
PARTITION_ROWS = 100_000
MERGE_REPEATS = 15
ROUNDS = 5


def build_csv(target: Path, rows: int, seed: int = 0, id_prefix: str = "B") -> None:
    """Resample the demo's rows with fresh unique ids; runs in a child process to keep the parent's memory clean."""
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


def build_many(jobs: list[tuple]) -> None:
    for job in jobs:
        build_csv(*job)


def build_in_child(jobs: list[tuple]) -> None:
    """Run build_csv for each (target, rows, seed, id_prefix) in a child process."""
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=build_many, args=(jobs,))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit("building the bench files failed")


def peak_memory_of_ingest_command(path: Path, cl_home: Path) -> int:
    """Peak resident memory (bytes) of `manage.py ingest path`: the whole process, Django included."""
    report = cl_home / "tmp" / "ingest-peak.txt"
    env = dict(os.environ, CL_HOME=str(cl_home), DJANGO_SETTINGS_MODULE="clsite.settings")
    env.setdefault("DJANGO_SECRET_KEY", "bench-only-secret")
    from testing.memory import ingest_reporting_peak

    done = ingest_reporting_peak(path, report, env=env)
    if done.returncode != 0:
        raise SystemExit(f"manage.py ingest failed: {done.stderr[-2000:]}")
    return int(report.read_text()) * 1024


def setup_django(cl_home: Path) -> None:
    os.environ["CL_HOME"] = str(cl_home)
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret")
    os.environ["DJANGO_SETTINGS_MODULE"] = "clsite.settings"
    sys.path.insert(0, str(ROOT))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


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


def best(runs: list[dict]) -> dict:
    """The fastest run: on a shared machine the others mostly measure the neighbours."""
    return min(runs, key=lambda run: run["seconds"])


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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cl-bench-"))
    try:
        run(work, args.rows)
    finally:
        if args.keep:
            print(f"\n(files kept in {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(work: Path, rows: int) -> None:
    csv_path = work / f"bench-{rows}.csv"
    print(f"building a {rows:,}-row CSV from {DEMO.name} ...", flush=True)
    batch_files = [work / f"batch-{i}.csv" for i in range(MERGE_REPEATS * len(MASTER_SIZES))]
    build_in_child([(csv_path, rows, 0, "B")] + [(path, MERGE_BATCH_ROWS, 100 + i, f"M{i:02d}-") for i, path in enumerate(batch_files)])
    size_mb = csv_path.stat().st_size / MB

    setup_django(work / "cl_home")
    initialise(work)
    # Warm the page cache and the code paths, so neither side pays for the first read.
    measure_raw(csv_path)

    print(f"ingesting {csv_path.name} ({size_mb:,.1f} MB) and parsing it with pyarrow, {ROUNDS} rounds ...", flush=True)
    ingests, raws = [], []
    for _ in range(ROUNDS):  # interleaved, so both sides see the same machine
        ingests.append(measure_ingest(csv_path))
        raws.append(measure_raw(csv_path))
    ingest, raw = best(ingests), best(raws)
    ingest["median"] = statistics.median(run["seconds"] for run in ingests)
    raw["median"] = statistics.median(run["seconds"] for run in raws)
    print("measuring the memory of `manage.py ingest` on the same file ...", flush=True)
    ingest["peak"] = peak_memory_of_ingest_command(csv_path, work / "cl_home")
    set_aside_staged()

    template = work / "partition-template.parquet"
    write_template(template)

    merges = {}
    for i, size in enumerate(MASTER_SIZES):
        actual = build_master(size, template)
        merges[actual] = measure_merges(batch_files[i * MERGE_REPEATS:(i + 1) * MERGE_REPEATS])

    report(size_mb, ingest, raw, merges)


def report(size_mb: float, ingest: dict, raw: dict, merges: dict) -> None:
    ingest_rate, raw_rate = ingest["rows"] / ingest["seconds"], raw["rows"] / raw["seconds"]
    ratio = ingest_rate / raw_rate
    print()
    print(f"{'best of ' + str(ROUNDS) + ' rounds':<34}{'seconds':>10}{'rows/s':>14}{'MB/s':>10}")
    print(f"{'ingest (ingest_path)':<34}{ingest['seconds']:>10.2f}{ingest_rate:>14,.0f}{size_mb / ingest['seconds']:>10.1f}")
    print(f"{'raw parse (pyarrow.csv.read_csv)':<34}{raw['seconds']:>10.2f}{raw_rate:>14,.0f}{size_mb / raw['seconds']:>10.1f}")
    verdict = "meets" if ratio >= 1 / 3 else "MISSES"
    print(f"ingest / raw parse speed: {ratio:.2f}  ({verdict} the target of at least 0.33); "
          f"of the median rounds ({ingest['median']:.2f} s, {raw['median']:.2f} s): {raw['median'] / ingest['median']:.2f}")
    print(f"peak memory of `manage.py ingest` on this {size_mb:,.0f} MB file: {ingest['peak'] / MB:,.0f} MB "
          f"(the whole process, Django and libraries included)")
    print()
    print(f"{'merge a 10,000-row batch into':<34}{'median s':>10}{'min s':>10}{'max s':>10}")
    for size, times in merges.items():
        print(f"{f'a {size:,}-row master':<34}{statistics.median(times):>10.4f}{min(times):>10.4f}{max(times):>10.4f}")
    small, big = (statistics.median(times) for times in merges.values())
    merge_ratio = big / small
    verdict = "meets" if merge_ratio < 1.5 else "MISSES"
    print(f"merge time ratio (big master / small master, medians): {merge_ratio:.2f}  ({verdict} the target of under 1.5)")


if __name__ == "__main__":
    main()
