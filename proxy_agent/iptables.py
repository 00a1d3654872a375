"""Redirect mode: App Mesh's iptables rules, installed by the agent itself.

App Mesh's ECS `proxyConfiguration` (and its init container on EKS) sends inbound TCP for
the app's ports to Envoy's ingress (15000) and every other outbound TCP to its egress
(15001), except traffic of the proxy's own UID (1337), ignored ports and ignored
addresses (the ECS and EC2 metadata endpoints by default). The agent does the same when it
has NET_ADMIN, in chains of its own (`MESHPLANE_INGRESS`, `MESHPLANE_EGRESS`) so removing
them on exit touches nothing else, and says plainly why when it cannot.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

INGRESS_CHAIN = "MESHPLANE_INGRESS"
EGRESS_CHAIN = "MESHPLANE_EGRESS"
DEFAULT_IGNORED_IPS = ("169.254.169.254", "169.254.170.2")  # EC2 and ECS metadata


class RedirectUnavailable(Exception):
    """The rules cannot be installed here; the message says why and what to do."""


@dataclass(frozen=True)
class RedirectRules:
    app_ports: tuple[int, ...]
    proxy_uid: int = 1337
    ingress_port: int = 15000
    egress_port: int = 15001
    ignored_uids: tuple[int, ...] = ()
    egress_ignored_ports: tuple[int, ...] = ()
    egress_ignored_ips: tuple[str, ...] = DEFAULT_IGNORED_IPS
    extra: dict = field(default_factory=dict)

    def install_commands(self) -> list[list[str]]:
        """iptables argument lists (after `iptables`), in order."""
        nat = ["-t", "nat"]
        out = [nat + ["-N", INGRESS_CHAIN], nat + ["-N", EGRESS_CHAIN]]
        if self.app_ports:
            ports = ",".join(str(p) for p in self.app_ports)
            out.append(
                nat
                + ["-A", INGRESS_CHAIN, "-p", "tcp", "-m", "multiport", "--dports", ports]
                + ["-j", "REDIRECT", "--to-port", str(self.ingress_port)]
            )
            out.append(
                nat
                + ["-A", "PREROUTING", "-p", "tcp", "-m", "addrtype", "!", "--src-type"]
                + ["LOCAL", "-j", INGRESS_CHAIN]
            )
        for uid in (self.proxy_uid, *self.ignored_uids):
            out.append(
                nat + ["-A", EGRESS_CHAIN, "-m", "owner", "--uid-owner", str(uid), "-j", "RETURN"]
            )
        if self.egress_ignored_ports:
            ports = ",".join(str(p) for p in self.egress_ignored_ports)
            out.append(
                nat
                + ["-A", EGRESS_CHAIN, "-p", "tcp", "-m", "multiport", "--dports", ports]
                + ["-j", "RETURN"]
            )
        for ip in self.egress_ignored_ips:
            out.append(nat + ["-A", EGRESS_CHAIN, "-d", ip, "-j", "RETURN"])
        out.append(
            nat
            + ["-A", EGRESS_CHAIN, "-p", "tcp", "-j", "REDIRECT"]
            + ["--to-port", str(self.egress_port)]
        )
        out.append(
            nat
            + ["-A", "OUTPUT", "-p", "tcp", "-m", "addrtype", "!", "--dst-type", "LOCAL"]
            + ["-j", EGRESS_CHAIN]
        )
        return out

    def remove_commands(self) -> list[list[str]]:
        """Undo `install_commands` (each step may fail harmlessly if already gone)."""
        nat = ["-t", "nat"]
        out = []
        if self.app_ports:
            out.append(
                nat
                + ["-D", "PREROUTING", "-p", "tcp", "-m", "addrtype", "!", "--src-type"]
                + ["LOCAL", "-j", INGRESS_CHAIN]
            )
        out.append(
            nat
            + ["-D", "OUTPUT", "-p", "tcp", "-m", "addrtype", "!", "--dst-type", "LOCAL"]
            + ["-j", EGRESS_CHAIN]
        )
        for chain in (INGRESS_CHAIN, EGRESS_CHAIN):
            out += [nat + ["-F", chain], nat + ["-X", chain]]
        return out


Runner = Callable[[Sequence[str]], subprocess.CompletedProcess]


def _run(args: Sequence[str]) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30)


class Iptables:
    """Installs and removes RedirectRules with the `iptables` binary."""

    def __init__(self, binary: str | None = None, runner: Runner = _run) -> None:
        self.binary = (shutil.which("iptables") or "") if binary is None else binary
        self.runner = runner
        self.installed: RedirectRules | None = None

    def check(self) -> None:
        """Raise RedirectUnavailable with the reason when the rules cannot be installed."""
        if not self.binary:
            raise RedirectUnavailable(
                "--interception redirect: no iptables binary on PATH; install iptables "
                "(e.g. apt-get install iptables) or use --interception explicit."
            )
        result = self.runner([self.binary, "-t", "nat", "-S"])
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise RedirectUnavailable(
                "--interception redirect: cannot change iptables here "
                f"({detail[0] if detail else 'exit ' + str(result.returncode)}); run the "
                "agent with NET_ADMIN (ECS: linuxParameters.capabilities.add NET_ADMIN; "
                "systemd: AmbientCapabilities=CAP_NET_ADMIN), install the rules with an "
                "init container, or use --interception explicit."
            )

    def install(self, rules: RedirectRules) -> None:
        self.check()
        self._remove(rules, quiet=True)  # left over from an agent that was killed
        for args in rules.install_commands():
            result = self.runner([self.binary, *args])
            if result.returncode != 0:
                self._remove(rules, quiet=True)
                raise RedirectUnavailable(
                    f"--interception redirect: iptables {' '.join(args)} failed: "
                    f"{(result.stderr or result.stdout).strip()}"
                )
        self.installed = rules
        log.info(
            "iptables: inbound %s → %s, outbound → %s (uid %s exempt)",
            ",".join(map(str, rules.app_ports)) or "(none)",
            rules.ingress_port,
            rules.egress_port,
            rules.proxy_uid,
        )

    def _remove(self, rules: RedirectRules, quiet: bool) -> None:
        for args in rules.remove_commands():
            result = self.runner([self.binary, *args])
            if result.returncode != 0 and not quiet:
                log.debug("iptables %s: %s", " ".join(args), result.stderr.strip())

    def remove(self) -> None:
        if self.installed is not None:
            self._remove(self.installed, quiet=False)
            log.info("iptables: redirect rules removed")
            self.installed = None
