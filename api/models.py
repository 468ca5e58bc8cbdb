import hashlib
import secrets

from django.conf import settings
from django.db import models

PREFIX = "cl_"


def digest(key: str) -> str:
    """How a token is stored: its sha256. Tokens are 256 random bits, so a fast hash is enough."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiToken(models.Model):
    """A key for programs to call the API as a user, with that user's role. The key is shown
    once, when it is made; only its hash is kept."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, help_text="What it is for, e.g. the CRM.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=12, editable=False, help_text="The key's first characters, to tell tokens apart.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name or 'token'} of {self.user})"

    @staticmethod
    def new_key() -> str:
        return PREFIX + secrets.token_urlsafe(32)
