"""Predictions with the active model, held in memory per process.

Each call asks the database which version is active (one indexed query) and reloads only
when that changed, so a deployment or rollback reaches every web process at its next request
without a joblib load per request.
"""
import tempfile
import threading
from pathlib import Path

import pandas as pd

from clsite import exports, home
from ingestion import csvio

from . import artifacts, training
from .models import ModelVersion


class NoActiveModel(Exception):
    pass


_lock = threading.Lock()
_cached: dict = {"key": None, "version": None, "model": None}


def forget() -> None:
    """Drop the model this process holds, so the next call loads the active one afresh."""
    with _lock:
        _cached.update(key=None, version=None, model=None)


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
    proba = training.version_proba(version, model, training.features_frame(frame, schema))
    result = pd.DataFrame(index=frame.index)
    if schema.id_column and schema.id_column in frame:
        result[schema.id_column] = frame[schema.id_column]
    result["probability"] = proba.round(4)
    result["prediction"] = [schema.positive_label if p >= 0.5 else schema.negative_label for p in proba]
    return version, result


class PredictionError(ValueError):
    pass


PREDICT_CHUNK_ROWS = 50_000


def predict_csv(source) -> tuple[ModelVersion, Path]:
    """Score a CSV (a path or an uploaded file) in chunks; returns the version and a CSV of results
    under CL_HOME/tmp, which the caller removes once it has sent it."""
    version, _ = active_model()
    spooled = _spool(source) if hasattr(source, "chunks") else None
    try:
        return version, _score_file(spooled or Path(source), version)
    finally:
        if spooled:
            spooled.unlink(missing_ok=True)


def _score_file(path: Path, version: ModelVersion) -> Path:
    schema = version.schema
    try:
        header, delimiter = csvio.read_header(path)
    except csvio.HeaderError as exc:
        raise PredictionError(str(exc)) from None
    missing = [name for name in schema.feature_names if name not in header]
    if missing:
        raise PredictionError(f"missing columns: {', '.join(missing)}; download the template from the data page")
    fd, out = tempfile.mkstemp(dir=home.path("tmp"), prefix="predictions-", suffix=".csv")
    try:
        with open(fd, "w", newline="", encoding="utf-8") as fh:
            reader = pd.read_csv(path, sep=delimiter, dtype=str, keep_default_na=False, chunksize=PREDICT_CHUNK_ROWS, encoding="utf-8-sig")
            for number, chunk in enumerate(reader):
                current, scored = predict(chunk.replace({"": None}))
                if current.pk != version.pk:
                    raise PredictionError("the active model changed while scoring; run it again")
                exports.safe_frame(scored).to_csv(fh, index=False, header=number == 0)
    except (ValueError, UnicodeDecodeError) as exc:
        Path(out).unlink(missing_ok=True)
        if isinstance(exc, PredictionError):
            raise
        raise PredictionError(f"the file could not be read: {exc}") from None
    return Path(out)


def _spool(uploaded) -> Path:
    fd, name = tempfile.mkstemp(dir=home.path("tmp"), prefix="score-", suffix=".csv")
    with open(fd, "wb") as fh:
        for chunk in uploaded.chunks():
            fh.write(chunk)
    return Path(name)
