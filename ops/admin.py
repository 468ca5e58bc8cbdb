from django.contrib import admin

from clsite.admin_base import ReadOnlyAdmin

from .models import Alert


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = ["opened_at", "subject", "sent_at", "resolved_at"]
    list_filter = ["resolved_at"]
    readonly_fields = ["key", "subject", "body", "link", "opened_at", "sent_at", "sent_to", "resolved_at"]
