"""Benchmark: one prediction in-process, and the pages a long history weighs on, each beside its
raw counterpart in the same run.

    .venv/bin/python bench/serving.py [--quick] [--keep]

In a throw-away CL_HOME initialised on demo rows 0-3,999 (model v1.0, chosen by the candidates'
cross-validation), native thread pools capped at one as in a web process (clsite/wsgi.py):

1. one row, as a program sends it in JSON (numbers as numbers), for rows the model never saw:
   - ours: modelhub.serving.predict_request([row]), the API's call (the compiled fast path, and the
     once-a-second "which version is active" check);
   - raw: the Pipeline, training.positive_proba(model, training.features_frame(pd.DataFrame([row]), schema));
   - raw: the bare fitted estimator on the row already encoded by the Pipeline's preparation step.
   Target: ours p50 under 1 ms.
2. `/` (overview) and `/models/` with 500 versions in the history (bulk-created rows sharing the
   active artifact, as tests/test_page_queries.py does), through django.test.Client logged in as
   an ML engineer, beside a bare view rendering a trivial template behind the same middleware
   (bench/bare.py). Target: p50 under 25 ms.
Rounds are interleaved (ours, then raw, in each round) and the median of the rounds' p50 is
reported. Writes bench/results/serving.json and its section of bench/README.md.
"""
import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the benchmarks import the project and each other as bench.x

from bench import common  # noqa: E402

HISTORY = 500
PAGES = ("/", "/models/")


def predictions(meter, rounds: int, calls: dict) -> tuple[list, dict]:
    import pandas as pd

    from modelhub import serving, training
    from testing import builders

    frame = pd.read_csv(builders.DEMO, dtype=str, keep_default_na=False)
    rows = [common.api_row(r) for _, r in frame.iloc[4000:4500].iterrows()]
    loaded = serving.active()
    model, schema = loaded.model, loaded.version.schema
    if not loaded.predictor.compiled:
        raise SystemExit(f"the fast path is off for the active model: {loaded.predictor.fallback_reason}")
    encoded = [model[:-1].transform(training.features_frame(pd.DataFrame([row]), schema)) for row in rows]
    estimator = model[-1]
    state = {"i": 0}

    def cycling(fn, items):
        def call():
            state["i"] = (state["i"] + 1) % len(items)
            fn(items[state["i"]])
        return call

    ours_fn = cycling(lambda row: serving.predict_request([row]), rows)
    pipeline_fn = cycling(lambda row: training.positive_proba(model, training.features_frame(pd.DataFrame([row]), schema)), rows)
    estimator_fn = cycling(estimator.predict_proba, encoded)
    # The same numbers from all three, before anything is timed.
    for row, x in zip(rows[:50], encoded[:50]):
        a = serving.predict_request([row])[2][0]
        b = training.positive_proba(model, training.features_frame(pd.DataFrame([row]), schema))[0]
        c = estimator.predict_proba(x)[0, 1]
        assert abs(a - b) < 1e-9 and abs(b - c) < 1e-12, (a, b, c)

    per_round = {"ours": [], "pipeline": [], "estimator": []}
    with meter.phase("predict one row"):
        for _ in range(rounds):
            per_round["ours"].append(common.summary_ms(common.call_times(ours_fn, calls["ours"])))
            per_round["pipeline"].append(common.summary_ms(common.call_times(pipeline_fn, calls["pipeline"])))
            per_round["estimator"].append(common.summary_ms(common.call_times(estimator_fn, calls["estimator"])))
    p50 = {k: common.median(r["p50_ms"] for r in v) for k, v in per_round.items()}
    p99 = {k: common.median(r["p99_ms"] for r in v) for k, v in per_round.items()}
    targets = [
        common.Target("predict one row: serving.predict_request, p50", p50["ours"], "ms", "the Pipeline (features_frame + predict_proba)",
                      p50["pipeline"], p50["ours"] / p50["pipeline"], "ours / raw time", "p50 < 1 ms", p50["ours"] < 1.0,
                      rounds=[r["p50_ms"] for r in per_round["ours"]]),
        common.Target("predict one row: serving.predict_request, p50", p50["ours"], "ms", "the bare estimator on the encoded row",
                      p50["estimator"], p50["ours"] / p50["estimator"], "ours / raw time", "(information)", None),
        common.Target("predict one row: serving.predict_request, p99", p99["ours"], "ms", "the Pipeline, p99", p99["pipeline"],
                      p99["ours"] / p99["pipeline"], "ours / raw time", "(information)", None),
    ]
    details = {"model": {"version": loaded.version.version, "estimator": loaded.version.estimator,
                         "training_rows": loaded.version.training_rows},
               "rows": "demo rows 4000-4499 (never trained on), as JSON values", "calls_per_round": calls,
               "rounds": per_round, "threads": 1}
    return targets, details


