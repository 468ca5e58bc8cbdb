"""Predictions with the active model, held in memory per process.

Each call asks the database which version is active (one indexed query) and reloads only
when that changed, so a deployment or rollback reaches every web process at its next request
without a joblib load per request. A loaded version is compiled once into the fast path
(modelhub.fastpath): a row costs tens of microseconds instead of a Pipeline call's milliseconds.
"""
import time
from dataclasses import dataclass

import numpy as np
from django.conf import settings

from clsite import memo

from . import artifacts, fastpath, inputs
from .models import ModelVersion


NO_MODEL = "no model is active yet: run `manage.py init_cl_system`"


class NoActiveModel(Exception):
    pass


@dataclass(frozen=True)
class Loaded:
    version: ModelVersion
    model: object
    predictor: fastpath.Predictor

    def labels(self, proba: np.ndarray) -> list[str]:
        schema, threshold = self.version.schema, self.version.threshold
        return [schema.positive_label if p >= threshold else schema.negative_label for p in proba]


_cached = memo.ProcessCache("served model")  # key, loaded, checked


def forget() -> None:
    """Drop the model this process holds, so the next call loads the active one afresh."""
    _cached.forget()


def active() -> Loaded:
    """The active version, loaded and compiled. Which version is active is asked at most every
    CL_SERVING_RECHECK_SECONDS: a prediction then needs no database query at all, and a
    deployment or rollback reaches every process within that time."""
    now = time.monotonic()
    loaded = _cached.get("loaded")
    if loaded is not None and now - _cached["checked"] < settings.CL_SERVING_RECHECK_SECONDS:
        return loaded
    row = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).values_list("pk", "sha256").first()
    if row is None:
        raise NoActiveModel(NO_MODEL)
    with _cached.lock:
        _cached["checked"] = now
        if _cached.get("key") != row:
            version = ModelVersion.objects.select_related("schema").get(pk=row[0])
            # A failed load raises here and keeps the previous model in the cache.
            model = artifacts.load(version.artifact, version.sha256)
            label = version.schema.positive_label if version.imported else None
            predictor = fastpath.compile_model(model, version.schema, positive_label=label)
            _cached.update(key=row, loaded=Loaded(version, model, predictor))
        return _cached["loaded"]


def predict_request(rows: list) -> tuple[Loaded, inputs.Checked, np.ndarray | None]:
    """Rows as a person or a program sends them (the predict page, the API): checked against
    the active version (modelhub.inputs), and scored when nothing in them is refused (else None)."""
    loaded = active()
    checked = inputs.check_rows(rows, loaded.version)
    if checked.problem_count:
        return loaded, checked, None
    return loaded, checked, loaded.predictor.proba_columns(checked.columns)

