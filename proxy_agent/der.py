"""Read the few fields the agent needs from its certificate and key, without `cryptography`.

The running agent only needs a certificate's validity, its SPIFFE id (the SAN URI) and
whether the stored key belongs to it; importing `cryptography` for that would cost the
agent about 11 MB of memory for as long as it runs. Making keys and CSRs does need it:
that happens in a short-lived child process (keygen.py). This is a reader of DER (the
X.509 and PKCS #8 structures only), not a verifier: the TLS stack checks certificates.
"""

from __future__ import annotations

import base64
import datetime
import re
from collections.abc import Iterator
from dataclasses import dataclass

SEQUENCE, OCTET_STRING, BIT_STRING, OID = 0x30, 0x04, 0x03, 0x06
UTC_TIME, GENERALIZED_TIME = 0x17, 0x18
EXTENSIONS = 0xA3  # [3] EXPLICIT in TBSCertificate
EC_PUBLIC_KEY = 0xA1  # [1] EXPLICIT in ECPrivateKey
SAN_OID = bytes((0x55, 0x1D, 0x11))  # 2.5.29.17
URI = 0x86  # GeneralName uniformResourceIdentifier [6] IMPLICIT

_PEM = re.compile(rb"-----BEGIN ([A-Z ]+)-----(.*?)-----END \1-----", re.S)


class DERError(ValueError):
    """Not the DER structure expected."""


@dataclass(frozen=True)
class CertificateInfo:
    not_before: datetime.datetime
    not_after: datetime.datetime
    uris: tuple[str, ...]
    public_key: bytes  # the SubjectPublicKeyInfo, DER


def pem_blocks(data: bytes, label: bytes) -> list[bytes]:
    """The DER contents of the PEM blocks labelled `label` (e.g. b"CERTIFICATE"), in order."""
    return [base64.b64decode(body) for kind, body in _PEM.findall(data) if kind == label]


def _tlv(data: bytes, i: int) -> tuple[int, int, int, int]:
    """(tag, start of contents, end of contents, start of the element) of the element at i."""
    if i + 2 > len(data):
        raise DERError("truncated element")
    tag, length = data[i], data[i + 1]
    start = i + 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4 or start + count > len(data):
            raise DERError("bad length")
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    end = start + length
    if end > len(data):
        raise DERError("truncated element")
    return tag, start, end, i


def _children(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple]:
    i, end = start, len(data) if end is None else end
    while i < end:
        tag, s, e, at = _tlv(data, i)
        yield tag, s, e, at
        i = e


def _expect(element: tuple, tag: int, what: str) -> tuple:
    if element[0] != tag:
        raise DERError(f"{what}: expected tag {tag:#x}, found {element[0]:#x}")
    return element


def _time(data: bytes, element: tuple) -> datetime.datetime:
    tag, s, e, _ = element
    text = data[s:e].decode("ascii")
    if not text.endswith("Z"):
        raise DERError(f"time {text!r} is not UTC")
    text = text[:-1].split(".")[0]  # fractional seconds do not matter here
    if tag == UTC_TIME:
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != GENERALIZED_TIME:
        raise DERError(f"expected a time, found tag {tag:#x}")
    moment = datetime.datetime.strptime(text, "%Y%m%d%H%M%S")
    return moment.replace(tzinfo=datetime.UTC)


def certificate_info(der: bytes) -> CertificateInfo:
    """Validity, SAN URIs and public key of an X.509 certificate (DER)."""
    cert = _expect(next(_children(der)), SEQUENCE, "Certificate")
    tbs = _expect(next(_children(der, cert[1], cert[2])), SEQUENCE, "TBSCertificate")
    fields = list(_children(der, tbs[1], tbs[2]))
    if fields and fields[0][0] == 0xA0:  # version [0]
        fields = fields[1:]
    if len(fields) < 6:
        raise DERError("TBSCertificate: too few fields")
    # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, ...
    validity = _expect(fields[3], SEQUENCE, "Validity")
    times = list(_children(der, validity[1], validity[2]))
    if len(times) != 2:
        raise DERError("Validity: expected two times")
    spki = _expect(fields[5], SEQUENCE, "SubjectPublicKeyInfo")
    uris: list[str] = []
    for tag, s, e, _ in fields[6:]:
        if tag != EXTENSIONS:
            continue
        sequence = _expect(next(_children(der, s, e)), SEQUENCE, "Extensions")
        for extension in _children(der, sequence[1], sequence[2]):
            parts = list(_children(der, extension[1], extension[2]))
            if not parts or der[parts[0][1] : parts[0][2]] != SAN_OID:
                continue
            value = _expect(parts[-1], OCTET_STRING, "extnValue")
            names = _expect(next(_children(der, value[1], value[2])), SEQUENCE, "GeneralNames")
            for name_tag, ns, ne, _ in _children(der, names[1], names[2]):
                if name_tag == URI:
                    uris.append(der[ns:ne].decode("ascii"))
    return CertificateInfo(
        not_before=_time(der, times[0]),
        not_after=_time(der, times[1]),
        uris=tuple(uris),
        public_key=der[spki[3] : spki[2]],
    )


def ec_public_key_info(pkcs8: bytes) -> bytes | None:
    """The SubjectPublicKeyInfo (DER) of an EC private key in PKCS #8 (DER), built from the
    public key the key carries; None when it carries none (or is not an EC key)."""
    info = _expect(next(_children(pkcs8)), SEQUENCE, "PrivateKeyInfo")
    fields = list(_children(pkcs8, info[1], info[2]))
    if len(fields) < 3:
        raise DERError("PrivateKeyInfo: too few fields")
    algorithm = _expect(fields[1], SEQUENCE, "AlgorithmIdentifier")
    private = _expect(fields[2], OCTET_STRING, "privateKey")
    inner = _expect(next(_children(pkcs8, private[1], private[2])), SEQUENCE, "ECPrivateKey")
    for tag, s, e, _ in _children(pkcs8, inner[1], inner[2]):
        if tag == EC_PUBLIC_KEY:
            bits = _expect(next(_children(pkcs8, s, e)), BIT_STRING, "publicKey")
            body = pkcs8[algorithm[3] : algorithm[2]] + pkcs8[bits[3] : bits[2]]
            return bytes((SEQUENCE,)) + _length(len(body)) + body
    return None


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(raw),)) + raw
