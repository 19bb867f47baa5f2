"""Certificates and token keys for trying security out locally (tests, `odradek cert dev`).

Writes, with the `cryptography` package:
- a CA (`ca.pem`, `ca-key.pem`), which is also the truststore (`truststore.pem`:
  Kafka's `ssl.truststore.location` with `ssl.truststore.type=PEM`);
- the broker's PEM keystore (`broker-keystore.pem`: private key, certificate and CA
  chain in one file, Kafka's `ssl.keystore.location` with `ssl.keystore.type=PEM`), for
  127.0.0.1 and localhost plus any other host names, its key optionally encrypted
  (`ssl.key.password`);
- client certificates (`<cn>.pem`, `<cn>-key.pem`) for mTLS, optionally already expired;
- JWT signing keys and the JWKS file OAUTHBEARER checks tokens against
  (`sasl.oauthbearer.jwks.endpoint.url=file:///.../jwks.json`), and `sign_jwt`.

Never for production: the CA key sits next to the certificates, unencrypted.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

DAY = datetime.timedelta(days=1)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key(kind: str = "ec") -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: PrivateKey, password: str | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    key: PrivateKey
    cert: x509.Certificate
    cert_path: Path
    key_path: Path

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> CertificateAuthority:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise TypeError(f"{key_path} is not an EC or RSA key")
        return cls(key, x509.load_pem_x509_certificate(cert_path.read_bytes()), cert_path, key_path)

    def issue(
        self,
        subject: x509.Name,
        public_key: Any,
        *,
        hosts: Sequence[str] = (),
        server: bool = False,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> x509.Certificate:
        """A leaf certificate signed by this CA (server and client use, or client only)."""
        now = _now()
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - datetime.timedelta(minutes=5))
            .not_valid_after(not_after or now + 365 * DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(self.key, hashes.SHA256())


def write_ca(directory: Path, name: str = "odradek dev CA", days: int = 3650) -> CertificateAuthority:
    """`ca.pem` and `ca-key.pem`; `truststore.pem` is a copy of `ca.pem` under Kafka's word."""
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + days * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = _write(directory / "ca.pem", _cert_pem(cert))
    _write(directory / "truststore.pem", _cert_pem(cert))
    key_path = _write(directory / "ca-key.pem", _key_pem(key), private=True)
    return CertificateAuthority(key, cert, cert_path, key_path)


def write_broker_keystore(
    ca: CertificateAuthority,
    path: Path,
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    password: str | None = None,
) -> Path:
    """Kafka's PEM keystore for a broker: key (encrypted when `password`), certificate, CA."""
    key = _new_key()
    cn = next((h for h in hosts if not _is_ip(h)), hosts[0] if hosts else "localhost")
    cert = ca.issue(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]), key.public_key(),
                    hosts=hosts, server=True)
    return _write(path, _key_pem(key, password) + _cert_pem(cert) + _cert_pem(ca.cert), private=True)


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    cert_path: Path  # the certificate followed by the CA (librdkafka's ssl.certificate.location)
    key_path: Path  # ssl.key.location
    subject: str  # RFC 4514, what ssl.principal.mapping.rules=DEFAULT makes the principal


def write_client_certificate(
    ca: CertificateAuthority,
    directory: Path,
    common_name: str,
    *,
    expired: bool = False,
    password: str | None = None,
    organization: str | None = None,
) -> ClientCertificate:
    """`<cn>.pem` and `<cn>-key.pem`: a client certificate for mTLS; `expired` makes one whose
    validity ended yesterday (a broker must refuse it)."""
    key = _new_key()
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    subject = x509.Name(attributes)
    now = _now()
    window = (now - 30 * DAY, now - DAY) if expired else (None, None)
    cert = ca.issue(subject, key.public_key(), not_before=window[0], not_after=window[1])
    stem = common_name.replace("/", "_") + ("-expired" if expired else "")
    return ClientCertificate(
        _write(directory / f"{stem}.pem", _cert_pem(cert) + _cert_pem(ca.cert)),
        _write(directory / f"{stem}-key.pem", _key_pem(key, password), private=True),
        subject.rfc4514_string(),
    )


@dataclass(frozen=True, slots=True)
class DevCertificates:
    directory: Path
    ca: CertificateAuthority
    keystore: Path
    truststore: Path
    key_password: str | None
    clients: dict[str, ClientCertificate]


def write_dev_certificates(
    directory: Path,
    *,
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    key_password: str | None = None,
    clients: Sequence[str] = (),
) -> DevCertificates:
    """Everything a local SSL / SASL_SSL broker and its clients need, in `directory`."""
    ca = write_ca(directory)
    keystore = write_broker_keystore(ca, directory / "broker-keystore.pem", hosts, key_password)
    made = {cn: write_client_certificate(ca, directory, cn) for cn in clients}
    return DevCertificates(directory, ca, keystore, directory / "truststore.pem", key_password, made)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# -- OAUTHBEARER: signing keys, JWKS, tokens -----------------------------------

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64url(value: int, length: int | None = None) -> str:
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return _b64url(value.to_bytes(size, "big"))


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    alg: str  # RS256 or ES256
    key: PrivateKey

    def jwk(self) -> dict[str, str]:
        if isinstance(self.key, rsa.RSAPrivateKey):
            numbers = self.key.public_key().public_numbers()
            return {"kty": "RSA", "kid": self.kid, "alg": self.alg, "use": "sig",
                    "n": _int_b64url(numbers.n), "e": _int_b64url(numbers.e)}
        point = self.key.public_key().public_numbers()
        return {"kty": "EC", "kid": self.kid, "alg": self.alg, "use": "sig", "crv": "P-256",
                "x": _int_b64url(point.x, 32), "y": _int_b64url(point.y, 32)}


def new_signing_key(alg: str = "RS256", kid: str | None = None) -> SigningKey:
    if alg not in ("RS256", "ES256"):
        raise ValueError("devcerts signs tokens with RS256 or ES256")
    return SigningKey(kid or f"odradek-dev-{alg.lower()}", alg, _new_key("rsa" if alg == "RS256" else "ec"))


def write_jwks(path: Path, keys: Sequence[SigningKey]) -> Path:
    """The public halves of `keys` as a JWKS document (RFC 7517)."""
    return _write(path, json.dumps({"keys": [k.jwk() for k in keys]}, indent=1).encode())


def sign_jwt(key: SigningKey, claims: dict[str, Any], *, kid: bool = True) -> str:
    """A compact JWS of `claims` (RFC 7515/7519)."""
    header: dict[str, str] = {"alg": key.alg, "typ": "JWT"}
    if kid:
        header["kid"] = key.kid
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}".encode()
    if isinstance(key.key, rsa.RSAPrivateKey):
        signature = key.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    else:
        r, s = decode_dss_signature(key.key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{signing_input.decode()}.{_b64url(signature)}"
