"""Opt-in per-request query counting (MESHPLANE_QUERY_COUNT_HEADER=1), for tests and bench.

The count goes out as `X-Meshplane-Queries`, so a test or benchmark in another process can
check that a list stays constant in the number of rows.
"""

import os

from django.db import connections

ENABLED = os.environ.get("MESHPLANE_QUERY_COUNT_HEADER") == "1"


class QueryCountMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not ENABLED:
            return self.get_response(request)
        count = 0

        def counter(execute, sql, params, many, context):
            nonlocal count
            count += 1
            return execute(sql, params, many, context)

        with connections["default"].execute_wrapper(counter):
            response = self.get_response(request)
        response["X-Meshplane-Queries"] = str(count)
        return response


class AppMeshEntryMiddleware:
    """Hands App Mesh wire-protocol requests straight to their entry point.

    That API is signed with SigV4 and never uses sessions, CSRF tokens, users or URL
    routing, so the middleware that serves the native API and dashboard is skipped for it.
    """

    PREFIX = "/v20190125"

    def __init__(self, get_response):
        self.get_response = get_response
        from meshapi.appmesh.views import appmesh_entry

        self.entry = appmesh_entry

    def __call__(self, request):
        path = request.path_info
        if path == self.PREFIX or path.startswith(self.PREFIX + "/"):
            return self.entry(request)
        return self.get_response(request)
