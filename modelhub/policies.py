"""The validation policy's starting values for a dataset, chosen from its class balance at set-up.

Accuracy means little when one class is rare (always "no" scores 0.95 on 5% positives), and a
ranking's PR AUC says more than its ROC AUC there: the primary metric and its minimum follow the
share of the rarer class. Applied once, by init_cl_system, through services.update_policy (audited).
"""
from .models import ValidationPolicy

# Below this share of the rarer class a table is "heavily imbalanced".
RARE = 0.10
# The minimum ROC AUC: clearly better than a random ranking (0.5).
MIN_AUC = 0.60
# The minimum PR AUC, as a multiple of the positive rate (what a random ranking scores).
PR_AUC_LIFT = 2.0


def defaults_for(positive_rate: float) -> tuple[dict, str]:
    """Policy values for a table with this share of positives, and one sentence saying why."""
    minority = min(positive_rate, 1 - positive_rate)
    if minority < RARE:
        floor = round(min(PR_AUC_LIFT * positive_rate, 0.9), 3)
        return ({"primary_metric": ValidationPolicy.Metric.PR_AUC, "min_primary": floor},
                f"{positive_rate:.1%} positives: heavily imbalanced, so candidates are judged by PR AUC "
                f"(at least {floor:.3f}, {PR_AUC_LIFT:g}x a random ranking's)")
    return ({"primary_metric": ValidationPolicy.Metric.AUC, "min_primary": MIN_AUC},
            f"{positive_rate:.1%} positives: candidates are judged by ROC AUC (at least {MIN_AUC:.2f})")


def summary(policy: ValidationPolicy) -> str:
    """The policy in one line, for the command line."""
    metric = policy.get_primary_metric_display()
    floor = f"at least {policy.min_primary:.3f}, " if policy.min_primary is not None else ""
    threshold = {"max_f1": "the threshold that maximises F1",
                 "expected_cost": f"the threshold of lowest expected cost (false positive {policy.false_positive_cost:g}, "
                                  f"false negative {policy.false_negative_cost:g})",
                 "fixed": f"a fixed threshold of {policy.fixed_threshold:g}"}[policy.threshold_rule]
    return (f"judged by {metric} ({floor}a real drop against the live model of at most {policy.max_primary_drop:g}"
            f"{', above a model with no skill' if policy.require_beats_baseline else ''}), accuracy at least {policy.min_accuracy:g}, "
            f"drifted features at most {policy.max_drift:.0%} unless the candidate explains the change; labels by {threshold}")
