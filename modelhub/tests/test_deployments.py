"""Deployments and rollbacks through the one service: atomic, guarded, in the ledger, audited."""
import json
import threading
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from sklearn.linear_model import LogisticRegression

from audit.models import AuditEvent
from ingestion.models import DatasetSchema
from modelhub import services, training
from modelhub.models import Deployment, ModelVersion, ValidationPolicy

from .helpers import copy_of_active, deployed_copy


def unfitted_pipeline(fit):
    return training.build_pipeline(fit.schema, LogisticRegression(), scale=True)


def assert_ledger_consistent():
    """Each deployment starts from the version the previous one left active; the last one's is active now."""
    ledger = list(Deployment.objects.order_by("created_at", "id"))
    for before, after in zip(ledger, ledger[1:]):
        assert after.from_version_id == before.to_version_id, f"{after} does not start where {before} ended"
    active = list(ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE))
    assert len(active) == 1
    assert ledger[-1].to_version_id == active[0].pk


def test_two_concurrent_deploys_one_wins_and_the_other_is_refused(hub):
    v10 = ModelVersion.active()
    first, second = copy_of_active(), copy_of_active()
    start = threading.Barrier(2)
    outcomes = {}

    def deploy(version):
        try:
            start.wait()
            # Both callers saw v1.0 active, as two admins on the same page would.
            services.deploy_version(version=version, user=None, reason="race", kind=Deployment.Kind.DEPLOY, replacing=v10)
            outcomes[version.version] = "deployed"
        except services.DeploymentError as exc:
            outcomes[version.version] = str(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=deploy, args=(v,)) for v in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sorted(outcomes) == ["1.1", "1.2"]
    winners = [v for v, outcome in outcomes.items() if outcome == "deployed"]
    assert len(winners) == 1, outcomes
    loser = ({"1.1", "1.2"} - set(winners)).pop()
    # Refused either on the check (it saw the winner's version active) or while waiting for the
    # winner's write lock; both leave everything as it was.
    assert "nothing was changed" in outcomes[loser], outcomes
    assert ModelVersion.active().version == winners[0]
    assert ModelVersion.objects.get(major=1, minor=int(loser[2:])).status == ModelVersion.Status.CANDIDATE
    assert Deployment.objects.count() == 2
    assert_ledger_consistent()


def test_a_deploy_prepared_before_another_one_committed_is_refused(hub):
    v10 = ModelVersion.active()
    later = copy_of_active()
    deployed_copy()  # v1.2 went live after the caller looked

    with pytest.raises(services.DeploymentError, match=r"changed \(to v1\.2\) while v1\.1"):
        services.deploy_version(version=later, user=None, reason="stale page", kind=Deployment.Kind.DEPLOY, replacing=v10)
    assert ModelVersion.active().version == "1.2"
    assert_ledger_consistent()


def test_the_database_allows_only_one_active_version(hub):
    other = copy_of_active()
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.filter(pk=other.pk).update(status=ModelVersion.Status.ACTIVE)


def test_deploying_a_rejected_version_needs_a_forced_deploy_with_a_reason(hub, users):
    rejected = copy_of_active()
    ModelVersion.objects.filter(pk=rejected.pk).update(status=ModelVersion.Status.REJECTED)
    rejected.refresh_from_db()

    with pytest.raises(services.DeploymentError, match="rejected by validation"):
        services.deploy_version(version=rejected, user=users["engineer"], reason="looks fine", kind=Deployment.Kind.DEPLOY,
                                replacing=hub)
    with pytest.raises(services.DeploymentError, match="rejected by validation.*needs a reason"):
        services.activate_version(version=rejected, user=users["engineer"], reason="   ")
    assert ModelVersion.active().version == "1.0"
    assert Deployment.objects.count() == 1

    deployment = services.activate_version(version=rejected, user=users["engineer"], reason="the drift is a known campaign")
    assert deployment.kind == Deployment.Kind.FORCED
    assert deployment.user == users["engineer"]
    assert deployment.reason == "the drift is a known campaign"
    assert deployment.from_version.version == "1.0"
    assert ModelVersion.active().version == "1.1"
    event = AuditEvent.objects.get(action="model.forced")
    assert event.actor == users["engineer"]
    assert event.details == {"from": "1.0", "to": "1.1", "reason": "the drift is a known campaign", "run": None}
    assert_ledger_consistent()


def test_a_candidate_and_the_active_version_cannot_be_rolled_back_to(hub):
    candidate = copy_of_active()
    with pytest.raises(services.DeploymentError, match="candidate"):
        services.activate_version(version=candidate, user=None, reason="x")
    with pytest.raises(services.DeploymentError, match="already the active version"):
        services.activate_version(version=ModelVersion.active(), user=None, reason="x")
    with pytest.raises(services.DeploymentError, match="no earlier version"):
        services.activate_version(version=None, user=None, reason="x")
    assert Deployment.objects.count() == 1


