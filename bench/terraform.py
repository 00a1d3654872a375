"""Terraform with the Meshplane provider: plan and apply of a 50-resource mesh, provider start.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/meshplane REDIS_URL=redis://127.0.0.1:6379/15 \
        .venv/bin/python bench/terraform.py [--rounds 2]

On a database of its own (created, migrated and dropped here) and one gunicorn server
(2 workers), it times with a real Terraform CLI (the newest found: `terraform` on PATH, else
the 1.0.3 wheel in .tools/tfprovider) and prints ratios against baselines measured in the
same run:

* provider start: from exec to the go-plugin handshake line (AutoMTLS on), against starting
  the provider venv's bare Python (`python -c pass`);
* plan (nothing exists yet) and apply of 50 resources (1 mesh, 12 virtual nodes, 12 virtual
  services, 6 routers, 6 routes, 1 gateway, 12 gateway routes), and a refresh-only plan of
  them, against creating / describing the same 50 resources with boto3 directly, one after
  another (what Terraform adds on top of the API calls it makes);
* destroy of the 50.

A benchmark reports; it asserts nothing. Method and recorded numbers: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import boto3
import psycopg
import redis
from botocore.config import Config
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.live import free_port  # noqa: E402
from tests.terraform.support import PROVIDER_BIN, PROVIDER_VENV, terraform_binaries  # noqa: E402

NODES, ROUTERS, GATEWAY_ROUTES = 12, 6, 12
TIMEOUT = 600
COOKIE = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2"


def mesh_hcl(mesh: str) -> str:
    """50 resources: 1 + 12 nodes + 12 services + 6 routers + 6 routes + 1 gateway + 12 g-routes."""
    parts = [
        'terraform {\n  required_providers {\n    meshplane = { source = "meshplane/meshplane" }'
        '\n  }\n}\nprovider "meshplane" {}\n',
        f'resource "meshplane_mesh" "m" {{\n  name = "{mesh}"\n}}\n',
    ]
    for i in range(NODES):
        parts.append(
            f'resource "meshplane_virtual_node" "n{i}" {{\n'
            f'  name = "node-{i}"\n  mesh_name = meshplane_mesh.m.name\n'
            "  spec {\n    listener {\n      port_mapping {\n        port = 8080\n"
            '        protocol = "http"\n      }\n      health_check {\n'
            '        protocol = "http"\n        path = "/healthz"\n'
            "        healthy_threshold = 2\n        unhealthy_threshold = 3\n"
            "        timeout_millis = 2000\n        interval_millis = 5000\n      }\n    }\n"
            f'    service_discovery {{\n      dns {{\n        hostname = "node-{i}.local"\n'
            "      }\n    }\n  }\n}\n"
        )
        parts.append(
            f'resource "meshplane_virtual_service" "s{i}" {{\n'
            f'  name = "svc-{i}.local"\n  mesh_name = meshplane_mesh.m.name\n'
            "  spec {\n    provider {\n      virtual_node {\n"
            f"        virtual_node_name = meshplane_virtual_node.n{i}.name\n"
            "      }\n    }\n  }\n}\n"
        )
    for i in range(ROUTERS):
        parts.append(
            f'resource "meshplane_virtual_router" "r{i}" {{\n'
            f'  name = "router-{i}"\n  mesh_name = meshplane_mesh.m.name\n'
            "  spec {\n    listener {\n      port_mapping {\n        port = 8080\n"
            '        protocol = "http"\n      }\n    }\n  }\n}\n'
        )
        a, b = (2 * i) % NODES, (2 * i + 1) % NODES
        parts.append(
            f'resource "meshplane_route" "r{i}" {{\n'
            f'  name = "route-{i}"\n  mesh_name = meshplane_mesh.m.name\n'
            f"  virtual_router_name = meshplane_virtual_router.r{i}.name\n"
            '  spec {\n    http_route {\n      match {\n        prefix = "/"\n      }\n'
            "      action {\n"
            f"        weighted_target {{\n          virtual_node = meshplane_virtual_node.n{a}.name"
            "\n          weight = 90\n        }\n"
            f"        weighted_target {{\n          virtual_node = meshplane_virtual_node.n{b}.name"
            "\n          weight = 10\n        }\n      }\n"
            "      retry_policy {\n        max_retries = 2\n"
            '        http_retry_events = ["server-error"]\n'
            '        per_retry_timeout {\n          unit = "ms"\n          value = 2000\n'
            "        }\n      }\n    }\n  }\n}\n"
        )
    parts.append(
        'resource "meshplane_virtual_gateway" "g" {\n  name = "ingress"\n'
        "  mesh_name = meshplane_mesh.m.name\n  spec {\n    listener {\n"
        '      port_mapping {\n        port = 8443\n        protocol = "http"\n      }\n'
        "    }\n  }\n}\n"
    )
    for i in range(GATEWAY_ROUTES):
        parts.append(
            f'resource "meshplane_gateway_route" "g{i}" {{\n  name = "groute-{i}"\n'
            "  mesh_name = meshplane_mesh.m.name\n"
            "  virtual_gateway_name = meshplane_virtual_gateway.g.name\n"
            f'  spec {{\n    http_route {{\n      match {{\n        prefix = "/svc-{i}/"\n'
            "      }\n      action {\n        target {\n          virtual_service {\n"
            f"            virtual_service_name = meshplane_virtual_service.s{i}.name\n"
            "          }\n        }\n      }\n    }\n  }\n}\n"
        )
    return "".join(parts)


def boto3_create(client, mesh: str) -> float:
    """The same 50 resources through boto3, one call after another; seconds."""
    http = {"portMapping": {"port": 8080, "protocol": "http"}}
    health = {
        "protocol": "http",
        "path": "/healthz",
        "healthyThreshold": 2,
        "unhealthyThreshold": 3,
        "timeoutMillis": 2000,
        "intervalMillis": 5000,
    }
    start = time.perf_counter()
    client.create_mesh(meshName=mesh)
    for i in range(NODES):
        client.create_virtual_node(
            meshName=mesh,
            virtualNodeName=f"node-{i}",
            spec={
                "listeners": [{**http, "healthCheck": health}],
                "serviceDiscovery": {"dns": {"hostname": f"node-{i}.local"}},
            },
        )
        client.create_virtual_service(
            meshName=mesh,
            virtualServiceName=f"svc-{i}.local",
            spec={"provider": {"virtualNode": {"virtualNodeName": f"node-{i}"}}},
        )
    for i in range(ROUTERS):
        client.create_virtual_router(
            meshName=mesh, virtualRouterName=f"router-{i}", spec={"listeners": [http]}
        )
        a, b = (2 * i) % NODES, (2 * i + 1) % NODES
        client.create_route(
            meshName=mesh,
            virtualRouterName=f"router-{i}",
            routeName=f"route-{i}",
            spec={
                "httpRoute": {
                    "match": {"prefix": "/"},
                    "action": {
                        "weightedTargets": [
                            {"virtualNode": f"node-{a}", "weight": 90},
                            {"virtualNode": f"node-{b}", "weight": 10},
                        ]
                    },
                    "retryPolicy": {
                        "maxRetries": 2,
                        "httpRetryEvents": ["server-error"],
                        "perRetryTimeout": {"unit": "ms", "value": 2000},
                    },
                }
            },
        )
    client.create_virtual_gateway(
        meshName=mesh,
        virtualGatewayName="ingress",
        spec={"listeners": [{"portMapping": {"port": 8443, "protocol": "http"}}]},
    )
    for i in range(GATEWAY_ROUTES):
        client.create_gateway_route(
            meshName=mesh,
            virtualGatewayName="ingress",
            gatewayRouteName=f"groute-{i}",
            spec={
                "httpRoute": {
                    "match": {"prefix": f"/svc-{i}/"},
                    "action": {
                        "target": {"virtualService": {"virtualServiceName": f"svc-{i}.local"}}
                    },
                }
            },
        )
    return time.perf_counter() - start


def boto3_describe(client, mesh: str) -> float:
    """Describe + list tags of the 50, one call after another (what a refresh does); seconds."""
    calls = [("describe_mesh", {"meshName": mesh}, "mesh")]
    for i in range(NODES):
        calls.append(("describe_virtual_node", {"virtualNodeName": f"node-{i}"}, "virtualNode"))
        calls.append(
            ("describe_virtual_service", {"virtualServiceName": f"svc-{i}.local"}, "virtualService")
        )
    for i in range(ROUTERS):
        calls.append(
            ("describe_virtual_router", {"virtualRouterName": f"router-{i}"}, "virtualRouter")
        )
        calls.append(
            (
                "describe_route",
                {"virtualRouterName": f"router-{i}", "routeName": f"route-{i}"},
                "route",
            )
        )
    calls.append(("describe_virtual_gateway", {"virtualGatewayName": "ingress"}, "virtualGateway"))
    for i in range(GATEWAY_ROUTES):
        params = {"virtualGatewayName": "ingress", "gatewayRouteName": f"groute-{i}"}
        calls.append(("describe_gateway_route", params, "gatewayRoute"))
    start = time.perf_counter()
    for op, params, key in calls:
        if op != "describe_mesh":
            params = {"meshName": mesh, **params}
        arn = getattr(client, op)(**params)[key]["metadata"]["arn"]
        client.list_tags_for_resource(resourceArn=arn)
    return time.perf_counter() - start


class Env:
    """A database, a migrated schema, a tenant with a key, and a gunicorn server on it."""

    def __init__(self, base_url: str, redis_url: str, workdir: Path) -> None:
        parts = urlsplit(base_url)
        self.name = f"meshplane_bench_tf_{os.getpid()}"
        self.admin = urlunsplit(parts._replace(path="/postgres"))
        self.url = urlunsplit(parts._replace(path="/" + self.name))
        self.redis_url = redis_url
        self.queue = f"meshplane-bench-tf-{os.getpid()}"
        self._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        env = {
            **os.environ,
            "DATABASE_URL": self.url,
            "REDIS_URL": redis_url,
            "MESHPLANE_TASK_QUEUE": self.queue,
            "DJANGO_SETTINGS_MODULE": "meshapi.settings",
        }
        py = sys.executable
        subprocess.run(
            [py, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
        )
        seed = (
            "import django, json; django.setup()\n"
            "from tenants.services import create_tenant\n"
            "t, k = create_tenant('Bench TF', 'tf@example.com', slug='benchtf')\n"
            "print(json.dumps([k.key.key_id, k.secret]))\n"
        )
        out = subprocess.run([py, "-c", seed], cwd=ROOT, env=env, check=True, capture_output=True)
        self.key_id, self.secret = json.loads(out.stdout)
        self.port = free_port()
        self.log = open(workdir / "server.log", "wb")  # noqa: SIM115 - closed in close()
        self.server = subprocess.Popen(
            [py, "-m", "gunicorn", "meshapi.wsgi", "-b", f"127.0.0.1:{self.port}", "-w", "2",
             "--timeout", "60", "--graceful-timeout", "2", "--no-control-socket"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.client = boto3.client(
            "appmesh",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
            config=Config(retries={"total_max_attempts": 1}),
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client.list_meshes()
                break
            except Exception:
                if time.monotonic() > deadline or self.server.poll() is not None:
                    raise
                time.sleep(0.2)

    def _admin(self, statement) -> None:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(statement)

    def close(self) -> None:
        self.server.terminate()
        try:
            self.server.wait(10)
        except subprocess.TimeoutExpired:
            self.server.kill()
        self.log.close()
        self._admin(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
        )
        if self.redis_url:
            redis.Redis.from_url(self.redis_url).delete(
                self.queue, f"_kombu.binding.{self.queue}", f"_kombu.binding_permanent.{self.queue}"
            )


def provider_start(cert_pem: str) -> float:
    """Exec to handshake line, AutoMTLS on; seconds."""
    env = {
        **os.environ,
        "TF_PLUGIN_MAGIC_COOKIE": COOKIE,
        "PLUGIN_PROTOCOL_VERSIONS": "6",
        "PLUGIN_CLIENT_CERT": cert_pem,
    }
    start = time.perf_counter()
    proc = subprocess.Popen([PROVIDER_BIN], env=env, stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()
    took = time.perf_counter() - start
    proc.kill()
    proc.wait()
    return took


def bare_python() -> float:
    start = time.perf_counter()
    subprocess.run([PROVIDER_VENV / "bin" / "python", "-c", "pass"], check=True)
    return time.perf_counter() - start


def client_cert() -> str:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP521R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def terraform(binary: str, workdir: Path, env: dict, *args: str) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [binary, *args, "-no-color"], cwd=workdir, env=env, capture_output=True, text=True,
        timeout=TIMEOUT, start_new_session=True,
    )  # fmt: skip
    took = time.perf_counter() - start
    if done.returncode not in (0, 2):
        raise SystemExit(f"terraform {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="apply/destroy rounds (default 2)")
    args = parser.parse_args(argv)
    if not PROVIDER_BIN.exists():
        raise SystemExit("the provider is not installed: run `make tfprovider`")
    label, binary = terraform_binaries()[-1]
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/meshplane")
    work = Path(tempfile.mkdtemp(prefix="meshplane-bench-tf-"))
    env_ = Env(base, os.environ.get("REDIS_URL", ""), work)
    try:
        (work / "rc").write_text(
            "provider_installation {\n  dev_overrides {\n"
            f'    "registry.terraform.io/meshplane/meshplane" = "{PROVIDER_BIN.parent}"\n'
            "  }\n  direct {}\n}\n"
        )
        tf_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TF_"))}
        tf_env.update(
            TF_CLI_CONFIG_FILE=str(work / "rc"), CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1",
            MESHPLANE_ENDPOINT=env_.endpoint, MESHPLANE_ACCESS_KEY_ID=env_.key_id,
            MESHPLANE_SECRET_ACCESS_KEY=env_.secret, HOME=str(work),
        )  # fmt: skip
        cert = client_cert()
        starts = [provider_start(cert) for _ in range(5)]
        pythons = [bare_python() for _ in range(5)]
        tfdir = work / "tf"
        tfdir.mkdir()
        (tfdir / "main.tf").write_text(mesh_hcl("bench"))
        rows = []
        for _ in range(args.rounds):
            plan = terraform(binary, tfdir, tf_env, "plan", "-input=false")
            apply = terraform(binary, tfdir, tf_env, "apply", "-input=false", "-auto-approve")
            refresh = terraform(binary, tfdir, tf_env, "plan", "-input=false", "-detailed-exitcode")
            destroy = terraform(binary, tfdir, tf_env, "destroy", "-input=false", "-auto-approve")
            direct = boto3_create(env_.client, "direct")
            describe = boto3_describe(env_.client, "direct")
            _delete_all(env_.client, "direct")
            rows.append((plan, apply, refresh, destroy, direct, describe))
        med = [statistics.median(col) for col in zip(*rows, strict=True)]
        plan, apply, refresh, destroy, direct, describe = med
        start, python = statistics.median(starts), statistics.median(pythons)
        print(f"terraform: {label} ({binary}); rounds: {args.rounds}; 50 resources; medians")
        print(f"provider start (exec -> handshake, mTLS)  {start * 1000:7.0f} ms   "
              f"{start / python:5.1f}x bare python ({python * 1000:.0f} ms)")  # fmt: skip
        print(f"plan, nothing exists                      {plan:7.2f} s")
        print(f"apply (create 50)                         {apply:7.2f} s   "
              f"{apply / direct:5.1f}x boto3 creating them in turn ({direct:.2f} s)")  # fmt: skip
        print(f"plan, 50 to refresh, no changes           {refresh:7.2f} s   "
              f"{refresh / describe:5.1f}x boto3 describe+tags ({describe:.2f} s)")  # fmt: skip
        print(f"destroy 50                                {destroy:7.2f} s")
    finally:
        env_.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _delete_all(client, mesh: str) -> None:
    for i in range(GATEWAY_ROUTES):
        client.delete_gateway_route(
            meshName=mesh, virtualGatewayName="ingress", gatewayRouteName=f"groute-{i}"
        )
    client.delete_virtual_gateway(meshName=mesh, virtualGatewayName="ingress")
    for i in range(ROUTERS):
        client.delete_route(meshName=mesh, virtualRouterName=f"router-{i}", routeName=f"route-{i}")
    for i in range(NODES):
        client.delete_virtual_service(meshName=mesh, virtualServiceName=f"svc-{i}.local")
    for i in range(ROUTERS):
        client.delete_virtual_router(meshName=mesh, virtualRouterName=f"router-{i}")
    for i in range(NODES):
        client.delete_virtual_node(meshName=mesh, virtualNodeName=f"node-{i}")
    client.delete_mesh(meshName=mesh)


if __name__ == "__main__":
    sys.exit(main())
