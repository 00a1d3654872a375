"""Mutual TLS in front of the gRPC server, with Python's ssl (OpenSSL).

go-plugin's AutoMTLS client certificate is ECDSA P-521. gRPC's own TLS (BoringSSL) does
not offer P-521 signatures when it asks for a client certificate, so Go's TLS client then
sends none and the handshake fails. OpenSSL offers them: this front end terminates TLS,
requires exactly Terraform's certificate, and relays the decrypted HTTP/2 stream to the
gRPC server on a Unix socket that only this process can reach.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import ssl
import tempfile
import threading

log = logging.getLogger("terraform-provider-meshplane.tls")


class TLSFront:
    """Accept TLS on 127.0.0.1:<port>, relay each connection to `backend` (a Unix socket)."""

    def __init__(self, key_pem: bytes, cert_pem: bytes, client_cert_pem: str, backend: str):
        self.backend = backend
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.load_verify_locations(cadata=client_cert_pem)
        self.context.set_alpn_protocols(["h2"])
        # load_cert_chain reads files only; keep them for the shortest possible time.
        with tempfile.TemporaryDirectory() as tmp:
            key_path, cert_path = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
            for path, data in ((key_path, key_pem), (cert_path, cert_pem)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            self.context.load_cert_chain(cert_path, key_path)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]

    def serve_forever(self) -> None:
        threading.Thread(target=self._accept, daemon=True, name="tls-accept").start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, raw: socket.socket) -> None:
        try:
            tls = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            # Also how a client that hung up before finishing its handshake ends up here.
            log.info("refused a connection: %s", exc)
            raw.close()
            return
        plain = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            plain.connect(self.backend)
            self._pump(tls, plain)
        except (OSError, ssl.SSLError) as exc:
            log.debug("connection ended: %s", exc)
        finally:
            for s in (plain, tls):
                with contextlib.suppress(OSError):
                    s.close()

    @staticmethod
    def _pump(tls: ssl.SSLSocket, plain: socket.socket) -> None:
        """Copy bytes both ways on one thread: an SSL object must not be used by two at once."""
        while True:
            # Decrypted bytes may wait inside the SSL object where select cannot see them.
            readable = [tls] if tls.pending() else select.select([tls, plain], [], [])[0]
            if tls in readable:
                data = tls.recv(65536)
                if not data:
                    return
                plain.sendall(data)
            if plain in readable:
                data = plain.recv(65536)
                if not data:
                    return
                tls.sendall(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.close()
