"""Builders shared by the model hub's tests: versions without retraining, tampering, small
synthetic datasets."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from modelhub import artifacts, services, serving
from modelhub.models import Deployment, ModelVersion

HUB_ROWS = slice(0, 1200)


def served(frame: pd.DataFrame) -> tuple[ModelVersion, pd.DataFrame]:
    """What the active model (serving.active(), as every door gets it) answers for these rows:
    the version, and each row's id, probability and predicted label."""
    loaded = serving.active()
    proba = loaded.predictor.proba_frame(frame)
    result = pd.DataFrame({"customer_id": frame["customer_id"], "probability": proba.round(4)}, index=frame.index)
    result["prediction"] = loaded.labels(proba)
    return loaded.version, result


def schema_like(features: list[dict], *, target: str, positive_label: str) -> SimpleNamespace:
    """What training needs of a DatasetSchema, without a database row."""
    return SimpleNamespace(
        features=features, target=target, positive_label=positive_label,
        feature_names=[f["name"] for f in features],
        numeric_features=[f["name"] for f in features if f["kind"] == "numeric"],
        categorical_features=[f["name"] for f in features if f["kind"] != "numeric"],
    )


SYNTHETIC = schema_like([{"name": "x1", "kind": "numeric"}, {"name": "x2", "kind": "numeric"},
                         {"name": "colour", "kind": "categorical"}], target="label", positive_label="yes")


def copy_of_active(**fields) -> ModelVersion:
    """A real candidate version (artifact, sha256, metadata) holding the active model's pipeline.

    Retraining costs seconds; deployment tests only need more versions that load and predict.
    """
    active = ModelVersion.active()
    model = artifacts.load(active.artifact, active.sha256)
    fields = {"estimator": active.estimator, "metrics": active.metrics, "trained_on": active.trained_on} | fields
    return services.register_version(model=model, schema=active.schema, run=None, **fields)


def deployed_copy(reason: str = "test deploy") -> ModelVersion:
    """copy_of_active(), deployed: the previous active version becomes retired."""
    active = ModelVersion.active()
    version = copy_of_active()
    services.deploy_version(version=version, user=None, reason=reason, kind=Deployment.Kind.DEPLOY, replacing=active)
    version.refresh_from_db()
    return version


def tamper(cl_home: Path, version: ModelVersion) -> Path:
    """Flip one byte in the middle of the version's joblib file, as a disk error or an attacker would."""
    path = cl_home / "models" / "versions" / version.artifact
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def synthetic_frame(n: int, *, seed: int, signal: str, id_prefix: str = "R") -> pd.DataFrame:
    """Two numeric features and a noise category; the label follows `signal`.

    "xor": positive when exactly one of x1, x2 is above zero (no linear model can see it);
    "linear": positive with probability rising linearly in x1 + x2.
    """
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    if signal == "xor":
        positive = (x1 > 0) ^ (x2 > 0)
        flip = rng.random(n) < 0.05
        positive = positive ^ flip
    elif signal == "linear":
        positive = rng.random(n) < 1 / (1 + np.exp(-2.0 * (x1 + x2)))
    else:
        raise ValueError(signal)
    return pd.DataFrame({
        "row_id": [f"{id_prefix}{i:05d}" for i in range(n)],
        "x1": x1.round(4),
        "x2": x2.round(4),
        "colour": rng.choice(["red", "green", "blue"], n),
        "label": np.where(positive, "yes", "no"),
    })
