"""One-time set-up: schema, master dataset, model v1.0, roles, schedule, logs."""
from pathlib import Path
from typing import Iterable

import joblib
import numpy as np
from django.db import transaction
from sklearn.base import is_classifier
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from audit.services import record
from clsite import home, schedules
from ingestion import master
from ingestion.models import DatasetSchema, DataBatch, MasterSummary
from ingestion.schema import learn_schema
from ingestion.services import create_schema, ingest_path

from . import evaluation, mirrors, policies, retraining, roles, services, training
from .models import Deployment, ModelVersion, TrainingRun, ValidationPolicy


class SetupError(Exception):
    pass


def initialise(*, data: Path, target: str, id_column: str = "", positive_label: str = "", model_file: Path | None = None,
               user=None, missing_markers: Iterable[str] | None = None) -> ModelVersion:
    """`missing_markers`: the values that mean "no value" in this dataset's files (default
    ingestion.values.DEFAULT_MISSING_MARKERS); kept with the schema, honoured by every upload."""
    if DatasetSchema.objects.exists():
        raise SetupError("the system is already initialised (a schema exists); use `ingest` and `retrain` from here on")
    data = Path(data)
    if not data.is_file():
        raise SetupError(f"{data} is not a file")
    home.ensure_layout()
    roles.ensure_roles()
    ValidationPolicy.get()
    learned = learn_schema(data, target=target, id_column=id_column, positive_label=positive_label, missing_markers=missing_markers)
    schema = create_schema(learned)
    try:
        batch = ingest_path(data, user=user, origin=DataBatch.Source.INIT)
        if batch.status != DataBatch.Status.STAGED:
            raise SetupError(f"the initial dataset was refused: {batch.report.get('summary')}; first problems: "
                             + "; ".join(f"line {e['line']}: {e['message']}" for e in batch.errors[:5]))
        choose_policy(batch, schema, user)
        version = _import(model_file, schema, batch, user) if model_file else _train_first(user)
    except BaseException:
        _undo(schema)
        raise
    if schedules.current() is None:
        schedules.set_cron(schedules.DEFAULT_CRON)
    record(actor=user, action="system.initialised", target=str(schema), details={"data": str(data), "version": version.version})
    return version


def choose_policy(batch: DataBatch, schema: DatasetSchema, user) -> str:
    """The policy's primary metric and minimum from the first data's class balance (audited); returns why."""
    labels = batch.stats.get("labels", {})
    total = sum(labels.values())
    values, why = policies.defaults_for(labels.get(schema.positive_label, 0) / total if total else 0.5)
    services.update_policy(user=user, changes=values)
    record(actor=user, action="policy.chosen", target="validation policy", details={**values, "why": why})
    return why


def _train_first(user) -> ModelVersion:
    run = retraining.retrain_now(user=user, trigger=TrainingRun.Trigger.INIT)
    if run.status != TrainingRun.Status.DEPLOYED:
        raise SetupError(f"training the first model failed: {run.error or run.reasons}")
    return ModelVersion.active()


def _import(model_file: Path, schema: DatasetSchema, batch: DataBatch, user) -> ModelVersion:
    """Take an existing fitted classifier as v1.0, after checking it fits the schema."""
    try:
        # Loading a pickle runs whatever code it holds: the person importing it vouches for the file.
        model = joblib.load(model_file)
    except Exception as exc:
        raise SetupError(f"{model_file} could not be loaded as a joblib/pickle file: {exc}") from None
    _check_classifier(model, model_file, schema)
    frame, replaced = master.rows_after_merge([batch], schema)
    held_out = evaluation.held_out(frame, schema)
    X, y = training.features_frame(frame, schema), training.labels(frame, schema)
    try:
        proba = training.positive_proba(model, X[held_out], schema.positive_label)
    except Exception as exc:
        raise SetupError(f"the model in {model_file} cannot predict on this schema's columns ({exc}); "
                         "was it fitted on these columns, with the whole preprocessing in one Pipeline?") from None
    if len(proba) != int(held_out.sum()) or not np.all((proba >= 0) & (proba <= 1)):
        raise SetupError(f"the model in {model_file} does not return probabilities")
    metrics = evaluation.score(y[held_out], proba)
    metrics["feature_importance"] = evaluation.permutation_importance(
        model, X[held_out], y[held_out], proba_fn=lambda m, rows: training.positive_proba(m, rows, schema.positive_label),
    )
    # The model may have been fitted on any of these rows: its holdout scores are not evidence,
    # and the first retraining compares it only on rows of later batches.
    metrics["holdout_may_be_in_sample"] = True
    version = services.register_version(
        model=model, schema=schema, run=None, imported=True, estimator=f"imported {type(model).__name__}",
        training_rows=int((~held_out).sum()), holdout_rows=int(held_out.sum()), metrics=metrics,
        trained_on=[batch.pk], environment=retraining.environment(), profile=training.profile(X[~held_out], schema),
    )
    services.deploy_version(version=version, user=user, kind=Deployment.Kind.INITIAL, reason=f"imported from {Path(model_file).name}",
                            replacing=None, merge=master.plan_merge([batch], schema, frame=frame, replaced=replaced))
    return ModelVersion.objects.get(pk=version.pk)


def _check_classifier(model, model_file: Path, schema: DatasetSchema) -> None:
    """A fitted scikit-learn binary classifier with predict_proba, whose classes are the target's labels (or 0/1)."""
    name = type(model).__name__
    if not _is_classifier(model) or not hasattr(model, "predict_proba"):
        raise SetupError(f"{model_file} holds a {name}, which is not a scikit-learn classifier with predict_proba; "
                         "a fitted probabilistic classifier (ideally a Pipeline with its preprocessing) is needed")
    try:
        check_is_fitted(model)
    except (NotFittedError, TypeError) as exc:
        raise SetupError(f"the {name} in {model_file} is not fitted ({exc})") from None
    classes = [str(c) for c in getattr(model, "classes_", [])]
    accepted = ({schema.positive_label, schema.negative_label}, {"0", "1"}, {"0.0", "1.0"}, {"False", "True"})
    if len(classes) != 2 or set(classes) not in accepted:
        raise SetupError(f"the {name} in {model_file} predicts the classes {classes}; it must predict exactly the target's labels "
                         f"({schema.negative_label!r}, {schema.positive_label!r}) or 0/1 with 1 for {schema.positive_label!r}")


def _is_classifier(model) -> bool:
    try:
        return is_classifier(model)
    except Exception:  # scikit-learn raises on objects that are not estimators at all (a dict, a string)
        return False


def _undo(schema: DatasetSchema) -> None:
    """A failed set-up leaves nothing behind, so it can simply be run again."""
    with transaction.atomic():
        batches = list(DataBatch.objects.filter(schema=schema))
        versions = ModelVersion.objects.filter(schema=schema)
        Deployment.objects.filter(to_version__in=versions).delete()
        for version in versions:
            services.artifacts.storage().delete(version.artifact)
            home.path("models", "metadata", f"{version.file_stem}.json").unlink(missing_ok=True)
        versions.delete()
        for batch in batches:
            for rel in (batch.raw_path, batch.parquet_path):
                if rel:
                    home.path(rel).unlink(missing_ok=True)
            if hasattr(batch, "partition"):
                home.path(batch.partition.path).unlink(missing_ok=True)
                batch.partition.delete()
            batch.delete()
        MasterSummary.objects.all().delete()
        schema.delete()
    mirrors.write_deployments()
