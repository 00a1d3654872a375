"""proxy_agent.der reads what `cryptography` reads from the agent's certificates and keys."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxy_agent import der

SPIFFE = "spiffe://123456789012.meshplane.local/mesh/shop/virtualNode/cart"
DER = serialization.Encoding.DER
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    key: ec.EllipticCurvePrivateKey,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    uris: list[str],
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Meshplane")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("cart.local")] + [x509.UniformResourceIdentifier(u) for u in uris]
            ),
            critical=False,
        )
    return builder.sign(key, hashes.SHA256())


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [
        # UTCTime (before 2050) and GeneralizedTime (2050 and later) validity encodings.
        (datetime.datetime(2026, 11, 29, 12, 0, 5), datetime.datetime(2026, 11, 30, 12, 0, 5)),
        (datetime.datetime(2049, 6, 1), datetime.datetime(2051, 1, 2, 3, 4, 5)),
    ],
)
def test_certificate_fields_match_cryptography(not_before, not_after):
    key = _key()
    cert = _cert(key, not_before, not_after, [SPIFFE])
    info = der.certificate_info(cert.public_bytes(DER))
    assert info.not_before == cert.not_valid_before_utc
    assert info.not_after == cert.not_valid_after_utc
    assert info.uris == (SPIFFE,)
    assert info.public_key == cert.public_key().public_bytes(DER, SPKI)


def test_certificate_without_san_has_no_uris():
    key = _key()
    start = datetime.datetime(2026, 1, 1)
    cert = _cert(key, start, start + datetime.timedelta(hours=24), [])
    assert der.certificate_info(cert.public_bytes(DER)).uris == ()


def test_pem_chain_blocks_in_order():
    key = _key()
    start = datetime.datetime(2026, 1, 1)
    leaf = _cert(key, start, start + datetime.timedelta(hours=1), [SPIFFE])
    other = _cert(_key(), start, start + datetime.timedelta(hours=2), [])
    pem = leaf.public_bytes(serialization.Encoding.PEM) + other.public_bytes(
        serialization.Encoding.PEM
    )
    blocks = der.pem_blocks(pem, b"CERTIFICATE")
    assert blocks == [leaf.public_bytes(DER), other.public_bytes(DER)]


def test_private_key_public_part_matches_only_its_certificate():
    key, stranger = _key(), _key()
    start = datetime.datetime(2026, 1, 1)
    cert = _cert(key, start, start + datetime.timedelta(hours=1), [SPIFFE])
    pkcs8 = key.private_bytes(DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    other = stranger.private_bytes(
        DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = der.certificate_info(cert.public_bytes(DER)).public_key
    assert der.ec_public_key_info(pkcs8) == public
    assert der.ec_public_key_info(other) != public


@pytest.mark.parametrize("cut", [1, 10, 100, -1])
def test_truncated_certificate_is_a_der_error(cut):
    key = _key()
    start = datetime.datetime(2026, 1, 1)
    data = _cert(key, start, start + datetime.timedelta(hours=1), [SPIFFE]).public_bytes(DER)
    with pytest.raises(der.DERError):
        der.certificate_info(data[:cut])


def test_not_a_certificate_is_a_der_error():
    with pytest.raises(der.DERError):
        der.certificate_info(b"\x04\x03abc")