def many_rows(meter, rounds: int, users) -> tuple[list, dict]:
    """POST /api/v1/predict with 10,000 rows, whole, beside predict_proba on the same rows."""
    import json

    import pandas as pd
    from django.test import Client

    from api.services import create_token
    from modelhub import serving, training
    from testing import builders

    frame = pd.read_csv(builders.DEMO, dtype=str, keep_default_na=False)
    rows = [common.api_row(r) for _, r in frame.iterrows()]
    rows = (rows * 2)[:10_000]
    body = json.dumps({"rows": rows}).encode()
    loaded = serving.active()
    model, schema = loaded.model, loaded.version.schema
    _, key = create_token(user=users["viewer"], name="bench")
    client = Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"}

    def call():
        response = client.post("/api/v1/predict", body, content_type="application/json", **headers)
        assert response.status_code == 200, response.content[:300]
        return response

    def raw():
        return model.predict_proba(training.features_frame(pd.DataFrame(rows), schema))

    answered = [p["probability"] for p in json.loads(call().content)["predictions"]]
    assert max(abs(a - b) for a, b in zip(answered, raw()[:, 1])) < 1e-6
    times = {"ours": [], "raw": []}
    with meter.phase("predict 10,000 rows"):
        for _ in range(rounds):
            times["ours"].append(common.median(common.call_times(call, 3, warm=1)))
            times["raw"].append(common.median(common.call_times(raw, 3, warm=1)))
    ours, pipeline = common.median(times["ours"]), common.median(times["raw"])
    targets = [common.Target("POST /api/v1/predict, 10,000 rows, whole call", ours * 1000, "ms",
                             "the Pipeline's predict_proba on the same rows", pipeline * 1000, ours / pipeline, "ours / raw time",
                             "at most 2x", ours / pipeline <= 2.0, rounds=[t * 1000 for t in times["ours"]])]
    return targets, {"body_bytes": len(body), "rounds": times}


def pages(meter, rounds: int, calls: int, users) -> tuple[list, dict]:
    from django.test import Client

    from bench import bare
    from modelhub.models import ModelVersion

    bare.install()
    count = common.grow_history(HISTORY)
    client = Client()
    client.force_login(users["engineer"])
    every = [*PAGES, "/" + bare.PATH]
    for page in every:  # warm: figures are built once per change, then read from the cache
        for _ in range(3):
            response = client.get(page)
            assert response.status_code == 200, (page, response.status_code)
    per_round = {page: [] for page in every}
    with meter.phase("pages in-process"):
        for _ in range(rounds):
            for page in every:
                per_round[page].append(common.summary_ms(common.call_times(lambda: client.get(page), calls, warm=2)))
    p50 = {page: common.median(r["p50_ms"] for r in v) for page, v in per_round.items()}
    bare_p50 = p50["/" + bare.PATH]
    targets = [
        common.Target(f"`{page}` with {count} versions, in-process, p50", p50[page], "ms", "bare template view, same middleware",
                      bare_p50, p50[page] / bare_p50, "ours / raw time", "p50 < 25 ms", p50[page] < 25.0,
                      rounds=[r["p50_ms"] for r in per_round[page]])
        for page in PAGES
    ]
    details = {"versions": count, "active": ModelVersion.active().version, "client": "django.test.Client, ML engineer logged in",
               "calls_per_round": calls, "rounds": per_round}
    return targets, details


MARKDOWN = """### Serving in-process (`bench/serving.py`)

{header}

{table}

One row is sent as a program sends it in JSON; `serving.predict_request` is what `POST /api/v1/predict`
calls (the rows checked by `modelhub.inputs`, then the compiled fast path). 10,000 rows: the whole
call through django.test.Client with a token (the body's bytes made once: orjson decoding, the
checks, the fast path, encoding), beside the Pipeline's `predict_proba` on the same rows as a frame. Model v{version} ({estimator}, {training_rows:,} training rows);
native threads capped at 1 as in a web process; {rounds} interleaved rounds, median of the
rounds' percentiles. Pages: django.test.Client logged in as an ML engineer, {versions} versions
(bulk-created, sharing the active artifact), figures cache warm; the bare view renders a
trivial template behind the same middleware and context processors (`bench/bare.py`)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and 2 rounds; writes nothing")
    parser.add_argument("--keep", action="store_true", help="keep the CL_HOME")
    args = parser.parse_args()
    started = time.perf_counter()
    common.throwaway_home("serving", keep=args.keep)
    common.setup_django()
    from threadpoolctl import threadpool_limits

    meter = common.LoadMeter()
    with meter.phase("set-up"):
        _, users = common.initialise_demo(slice(0, 4000))
    rounds = 2 if args.quick else 5
    calls = {"ours": 2000, "pipeline": 100, "estimator": 500} if args.quick else {"ours": 20000, "pipeline": 400, "estimator": 3000}
    with threadpool_limits(limits=1):
        print("one-row predictions ...", flush=True)
        t1, d1 = predictions(meter, rounds, calls)
        print("10,000 rows in one call ...", flush=True)
        t2, d2 = many_rows(meter, rounds, users)
        print(f"pages with {HISTORY} versions ...", flush=True)
        t3, d3 = pages(meter, rounds, 30 if args.quick else 150, users)
    table = common.targets_markdown(t1 + t2 + t3)
    markdown = MARKDOWN.format(header="{header}", table=table, version=d1["model"]["version"], estimator=d1["model"]["estimator"],
                               training_rows=d1["model"]["training_rows"], rounds=rounds, versions=d3["versions"])
    common.write_result("serving", started=started, meter=meter, targets=t1 + t2 + t3, details={"predict": d1, "many_rows": d2, "pages": d3},
                        markdown=markdown, quick=args.quick)


if __name__ == "__main__":
    main()
