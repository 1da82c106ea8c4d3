"""Tagweave settings, read from the environment in one place.

No environment at all gives the embedded default: SQLite in ``db.sqlite3`` and
Celery tasks run in process. ``DATABASE_URL`` selects PostgreSQL and
``CELERY_BROKER_URL`` a real broker. Outside debug, ``SECRET_KEY`` is required.
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


DEBUG = env_bool("DEBUG", True)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "tagweave-insecure-development-key"

ALLOWED_HOSTS = [h for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h]
if DEBUG:
    ALLOWED_HOSTS.append("testserver")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "guardian",
    "auditlog",
    "import_export",
    "common",
    "audit",
    "subjects",
    "identity",
    "tags",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "auditlog.middleware.AuditlogMiddleware",
    "audit.actor.ActorMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "60")),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # The engine's statements work on chunks of ids and batches: JIT compilation
    # (triggered by row estimates of whole tables) costs more than they run.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("options", "-c jit=off")
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and a busy timeout let the dev server and in-process tasks share the file.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["common.api.permissions.ModelPermissions"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "common.api.pagination.IdCursorPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "common.api.errors.exception_handler",
    # Per kind of caller (see common.api.throttling): 429 with Retry-After beyond the rate.
    "DEFAULT_THROTTLE_CLASSES": ["common.api.throttling.RoleRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "anon": os.environ.get("TAGWEAVE_THROTTLE_ANON", "120/min"),
        "user": os.environ.get("TAGWEAVE_THROTTLE_USER", "1200/min"),
        "integration": os.environ.get("TAGWEAVE_THROTTLE_INTEGRATION", "6000/min"),
    },
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Tagweave API",
    "DESCRIPTION": "Multi-subject tagging platform: subjects, relationships and their tags.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # A tag group's view, use and edit policies share one choice set: one schema component.
    "ENUM_NAME_OVERRIDES": {"AccessPolicyEnum": "tags.models.AccessPolicy"},
}

# Celery: no broker configured means the embedded default (tasks run in process).
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_TIME_LIMIT = 30 * 60
CELERY_TASK_SOFT_TIME_LIMIT = 25 * 60
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or None
CELERY_TIMEZONE = TIME_ZONE
# Redis redelivers an unacknowledged message after the visibility timeout: keep it above
# the longest task's time limit (full recomputes: 3 h) so a running task is not duplicated.
# A worker process that dies is requeued at once (task_reject_on_worker_lost).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", str(4 * 3600))),
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Real-time refreshes are short; full recomputes are long. With TAGWEAVE_TASK_QUEUES=1 they
# go to separate queues ("realtime", "bulk"): start workers with -Q celery,realtime,bulk or
# dedicated ones, so a long recompute never delays an event's downstream tags.
if env_bool("TAGWEAVE_TASK_QUEUES", False):
    CELERY_TASK_ROUTES = {
        "tags.refresh": {"queue": "realtime"},
        "tags.expire_windows": {"queue": "realtime"},
        "tags.recompute_tag": {"queue": "bulk"},
        "tags.recompute_propagated": {"queue": "bulk"},
        "tags.reconcile_propagated": {"queue": "bulk"},
        "identity.reapply_rules": {"queue": "bulk"},
    }
# Beat: windowed tags expire without a new event; the nightly reconcile is the safety net
# for triggers the engine cannot see (a relationship moved to other ends in a bulk upsert).
CELERY_BEAT_SCHEDULE = {
    "tags-expire-windows": {
        "task": "tags.expire_windows",
        "schedule": float(os.environ.get("TAGWEAVE_EXPIRY_SECONDS", "300")),
    },
    "tags-reconcile-propagated": {
        "task": "tags.reconcile_propagated",
        "schedule": float(os.environ.get("TAGWEAVE_RECONCILE_SECONDS", str(24 * 3600))),
    },
}

# Tag usage analytics: every API read, rule, propagation and preview of a tag is counted (audit.usage).
TAGWEAVE_TAG_USAGE = os.environ.get("TAGWEAVE_TAG_USAGE", "1") == "1"

# Bulk endpoints accept at most this many items a request.
TAGWEAVE_BULK_MAX_ITEMS = int(os.environ.get("TAGWEAVE_BULK_MAX_ITEMS", "1000"))
DATA_UPLOAD_MAX_MEMORY_SIZE = 50 * 1024 * 1024

# Attribute keys that are personal data wherever they appear (a key containing one of these
# names is PII too); a type's JSON Schema adds more with "x-pii": true. See subjects.pii.
TAGWEAVE_PII_ATTRIBUTE_NAMES = [
    n.strip()
    for n in os.environ.get(
        "TAGWEAVE_PII_ATTRIBUTE_NAMES",
        "name,phone,mobile,tel,email,address,openid,open_id,unionid,union_id,external_userid,wechat,weixin,"
        "id_card,idcard,passport,birth,contact",
    ).split(",")
    if n.strip()
]

# Auditlog: the actor is set explicitly by services (token users and tasks are
# invisible to the middleware), and bulk writes get domain events instead.
AUDITLOG_INCLUDE_ALL_MODELS = False
AUDITLOG_MASK_CALLABLE = "subjects.pii.mask"  # total masking (auditlog's default keeps half a value)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}

# Cardinality's deferrable unique constraints exist on PostgreSQL only; on SQLite
# (single writer) the relationship services' set-based pre-check enforces it.
SILENCED_SYSTEM_CHECKS = ["models.W038"]
