"""An aws CLI / boto3 profile for the demo, in its own config files under the var dir,
so the demo never touches ~/.aws."""

import configparser
import io
from dataclasses import dataclass
from pathlib import Path

from meshapi.demo.tenant import write_private

PROFILE = "meshplane"


@dataclass(frozen=True)
class ProfileFiles:
    config: Path
    credentials: Path

    def env(self) -> dict[str, str]:
        return {
            "AWS_CONFIG_FILE": str(self.config),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.credentials),
        }


def _render(sections: dict[str, dict[str, str]]) -> str:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_dict(sections)
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()


def write_profile(
    directory: Path, key_id: str, secret: str, region: str, endpoint: str
) -> ProfileFiles:
    """Profile `meshplane`: the demo key, the tenant's region, and the demo endpoint for
    appmesh (used by botocore ≥ 1.31 when no --endpoint-url / endpoint_url is given)."""
    files = ProfileFiles(directory / "config", directory / "credentials")
    write_private(
        files.credentials,
        _render({PROFILE: {"aws_access_key_id": key_id, "aws_secret_access_key": secret}}),
    )
    write_private(
        files.config,
        _render(
            {
                f"profile {PROFILE}": {"region": region, "output": "json", "services": PROFILE},
                f"services {PROFILE}": {"app_mesh": f"\nendpoint_url = {endpoint}"},
            }
        ),
    )
    return files
