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
