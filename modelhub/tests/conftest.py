"""Fixtures of the model hub's tests.

Cross-validating four estimators is the slow part of the shared `initialised` fixture; most
tests here need a live model, not a freshly selected one, so `hub` imports a logistic-regression
pipeline fitted once per session, through the real `init_cl_system --model` path.
"""
from pathlib import Path
from types import SimpleNamespace

import joblib
import pandas as pd
import pytest
from django.conf import settings
from django.core.management import call_command
from sklearn.linear_model import LogisticRegression

from ingestion.models import DatasetSchema
from ingestion.schema import learn_schema
from modelhub import evaluation, training
from modelhub.models import ModelVersion
from testing import builders

from .helpers import HUB_ROWS, schema_like


@pytest.fixture(scope="session")
def demo_fit(tmp_path_factory) -> SimpleNamespace:
    """The demo rows of `hub` that are not held out, as features and 0/1 labels, with their schema."""
    folder = tmp_path_factory.mktemp("demo_fit")
    csv = builders.DemoData(folder).write("fit.csv", HUB_ROWS)
    learned = learn_schema(csv, target="churn", id_column="customer_id")
    schema = schema_like(learned.features, target=learned.target, positive_label=learned.positive_label)
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False).replace({"": None})
    # Fitted like our own models, on the rows the hash does not hold out, so that comparing it
    # with a candidate on the holdout stays fair.
    held_out = evaluation.holdout_mask(frame, "customer_id", schema.feature_names + ["churn"], settings.CL_HOLDOUT_PERCENT)
    frame = frame[~held_out]
    return SimpleNamespace(schema=schema, X=training.features_frame(frame, schema), y=training.labels(frame, schema),
                           labels=frame["churn"].to_numpy(), folder=folder)


@pytest.fixture(scope="session")
def demo_model_file(demo_fit) -> Path:
    """A fitted churn Pipeline saved with joblib, as a team would bring to `init --model`."""
    pipeline = training.build_pipeline(demo_fit.schema, LogisticRegression(max_iter=2000), scale=True)
    path = demo_fit.folder / "churn_model.joblib"
    joblib.dump(pipeline.fit(demo_fit.X, demo_fit.y), path)
    return path


@pytest.fixture
def fresh_db(transactional_db):
    """A transactional database that starts empty.

    The root conftest commits one initialised system for the whole session (`ready`);
    pytest-django runs those tests first, and a transactional test flushes the database only at
    its end, so the first transactional test after them would start on that system.
    """
    if DatasetSchema.objects.exists():
        call_command("flush", interactive=False, verbosity=0)


@pytest.fixture
def hub(cl_home, demo, fresh_db, demo_model_file) -> ModelVersion:
    """The system initialised on 1,200 demo rows with an imported model v1.0; real commits."""
    from modelhub.setup import initialise

    return initialise(data=demo.write("initial.csv", HUB_ROWS), target="churn", id_column="customer_id", model_file=demo_model_file)
