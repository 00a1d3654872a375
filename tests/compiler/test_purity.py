"""The compiler stays pure: importing it pulls in no Django, Celery, boto3 or gRPC."""

from tests.support.imports import top_level_packages

FORBIDDEN = ("django", "celery", "boto3", "botocore", "grpc", "redis", "psycopg")


def test_compiler_imports_no_framework_or_io_library():
    loaded = top_level_packages("workers.compiler", "workers.compiler.profile")
    assert "workers" in loaded and "envoy" in loaded
    assert not loaded & set(FORBIDDEN), f"compiler imported {sorted(loaded & set(FORBIDDEN))}"
