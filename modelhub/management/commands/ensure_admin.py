import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from clsite import home

PASSWORD_FILE = "admin_password"


class Command(BaseCommand):
    help = "Create the `admin` superuser with a generated password kept in CL_HOME/admin_password (owner-only), once."

    def handle(self, *args, **options):
        User = get_user_model()
        path = home.path(PASSWORD_FILE)
        if User.objects.filter(username="admin").exists() and path.exists():
            self.stdout.write(f"admin login exists; password in {path}")
            return
        password = secrets.token_urlsafe(12)
        user, _ = User.objects.get_or_create(username="admin", defaults={"email": ""})
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
        os.chmod(path, 0o600)
        self.stdout.write(self.style.SUCCESS(f"created the admin login; password in {path}"))
