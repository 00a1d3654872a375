"""One contract every endpoint of both API surfaces is held to (NetBox-style).

A test module lists its endpoints as `Endpoint`s on a subclass of `EndpointContract`;
each endpoint is then checked for: refusal without credentials, refusal of writes with a
read-only key, NotFound for another tenant, its happy path, and the number of SQL queries
it makes, against the baseline in tests/query_counts.json (lists are also checked to stay
constant as rows are added). Record a new baseline with MESHPLANE_RECORD_QUERY_COUNTS=1.
"""

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.personas import Persona

BASELINE_PATH = Path(__file__).resolve().parents[1] / "query_counts.json"
RECORD = os.environ.get("MESHPLANE_RECORD_QUERY_COUNTS") == "1"
_lock = threading.Lock()


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: Any = None


@dataclass
class Endpoint:
    id: str
    surface: str  # "appmesh" (SigV4) or "native" (bearer)
    write: bool
    request: Callable[[dict], Call]  # fixture data -> the call
    ok_status: int = 200
    check: Callable[[dict, dict], None] | None = None  # (fixture data, body) -> asserts
    other_tenant: str = "404"  # "404", "empty-list" or "skip"
    grow: Callable[[Persona, dict], None] | None = None  # adds rows a list would show
    extra: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.id


def send(persona: Persona | None, endpoint: Endpoint, call: Call, base_url: str):
    if persona is None:
        return requests.request(
            call.method,
            base_url + call.path,
            json=call.body,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
    if endpoint.surface == "appmesh":
        return persona.signed(call.method, call.path, body=call.body)
    return requests.request(
        call.method, base_url + call.path, json=call.body, headers=persona.bearer, timeout=30
    )


def _baseline() -> dict[str, int]:
    if BASELINE_PATH.exists():
        return json.loads(BASELINE_PATH.read_text())
    return {}


def _record(endpoint_id: str, count: int) -> None:
    with _lock:
        data = _baseline()
        data[endpoint_id] = count
        BASELINE_PATH.write_text(json.dumps(dict(sorted(data.items())), indent=2) + "\n")


def _queries(response) -> int:
    value = response.headers.get("X-Meshplane-Queries")
    assert value is not None, "server must run with MESHPLANE_QUERY_COUNT_HEADER=1"
    return int(value)


class EndpointContract:
    """Subclass, set ENDPOINTS and define a `world` fixture returning the fixture data
    (created for alice's tenant) that the endpoints' requests refer to."""

    ENDPOINTS: list[Endpoint] = []

    def test_unauthenticated_is_refused(self, endpoint, world, api_server):
        call = endpoint.request(world)
        response = send(None, endpoint, call, api_server.url)
        if endpoint.surface == "appmesh":
            assert response.status_code == 403
            assert response.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
        else:
            assert response.status_code in (401, 403)

    def test_read_only_key(self, endpoint, world, bob, api_server):
        response = send(bob, endpoint, endpoint.request(world), api_server.url)
        if endpoint.write:
            assert response.status_code == 403, response.text
            if endpoint.surface == "appmesh":
                assert response.headers["x-amzn-ErrorType"] == "ForbiddenException"
        else:
            assert response.status_code == endpoint.ok_status, response.text

    def test_other_tenant_sees_nothing(self, endpoint, world, charlie, api_server):
        if endpoint.other_tenant == "skip":
            pytest.skip("not scoped to an existing object")
        response = send(charlie, endpoint, endpoint.request(world), api_server.url)
        if endpoint.other_tenant == "empty-list":
            assert response.status_code == 200, response.text
            assert world["alice_marker"] not in response.text
        else:
            assert response.status_code == 404, response.text
            if endpoint.surface == "appmesh":
                assert response.headers["x-amzn-ErrorType"] == "NotFoundException"

    def test_happy_path_and_query_count(self, endpoint, world, alice, api_server):
        # Any signed call records the key's last use (once a minute); make that happen
        # first so the count below is the endpoint's own.
        alice.signed("GET", "/v20190125/meshes")
        response = send(alice, endpoint, endpoint.request(world), api_server.url)
        assert response.status_code == endpoint.ok_status, response.text
        body = response.json() if response.content else {}
        if endpoint.check:
            endpoint.check(world, body)
        count = _queries(response)
        if endpoint.grow is not None:
            endpoint.grow(alice, world)
            again = send(alice, endpoint, endpoint.request(world), api_server.url)
            assert again.status_code == endpoint.ok_status
            assert _queries(again) == count, "queries grew with the number of rows (N+1)"
        if RECORD:
            _record(endpoint.id, count)
            return
        baseline = _baseline().get(endpoint.id)
        assert baseline is not None, f"no query baseline for {endpoint.id}: record one"
        assert count == baseline, f"{endpoint.id}: {count} queries, baseline {baseline}"


def pytest_generate_tests(metafunc) -> None:
    """Hooked from tests/conftest.py: parametrize `endpoint` from the class's ENDPOINTS."""
    if "endpoint" in metafunc.fixturenames and metafunc.cls is not None:
        endpoints = metafunc.cls.ENDPOINTS
        metafunc.parametrize("endpoint", endpoints, ids=[e.id for e in endpoints])
