"""OAUTHBEARER (RFC 7628) with signed JWTs, as Kafka's OAuthBearerValidatorCallbackHandler checks them.

The client's one message is `n,[a=authzid],\\x01auth=Bearer <jwt>\\x01[key=value\\x01...]\\x01`.
The JWT's signature must verify against a key of the JWKS file named by
`sasl.oauthbearer.jwks.endpoint.url` (`file:///path/jwks.json`, re-read when it
changes; RS256/384/512, PS256/384/512, ES256/384/512), `exp` must be present
and in the future, `iss` and `aud` must match `sasl.oauthbearer.expected.issuer` /
`sasl.oauthbearer.expected.audience` when those are set, all within
`sasl.oauthbearer.clock.skew.seconds` (30). The principal is the claim named by
`sasl.oauthbearer.sub.claim.name` (`sub`), and the token's expiry bounds the
session (KIP-368).

A refused token is answered as Kafka does: the server's challenge is
`{"status":"invalid_token"}`, the client acknowledges with `\\x01`, and only then
does the login fail, with that JSON as the error message.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from odradek.config import ConfigError
from odradek.security import KafkaPrincipal
from odradek.security.sasl import OAUTHBEARER, SaslFailure

INVALID_TOKEN = b'{"status":"invalid_token"}'
MAX_TOKEN_BYTES = 64 * 1024
DEFAULT_CLOCK_SKEW_S = 30
MIN_RSA_BITS = 2048

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
_CURVES: dict[str, tuple[type[ec.EllipticCurve], int]] = {
    "ES256": (ec.SECP256R1, 32), "ES384": (ec.SECP384R1, 48), "ES512": (ec.SECP521R1, 66),
}
_JWK_CURVES: dict[str, type[ec.EllipticCurve]] = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1, "P-521": ec.SECP521R1}
SUPPORTED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")


class JwksError(ValueError):
    """A JWKS document odradek cannot use."""


class InvalidToken(Exception):
    """Why a token is refused, for the broker's log (never the token itself)."""


