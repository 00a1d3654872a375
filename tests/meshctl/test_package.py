"""meshctl is a plain boto3 client: it must run where only the CLI is installed."""

import subprocess
import sys


def test_meshctl_imports_no_django_and_answers_help():
    probe = (
        "import sys, meshctl.cli, meshctl.export, meshctl.sources; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'meshapi', "
        "'tenants', 'workers')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

    usage = subprocess.run(
        [sys.executable, "-m", "meshctl.cli", "import", "appmesh", "--help"],
        capture_output=True,
        text=True,
    )
    assert usage.returncode == 0
    assert "--from-endpoint" in usage.stdout and "--dry-run" in usage.stdout

    wrong = subprocess.run(
        [sys.executable, "-m", "meshctl.cli", "import", "appmesh"], capture_output=True, text=True
    )
    assert wrong.returncode == 2
    assert "one of the arguments --from --from-endpoint is required" in wrong.stderr
