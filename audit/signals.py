"""Logins, logouts and failed logins in the audit log, whichever door they came through
(the site, the admin, the API)."""
from clsite.security import client_ip

from .services import record


def _where(request) -> dict:
    if request is None:
        return {}
    return {"ip": client_ip(request), "path": request.path}


def logged_in(sender, request, user, **kwargs) -> None:
    record(actor=user, action="auth.login", target=user.get_username(), details=_where(request))


def logged_out(sender, request, user, **kwargs) -> None:
    if user is not None:
        record(actor=user, action="auth.logout", target=user.get_username(), details=_where(request))


def login_failed(sender, credentials, request=None, **kwargs) -> None:
    # Only the username tried: django hides the password in `credentials` already, and it is never kept.
    record(actor=None, action="auth.login_failed", target=str(credentials.get("username", ""))[:200], details=_where(request))
