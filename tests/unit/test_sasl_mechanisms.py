"""The SASL pieces without a network: JAAS parsing, the login throttle, session lifetimes, SCRAM
credentials in Kafka's text and JSON forms, the credential file, and JWT checks."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from odradek.config import ConfigError
from odradek.security import devcerts
from odradek.security.credentials import (
    CredentialNotFound,
    FileCredentialStore,
    ScramCredential,
    decode_user_config,
    encode_user_config,
    make_credential,
)
from odradek.security.oauthbearer import InvalidToken, JwksFile, TokenValidator
from odradek.security.sasl import (
    LoginThrottle,
    PlainServer,
    SaslFailure,
    parse_jaas_config,
    session_lifetime_ms,
)


def test_jaas_config_is_parsed_as_kafka_writes_it() -> None:
    modules = parse_jaas_config(
        'org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" '
        'password="admin-secret" user_admin="admin-secret" user_alice="a;b \\"quoted\\"";')
    assert len(modules) == 1
    assert modules[0].class_name.endswith("PlainLoginModule") and modules[0].flag == "required"
    assert modules[0].options["user_alice"] == 'a;b "quoted"'
    assert "admin-secret" not in repr(modules[0])  # options hold passwords


@pytest.mark.parametrize("text", ["PlainLoginModule", 'PlainLoginModule required user_a="x"',
                                  'PlainLoginModule required user_a=;', 'PlainLoginModule maybe;'])
def test_bad_jaas_config_is_one_sentence_without_the_secret(text: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_jaas_config(text)
    assert '"x"' not in str(refused.value)


def test_plain_refuses_unknown_users_and_wrong_passwords_alike() -> None:
    for token in (b"\0alice\0wrong", b"\0nobody\0wrong", b"alice\0\0pw", b"other\0alice\0pw", b"\0alice"):
        with pytest.raises(SaslFailure):
            PlainServer({"alice": "pw"}).evaluate(token)
    server = PlainServer({"alice": "pw"})
    assert server.evaluate(b"alice\0alice\0pw") == b"" and str(server.principal) == "User:alice"


def test_login_throttle_doubles_per_host_up_to_its_cap_and_forgets() -> None:
    throttle = LoginThrottle(100, max_delay_ms=1000, window_s=60)
    delays = [throttle.failed("10.0.0.1", now=t) for t in range(6)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert throttle.failed("10.0.0.2", now=6) == 0.1  # another host starts afresh
    assert throttle.failed("10.0.0.1", now=200) == 0.1  # a minute of quiet forgives


def test_session_lifetime_is_the_sooner_of_max_reauth_and_the_credential() -> None:
    assert session_lifetime_ms(0, None, 1000) == 0
    assert session_lifetime_ms(5000, None, 1000) == 5000
    assert session_lifetime_ms(0, 4000, 1000) == 3000
    assert session_lifetime_ms(5000, 4000, 1000) == 3000
    assert session_lifetime_ms(2000, 4000, 1000) == 2000


def test_scram_credentials_in_kafkas_text_and_znode_forms() -> None:
    cred = make_credential("SCRAM-SHA-512", "pw", 4096, salt=b"0123456789abcdef")
    text = cred.to_text()
    assert text.startswith("salt=MDEyMzQ1Njc4OWFiY2RlZg==,stored_key=") and text.endswith(",iterations=4096")
    assert ScramCredential.from_text(text) == cred
    raw = encode_user_config({"SCRAM-SHA-512": cred})
    assert json.loads(raw) == {"version": 1, "config": {"SCRAM-SHA-512": text}}
    # a quota next to the credential is not a SCRAM entry
    with_quota = json.dumps({"version": 1, "config": {"SCRAM-SHA-512": text, "producer_byte_rate": "1024"}})
    assert decode_user_config(with_quota.encode()) == {"SCRAM-SHA-512": cred}
    assert "stored_key" not in repr(cred)


def test_the_credential_file_survives_reopening_and_refuses_missing_deletions(tmp_path: Path) -> None:
    path = tmp_path / "scram-credentials.json"
    store = FileCredentialStore(path)
    cred = make_credential("SCRAM-SHA-256", "pw")
    asyncio.run(store.alter("alice", {"SCRAM-SHA-256": cred}, set()))
    with pytest.raises(CredentialNotFound):
        asyncio.run(store.alter("alice", {}, {"SCRAM-SHA-512"}))
    again = FileCredentialStore(path)
    assert again.credential("alice", "SCRAM-SHA-256") == cred
    asyncio.run(again.alter("alice", {}, {"SCRAM-SHA-256"}))
    assert FileCredentialStore(path).users() == {}
    assert path.stat().st_mode & 0o077 == 0


def test_jwt_checks(tmp_path: Path) -> None:
    rs, es = devcerts.new_signing_key("RS256"), devcerts.new_signing_key("ES256")
    jwks = devcerts.write_jwks(tmp_path / "jwks.json", [rs, es])
    validator = TokenValidator(JwksFile(jwks), issuer="iss-1", audience=["aud-1", "aud-2"], sub_claim="client_id")
    now = time.time()
    good = {"client_id": "svc", "iss": "iss-1", "aud": ["aud-2"], "exp": now + 60}
    assert validator.validate(devcerts.sign_jwt(rs, good)).principal_name == "svc"
    assert validator.validate(devcerts.sign_jwt(es, good, kid=False)).expires_at_ms == int((now + 60) * 1000)
    bad = [
        {**good, "exp": now - 60},  # past the 30 s skew
        {k: v for k, v in good.items() if k != "exp"},
        {**good, "iss": "iss-2"},
        {**good, "aud": "aud-3"},
        {**good, "nbf": now + 600},
        {k: v for k, v in good.items() if k != "client_id"},
    ]
    for claims in bad:
        with pytest.raises(InvalidToken):
            validator.validate(devcerts.sign_jwt(rs, claims))
    forged = devcerts.sign_jwt(devcerts.new_signing_key("RS256", kid=rs.kid), good)
    header, payload, _ = devcerts.sign_jwt(rs, good).split(".")
    for token in (forged, f"{header}.{payload}.", "not-a-jwt", f"{header}.{payload}"):
        with pytest.raises(InvalidToken):
            validator.validate(token)
