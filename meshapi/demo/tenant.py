"""The demo tenant and its access key, kept stable across runs.

The key's secret is shown once by the API, so the demo keeps it in a 0600 file under the
var dir. A re-run reuses that key while it still works against this database; otherwise
(new database, revoked key, changed encryption key) it revokes the demo's old keys and
issues one new key, so the demo tenant never piles up keys.
"""

import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import InvalidToken
from django.db import transaction

from tenants.models import AccessKey, Membership, Role, Tenant
from tenants.services import add_member, create_access_key, create_tenant, revoke_access_key

SLUG = "demo"
ADMIN_EMAIL = "demo@example.com"
ACTOR = "manage.py demo"
# Keys the demo itself issued: create_tenant's first key, then the demo's rotations.
KEY_DESCRIPTIONS = ("first admin key", "make demo")


@dataclass(frozen=True)
class DemoKey:
    tenant: Tenant
    key_id: str
    secret: str
    status: str  # "new tenant", "reused", "rotated"


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _read(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _works(tenant: Tenant, stored: dict[str, str]) -> bool:
    key = (
        AccessKey.objects.usable()
        .select_related("membership")
        .filter(tenant=tenant, key_id=stored.get("accessKeyId", ""))
        .first()
    )
    if key is None or not key.can_write:
        return False
    try:
        return hmac.compare_digest(key.secret(), stored.get("secretAccessKey", ""))
    except InvalidToken:
        return False


def _rotate(tenant: Tenant) -> tuple[str, str]:
    with transaction.atomic():
        admins = Membership.objects.filter(tenant=tenant, user__username=ADMIN_EMAIL)
        membership = admins.first() or add_member(tenant, ADMIN_EMAIL, Role.ADMIN, actor=ACTOR)
        old = AccessKey.objects.usable().filter(
            tenant=tenant, membership=membership, description__in=KEY_DESCRIPTIONS
        )
        for key_id in old.values_list("key_id", flat=True):
            revoke_access_key(tenant, key_id, actor=ACTOR)
        new_key = create_access_key(tenant, membership, description="make demo", actor=ACTOR)
    return new_key.key.key_id, new_key.secret


def ensure_demo_key(key_file: Path) -> DemoKey:
    """The demo tenant (created if missing) and a working read-write key for its admin."""
    tenant = Tenant.objects.filter(slug=SLUG).first()
    if tenant is None:
        tenant, new_key = create_tenant("demo", ADMIN_EMAIL, slug=SLUG)
        key_id, secret, status = new_key.key.key_id, new_key.secret, "new tenant"
    else:
        stored = _read(key_file)
        if stored.get("tenant") == SLUG and _works(tenant, stored):
            return DemoKey(tenant, stored["accessKeyId"], stored["secretAccessKey"], "reused")
        (key_id, secret), status = _rotate(tenant), "rotated"
    write_private(
        key_file,
        json.dumps(
            {
                "tenant": SLUG,
                "accountId": tenant.account_id,
                "region": tenant.default_region,
                "accessKeyId": key_id,
                "secretAccessKey": secret,
            },
            indent=2,
        )
        + "\n",
    )
    return DemoKey(tenant, key_id, secret, status)
