"""Who else listens on Envoy's ports.

Envoy binds listeners with SO_REUSEPORT by default, so a second proxy on the same host
given the same port (explicit mode's fixed 15000/15001, for one) does not fail: the kernel
silently splits connections between the two, and half of an app's calls reach another
service. The agent looks for that and reports it (/ready fails, /status says who) instead.
Linux only: elsewhere, or for processes it may not inspect, it finds nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

LISTEN = "0A"


def listening_inodes(ports: set[int], proc: Path = Path("/proc")) -> dict[str, int]:
    """Socket inode → port, for TCP sockets listening on any of `ports`."""
    out: dict[str, int] = {}
    for table in ("net/tcp", "net/tcp6"):
        try:
            lines = (proc / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != LISTEN:
                continue
            port = int(fields[1].rsplit(":", 1)[1], 16)
            if port in ports:
                out[fields[9]] = port
    return out


def port_owners(ports: set[int], proc: Path = Path("/proc")) -> dict[int, set[int]]:
    """Port → the pids holding a listening socket on it (those this process may see)."""
    inodes = listening_inodes(ports, proc)
    owners: dict[int, set[int]] = {}
    if not inodes:
        return owners
    for pid in filter(str.isdigit, os.listdir(proc)):
        fd_dir = proc / pid / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd_dir / fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                port = inodes.get(target[8:-1])
                if port is not None:
                    owners.setdefault(port, set()).add(int(pid))
    return owners


def shared_ports(ports: set[int], envoy_pid: int, proc: Path = Path("/proc")) -> dict[int, list]:
    """Ports Envoy listens on that another process listens on too: port → other pids."""
    out = {}
    for port, pids in port_owners(ports, proc).items():
        if envoy_pid in pids and pids - {envoy_pid}:
            out[port] = sorted(pids - {envoy_pid})
    return out
