"""Resource names, in one place so generators and the consistency check agree."""

PASSTHROUGH = "passthrough"
INGRESS = "ingress"
EGRESS = "egress"
# The mesh CA bundle (validation context), served by the control plane; `acm` trust maps here.
MESH_CA_SECRET = "meshplane:mesh-ca"
# The workload identity certificate the agent serves over its local SDS; an `acm` listener
# certificate maps here.
IDENTITY_SECRET = "meshplane:identity"


def upstream(node: str, port: int) -> str:
    """One cluster per (virtual node, port), as App Mesh has it."""
    return f"upstream/{node}/{port}"


def local_app(port: int) -> str:
    return f"local/{port}"


def internal(service: str, port: int) -> str:
    """A gateway's hop into a router-provided virtual service (an Envoy internal listener)."""
    return f"internal/{service}/{port}"


def ingress_routes(port: int) -> str:
    return f"ingress/{port}"


def egress_routes(port: int) -> str:
    """Redirect mode: every HTTP backend on one destination port, by Host/authority."""
    return f"egress/{port}"


def service_routes(service: str, port: int) -> str:
    """One virtual service port's routes, matching any authority."""
    return f"service/{service}/{port}"


def gateway_routes(port: int) -> str:
    return f"gateway/{port}"


def ingress_listener(port: int) -> str:
    return f"ingress/{port}"


def egress_listener(service: str, port: int) -> str:
    return f"egress/{service}/{port}"


def gateway_listener(port: int) -> str:
    return f"gateway/{port}"


def grpc_server_listener(port: int) -> str:
    """The name gRPC's xDS server looks up (its default listener resource name template)."""
    return f"grpc/server?xds.resource.listening_address=0.0.0.0:{port}"
