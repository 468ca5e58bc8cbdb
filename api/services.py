"""Making and revoking API tokens: the command line and the admin both come here."""
from django.db import transaction
from django.utils import timezone

from audit.services import record

from .models import ApiToken, digest


def create_token(*, user, name: str = "", actor=None) -> tuple[ApiToken, str]:
    """A new token for `user`; returns it and its key, which is never shown again."""
    key = ApiToken.new_key()
    with transaction.atomic():
        token = ApiToken.objects.create(user=user, name=name[:100], key_hash=digest(key), prefix=key[:10])
        record(actor=actor, action="api.token_created", target=str(token), details={"user": user.get_username(), "name": name})
    return token, key


def revoke_token(*, token: ApiToken, actor) -> None:
    with transaction.atomic():
        if ApiToken.objects.filter(pk=token.pk, revoked_at=None).update(revoked_at=timezone.now()):
            record(actor=actor, action="api.token_revoked", target=str(token), details={"user": token.user.get_username()})
