"""Settings, read from the environment (see README "Configuration").

Every variable has a safe default for a single machine (SQLite + django-q2's ORM broker
under CL_HOME); a bad value stops start-up with a message naming the variable.
"""
import hashlib
import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
import plotly
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def envbool(name: str, default: str) -> bool:
    value = os.getenv(name, default).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def kept_secret_key(home: Path) -> str:
    """The key `make run` (scripts/run.sh) keeps in CL_HOME/secret_key, or "" when there is none.
    Read only: loading the settings never writes a file."""
    try:
        return (home / "secret_key").read_text().strip()
    except FileNotFoundError:
        return ""


def development_secret_key(home: Path) -> str:
    """For DJANGO_DEBUG=true with no key set or kept: a key derived in memory, never written.

    It must be the same in the web process, the worker and after a restart (or sessions and
    signed values break), so it is derived from what those share: the machine, the account and
    CL_HOME. Anyone with an account on this machine could derive it too, which is why only a
    development set-up (DEBUG) may use it; `make run` keeps a random key in CL_HOME/secret_key.
    """
    try:
        machine = Path("/etc/machine-id").read_text().strip()
    except OSError:
        machine = ""
    seed = "\0".join(["clsite development key", machine, str(os.getuid()), str(home)])
    return hashlib.sha256(seed.encode()).hexdigest() + hashlib.sha256(seed[::-1].encode()).hexdigest()


def envint(name: str, default: str) -> int:
    value = os.getenv(name, default)
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}") from None


# Everything under CL_HOME (the database with password hashes and sessions, uploaded data,
# scoring results, models, logs) is for the account running the site only, whatever umask it was
# started with. Every process (manage.py and its commands, qcluster, gunicorn/runserver through
# wsgi.py, the tests) imports these settings before it creates a file, so this is the one place.
os.umask(0o077)

CL_HOME = Path(os.getenv("CL_HOME", str(BASE_DIR / "var"))).resolve()
# The only writes of loading the settings, kept because nothing else can come first: the first
# thing a fresh machine runs (`manage.py migrate`, or any command) opens the default SQLite
# database in CL_HOME, and Django's system checks refuse every command while FILE_UPLOAD_TEMP_DIR
# (CL_HOME/tmp) is missing (files.E001), both before any code of ours could make them. The other
# folders are made where they are needed (clsite.home.ensure_layout, ops.repairs).
CL_HOME.mkdir(mode=0o700, parents=True, exist_ok=True)
(CL_HOME / "tmp").mkdir(exist_ok=True)

DEBUG = envbool("DJANGO_DEBUG", "false")
# The key: DJANGO_SECRET_KEY, else the one `make run` keeps in CL_HOME (so its commands work
# outside it too), else for development only a key derived in memory (development_secret_key);
# production must say which key it uses.
SECRET_KEY = os.getenv("DJANGO_SECRET_KEY", "") or kept_secret_key(CL_HOME)
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. `make run` makes one under CL_HOME; "
            "in production set it in the environment (or DJANGO_DEBUG=true for development)."
        )
    SECRET_KEY = development_secret_key(CL_HOME)

ALLOWED_HOSTS = [h.strip() for h in os.getenv("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [h.strip() for h in os.getenv("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if h.strip()]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_q",
    "axes",
    "ninja",  # serves the API docs' scripts from our static files, never from a CDN
    "audit",
    "ingestion",
    "modelhub",
    "ops",
    "api",
    "dashboards",
]

MIDDLEWARE = [
    # Calls to the API, authenticated by their token, leave here for TOKEN_CALL_MIDDLEWARE.
    "api.middleware.TokenCallsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "clsite.security.ContentSecurityPolicyMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lock-out page.
    "axes.middleware.AxesMiddleware",
]
TOKEN_CALL_MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Content-Length: without it gunicorn sends the answer chunked, one more write per call.
    "django.middleware.common.CommonMiddleware",
    "clsite.security.ContentSecurityPolicyMiddleware",
    "axes.middleware.AxesMiddleware",  # the 429 for the guess that reaches the limit
]

AUTHENTICATION_BACKENDS = [
    # First, so a locked-out user or address is refused before the password is even checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "clsite.urls"
WSGI_APPLICATION = "clsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboards.context_processors.roles",
            ],
        },
    },
]

