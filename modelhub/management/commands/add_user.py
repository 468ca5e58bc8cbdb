import secrets

from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from modelhub import roles


class Command(BaseCommand):
    help = ("Create a user with a role (or change an existing user's role). A new user without --password gets a "
            "generated one, printed once. Passwords must pass the site's password rules.")

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=roles.ROLES)
        parser.add_argument("--password", help="use this password instead of a generated one (it must pass the password rules)")
        parser.add_argument("--email", help="an address for alert mail (ML engineers and admins get alerts)")

    def handle(self, *args, **options):
        User = get_user_model()
        with transaction.atomic():
            user = User.objects.filter(username=options["username"]).first()
            created = user is None
            if created:
                user = User(username=options["username"])
            if options["email"] is not None:
                user.email = options["email"]
            password = options["password"] or (secrets.token_urlsafe(15) if created else None)
            if password:
                try:
                    password_validation.validate_password(password, user)
                except ValidationError as exc:
                    raise CommandError("the password was refused: " + " ".join(exc.messages)) from None
                user.set_password(password)
            roles.assign_role(user, options["role"])
        verb = "created" if created else "updated"
        self.stdout.write(self.style.SUCCESS(f"{verb} {user.username} as {options['role']}"))
        if password and not options["password"]:
            self.stdout.write(f"password (shown once, not stored anywhere readable): {password}")
