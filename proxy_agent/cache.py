"""The last good configuration, on disk: what Envoy last ACKed, per xDS type.

Static stability: an agent started while the control plane is away serves Envoy this
file. It holds only what came from the control plane (never the workload key, which the
agent adds itself), is one file written atomically (files.write_atomic), so a crash
mid-write leaves the previous good configuration, and names the node it belongs to: a
cache of another node (a data directory reused) is ignored rather than served.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import any_pb2

from proxy_agent.files import write_atomic

log = logging.getLogger(__name__)

FORMAT = 1


@dataclass
class TypeConfig:
    """One xDS type as the control plane sent it: its version and resources by name."""

    version: str = ""
    resources: dict[str, any_pb2.Any] = field(default_factory=dict)


class ConfigCache:
    """`xds-cache.json` in the data directory: {type URL: TypeConfig} for one node."""

    def __init__(self, path: Path, node_id: str) -> None:
        self.path = Path(path)
        self.node_id = node_id

    def load(self) -> dict[str, TypeConfig]:
        """The cached types; empty when there is no cache, it is another node's, or it
        cannot be read (then the reason is logged and the agent waits for the control
        plane)."""
        try:
            raw = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("config cache %s unreadable (%s); ignoring it", self.path, exc)
            return {}
        if raw.get("format") != FORMAT or raw.get("node") != self.node_id:
            log.warning(
                "config cache %s is for node %r (format %r), not %r; ignoring it",
                self.path,
                raw.get("node"),
                raw.get("format"),
                self.node_id,
            )
            return {}
        out: dict[str, TypeConfig] = {}
        for type_url, item in raw.get("types", {}).items():
            resources = {}
            for name, encoded in item.get("resources", {}).items():
                message = any_pb2.Any()
                message.ParseFromString(base64.b64decode(encoded))
                resources[name] = message
            out[type_url] = TypeConfig(item.get("version", ""), resources)
        return out

    def save(self, types: dict[str, TypeConfig]) -> None:
        body = {
            "format": FORMAT,
            "node": self.node_id,
            "types": {
                type_url: {
                    "version": config.version,
                    "resources": {
                        name: base64.b64encode(config.resources[name].SerializeToString()).decode()
                        for name in sorted(config.resources)
                    },
                }
                for type_url, config in sorted(types.items())
            },
        }
        write_atomic(self.path, json.dumps(body, indent=1).encode())
