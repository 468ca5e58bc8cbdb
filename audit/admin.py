from django.contrib import admin

from clsite.admin_base import ReadOnlyAdmin

from .models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """The audit log is append-only."""

    list_display = ["created_at", "actor", "action", "target"]
    list_filter = ["action", ("actor", admin.RelatedOnlyFieldListFilter), "created_at"]
    date_hierarchy = "created_at"
    search_fields = ["target", "actor__username", "action"]
    list_select_related = ["actor"]
    readonly_fields = ["created_at", "actor", "action", "target", "details"]
