"""App Mesh TLS (listener TLS and client policies) → Envoy TLS contexts.

Certificates and trust come from files, from SDS (the secret names as the user gave
them; the agent serves them over the local ADS/SDS stream), or from `acm`, which only AWS
could serve: an `acm` listener certificate becomes the workload's identity certificate
(SDS secret `meshplane:identity`, issued by the mesh CA) and `acm` trust becomes the mesh
CA bundle (SDS secret `meshplane:mesh-ca`, which the control plane serves). Both
mappings are listed in the snapshot metadata under `acm`.

Consumer `grpc` accepts no SDS: every source becomes a `certificate_provider_instance`
whose instance names the snapshot metadata lists for the agent's gRPC bootstrap.

The mesh's automatic mTLS is expressed as App Mesh TLS over those two secrets
(`mesh_listener_tls`, `mesh_client_tls`), so it renders through the same code as the
TLS a user configures, for both consumers.
"""

import functools

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2

from workers.compiler import names
from workers.compiler.frozen import FrozenDict, dig, freeze
from workers.compiler.xds import ads, pack

TLS_SOCKET = "envoy.transport_sockets.tls"


class TlsRefs:
    """What a snapshot's TLS contexts reference outside themselves."""

    def __init__(self, consumer: str):
        self.consumer = consumer
        self.sds: set[str] = set()  # SDS secret names the agent (or control plane) serves
        self.providers: dict[str, dict] = {}  # grpc certificate provider instances
        self.acm: set[str] = set()
        self.mesh_ca = False  # the control plane serves the mesh CA secret

    def merge(self, other: "TlsRefs") -> None:
        self.sds |= other.sds
        self.providers.update(other.providers)
        self.acm |= other.acm
        self.mesh_ca = self.mesh_ca or other.mesh_ca

    def metadata(self) -> dict:
        out: dict = {}
        if self.sds:
            out["sds_secrets"] = sorted(self.sds)
        if self.providers:
            out["certificate_providers"] = {k: self.providers[k] for k in sorted(self.providers)}
        if self.acm:
            out["acm"] = sorted(self.acm)
        return out


def _sds(name: str) -> secret_pb2.SdsSecretConfig:
    return secret_pb2.SdsSecretConfig(name=name, sds_config=ads())


def _provider(
    refs: TlsRefs, instance: str, config: dict
) -> common_pb2.CertificateProviderPluginInstance:
    refs.providers[instance] = config
    return common_pb2.CertificateProviderPluginInstance(
        instance_name=instance, certificate_name="default"
    )


def _certificate(common: tls_pb2.CommonTlsContext, cert, refs: TlsRefs, where: str) -> None:
    if cert.get("acm"):
        refs.acm.add(
            f"{where}: certificate {cert['acm']['certificateArn']} → SDS '{names.IDENTITY_SECRET}'"
        )
        cert = {"sds": {"secretName": names.IDENTITY_SECRET}}
    if refs.consumer == "grpc":
        if cert.get("file"):
            f = cert["file"]
            instance = f"file:{f['certificateChain']}"
            config = {
                "file": {"certificateChain": f["certificateChain"], "privateKey": f["privateKey"]}
            }
        else:
            instance = f"sds:{cert['sds']['secretName']}"
            config = {"sds": cert["sds"]["secretName"]}
        common.tls_certificate_provider_instance.CopyFrom(_provider(refs, instance, config))
    elif cert.get("file"):
        f = cert["file"]
        common.tls_certificates.append(
            common_pb2.TlsCertificate(
                certificate_chain=base_pb2.DataSource(filename=f["certificateChain"]),
                private_key=base_pb2.DataSource(filename=f["privateKey"]),
            )
        )
    elif cert.get("sds"):
        refs.sds.add(cert["sds"]["secretName"])
        common.tls_certificate_sds_secret_configs.append(_sds(cert["sds"]["secretName"]))


def san_matchers(validation) -> list[common_pb2.SubjectAltNameMatcher]:
    out = []
    for name in dig(validation, "subjectAlternativeNames", "match", "exact", default=()):
        san_type = (
            common_pb2.SubjectAltNameMatcher.URI
            if "://" in name
            else common_pb2.SubjectAltNameMatcher.DNS
        )
        out.append(
            common_pb2.SubjectAltNameMatcher(
                san_type=san_type, matcher=string_pb2.StringMatcher(exact=name)
            )
        )
    return out


