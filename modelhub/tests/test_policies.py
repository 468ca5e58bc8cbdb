"""The policy's starting values follow the first data's class balance, and the choice is audited."""
from types import SimpleNamespace

from audit.models import AuditEvent
from modelhub import policies, services
from modelhub.models import ValidationPolicy
from modelhub.setup import choose_policy


def test_a_balanced_table_is_judged_by_roc_auc_and_a_rare_positive_class_by_pr_auc():
    assert policies.defaults_for(0.265)[0] == {"primary_metric": "auc", "min_primary": 0.6}
    values, why = policies.defaults_for(0.05)
    assert values == {"primary_metric": "pr_auc", "min_primary": 0.1}
    assert why.startswith("5.0% positives: heavily imbalanced, so candidates are judged by PR AUC (at least 0.100")
    # The rarer class decides, whichever label is called positive.
    assert policies.defaults_for(0.95)[0]["primary_metric"] == "pr_auc"


def test_set_up_applies_the_choice_through_the_audited_policy_service(db):
    services.update_policy(user=None, changes={"primary_metric": "auc", "min_primary": 0.6})
    batch = SimpleNamespace(stats={"labels": {"default": 30, "repaid": 970}})
    why = choose_policy(batch, SimpleNamespace(positive_label="default"), None)
    policy = ValidationPolicy.get()
    assert (policy.primary_metric, policy.min_primary) == ("pr_auc", 0.06)
    latest = AuditEvent.objects.order_by("-id")  # a test system made for the whole session has its own events
    assert latest.filter(action="policy.changed").first().details["primary_metric"] == {"old": "auc", "new": "pr_auc"}
    assert latest.filter(action="policy.chosen").first().details["why"] == why
    assert "judged by PR AUC (average precision) (at least 0.060" in policies.summary(policy)
