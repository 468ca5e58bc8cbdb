"""Writes of the model hub: versions, deployments, rollbacks and the validation policy.

Every door (CLI, admin action, admin button, model page, retraining) calls these functions,
so each rule lives here once.
"""
import logging
from datetime import datetime

from django.db import IntegrityError, OperationalError, transaction
from django.db.models import Max
from django.utils import timezone

from audit.services import record
from clsite.users import real_user
from ingestion import master
from ingestion.models import DatasetSchema

from . import artifacts, mirrors
from .models import Deployment, ModelVersion, TrainingRun, ValidationPolicy

log = logging.getLogger("clsite.modelhub")
POLICY_FIELDS = ("primary_metric", "min_primary", "max_primary_drop", "min_accuracy", "max_accuracy_drop", "max_drift",
                 "psi_threshold", "drift_p_value", "min_auc", "require_beats_baseline", "max_label_collapse",
                 "threshold_rule", "false_positive_cost", "false_negative_cost", "fixed_threshold")


class DeploymentError(Exception):
    """The switch was refused; nothing changed. The message says why."""


def next_version_number(schema: DatasetSchema) -> tuple[int, int]:
    latest = ModelVersion.objects.filter(major=schema.major).aggregate(m=Max("minor"))["m"]
    return schema.major, 0 if latest is None else latest + 1


def register_version(*, model, schema: DatasetSchema, run: TrainingRun | None, **fields) -> ModelVersion:
    """Save the artifact and its version row (status candidate). Retries the number if another run took it."""
    data = artifacts.dump(model)
    artifacts.require_room(data)  # refused (and recorded) before the transaction, when it cannot fit
    trained_at = fields.pop("trained_at", None) or timezone.now()
    for _ in range(3):
        major, minor = next_version_number(schema)
        name = f"model_v{major}_{minor}.joblib"
        try:
            with transaction.atomic():
                # The row claims the number before the file is written: a run that loses the race
                # for this number fails on the insert and never overwrites the winner's file.
                version = ModelVersion.objects.create(
                    major=major, minor=minor, schema=schema, run=run, artifact=name, sha256="", trained_at=trained_at, **fields,
                )
                version.sha256 = artifacts.write(data, name)
                version.save(update_fields=["sha256"])
        except IntegrityError:
            continue
        mirrors.refresh_after_change(version, deployed=False)
        return version
    raise DeploymentError("could not allocate a version number; another run keeps taking it")


def deploy_version(*, version: ModelVersion, user, reason: str, kind: str, replacing: ModelVersion | None,
                   run: TrainingRun | None = None, merge: master.Merge | None = None) -> Deployment:
    """Make `version` the active one in place of `replacing`, atomically, with a deployment row
    and an audit row; DeploymentError (nothing changed) when it cannot serve or the switch is refused.

    `replacing` is the version the caller decided to replace (None: no active version); if
    another one is active by the time of the switch, the switch is refused. `merge` holds
    staged batches that enter the master dataset in the same transaction, so a deployment and
    the data it was trained on are committed together or not at all.
    """
    seen = ModelVersion.objects.select_related("schema").get(pk=version.pk)  # the caller's copy may be old
    _guard_transition(seen, kind, reason)
    check_deployable(seen)
    if kind == Deployment.Kind.FORCED and merge is None:
        # It was trained on the batches its run put on hold: they join the master with it.
        held = _held_batches_of(seen)
        merge = master.plan_merge(held, seen.schema) if held else None
    try:
        with transaction.atomic():
            version = ModelVersion.objects.select_for_update().get(pk=version.pk)
            if version.status != seen.status:
                # The guard passed on the status read above; another act changed it since.
                raise DeploymentError(f"v{version.version} became {version.status} while it was being deployed; "
                                      "nothing was changed, look again and retry")
            current = ModelVersion.objects.select_for_update().filter(status=ModelVersion.Status.ACTIVE).first()
            if (current.pk if current else None) != (replacing.pk if replacing else None):
                # Two deployments prepared at once (two admins, a rollback during a retraining):
                # the later one must not silently undo the earlier one it never saw.
                now_active = f"v{current.version}" if current else "no version"
                raise DeploymentError(f"the active model changed (to {now_active}) while v{version.version} was being deployed; "
                                      "nothing was changed, look again and retry")
            now = timezone.now()
            if current:
                current.status = ModelVersion.Status.RETIRED
                current.save(update_fields=["status"])
            version.status = ModelVersion.Status.ACTIVE
            version.deployed_at = now
            version.save(update_fields=["status", "deployed_at"])
            deployment = Deployment.objects.create(
                created_at=now, kind=kind, from_version=current, to_version=version, user=real_user(user), reason=reason, run=run,
            )
            if merge is not None:
                master.merge_batches(merge)
            record(actor=user, action=f"model.{kind}", target=str(version), details={
                "from": current.version if current else None, "to": version.version, "reason": reason, "run": run.pk if run else None,
            })
            transaction.on_commit(lambda: mirrors.refresh_after_change(*[v for v in (current, version) if v]))
    except IntegrityError:
        # The conditional unique constraint: another deployment switched first.
        raise DeploymentError("another deployment happened at the same moment; nothing was changed, try again") from None
    except OperationalError as exc:
        # The database gave up waiting for another writer (SQLite's busy timeout, a lock
        # timeout or deadlock in PostgreSQL); the transaction was rolled back whole.
        raise DeploymentError(f"the database could not make the switch now ({exc}); nothing was changed, try again") from None
    log.info("deployed v%s (%s) by %s", version.version, kind, user or "system")
    return deployment


