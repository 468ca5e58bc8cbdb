import json

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from clsite.admin_base import ReadOnlyAdmin

from . import services
from .models import Deployment, ModelVersion, TrainingRun, ValidationPolicy


def _pretty(data) -> str:
    return format_html("<pre>{}</pre>", json.dumps(data, indent=2, default=str))


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "status", "accuracy", "auc", "estimator", "trained", "deployed"]
    list_filter = ["status", "imported"]
    list_select_related = ["schema"]
    actions = ["rollback_to_version"]
    fields = ["status", "estimator", "imported", "artifact", "sha256", "trained_at", "deployed_at", "training_rows",
              "holdout_rows", "seconds", "trained_on", "metrics_summary", "gates", "drift_summary", "candidates_tried", "environment", "run"]
    readonly_fields = fields
    change_form_template = "admin/modelhub/modelversion/change_form.html"

    @admin.display(description="accuracy")
    def accuracy(self, obj):
        value = obj.metrics.get("accuracy")
        return f"{value:.3f}" if value is not None else "–"

    @admin.display(description="AUC")
    def auc(self, obj):
        value = obj.metrics.get("auc")
        return f"{value:.3f}" if value is not None else "–"

    @admin.display(description="training seconds")
    def seconds(self, obj):
        return f"{obj.training_seconds:.1f}"

    @admin.display(description="metrics (holdout)")
    def metrics_summary(self, obj):
        shown = {k: v for k, v in obj.metrics.items() if k not in ("roc_curve", "pr_curve")}
        return _pretty(shown)

    @admin.display(description="validation gates")
    def gates(self, obj):
        rows = [f"{'passed' if g['passed'] else 'FAILED':<7} {g['label']}: {g['value'] if g['value'] is None else round(g['value'], 4)} "
                f"{g['comparison']} {g['threshold']}" for g in (obj.validation or {}).get("gates", [])]
        return format_html("<pre>{}</pre>", "\n".join(rows) or "–")

    @admin.display(description="drift")
    def drift_summary(self, obj):
        drift = obj.drift or {}
        rows = [f"{name:<24} psi {r['psi']:.4f}  p {r['p_value_adjusted']:.4f}  {'DRIFTED' if r['drifted'] else ''}"
                for name, r in sorted(drift.get("features", {}).items(), key=lambda item: -item[1]["psi"])]
        head = f"share drifted {drift.get('share', 0):.3f} ({drift.get('method', drift.get('note', ''))})"
        return format_html("<pre>{}</pre>", "\n".join([head, *rows]))

    @admin.display(description="estimators tried")
    def candidates_tried(self, obj):
        rows = [f"{c['cv_auc']:.4f}  {c['name']}{'  (chosen)' if c.get('chosen') else ''}" for c in obj.candidates]
        return format_html("<pre>{}</pre>", "\n".join(rows) or "–")

    @admin.display(description="trained", ordering="trained_at")
    def trained(self, obj):
        return timezone.localtime(obj.trained_at).strftime("%Y-%m-%d %H:%M")

    @admin.display(description="deployed", ordering="deployed_at")
    def deployed(self, obj):
        return timezone.localtime(obj.deployed_at).strftime("%Y-%m-%d %H:%M") if obj.deployed_at else "–"

    def has_deploy_permission(self, request):
        return request.user.has_perm("modelhub.deploy_modelversion")

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # versions are never bulk-deleted: their artifacts would be orphaned
        return actions

    @admin.action(permissions=["deploy"], description="Roll back to this version")
    def rollback_to_version(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to roll back to.", messages.WARNING)
            return None
        version = queryset.select_related("schema").get()
        if request.POST.get("post") == "yes":
            self._rollback(request, version, request.POST.get("reason", ""))
            return None
        return self._confirmation(request, version, queryset=queryset)

    def get_urls(self):
        custom = [path("<int:pk>/rollback/", self.admin_site.admin_view(self.rollback_view), name="modelhub_modelversion_rollback")]
        return custom + super().get_urls()

    def rollback_view(self, request, pk: int):
        """The button on each version's page: the same confirmation and service as the action."""
        if not self.has_deploy_permission(request):
            raise PermissionDenied
        version = get_object_or_404(ModelVersion.objects.select_related("schema"), pk=pk)
        if request.method == "POST" and request.POST.get("post") == "yes":
            self._rollback(request, version, request.POST.get("reason", ""))
            return redirect(reverse("admin:modelhub_modelversion_change", args=[pk]))
        return self._confirmation(request, version)

    def _rollback(self, request, version: ModelVersion, reason: str) -> None:
        try:
            deployment = services.activate_version(version=version, user=request.user, reason=reason)
        except services.DeploymentError as exc:
            self.message_user(request, f"Refused: {exc}", messages.ERROR)
            return
        source = f"v{deployment.from_version.version}" if deployment.from_version_id else "none"
        done = "Forced deployment" if deployment.kind == deployment.Kind.FORCED else "Rolled back"
        self.message_user(request, f"{done}: {source} → v{version.version} is now active.", messages.SUCCESS)

    def _confirmation(self, request, version: ModelVersion, queryset=None):
        context = {
            **self.admin_site.each_context(request),
            "title": f"Roll back to v{version.version}?",
            "version": version,
            "active": ModelVersion.active(),
            "queryset": queryset,
            "opts": self.model._meta,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "from_action": queryset is not None,
        }
        return TemplateResponse(request, "admin/modelhub/modelversion/rollback_confirmation.html", context)


@admin.register(TrainingRun)
class TrainingRunAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "status", "trigger", "requested_by", "created_at", "finished_at", "candidate"]
    list_filter = ["status", "trigger"]
    list_select_related = ["requested_by", "candidate"]
    readonly_fields = ["status", "trigger", "requested_by", "created_at", "enqueued_at", "enqueue_count", "started_at", "finished_at",
                       "heartbeat_at", "worker", "force", "live_version", "candidate", "new_batches", "stages", "reasons", "details", "error"]


@admin.register(Deployment)
class DeploymentAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "kind", "from_version", "to_version", "user", "reason"]
    list_filter = ["kind"]
    list_select_related = ["from_version", "to_version", "user"]
    readonly_fields = ["created_at", "kind", "from_version", "to_version", "user", "reason", "run"]


@admin.register(ValidationPolicy)
class ValidationPolicyAdmin(admin.ModelAdmin):
    list_display = ["__str__", "primary_metric", "min_primary", "max_primary_drop", "min_accuracy", "max_drift", "threshold_rule",
                    "updated_at", "updated_by"]
    readonly_fields = ["updated_at", "updated_by"]
    fieldsets = [
        ("Primary metric", {"fields": ["primary_metric", "min_primary", "max_primary_drop", "require_beats_baseline"]}),
        ("Accuracy", {"fields": ["min_accuracy", "max_accuracy_drop", "min_auc"]}),
        ("New data", {"fields": ["max_drift", "psi_threshold", "drift_p_value", "max_label_collapse"]}),
        ("Decision threshold", {"fields": ["threshold_rule", "false_positive_cost", "false_negative_cost", "fixed_threshold"]}),
        (None, {"fields": ["updated_at", "updated_by"]}),
    ]

    def has_add_permission(self, request):
        return not ValidationPolicy.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        # Through the service, so every change is audited with old and new values.
        changes = {name: form.cleaned_data[name] for name in services.POLICY_FIELDS if name in form.cleaned_data}
        ValidationPolicy.get()
        services.update_policy(user=request.user, changes=changes)
