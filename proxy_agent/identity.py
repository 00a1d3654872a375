"""The workload identity: join once, keep the certificate renewed, keep the key on the host.

The agent's own small client of `meshplane.identity.v1.Identity` (JSON messages over the
gRPC method paths, the wire format of tenants/identity/grpc_service.py): the agent does
not import the control plane's packages, so it installs and runs without them.

Files in the data directory (mode 0600, each written atomically):
- `identity.pem`: the certificate chain followed by the private key (one file, so a
  crash can never pair a new certificate with an old key);
- `trust-bundle.pem`: the mesh CA bundle (the roots peers' certificates chain to).

A fresh P-256 key is made for every CSR (join and each renewal); only the CSR leaves. Keys
and CSRs are made in a short-lived child process (keygen.py), so the running agent never
imports `cryptography` (about 11 MB of resident memory); it reads its certificate with der.py.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import hashlib
import json
import logging
import os
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc

from proxy_agent import der
from proxy_agent.files import write_atomic

log = logging.getLogger(__name__)

SERVICE = "meshplane.identity.v1.Identity"
CALL_TIMEOUT = 15.0
RENEW_FRACTION = 0.5  # renew at half the lifetime ...
RENEW_JITTER = 0.1  # ... give or take a tenth of it, so a fleet does not renew at once
MIN_RETRY, MAX_RETRY = 1.0, 60.0


class IdentityError(Exception):
    """Joining or renewing was refused or failed; the message says why."""


@dataclass(frozen=True)
class Workload:
    """A certificate chain and the key it was issued for (PEM), plus the trust bundle."""

    chain_pem: bytes
    key_pem: bytes
    bundle_pem: bytes
    # When it arrived: certificates are backdated (clock skew), so the lifetime that counts
    # for renewal runs from here, not from not_before.
    received_at: datetime.datetime | None = field(default=None, compare=False)

    @functools.cached_property
    def info(self) -> der.CertificateInfo:
        """The leaf's validity, SAN URIs and public key (ValueError if unreadable)."""
        blocks = der.pem_blocks(self.chain_pem, b"CERTIFICATE")
        if not blocks:
            raise ValueError("no certificate")
        return der.certificate_info(blocks[0])

    @property
    def spiffe_id(self) -> str:
        return self.info.uris[0] if self.info.uris else ""

    @property
    def not_before(self) -> datetime.datetime:
        return self.info.not_before

    @property
    def not_after(self) -> datetime.datetime:
        return self.info.not_after

    @property
    def version(self) -> str:
        """Changes whenever the certificate, key or trust bundle does."""
        return hashlib.sha256(self.chain_pem + self.key_pem + self.bundle_pem).hexdigest()[:16]


KEYGEN = Path(__file__).with_name("keygen.py")


