import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from modelhub import roles

ROLE_NAMES = [*roles.PERMISSIONS, "Admin"]


class Command(BaseCommand):
    help = "Create a user (or change an existing user's role) and print a generated password."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=ROLE_NAMES)
        parser.add_argument("--password", help="use this password instead of a generated one")

    def handle(self, *args, **options):
        User = get_user_model()
        user, created = User.objects.get_or_create(username=options["username"])
        password = options["password"] or (secrets.token_urlsafe(12) if created else None)
        if password:
            user.set_password(password)
        try:
            roles.assign_role(user, options["role"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        verb = "created" if created else "updated"
        self.stdout.write(self.style.SUCCESS(f"{verb} {user.username} as {options['role']}") + (f"; password: {password}" if password else ""))
