"""Tenant-level operations: creating tenants, members and access keys."""

from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from tenants.models import (
    DEFAULT_QUOTAS,
    AccessKey,
    AuditEvent,
    Membership,
    QuotaOverride,
    Role,
    Tenant,
)


class RuleViolation(Exception):
    """A change the tenant's rules forbid; `field` names the input a caller should fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


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


def _lock_tenant(tenant: Tenant) -> None:
    """Serialise membership changes of one tenant, so two demotions cannot both pass."""
    Tenant.objects.select_for_update().filter(pk=tenant.pk).first()


def _other_admins(tenant: Tenant, membership: Membership) -> bool:
    others = Membership.objects.filter(tenant=tenant, role=Role.ADMIN).exclude(pk=membership.pk)
    return others.exists()


def change_member_role(tenant: Tenant, email: str, role: str, *, actor: str) -> Membership:
    with transaction.atomic():
        _lock_tenant(tenant)
        membership = Membership.objects.select_related("user").get(
            tenant=tenant, user__email=email.lower()
        )
        before = membership.role
        if before == role:
            return membership
        if before == Role.ADMIN and not _other_admins(tenant, membership):
            raise RuleViolation(
                "role",
                f"{membership.user.email} is the last admin of {tenant.slug}; "
                "make another member admin first.",
            )
        membership.role = role
        membership.save(update_fields=["role"])
        AuditEvent.objects.create(
            tenant=tenant,
            actor=actor,
            action="ChangeMemberRole",
            resource_type="member",
            resource_arn=membership.user.email,
            before={"email": membership.user.email, "role": before},
            after={"email": membership.user.email, "role": role},
        )
    return membership


def remove_member(tenant: Tenant, email: str, *, actor: str) -> None:
    """Remove a member; their access keys go with them."""
    with transaction.atomic():
        _lock_tenant(tenant)
        membership = Membership.objects.select_related("user").get(
            tenant=tenant, user__email=email.lower()
        )
        if membership.role == Role.ADMIN and not _other_admins(tenant, membership):
            raise RuleViolation(
                "email",
                f"{membership.user.email} is the last admin of {tenant.slug}; "
                "make another member admin first.",
            )
        key_ids = sorted(membership.access_keys.values_list("key_id", flat=True))
        membership.delete()
        AuditEvent.objects.create(
            tenant=tenant,
            actor=actor,
            action="RemoveMember",
            resource_type="member",
            resource_arn=membership.user.email,
            before={"email": membership.user.email, "role": membership.role, "accessKeys": key_ids},
            after=None,
        )


MAX_QUOTA = 2**31 - 1  # what the column holds


def set_quota(tenant: Tenant, name: str, limit: int | None, *, actor: str) -> int:
    """Override one quota for a tenant (None restores the default); returns the new limit."""
    if name not in DEFAULT_QUOTAS:
        raise RuleViolation(
            "name", f"'{name}' is not a quota; one of: {', '.join(DEFAULT_QUOTAS)}."
        )
    if limit is not None and not 0 <= limit <= MAX_QUOTA:
        raise RuleViolation("limit", f"must be a whole number from 0 to {MAX_QUOTA}.")
    with transaction.atomic():
        current = QuotaOverride.objects.select_for_update().filter(tenant=tenant, name=name).first()
        before = current.limit if current else DEFAULT_QUOTAS[name]
        if limit is None:
            QuotaOverride.objects.filter(tenant=tenant, name=name).delete()
            after = DEFAULT_QUOTAS[name]
        else:
            QuotaOverride.objects.update_or_create(
                tenant=tenant, name=name, defaults={"limit": limit}
            )
            after = limit
        AuditEvent.objects.create(
            tenant=tenant,
            actor=actor,
            action="SetQuota",
            resource_type="quota",
            resource_arn=name,
            before={"name": name, "limit": before, "overridden": current is not None},
            after={"name": name, "limit": after, "overridden": limit is not None},
        )
    return after
