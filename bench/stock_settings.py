"""Meshplane's settings plus DRF's token app: the stock baseline the benchmark compares to.

Bench-only: the same database and connection settings as the real server, so what differs
is the request path (TokenAuthentication + a generic view). The middleware is pinned to
Django's usual stack (plus the query counter) so that trimming Meshplane's own middleware
later shows up as a gain rather than moving the baseline with it.
"""

from meshapi.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "rest_framework.authtoken"]  # noqa: F405
ROOT_URLCONF = "bench.stock_urls"
MIDDLEWARE = [
    "meshapi.middleware.QueryCountMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
