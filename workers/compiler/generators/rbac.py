"""Authorization on a virtual node's ingress under the mesh's automatic mTLS: RBAC filters
admitting callers by the SPIFFE id (URI SAN) of their verified client certificate.

HTTP listeners (http, http2, grpc) get the RBAC HTTP filter (a denial is a 403 whose
response code details read `rbac_access_denied_matched_policy[none]`); tcp listeners get
the RBAC network filter (the connection is closed; the termination details say why).
Both count allowed/denied requests under their stat prefix. An ALLOW policy with no
principal denies everything: a node nothing declares as a backend admits nobody.
"""

from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.type.matcher.v3 import string_pb2

from workers.compiler.xds import pack

HTTP_RBAC = "envoy.filters.http.rbac"
NETWORK_RBAC = "envoy.filters.network.rbac"
POLICY = "mesh-callers"


def _rules(principals: tuple[str, ...]) -> rbac_pb2.RBAC:
    rules = rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW)
    if principals:
        rules.policies[POLICY].CopyFrom(
            rbac_pb2.Policy(
                permissions=[rbac_pb2.Permission(any=True)],
                principals=[
                    rbac_pb2.Principal(
                        authenticated=rbac_pb2.Principal.Authenticated(
                            principal_name=string_pb2.StringMatcher(exact=name)
                        )
                    )
                    for name in principals
                ],
            )
        )
    return rules


def http_filter(stat_prefix: str, principals: tuple[str, ...]) -> hcm_pb2.HttpFilter:
    """Runs before the router: only admitted callers reach the app."""
    config = http_rbac_pb2.RBAC(rules=_rules(principals), rules_stat_prefix=f"{stat_prefix}.")
    return hcm_pb2.HttpFilter(name=HTTP_RBAC, typed_config=pack(config))


def network_filter(stat_prefix: str, principals: tuple[str, ...]) -> lc.Filter:
    """Runs before the TCP proxy; checks once per connection."""
    config = network_rbac_pb2.RBAC(
        rules=_rules(principals),
        stat_prefix=stat_prefix,
        enforcement_type=network_rbac_pb2.RBAC.ONE_TIME_ON_FIRST_BYTE,
    )
    return lc.Filter(name=NETWORK_RBAC, typed_config=pack(config))