async def new_key_and_csr(spiffe_id: str = "") -> tuple[bytes, bytes]:
    """(private key PEM, CSR PEM) for a fresh P-256 key, made by keygen.py in a child
    process. The CSR names `spiffe_id` when known (renewals)."""
    args = ["csr", spiffe_id] if spiffe_id else ["csr"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-P",
        str(KEYGEN),
        *args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        detail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise IdentityError(f"making a key and CSR failed ({sys.executable}): {detail[0]}")
    answer = json.loads(out)
    return answer["key"].encode(), answer["csr"].encode()


def split_identity_file(data: bytes) -> tuple[bytes, bytes]:
    """identity.pem → (chain PEM, key PEM)."""
    marker = b"-----BEGIN PRIVATE KEY-----"
    at = data.find(marker)
    if at < 0:
        raise ValueError("no private key")
    return data[:at].strip() + b"\n", data[at:].strip() + b"\n"


def key_matches(chain_pem: bytes, key_pem: bytes) -> bool:
    """Whether the key belongs to the chain's first certificate (ValueError if unreadable).
    A key that does not carry its public key counts as not matching (the agent's own keys,
    made by keygen.py, always do): the agent then joins again."""
    blocks = der.pem_blocks(chain_pem, b"CERTIFICATE")
    keys = der.pem_blocks(key_pem, b"PRIVATE KEY")
    if not blocks or not keys:
        raise ValueError("no certificate or no PKCS #8 key")
    public = der.ec_public_key_info(keys[0])
    return public is not None and public == der.certificate_info(blocks[0]).public_key


async def _call(channel: grpc.aio.Channel, method: str, body: dict) -> dict:
    rpc = channel.unary_unary(f"/{SERVICE}/{method}")
    try:
        answer = await rpc(json.dumps(body).encode(), timeout=CALL_TIMEOUT)
    except grpc.aio.AioRpcError as exc:
        raise IdentityError(f"{method} refused: {exc.code().name}: {exc.details()}") from exc
    finally:
        await channel.close()
    return json.loads(answer)


def _workload(answer: dict, key_pem: bytes) -> Workload:
    chain = (answer.get("chain") or answer["certificate"]).encode()
    return Workload(chain, key_pem, answer.get("trustBundle", "").encode())


class IdentityManager:
    """Holds the current Workload: loads it from the data directory, joins when there is
    none (or it expired), renews it at ~50 % of its lifetime with jitter, and tells
    `on_change` listeners (the SDS side of the relay) about every new one."""

    def __init__(
        self,
        data_dir: Path,
        node_id: str,
        *,
        control_plane: str,
        join_address: str,
        server_ca_pem: bytes | None,
        join_token_file: Path | None,
    ) -> None:
        self.path = Path(data_dir) / "identity.pem"
        self.bundle_path = Path(data_dir) / "trust-bundle.pem"
        self.node_id = node_id
        self.control_plane = control_plane
        self.join_address = join_address
        self.server_ca_pem = server_ca_pem
        self.join_token_file = join_token_file
        self.current: Workload | None = None
        self.listeners: list[Callable[[Workload], None]] = []
        self.renewals = 0

    # ------------------------------------------------------------ files

    def load(self) -> Workload | None:
        """The stored identity, if it is this node's and its key matches (expired or not:
        serving an expired certificate from the cache beats serving nothing)."""
        try:
            chain, key = split_identity_file(self.path.read_bytes())
            bundle = self.bundle_path.read_bytes() if self.bundle_path.exists() else b""
            received = datetime.datetime.fromtimestamp(self.path.stat().st_mtime, datetime.UTC)
            workload = Workload(chain, key, bundle, received)
            workload.info  # noqa: B018 - unreadable → ValueError, here
            if not key_matches(chain, key):
                log.warning("identity: %s: the key does not match the certificate", self.path)
                return None
        except FileNotFoundError:
            return None
        except ValueError as exc:
            log.warning("identity: %s unreadable (%s); joining again", self.path, exc)
            return None
        if not workload.spiffe_id.endswith("/" + self.node_id):
            log.warning(
                "identity: %s is for %s, not %s; joining again",
                self.path,
                workload.spiffe_id,
                self.node_id,
            )
            return None
        self.current = workload
        return workload

    def _store(self, workload: Workload) -> None:
        if workload.received_at is None:
            workload = replace(workload, received_at=_now())
        write_atomic(self.path, workload.chain_pem + workload.key_pem)
        write_atomic(self.bundle_path, workload.bundle_pem, mode=0o644)
        self.current = workload
        for listener in list(self.listeners):
            listener(workload)

    # ------------------------------------------------------------ calls

    def _token(self) -> str:
        if self.join_token_file is None and os.environ.get("MESHPLANE_JOIN_TOKEN"):
            return os.environ["MESHPLANE_JOIN_TOKEN"].strip()  # ECS `secrets` give variables
        if self.join_token_file is None:
            raise IdentityError(
                "--join-token-file: no identity in the data directory and no join token "
                "to get one with (--join-token-file or MESHPLANE_JOIN_TOKEN)."
            )
        try:
            token = self.join_token_file.read_text().strip()
        except OSError as exc:
            raise IdentityError(f"--join-token-file: cannot read {exc.filename}: {exc}") from exc
        if not token:
            raise IdentityError(f"--join-token-file: {self.join_token_file} is empty.")
        return token

    async def join(self) -> Workload:
        if not self.join_address:
            raise IdentityError("--join-address: needed to join (no identity stored yet).")
        token = self._token()
        key_pem, csr_pem = await new_key_and_csr()
        channel = grpc.aio.secure_channel(
            self.join_address, grpc.ssl_channel_credentials(self.server_ca_pem)
        )
        answer = await _call(
            channel, "Join", {"token": token, "csr": csr_pem.decode(), "nodeId": self.node_id}
        )
        workload = _workload(answer, key_pem)
        self._store(workload)
        log.info("identity: joined as %s until %s", workload.spiffe_id, workload.not_after)
        return self.current

    async def renew(self) -> Workload:
        """Renew over mTLS on the ADS port: the current certificate authenticates us."""
        current = self.current
        if current is None:
            raise IdentityError("renew: no current certificate.")
        key_pem, csr_pem = await new_key_and_csr(current.spiffe_id)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.server_ca_pem,
            private_key=current.key_pem,
            certificate_chain=current.chain_pem,
        )
        channel = grpc.aio.secure_channel(self.control_plane, credentials)
        answer = await _call(channel, "Renew", {"csr": csr_pem.decode()})
        workload = _workload(answer, key_pem)
        self._store(workload)
        self.renewals += 1
        log.info("identity: renewed %s until %s", workload.spiffe_id, workload.not_after)
        return self.current

    async def ensure(self) -> Workload:
        """An identity to start with: the stored one if still valid, else a join."""
        stored = self.current or self.load()
        if stored is not None and stored.not_after > _now():
            return stored
        try:
            return await self.join()
        except IdentityError:
            if stored is not None:
                log.warning("identity: the stored certificate expired and joining failed")
                return stored
            raise

    # ------------------------------------------------------------ renewal loop

    def renew_delay(self, workload: Workload, rng: random.Random | None = None) -> float:
        """Seconds until the next renewal: half the lifetime ± a tenth, the lifetime running
        from when the certificate arrived (or not_before, if later)."""
        rng = rng or random
        start = max(workload.not_before, workload.received_at or workload.not_before)
        lifetime = (workload.not_after - start).total_seconds()
        fraction = RENEW_FRACTION + rng.uniform(-RENEW_JITTER, RENEW_JITTER)
        at = start + datetime.timedelta(seconds=lifetime * fraction)
        return max(0.0, (at - _now()).total_seconds())

    async def run(self) -> None:
        """Renew forever; on failure retry with jittered backoff, re-joining with the token
        once the certificate has expired (the control plane no longer accepts it)."""
        retry = MIN_RETRY
        while True:
            workload = self.current
            if workload is None:
                delay = 0.0
            else:
                delay = self.renew_delay(workload)
            await asyncio.sleep(max(delay, MIN_RETRY))
            while True:
                try:
                    if self.current is None or self.current.not_after <= _now():
                        await self.join()
                    else:
                        await self.renew()
                    retry = MIN_RETRY
                    break
                except (IdentityError, OSError, ValueError, KeyError) as exc:
                    wait = retry * random.uniform(0.5, 1.0)
                    if self.current is not None:
                        left = (self.current.not_after - _now()).total_seconds()
                        if left > 0:
                            wait = min(wait, max(0.5, left / 4))
                    log.warning("identity: %s; retrying in %.1fs", exc, wait)
                    await asyncio.sleep(wait)
                    retry = min(retry * 2, MAX_RETRY)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
