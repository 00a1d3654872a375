"""Turn an envoy-consumer Snapshot into a static Envoy bootstrap for `envoy --mode validate`.

RDS is inlined into each HTTP connection manager, EDS clusters become STATIC with their
ClusterLoadAssignment inlined, SDS references point at static secrets, and every file the
config names (certificates, trust bundles, access logs) is replaced by a throwaway file,
so Envoy checks the configuration itself rather than this machine's filesystem.
"""

import datetime
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, extension_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.bootstrap.internal_listener.v3 import internal_listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from google.protobuf import json_format

from workers.compiler import BOOTSTRAP_RUNTIME, xds
from workers.compiler.snapshot import Snapshot


@dataclass(frozen=True)
class Files:
    cert: str
    key: str
    log: str


def throwaway_files(directory: str) -> Files:
    """A self-signed certificate (also used as the trust bundle) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshplane-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    files = Files(
        os.path.join(directory, "cert.pem"),
        os.path.join(directory, "key.pem"),
        os.path.join(directory, "access.log"),
    )
    with open(files.cert, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(files.key, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return files


class _Converter:
    def __init__(self, snapshot: Snapshot, files: Files):
        self.snapshot = snapshot
        self.files = files
        self.secrets: dict[str, secret_pb2.Secret] = {}

    # -- TLS

    def _certificate(self) -> common_pb2.TlsCertificate:
        return common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(filename=self.files.cert),
            private_key=base_pb2.DataSource(filename=self.files.key),
        )

    def _trust(self) -> base_pb2.DataSource:
        return base_pb2.DataSource(filename=self.files.cert)

    def _common(self, common: tls_pb2.CommonTlsContext) -> None:
        for cert in common.tls_certificates:
            cert.CopyFrom(self._certificate())
        for sds in common.tls_certificate_sds_secret_configs:
            sds.ClearField("sds_config")
            self.secrets[sds.name] = secret_pb2.Secret(
                name=sds.name, tls_certificate=self._certificate()
            )
        if common.HasField("validation_context") and common.validation_context.HasField(
            "trusted_ca"
        ):
            common.validation_context.trusted_ca.CopyFrom(self._trust())
        validation_sds = None
        if common.HasField("validation_context_sds_secret_config"):
            validation_sds = common.validation_context_sds_secret_config
        elif common.HasField("combined_validation_context"):
            validation_sds = common.combined_validation_context.validation_context_sds_secret_config
        if validation_sds is not None:
            validation_sds.ClearField("sds_config")
            self.secrets[validation_sds.name] = secret_pb2.Secret(
                name=validation_sds.name,
                validation_context=common_pb2.CertificateValidationContext(
                    trusted_ca=self._trust()
                ),
            )

    def _socket(self, socket: base_pb2.TransportSocket) -> None:
        for cls in (tls_pb2.DownstreamTlsContext, tls_pb2.UpstreamTlsContext):
            if socket.typed_config.Is(cls.DESCRIPTOR):
                context = cls()
                socket.typed_config.Unpack(context)
                self._common(context.common_tls_context)
                socket.typed_config.Pack(context)

    # -- access logs

    def _logs(self, logs) -> None:
        for log in logs:
            config = file_pb2.FileAccessLog()
            log.typed_config.Unpack(config)
            config.path = self.files.log
            log.typed_config.Pack(config)

    # -- resources

    def listener(self, listener):
        listener = type(listener).FromString(listener.SerializeToString())
        chains = list(listener.filter_chains)
        if listener.HasField("default_filter_chain"):
            chains.append(listener.default_filter_chain)
        for chain in chains:
            if chain.HasField("transport_socket"):
                self._socket(chain.transport_socket)
            for f in chain.filters:
                if f.typed_config.Is(hcm_pb2.HttpConnectionManager.DESCRIPTOR):
                    hcm = hcm_pb2.HttpConnectionManager()
                    f.typed_config.Unpack(hcm)
                    if hcm.HasField("rds"):
                        routes = self.snapshot.of(xds.ROUTE)[hcm.rds.route_config_name]
                        hcm.route_config.CopyFrom(routes)
                    self._logs(hcm.access_log)
                    f.typed_config.Pack(hcm)
                elif f.typed_config.Is(tcp_proxy_pb2.TcpProxy.DESCRIPTOR):
                    proxy = tcp_proxy_pb2.TcpProxy()
                    f.typed_config.Unpack(proxy)
                    self._logs(proxy.access_log)
                    f.typed_config.Pack(proxy)
        return listener

    def cluster(self, cluster):
        cluster = type(cluster).FromString(cluster.SerializeToString())
        if cluster.type == cluster_pb2.Cluster.EDS:
            cluster.type = cluster_pb2.Cluster.STATIC
            cluster.ClearField("eds_cluster_config")
            cluster.load_assignment.CopyFrom(self.snapshot.of(xds.ENDPOINT)[cluster.name])
        if cluster.HasField("transport_socket"):
            self._socket(cluster.transport_socket)
        return cluster

    def bootstrap(self) -> bootstrap_pb2.Bootstrap:
        listeners = [self.listener(x) for x in self.snapshot.of(xds.LISTENER).values()]
        clusters = [self.cluster(x) for x in self.snapshot.of(xds.CLUSTER).values()]
        for name, secret in self.snapshot.of(xds.SECRET).items():
            copy = type(secret).FromString(secret.SerializeToString())
            if copy.HasField("validation_context"):
                copy.validation_context.trusted_ca.CopyFrom(self._trust())
            self.secrets[name] = copy
        boot = bootstrap_pb2.Bootstrap()
        boot.node.id = self.snapshot.node_id
        boot.node.cluster = self.snapshot.node_id
        boot.admin.address.CopyFrom(xds.socket("127.0.0.1", 0))
        boot.static_resources.listeners.extend(listeners)
        boot.static_resources.clusters.extend(clusters)
        layer = boot.layered_runtime.layers.add(name="static")
        layer.static_layer.update(BOOTSTRAP_RUNTIME)
        boot.static_resources.secrets.extend(self.secrets[n] for n in sorted(self.secrets))
        if "envoy.bootstrap.internal_listener" in self.snapshot.metadata.get(
            "bootstrap_extensions", ()
        ):
            boot.bootstrap_extensions.append(
                extension_pb2.TypedExtensionConfig(
                    name="envoy.bootstrap.internal_listener",
                    typed_config=xds.pack(internal_listener_pb2.InternalListener()),
                )
            )
        return boot


def static_bootstrap(snapshot: Snapshot, files: Files) -> dict:
    """The bootstrap as JSON (what `envoy -c file.json` reads)."""
    boot = _Converter(snapshot, files).bootstrap()
    return json_format.MessageToDict(boot, preserving_proto_field_name=True)
