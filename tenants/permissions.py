from rest_framework.permissions import SAFE_METHODS, BasePermission

from tenants.models import AccessKey, Role


def key_allows(key: AccessKey, *, write: bool, admin_only: bool) -> bool:
    """The one rule for what an access key may do on the native API.

    Reads need any key of the tenant; writes a read-write key of an editor or admin.
    Tenant management (keys, members) is for admins: any admin key reads, a read-write
    admin key writes.
    """
    if admin_only:
        return key.is_admin if write else key.role == Role.ADMIN
    return key.can_write if write else True


def refusal(key: AccessKey, *, write: bool, admin_only: bool) -> str:
    """Why `key_allows` said no, in one sentence a caller can act on."""
    if admin_only and key.role != Role.ADMIN:
        return f"Access key {key.key_id} belongs to a {key.role}; this needs an admin's key."
    if key.read_only:
        return f"Access key {key.key_id} is read-only; this needs a read-write key."
    return f"Access key {key.key_id} belongs to a {key.role}; this needs an editor or admin."


class TenantAccess(BasePermission):
    """Authenticated by an access key; writes need a read-write key of an editor or admin.

    Views that manage the tenant itself (keys, members) set `admin_only = True`.
    """

    message = "This access key may not do that."

    def has_permission(self, request, view) -> bool:
        key = request.auth
        if key is None:
            return False
        admin_only = getattr(view, "admin_only", False)
        write = request.method not in SAFE_METHODS
        if key_allows(key, write=write, admin_only=admin_only):
            return True
        self.message = refusal(key, write=write, admin_only=admin_only)
        return False
