from django.core.management.base import BaseCommand

from tenants.identity import services


class Command(BaseCommand):
    help = (
        "Print the control plane's CA certificate (PEM): agents trust it for the join and "
        "ADS ports. Made on first use and kept in the database (key encrypted)."
    )

    def handle(self, *args, **opts):
        self.stdout.write(services.control_plane_ca_pem(), ending="")
