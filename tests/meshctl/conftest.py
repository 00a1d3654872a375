"""meshctl against the live server, configured the way a user configures the aws CLI."""

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshctl import cli

FIXTURES = Path(__file__).parent / "fixtures"


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def aws_profiles(alice, charlie, tmp_path, monkeypatch):
    """Profiles `meshplane` (alice, acme) and `old` (charlie, globex) in isolated aws files."""
    config = tmp_path / "aws-config"
    config.write_text(
        "[profile meshplane]\nregion = us-east-1\n\n[profile old]\nregion = eu-west-1\n"
    )
    credentials = tmp_path / "aws-credentials"
    credentials.write_text(
        f"[meshplane]\naws_access_key_id = {alice.key_id}\n"
        f"aws_secret_access_key = {alice.secret}\n\n"
        f"[old]\naws_access_key_id = {charlie.key_id}\n"
        f"aws_secret_access_key = {charlie.secret}\n"
    )
    for name in (
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_APPMESH", "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    return {"config": config, "credentials": credentials}


@pytest.fixture
def meshctl(aws_profiles, api_server):
    """Run meshctl in this process with `--profile meshplane --endpoint-url <server>`."""

    def run(*args: str, profile: str = "meshplane") -> Result:
        argv = list(args)
        if profile:
            argv += ["--profile", profile, "--endpoint-url", api_server.url]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)
        return Result(code, out.getvalue(), err.getvalue())

    return run
