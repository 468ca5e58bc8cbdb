"""Predictions with the active model, held in memory per process.

Each call asks the database which version is active (one indexed query) and reloads only
when that changed, so a deployment or rollback reaches every web process at its next request
without a joblib load per request.
"""
import threading

import pandas as pd

from . import artifacts, training
from .models import ModelVersion


class NoActiveModel(Exception):
    pass


_lock = threading.Lock()
_cached: dict = {"key": None, "version": None, "model": None}


def active_model() -> tuple[ModelVersion, object]:
    row = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).values_list("pk", "sha256").first()
    if row is None:
        raise NoActiveModel("no model is active yet: run `manage.py init_cl_system`")
    with _lock:
        if _cached["key"] != row:
            version = ModelVersion.objects.select_related("schema").get(pk=row[0])
            # A failed load raises here and keeps the previous model in the cache.
            model = artifacts.load(version.artifact, version.sha256)
            _cached.update(key=row, version=version, model=model)
        return _cached["version"], _cached["model"]


def predict(frame: pd.DataFrame) -> tuple[ModelVersion, pd.DataFrame]:
    """Probability and predicted label for each row of `frame` (columns named as in the schema)."""
    version, model = active_model()
    schema = version.schema
    proba = training.positive_proba(model, training.features_frame(frame, schema), schema.positive_label if version.imported else None)
    result = pd.DataFrame(index=frame.index)
    if schema.id_column and schema.id_column in frame:
        result[schema.id_column] = frame[schema.id_column]
    result["probability"] = proba.round(4)
    result["prediction"] = [schema.positive_label if p >= 0.5 else schema.negative_label for p in proba]
    return version, result
