from rest_framework.permissions import SAFE_METHODS, BasePermission


class TenantAccess(BasePermission):
    """Authenticated by an access key; writes need a read-write key of an editor or admin.

    Views that manage the tenant itself (keys, members) set `admin_only = True`.
    """

    message = "This access key may not do that."

    def has_permission(self, request, view) -> bool:
        key = request.auth
        if key is None:
            return False
        if getattr(view, "admin_only", False):
            return key.is_admin or (request.method in SAFE_METHODS and key.role == "admin")
        if request.method in SAFE_METHODS:
            return True
        return key.can_write
