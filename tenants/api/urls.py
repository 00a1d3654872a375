from tenants.api import schema  # noqa: F401 - registers the bearer scheme with the schema
from tenants.api.views import (
    AccessKeyViewSet,
    AuditEventViewSet,
    MemberViewSet,
    QuotaViewSet,
    TenantViewSet,
)
from tenants.scoping import NativeRouter

router = NativeRouter()
router.register("tenants", TenantViewSet, basename="tenant")
router.register("access-keys", AccessKeyViewSet, basename="access-key")
router.register("members", MemberViewSet, basename="member")
router.register("audit-events", AuditEventViewSet, basename="audit-event")
router.register("quotas", QuotaViewSet, basename="quota")

urlpatterns = router.urls