def _b64url(segment: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", segment):
        raise InvalidToken("a JWT segment is not base64url")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("a JWT segment is not base64url") from None


def _b64url_int(value: object) -> int:
    if not isinstance(value, str):
        raise JwksError("a key parameter is not a string")
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


@dataclass(frozen=True, slots=True)
class Jwk:
    kid: str | None
    kty: str  # RSA or EC
    alg: str | None
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def parse_jwks(raw: bytes) -> list[Jwk]:
    """The signing keys of a JWKS document (RFC 7517); other key types are skipped."""
    doc = json.loads(raw)
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise JwksError('a JWKS document is {"keys": [...]}')
    keys: list[Jwk] = []
    for entry in doc["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kty = entry.get("kty")
        kid = entry.get("kid") if isinstance(entry.get("kid"), str) else None
        alg = entry.get("alg") if isinstance(entry.get("alg"), str) else None
        key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
        if kty == "RSA":
            key = rsa.RSAPublicNumbers(_b64url_int(entry.get("e")), _b64url_int(entry.get("n"))).public_key()
        elif kty == "EC" and entry.get("crv") in _JWK_CURVES:
            curve = _JWK_CURVES[str(entry["crv"])]()
            key = ec.EllipticCurvePublicNumbers(
                _b64url_int(entry.get("x")), _b64url_int(entry.get("y")), curve
            ).public_key()
        else:
            continue
        keys.append(Jwk(kid, kty, alg, key))
    return keys


class JwksFile:
    """The keys of a JWKS file, re-read when its size or modification time changes."""

    CHECK_EVERY_S = 1.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self.keys: list[Jwk] = []
        self._load()

    def _load(self) -> None:
        stat = self.path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self.keys = parse_jwks(self.path.read_bytes())
            self._stamp = stamp

    def current(self) -> list[Jwk]:
        now = time.monotonic()
        if now - self._checked >= self.CHECK_EVERY_S:
            self._checked = now
            try:
                self._load()
            except (OSError, ValueError):  # a file being rewritten: keep the keys we have
                pass
        return self.keys


@dataclass(frozen=True, slots=True)
class ValidToken:
    principal_name: str
    expires_at_ms: int


class TokenValidator:
    """Kafka's JWT checks for one listener."""

    def __init__(self, jwks: JwksFile, *, issuer: str | None = None, audience: list[str] | None = None,
                 sub_claim: str = "sub", clock_skew_s: int = DEFAULT_CLOCK_SKEW_S) -> None:
        self.jwks = jwks
        self.issuer = issuer
        self.audience = audience or []
        self.sub_claim = sub_claim
        self.clock_skew_s = clock_skew_s

    @classmethod
    def from_config(cls, setting: Callable[[str], Any], listener: str) -> TokenValidator:
        url = setting("sasl.oauthbearer.jwks.endpoint.url")
        if not url:
            raise ConfigError(
                f"listener {listener} enables OAUTHBEARER but sasl.oauthbearer.jwks.endpoint.url is not set "
                "(file:///path/jwks.json)"
            )
        parsed = urlparse(str(url))
        if parsed.scheme != "file":
            raise ConfigError(f"sasl.oauthbearer.jwks.endpoint.url must be a file:// URL, not {parsed.scheme}://")
        path = Path(unquote(parsed.path))
        try:
            jwks = JwksFile(path)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the JWKS file {path}: {exc}") from None
        audience = str(setting("sasl.oauthbearer.expected.audience") or "")
        skew = setting("sasl.oauthbearer.clock.skew.seconds")
        return cls(
            jwks,
            issuer=str(setting("sasl.oauthbearer.expected.issuer") or "") or None,
            audience=[a.strip() for a in audience.split(",") if a.strip()],
            sub_claim=str(setting("sasl.oauthbearer.sub.claim.name") or "sub"),
            clock_skew_s=int(skew) if skew is not None else DEFAULT_CLOCK_SKEW_S,
        )

    def validate(self, token: str, now: float | None = None) -> ValidToken:
        now = time.time() if now is None else now
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken(f"the token is longer than {MAX_TOKEN_BYTES} bytes")
        segments = token.split(".")
        if len(segments) != 3:
            raise InvalidToken("the token is not a signed JWT (header.payload.signature)")
        try:
            header = json.loads(_b64url(segments[0]))
            claims = json.loads(_b64url(segments[1]))
        except ValueError:
            raise InvalidToken("the JWT header or payload is not JSON") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise InvalidToken("the JWT header or payload is not a JSON object")
        alg = header.get("alg")
        if alg not in SUPPORTED_ALGORITHMS:
            raise InvalidToken(f"JWT algorithm {str(alg)[:16]!r} is not accepted ({', '.join(SUPPORTED_ALGORITHMS)})")
        if header.get("crit"):
            raise InvalidToken("the JWT has critical header parameters")
        self._verify(str(alg), header.get("kid"), f"{segments[0]}.{segments[1]}".encode(), _b64url(segments[2]))
        return self._check_claims(claims, now)

    def _verify(self, alg: str, kid: object, signing_input: bytes, signature: bytes) -> None:
        keys = self.jwks.current()
        if isinstance(kid, str):
            candidates = [k for k in keys if k.kid == kid]
            if not candidates:
                raise InvalidToken("no key of the JWKS has the token's kid")
        else:
            candidates = keys
        candidates = [k for k in candidates if (k.alg is None or k.alg == alg) and k.kty == ("EC" if alg[0] == "E" else "RSA")]
        if not candidates:
            raise InvalidToken(f"no key of the JWKS is for {alg}")
        for jwk in candidates:
            if _signature_ok(alg, jwk.key, signing_input, signature):
                return
        raise InvalidToken("the JWT signature does not verify")

    def _check_claims(self, claims: dict[str, Any], now: float) -> ValidToken:
        skew = self.clock_skew_s
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise InvalidToken("the JWT has no exp claim")
        if exp + skew <= now:
            raise InvalidToken(f"the JWT expired {int(now - exp)} s ago")
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and not isinstance(nbf, bool) and nbf - skew > now:
            raise InvalidToken("the JWT is not valid yet (nbf)")
        if self.issuer is not None and claims.get("iss") != self.issuer:
            raise InvalidToken("the JWT's iss is not sasl.oauthbearer.expected.issuer")
        if self.audience:
            aud = claims.get("aud")
            auds = [aud] if isinstance(aud, str) else [a for a in aud if isinstance(a, str)] if isinstance(aud, list) else []
            if not set(auds) & set(self.audience):
                raise InvalidToken("the JWT's aud is not one of sasl.oauthbearer.expected.audience")
        principal = claims.get(self.sub_claim)
        if not isinstance(principal, str) or not principal.strip():
            raise InvalidToken(f"the JWT has no {self.sub_claim} claim (sasl.oauthbearer.sub.claim.name)")
        return ValidToken(principal, int(exp * 1000))


def _signature_ok(alg: str, key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey, data: bytes, signature: bytes) -> bool:
    hash_type = _HASHES[alg[2:]]
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size < MIN_RSA_BITS:
                return False
            pad: padding.AsymmetricPadding = (
                padding.PKCS1v15() if alg.startswith("RS")
                else padding.PSS(mgf=padding.MGF1(hash_type()), salt_length=padding.PSS.DIGEST_LENGTH)
            )
            key.verify(signature, data, pad, hash_type())
            return True
        curve, size = _CURVES[alg]
        if not isinstance(key.curve, curve) or len(signature) != 2 * size:
            return False
        der = encode_dss_signature(int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big"))
        key.verify(der, data, ec.ECDSA(hash_type()))
        return True
    except (InvalidSignature, ValueError):
        return False


_CLIENT_FIRST = re.compile(
    r"(?P<gs2>[ny]),(?:a=(?P<authzid>[^,]*))?,\x01(?P<pairs>(?:[A-Za-z]+=[\x21-\x7E \t\r\n]+\x01)*)\x01"
)
_AUTH = re.compile(r"(?P<scheme>\w+) +(?P<token>[-_.a-zA-Z0-9]+)")


class OAuthBearerServer:
    """The server side of one OAUTHBEARER login (Kafka's OAuthBearerSaslServer)."""

    mechanism = OAUTHBEARER

    def __init__(self, validator: TokenValidator) -> None:
        self._validator = validator
        self._refused: str | None = None  # why the token was refused, once the challenge went out
        self.complete = False
        self.principal: KafkaPrincipal | None = None
        self.user: str | None = None
        self.credential_expires_at_ms: int | None = None

    def evaluate(self, token: bytes) -> bytes:
        if self._refused is not None:  # the client's answer to {"status":"invalid_token"}
            raise SaslFailure(self._refused, client_message=INVALID_TOKEN.decode())
        if self.complete:
            raise SaslFailure("OAUTHBEARER takes one message")
        try:
            text = token.decode()
        except UnicodeDecodeError:
            raise SaslFailure("the OAUTHBEARER message is not UTF-8") from None
        match = _CLIENT_FIRST.fullmatch(text)
        if match is None:
            raise SaslFailure("the OAUTHBEARER message is not an RFC 7628 client response")
        pairs = dict(p.split("=", 1) for p in match.group("pairs").split("\x01") if p)
        auth = _AUTH.fullmatch(pairs.get("auth", ""))
        if auth is None or auth.group("scheme").lower() != "bearer":
            raise SaslFailure("the OAUTHBEARER message has no bearer token")
        try:
            valid = self._validator.validate(auth.group("token"))
        except InvalidToken as exc:
            self._refused = f"invalid token: {exc}"
            return INVALID_TOKEN
        self.user = valid.principal_name
        authzid = match.group("authzid")
        if authzid and authzid != valid.principal_name:
            raise SaslFailure(
                "the authorization id differs from the token's principal",
                client_message=(f"Authentication failed: Client requested an authorization id ({authzid}) "
                                f"that is different from the token's principal name ({valid.principal_name})"),
                user=valid.principal_name,
            )
        self.complete = True
        self.principal = KafkaPrincipal("User", valid.principal_name)
        self.credential_expires_at_ms = valid.expires_at_ms
        return b""

