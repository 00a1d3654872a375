"""The per-process access-key cache never outlives a revocation or a role change."""

import dataclasses
import os
import shutil
import time

import pytest

from tenants.models import Membership, Role
from tenants.services import revoke_access_key
from tests.support.live import LiveServer, live_database_url
from tests.support.redis_server import RedisServer


@pytest.fixture
def own_redis():
    server = RedisServer()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
def cached_server(personas, own_redis, monkeypatch):
    """An API server that caches keys, and this process publishing changes to the same Redis."""
    from django.conf import settings

    monkeypatch.setattr(settings, "REDIS_URL", own_redis.url)
    server = LiveServer(
        {
            "DATABASE_URL": live_database_url(),
            "REDIS_URL": own_redis.url,
            "MESHPLANE_KEY_CACHE_SECONDS": "300",
            "MESHPLANE_DB_CONN_MAX_AGE": "0",
        }
    )
    yield server
    server.stop()


def _error(persona, n=6) -> set[str]:
    """The error types of n reads (enough to reach both workers), '' for success."""
    out = set()
    for _ in range(n):
        response = persona.signed("GET", "/v20190125/meshes")
        out.add(response.headers.get("x-amzn-ErrorType", ""))
    return out


def test_revocation_is_seen_at_once_by_every_worker(cached_server, alice):
    alice = dataclasses.replace(alice, base_url=cached_server.url)
    assert _error(alice) == {""}
    revoke_access_key(alice.tenant, alice.key_id, actor="test")
    assert _error(alice) == {"UnrecognizedClientException"}


def test_role_change_is_seen_at_once(cached_server, alice):
    alice = dataclasses.replace(alice, base_url=cached_server.url)
    client = alice.appmesh()
    client.create_mesh(meshName="before")
    membership = Membership.objects.get(tenant=alice.tenant, user__email="alice@example.com")
    membership.role = Role.VIEWER
    membership.save()
    for i in range(4):
        response = alice.signed("PUT", "/v20190125/meshes", body={"meshName": f"after{i}"})
        assert response.headers.get("x-amzn-ErrorType") == "ForbiddenException"


def test_without_redis_the_cache_is_bypassed_not_trusted(cached_server, own_redis, alice):
    alice = dataclasses.replace(alice, base_url=cached_server.url)
    assert _error(alice) == {""}  # cached in the workers now
    own_redis.stop()
    # The change cannot be published, and the server cannot read the epoch: it must go to
    # the database rather than serve the cached, revoked key.
    revoke_access_key(alice.tenant, alice.key_id, actor="test")
    assert _error(alice) == {"UnrecognizedClientException"}
    own_redis.start()
    assert _error(alice) == {"UnrecognizedClientException"}


def test_setting_zero_disables_the_cache(settings):
    from tenants import keycache

    settings.MESHPLANE_KEY_CACHE_SECONDS = 0
    keycache.put("AKMPX", object())
    assert keycache.get("AKMPX") is None


@pytest.mark.skipif(os.environ.get("REDIS_URL") is None, reason="needs REDIS_URL")
def test_entries_expire_by_age(settings):
    from tenants import keycache

    settings.MESHPLANE_KEY_CACHE_SECONDS = 0.2
    keycache.get("warm")  # read the epoch once
    marker = object()
    keycache.put("AKMPY", marker)
    assert keycache.get("AKMPY") is marker
    time.sleep(0.3)
    assert keycache.get("AKMPY") is None
