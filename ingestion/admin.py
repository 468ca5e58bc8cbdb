from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse

from clsite.admin_base import ReadOnlyAdmin

from . import services
from .models import DatasetSchema, DataBatch, MasterPartition


@admin.register(DataBatch)
class DataBatchAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "status", "rows", "size_bytes", "source", "uploaded_by", "uploaded_at", "summary"]
    list_filter = ["status", "source"]
    search_fields = ["original_name", "sha256"]
    list_select_related = ["uploaded_by"]
    actions = ["release_batches", "discard_batches"]
    readonly_fields = ["original_name", "sha256", "size_bytes", "rows", "status", "source", "uploaded_by", "uploaded_at",
                       "schema", "raw_path", "parquet_path", "merged_at", "note", "report", "stats"]

    @admin.display(description="report")
    def summary(self, obj):
        return obj.report.get("summary", "")

    def has_manage_permission(self, request):
        return request.user.has_perm("ingestion.manage_batches")

    @admin.action(permissions=["manage"], description="Release held batches for the next retraining")
    def release_batches(self, request, queryset):
        self._each(request, queryset, services.release_batch, "released")

    @admin.action(permissions=["manage"], description="Discard held or rejected batches")
    def discard_batches(self, request, queryset):
        """Destructive, so asked first on a page of its own, as Django's own delete does."""
        if request.POST.get("post") == "yes":
            self._each(request, queryset, services.discard_batch, "discarded", reason=request.POST.get("reason", ""))
            return None
        context = {
            **self.admin_site.each_context(request), "title": f"Discard {queryset.count()} batch(es)?", "queryset": queryset,
            "opts": self.model._meta, "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/ingestion/databatch/discard_confirmation.html", context)

    def _each(self, request, queryset, service, verb: str, reason: str = "") -> None:
        done = 0
        for batch in queryset:
            try:
                service(batch=batch, user=request.user, reason=reason.strip() or f"{verb} in the admin")
                done += 1
            except services.BatchStateError as exc:
                self.message_user(request, str(exc), messages.WARNING)
        if done:
            self.message_user(request, f"{done} batch(es) {verb}.", messages.SUCCESS)


@admin.register(DatasetSchema)
class DatasetSchemaAdmin(ReadOnlyAdmin):
    list_display = ["major", "target", "positive_label", "negative_label", "id_column", "created_at"]
    readonly_fields = ["major", "target", "positive_label", "negative_label", "id_column", "features", "created_at"]


@admin.register(MasterPartition)
class MasterPartitionAdmin(ReadOnlyAdmin):
    list_display = ["path", "rows", "batch", "created_at"]
    list_select_related = ["batch"]
