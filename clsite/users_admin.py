"""The users' admin: users and their one role, every change audited.

clsite is no app, so admin autodiscovery does not find this module; clsite/urls.py imports it
before it builds the admin's URLs.
"""
from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.contrib.auth.models import Group, User

from audit.services import record
from modelhub import roles


class _RoleField(forms.ChoiceField):
    def __init__(self, **kwargs):
        super().__init__(choices=[("", "No role (sees nothing)")] + [(role, role) for role in roles.ROLES],
                         required=False, help_text="Viewer < Analyst < ML Engineer < Admin; see the README's role table.", **kwargs)


class UserChangeWithRole(UserChangeForm):
    role = _RoleField()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["role"].initial = roles.role_of(self.instance) if self.instance.pk else ""


class UserCreationWithRole(AdminUserCreationForm):
    role = _RoleField()


@admin.action(description="Deactivate the selected users (they can no longer log in)")
def deactivate_users(modeladmin, request, queryset):
    for user in queryset.filter(is_active=True).exclude(pk=request.user.pk):
        user.is_active = False
        user.save(update_fields=["is_active"])
        record(actor=request.user, action="user.deactivated", target=user.get_username())
    modeladmin.message_user(request, "Deactivated; their role stays, for the record.", messages.SUCCESS)


admin.site.unregister(User)
# Roles are the groups ensure_roles() makes from modelhub.roles; editing them by hand would let
# a role quietly mean something else.
admin.site.unregister(Group)


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    """Users and their one role; every change audited. Roles replace Django's raw groups and permissions."""

    form = UserChangeWithRole
    add_form = UserCreationWithRole
    list_display = ["username", "email", "role", "is_active", "last_login"]
    list_filter = ["is_active", "is_superuser", "groups"]
    actions = [deactivate_users]
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("Person", {"fields": ("first_name", "last_name", "email")}),
        ("Access", {"fields": ("role", "is_active")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("username", "email", "role", "usable_password", "password1", "password2")}),)
    readonly_fields = ["last_login", "date_joined"]

    @admin.display(description="role")
    def role(self, obj):
        return roles.role_of(obj) or "–"

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # users are deactivated, not deleted: the audit log names them
        return actions

    def save_model(self, request, obj, form, change):
        was_active = type(obj).objects.filter(pk=obj.pk).values_list("is_active", flat=True).first() if change else None
        super().save_model(request, obj, form, change)
        if not change:
            record(actor=request.user, action="user.created", target=obj.get_username(), details={"email": obj.email})
        elif was_active is not None and was_active != obj.is_active:
            record(actor=request.user, action="user.activated" if obj.is_active else "user.deactivated", target=obj.get_username())
        roles.assign_role(obj, form.cleaned_data.get("role", ""), actor=request.user)

    def user_change_password(self, request, id, form_url=""):
        response = super().user_change_password(request, id, form_url)
        if request.method == "POST" and response.status_code == 302:
            user = self.get_object(request, id)
            record(actor=request.user, action="user.password_changed", target=user.get_username() if user else str(id))
        return response
