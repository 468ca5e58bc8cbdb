"""Benchmark: scoring a whole CSV in the background, beside a raw predict_proba in the same run,
and its memory against the file's size.

    .venv/bin/python bench/scoring.py [--quick] [--rows N] [--keep]

In a throw-away CL_HOME initialised on demo rows 0-3,999 (model v1.0):
1. A CSV of N rows (default 1,000,000; --quick 200,000) built from demo/telco_churn.csv by
   resampling rows with fresh ids (common.build_csv, in a child process), and one of N/4 rows.
2. Speed, interleaved rounds (median reported):
   - ours: modelhub.scoring.submit (the header check, the file moved into CL_HOME, the job row),
     then modelhub.scoring.run in this process, as the worker runs it: read in chunks, the
     fast path, the result CSV written; only `run` is timed (submit is a rename);
   - raw: the loaded pipeline's predict_proba over the same rows, X = training.features_frame
     of the whole CSV read once with pyarrow (that read is timed separately, not counted).
   Target: ours within 1.3x of raw. The result file is checked against raw to 1e-4 (it holds
   probabilities rounded to 4 places).
3. Memory: the peak resident memory (VmHWM) of a child process that sets up Django, submits
   and runs the job, for the N-row file and for the N/4-row one, beside a child that only sets
   up Django and loads the model. Target: the N-row peak within a few tens of MB (50 MB) of the
   N/4-row peak: memory bounded by the chunk, not the file.
Writes bench/results/scoring.json and its section of bench/README.md.
"""
import argparse
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the benchmarks import the project and each other as bench.x

from bench import common  # noqa: E402

RATIO_TARGET = 1.3
MEMORY_TARGET_MB = 50


def score_file(path: Path, user) -> tuple[float, object]:
    """submit + run a hard link to `path` (submit moves its source); the seconds of `run`."""
    from modelhub import scoring

    link = path.with_name(f"{path.stem}-{time.monotonic_ns()}.csv")
    os.link(path, link)
    job = scoring.submit(source=link, original_name=path.name, user=user)
    seconds, job = common.timed(lambda: scoring.run(job))
    if job.status != job.Status.DONE:
        raise SystemExit(f"scoring failed: {job.error}")
    return seconds, job


def read_features(path: Path, schema):
    """The CSV read once, as the Pipeline wants it: every column as text, blanks missing."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from modelhub import training

    header = path.open().readline().strip().split(",")
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in header},
                                                                     strings_can_be_null=False))
    frame = table.to_pandas().replace({"": None})
    return training.features_frame(frame, schema)


def child(args) -> None:
    """--child FILE: in a process of its own (CL_HOME from the parent), set up, then score FILE
    (or with FILE "-", only load the active model); the wrapper records VmHWM."""
    common.setup_django(migrate=False)
    from modelhub import serving
    from testing import builders

    serving.active()
    if args.child != "-":
        score_file(Path(args.child), builders.make_users()["analyst"])


def speed(meter, big: Path, rounds: int, user) -> tuple[list, dict]:
    import numpy as np
    import pandas as pd

    from clsite import home
    from modelhub import serving, training

    loaded = serving.active()
    read_seconds, X = common.timed(lambda: read_features(big, loaded.version.schema))
    ours, raw = [], []
    with meter.phase("scoring vs predict_proba"):
        for i in range(rounds):
            seconds, job = score_file(big, user)
            ours.append(seconds)
            seconds, proba = common.timed(lambda: training.positive_proba(loaded.model, X))
            raw.append(seconds)
            result = home.path(job.result_path)
            if i == 0:  # the job wrote what the Pipeline gives
                scored = pd.read_csv(result, usecols=["probability"])["probability"].to_numpy()
                difference = float(np.max(np.abs(scored - proba)))
                assert len(scored) == len(X) and difference <= 0.5e-4 + 1e-12, difference
            result.unlink()
    ours_s, raw_s = common.median(ours), common.median(raw)
    rows = len(X)
    target = common.Target(f"score a {rows:,}-row CSV: scoring.run", ours_s, "s", "predict_proba of the loaded Pipeline on X",
                           raw_s, ours_s / raw_s, "ours / raw time", f"<= {RATIO_TARGET}x raw", ours_s / raw_s <= RATIO_TARGET,
                           note=f"{rows / ours_s:,.0f} rows/s; raw {rows / raw_s:,.0f} rows/s", rounds=ours)
    details = {"rows": rows, "file_mb": round(big.stat().st_size / common.MB, 1), "rounds_ours_s": ours, "rounds_raw_s": raw,
               "read_and_features_frame_s": read_seconds, "max_abs_difference": difference,
               "model": {"version": loaded.version.version, "estimator": loaded.version.estimator,
                         "fast_path": loaded.predictor.compiled}}
    return [target], details


def memory(meter, big: Path, small: Path, rounds: int) -> tuple[list, dict]:
    script = Path(__file__).resolve()
    peaks = {"model only": [], small.name: [], big.name: []}
    with meter.phase("memory (child processes)"):
        for _ in range(rounds):
            for key, arg in (("model only", "-"), (small.name, str(small)), (big.name, str(big))):
                peak, _ = common.peak_of_child(script, ["--child", arg])
                peaks[key].append(peak / common.MB)
    base, small_mb, big_mb = (common.median(peaks[k]) for k in ("model only", small.name, big.name))
    rows_big, rows_small = (sum(1 for _ in open(p, "rb")) - 1 for p in (big, small))
    target = common.Target(f"peak memory scoring {rows_big:,} rows (child process)", big_mb, "MB",
                           f"the same for {rows_small:,} rows", small_mb, big_mb / small_mb, "ours / raw memory",
                           f"within {MEMORY_TARGET_MB} MB of the smaller file", big_mb - small_mb <= MEMORY_TARGET_MB,
                           note=f"difference {big_mb - small_mb:+.0f} MB; Django and the model alone: {base:.0f} MB", rounds=peaks[big.name])
    details = {"peak_mb": peaks, "difference_mb": big_mb - small_mb, "model_only_mb": base,
               "chunk_bytes": None}
    from ingestion import csvio

    details["chunk_bytes"] = csvio.CHECK_BYTES
    return [target], details


MARKDOWN = """### Batch scoring (`bench/scoring.py`)

