import getpass

from django.core.management.base import BaseCommand, CommandError

from tenants import services
from tenants.models import DEFAULT_QUOTAS, Tenant


class Command(BaseCommand):
    help = (
        "Set one quota for a tenant (an operator action, audited). "
        "Use 'default' as the limit to restore App Mesh's default."
    )

    def add_arguments(self, parser):
        parser.add_argument("tenant", help="the tenant's slug")
        parser.add_argument("name", help=f"one of: {', '.join(DEFAULT_QUOTAS)}")
        parser.add_argument("limit", help="a whole number ≥ 0, or 'default'")

    def handle(self, *args, tenant: str, name: str, limit: str, **opts):
        found = Tenant.objects.filter(slug=tenant).first()
        if found is None:
            raise CommandError(f"tenant: no tenant with slug '{tenant}'.")
        if limit == "default":
            value = None
        elif limit.isascii() and limit.isdigit():
            value = int(limit)
        else:
            raise CommandError(f"limit: '{limit}' is not a whole number ≥ 0 (or 'default').")
        try:
            result = services.set_quota(found, name, value, actor=_operator())
        except services.RuleViolation as exc:
            raise CommandError(f"{exc.field}: {exc.message}") from exc
        suffix = " (default)" if value is None else ""
        self.stdout.write(f"{found.slug}: {name} = {result}{suffix}")


def _operator() -> str:
    try:
        return f"operator ({getpass.getuser()})"
    except (KeyError, OSError):  # no user name in some containers
        return "operator"
