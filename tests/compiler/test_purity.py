"""The compiler stays pure: importing it pulls in no Django, Celery, boto3 or gRPC."""

import subprocess
import sys

FORBIDDEN = ("django", "celery", "boto3", "botocore", "grpc", "redis", "psycopg")


def test_compiler_imports_no_framework_or_io_library():
    code = (
        "import sys, workers.compiler, workers.compiler.profile;"
        "print('\\n'.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    env = {"PYTHONPATH": ".", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    loaded = set(result.stdout.split())
    assert "workers" in loaded and "envoy" in loaded
    assert not loaded & set(FORBIDDEN), f"compiler imported {sorted(loaded & set(FORBIDDEN))}"
