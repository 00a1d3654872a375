"""What importing some modules loads, seen from a fresh interpreter."""

import subprocess
import sys


def top_level_packages(*modules: str) -> set[str]:
    """The top-level packages in sys.modules after a fresh interpreter (run from the repo
    root, nothing but the standard PATH) imports `modules`."""
    code = (
        f"import sys, {', '.join(modules)};"
        "print('\\n'.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    env = {"PYTHONPATH": ".", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    return set(result.stdout.split())
