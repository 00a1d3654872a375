"""`manage.py demo`: run Meshplane on embedded defaults with a demo tenant and sample mesh.

migrate → demo tenant + key (reused across runs) → API server → sample mesh through boto3
→ aws CLI profile → print how to use it → serve until Ctrl-C / SIGTERM.

`--scene` (what `make demo` runs) runs the whole mesh instead: the control plane in this
process (API thread + compiler + xDS server), three services each with meshagent + Envoy,
the canary, mTLS and authorization shown with real traffic (meshapi/demo/scene.py).
"""

import shlex
import shutil
import signal
import sys
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from meshapi.demo import sample_mesh
from meshapi.demo.aws_profile import PROFILE, write_profile
from meshapi.demo.server import DemoServer, PortInUse, ServerFailed, check_port_free
from meshapi.demo.tenant import ADMIN_EMAIL, ensure_demo_key

READY = "Meshplane demo ready at {url}"


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def _display_path(path: Path) -> str:
    """A path relative to the working directory when it is inside it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _aws_executable() -> str:
    if shutil.which("aws"):
        return "aws"
    beside_python = Path(sys.executable).parent / "aws"
    return _display_path(beside_python) if beside_python.exists() else "aws"


def _database_label() -> str:
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"SQLite {_display_path(Path(db['NAME']))}"
    return f"{db['ENGINE'].rsplit('.', 1)[-1]} (DATABASE_URL) {db.get('HOST', '')}/{db['NAME']}"


class Command(BaseCommand):
    help = (
        "Run the embedded demo: migrate, create the 'demo' tenant and key, start the API, "
        "apply the sample mesh 'shop' through boto3, print an aws CLI profile, serve until Ctrl-C."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000, help="API port (default 8000)")
        parser.add_argument(
            "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)"
        )
        parser.add_argument(
            "--scene",
            action="store_true",
            help="run the whole scene: control plane, three services with meshagent + Envoy, "
            "canary, mTLS and a denied caller (what `make demo` runs)",
        )

    def say(self, line: str = "") -> None:
        self.stdout.write(line)
        self.stdout.flush()

    def handle(self, *args, **opts):
        host, port = opts["host"], opts["port"]
        try:
            check_port_free(host, port)
        except PortInUse as exc:
            raise CommandError(
                f"port {port} on {host} is already in use ({exc}); stop what listens there "
                f"or pick another port: manage.py demo --port {port + 1}"
            ) from exc
        except OSError as exc:
            raise CommandError(f"--host {host} --port {port}: cannot listen there ({exc})") from exc

        var_dir = Path(settings.VAR_DIR).resolve()
        demo_dir = var_dir / "demo"
        demo_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Also SIGINT: a shell starting us in the background may have set it to "ignore".
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _raise_keyboard_interrupt)
        if opts["scene"]:
            self._scene(host, port, demo_dir)
            self.say("Meshplane demo stopped.")
            return
        server = DemoServer(host, port, demo_dir / "server.log")
        try:
            self._run(server, demo_dir)
        except KeyboardInterrupt:
            self.say("\nStopping the API server …")
        finally:
            server.stop()
        self.say("Meshplane demo stopped.")

    def _scene(self, host: str, port: int, demo_dir: Path) -> None:
        from meshapi.demo.scene_runner import SceneRunner

        runner = SceneRunner(self, host, port, demo_dir)
        try:
            runner.run()
        except KeyboardInterrupt:
            self.say("\nStopping the scene: agents and Envoys, services, xDS server, API …")
        finally:
            runner.stop()

    def setup_tenant(self, demo_dir: Path):
        """Migrate and make (or reuse) the demo tenant and its key."""
        tasks = "Redis (REDIS_URL)" if settings.REDIS_URL else "in-process"
        self.say(f"Database: {_database_label()}; tasks: {tasks}")
        call_command("migrate", interactive=False, verbosity=0)

        key = ensure_demo_key(demo_dir / "access-key.json")
        tenant = key.tenant
        self.say(
            f"Tenant '{tenant.slug}' (account {tenant.account_id}, region "
            f"{tenant.default_region}), admin {ADMIN_EMAIL}; access key {key.key_id} ({key.status})"
        )
        return key

    def _run(self, server: DemoServer, demo_dir: Path) -> None:
        key = self.setup_tenant(demo_dir)
        tenant = key.tenant

        server.start()
        try:
            server.wait_ready()
        except ServerFailed as exc:
            raise CommandError(
                f"{exc}. Server log {server.log_path}:\n{server.log_tail()}"
            ) from exc
        url = server.url

        client = boto3.client(
            "appmesh",
            endpoint_url=url,
            region_name=tenant.default_region,
            aws_access_key_id=key.key_id,
            aws_secret_access_key=key.secret,
            config=Config(retries={"max_attempts": 2}),
        )
        try:
            applied = sample_mesh.apply(client)
        except (ClientError, BotoCoreError) as exc:
            raise CommandError(
                f"applying the sample mesh failed: {exc}. Server log {server.log_path}:\n"
                f"{server.log_tail()}"
            ) from exc
        self.say(f"Sample mesh '{sample_mesh.MESH}' applied through boto3: {applied.summary()}")

        files = write_profile(demo_dir / "aws", key.key_id, key.secret, tenant.default_region, url)
        self.print_usage(url, key, files)
        self.say(READY.format(url=url) + " (Ctrl-C to stop)")

        while True:
            code = server.wait(1.0)
            if code is not None:
                raise CommandError(
                    f"the API server exited unexpectedly (code {code}). "
                    f"Server log {server.log_path}:\n{server.log_tail()}"
                )

    def print_usage(self, url, key, files) -> None:
        aws = _aws_executable()
        common = f"--endpoint-url {url} --profile {PROFILE}"
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in files.env().items())
        route = (
            f"--mesh-name {sample_mesh.MESH} --virtual-router-name {sample_mesh.ROUTER} "
            f"--route-name {sample_mesh.ROUTE}"
        )
        boto3_line = (
            f"import boto3; c = boto3.Session(profile_name='{PROFILE}').client('appmesh', "
            f"endpoint_url='{url}'); print([m['meshName'] for m in c.list_meshes()['meshes']])"
        )
        self.say(
            "\n".join(
                [
                    "",
                    f"Endpoint:          {url}",
                    f"Access key id:     {key.key_id}",
                    f"Secret access key: {key.secret}",
                    f"aws CLI profile '{PROFILE}' (region {key.tenant.default_region}) is in "
                    f"{_display_path(files.config.parent)}/; use it with:",
                    "",
                    f"  export {exports}",
                    "",
                    "Then try:",
                    "",
                    f"  {aws} appmesh list-meshes {common}",
                    f"  {aws} appmesh list-virtual-nodes --mesh-name {sample_mesh.MESH} {common}",
                    f"  {aws} appmesh describe-route {route} {common}",
                    "",
                    "or boto3:",
                    "",
                    f'  {_display_path(Path(sys.executable))} -c "{boto3_line}"',
                    "",
                    f"Server log: {_display_path(files.config.parent.parent / 'server.log')}",
                    "",
                ]
            )
        )
