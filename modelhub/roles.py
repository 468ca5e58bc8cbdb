"""The four roles of DESIGN.md as Django groups; Admin is a superuser, not a group."""
from django.contrib.auth.models import Group, Permission

VIEWER = "Viewer"
ANALYST = "Analyst"
ML_ENGINEER = "ML Engineer"

_VIEW = [
    "modelhub.view_modelversion", "modelhub.view_trainingrun", "modelhub.view_deployment",
    "ingestion.view_databatch", "ingestion.view_datasetschema",
]
PERMISSIONS = {
    VIEWER: _VIEW,
    ANALYST: _VIEW + ["ingestion.upload_data", "modelhub.batch_predict"],
    ML_ENGINEER: _VIEW + [
        "ingestion.upload_data", "modelhub.batch_predict", "modelhub.retrain_model", "modelhub.deploy_modelversion",
        "modelhub.view_validationpolicy", "modelhub.change_validationpolicy", "ingestion.manage_batches",
        "ingestion.view_masterpartition", "audit.view_auditevent", "ops.view_alert",
    ],
}
# ML engineers use the admin (rollback action, validation policy), so their accounts are staff.
STAFF_ROLES = {ML_ENGINEER}


def ensure_roles() -> dict[str, Group]:
    """Create or update the groups; re-runnable."""
    groups = {}
    for name, codes in PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=name)
        perms = []
        for code in codes:
            app_label, codename = code.split(".")
            perms.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
        group.permissions.set(perms)
        groups[name] = group
    return groups


ROLES = [*PERMISSIONS, "Admin"]


def assign_role(user, role: str, *, actor=None) -> None:
    """Give `user` exactly one role (or none: ""), audited when it changes; every door (add_user,
    the admin's user page) comes here."""
    from audit.services import record

    if role and role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    before = role_of(user) if user.pk else ""
    groups = ensure_roles()
    if user.pk is None:
        user.save()
    if role == "Admin":
        user.is_staff = user.is_superuser = True
        user.groups.clear()
    else:
        user.groups.set([groups[role]] if role else [])
        user.is_staff = role in STAFF_ROLES
        user.is_superuser = False
    user.save()
    if before != role:
        record(actor=actor, action="user.role_changed", target=user.get_username(), details={"old": before or "none", "new": role or "none"})


def role_of(user) -> str:
    if not user.is_authenticated:
        return ""
    if user.is_superuser:
        return "Admin"
    names = set(user.groups.values_list("name", flat=True))
    for role in (ML_ENGINEER, ANALYST, VIEWER):
        if role in names:
            return role
    return ""
