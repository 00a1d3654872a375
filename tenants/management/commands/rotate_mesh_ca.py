import getpass

from django.core.management.base import BaseCommand, CommandError

from tenants.identity import services
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Rotate a mesh's CA (audited): a new CA signs from now on, the old one stays in the "
        "trust bundle until the last certificate it signed has expired. With --retire-expired, "
        "drop rotated-out CAs whose certificates have all expired and recompile their meshes."
    )

    def add_arguments(self, parser):
        parser.add_argument("tenant", nargs="?", help="the tenant's slug")
        parser.add_argument("mesh", nargs="?", help="the mesh's name")
        parser.add_argument("--retire-expired", action="store_true")

    def handle(self, *args, tenant: str | None, mesh: str | None, retire_expired: bool, **opts):
        if retire_expired:
            count = services.retire_expired_cas()
            self.stdout.write(f"Retired {count} rotated-out CA(s).")
            if not tenant:
                return
        if not tenant or not mesh:
            raise CommandError("give the tenant's slug and the mesh's name.")
        found = Tenant.objects.filter(slug=tenant).first()
        if found is None:
            raise CommandError(f"tenant: no tenant with slug '{tenant}'.")
        try:
            ca = services.rotate_mesh_ca(found, mesh, actor=f"operator {getpass.getuser()}")
        except services.NotFound as exc:
            raise CommandError(f"mesh: {exc.message}") from exc
        self.stdout.write(
            f"Mesh '{mesh}' of {tenant}: CA generation {ca.generation} signs from now on "
            f"(sha256 {ca.fingerprint_sha256})."
        )
