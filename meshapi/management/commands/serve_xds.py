"""`manage.py serve_xds`: the xDS management server (ADS, state of the world and delta),
and the Identity service agents join through. See docs/xds.md."""

import asyncio
import faulthandler
import ipaddress
import logging
import signal

import grpc
from django.core.management.base import BaseCommand, CommandError

log = logging.getLogger("workers.xds")

INSECURE_BANNER = (
    "!!! serve_xds --insecure: NO TLS, NO CLIENT AUTHENTICATION. Any local process can "
    "claim any proxy of any tenant by what it writes in node.metadata. For local "
    "development only; loopback only. !!!"
)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _handlers(handlers) -> tuple:
    """identity_handlers may give one generic handler or several."""
    if isinstance(handlers, grpc.GenericRpcHandler):
        return (handlers,)
    return tuple(handlers)


class Command(BaseCommand):
    help = "Serve ADS (xDS SotW + delta) to proxies, and the Identity service for joining."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="0.0.0.0", help="Address to listen on.")
        parser.add_argument(
            "--port", type=int, default=15010, help="ADS port (mTLS; 0 picks a free port)."
        )
        parser.add_argument(
            "--join-port",
            type=int,
            default=None,
            help="Identity Join port (server TLS only: the caller has no certificate yet).",
        )
        parser.add_argument(
            "--insecure",
            action="store_true",
            help="Plaintext ADS on loopback, tenant from node.metadata: local development only.",
        )
        parser.add_argument(
            "--tls-host",
            action="append",
            default=None,
            help="A name the control plane's certificate is for (repeatable).",
        )
        parser.add_argument("--replica", default=None, help="This replica's name (status).")
        parser.add_argument(
            "--grace",
            type=float,
            default=30.0,
            help="Seconds after a stream closes before its endpoints are deregistered.",
        )
        parser.add_argument(
            "--poll", type=float, default=30.0, help="Fallback poll of stored versions (s)."
        )

    def handle(self, *args, **options):
        # `kill -USR1 <pid>` writes every thread's stack to stderr: what a stuck replica does.
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        if options["insecure"]:
            if options["host"] == "0.0.0.0":
                options["host"] = "127.0.0.1"
            if not _is_loopback(options["host"]):
                raise CommandError(
                    f"--host: --insecure serves only loopback, not {options['host']}."
                )
            if options["join_port"] is not None:
                raise CommandError("--join-port: Join needs TLS; it is not served with --insecure.")
        try:
            asyncio.run(self._serve(options))
        except KeyboardInterrupt:
            pass

    async def _serve(self, options) -> None:
        from workers.xds.server import XdsServer

        xds = XdsServer(
            insecure=options["insecure"],
            replica=options["replica"],
            grace_seconds=options["grace"],
            poll_seconds=options["poll"],
        )
        host = options["host"]
        hosts = options["tls_host"] or ["localhost", "127.0.0.1"]
        servers: list[grpc.aio.Server] = []
        ads = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        ads.add_generic_rpc_handlers((xds.handler(),))
        if options["insecure"]:
            log.warning(INSECURE_BANNER)
            self.stderr.write(INSECURE_BANNER)
            port = ads.add_insecure_port(f"{host}:{options['port']}")
        else:
            from tenants.identity.grpc_service import identity_handlers
            from workers.xds.auth import DynamicRoots

            roots = DynamicRoots(hosts)
            creds = await asyncio.to_thread(roots.credentials)
            ads.add_generic_rpc_handlers(
                _handlers(identity_handlers(allow_join=False, allow_renew=True))
            )
            port = ads.add_secure_port(f"{host}:{options['port']}", creds)
        if not port:
            raise CommandError(f"--port: cannot listen on {host}:{options['port']}.")
        servers.append(ads)
        join_port = None
        if options["join_port"] is not None:
            from tenants.identity.grpc_service import identity_handlers
            from workers.xds.auth import join_credentials

            join = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            join.add_generic_rpc_handlers(
                _handlers(identity_handlers(allow_join=True, allow_renew=False))
            )
            creds = await asyncio.to_thread(join_credentials, hosts)
            join_port = join.add_secure_port(f"{host}:{options['join_port']}", creds)
            if not join_port:
                raise CommandError(f"--join-port: cannot listen on {host}:{options['join_port']}.")
            servers.append(join)
        await xds.start()
        for server in servers:
            await server.start()
        mode = "insecure" if options["insecure"] else "mtls"
        ready = f"serve_xds ready replica={xds.replica} mode={mode} ads={host}:{port}"
        if join_port:
            ready += f" join={host}:{join_port}"
        self.stdout.write(ready)
        self.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("serve_xds: stopping")
        for server in servers:
            await server.stop(grace=1.0)
        await xds.stop()
