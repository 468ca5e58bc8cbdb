"""Readable copies of database state under CL_HOME, for people and scripts.

The database is the source of truth; these files are rewritten whole (temp file + os.replace)
after each change, so a reader sees the old file or the new one, never half of one. They are
derived: a failure to write them never undoes or hides the change they describe; it is logged,
and `check()` finds the difference that `repair()` (start-up, the health command, the next
deploy) puts right.
"""
import hashlib
import json
import logging
from pathlib import Path

from django.utils import timezone

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
        "primary_metric": version.primary_metric,
        "threshold": version.threshold,
        "calibration": version.metrics.get("calibration"),
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


log = logging.getLogger("clsite.modelhub")


def refresh_after_change(*versions: ModelVersion, deployed: bool = True) -> None:
    """Rewrite the mirrors of a committed change, which stands whatever happens here: the files
    of `versions`, and (after a deployment) the active model and the ledger."""
    try:
        _clear_the_way()
        if deployed:
            write_all(*versions)
        else:
            for version in versions:
                write_version(version)
    except Exception:
        log.exception("the mirror files under %s could not be written; `manage.py health --repair` rewrites them", home.home())


def check() -> list[str]:
    """How the mirror files differ from the database (empty: in sync)."""
    problems = []
    active = ModelVersion.active()
    metadata = home.path("models", "active", "metadata.json")
    if active is not None:
        shown = _json(metadata)
        if shown is None:
            problems.append("models/active/metadata.json is missing or unreadable")
        elif shown.get("version") != active.version or shown.get("sha256") != active.sha256:
            problems.append(f"models/active/metadata.json shows v{shown.get('version')}, the active version is v{active.version}")
        if _sha256(home.path("models", "active", "model.joblib")) != active.sha256:
            problems.append(f"models/active/model.joblib is not v{active.version}'s artifact")
    for version in ModelVersion.objects.select_related("schema"):
        shown = _json(home.path("models", "metadata", f"{version.file_stem}.json"))
        if shown is None or shown.get("status") != version.status or shown.get("deployed_at") != _iso(version.deployed_at):
            problems.append(f"models/metadata/{version.file_stem}.json does not show v{version.version} as it is")
    ledger = _json(home.path("logs", "deployments.json"))
    if ledger is None or len(ledger) != Deployment.objects.count():
        problems.append("logs/deployments.json does not list every deployment")
    return problems


def repair() -> list[str]:
    """Rewrite every mirror from the database; returns what was wrong before."""
    problems = check()
    if problems:
        _clear_the_way()
        write_all(*ModelVersion.objects.select_related("schema"))
    return problems


def _clear_the_way() -> None:
    """A plain file where a mirror folder belongs (models/active made a file by hand, say) is
    moved aside, so the folder can be made again."""
    for folder in (("models",), ("models", "active"), ("models", "metadata"), ("logs",)):
        path = home.path(*folder)
        if path.exists() and not path.is_dir():
            aside = path.with_name(f"{path.name}.not-a-folder-{timezone.now():%Y%m%d%H%M%S}")
            path.rename(aside)
            log.warning("moved %s aside to %s: a folder of mirror files belongs there", path, aside)


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _iso(when) -> str | None:
    return json.loads(json.dumps(when, default=str)) if when else None
