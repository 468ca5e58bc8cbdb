"""Readable copies of database state under CL_HOME, for people and scripts.

The database is the source of truth; these files are rewritten whole (temp file + os.replace)
after each change, so a reader sees the old file or the new one, never half of one.
"""
from clsite import home

from . import artifacts
from .models import Deployment, ModelVersion


def version_metadata(version: ModelVersion) -> dict:
    return {
        "version": version.version,
        "status": version.status,
        "trained_at": version.trained_at,
        "deployed_at": version.deployed_at,
        "artifact": f"models/versions/{version.artifact}",
        "sha256": version.sha256,
        "imported": version.imported,
        "estimator": version.estimator,
        "schema": {
            "major": version.schema.major,
            "target": version.schema.target,
            "positive_label": version.schema.positive_label,
            "negative_label": version.schema.negative_label,
            "id_column": version.schema.id_column,
            "features": version.schema.features,
        },
        "training_rows": version.training_rows,
        "holdout_rows": version.holdout_rows,
        "training_seconds": version.training_seconds,
        "trained_on_batches": version.trained_on,
        "metrics": version.metrics,
        "validation": version.validation,
        "drift": version.drift,
        "candidates": version.candidates,
        "environment": version.environment,
        "run": version.run_id,
    }


def write_version(version: ModelVersion) -> None:
    home.atomic_write_json(home.path("models", "metadata", f"{version.file_stem}.json"), version_metadata(version))


def write_active(version: ModelVersion) -> None:
    data = artifacts.read_verified(version.artifact, version.sha256)
    home.atomic_write_bytes(home.path("models", "active", "model.joblib"), data)
    home.atomic_write_json(home.path("models", "active", "metadata.json"), version_metadata(version))


def write_deployments() -> None:
    rows = [
        {
            "at": d.created_at,
            "kind": d.kind,
            "from_version": d.from_version.version if d.from_version_id else None,
            "to_version": d.to_version.version,
            "user": d.user.username if d.user_id else None,
            "reason": d.reason,
            "run": d.run_id,
        }
        for d in Deployment.objects.select_related("from_version", "to_version", "user").order_by("created_at", "id")
    ]
    home.atomic_write_json(home.path("logs", "deployments.json"), rows)


def write_all(*versions: ModelVersion) -> None:
    for version in versions:
        write_version(version)
    active = ModelVersion.active()
    if active:
        write_active(active)
    write_deployments()
