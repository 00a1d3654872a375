"""The ordered generators for each consumer type.

Order matters: endpoints follow clusters (an assignment per EDS cluster the clusters
generator added) and secrets come last (the mesh CA is served only when a TLS context
built before refers to it).
"""

from workers.compiler.generators import Generator, clusters, endpoints, grpc, listeners, routes
from workers.compiler.generators import secrets as secrets_

PROFILES: dict[str, tuple[Generator, ...]] = {
    "envoy": (
        listeners.generate,
        routes.generate,
        clusters.generate,
        endpoints.generate,
        secrets_.generate,
    ),
    "grpc": (grpc.generate, routes.generate, clusters.generate, endpoints.generate),
}
