"""Omoi settings, read from the environment.

Every variable has a development default so that a fresh checkout runs with
SQLite and the in-memory channel layer; bad values fail loudly at start-up.
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def envbool(name, default):
    value = os.environ.get(name, default).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be one of true/false/1/0/yes/no/on/off, not {value!r}")


def envint(name, default, *, minimum=None):
    raw = os.environ.get(name, default)
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}")
    return value


def envfloat(name, default, *, minimum):
    raw = os.environ.get(name, default)
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {raw!r}") from None
    if not value >= minimum:  # also refuses nan
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {raw}")
    return value


def envlist(name, default):
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def envheader(name):
    """A request header and the value that marks a request as secure, e.g. `X-Forwarded-Proto: https`."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    header, sep, value = (part.strip() for part in raw.partition(":"))
    if not (sep and header and value):
        raise ImproperlyConfigured(f"{name} must look like 'X-Forwarded-Proto: https', not {raw!r}")
    return "HTTP_" + header.upper().replace("-", "_"), value


def envpool():
    """psycopg's connection pool options, from OMOI_DB_POOL_*; None when OMOI_DB_POOL_MAX_SIZE is 0 (no pool)."""
    max_size = envint("OMOI_DB_POOL_MAX_SIZE", "20", minimum=0)
    if max_size == 0:
        return None
    min_size = envint("OMOI_DB_POOL_MIN_SIZE", "2", minimum=0)
    if min_size > max_size:
        raise ImproperlyConfigured(
            f"OMOI_DB_POOL_MIN_SIZE ({min_size}) must not be larger than OMOI_DB_POOL_MAX_SIZE ({max_size})"
        )
    return {"min_size": min_size, "max_size": max_size, "timeout": envint("OMOI_DB_POOL_TIMEOUT", "10", minimum=1)}


DEBUG = envbool("DEBUG", "true")

_DEV_SECRET_KEY = "omoi-development-only-secret-key-do-not-use-in-production"
SECRET_KEY = os.environ.get("SECRET_KEY", _DEV_SECRET_KEY if DEBUG else "")
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    "django_htmx",
    "template_partials",
    "ninja",
    "phases",
    "board",
    "discoveries",
    # The composition root: the orchestrator's command lives here, above every app whose steps it runs.
    "omoi_site",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "board.middleware.ApiGuardMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its lockout page.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    # First: refuses a locked-out login before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "omoi_site.urls"
ASGI_APPLICATION = "omoi_site.asgi.application"
WSGI_APPLICATION = None

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
            ],
        },
    },
]

