"""Bearer-token authentication for the API, cheap enough for every request.

A token's hash is looked up once and its user kept in this process for TOKEN_CACHE_SECONDS, so
most calls touch no database at all (a lookup costs about a millisecond and a half with SQLite's
connection set-up, more than the rest of a prediction). A revoked token, a deactivated user or a
changed role therefore takes effect within that time. Invalid tokens count as failed logins for
django-axes, so an address that keeps guessing is locked out like one guessing passwords (a call
without any token is no guess: it gets 401 and counts for nothing).
"""
import time
from datetime import timedelta

from axes.handlers.proxy import AxesProxyHandler
from django.contrib.auth.signals import user_login_failed
from django.utils import timezone
from ninja.errors import HttpError
from ninja.security import HttpBearer

from clsite import memo

from .models import ApiToken, digest

TOKEN_CACHE_SECONDS = 10.0
TOKEN_CACHE_SIZE = 10_000
LAST_USED_EVERY = timedelta(minutes=1)  # last_used_at is kept to the minute: no write per call

_tokens = memo.ProcessCache("API tokens")  # key hash: (when, token)


class TokenAuth(HttpBearer):
    """The token's user, who must hold `permission` (403 otherwise), checked before the request's
    body is read or validated: a role without the permission gets 403 whatever it sent."""

    def __init__(self, permission: str | None = None):
        super().__init__()
        self.permission = permission

    def authenticate(self, request, key: str):
        token = _token(key, request)
        if token is None:
            return None
        request.user = token.user  # for the upload handler and has_perm; the session is not used
        if self.permission and not token.user.has_perm(self.permission):
            raise HttpError(403, f"this token's user may not do this (needs {self.permission})")
        return token.user


def _token(key: str, request) -> ApiToken | None:
    hashed = digest(key)
    now = time.monotonic()
    cached = _tokens.get(hashed)
    if cached and now - cached[0] < TOKEN_CACHE_SECONDS:
        return cached[1]
    # With credentials given, axes need not read the body (which would parse an upload before
    # the upload handler knows the user).
    if not AxesProxyHandler.is_allowed(request, {"username": _name(key)}):
        raise HttpError(429, "too many failed attempts from this address; try again later")
    token = ApiToken.objects.select_related("user").filter(key_hash=hashed, revoked_at=None, user__is_active=True).first()
    if token is None:
        _failed(request, key)
        return None
    if token.last_used_at is None or timezone.now() - token.last_used_at > LAST_USED_EVERY:
        token.last_used_at = timezone.now()
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=token.last_used_at)
    with _tokens.lock:
        if len(_tokens) >= TOKEN_CACHE_SIZE:
            _tokens.clear()
        _tokens[hashed] = (now, token)
    return token


def bearer_user(request):
    """The user of the request's `Authorization: Bearer` token, or None (no token, an invalid or
    revoked one, a locked-out address); a wrong token counts as a failed login, as in TokenAuth."""
    scheme, _, key = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    try:
        token = _token(key.strip(), request)
    except HttpError:
        return None
    return token.user if token is not None else None


def _failed(request, key: str) -> None:
    user_login_failed.send(sender=TokenAuth, credentials={"username": _name(key)}, request=request)


def _name(key: str) -> str:
    """How a token attempt is named to django-axes and the audit log: never the whole key."""
    return f"api token {key[:10]}…" if key else "api (no token)"


def forget() -> None:
    """Drop every token this process holds (tests; a revocation that must act at once)."""
    _tokens.forget()
