"""A tiny client of the Identity service, for agents: make a key and CSR, join, renew.

No Django here: an agent imports this with grpcio and cryptography only. The private key
is made locally and never sent; only the CSR travels. Calls raise `grpc.RpcError` when
refused (`.code()` and `.details()` say why).
"""

import json

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SERVICE = "meshplane.identity.v1.Identity"
TIMEOUT_SECONDS = 15.0


def new_key_and_csr(spiffe_id: str) -> tuple[bytes, bytes]:
    """(private key PEM, CSR PEM) for a fresh P-256 key; the CSR names `spiffe_id`."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    if spiffe_id:
        names.append(x509.UniformResourceIdentifier(spiffe_id))
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Meshplane")])
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _call(channel: grpc.Channel, method: str, body: dict, timeout: float) -> dict:
    with channel:
        rpc = channel.unary_unary(f"/{SERVICE}/{method}")
        answer = rpc(json.dumps(body).encode(), timeout=timeout)
    return json.loads(answer)


def join(
    target: str,
    token: str,
    csr_pem: bytes,
    node_id: str = "",
    root_ca_pem: bytes | None = None,
    insecure: bool = False,
    timeout: float = TIMEOUT_SECONDS,
) -> dict:
    """Join: trade a join token and CSR for {certificate, chain, trustBundle, spiffeId,
    notAfter}. `root_ca_pem` is the control plane's CA (`manage.py identity_ca`); None
    trusts the system roots. `insecure` is for a plaintext loopback development server."""
    if insecure:
        channel = grpc.insecure_channel(target)
    else:
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_ca_pem))
    body = {"token": token, "csr": _text(csr_pem)}
    if node_id:
        body["nodeId"] = node_id
    return _call(channel, "Join", body, timeout)


def renew(
    target: str,
    csr_pem: bytes,
    key_pem: bytes,
    chain_pem: bytes,
    root_ca_pem: bytes | None,
    timeout: float = TIMEOUT_SECONDS,
) -> dict:
    """Renew over mTLS: the current key and chain authenticate the caller; the answer
    has the same shape as `join`'s, for the same identity."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=root_ca_pem,
        private_key=key_pem if isinstance(key_pem, bytes) else key_pem.encode(),
        certificate_chain=chain_pem if isinstance(chain_pem, bytes) else chain_pem.encode(),
    )
    channel = grpc.secure_channel(target, credentials)
    return _call(channel, "Renew", {"csr": _text(csr_pem)}, timeout)
