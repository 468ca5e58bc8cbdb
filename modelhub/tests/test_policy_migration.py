"""Upgrading keeps a stored validation policy's values and says so in the audit log (migration 0010)."""
import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("modelhub", "0009_scoring_job_heartbeat"), ("audit", "0001_initial")]
AFTER = [("modelhub", "0010_judgement_policy")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_a_stored_policy_keeps_its_values_and_the_audit_log_names_the_new_defaults_it_did_not_take():
    old_apps = migrate(BEFORE)
    # update_or_create: a test system made for the whole session may have made the row already.
    old_apps.get_model("modelhub", "ValidationPolicy").objects.update_or_create(
        pk=1, defaults={"min_accuracy": 0.75, "max_drift": 1.0, "require_beats_baseline": False})
    try:
        apps = migrate(AFTER)
        policy = apps.get_model("modelhub", "ValidationPolicy").objects.get(pk=1)
        assert (policy.min_accuracy, policy.max_drift, policy.require_beats_baseline) == (0.75, 1.0, False)
        assert (policy.primary_metric, policy.min_primary, policy.max_primary_drop, policy.threshold_rule) == ("auc", 0.6, 0.02, "max_f1")
        event = apps.get_model("audit", "AuditEvent").objects.filter(action="policy.migrated").order_by("-id").first()
        assert event.details["kept"] == {"max_drift": {"value": 1.0, "new_default": 0.15},
                                         "require_beats_baseline": {"value": False, "new_default": True}}
        assert event.details["added"]["primary_metric"] == "auc"
        assert "the drift gate cannot fail" in event.details["reason"]
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