if os.environ.get("DATABASE_URL"):
    try:
        # No persistent connections of Django's own (Django requires conn_max_age=0 with a pool): under ASGI
        # every request runs in its own thread, and each thread would keep its own connection until
        # PostgreSQL refuses new ones.
        DATABASES = {"default": dj_database_url.config(conn_max_age=0)}
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and (pool := envpool()):
        # A process-wide pool instead: a request borrows a connection and gives it back when it ends.
        # Opening one per request (TLS, authentication, a new backend process) cost more than the
        # request's own statements. At most OMOI_DB_POOL_MAX_SIZE connections per process, so several
        # web workers and orchestrators stay under PostgreSQL's max_connections; past that a request
        # waits up to OMOI_DB_POOL_TIMEOUT seconds for one, then fails. OMOI_DB_POOL_MAX_SIZE=0 turns the
        # pool off, for a pooler in front of PostgreSQL (PgBouncer).
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = pool
else:
    # The orchestrator writes while the web server does: WAL lets readers go on
    # during a write, the busy timeout waits for a lock instead of failing, and
    # IMMEDIATE takes the write lock at BEGIN so a transaction never has to
    # upgrade a read lock (which SQLite refuses with "database is locked").
    DATABASES = {
        "default": {
            # Django's SQLite backend, with this process's write transactions taking turns (see its docstring).
            "ENGINE": "omoi_site.sqlite",
            "NAME": os.environ.get("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
            "OPTIONS": {
                "timeout": envint("SQLITE_BUSY_TIMEOUT", "20", minimum=0),
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if os.environ.get("REDIS_URL"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # channels-redis waits up to 5 s for each message; redis-py 8 gives sockets a 5 s read
            # timeout by default, which would cut every idle websocket. Allow the wait to finish.
            # A Redis host that does not answer at all must not hold every write for the system's
            # TCP timeout: events reach pages through the database poll meanwhile.
            "CONFIG": {
                "hosts": [{"address": os.environ["REDIS_URL"], "socket_timeout": 15, "socket_connect_timeout": 2}]
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Login throttling (django-axes): after OMOI_LOGIN_FAILURE_LIMIT failed logins for one username from one
# address, that pair is locked out for OMOI_LOGIN_COOLOFF_MINUTES; the same username elsewhere still works.
AXES_FAILURE_LIMIT = envint("OMOI_LOGIN_FAILURE_LIMIT", "5", minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=envint("OMOI_LOGIN_COOLOFF_MINUTES", "15", minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False

# HTTPS, from the environment: off by default, since `make run` serves plain HTTP on localhost.
# Behind a TLS-terminating proxy set SECURE_PROXY_SSL_HEADER to the header it adds ("X-Forwarded-Proto: https").
SECURE_PROXY_SSL_HEADER = envheader("SECURE_PROXY_SSL_HEADER")
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", "false")
SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", "false")
CSRF_COOKIE_SECURE = envbool("CSRF_COOKIE_SECURE", "false")
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", "0", minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", "false")
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", "false")
# The health check answers the proxy over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^api/v1/health$"]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "board:list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]

# Largest workflow file accepted by the admin import form and load_workflow.
OMOI_MAX_WORKFLOW_BYTES = envint("OMOI_MAX_WORKFLOW_BYTES", str(1024 * 1024), minimum=1024)
# How long an Idempotency-Key's first answer is kept for retries; older records are pruned.
OMOI_IDEMPOTENCY_TTL = timedelta(hours=envint("OMOI_IDEMPOTENCY_TTL_HOURS", "24", minimum=1))
# Largest body an agent may send; a larger one is answered 413 before it is parsed.
OMOI_API_MAX_BODY_BYTES = envint("OMOI_API_MAX_BODY_BYTES", str(256 * 1024), minimum=1024)
# Largest request body the server reads at all (omoi_site.server), on any page: room for a workflow file upload.
OMOI_MAX_REQUEST_BYTES = envint("OMOI_MAX_REQUEST_BYTES", str(4 * 1024 * 1024), minimum=1024)
_LARGEST_BODY = max(OMOI_API_MAX_BODY_BYTES, OMOI_MAX_WORKFLOW_BYTES + 64 * 1024)
if OMOI_MAX_REQUEST_BYTES < _LARGEST_BODY:
    raise ImproperlyConfigured(
        "OMOI_MAX_REQUEST_BYTES must leave room for the largest API body and a workflow file upload "
        f"(at least {_LARGEST_BODY}, not {OMOI_MAX_REQUEST_BYTES})"
    )

# The orchestrator (manage.py orchestrate). Each duty works through at most OMOI_ORCHESTRATOR_BATCH rows a
# step, so one pass costs the same however many tickets there are.
OMOI_ORCHESTRATOR_INTERVAL_SECONDS = envint("OMOI_ORCHESTRATOR_INTERVAL_SECONDS", "2", minimum=1)
OMOI_ORCHESTRATOR_BATCH = envint("OMOI_ORCHESTRATOR_BATCH", "200", minimum=1)
# A task assigned but not started within this long fails with a time-out (and is retried while retries last).
OMOI_START_TIMEOUT = timedelta(seconds=envint("OMOI_START_TIMEOUT_SECONDS", "300", minimum=1))
# Agents are expected to heartbeat this often; after OMOI_MISSED_HEARTBEATS missed ones an agent is offline
# and the tasks it holds go back to the queue.
OMOI_HEARTBEAT_INTERVAL = timedelta(seconds=envint("OMOI_HEARTBEAT_INTERVAL_SECONDS", "30", minimum=1))
OMOI_MISSED_HEARTBEATS = envint("OMOI_MISSED_HEARTBEATS", "3", minimum=1)
# Retry back-off doubles from the phase's retry_backoff_seconds up to this cap (or the phase's
# retry_backoff_max_seconds), with jitter.
OMOI_RETRY_BACKOFF_MAX = timedelta(seconds=envint("OMOI_RETRY_BACKOFF_MAX_SECONDS", "3600", minimum=1))
# A ticket without progress for this long is stuck: it gets one rescue per window, at most.
OMOI_RESCUE_WINDOW = timedelta(minutes=envint("OMOI_RESCUE_WINDOW_MINUTES", "60", minimum=1))

# Live board pages (board/live.py): the sockets of a server process share one reader of the event log, which
# reads it at most every OMOI_LIVE_POLL_SECONDS (on PostgreSQL only after a commit, and every
# OMOI_LIVE_SAFETY_POLL_SECONDS anyway), and re-checks every socket's access every OMOI_LIVE_ACCESS_SECONDS.
OMOI_LIVE_POLL_SECONDS = envfloat("OMOI_LIVE_POLL_SECONDS", "1", minimum=0.01)
OMOI_LIVE_ACCESS_SECONDS = envfloat("OMOI_LIVE_ACCESS_SECONDS", "10", minimum=0.01)
OMOI_LIVE_SAFETY_POLL_SECONDS = envfloat("OMOI_LIVE_SAFETY_POLL_SECONDS", "30", minimum=0.01)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
