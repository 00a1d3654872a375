"""`meshctl import appmesh …` and `meshctl export-terraform …`.

Connection options follow the aws CLI (`--profile`, `--endpoint-url`, `--region`; a
profile's `services` section may carry the endpoint), since users come from it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from meshctl import apply, export, sources
from meshctl.model import TranslateError
from meshctl.sources import appmesh_api

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def make_client(profile: str | None, endpoint_url: str | None, region: str | None) -> Any:
    """An App Mesh client as the aws CLI would build it from the same options."""
    session = boto3.Session(profile_name=profile)
    return session.client(
        "appmesh",
        endpoint_url=endpoint_url,
        region_name=region or session.region_name or "us-east-1",
        config=Config(retries={"mode": "standard", "max_attempts": 3}),
    )


def _connection_options(parser: argparse.ArgumentParser, prefix: str = "", what: str = "") -> None:
    parser.add_argument(f"--{prefix}profile", help=f"aws profile{what} (credentials, region)")
    if not prefix:
        parser.add_argument("--endpoint-url", help="the App Mesh-compatible API to write to")
    parser.add_argument(f"--{prefix}region", help=f"region to sign requests for{what}")


def _parameters(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"meshctl: --var expects NAME=VALUE, got '{pair}'")
        out[key] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshctl", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    importer = commands.add_parser("import", help="bring definitions into Meshplane")
    what = importer.add_subparsers(dest="source_type", required=True)
    appmesh = what.add_parser(
        "appmesh",
        help="App Mesh definitions: Terraform state or .tf, CloudFormation, Kubernetes "
        "manifests, describe-* dumps, or a live App Mesh API",
    )
    source = appmesh.add_mutually_exclusive_group(required=True)
    source.add_argument("--from", dest="source_path", type=Path, help="file or directory")
    source.add_argument("--from-endpoint", help="an App Mesh API to copy from")
    _connection_options(appmesh, "source-", " (of --from-endpoint)")
    _connection_options(appmesh)
    appmesh.add_argument("--mesh", help="import only this mesh (and default mesh for manifests)")
    appmesh.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    appmesh.add_argument(
        "--var", action="append", default=[], metavar="NAME=VALUE",
        help="a Terraform variable or CloudFormation parameter value (repeatable)",
    )  # fmt: skip

    exporter = commands.add_parser("export-terraform", help="write HCL for a mesh to stdout")
    exporter.add_argument("--mesh", required=True)
    exporter.add_argument("--provider", choices=sorted(export.PREFIXES), default="meshplane")
    exporter.add_argument("--output", "-o", type=Path, help="write here instead of stdout")
    exporter.add_argument(
        "--import-blocks",
        action="store_true",
        help="precede each resource with an `import` block (Terraform >= 1.5), so the first "
        "plan adopts the existing objects",
    )
    _connection_options(exporter)
    return parser


def _import(args: argparse.Namespace) -> int:
    if args.source_path is not None:
        fmt, resources = sources.load(args.source_path, _parameters(args.var), args.mesh)
        origin = str(args.source_path)
    else:
        source_client = make_client(args.source_profile, args.from_endpoint, args.source_region)
        fmt, origin = "endpoint", args.from_endpoint
        resources = appmesh_api.from_endpoint(source_client, origin, args.mesh)
    if args.mesh is not None:
        resources = [r for r in resources if r.mesh == args.mesh]
        if not resources:
            raise TranslateError(f"{origin}: nothing in mesh '{args.mesh}'.")
    if not resources:
        raise TranslateError(f"{origin}: no App Mesh resources found.")
    print(f"Read {len(resources)} App Mesh resources from {origin} ({fmt}).")
    client = make_client(args.profile, args.endpoint_url, args.region)
    apply.run(client, resources, args.dry_run, sys.stdout)
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    client = make_client(args.profile, args.endpoint_url, args.region)
    resources = appmesh_api.from_endpoint(client, f"mesh {args.mesh}", args.mesh)
    text = export.to_terraform(resources, args.provider, f"mesh '{args.mesh}'", args.import_blocks)
    if args.output is not None:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "import":
            return _import(args)
        return _export(args)
    except (TranslateError, apply.ApplyError) as exc:
        print(f"meshctl: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ClientError as exc:
        print(f"meshctl: error: the API refused a request: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except BotoCoreError as exc:
        print(f"meshctl: error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
