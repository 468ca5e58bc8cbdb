"""Settings for the test suite: the real settings, a throw-away CL_HOME and a fast password hasher."""
import os
import tempfile

os.environ.setdefault("DJANGO_SECRET_KEY", "test-suite-only")
os.environ.setdefault("CL_HOME", tempfile.mkdtemp(prefix="cl-test-home-"))

from .settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
