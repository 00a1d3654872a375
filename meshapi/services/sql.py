"""Bulk statements on PostgreSQL with server-side binary parameters."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection


@contextmanager
def binary_cursor() -> Iterator[Any]:
    """A psycopg cursor on Django's connection (so in its transaction) binding parameters
    on the server, `%b` in binary: arrays of 1,000 strings cost microseconds, where
    Django's client-side binding quotes each element in Python. PostgreSQL only."""
    import psycopg

    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        yield cursor