_default_db = f"sqlite:///{CL_HOME / 'db.sqlite3'}"
try:
    DATABASES = {"default": dj_database_url.parse(os.getenv("DATABASE_URL", _default_db), conn_max_age=60)}
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a database URL: {exc}") from None
# A kept connection that a database restart broke is replaced before use, in requests and tasks
# alike, instead of failing the first query after the outage.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process read while the worker writes; IMMEDIATE takes the write lock at
    # BEGIN so two writers queue on the busy timeout instead of failing mid-transaction.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Login throttling (django-axes): this many failures for a username, or from an address, lock
# further attempts (site, admin and API logins) for CL_LOGIN_LOCKOUT_MINUTES; an admin can
# unlock sooner (admin → Axes → Access attempts: delete). A successful login forgets that
# username's failures only, never other users' failures from the same address (LockoutHandler).
AXES_FAILURE_LIMIT = envint("CL_LOGIN_FAILURE_LIMIT", "5")
AXES_COOLOFF_TIME = timedelta(minutes=envint("CL_LOGIN_LOCKOUT_MINUTES", "15"))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_HANDLER = "clsite.security.LockoutHandler"
AXES_LOCKOUT_CALLABLE = "clsite.security.lockout_response"
AXES_CLIENT_IP_CALLABLE = "clsite.security.client_ip"
# Behind a TLS-terminating proxy, the address the proxy puts last in X-Forwarded-For is the client's.
CL_PROXY_COUNT = envint("CL_PROXY_COUNT", "0")

# HTTPS: on behind a TLS proxy or with TLS of our own. Then `check --deploy` is clean.
HTTPS = envbool("DJANGO_HTTPS", "false")
if HTTPS:
    SECURE_SSL_REDIRECT = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = envint("DJANGO_HSTS_SECONDS", str(365 * 24 * 3600))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", "true")
    SECURE_HSTS_PRELOAD = envbool("DJANGO_HSTS_PRELOAD", "true")  # the header only; submitting the domain is a separate act
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    if CL_PROXY_COUNT == 0:
        CL_PROXY_COUNT = 1
SESSION_COOKIE_HTTPONLY = True
# No script of ours reads the CSRF cookie (forms, and upload.js's FormData, carry the token), so
# none may: an injected script cannot lift it.
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = envint("CL_SESSION_HOURS", "12") * 3600
X_FRAME_OPTIONS = "DENY"