def test_a_rollback_to_a_version_that_cannot_predict_is_refused(hub, demo_fit):
    # A file that verifies and loads, but whose model fails on held-out rows.
    broken = services.register_version(model=unfitted_pipeline(demo_fit), schema=hub.schema, run=None, estimator="broken")
    ModelVersion.objects.filter(pk=broken.pk).update(status=ModelVersion.Status.RETIRED, deployed_at=timezone.now())
    broken.refresh_from_db()
    with pytest.raises(services.DeploymentError, match=r"v1\.1 failed to predict on held-out rows"):
        services.activate_version(version=broken, user=None, reason="x")
    assert ModelVersion.active().version == "1.0" and Deployment.objects.count() == 1


def test_a_rollback_across_a_schema_change_is_refused_with_the_reason(hub):
    DatasetSchema.objects.create(major=2, target="churn", positive_label="Yes", negative_label="No", id_column="customer_id",
                                 features=hub.schema.features[:-1])
    with pytest.raises(services.DeploymentError, match="v1.0 was trained for schema 1, the data now follows schema 2"):
        services.check_deployable(hub)
    assert ModelVersion.active().version == "1.0"


def test_previous_version_is_the_newest_older_version_that_was_live(hub, cl_home):
    deployed_copy()  # v1.1
    copy_of_active()  # v1.2: a candidate, never live, so never "previous"
    v13 = deployed_copy()
    assert v13.version == "1.3"
    assert services.previous_version().version == "1.1"

    deployment = services.activate_version(version=None, user=None, reason="bad week")
    assert (deployment.kind, deployment.from_version.version, deployment.to_version.version) == ("rollback", "1.3", "1.1")
    assert deployment.reason == "bad week"
    assert ModelVersion.objects.get(pk=v13.pk).status == ModelVersion.Status.RETIRED
    # From v1.1, "previous" goes further back, never forward to the newer v1.3.
    assert services.previous_version().version == "1.0"
    services.activate_version(version=None, user=None, reason="")
    assert ModelVersion.active().version == "1.0"
    assert Deployment.objects.filter(kind=Deployment.Kind.ROLLBACK).count() == 2
    assert Deployment.objects.order_by("-created_at", "-id").first().reason == "rollback"
    assert_ledger_consistent()

    active = json.loads((cl_home / "models/active/metadata.json").read_text())
    assert active["version"] == "1.0" and active["status"] == "active"
    assert (cl_home / "models/active/model.joblib").read_bytes() == (cl_home / "models/versions/model_v1_0.joblib").read_bytes()
    ledger = json.loads((cl_home / "logs/deployments.json").read_text())
    assert [(row["kind"], row["to_version"]) for row in ledger] == [
        ("initial", "1.0"), ("deploy", "1.1"), ("deploy", "1.3"), ("rollback", "1.1"), ("rollback", "1.0"),
    ]


def test_version_live_at_answers_from_the_ledger(hub):
    initial = Deployment.objects.get()
    deployed_copy()
    second = Deployment.objects.order_by("-id").first()

    assert services.version_live_at(initial.created_at - timedelta(seconds=1)) is None
    assert services.version_live_at(initial.created_at).version == "1.0"
    assert services.version_live_at(second.created_at - timedelta(microseconds=1)).version == "1.0"
    assert services.version_live_at(second.created_at).version == "1.1"
    services.activate_version(version=None, user=None, reason="back")
    third = Deployment.objects.order_by("-id").first()
    assert services.version_live_at(second.created_at + (third.created_at - second.created_at) / 2).version == "1.1"
    assert services.version_live_at(third.created_at + timedelta(days=1)).version == "1.0"


def test_a_policy_change_is_audited_with_old_and_new_values(db, users):
    ValidationPolicy.get()
    services.update_policy(user=users["engineer"], changes={"min_accuracy": "0.8", "max_drift": 0.15, "min_auc": 0.75,
                                                             "require_beats_baseline": False, "threshold_rule": "expected_cost"})
    policy = ValidationPolicy.get()
    assert (policy.min_accuracy, policy.max_drift, policy.min_auc, policy.require_beats_baseline) == (0.8, 0.15, 0.75, False)
    assert policy.updated_by == users["engineer"]
    event = AuditEvent.objects.get(action="policy.changed")
    assert event.actor == users["engineer"]
    # max_drift was already 0.15: not a change, so not in the record.
    assert event.details == {
        "min_accuracy": {"old": 0.7, "new": 0.8},
        "min_auc": {"old": None, "new": 0.75},
        "require_beats_baseline": {"old": True, "new": False},
        "threshold_rule": {"old": "max_f1", "new": "expected_cost"},
    }

    services.update_policy(user=users["engineer"], changes={"min_accuracy": 0.8})
    assert AuditEvent.objects.filter(action="policy.changed").count() == 1  # nothing changed, nothing recorded
    with pytest.raises(ValueError, match="unknown policy fields: colour"):
        services.update_policy(user=users["engineer"], changes={"colour": "red"})
    assert ValidationPolicy.get().min_accuracy == 0.8


def test_a_deploy_runs_each_check_once(hub, monkeypatch):
    calls = []
    for name in ("_guard_transition", "_check_schema"):
        original = getattr(services, name)
        monkeypatch.setattr(services, name, lambda *args, _run=original, _name=name, **kwargs: (calls.append(_name), _run(*args, **kwargs))[1])
    deployed_copy()
    assert sorted(calls) == ["_check_schema", "_guard_transition"]
    assert ModelVersion.active().version == "1.1"
