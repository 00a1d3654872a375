"""`manage.py demo --scene` (`make demo`): the whole mesh on one machine, shown with traffic.

Control plane in this process (API on a thread, compiler as in-process tasks, xDS server
on its own event loop: see control_plane.py) → demo tenant and key → the scene's mesh
through boto3 → mTLS STRICT through the native API → frontend, catalog-v1, catalog-v2
(tiny HTTP apps) and an intruder, each with meshagent + Envoy (explicit mode, declaring its
own ports; each registers itself as its node's endpoint) → the canary split over 1,000
requests, the header route, the mTLS peer, a denied call, the shift to 50/50 through
UpdateRoute under load and the new split → the aws CLI profile and commands → serve until
Ctrl-C, then stop every child process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.management.base import CommandError

from meshapi.demo import sample_mesh, scene
from meshapi.demo.aws_profile import write_profile
from meshapi.demo.control_plane import ApiThread, XdsThread
from meshapi.demo.server import PortInUse, ServerFailed

LOAD = 1000
HEADER_REQUESTS = 20


class SceneRunner:
    def __init__(self, command: Any, host: str, port: int, demo_dir: Path) -> None:
        self.command = command
        self.say = command.say
        self.demo_dir = demo_dir
        self.api = ApiThread(host, port, demo_dir / "server.log")
        self.xds = XdsThread()
        self.scene: scene.Scene | None = None

    def run(self) -> None:
        if settings.REDIS_URL:
            raise CommandError(
                "--scene runs the compiler and the xDS server in this process (embedded "
                "mode): unset REDIS_URL, or run serve_xds and a worker instead."
            )
        envoy = scene.find_envoy()
        if envoy is None:
            raise CommandError(
                "no Envoy binary: run `make envoy` (or set MESHPLANE_ENVOY_BIN), then again."
            )
        key = self.command.setup_tenant(self.demo_dir)
        tenant = key.tenant
        try:
            self.api.start()
        except PortInUse as exc:
            raise CommandError(f"the API cannot listen on {self.api.url}: {exc}") from exc
        url = self.api.url
        the_scene = self.scene = scene.Scene(self.demo_dir / "scene", self.say)

        client = boto3.client(
            "appmesh",
            endpoint_url=url,
            region_name=tenant.default_region,
            aws_access_key_id=key.key_id,
            aws_secret_access_key=key.secret,
            config=Config(retries={"max_attempts": 2}),
        )
        try:
            applied = sample_mesh.apply(client, scene.resources())
        except (ClientError, BotoCoreError) as exc:
            raise CommandError(
                f"applying the mesh failed: {exc}. Server log {self.api.log_path}"
            ) from exc
        self.say(f"Sample mesh '{sample_mesh.MESH}' applied through boto3: {applied.summary()}")
        native = scene.NativeApi(url, key.key_id, key.secret)
        try:
            the_scene.prepare_mesh(native)
            self._compile_all(tenant)
            self.say("Mesh 'shop': automatic mTLS STRICT (PUT /api/v1/meshes/shop/mtls)")
            try:
                self.xds.start()
            except ServerFailed as exc:
                raise CommandError(str(exc)) from exc
            self.say(
                f"Control plane in this process: API {url}, compiler in-process, "
                f"xDS ADS {self.xds.ads} (mTLS), Join {self.xds.join}"
            )
            the_scene.start(native, self.xds.ads, self.xds.join, envoy)
            self.say(
                "Starting frontend, catalog-v1, catalog-v2 and intruder with meshagent + Envoy …"
            )
            the_scene.wait_ready()
            the_scene.describe()
            for name in ("catalog-v1", "catalog-v2"):
                for row in the_scene.endpoints(native, name):
                    self.say(
                        f"  {name} endpoint ({row['source']} by its agent): listener "
                        f"{row['port']} at {row['address']}:{row['targetPort']}"
                    )
            self._story(client, the_scene)
        except scene.SceneError as exc:
            raise CommandError(f"the scene failed: {exc}") from exc

        files = write_profile(
            self.demo_dir / "aws", key.key_id, key.secret, tenant.default_region, url
        )
        self.command.print_usage(url, key, files)
        frontend = the_scene.apps["frontend"].port
        self.say(
            f"Try the mesh: curl -s http://127.0.0.1:{frontend}/   "
            f"(and -H '{scene.CANARY_HEADER}: v2'); agents' logs in "
            f"{self.demo_dir / 'scene'}/"
        )
        self.say(self.command_ready(url))
        while True:
            try:
                the_scene.check_alive()
            except scene.SceneError as exc:
                raise CommandError(str(exc)) from exc
            if not self.api.alive() or not self.xds.alive():
                raise CommandError(f"the control plane stopped; server log {self.api.log_path}")
            self.xds.wait(1.0)

    def command_ready(self, url: str) -> str:
        from meshapi.management.commands.demo import READY

        return READY.format(url=url) + " (Ctrl-C to stop)"

    def _compile_all(self, tenant) -> None:
        """Compile every stored variant now (mTLS on), before any agent connects."""
        from meshapi.models import Mesh
        from workers.pipeline import run_compile

        mesh = Mesh.objects.get(tenant=tenant, name=sample_mesh.MESH)
        run_compile(mesh.id, full=True)

    def _story(self, client, the_scene: scene.Scene) -> None:
        say = self.say
        say("")
        tally = the_scene.measure(LOAD)
        say(f"Canary 90/10, frontend → {scene.SERVICE}: {tally.line()}")
        header = the_scene.measure(HEADER_REQUESTS, headers={scene.CANARY_HEADER: "v2"})
        say(f"Header route ({scene.CANARY_HEADER}: v2 → catalog-v2): {header.line()}")
        peer, xfcc = the_scene.mtls_peer()
        say(f"mTLS: catalog-v1's Envoy verified the caller's certificate: {peer}")
        if xfcc:
            say(f"      and catalog-v1's app got x-forwarded-client-cert: {xfcc}")
        intruder = the_scene.agents["intruder"].status().get("identity", {}).get("spiffeId")
        code, body = the_scene.denied_call()
        say(
            f"Denied: intruder ({intruder or 'its mesh certificate'}) → catalog-v1: HTTP {code} "
            f"{body!r} (not an allowed caller: no backend names catalog.shop.local)"
        )
        weights = {"catalog-v1": 50, "catalog-v2": 50}

        def update_route() -> None:
            client.update_route(
                meshName=sample_mesh.MESH,
                virtualRouterName=sample_mesh.ROUTER,
                routeName=sample_mesh.ROUTE,
                spec=scene.split_route_spec(weights),
            )

        during = the_scene.shift(update_route)
        say(
            f"Canary shift to 50/50 through boto3 UpdateRoute, under load: "
            f"{during.total} requests during the change; failed {during.failed}"
        )
        if during.errors:
            say(f"      failures: {dict(during.errors)}")
        after = the_scene.measure(LOAD)
        say(f"Canary 50/50, frontend → {scene.SERVICE}: {after.line()}")
        say("")

    def stop(self) -> None:
        if self.scene is not None:
            self.scene.stop()
        self.xds.stop()
        self.api.stop()
