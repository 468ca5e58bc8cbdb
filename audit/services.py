from typing import Any

from .models import AuditEvent


def record(*, actor, action: str, target: str = "", details: dict[str, Any] | None = None) -> AuditEvent:
    """Write the audit row; call it inside the same transaction as the act it records."""
    if actor is not None and not getattr(actor, "is_authenticated", False):
        actor = None
    return AuditEvent.objects.create(actor=actor, action=action, target=target, details=details or {})