{header}

{table}

{rows:,}-row CSV ({mb:.0f} MB) resampled from the demo rows with fresh ids; model v{version}
({estimator}, fast path {fast}). Ours is `scoring.run` in-process after `scoring.submit`, as the
worker runs it (read in {chunk_mb:.0f} MB chunks, score, write the result CSV); raw is
`predict_proba` of the same loaded Pipeline on the rows already read and typed (reading them
with pyarrow and `features_frame` took {read:.2f} s, not counted); the result was checked
against raw (largest difference {diff:.1e}, the file holds 4 decimals). {rounds} interleaved rounds,
median. {diff_mb:+.0f} MB peak
between the {rows:,}-row file and the {small_rows:,}-row one (medians of {mem_rounds} child
processes each; a child that only loads Django and the model peaks at {base:.0f} MB)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200,000 rows, 2 rounds; writes nothing")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    started = time.perf_counter()
    home = common.throwaway_home("scoring", keep=args.keep)
    rows = args.rows or (200_000 if args.quick else 1_000_000)
    rounds = 2 if args.quick else 3
    common.setup_django()
    meter = common.LoadMeter()
    work = home / "bench-files"
    work.mkdir()
    big, small = work / f"score-{rows}.csv", work / f"score-{rows // 4}.csv"
    with meter.phase("set-up"):
        _, users = common.initialise_demo(slice(0, 4000))
        print(f"building {rows:,}- and {rows // 4:,}-row CSVs ...", flush=True)
        common.build_in_child([(big, rows, 0, "S"), (small, rows // 4, 1, "T")])
    print("scoring against predict_proba ...", flush=True)
    t1, d1 = speed(meter, big, rounds, users["analyst"])
    print("peak memory of child processes ...", flush=True)
    t2, d2 = memory(meter, big, small, 2 if args.quick else 3)
    m = d1["model"]
    markdown = MARKDOWN.format(header="{header}", table=common.targets_markdown(t1 + t2), rows=d1["rows"], mb=d1["file_mb"],
                               version=m["version"], estimator=m["estimator"], fast="on" if m["fast_path"] else "off",
                               chunk_mb=d2["chunk_bytes"] / common.MB, read=d1["read_and_features_frame_s"],
                               diff=d1["max_abs_difference"], rounds=rounds, diff_mb=d2["difference_mb"], small_rows=rows // 4,
                               mem_rounds=len(d2["peak_mb"]["model only"]), base=d2["model_only_mb"])
    shutil.rmtree(work, ignore_errors=True)
    common.write_result("scoring", started=started, meter=meter, targets=t1 + t2, details={"speed": d1, "memory": d2},
                        markdown=markdown, quick=args.quick)


if __name__ == "__main__":
    main()
