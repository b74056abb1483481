"""Onramp settings, read only from the environment (see .env.example).

With nothing set, everything runs embedded: SQLite under var/, a file-system Celery
broker under var/broker, the sandbox AWS on loopback and demo users. Production sets
DATABASE_URL, CELERY_BROKER_URL, ONRAMP_SANDBOX=false, SECRET_KEY and ALLOWED_HOSTS.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from portal.env import env_bool, env_float, env_int, env_list, env_secret, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
# pytest sets PYTEST_VERSION before anything is imported: a test session (and the workers
# and servers it starts) keeps its database, broker and files apart from the portal's.
TESTING = "PYTEST_VERSION" in os.environ
VAR_DIR = Path(env_str("ONRAMP_VAR_DIR", str(BASE_DIR / "var" / ("test" if TESTING else ""))))
VAR_DIR.mkdir(parents=True, exist_ok=True)

# The sandbox AWS (moto on loopback) is the default; production sets ONRAMP_SANDBOX=false.
SANDBOX = env_bool("ONRAMP_SANDBOX", True)
DEBUG = env_bool("DEBUG", False)


def _secret_key() -> str:
    key = env_secret("SECRET_KEY")
    if key:
        return key
    if not SANDBOX:
        raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) must be set in production")
    # Embedded set-up: one random key per checkout, kept under var/ so sessions survive restarts.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "portal",
    "portal.runs",
    "onboarding",
    "releases",
    "costs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Every page needs a login except those marked @login_not_required (login, /healthz).
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

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
                "portal.context_processors.portal",
            ],
        },
    }
]

# --- Database ---------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'onramp.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        # WAL lets the web, the workers and beat read while one of them writes; IMMEDIATE
        # takes the write lock when a transaction starts, so two writers queue instead of
        # failing half-way with "database is locked".
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # Worker processes started by the tests must see the test database, so it is a file.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-onramp.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if TESTING:
    # Hashing demo passwords with a million PBKDF2 rounds would dominate the test run.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-gb"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "staticfiles")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
# Without collectstatic (the embedded set-up) WhiteNoise serves straight from the finders.
WHITENOISE_USE_FINDERS = env_bool("WHITENOISE_USE_FINDERS", SANDBOX or DEBUG)
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "media/"
STORAGES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Production keeps uploaded samples in a private, encrypted S3 bucket instead of local disk.
MEDIA_BUCKET = env_str("ONRAMP_MEDIA_BUCKET")
if MEDIA_BUCKET:
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": MEDIA_BUCKET,
            "location": env_str("ONRAMP_MEDIA_PREFIX", "samples"),
            "region_name": env_str("AWS_REGION", env_str("AWS_DEFAULT_REGION", "us-east-1")),
            "default_acl": None,
            "file_overwrite": False,
            "querystring_auth": True,
            "object_parameters": {"ServerSideEncryption": "aws:kms"},
        },
    }

# --- Security ------------------------------------------------------------------------------
# Behind a TLS-terminating proxy in production; the embedded set-up serves plain HTTP on
# loopback. ONRAMP_SECURE defaults to on whenever the sandbox is off.
SECURE = env_bool("ONRAMP_SECURE", not SANDBOX)
SESSION_COOKIE_SECURE = SECURE
CSRF_COOKIE_SECURE = SECURE
SECURE_SSL_REDIRECT = SECURE and env_bool("SECURE_SSL_REDIRECT", True)
# Load balancers probe /healthz over plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if SECURE else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if env_bool("SECURE_PROXY_SSL_HEADER", SECURE):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 8 * 3600)
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SILENCED_SYSTEM_CHECKS: list[str] = []
if not SECURE_HSTS_PRELOAD:
    # Preloading is a one-way decision for the whole domain; leave it to the operators.
    SILENCED_SYSTEM_CHECKS.append("security.W021")

# --- Celery ------------------------------------------------------------------------------
# Embedded default: a file-system broker under var/broker that needs no server (see
# portal/broker.py for why it is not kombu's stock filesystem transport).
BROKER_DIR = Path(env_str("ONRAMP_BROKER_DIR", str(VAR_DIR / "broker")))
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "onrampfs://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
if CELERY_BROKER_URL.startswith("onrampfs://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "control_folder": str(BROKER_DIR / "control"),
        "polling_interval": env_float("ONRAMP_BROKER_POLL_SECONDS", 0.02),
    }
CELERY_TASK_ALWAYS_EAGER = False  # never eager: a real worker does the work, even in dev
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- Durable step runs (portal/runs) -------------------------------------------------------
RUNS_LEASE_SECONDS = env_float("RUNS_LEASE_SECONDS", 60.0)
RUNS_HEARTBEAT_SECONDS = env_float("RUNS_HEARTBEAT_SECONDS", 10.0)
RUNS_REAPER_INTERVAL_SECONDS = env_float("RUNS_REAPER_INTERVAL_SECONDS", 15.0)
# Runs due this long with no worker claiming any run: the workers are stalled (jammed or
# gone). The dashboard says so and the launcher restarts the worker.
RUNS_STALL_SECONDS = env_float("RUNS_STALL_SECONDS", 120.0)
# A pending run older than this that no worker has claimed is enqueued again.
RUNS_ENQUEUE_GRACE_SECONDS = env_float("RUNS_ENQUEUE_GRACE_SECONDS", 30.0)
# A worker keeps going with the next step of the same run for up to this long before it
# hands the run back to the queue, so long runs do not starve short ones.
RUNS_SLICE_SECONDS = env_float("RUNS_SLICE_SECONDS", 30.0)
RUNS_TRANSIENT_MAX_ATTEMPTS = env_int("RUNS_TRANSIENT_MAX_ATTEMPTS", 5)
RUNS_BACKOFF_BASE_SECONDS = env_float("RUNS_BACKOFF_BASE_SECONDS", 2.0)
RUNS_BACKOFF_MAX_SECONDS = env_float("RUNS_BACKOFF_MAX_SECONDS", 300.0)
RUNS_POLL_SECONDS = env_float("RUNS_POLL_SECONDS", 1.0)

# --- AWS ---------------------------------------------------------------------------------
AWS_REGION = env_str("AWS_REGION", env_str("AWS_DEFAULT_REGION", "us-east-1"))
AWS_MAX_ATTEMPTS = env_int("AWS_MAX_ATTEMPTS", 3)
AWS_CONNECT_TIMEOUT = env_float("AWS_CONNECT_TIMEOUT", 5.0)
AWS_READ_TIMEOUT = env_float("AWS_READ_TIMEOUT", 30.0)
SANDBOX_HOST = env_str("ONRAMP_SANDBOX_HOST", "127.0.0.1")
SANDBOX_PORT = env_int("ONRAMP_SANDBOX_PORT", 5055)
# The sandbox keeps its AWS state in SANDBOX_STATE_DIR, saved every SANDBOX_SAVE_SECONDS
# (and on a clean stop), restored at start; 0 keeps it in memory only.
SANDBOX_STATE_DIR = Path(env_str("ONRAMP_SANDBOX_STATE_DIR", str(VAR_DIR / "sandbox")))
SANDBOX_SAVE_SECONDS = env_float("ONRAMP_SANDBOX_SAVE_SECONDS", 5.0)
# Save after every write, before answering it, so an acknowledged write survives even a
# SIGKILL (AWS never forgets one). Each write then pays for a whole snapshot, which grows
# with the state, so it is off by default: the timed saves and the save at a clean stop
# cover a restart; a SIGKILL loses at most SANDBOX_SAVE_SECONDS of writes.
SANDBOX_DURABLE_WRITES = env_bool("ONRAMP_SANDBOX_DURABLE_WRITES", False)
# Where boto3 sends requests: the sandbox by default, LocalStack or real AWS otherwise.
AWS_ENDPOINT_URL = env_str(
    "AWS_ENDPOINT_URL", f"http://{SANDBOX_HOST}:{SANDBOX_PORT}" if SANDBOX else ""
)
# Environments (dev, staging, prod) are rows editable by admins; these seed them.
ONRAMP_ENVIRONMENTS = env_list("ONRAMP_ENVIRONMENTS", ["dev", "staging", "prod"])

# --- Onboarding (runbook 1) ----------------------------------------------------------------
# Sample files: the largest accepted file and the most files one request may hold.
ONBOARDING_SAMPLE_MAX_BYTES = env_int("ONBOARDING_SAMPLE_MAX_BYTES", 100 * 1024 * 1024)
ONBOARDING_SAMPLE_MAX_FILES = env_int("ONBOARDING_SAMPLE_MAX_FILES", 50)
# Validating one sample may take at most this long (seconds) before it is refused.
ONBOARDING_SAMPLE_MAX_SECONDS = env_float("ONBOARDING_SAMPLE_MAX_SECONDS", 120.0)
# Processes that validate one large NDJSON sample; more than 1 only helps on idle cores.
ONBOARDING_SAMPLE_WORKERS = env_int("ONBOARDING_SAMPLE_WORKERS", 1)
# NDJSON and Parquet samples go through the columnar screen first when the schema allows (false:
# every record through the record validator; the reports are the same, only slower).
ONBOARDING_SAMPLE_SCREEN = env_bool("ONBOARDING_SAMPLE_SCREEN", True)
# Provisioning or tearing down a source in a production environment waits for a second
# engineer's confirmation.
ONBOARDING_PROD_CONFIRMATION = env_bool("ONBOARDING_PROD_CONFIRMATION", True)
# The 30-day review's volume measurement lists at most this many objects of a raw bucket.
ONBOARDING_VOLUME_MAX_OBJECTS = env_int("ONBOARDING_VOLUME_MAX_OBJECTS", 100_000)

# --- Notifications -----------------------------------------------------------------------
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.filebased.EmailBackend"
    if SANDBOX
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_FILE_PATH = str(VAR_DIR / "mail")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_secret("EMAIL_HOST_PASSWORD", "") or ""
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "onramp@localhost")
SLACK_WEBHOOK_URL = env_secret("SLACK_WEBHOOK_URL", "") or ""
PORTAL_BASE_URL = env_str("PORTAL_BASE_URL", "http://127.0.0.1:8000")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        # botocore at DEBUG prints request bodies, which can hold secret values.
        "botocore": {"level": "WARNING"},
        "boto3": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
    },
}

CELERY_BEAT_SCHEDULE = {
    # The reaper itself runs in beat's own process (portal.runs.watchdog), not as a task a
    # jammed worker would never pick up.
    # Re-read every live source's resources and flag differences from the approved plan.
    "onboarding-drift-scan": {
        "task": "onboarding.drift_scan",
        "schedule": env_float("ONBOARDING_DRIFT_SCAN_SECONDS", 3600.0),
    },
    # Remind the engineers and the requester, once, of each source's 30-day review when due.
    "onboarding-review-reminders": {
        "task": "onboarding.review_reminders",
        "schedule": env_float("ONBOARDING_REVIEW_REMINDER_SECONDS", 86400.0),
    },
}
