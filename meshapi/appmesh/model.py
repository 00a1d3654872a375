"""App Mesh's API model, loaded from the copy botocore ships, and its routing table."""

import re
from dataclasses import dataclass
from functools import lru_cache

import botocore.session
from botocore.model import OperationModel, ServiceModel

API_VERSION = "2019-01-25"


@dataclass(frozen=True)
class Operation:
    name: str
    method: str
    pattern: re.Pattern[str]
    model: OperationModel


@lru_cache(maxsize=1)
def service_model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("appmesh", api_version=API_VERSION)


def _uri_regex(request_uri: str) -> re.Pattern[str]:
    path = request_uri.split("?", 1)[0]
    parts = re.split(r"(\{[A-Za-z0-9]+\+?\})", path)
    out = []
    for part in parts:
        if part.startswith("{"):
            name = part.strip("{}+")
            out.append(f"(?P<{name}>[^/]+)")
        else:
            out.append(re.escape(part))
    return re.compile("^" + "".join(out) + "$")


@lru_cache(maxsize=1)
def operations() -> tuple[Operation, ...]:
    model = service_model()
    ops = []
    for name in model.operation_names:
        op = model.operation_model(name)
        ops.append(Operation(name, op.http["method"], _uri_regex(op.http["requestUri"]), op))
    return tuple(ops)


def resolve(method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
    """Find the operation for a request line; None if no path matches."""
    for op in operations():
        if op.method != method:
            continue
        match = op.pattern.match(path)
        if match:
            return op, match.groupdict()
    return None


def path_exists(path: str) -> bool:
    return any(op.pattern.match(path) for op in operations())
