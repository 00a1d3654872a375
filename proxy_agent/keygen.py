"""Make a P-256 key and a CSR for it: run by the agent as a short-lived child process.

`cryptography` costs a process about 11 MB of resident memory once imported, and the
agent needs it only at a join and at each renewal (hours apart in production), so the
agent runs this file with its own interpreter (`python -P keygen.py csr [SPIFFE_ID]`) and
reads `{"key": PEM, "csr": PEM}` from its output. It imports nothing of the agent's.
"""

from __future__ import annotations

import json
import sys


def new_key_and_csr(spiffe_id: str = "") -> tuple[bytes, bytes]:
    """(private key PEM, CSR PEM) for a fresh P-256 key. The CSR names `spiffe_id` when
    known (renewals); a first join leaves it out and the control plane fills it in."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Meshplane")])
    )
    if spiffe_id:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
            critical=False,
        )
    csr = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def main(argv: list[str]) -> int:
    if argv[:1] == ["csr"] and len(argv) <= 2:
        key_pem, csr_pem = new_key_and_csr(argv[1] if len(argv) == 2 else "")
        json.dump({"key": key_pem.decode(), "csr": csr_pem.decode()}, sys.stdout)
        return 0
    print("usage: keygen.py csr [SPIFFE_ID]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
