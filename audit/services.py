from typing import Any

from clsite.users import real_user

from .models import AuditEvent


def record(*, actor, action: str, target: str = "", details: dict[str, Any] | None = None) -> AuditEvent:
    """Write the audit row; call it inside the same transaction as the act it records."""
    return AuditEvent.objects.create(actor=real_user(actor), action=action, target=target, details=details or {})
