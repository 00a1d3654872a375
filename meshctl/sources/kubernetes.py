"""The App Mesh controller's manifests (appmesh.k8s.aws/v1beta2), translated as it did.

Conventions followed (aws-app-mesh-controller-for-k8s, webhooks and pkg/conversions):
- App Mesh names: `spec.awsName`, else Mesh `<name>`, VirtualService `<name>.<namespace>`,
  VirtualNode / VirtualRouter / VirtualGateway / GatewayRoute `<name>_<namespace>`; a
  router's `spec.routes[].name` is the route's name as is.
- `*Ref {name, namespace}` becomes the referenced object's App Mesh name (namespace defaults
  to the referring object's); `*ARN` becomes the last segment of the ARN.
- Mesh membership: `spec.meshRef`, else the Mesh whose `namespaceSelector` matches the
  namespace's labels (Namespace objects in the same manifests), else the only Mesh.
- A gateway route belongs to `spec.virtualGatewayRef`, else the gateway whose
  `namespaceSelector` / `gatewayRouteSelector` match, else the mesh's only gateway.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from meshctl.model import (
    GATEWAY_ROUTE,
    MESH,
    ROUTE,
    VIRTUAL_GATEWAY,
    VIRTUAL_NODE,
    VIRTUAL_ROUTER,
    VIRTUAL_SERVICE,
    Kind,
    Resource,
    TranslateError,
)
from meshctl.shapes import ShapeError, spec_to_api

API_GROUP = "appmesh.k8s.aws/"
KINDS = {
    "Mesh": MESH,
    "VirtualNode": VIRTUAL_NODE,
    "VirtualService": VIRTUAL_SERVICE,
    "VirtualRouter": VIRTUAL_ROUTER,
    "VirtualGateway": VIRTUAL_GATEWAY,
    "GatewayRoute": GATEWAY_ROUTE,
}
# Fields that steer the controller, not App Mesh.
CONTROLLER_FIELDS = (
    "awsName", "meshRef", "podSelector", "namespaceSelector", "gatewayRouteSelector",
    "virtualGatewayRef", "routes", "meshOwner",
)  # fmt: skip


@dataclass
class _Object:
    file: Path
    kind: str
    name: str
    namespace: str
    labels: dict[str, str]
    spec: dict[str, Any]

    @property
    def where(self) -> str:
        ns = "" if self.kind == "Mesh" else f"{self.namespace}/"
        return f"{self.file}: {self.kind} {ns}{self.name}"

    @property
    def aws_name(self) -> str:
        if self.spec.get("awsName"):
            return str(self.spec["awsName"])
        if self.kind == "Mesh":
            return self.name
        if self.kind == "VirtualService":
            return f"{self.name}.{self.namespace}"
        return f"{self.name}_{self.namespace}"


def read_documents(path: Path) -> list[Any]:
    try:
        return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as exc:
        raise TranslateError(f"{path}: not readable YAML: {exc}") from None


def is_manifest(doc: Any) -> bool:
    return isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith(API_GROUP)


def flatten(doc: Any) -> list[Any]:
    if isinstance(doc, dict) and doc.get("kind") == "List":
        return [item for sub in doc.get("items") or [] for item in flatten(sub)]
    return [doc]


def _matches(selector: Any, labels: dict[str, str]) -> bool:
    """Label selector semantics: absent selects nothing, {} selects everything."""
    if selector is None:
        return False
    if selector.get("matchExpressions"):
        raise TranslateError("matchExpressions in selectors are not supported")
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


class _Manifests:
    def __init__(self, files: list[Path], default_mesh: str | None) -> None:
        self.objects: list[_Object] = []
        self.namespaces: dict[str, dict[str, str]] = {}
        self.default_mesh = default_mesh
        for file in files:
            for doc in read_documents(file):
                for item in flatten(doc):
                    self._add(file, item)

    def _add(self, file: Path, doc: Any) -> None:
        if not isinstance(doc, dict):
            return
        meta = doc.get("metadata") or {}
        if doc.get("kind") == "Namespace" and doc.get("apiVersion") == "v1":
            self.namespaces[meta.get("name", "")] = meta.get("labels") or {}
            return
        if not is_manifest(doc):
            return
        kind = doc.get("kind")
        where = f"{file}: {kind} {meta.get('namespace', 'default')}/{meta.get('name', '?')}"
        if doc["apiVersion"] != API_GROUP + "v1beta2":
            raise TranslateError(f"{where}: only appmesh.k8s.aws/v1beta2 is supported.")
        if kind not in KINDS:
            raise TranslateError(f"{where}: unknown App Mesh controller kind.")
        if not meta.get("name"):
            raise TranslateError(f"{where}: metadata.name is required.")
        self.objects.append(
            _Object(
                file, kind, meta["name"], meta.get("namespace") or "default",
                meta.get("labels") or {}, doc.get("spec") or {},
            )
        )  # fmt: skip

    def find(self, kind: str, name: str, namespace: str | None) -> _Object | None:
        for obj in self.objects:
            if (
                obj.kind == kind
                and obj.name == name
                and (kind == "Mesh" or obj.namespace == namespace)
            ):
                return obj
        return None

    def ref_name(self, obj: _Object, kind: str, holder: dict[str, Any], field: str) -> str:
        """`<field>Ref` or `<field>ARN` in holder -> the App Mesh name it designates."""
        ref = holder.pop(f"{field}Ref", None)
        arn = holder.pop(f"{field}ARN", None)
        if arn:
            return str(arn).rsplit("/", 1)[-1]
        if not ref or not ref.get("name"):
            raise TranslateError(f"{obj.where}: {field}Ref or {field}ARN is required.")
        target = self.find(kind, ref["name"], ref.get("namespace") or obj.namespace)
        if target is None:
            ns = ref.get("namespace") or obj.namespace
            raise TranslateError(
                f"{obj.where}: {field}Ref names {kind} {ns}/{ref['name']}, which is not in the "
                "manifests (its App Mesh name cannot be known)."
            )
        return target.aws_name

    def mesh_of(self, obj: _Object) -> str:
        meshes = [o for o in self.objects if o.kind == "Mesh"]
        ref = obj.spec.get("meshRef")
        if ref and ref.get("name"):
            mesh = self.find("Mesh", ref["name"], None)
            return mesh.aws_name if mesh else str(ref["name"])
        if obj.namespace in self.namespaces:
            labels = self.namespaces[obj.namespace]
            try:
                chosen = [m for m in meshes if _matches(m.spec.get("namespaceSelector"), labels)]
            except TranslateError as exc:
                raise TranslateError(f"{obj.where}: {exc}.") from None
            if len(chosen) == 1:
                return chosen[0].aws_name
            if len(chosen) > 1:
                raise TranslateError(
                    f"{obj.where}: namespace {obj.namespace} is selected by more than one Mesh."
                )
        if len(meshes) == 1:
            return meshes[0].aws_name
        if self.default_mesh:
            return self.default_mesh
        raise TranslateError(
            f"{obj.where}: cannot tell its mesh (no meshRef, no Namespace selected by one Mesh); "
            "add a Namespace with the mesh's labels or pass --mesh."
        )

    def gateway_of(self, obj: _Object, mesh: str) -> str:
        ref = obj.spec.get("virtualGatewayRef")
        if ref and ref.get("name"):
            target = self.find("VirtualGateway", ref["name"], ref.get("namespace") or obj.namespace)
            if target is None:
                raise TranslateError(
                    f"{obj.where}: virtualGatewayRef names a VirtualGateway not in the manifests."
                )
            return target.aws_name
        gateways = [
            o for o in self.objects if o.kind == "VirtualGateway" and self.mesh_of(o) == mesh
        ]
        labels = self.namespaces.get(obj.namespace)
        if labels is not None:
            try:
                chosen = [
                    g
                    for g in gateways
                    if _matches(g.spec.get("namespaceSelector"), labels)
                    and (
                        "gatewayRouteSelector" not in g.spec
                        or _matches(g.spec.get("gatewayRouteSelector"), obj.labels)
                    )
                ]
            except TranslateError as exc:
                raise TranslateError(f"{obj.where}: {exc}.") from None
            if len(chosen) == 1:
                return chosen[0].aws_name
        if len(gateways) == 1:
            return gateways[0].aws_name
        raise TranslateError(
            f"{obj.where}: cannot tell its virtual gateway; set spec.virtualGatewayRef."
        )

    def load(self) -> list[Resource]:
        out: list[Resource] = []
        for obj in self.objects:
            out.extend(self._translate(obj))
        return out

    def _spec(self, obj: _Object, kind: Kind, raw: dict[str, Any], path: str = "spec") -> dict:
        try:
            return spec_to_api(kind.spec_shape, raw, path, "kubernetes")
        except ShapeError as exc:
            raise TranslateError(f"{obj.where}: {exc}") from None

    def _translate(self, obj: _Object) -> list[Resource]:
        spec = copy.deepcopy(obj.spec)
        for field in CONTROLLER_FIELDS:
            if field != "routes":
                spec.pop(field, None)
        kind = KINDS[obj.kind]
        if kind is MESH:
            return [Resource(MESH, obj.aws_name, obj.aws_name, self._spec(obj, kind, spec),
                             origin=obj.where)]  # fmt: skip
        mesh = self.mesh_of(obj)
        if kind is VIRTUAL_NODE:
            if spec.pop("backendGroups", None):
                raise TranslateError(
                    f"{obj.where}: spec.backendGroups has no App Mesh equivalent; list the "
                    "virtual services as spec.backends instead."
                )
            for backend in spec.get("backends") or []:
                service = backend.get("virtualService") or {}
                service["virtualServiceName"] = self.ref_name(
                    obj, "VirtualService", service, "virtualService"
                )
        elif kind is VIRTUAL_SERVICE:
            provider = spec.get("provider") or {}
            if "virtualNode" in provider:
                holder = provider["virtualNode"]
                holder["virtualNodeName"] = self.ref_name(obj, "VirtualNode", holder, "virtualNode")
            if "virtualRouter" in provider:
                holder = provider["virtualRouter"]
                holder["virtualRouterName"] = self.ref_name(
                    obj, "VirtualRouter", holder, "virtualRouter"
                )
        elif kind is GATEWAY_ROUTE:
            for route_type in ("httpRoute", "http2Route", "grpcRoute"):
                target = ((spec.get(route_type) or {}).get("action") or {}).get("target") or {}
                service = target.get("virtualService")
                if service is not None:
                    service["virtualServiceName"] = self.ref_name(
                        obj, "VirtualService", service, "virtualService"
                    )
            gateway = self.gateway_of(obj, mesh)
            return [
                Resource(GATEWAY_ROUTE, mesh, obj.aws_name, self._spec(obj, kind, spec),
                         parent=gateway, origin=obj.where)
            ]  # fmt: skip
        routes = spec.pop("routes", None) or []
        out = [Resource(kind, mesh, obj.aws_name, self._spec(obj, kind, spec), origin=obj.where)]
        for i, route in enumerate(routes):
            route = dict(route)
            name = route.pop("name", None)
            if not name:
                raise TranslateError(f"{obj.where}: spec.routes[{i}].name is required.")
            for route_type in ("httpRoute", "http2Route", "grpcRoute", "tcpRoute"):
                action = (route.get(route_type) or {}).get("action") or {}
                for target in action.get("weightedTargets") or []:
                    target["virtualNode"] = self.ref_name(obj, "VirtualNode", target, "virtualNode")
            out.append(
                Resource(ROUTE, mesh, name, self._spec(obj, ROUTE, route, f"spec.routes[{i}]"),
                         parent=obj.aws_name, origin=f"{obj.where} route {name}")
            )  # fmt: skip
        return out


def from_manifests(files: list[Path], default_mesh: str | None = None) -> list[Resource]:
    return _Manifests(files, default_mesh).load()
