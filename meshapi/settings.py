"""Django settings, all from the environment.

With no DATABASE_URL / REDIS_URL the process runs on embedded defaults: a SQLite file
and in-process tasks, so `make demo` needs no servers.
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("MESHPLANE_VAR_DIR", BASE_DIR / "var"))

_DEV_SECRET = "meshplane-dev-only-secret-key-change-me-in-production"
SECRET_KEY = os.environ.get("MESHPLANE_SECRET_KEY", _DEV_SECRET)
DEBUG = os.environ.get("MESHPLANE_DEBUG", "") == "1"
ALLOWED_HOSTS = [h for h in os.environ.get("MESHPLANE_ALLOWED_HOSTS", "*").split(",") if h]

# Fernet keys (comma-separated, newest first) for secrets at rest. Without one, a key is
# derived from SECRET_KEY, which is fine for the embedded demo and nothing else.
MESHPLANE_ENCRYPTION_KEYS = [
    k.strip() for k in os.environ.get("MESHPLANE_ENCRYPTION_KEY", "").split(",") if k.strip()
]

REDIS_URL = os.environ.get("REDIS_URL", "")
# The pub/sub channel new configuration versions go out on (workers/publish.py). Processes
# sharing a Redis but not a database (test runs side by side) each need their own.
MESHPLANE_CONFIG_CHANNEL = os.environ.get("MESHPLANE_CONFIG_CHANNEL", "") or "meshplane:config"

# Resolved access keys are cached per process for this long; any key or membership change
# drops every cache at once (tenants/keycache.py). 0 disables the cache.
MESHPLANE_KEY_CACHE_SECONDS = float(os.environ.get("MESHPLANE_KEY_CACHE_SECONDS", "30"))

# A proxy variant other than the default (envoy, redirect, default ports) is dropped by the
# next compile of its mesh once no instance using it is connected or disconnected less than
# this long ago, and it was asked for more than this long ago (workers/pipeline.py).
MESHPLANE_VARIANT_TTL_SECONDS = float(os.environ.get("MESHPLANE_VARIANT_TTL_SECONDS", "86400"))
# How often a worker looks for such variants in a mesh (one query, ~25 ms at 1,000
# variants): at most once per this many seconds per mesh, not on every compile.
MESHPLANE_VARIANT_CHECK_SECONDS = float(os.environ.get("MESHPLANE_VARIANT_CHECK_SECONDS", "300"))

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "tenants",
    "meshapi",
]

MIDDLEWARE = [
    "meshapi.middleware.QueryCountMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "meshapi.middleware.AppMeshEntryMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

ROOT_URLCONF = "meshapi.urls"
WSGI_APPLICATION = "meshapi.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ]
        },
    }
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'meshplane.sqlite3'}"),
        conn_max_age=int(os.environ.get("MESHPLANE_DB_CONN_MAX_AGE", "60")),
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Writers wait for each other instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
STATIC_URL = "static/"

# App Mesh requests above 1 MiB are refused before they are parsed.
MESHPLANE_MAX_BODY_BYTES = 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = MESHPLANE_MAX_BODY_BYTES

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tenants.auth.BearerKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["tenants.permissions.TenantAccess"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Meshplane native API",
    "DESCRIPTION": "Tenants, access keys, members, audit log, quotas and mesh resources.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
# Test runs sharing one Redis each use their own queue, so none takes another's tasks.
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("MESHPLANE_TASK_QUEUE", "celery")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("MESHPLANE_LOG_LEVEL", "WARNING")},
}