def _validation(common: tls_pb2.CommonTlsContext, validation, refs: TlsRefs, where: str) -> None:
    trust = validation.get("trust") or {}
    sans = san_matchers(validation)
    if trust.get("acm"):
        arns = ", ".join(trust["acm"].get("certificateAuthorityArns", ()))
        refs.acm.add(f"{where}: trust {arns} → SDS '{names.MESH_CA_SECRET}'")
        trust = {"sds": {"secretName": names.MESH_CA_SECRET}}
    if refs.consumer == "grpc":
        if trust.get("file"):
            path = trust["file"]["certificateChain"]
            instance, config = f"file:{path}", {"file": {"certificateChain": path}}
        else:
            name = trust["sds"]["secretName"]
            instance, config = f"sds:{name}", {"sds": name}
        common.validation_context.CopyFrom(
            common_pb2.CertificateValidationContext(
                ca_certificate_provider_instance=_provider(refs, instance, config),
                match_typed_subject_alt_names=sans,
            )
        )
    elif trust.get("file"):
        common.validation_context.CopyFrom(
            common_pb2.CertificateValidationContext(
                trusted_ca=base_pb2.DataSource(filename=trust["file"]["certificateChain"]),
                match_typed_subject_alt_names=sans,
            )
        )
    elif trust.get("sds"):
        name = trust["sds"]["secretName"]
        if name == names.MESH_CA_SECRET:
            refs.mesh_ca = True
        else:
            refs.sds.add(name)
        if sans:
            common.combined_validation_context.CopyFrom(
                tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
                    default_validation_context=common_pb2.CertificateValidationContext(
                        match_typed_subject_alt_names=sans
                    ),
                    validation_context_sds_secret_config=_sds(name),
                )
            )
        else:
            common.validation_context_sds_secret_config.CopyFrom(_sds(name))


@functools.cache
def mesh_listener_tls(mode: str) -> FrozenDict:
    """Automatic mTLS on a listener: the workload identity, clients checked against the
    mesh CA (and so required to present a certificate, as App Mesh does with validation)."""
    return freeze(
        {
            "mode": mode,
            "certificate": {"sds": {"secretName": names.IDENTITY_SECRET}},
            "validation": {"trust": {"sds": {"secretName": names.MESH_CA_SECRET}}},
        }
    )


def mesh_client_tls(spiffe_id: str) -> FrozenDict:
    """Automatic mTLS towards a mesh virtual node: present the workload identity, trust the
    mesh CA, and accept only the target node's own SPIFFE id."""
    return freeze(
        {
            "certificate": {"sds": {"secretName": names.IDENTITY_SECRET}},
            "validation": {
                "trust": {"sds": {"secretName": names.MESH_CA_SECRET}},
                "subjectAlternativeNames": {"match": {"exact": [spiffe_id]}},
            },
        }
    )


def uses_mesh_ca(tls) -> bool:
    return bool(dig(tls, "validation", "trust", "acm"))


def downstream(tls, protocol: str, refs: TlsRefs, where: str) -> base_pb2.TransportSocket:
    """A listener's TLS: client certificates are required only when `validation` is set."""
    common = tls_pb2.CommonTlsContext()
    _certificate(common, tls["certificate"], refs, where)
    if tls.get("validation"):
        _validation(common, tls["validation"], refs, where)
    if protocol != "tcp":
        common.alpn_protocols.extend(["h2", "http/1.1"] if protocol != "http" else ["http/1.1"])
    context = tls_pb2.DownstreamTlsContext(common_tls_context=common)
    if tls.get("validation"):
        context.require_client_certificate.value = True
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(context))


def upstream(tls, protocol: str, refs: TlsRefs, where: str) -> base_pb2.TransportSocket:
    """A client policy: the server's certificate is validated (trust + SANs); the client
    presents its own certificate when the policy names one (mutual TLS)."""
    common = tls_pb2.CommonTlsContext()
    if tls.get("certificate"):
        _certificate(common, tls["certificate"], refs, where)
    _validation(common, tls["validation"], refs, where)
    if protocol in ("http2", "grpc"):
        common.alpn_protocols.append("h2")
    context = tls_pb2.UpstreamTlsContext(common_tls_context=common)
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(context))
