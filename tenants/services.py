"""Tenant-level operations: creating tenants, members and access keys."""

from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from tenants.models import AccessKey, AuditEvent, Membership, Role, Tenant


@dataclass(frozen=True)
class NewKey:
    key: AccessKey
    secret: str


def create_access_key(
    tenant: Tenant,
    membership: Membership | None,
    *,
    description: str = "",
    read_only: bool = False,
    expires_at: datetime | None = None,
    actor: str = "system",
) -> NewKey:
    secret = AccessKey.generate_secret()
    with transaction.atomic():
        key = AccessKey(
            key_id=AccessKey.generate_key_id(),
            tenant=tenant,
            membership=membership,
            description=description,
            read_only=read_only,
            expires_at=expires_at,
        )
        key.set_secret(secret)
        key.save()
        AuditEvent.objects.create(
            tenant=tenant,
            actor=actor,
            action="CreateAccessKey",
            resource_type="accessKey",
            resource_arn=key.key_id,
            after={"keyId": key.key_id, "readOnly": read_only, "description": description},
        )
    return NewKey(key, secret)


def revoke_access_key(tenant: Tenant, key_id: str, *, actor: str) -> AccessKey:
    with transaction.atomic():
        key = AccessKey.objects.select_for_update().get(tenant=tenant, key_id=key_id)
        if key.revoked_at is None:
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
            AuditEvent.objects.create(
                tenant=tenant,
                actor=actor,
                action="RevokeAccessKey",
                resource_type="accessKey",
                resource_arn=key.key_id,
                before={"revoked": False},
                after={"revoked": True},
            )
    return key


def add_member(tenant: Tenant, email: str, role: str, *, actor: str) -> Membership:
    user_model = get_user_model()
    with transaction.atomic():
        user, _ = user_model.objects.get_or_create(
            username=email.lower(), defaults={"email": email.lower()}
        )
        membership = Membership.objects.create(tenant=tenant, user=user, role=role)
        AuditEvent.objects.create(
            tenant=tenant,
            actor=actor,
            action="AddMember",
            resource_type="member",
            resource_arn=email.lower(),
            after={"email": email.lower(), "role": role},
        )
    return membership


def create_tenant(
    name: str, admin_email: str, *, slug: str = "", region: str = "us-east-1", account_id: str = ""
) -> tuple[Tenant, NewKey]:
    """A tenant, its first admin and that admin's first read-write access key."""
    with transaction.atomic():
        fields = {"name": name, "slug": slug or slugify(name), "default_region": region}
        if account_id:
            fields["account_id"] = account_id
        tenant = Tenant.objects.create(**fields)
        membership = add_member(tenant, admin_email, Role.ADMIN, actor="system")
        new_key = create_access_key(
            tenant, membership, description="first admin key", actor="system"
        )
    return tenant, new_key
