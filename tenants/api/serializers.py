"""Shapes of the native tenant API: camelCase on the wire, strict on input."""

from typing import Any

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from tenants.models import AccessKey, AuditEvent, Membership, Role
from tenants.scoping import FilterSet


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know, naming them, instead of silently dropping them."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                expected = ", ".join(self.fields) or "none"
                raise serializers.ValidationError(
                    {name: [f"Unknown field; expected: {expected}."] for name in unknown}
                )
        return super().to_internal_value(data)


# ---------------------------------------------------------------- tenants/me


class CallerSerializer(serializers.Serializer):
    """The tenant and the access key making the request."""

    name = serializers.CharField(source="tenant.name")
    slug = serializers.CharField(source="tenant.slug")
    accountId = serializers.CharField(source="tenant.account_id")
    defaultRegion = serializers.CharField(source="tenant.default_region")
    accessKeyId = serializers.CharField(source="key_id")
    role = serializers.ChoiceField(choices=Role.choices)
    readOnly = serializers.BooleanField(source="read_only")
    email = serializers.EmailField(source="membership.user.email", allow_null=True, default=None)


# ---------------------------------------------------------------- access keys


class AccessKeySerializer(serializers.ModelSerializer):
    accessKeyId = serializers.CharField(source="key_id", read_only=True)
    readOnly = serializers.BooleanField(source="read_only", read_only=True)
    expiresAt = serializers.DateTimeField(source="expires_at", read_only=True, allow_null=True)
    lastUsedAt = serializers.DateTimeField(source="last_used_at", read_only=True, allow_null=True)
    revokedAt = serializers.DateTimeField(source="revoked_at", read_only=True, allow_null=True)
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    email = serializers.EmailField(
        source="membership.user.email", read_only=True, allow_null=True, default=None
    )
    role = serializers.ChoiceField(choices=Role.choices, read_only=True)
    state = serializers.SerializerMethodField()

    class Meta:
        model = AccessKey
        fields = [
            "accessKeyId",
            "description",
            "email",
            "role",
            "readOnly",
            "state",
            "expiresAt",
            "lastUsedAt",
            "revokedAt",
            "createdAt",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.ChoiceField(choices=["active", "expired", "revoked"]))
    def get_state(self, key: AccessKey) -> str:
        if key.revoked_at is not None:
            return "revoked"
        if key.expires_at is not None and key.expires_at <= timezone.now():
            return "expired"
        return "active"


class NewAccessKeySerializer(AccessKeySerializer):
    """A key just created: the only answer that ever carries its secret."""

    secretAccessKey = serializers.SerializerMethodField()

    class Meta(AccessKeySerializer.Meta):
        fields = [*AccessKeySerializer.Meta.fields, "secretAccessKey"]
        read_only_fields = fields

    def get_secretAccessKey(self, key: AccessKey) -> str:  # noqa: N802 - the wire name
        return self.context["secret"]


class AccessKeyCreateSerializer(StrictSerializer):
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    readOnly = serializers.BooleanField(required=False, default=False)
    expiresAt = serializers.DateTimeField(required=False, allow_null=True, default=None)
    email = serializers.EmailField(
        required=False,
        help_text="Create the key for this member instead of for yourself (admins only).",
    )

    def validate_expiresAt(self, value):  # noqa: N802 - the wire name
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("Must be in the future.")
        return value

    def validate_email(self, value: str) -> Membership:
        tenant = self.context["request"].auth.tenant
        membership = (
            Membership.objects.select_related("user")
            .filter(tenant=tenant, user__email=value.lower())
            .first()
        )
        if membership is None:
            raise serializers.ValidationError(
                f"{value} is not a member of {tenant.slug}; add them first (POST /api/v1/members/)."
            )
        return membership

    def validate(self, attrs: dict) -> dict:
        attrs["membership"] = attrs.pop("email", None)  # resolved by validate_email
        return attrs


# ---------------------------------------------------------------- members


class MemberSerializer(serializers.ModelSerializer):
    email = serializers.EmailField(source="user.email", read_only=True)
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)

    class Meta:
        model = Membership
        fields = ["email", "role", "createdAt"]
        read_only_fields = fields


class MemberCreateSerializer(StrictSerializer):
    email = serializers.EmailField()
    role = serializers.ChoiceField(choices=Role.choices, default=Role.VIEWER)

    def validate_email(self, value: str) -> str:
        tenant = self.context["request"].auth.tenant
        value = value.lower()
        if Membership.objects.filter(tenant=tenant, user__email=value).exists():
            raise serializers.ValidationError(f"{value} is already a member of {tenant.slug}.")
        return value


class MemberUpdateSerializer(StrictSerializer):
    role = serializers.ChoiceField(choices=Role.choices)


# ---------------------------------------------------------------- audit log


class AuditEventSerializer(serializers.ModelSerializer):
    resourceType = serializers.CharField(source="resource_type", read_only=True)
    resourceArn = serializers.CharField(source="resource_arn", read_only=True)
    requestId = serializers.CharField(source="request_id", read_only=True)

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "at",
            "actor",
            "action",
            "resourceType",
            "resourceArn",
            "before",
            "after",
            "requestId",
        ]
        read_only_fields = fields


class AuditEventFilterSet(FilterSet):
    action = serializers.CharField(
        required=False, max_length=64, help_text="Only this action, e.g. CreateMesh."
    )
    resourceType = serializers.CharField(
        required=False, max_length=32, help_text="Only this resource type, e.g. mesh, accessKey."
    )
    since = serializers.DateTimeField(
        required=False, help_text="Only events at or after this time (ISO 8601)."
    )

    def filter(self, queryset: QuerySet, data: dict[str, Any]) -> QuerySet:
        if "action" in data:
            queryset = queryset.filter(action=data["action"])
        if "resourceType" in data:
            queryset = queryset.filter(resource_type=data["resourceType"])
        if "since" in data:
            queryset = queryset.filter(at__gte=data["since"])
        return queryset


# ---------------------------------------------------------------- quotas


class QuotaSerializer(serializers.Serializer):
    name = serializers.CharField()
    limit = serializers.IntegerField(help_text="The limit in force.")
    default = serializers.IntegerField(help_text="App Mesh's default.")
    overridden = serializers.BooleanField(help_text="An operator set a limit for this tenant.")