def _guard_transition(version: ModelVersion, kind: str, reason: str) -> None:
    """Which switches may be made at all: never to the active version; to a version the gates
    rejected only as a forced deployment, and a forced deployment only with a reason.

    Checked once, on the version as read when the deploy starts, before the costly checks; the
    switch itself refuses if that status changed in the meantime.
    """
    if version.status == ModelVersion.Status.ACTIVE:
        raise DeploymentError(f"v{version.version} is already the active version")
    rejected = version.status == ModelVersion.Status.REJECTED
    if rejected and kind != Deployment.Kind.FORCED:
        raise DeploymentError(
            f"v{version.version} was rejected by validation; deploying it is a forced deployment, which needs a reason and the deploy permission"
        )
    if kind == Deployment.Kind.FORCED and not reason.strip():
        raise DeploymentError(f"v{version.version} was rejected by validation; deploying it anyway is a forced deployment and needs a reason"
                              if rejected else "a forced deployment needs a reason")


def _check_schema(version: ModelVersion) -> None:
    current_schema = DatasetSchema.current()
    if current_schema and version.schema_id != current_schema.pk:
        raise DeploymentError(f"v{version.version} was trained for schema {version.schema.major}, the data now follows schema {current_schema.major}")


def check_deployable(version: ModelVersion, *, rows: int = 5) -> None:
    """The schema matches, the artifact loads and verifies, and it predicts on a few held-out rows; else DeploymentError."""
    _check_schema(version)
    try:
        model = artifacts.load(version.artifact, version.sha256)
    except artifacts.ArtifactError as exc:
        raise DeploymentError(str(exc)) from None
    sample = _sample_rows(version.schema, rows)
    if sample is None:
        return
    # Imported here: scikit-learn costs every process that loads this module (the admin does,
    # so every command) a second and ~100 MB, and most never deploy.
    from . import training

    try:
        proba = training.version_proba(version, model, training.features_frame(sample, version.schema))
    except Exception as exc:
        raise DeploymentError(f"v{version.version} failed to predict on held-out rows: {exc}") from None
    if len(proba) != len(sample) or not ((proba >= 0) & (proba <= 1)).all():
        raise DeploymentError(f"v{version.version} returned invalid probabilities on held-out rows")


def _sample_rows(schema: DatasetSchema, rows: int):
    from .evaluation import held_out

    batches = master.master_batches()[-1:]
    if not batches:
        return None
    frame = master.read_batches(batches, schema)
    held = frame[held_out(frame, schema)]
    return (held if len(held) else frame).head(rows)


def previous_version() -> ModelVersion | None:
    """The newest version older than the active one that has been live before."""
    active = ModelVersion.active()
    older = ModelVersion.objects.filter(deployed_at__isnull=False).exclude(status=ModelVersion.Status.ACTIVE)
    if active:
        older = [v for v in older if (v.major, v.minor) < (active.major, active.minor)]
    return max(older, key=lambda v: (v.major, v.minor), default=None)


def activate_version(*, version: ModelVersion | None, user, reason: str = "") -> Deployment:
    """Make `version` (None: the previous one) the active model: the one act behind the model
    page's button, the admin's action and button, `rollback` and the API.

    A version that has served before comes back as a rollback. A candidate the gates rejected
    never served: making it active is a forced deployment, which needs a reason, and the
    batches its run put on hold join the master dataset with it, since it was trained on them.
    """
    target = version or previous_version()
    if target is None:
        raise DeploymentError("there is no earlier version to roll back to")
    if target.status == ModelVersion.Status.CANDIDATE:
        raise DeploymentError(f"v{target.version} is a candidate still being validated")
    replacing = ModelVersion.active()
    if target.status != ModelVersion.Status.REJECTED:
        return deploy_version(version=target, user=user, reason=reason.strip() or "rollback", kind=Deployment.Kind.ROLLBACK,
                              replacing=replacing)
    return deploy_version(version=target, user=user, reason=reason, kind=Deployment.Kind.FORCED, replacing=replacing, run=target.run)


def _held_batches_of(version: ModelVersion) -> list:
    from ingestion.models import DataBatch

    if not version.run_id:
        return []
    return list(version.run.new_batches.filter(status=DataBatch.Status.HELD).order_by("pk"))


def version_live_at(when: datetime) -> ModelVersion | None:
    """Which version was serving at `when`, from the deployment ledger."""
    deployment = (
        Deployment.objects.filter(created_at__lte=when).select_related("to_version").order_by("-created_at", "-id").first()
    )
    return deployment.to_version if deployment else None


def update_policy(*, user, changes: dict) -> ValidationPolicy:
    """Change the validation policy, keeping the old and new values in the audit log."""
    unknown = set(changes) - set(POLICY_FIELDS)
    if unknown:
        raise ValueError(f"unknown policy fields: {', '.join(sorted(unknown))}")
    with transaction.atomic():
        policy = ValidationPolicy.objects.select_for_update().get(pk=ValidationPolicy.get().pk)
        old = {name: getattr(policy, name) for name in changes}
        for name, value in changes.items():
            setattr(policy, name, value)
        policy.updated_by = real_user(user)
        policy.full_clean()  # also turns form text ("0.8") into the field's type, before comparing
        diff = {name: {"old": old[name], "new": getattr(policy, name)} for name in changes if getattr(policy, name) != old[name]}
        policy.save()
        if diff:
            record(actor=user, action="policy.changed", target="validation policy", details=diff)
    return policy
