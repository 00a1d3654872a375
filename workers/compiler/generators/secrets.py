"""Secrets (SDS) the control plane itself serves: the mesh CA bundle.

Workload certificates never pass through the control plane (the agent generates the key
and serves its certificate over its local SDS); the SDS names a snapshot expects from the
agent are listed in its metadata (`sds_secrets`).
"""

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from workers.compiler import names, xds
from workers.compiler.generators import Builder
from workers.compiler.plan import Plan


def generate(plan: Plan, out: Builder) -> None:
    if not out.refs.mesh_ca:
        return
    if not plan.ctx.trust_bundle:
        plan.warn(
            f"TLS refers to the mesh CA ('{names.MESH_CA_SECRET}') but the mesh has no trust "
            "bundle yet; connections using it wait until one is issued"
        )
        return
    secret = out.shared(
        ("mesh_ca", plan.ctx.trust_bundle),
        lambda _: secret_pb2.Secret(
            name=names.MESH_CA_SECRET,
            validation_context=common_pb2.CertificateValidationContext(
                trusted_ca=base_pb2.DataSource(inline_string=plan.ctx.trust_bundle)
            ),
        ),
    )
    out.add(xds.SECRET, names.MESH_CA_SECRET, secret)
