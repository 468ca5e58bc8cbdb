"""Benchmark: predictions with the active model and one retraining, against the raw libraries.

Run by `make bench`. In one throw-away CL_HOME it measures
- serving.predict for one row vs the bare pipeline's predict_proba on the same row
  (the price of the per-request "which version is active" check; no joblib load per request),
- the /predict/ page (a POST through the whole middleware stack) vs a bare Django view,
- one retrain_now vs scikit-learn fitting the chosen pipeline once on the same rows
  (the retraining also cross-validates four candidates, scores two models, bootstraps and drifts).
"""
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
HOME = Path(tempfile.mkdtemp(prefix="cl-bench-serving-"))
os.environ.update(CL_HOME=str(HOME), DJANGO_SECRET_KEY="bench-only", DJANGO_SETTINGS_MODULE="clsite.settings",
                  DJANGO_ALLOWED_HOSTS="testserver,127.0.0.1")

import django  # noqa: E402

django.setup()

import pandas as pd  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.test import Client  # noqa: E402
from django.urls import clear_url_caches, path  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from testing import builders  # noqa: E402


def per_call(fn, repeat: int) -> float:
    fn()
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - started) / repeat


def main() -> None:
    call_command("migrate", verbosity=0)
    demo = builders.DemoData(HOME / "demo")
    builders.initialise(demo, rows=slice(0, 4000))
    users = builders.make_users()

    from modelhub import serving, training
    from modelhub.models import ModelVersion

    row = demo.frame.iloc[[4100]].drop(columns=["churn"])
    version, model = serving.active_model()
    X = training.features_frame(row, version.schema)
    ours = per_call(lambda: serving.predict(row), 200)
    raw = per_call(lambda: model.predict_proba(X), 200)

    # A bare view behind the same middleware, added to the URLconf for this run only.
    from clsite import urls

    urls.urlpatterns.append(path("bench-bare/", lambda request: HttpResponse("ok"), name="bench_bare"))
    clear_url_caches()
    client = Client()
    client.force_login(users["viewer"])
    form = row.iloc[0].drop(labels=["customer_id"]).to_dict()
    page = per_call(lambda: client.post("/predict/", form), 50)
    bare = per_call(lambda: client.get("/bench-bare/"), 50)

    from ingestion.services import ingest_path
    from modelhub.retraining import retrain_now

    ingest_path(demo.write("batch.csv", slice(4000, 7043)))
    started = time.perf_counter()
    run = retrain_now()
    ours_train = time.perf_counter() - started
    candidate = ModelVersion.objects.get(pk=run.candidate_id)
    frame = pd.concat([demo.frame.iloc[:7043]])
    Xall, yall = training.features_frame(frame, candidate.schema), training.labels(frame, candidate.schema)
    chosen = next(c for c in training.CANDIDATES if c.name == candidate.estimator)
    with threadpool_limits(limits=1):
        started = time.perf_counter()
        training.build_pipeline(candidate.schema, chosen.estimator, scale=chosen.scale).fit(Xall, yall)
        raw_train = time.perf_counter() - started

    rows = [
        ("predict one row (service)", f"{ours * 1e3:.2f} ms", "bare predict_proba", f"{raw * 1e3:.2f} ms", ours / raw),
        ("POST /predict/ page", f"{page * 1e3:.1f} ms", "bare Django view", f"{bare * 1e3:.1f} ms", page / bare),
        (f"retrain_now, {candidate.training_rows + candidate.holdout_rows} rows ({run.status})", f"{ours_train:.2f} s",
         "sklearn fit of the chosen pipeline", f"{raw_train:.2f} s", ours_train / raw_train),
    ]
    print(f"{'measured':<44}{'ours':>12}  {'baseline':<36}{'raw':>10}  ratio")
    for name, a, base, b, ratio in rows:
        print(f"{name:<44}{a:>12}  {base:<36}{b:>10}  {ratio:5.1f}x")
    print("\nstages of that retraining:", ", ".join(f"{s['stage']} {s['seconds']:.2f}s" for s in run.stages))


if __name__ == "__main__":
    main()
