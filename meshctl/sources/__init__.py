"""Read any App Mesh definition source into Resources; the format is told from the content."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from meshctl.model import Resource, TranslateError
from meshctl.sources import appmesh_api, cloudformation, kubernetes, terraform

YAML_SUFFIXES = (".yaml", ".yml")


def _read_structured(path: Path) -> Any:
    """JSON, or YAML's first document (CloudFormation short tags allowed); None if neither."""
    if path.suffix == ".json" or path.suffix == ".tfstate":
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise TranslateError(f"{path}: not readable JSON: {exc}") from None
    if path.suffix in YAML_SUFFIXES:
        try:
            return cloudformation.load_template(path)
        except TranslateError:
            return None  # multi-document YAML: Kubernetes manifests
    return None


def _file_kind(path: Path) -> str:
    if path.suffix == ".tf":
        return "terraform-config"
    data = _read_structured(path)
    if path.suffix in YAML_SUFFIXES and not cloudformation.is_template(data):
        docs = kubernetes.read_documents(path)
        if any(kubernetes.is_manifest(item) for d in docs for item in kubernetes.flatten(d)):
            return "kubernetes"
    if isinstance(data, dict):
        if ("resources" in data and "version" in data) or "format_version" in data:
            return "terraform-state"
        if cloudformation.is_template(data):
            return "cloudformation"
        if appmesh_api.is_describe_output(data):
            return "describe"
    if isinstance(data, list) and data and all(appmesh_api.is_describe_output(d) for d in data):
        return "describe"
    raise TranslateError(
        f"{path}: not a recognised source (Terraform state or .tf, CloudFormation template, "
        "appmesh.k8s.aws manifests or aws appmesh describe-* JSON)."
    )


def load(
    path: Path, parameters: dict[str, str] | None = None, default_mesh: str | None = None
) -> tuple[str, list[Resource]]:
    """(format, resources) for a file or a directory of one format."""
    if not path.exists():
        raise TranslateError(f"{path}: no such file or directory.")
    parameters = parameters or {}
    if path.is_dir():
        # Hidden directories hold tool state (.terraform/, .git/), never sources.
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        # A Terraform module is one directory: its own .tf files, not its subdirectories'.
        tf_files = [p for p in files if p.suffix == ".tf" and p.parent == path]
        if tf_files:
            return "terraform-config", terraform.from_config(tf_files, parameters)
        kinds = {
            p: _file_kind(p) for p in files if p.suffix in (".json", ".tfstate", *YAML_SUFFIXES)
        }
        if not kinds:
            raise TranslateError(f"{path}: no .tf, .json, .tfstate, .yaml or .yml files.")
        # Manifests refer to each other across files: read them together.
        manifests = [f for f, kind in kinds.items() if kind == "kubernetes"]
        resources: list[Resource] = []
        if manifests:
            resources.extend(kubernetes.from_manifests(manifests, default_mesh))
        for file, kind in kinds.items():
            if kind != "kubernetes":
                resources.extend(_load_file(file, kind, parameters, default_mesh))
        found = sorted(set(kinds.values()))
        return (found[0] if len(found) == 1 else "mixed"), resources
    kind = _file_kind(path)
    return kind, _load_file(path, kind, parameters, default_mesh)


def _load_file(
    path: Path, kind: str, parameters: dict[str, str], default_mesh: str | None
) -> list[Resource]:
    if kind == "terraform-config":
        return terraform.from_config([path], parameters)
    if kind == "terraform-state":
        return terraform.from_state(path, json.loads(path.read_text()))
    if kind == "cloudformation":
        return cloudformation.from_template(path, _read_structured(path), parameters)
    if kind == "kubernetes":
        return kubernetes.from_manifests([path], default_mesh)
    return appmesh_api.from_dump_file(path)
