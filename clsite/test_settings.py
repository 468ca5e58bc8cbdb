"""Settings for the test suite: the real settings, a throw-away CL_HOME and a fast password hasher."""
import os
import secrets
import tempfile

os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault("CL_HOME", tempfile.mkdtemp(prefix="cl-test-home-"))

from .settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Made by ops.repairs.repair() at a real start; the test client's WhiteNoise wants it at once.
(CL_HOME / "staticfiles").mkdir(exist_ok=True)  # noqa: F405

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, not the in-memory default: concurrent writers then wait on the busy timeout
    # as they do in production, instead of failing at once with "table is locked".
    DATABASES["default"]["TEST"] = {"NAME": str(CL_HOME / "test-db.sqlite3")}  # noqa: F405

# Each test process keeps its own figures; conftest clears them with each fresh CL_HOME.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# Tests deploy and predict in the same breath: ask every time which version is active.
CL_SERVING_RECHECK_SECONDS = 0.0
