"""`meshagent run …`: the command line. Errors name the flag (or variable) to fix."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from proxy_agent.config import (
    INTERCEPTIONS,
    AgentConfig,
    ConfigError,
    ecs_task_identity,
    find_envoy,
    host_port,
    local_address,
    node_from,
    stable_instance_id,
)
from proxy_agent.files import private_dir
from proxy_agent.iptables import RedirectUnavailable


def _ports(value: str) -> tuple[int, ...]:
    out = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        if not item.isdigit() or not 0 < int(item) < 65536:
            raise argparse.ArgumentTypeError(f"'{item}' is not a port number")
        out.append(int(item))
    return tuple(out)


def _concurrency(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = -1
    if not 0 <= n <= 1024:
        raise argparse.ArgumentTypeError(
            f"a number of worker threads from 0 to 1024, not {value!r}"
        )
    return n


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshagent", description="Meshplane's data-plane agent.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="Join the mesh, run Envoy and keep it configured.")
    env = os.environ.get
    run.add_argument(
        "--control-plane",
        default=env("MESHPLANE_CONTROL_PLANE", ""),
        help="HOST:PORT of the control plane's ADS port (mTLS).",
    )
    run.add_argument(
        "--join-address",
        default=env("MESHPLANE_JOIN_ADDRESS", ""),
        help="HOST:PORT of the control plane's join port (needed until the first join).",
    )
    run.add_argument("--ca-file", help="The control plane's CA (PEM) to verify it with.")
    run.add_argument(
        "--join-token-file", default=env("MESHPLANE_JOIN_TOKEN_FILE"), help="A join token file."
    )
    run.add_argument(
        "--node",
        default=env("MESHPLANE_NODE", ""),
        help="mesh/<mesh>/virtualNode/<name> (or an App Mesh ARN); APPMESH_RESOURCE_ARN works.",
    )
    run.add_argument(
        "--app-port",
        type=_ports,
        default=(),
        help="The app's port(s), comma-separated (explicit: where ingress forwards; redirect: "
        "the inbound ports to intercept).",
    )
    run.add_argument("--interception", choices=INTERCEPTIONS, default="explicit")
    run.add_argument(
        "--ingress-port",
        type=int,
        default=0,
        help="Explicit mode: the first ingress listener's port (sent as node.metadata).",
    )
    run.add_argument(
        "--egress-port",
        type=int,
        default=0,
        help="Explicit mode: the first loopback egress listener's port (node.metadata).",
    )
    run.add_argument("--data-dir", default=env("MESHPLANE_DATA_DIR", "/var/lib/meshagent"))
    run.add_argument("--envoy", default="", help="Envoy binary (default: $MESHPLANE_ENVOY_BIN).")
    run.add_argument(
        "--admin-port",
        type=int,
        default=int(env("ENVOY_ADMIN_ACCESS_PORT", "9901")),  # App Mesh's Envoy image's name
        help="Envoy admin (loopback).",
    )
    run.add_argument("--status-port", type=int, default=15021, help="/ready, /healthz, stats.")
    run.add_argument("--status-host", default="127.0.0.1")
    run.add_argument("--instance-id", default="", help="Default: stable per data directory.")
    run.add_argument("--address", default="", help="This instance's address for the mesh.")
    run.add_argument("--drain-seconds", type=float, default=20.0)
    run.add_argument("--envoy-log-level", default=env("ENVOY_LOG_LEVEL", "info"))
    run.add_argument(
        "--envoy-concurrency",
        type=_concurrency,
        default=env("ENVOY_CONCURRENCY", "0"),
        help="Envoy's worker threads (default: 0, one per core, Envoy's own default).",
    )
    run.add_argument(
        "--envoy-log-file",
        default="",
        help="Append Envoy's output (its logs and access logs) to this file (default: "
        "<data-dir>/envoy.log; '-': the agent's stderr, where a container runtime collects it).",
    )
    run.add_argument("--proxy-uid", type=int, default=1337, help="Redirect mode: Envoy's UID.")
    run.add_argument("--egress-ignored-ports", type=_ports, default=())
    run.add_argument("--egress-ignored-ips", default="")
    run.add_argument(
        "--insecure",
        action="store_true",
        help="Plaintext ADS to `serve_xds --insecure` (local development; no identity).",
    )
    run.add_argument(
        "--tenant",
        default=env("MESHPLANE_TENANT", ""),
        help="--insecure only: the tenant (account id or slug) the node belongs to.",
    )
    run.add_argument("--no-envoy", action="store_true", help=argparse.SUPPRESS)
    run.add_argument("--log-level", default=env("MESHAGENT_LOG_LEVEL", "INFO"))
    return p


def config_from(args: argparse.Namespace) -> AgentConfig:
    node_id, arn = node_from(args.node, os.environ.get("APPMESH_RESOURCE_ARN", ""))
    if not args.control_plane:
        raise ConfigError("--control-plane: required (HOST:PORT of the ADS port).")
    control_plane = host_port(args.control_plane, "--control-plane")
    join_address = host_port(args.join_address, "--join-address") if args.join_address else ""
    if args.insecure:
        if not (args.tenant or arn):
            raise ConfigError(
                "--tenant: --insecure takes the tenant from --tenant or APPMESH_RESOURCE_ARN."
            )
    elif not args.ca_file:
        raise ConfigError("--ca-file: required: the control plane's CA, to verify it with.")
    data_dir = private_dir(Path(args.data_dir))
    ecs = ecs_task_identity() if not (args.instance_id and args.address) else {}
    envoy = "" if args.no_envoy else find_envoy(args.envoy)
    if args.interception == "redirect" and not args.app_port:
        raise ConfigError(
            "--app-port: redirect mode needs the app's port(s) to send inbound traffic to Envoy."
        )
    return AgentConfig(
        node_id=node_id,
        control_plane=control_plane,
        data_dir=data_dir,
        interception=args.interception,
        join_address=join_address,
        ca_file=Path(args.ca_file) if args.ca_file else None,
        join_token_file=Path(args.join_token_file) if args.join_token_file else None,
        insecure=args.insecure,
        tenant=args.tenant,
        resource_arn=arn,
        app_ports=args.app_port,
        ingress_port=args.ingress_port,
        egress_port=args.egress_port,
        envoy_binary=envoy,
        admin_port=args.admin_port,
        status_host=args.status_host,
        status_port=args.status_port,
        instance_id=args.instance_id or ecs.get("instance_id") or stable_instance_id(data_dir),
        address=args.address or ecs.get("address") or local_address(control_plane),
        drain_seconds=args.drain_seconds,
        envoy_log_level=args.envoy_log_level,
        envoy_concurrency=args.envoy_concurrency,
        envoy_log_file=None
        if args.envoy_log_file == "-"
        else Path(args.envoy_log_file or data_dir / "envoy.log"),
        proxy_uid=args.proxy_uid,
        egress_ignored_ports=args.egress_ignored_ports,
        egress_ignored_ips=tuple(i for i in args.egress_ignored_ips.split(",") if i),
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s meshagent %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("grpc").setLevel(logging.WARNING)
    try:
        config = config_from(args)
    except ConfigError as exc:
        print(f"meshagent: {exc}", file=sys.stderr)
        return 2
    from proxy_agent.agent import Agent, AgentFailed

    try:
        asyncio.run(Agent(config, run_envoy=not args.no_envoy).run())
    except (AgentFailed, RedirectUnavailable) as exc:
        print(f"meshagent: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