# Content-Security-Policy: our own scripts and styles only (charts are drawn by static/js/charts.js
# from JSON data blocks, so no inline script runs). plotly sets styles on its own elements.
from csp.constants import NONE, SELF  # noqa: E402

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, "'unsafe-inline'"],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "overview"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.getenv("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = CL_HOME / "staticfiles"
# plotly.min.js comes from the installed plotly package, served by us: the site works offline.
STATICFILES_DIRS = [BASE_DIR / "static", ("plotly", str(Path(plotly.__file__).parent / "package_data"))]
# Serve straight from the finders, so the site works offline with no collectstatic step.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# Uploads go to a temporary file in chunks, never whole into memory, and only for a user allowed
# to upload there: ingestion.uploads.GuardedUploadHandler refuses anyone else before the body is
# read, takes one file per request and stops a file past CL_UPLOAD_MAX_BYTES as it streams.
FILE_UPLOAD_MAX_MEMORY_SIZE = 0
FILE_UPLOAD_TEMP_DIR = str(CL_HOME / "tmp")
FILE_UPLOAD_HANDLERS = ["ingestion.uploads.GuardedUploadHandler"]
FILE_UPLOAD_PERMISSIONS = 0o600
CL_UPLOAD_MAX_BYTES = envint("CL_UPLOAD_MAX_BYTES", str(1024**3))
# A request's body beyond its one file: the form's fields and the multipart framing.
CL_REQUEST_OVERHEAD_BYTES = 1 << 20
# A prediction call's JSON body (10,000 rows of up to 100 features; README "API"): read whole
# before it is checked, so it is bounded; more answers 413.
CL_PREDICT_MAX_BYTES = envint("CL_PREDICT_MAX_MB", "32") << 20
DATA_UPLOAD_MAX_NUMBER_FIELDS = 200
# Share of rows held out for evaluation, chosen by a hash of each row's id (or content).
CL_HOLDOUT_PERCENT = envint("CL_HOLDOUT_PERCENT", "20")
# The longest a retraining (or any worker task) may take: django-q2 stops it after this, and
# presents a task again only after it could have ended. A run is never stopped for being slow
# before that; it is failed early only when its heartbeat (every 5 s) stops for a minute.
CL_RUN_TIMEOUT_MINUTES = envint("CL_RUN_TIMEOUT_MINUTES", "120")
# A queued run no worker has started after this is handed over once more, then failed.
CL_QUEUED_RUN_MINUTES = envint("CL_QUEUED_RUN_MINUTES", "15")
# Health and alerts (README "Running it unattended"). The worker beats every minute; silent
# longer than this, it counts as stopped.
CL_WORKER_SILENT_SECONDS = envint("CL_WORKER_SILENT_SECONDS", "180")
# Staged data waiting this long with no successful retraining is a problem to report.
CL_ALERT_NO_SUCCESS_HOURS = envint("CL_ALERT_NO_SUCCESS_HOURS", "36")
# Less free disk than this under CL_HOME is a problem to report.
CL_MIN_FREE_MB = envint("CL_MIN_FREE_MB", "1024")
# The address people use to reach the site, for the links in alert mails.
CL_SITE_URL = os.getenv("CL_SITE_URL", "http://127.0.0.1:8000")
# Retention: how long files nobody needs any more are kept (ops/retention.py).
CL_KEEP_TMP_HOURS = envint("CL_KEEP_TMP_HOURS", "6")
CL_KEEP_QUARANTINE_DAYS = envint("CL_KEEP_QUARANTINE_DAYS", "30")
CL_KEEP_ARCHIVE_DAYS = envint("CL_KEEP_ARCHIVE_DAYS", "365")
CL_KEEP_LOG_MB = envint("CL_KEEP_LOG_MB", "20")
CL_KEEP_SCORING_HOURS = envint("CL_KEEP_SCORING_HOURS", "24")
CL_SCORING_MAX_QUEUED_PER_USER = envint("CL_SCORING_MAX_QUEUED_PER_USER", "3")  # more queued jobs are refused

# Alert mail: SMTP when EMAIL_HOST is set, else printed on the console of the process that sends it.
EMAIL_HOST = os.getenv("EMAIL_HOST", "")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = envint("EMAIL_PORT", "587")
    EMAIL_HOST_USER = os.getenv("EMAIL_HOST_USER", "")
    EMAIL_HOST_PASSWORD = os.getenv("EMAIL_HOST_PASSWORD", "")
    EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", "true")
    EMAIL_TIMEOUT = 20
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = os.getenv("DEFAULT_FROM_EMAIL", "continuous-learning@localhost")

# How often a serving process asks which version is active (a deployment reaches it within this).
CL_SERVING_RECHECK_SECONDS = float(envint("CL_SERVING_RECHECK_MS", "1000")) / 1000

# Folds for choosing between candidate estimators by cross-validation.
CL_CV_FOLDS = envint("CL_CV_FOLDS", "3")

# Shared by every web and worker process: figures built once per change (dashboards.figures).
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(CL_HOME / "cache"),
        "OPTIONS": {"MAX_ENTRIES": 5000},
    },
}

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Model artifacts; point this at a shared or object store when web and workers
    # run on several machines.
    "models": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(CL_HOME / "models" / "versions"), "base_url": None},
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

Q_CLUSTER = {
    "name": "clsite",
    # Two: a long retraining holds one, the watchdog, alerts and scoring use the other.
    "workers": envint("Q_WORKERS", "2"),
    "timeout": CL_RUN_TIMEOUT_MINUTES * 60,
    "retry": CL_RUN_TIMEOUT_MINUTES * 60 + 300,
    "max_attempts": 1,
    "catch_up": False,
    "save_limit": 500,
    "label": "Task queue",
}
REDIS_URL = os.getenv("REDIS_URL", "")
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
    Q_CLUSTER["poll"] = 1

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    # A 503 is an answer we give on purpose (/healthz while unhealthy, no model yet), not an error to log,
    # unless it comes with a traceback: a part failed (the API's answer while the database is down).
    "filters": {"not_503": {"()": "django.utils.log.CallbackFilter",
                            "callback": lambda r: getattr(r, "status_code", 500) != 503 or bool(r.exc_info)}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"},
                 "errors": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["not_503"]}},
    "loggers": {
        "clsite": {"handlers": ["console"], "level": os.getenv("CL_LOG_LEVEL", "WARNING")},
        "django_q": {"handlers": ["console"], "level": "WARNING"},
        # A view's unhandled exception: its traceback on stderr of gunicorn/runserver (Django's
        # default sends it to mail_admins only, i.e. nowhere). Not propagated: in DEBUG Django's
        # own console handler would print it twice.
        "django.request": {"handlers": ["errors"], "level": "ERROR", "propagate": False},
    },
}
