from django import forms
from django.contrib import admin, messages

from .models import ApiToken
from . import auth
from .services import create_token, revoke_token


class NewTokenForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ["user", "name"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Admins make tokens (the key is shown once, in a message) and revoke them; nobody edits or deletes one."""

    list_display = ["prefix", "name", "user", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    list_select_related = ["user"]
    readonly_fields = ["user", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]
    form = NewTokenForm

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj else []

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        token, key = create_token(user=form.cleaned_data["user"], name=form.cleaned_data["name"], actor=request.user)
        obj.pk = token.pk
        self.message_user(request, f"Token for {token.user}: {key} — copy it now, it is not shown again.", messages.WARNING)

    @admin.action(permissions=["add"], description="Revoke the selected tokens")
    def revoke(self, request, queryset):
        for token in queryset.filter(revoked_at=None):
            revoke_token(token=token, actor=request.user)
        self.message_user(request, f"Revoked: calls with them get 401 within {auth.TOKEN_CACHE_SECONDS:.0f} seconds (each web process keeps a token's user that long).", messages.SUCCESS)
