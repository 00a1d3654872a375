"""Client side of the benchmark: pre-built raw HTTP requests fired from several processes.

Requests are built (and SigV4-signed with botocore) before the clock starts, so a client
only writes bytes to a fresh loopback connection and reads the answer. A gunicorn sync
worker closes every connection after one response, so every client connects per request.
No Django here: this module is imported by the client processes.
"""

import multiprocessing as mp
import socket
import time
from collections import Counter
from dataclasses import dataclass, field

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

Address = tuple[str, int]


def _raw(method: str, target: str, host: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "host"]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode() + body


def sigv4_request(
    addr: Address, creds: Credentials, region: str, method: str, target: str, body: bytes = b""
) -> bytes:
    """One App Mesh request signed exactly as boto3 signs it (SigV4, service appmesh)."""
    host = f"{addr[0]}:{addr[1]}"
    headers = {"Accept": "application/json"}
    if body:
        headers["Content-Type"] = "application/json"
    request = AWSRequest(method=method, url=f"http://{host}{target}", data=body, headers=headers)
    SigV4Auth(creds, "appmesh", region).add_auth(request)
    return _raw(method, target, host, dict(request.headers), body)


def token_request(addr: Address, token: str, target: str) -> bytes:
    """A GET with DRF's `Authorization: Token <key>`."""
    host = f"{addr[0]}:{addr[1]}"
    headers = {"Accept": "application/json", "Authorization": f"Token {token}"}
    return _raw("GET", target, host, headers, b"")


@dataclass
class Reply:
    status: int
    queries: int | None
    body: bytes


def send(addr: Address, raw: bytes) -> Reply:
    with socket.create_connection(addr, timeout=30) as sock:
        sock.sendall(raw)
        # Half-close now: gunicorn lingers after each response until the peer closes, and on
        # a busy 2-core box waiting for this process to be scheduled again would be timed too.
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    queries = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"x-meshplane-queries":
            queries = int(value)
    return Reply(int(lines[0].split()[1]), queries, body)


@dataclass
class Measurement:
    ok: int = 0
    errors: Counter = field(default_factory=Counter)  # HTTP status (0: no answer) -> count
    queries: Counter = field(default_factory=Counter)  # X-Meshplane-Queries -> count
    started: float = float("inf")
    finished: float = 0.0
    server_cpu: float = 0.0  # CPU seconds the server side spent (filled in by the caller)

    def merge(self, other: "Measurement") -> None:
        self.ok += other.ok
        self.errors.update(other.errors)
        self.queries.update(other.queries)
        self.started = min(self.started, other.started)
        self.finished = max(self.finished, other.finished)

    @property
    def elapsed(self) -> float:
        return max(self.finished - self.started, 1e-9)

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed

    @property
    def cpu_per_request(self) -> float:
        answered = self.ok + sum(n for status, n in self.errors.items() if status)
        return self.server_cpu / answered if answered else 0.0


def _client(addr, requests, seconds, barrier, results) -> None:
    out = Measurement()
    barrier.wait()
    out.started = time.monotonic()
    deadline = out.started + seconds
    for raw in requests:
        if time.monotonic() >= deadline:
            break
        try:
            reply = send(addr, raw)
        except OSError:
            out.errors[0] += 1  # no HTTP answer at all (refused, reset, timed out)
            continue
        if reply.status == 200:
            out.ok += 1
        else:
            out.errors[reply.status] += 1
        if reply.queries is not None:
            out.queries[reply.queries] += 1
    out.finished = time.monotonic()
    results.put(out)


def fire(addr: Address, requests: list[bytes], clients: int, seconds: float) -> Measurement:
    """Send `requests` from `clients` processes at once; stop each after `seconds`."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(clients + 1)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_client, args=(addr, requests[i::clients], seconds, barrier, results))
        for i in range(clients)
    ]
    for proc in procs:
        proc.start()
    total = Measurement()
    try:
        barrier.wait(timeout=30)
        for _ in procs:
            total.merge(results.get(timeout=seconds + 60))
    except BaseException:  # interrupted or a client died: stop the others now
        for proc in procs:
            proc.terminate()
        raise
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
    return total
