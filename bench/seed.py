"""Seed the benchmark database; run as `python -m bench.seed` under bench.stock_settings.

Writes go through the same service functions the API calls, after validating each request
against botocore's input shape exactly as the API does. Prints what the clients need as JSON.
"""

import json
import os
import sys

import django


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.stock_settings")
    django.setup()

    from rest_framework.authtoken.models import Token

    from bench import specs
    from meshapi.appmesh import model, validate
    from meshapi.models import VirtualNode
    from meshapi.services import resources
    from meshapi.services.kinds import BY_OP
    from tenants.services import create_tenant

    tenant, new_key = create_tenant("Bench Corp", "bench@example.com", slug="bench")
    writer = resources.Writer(actor="bench")
    shapes = {op.name: op.model.input_shape for op in model.operations()}

    def create(op: str, **params) -> None:
        validate.validate(shapes[f"Create{op}"], params)
        kind = BY_OP[op]
        names = {"mesh_name": params["meshName"]}
        names["name"] = params["meshName"] if op == "Mesh" else params[kind.name_field]
        if kind.parent is not None:
            names["parent_name"] = params[kind.parent.name_field]
        resources.create(tenant, kind, writer, spec=params.get("spec"), **names)

    for mesh, nodes in ((specs.MESH, 100), (specs.SMALL_MESH, 10)):
        create("Mesh", meshName=mesh, spec={"egressFilter": {"type": "DROP_ALL"}})
        for i in range(nodes):
            create(
                "VirtualNode",
                meshName=mesh,
                virtualNodeName=specs.node_name(i),
                spec=specs.node_spec(i, nodes, mesh),
            )
    create(
        "VirtualRouter",
        meshName=specs.MESH,
        virtualRouterName=specs.ROUTER,
        spec=specs.router_spec(),
    )
    create(
        "Route",
        meshName=specs.MESH,
        virtualRouterName=specs.ROUTER,
        routeName=specs.ROUTE,
        spec=specs.route_spec(10),
    )
    node = VirtualNode.objects.get(mesh__name=specs.MESH, name=specs.node_name(42))
    token = Token.objects.create(user=new_key.key.membership.user)
    json.dump(
        {
            "region": tenant.default_region,
            "keyId": new_key.key.key_id,
            "secret": new_key.secret,
            "token": token.key,
            "nodeName": node.name,
            "nodePk": node.pk,
            "meshPk": node.mesh_id,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
