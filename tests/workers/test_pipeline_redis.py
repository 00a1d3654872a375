"""The pipeline end to end on real PostgreSQL and Redis: App Mesh writes through the live
API server, compiles in a Celery worker consuming the Redis broker, versions on the
native API and on Redis pub/sub; and a Redis outage at commit, caught up by the
reconciler when a worker starts."""

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.db import connection

from meshapi.demo import sample_mesh
from meshapi.models import Mesh
from tests.support.live import ROOT, LiveServer, free_port
from tests.workers import meshes
from workers import publish
from workers.celery import app

pytestmark = pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs REDIS_URL")


def wait_compiled(tenant, mesh_name: str, timeout: float = 20) -> Mesh:
    deadline = time.monotonic() + timeout
    while True:
        mesh = Mesh.objects.get(tenant=tenant, name=mesh_name)
        if mesh.compiled_revision == mesh.revision:
            return mesh
        assert time.monotonic() < deadline, (mesh.revision, mesh.compiled_revision)
        time.sleep(0.05)


def proxy_versions(persona, mesh_name: str) -> dict[str, str]:
    url = f"{persona.base_url}/api/v1/meshes/{mesh_name}/proxies/"
    body = requests.get(url, headers=persona.bearer, timeout=30).json()
    return {f"{p['kind']}/{p['name']}": p["version"] for p in body["results"]}


@pytest.fixture
def worker(transactional_db):
    """A Celery worker in a thread, consuming this run's queue on the real broker."""
    from celery.contrib.testing.worker import start_worker

    app.control.purge()  # compiles queued by earlier tests, for meshes long gone
    with start_worker(app, perform_ping_check=False, pool="solo", loglevel="WARNING"):
        yield


def test_boto3_update_route_compiles_in_the_worker_for_exactly_the_dependents(alice, worker):
    client = alice.appmesh()
    sample_mesh.apply(client)
    mesh = wait_compiled(alice.tenant, "shop")
    before = proxy_versions(alice, "shop")
    assert len(before) == 4 and all(before.values()), before

    with publish.subscribe() as subscription:
        client.update_route(
            meshName="shop",
            virtualRouterName=sample_mesh.ROUTER,
            routeName=sample_mesh.ROUTE,
            spec=meshes.split_spec(50, 50),
        )
        mesh = wait_compiled(alice.tenant, "shop")
        messages = []
        deadline = time.monotonic() + 10
        while not messages and time.monotonic() < deadline:
            message = subscription.get(timeout=0.2)
            if message and message["meshUid"] == str(mesh.uid):
                messages.append(message)
        while (message := subscription.get(timeout=0.3)) is not None:
            if message["meshUid"] == str(mesh.uid):
                messages.append(message)

    after = proxy_versions(alice, "shop")
    changed = {proxy for proxy in after if after[proxy] != before[proxy]}
    assert changed == {"virtualNode/frontend"}, (before, after)
    assert [(m["proxy"], m["version"], m["tenant"], m["revision"]) for m in messages] == [
        (
            "mesh/shop/virtualNode/frontend",
            after["virtualNode/frontend"],
            "111111111111",
            mesh.revision,
        )
    ]
    diff = requests.get(
        f"{alice.base_url}/api/v1/meshes/shop/proxies/virtualNode/frontend/config",
        params={"diff": before["virtualNode/frontend"]},
        headers=alice.bearer,
        timeout=30,
    ).json()["diff"]
    assert '+ "weight": 50' in [" ".join(line.split()) for line in diff.splitlines()], diff


class RedisServer:
    """A redis-server of our own on a free port (never the shared one), restartable."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [
            shutil.which("redis-server") or "redis-server",
            "--bind", "127.0.0.1", "--port", str(self.port),
            "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis.from_url(self.url, socket_connect_timeout=0.2) as client:
                    client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def _database_url() -> str:
    s = connection.settings_dict
    return (
        f"postgres://{s['USER'] or 'postgres'}@{s['HOST'] or '127.0.0.1'}:"
        f"{s['PORT'] or 5432}/{s['NAME']}"
    )


def test_redis_down_at_commit_the_write_stands_and_a_starting_worker_catches_up(alice, tmp_path):
    if not shutil.which("redis-server"):
        pytest.skip("needs redis-server")
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    env = {
        "DATABASE_URL": _database_url(),
        "REDIS_URL": redis_server.url,
        "MESHPLANE_DB_CONN_MAX_AGE": "0",
    }
    server = LiveServer(env, workers=1, threads=2)
    worker = None
    try:
        me = dataclasses.replace(alice, base_url=server.url)
        client = me.appmesh()
        sample_mesh.apply(client)  # compiles queued on our Redis, no worker yet

        redis_server.stop()
        # A broker outage must not stall writes: the caller's client gives up (no retry)
        # after its read timeout, so a write that hung on Redis would fail here.
        impatient = me.appmesh(read_timeout=30, connect_timeout=5)
        started = time.monotonic()
        impatient.update_route(
            meshName="shop",
            virtualRouterName=sample_mesh.ROUTER,
            routeName=sample_mesh.ROUTE,
            spec=meshes.split_spec(30, 70),
        )
        print(f"UpdateRoute with Redis down: {(time.monotonic() - started) * 1000:.0f} ms")
        mesh = Mesh.objects.get(tenant=alice.tenant, name="shop")
        assert mesh.compiled_revision < mesh.revision
        route = client.describe_route(
            meshName="shop", virtualRouterName=sample_mesh.ROUTER, routeName=sample_mesh.ROUTE
        )["route"]
        assert route["spec"]["httpRoute"]["action"]["weightedTargets"][0]["weight"] == 30

        redis_server.start()  # back, empty: every queued compile is lost
        log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - closed below
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers",
                "worker",
                "--pool",
                "solo",
                "--loglevel",
                "INFO",
            ],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            mesh = wait_compiled(alice.tenant, "shop", timeout=40)
        except AssertionError:
            log.flush()
            raise AssertionError((tmp_path / "worker.log").read_text()[-3000:]) from None
        assert mesh.compiled_revision == mesh.revision
        versions = proxy_versions(me, "shop")
        assert len(versions) == 4 and all(versions.values()), versions
        assert "compile.reconcile_meshes" in (tmp_path / "worker.log").read_text()
        assert "could not enqueue compile_mesh" in server.log_path.read_text()
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(20)
        server.stop()
        redis_server.stop()
