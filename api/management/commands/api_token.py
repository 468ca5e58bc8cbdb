from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from api.services import create_token
from modelhub import roles


class Command(BaseCommand):
    help = ("Make a new API token for USERNAME; it carries that user's role. The token is printed once, as the last "
            "line, and only its hash is kept: store it where the calling program reads its secrets.")

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="what the token is for, e.g. crm-nightly")

    def handle(self, *args, **options):
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"there is no user {options['username']!r}; make one with `add_user`")
        if not user.is_active:
            raise CommandError(f"{user.username} is deactivated; a token would not work")
        token, key = create_token(user=user, name=options["name"])
        role = roles.role_of(user) or "no role: every call will be refused (403)"
        self.stdout.write(f"token {token.prefix}… for {user.username} ({role}); send it as `Authorization: Bearer <token>`:")
        self.stdout.write(key)
