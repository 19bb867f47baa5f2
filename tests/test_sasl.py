"""SASL and mTLS against real `odradek serve` processes, with real clients and real handshakes.

Three brokers are shared by the module (each advertises the listener under test as its
inter-broker listener, so Metadata sends clients back to it):
- `scram_broker`: SASL_SSL with SCRAM-SHA-512/256 and PLAIN (the admin), users created with
  confluent-kafka's AdminClient (AlterUserScramCredentials); confluent-kafka, kafka-python,
  aiokafka, kcat and kafkajs produce and consume as a SCRAM user;
- `plain_broker`: SASL_PLAINTEXT with PLAIN (JAAS users) and OAUTHBEARER (JWTs checked against
  a JWKS file), connections.max.reauth.ms=3000 (KIP-368);
- `mtls_broker`: SSL with ssl.client.auth=required.
Raw sockets speak the SASL requests by hand for what clients never send: skipped or
out-of-order steps, garbage tokens, an unknown user next to a wrong password.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_fixtures import FAST_ENV, ZooKeeper
from cluster_fixtures import ClusterBroker as ZkBroker
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)
from conftest import BrokerProcess, free_port, recv_exact, unique
from kio.schema.errors import ErrorCode
from scramp import ScramClient  # type: ignore[import-untyped]

from odradek.protocol.build import build
from odradek.protocol.framing import decode_response, encode_request, request_type
from odradek.security import devcerts

pytest_plugins = ["cluster_fixtures"]  # the zookeeper fixture

ADMIN_PASSWORD = "admin-secret-9f3c"
ALICE_PLAIN_PASSWORD = "alice-plain-secret-51d0"
SCRAM_USERS = {"alice": "alice-scram-secret-7e21", "bob": "bob-scram-secret-0c4a"}
WRONG_PASSWORD = "not-the-password-4411"
ISSUER = "https://issuer.odradek.test"
AUDIENCE = "odradek-cluster"
REAUTH_MS = 3000
FAILED_DELAY_MS = 20  # Kafka's 100 ms, shortened (listener-scoped) so the failure tests stay quick
FAST = {"ODRADEK_GROUP_INITIAL_REBALANCE_DELAY_MS": "0", "ODRADEK_OFFSETS_TOPIC_NUM_PARTITIONS": "3"}
JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" '
        f'password="{ADMIN_PASSWORD}" user_admin="{ADMIN_PASSWORD}" user_alice="{ALICE_PLAIN_PASSWORD}";')
TOKENS: list[str] = []  # every JWT handed to a broker, to look for in its log


# -- certificates, keys, brokers --------------------------------------------------

class Certs:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.made = devcerts.write_dev_certificates(directory, key_password="keystore-pass-1", clients=["alice"])
        self.ca = self.made.ca
        self.truststore = self.made.truststore
        self.expired = devcerts.write_client_certificate(self.ca, directory, "mallory", expired=True)
        other_ca = devcerts.write_ca(directory / "other")
        self.foreign = devcerts.write_client_certificate(other_ca, directory / "other", "eve")
        self.rs256 = devcerts.new_signing_key("RS256")
        self.es256 = devcerts.new_signing_key("ES256")
        self.jwks = devcerts.write_jwks(directory / "jwks.json", [self.rs256, self.es256])
        self.stranger = devcerts.new_signing_key("RS256", kid=self.rs256.kid)  # same kid, key not in the JWKS

    def token(self, sub: str = "svc-reporting", *, key: devcerts.SigningKey | None = None, lifetime_s: float = 3600,
              **claims: Any) -> str:
        now = time.time()
        body = {"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": int(now), "exp": int(now + lifetime_s), **claims}
        token = devcerts.sign_jwt(key or self.rs256, body)
        TOKENS.append(token)
        return token


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("certs"))


def start_broker(directory: Path, listener: str, settings: dict[str, str], *args: str) -> BrokerProcess:
    """A broker with the fixture's PLAINTEXT port plus `listener` (its inter-broker listener)."""
    b = BrokerProcess(directory / "data", env=FAST)
    b.secure_port = free_port()  # type: ignore[attr-defined]
    props = {
        "listeners": f"PLAINTEXT://127.0.0.1:{b.port},{listener}://127.0.0.1:{b.secure_port}",  # type: ignore[attr-defined]
        "inter.broker.listener.name": listener,
        **settings,
    }
    path = directory / "server.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    b.extra_args = ["--config", str(path), *args]
    b.start()
    wait_port(b.secure_port)  # type: ignore[attr-defined]
    return b


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def tls_settings(certs: Certs, prefix: str = "") -> dict[str, str]:
    return {f"{prefix}ssl.keystore.location": str(certs.made.keystore),
            f"{prefix}ssl.key.password": "keystore-pass-1",
            f"{prefix}ssl.truststore.location": str(certs.truststore)}


@pytest.fixture(scope="module")
def scram_broker(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    b = start_broker(tmp_path_factory.mktemp("scram"), "SASL_SSL", {
        "sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN",
        "listener.name.sasl_ssl.sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN",
        "listener.name.sasl_ssl.plain.sasl.jaas.config": JAAS,
        "listener.name.sasl_ssl.connection.failed.authentication.delay.ms": str(FAILED_DELAY_MS),
        **tls_settings(certs, "listener.name.sasl_ssl."),
    })
    yield b
    if b.proc is not None and b.proc.poll() is None:
        b.stop()


@pytest.fixture(scope="module")
def plain_broker(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    b = start_broker(tmp_path_factory.mktemp("plain"), "SASL_PLAINTEXT", {
        "sasl.enabled.mechanisms": "PLAIN,OAUTHBEARER,SCRAM-SHA-256",
        "sasl.jaas.config": JAAS,
        "sasl.oauthbearer.jwks.endpoint.url": certs.jwks.as_uri(),
        "sasl.oauthbearer.expected.issuer": ISSUER,
        "sasl.oauthbearer.expected.audience": AUDIENCE,
        "connections.max.reauth.ms": str(REAUTH_MS),
        "listener.name.sasl_plaintext.connection.failed.authentication.delay.ms": str(FAILED_DELAY_MS),
    }, "--log-level", "debug")  # debug: the re-authentications are logged, and searched for secrets too
    yield b
    if b.proc is not None and b.proc.poll() is None:
        b.stop()


@pytest.fixture(scope="module")
def mtls_broker(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    b = start_broker(tmp_path_factory.mktemp("mtls"), "SSL", {**tls_settings(certs), "ssl.client.auth": "required"})
    yield b
    if b.proc is not None and b.proc.poll() is None:
        b.stop()


def sasl_ssl(b: BrokerProcess, certs: Certs, user: str, password: str, mechanism: str = "SCRAM-SHA-512",
             **extra: Any) -> dict[str, Any]:
    return {"bootstrap.servers": f"127.0.0.1:{b.secure_port}", "security.protocol": "SASL_SSL",  # type: ignore[attr-defined]
            "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password,
            "ssl.ca.location": str(certs.truststore), **extra}


def sasl_plaintext(b: BrokerProcess, mechanism: str = "PLAIN", **extra: Any) -> dict[str, Any]:
    return {"bootstrap.servers": f"127.0.0.1:{b.secure_port}", "security.protocol": "SASL_PLAINTEXT",  # type: ignore[attr-defined]
            "sasl.mechanism": mechanism, **extra}


@pytest.fixture(scope="module")
def scram_users(scram_broker: BrokerProcess, certs: Certs) -> dict[str, str]:
    """alice (SCRAM-SHA-512, 8192 iterations) and bob (both mechanisms), created by the PLAIN admin."""
    admin = AdminClient(sasl_ssl(scram_broker, certs, "admin", ADMIN_PASSWORD, "PLAIN"))
    futures = admin.alter_user_scram_credentials([
        UserScramCredentialUpsertion("alice", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                                     SCRAM_USERS["alice"].encode()),
        UserScramCredentialUpsertion("bob", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096),
                                     SCRAM_USERS["bob"].encode()),
        UserScramCredentialUpsertion("bob", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096),
                                     SCRAM_USERS["bob"].encode()),
    ])
    for future in futures.values():
        future.result(15)
    return SCRAM_USERS


# -- speaking SASL by hand ---------------------------------------------------------

class RawClient:
    """Kafka requests over a plain or TLS socket, one at a time."""

    def __init__(self, port: int, ca: Path | None = None) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        if ca is not None:
            context = ssl.create_default_context(cafile=str(ca))
            sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
        self.sock = sock
        self.correlation_id = 0

    def close(self) -> None:
        self.sock.close()

    def send(self, api_key: int, version: int, **fields: Any) -> None:
        self.correlation_id += 1
        body = build(request_type(api_key, version), **fields)
        self.sock.sendall(encode_request(api_key, version, self.correlation_id, body))

    def request(self, api_key: int, version: int, **fields: Any) -> Any:
        self.send(api_key, version, **fields)
        size = struct.unpack(">i", recv_exact(self.sock, 4))[0]
        return decode_response(recv_exact(self.sock, size), api_key, version)[1]

    def handshake(self, mechanism: str) -> Any:
        return self.request(17, 1, mechanism=mechanism)

    def authenticate(self, token: bytes, version: int = 2) -> Any:
        return self.request(36, version, auth_bytes=token)

    def closed_by_broker(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, ssl.SSLError):
            return True
        except TimeoutError:
            return False

    def scram_login(self, user: str, password: str, mechanism: str = "SCRAM-SHA-512") -> Any:
        """The whole exchange; the last SaslAuthenticate response (an error stops it early)."""
        assert self.handshake(mechanism).error_code == ErrorCode.none
        client = ScramClient([mechanism], user, password)
        first = self.authenticate(client.get_client_first().encode())
        if first.error_code != ErrorCode.none:
            return first
        client.set_server_first(first.auth_bytes.decode())
        final = self.authenticate(client.get_client_final().encode())
        if final.error_code == ErrorCode.none:
            client.set_server_final(final.auth_bytes.decode())  # the broker proved it knows the key too
        return final

    def plain_login(self, user: str, password: str) -> Any:
        assert self.handshake("PLAIN").error_code == ErrorCode.none
        return self.authenticate(f"\0{user}\0{password}".encode())

    def oauth_login(self, token: str) -> Any:
        assert self.handshake("OAUTHBEARER").error_code == ErrorCode.none
        return self.authenticate(f"n,,\x01auth=Bearer {token}\x01\x01".encode())


def raw_scram(b: BrokerProcess, certs: Certs) -> RawClient:
    return RawClient(b.secure_port, certs.truststore)  # type: ignore[attr-defined]


def raw_plain(b: BrokerProcess) -> RawClient:
    return RawClient(b.secure_port)  # type: ignore[attr-defined]


def metadata_ok(client: RawClient) -> bool:
    return client.request(3, 9, topics=[], allow_auto_topic_creation=False).brokers is not None


# -- clients ---------------------------------------------------------------------

def produce_consume(config: dict[str, Any], topic: str, count: int = 5) -> list[bytes]:
    p = Producer({**config, "linger.ms": 5})
    errors: list[Any] = []
    for i in range(count):
        p.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(),
                  on_delivery=lambda err, msg: errors.append(err) if err else None)
    assert p.flush(20) == 0 and not errors, errors
    c = Consumer({**config, "group.id": unique("g"), "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(got) < count and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    return got


def auth_error(config: dict[str, Any], wait_s: float = 10.0) -> KafkaError:
    """The first error a client reports (through error_cb) while trying to connect."""
    seen: list[KafkaError] = []
    p = Producer({**config, "error_cb": seen.append})
    deadline = time.monotonic() + wait_s
    while not seen and time.monotonic() < deadline:
        p.poll(0.2)
    assert seen, "no error reported"
    return seen[0]


# -- SCRAM over SASL_SSL ---------------------------------------------------------

def test_scram_users_are_created_and_described_through_the_admin_api(
        scram_broker: BrokerProcess, certs: Certs, scram_users: dict[str, str]) -> None:
    admin = AdminClient(sasl_ssl(scram_broker, certs, "alice", scram_users["alice"]))
    described = admin.describe_user_scram_credentials().result(15)
    infos = {user: sorted((i.mechanism.name, i.iterations) for i in d.scram_credential_infos)
             for user, d in described.items()}
    assert infos == {"alice": [("SCRAM_SHA_512", 8192)], "bob": [("SCRAM_SHA_256", 4096), ("SCRAM_SHA_512", 4096)]}

    one = admin.describe_user_scram_credentials(["nobody"])["nobody"]
    with pytest.raises(Exception) as unknown:
        one.result(15)
    assert unknown.value.args[0].code() == KafkaError.RESOURCE_NOT_FOUND

    def alter(*changes: Any) -> dict[str, Any]:
        results = {}
        for user, future in admin.alter_user_scram_credentials(list(changes)).items():
            try:
                future.result(15)
                results[user] = None
            except Exception as exc:  # noqa: BLE001 - the KafkaException carries the code
                results[user] = exc.args[0].code()
        return results

    too_few = UserScramCredentialUpsertion("carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 1000), b"pw")
    too_many = UserScramCredentialUpsertion("dave", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 20000), b"pw")
    assert alter(too_few, too_many) == {"carol": KafkaError.UNACCEPTABLE_CREDENTIAL,
                                        "dave": KafkaError.UNACCEPTABLE_CREDENTIAL}
    assert alter(UserScramCredentialDeletion("alice", ScramMechanism.SCRAM_SHA_256)) == \
        {"alice": KafkaError.RESOURCE_NOT_FOUND}
    twice = UserScramCredentialUpsertion("erin", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), b"pw")
    assert alter(twice, UserScramCredentialDeletion("erin", ScramMechanism.SCRAM_SHA_512)) == \
        {"erin": KafkaError.DUPLICATE_RESOURCE}
    # a user added and removed again, both through the API
    temp = UserScramCredentialUpsertion("temp", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"pw-temp")
    assert alter(temp) == {"temp": None}
    assert alter(UserScramCredentialDeletion("temp", ScramMechanism.SCRAM_SHA_256)) == {"temp": None}
    assert set(admin.describe_user_scram_credentials().result(15)) == {"alice", "bob"}

    # stored as Kafka does: salt, keys and iterations, never the password
    stored = (scram_broker.data_dir / "scram-credentials.json").read_text()
    assert "stored_key=" in stored and "server_key=" in stored and "iterations=8192" in stored
    assert all(pw not in stored for pw in scram_users.values())
    assert (scram_broker.data_dir / "scram-credentials.json").stat().st_mode & 0o077 == 0


def test_failed_logins_are_answered_ever_later(scram_broker: BrokerProcess, certs: Certs,
                                               scram_users: dict[str, str]) -> None:
    took = []
    for _ in range(4):
        client = raw_scram(scram_broker, certs)
        assert client.handshake("PLAIN").error_code == ErrorCode.none
        started = time.monotonic()
        assert client.authenticate(f"\0admin\0{WRONG_PASSWORD}".encode()).error_code == \
            ErrorCode.sasl_authentication_failed
        took.append(time.monotonic() - started)
        client.close()
    base = FAILED_DELAY_MS / 1000
    assert took[0] >= base * 0.9  # connection.failed.authentication.delay.ms at least
    # doubled with each failure from this host (this is the module's first failed login on it)
    assert took[3] >= 8 * base * 0.9 and took[3] > took[0] + 4 * base
    # a good login is not delayed
    client = raw_scram(scram_broker, certs)
    started = time.monotonic()
    assert client.plain_login("admin", ADMIN_PASSWORD).error_code == ErrorCode.none
    assert time.monotonic() - started < 0.5
    client.close()


def test_confluent_kafka_produces_and_consumes_over_sasl_ssl_scram_sha_512(
        scram_broker: BrokerProcess, certs: Certs, scram_users: dict[str, str]) -> None:
    topic = unique("ck-scram")
    got = produce_consume(sasl_ssl(scram_broker, certs, "alice", scram_users["alice"]), topic)
    assert got == [f"v{i}".encode() for i in range(5)]
    # SCRAM-SHA-256 works for a user who has that credential
    got = produce_consume(sasl_ssl(scram_broker, certs, "bob", scram_users["bob"], "SCRAM-SHA-256"), topic, 5)
    assert len(got) == 5


def test_kafka_python_produces_and_consumes_over_sasl_ssl_scram_sha_512(
        scram_broker: BrokerProcess, certs: Certs, scram_users: dict[str, str]) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    topic = unique("kp-scram")
    common = {"bootstrap_servers": f"127.0.0.1:{scram_broker.secure_port}", "security_protocol": "SASL_SSL",  # type: ignore[attr-defined]
              "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "bob",
              "sasl_plain_password": scram_users["bob"], "ssl_cafile": str(certs.truststore)}
    producer = KafkaProducer(**common)
    for i in range(5):
        producer.send(topic, key=b"k", value=f"kp{i}".encode()).get(timeout=20)
    producer.close()
    # assigned, not subscribed: kafka-python's group join races its first metadata over TLS, and the
    # group coordinator does not finish a sole member's rejoin of a stable group (reported separately)
    consumer = KafkaConsumer(auto_offset_reset="earliest", consumer_timeout_ms=15000, **common)
    consumer.assign([TopicPartition(topic, 0)])
    got = []
    for message in consumer:
        got.append(message.value)
        if len(got) == 5:
            break
    consumer.close()
    assert got == [f"kp{i}".encode() for i in range(5)]


def test_aiokafka_produces_and_consumes_over_sasl_ssl_scram_sha_512(
        scram_broker: BrokerProcess, certs: Certs, scram_users: dict[str, str]) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.helpers import create_ssl_context

    topic = unique("aio-scram")

    async def run() -> list[bytes]:
        common = {"bootstrap_servers": f"127.0.0.1:{scram_broker.secure_port}", "security_protocol": "SASL_SSL",  # type: ignore[attr-defined]
                  "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "alice",
                  "sasl_plain_password": scram_users["alice"],
                  "ssl_context": create_ssl_context(cafile=str(certs.truststore))}
        producer = AIOKafkaProducer(**common)
        await producer.start()
        try:
            for i in range(5):
                await producer.send_and_wait(topic, f"aio{i}".encode(), key=b"k")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, group_id=unique("aio"), auto_offset_reset="earliest", **common)
        await consumer.start()
        got: list[bytes] = []
        try:
            async with asyncio.timeout(30):
                async for message in consumer:
                    got.append(message.value)
                    if len(got) == 5:
                        break
        finally:
            await consumer.stop()
        return got

    assert asyncio.run(run()) == [f"aio{i}".encode() for i in range(5)]


def test_kcat_produces_and_consumes_over_sasl_ssl_scram_sha_512(
        scram_broker: BrokerProcess, certs: Certs, scram_users: dict[str, str]) -> None:
    kcat = shutil.which("kcat")
    if kcat is None:
        pytest.skip("kcat is not installed (./dev test installs it)")
    features = subprocess.run([kcat, "-X", "list"], capture_output=True, text=True, check=False).stdout
    if "sasl_scram" not in features:
        pytest.skip("this kcat's librdkafka has no SASL/SCRAM")
    topic = unique("kcat-scram")
    args = [kcat, "-b", f"127.0.0.1:{scram_broker.secure_port}", "-X", "security.protocol=SASL_SSL",  # type: ignore[attr-defined]
            "-X", "sasl.mechanisms=SCRAM-SHA-512", "-X", "sasl.username=alice",
            "-X", f"sasl.password={scram_users['alice']}", "-X", f"ssl.ca.location={certs.truststore}"]
    produced = subprocess.run([*args, "-P", "-t", topic, "-K", ":"], input="k1:one\nk2:two\n", text=True,
                              capture_output=True, timeout=60, check=False)
    assert produced.returncode == 0, produced.stderr
    consumed = subprocess.run([*args, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%k=%s\n"],
                              capture_output=True, text=True, timeout=60, check=False)
    assert consumed.returncode == 0, consumed.stderr
    assert consumed.stdout.splitlines() == ["k1=one", "k2=two"]


def test_kafkajs_produces_and_consumes_over_sasl_ssl_scram_sha_512(
        scram_broker: BrokerProcess, certs: Certs, scram_users: dict[str, str]) -> None:
    here = Path(__file__).with_name("kafkajs")
    node = shutil.which("node")
    if node is None or not (here / "node_modules" / "kafkajs").is_dir():
        pytest.skip("node or kafkajs is not installed (./dev test installs both)")
    topic = unique("kjs-scram")
    done = subprocess.run([node, "sasl.js", f"127.0.0.1:{scram_broker.secure_port}", str(certs.truststore),  # type: ignore[attr-defined]
                           "bob", scram_users["bob"], topic], cwd=here, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["sent"] == [0]
    assert sorted(out["consumed"]) == [f"v{i}" for i in range(5)]
    assert out["refused"] is not None and "SASL SCRAM SHA512 authentication failed" in out["refused"]["message"]


# -- failures --------------------------------------------------------------------

def test_wrong_password_and_unknown_user_get_the_same_answer(
        scram_broker: BrokerProcess, certs: Certs, scram_users: dict[str, str]) -> None:
    answers = []
    for user, password in (("alice", WRONG_PASSWORD), ("nobody-at-all", WRONG_PASSWORD)):
        client = raw_scram(scram_broker, certs)
        final = client.scram_login(user, password)
        answers.append((final.error_code, final.error_message))
        assert client.closed_by_broker(), "the connection stays open after a failed login"
        client.close()
    expected = ("Authentication failed during authentication due to invalid credentials "
                "with SASL mechanism SCRAM-SHA-512")
    assert answers == [(ErrorCode.sasl_authentication_failed, expected)] * 2

    # and confluent-kafka reports just that sentence, for both
    for user in ("alice", "nobody-at-all"):
        err = auth_error(sasl_ssl(scram_broker, certs, user, WRONG_PASSWORD))
        assert err.code() == KafkaError._AUTHENTICATION and expected in err.str()
    err = auth_error(sasl_ssl(scram_broker, certs, "admin", WRONG_PASSWORD, "PLAIN"))
    assert "invalid credentials with SASL mechanism PLAIN" in err.str()
    logs = scram_broker.logs()
    assert "failed SASL SCRAM-SHA-512 login as 'nobody-at-all'" in logs
    assert WRONG_PASSWORD not in logs


def test_a_client_that_skips_authentication_is_closed(scram_broker: BrokerProcess, certs: Certs) -> None:
    client = raw_scram(scram_broker, certs)
    client.send(3, 9, topics=[], allow_auto_topic_creation=False)
    assert client.closed_by_broker()
    client.close()
    # ApiVersions is allowed first (clients ask it before the handshake), and lists the SASL APIs
    client = raw_scram(scram_broker, certs)
    versions = client.request(18, 3, client_software_name="t", client_software_version="1")
    keys = {k.api_key: (k.min_version, k.max_version) for k in versions.api_keys}
    assert keys[17] == (0, 1) and keys[36] == (0, 2) and keys[50] == (0, 0) and keys[51] == (0, 0)
    client.close()


def test_garbage_in_the_sasl_exchange_gets_kafka_errors_never_a_crash(
        scram_broker: BrokerProcess, certs: Certs, scram_users: dict[str, str]) -> None:
    def fresh() -> RawClient:
        return raw_scram(scram_broker, certs)

    # SaslAuthenticate before SaslHandshake
    c = fresh()
    r = c.authenticate(b"n,,n=alice,r=abc")
    assert r.error_code == ErrorCode.illegal_sasl_state and c.closed_by_broker()
    # a mechanism that is not enabled: the enabled ones come back, then the connection closes
    c = fresh()
    r = c.handshake("GSSAPI")
    assert r.error_code == ErrorCode.unsupported_sasl_mechanism
    assert list(r.mechanisms) == ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]
    assert c.closed_by_broker()
    # bad UTF-8 in a SCRAM message
    c = fresh()
    assert c.handshake("SCRAM-SHA-512").error_code == ErrorCode.none
    r = c.authenticate(b"n,,n=\xff\xfe,r=\xc3")
    assert r.error_code == ErrorCode.sasl_authentication_failed and c.closed_by_broker()
    # random bytes, an empty token, a message that is not SCRAM
    for junk in (bytes(range(256)), b"", b"hello"):
        c = fresh()
        assert c.handshake("SCRAM-SHA-512").error_code == ErrorCode.none
        assert c.authenticate(junk).error_code == ErrorCode.sasl_authentication_failed
    # SaslHandshake v0: the tokens follow raw, outside Kafka framing (Kafka before 1.0); a bad one
    # closes the connection, raw framing having no room for an error
    c = fresh()
    assert c.request(17, 0, mechanism="PLAIN").error_code == ErrorCode.none
    c.sock.sendall(struct.pack(">i", 13) + b"only-one-part")
    assert c.closed_by_broker()
    # a second handshake in the middle of an exchange
    c = fresh()
    assert c.handshake("SCRAM-SHA-512").error_code == ErrorCode.none
    assert c.handshake("PLAIN").error_code == ErrorCode.illegal_sasl_state and c.closed_by_broker()
    # a third SCRAM message after the exchange failed, and PLAIN with missing parts
    c = fresh()
    assert c.handshake("PLAIN").error_code == ErrorCode.none
    assert c.authenticate(b"only-one-part").error_code == ErrorCode.sasl_authentication_failed
    # bad UTF-8 in the handshake's mechanism name: the request cannot be read, the connection closes
    c = fresh()
    c.sock.sendall(encode_request(17, 1, 1, build(request_type(17, 1), mechanism="PLAIN")).replace(b"PLAIN", b"PL\xffIN"))
    assert c.closed_by_broker()
    # after all that, a good login still works and no traceback was logged
    c = fresh()
    assert c.scram_login("alice", scram_users["alice"]).error_code == ErrorCode.none
    assert metadata_ok(c)
    c.close()
    assert "Traceback" not in scram_broker.logs() and "internal error" not in scram_broker.logs()


def test_a_successful_scram_login_allows_requests_and_reports_no_lifetime(
        scram_broker: BrokerProcess, certs: Certs, scram_users: dict[str, str]) -> None:
    c = raw_scram(scram_broker, certs)
    final = c.scram_login("bob", scram_users["bob"], "SCRAM-SHA-256")
    assert final.error_code == ErrorCode.none
    assert final.session_lifetime.total_seconds() == 0  # connections.max.reauth.ms=0: no re-authentication
    assert metadata_ok(c)
    c.close()


# -- PLAIN, OAUTHBEARER and re-authentication over SASL_PLAINTEXT ---------------------

def test_confluent_kafka_with_plain_over_sasl_plaintext(plain_broker: BrokerProcess) -> None:
    config = sasl_plaintext(plain_broker, "PLAIN", **{"sasl.username": "alice", "sasl.password": ALICE_PLAIN_PASSWORD})
    assert produce_consume(config, unique("plain")) == [f"v{i}".encode() for i in range(5)]
    err = auth_error(sasl_plaintext(plain_broker, "PLAIN", **{"sasl.username": "alice", "sasl.password": WRONG_PASSWORD}))
    assert err.code() == KafkaError._AUTHENTICATION
    assert "invalid credentials with SASL mechanism PLAIN" in err.str()
    # a mechanism that the listener does not enable
    err = auth_error(sasl_plaintext(plain_broker, "SCRAM-SHA-512",
                                    **{"sasl.username": "alice", "sasl.password": ALICE_PLAIN_PASSWORD}))
    assert "SCRAM-SHA-512" in err.str()


def test_confluent_kafka_with_oauthbearer_tokens_checked_against_the_jwks(
        plain_broker: BrokerProcess, certs: Certs) -> None:
    for key in (certs.rs256, certs.es256):
        def token_cb(_: object, key: devcerts.SigningKey = key) -> tuple[str, float]:
            return certs.token("svc-reporting", key=key), time.time() + 3600

        config = sasl_plaintext(plain_broker, "OAUTHBEARER", oauth_cb=token_cb)
        assert len(produce_consume(config, unique(f"oauth-{key.alg}"), 3)) == 3

    def forged_cb(_: object) -> tuple[str, float]:
        return certs.token("svc-reporting", key=certs.stranger), time.time() + 3600

    err = auth_error(sasl_plaintext(plain_broker, "OAUTHBEARER", oauth_cb=forged_cb))
    assert err.code() == KafkaError._AUTHENTICATION and "invalid_token" in err.str()


@pytest.mark.parametrize("why", ["unknown key", "expired", "audience", "issuer", "no sub", "not signed"])
def test_a_bad_token_gets_the_invalid_token_challenge_then_fails(
        plain_broker: BrokerProcess, certs: Certs, why: str) -> None:
    token = {
        "unknown key": lambda: certs.token(key=certs.stranger),
        "expired": lambda: certs.token(lifetime_s=-120),
        "audience": lambda: certs.token(aud="someone-else"),
        "issuer": lambda: certs.token(iss="https://evil.example"),
        "no sub": lambda: certs.token(sub=""),
        "not signed": lambda: certs.token().rsplit(".", 1)[0] + ".",
    }[why]()
    c = raw_plain(plain_broker)
    challenge = c.oauth_login(token)
    assert challenge.error_code == ErrorCode.none and challenge.auth_bytes == b'{"status":"invalid_token"}'
    final = c.authenticate(b"\x01")
    assert final.error_code == ErrorCode.sasl_authentication_failed
    assert final.error_message == '{"status":"invalid_token"}'
    assert c.closed_by_broker()
    c.close()


def test_an_oauthbearer_session_ends_with_its_token(plain_broker: BrokerProcess, certs: Certs) -> None:
    c = raw_plain(plain_broker)
    final = c.oauth_login(certs.token(lifetime_s=2))
    assert final.error_code == ErrorCode.none
    assert 0 < final.session_lifetime.total_seconds() <= 2.0  # the token's expiry, sooner than max.reauth
    assert metadata_ok(c)
    c.close()


def test_sessions_end_at_connections_max_reauth_ms_unless_renewed(plain_broker: BrokerProcess) -> None:
    c = raw_plain(plain_broker)
    final = c.plain_login("alice", ALICE_PLAIN_PASSWORD)
    assert final.error_code == ErrorCode.none and final.session_lifetime.total_seconds() == REAUTH_MS / 1000
    # re-authentication on the same connection, as the same user, renews the session
    assert c.plain_login("alice", ALICE_PLAIN_PASSWORD).error_code == ErrorCode.none
    assert metadata_ok(c)
    # but not as somebody else
    switched = c.plain_login("admin", ADMIN_PASSWORD)
    assert switched.error_code == ErrorCode.sasl_authentication_failed
    assert "Cannot change principals during re-authentication from User:alice: User:admin" in switched.error_message
    assert c.closed_by_broker()
    # nor with another mechanism (Kafka fails the SaslAuthenticate after such a handshake)
    c = raw_plain(plain_broker)
    assert c.plain_login("alice", ALICE_PLAIN_PASSWORD).error_code == ErrorCode.none
    assert c.handshake("SCRAM-SHA-256").error_code == ErrorCode.none
    changed = c.authenticate(b"n,,n=alice,r=0123456789")
    assert changed.error_code == ErrorCode.sasl_authentication_failed
    assert changed.error_message == "SASL mechanism changed during re-authentication from PLAIN to SCRAM-SHA-256"
    assert c.closed_by_broker()
    # a session left to expire: the next request closes the connection
    c = raw_plain(plain_broker)
    assert c.plain_login("alice", ALICE_PLAIN_PASSWORD).error_code == ErrorCode.none
    time.sleep(REAUTH_MS / 1000 + 0.3)
    c.send(3, 9, topics=[], allow_auto_topic_creation=False)
    assert c.closed_by_broker()
    assert "expired without re-authentication" in plain_broker.logs()


def test_confluent_kafka_re_authenticates_and_keeps_working_past_the_session_lifetime(
        plain_broker: BrokerProcess) -> None:
    config = sasl_plaintext(plain_broker, "PLAIN", **{"sasl.username": "alice", "sasl.password": ALICE_PLAIN_PASSWORD})
    topic = unique("reauth")
    p = Producer({**config, "linger.ms": 0})
    delivered: list[Any] = []
    failed: list[Any] = []
    before = plain_broker.logs().count("expired without re-authentication")
    renewed = plain_broker.logs().count("User:alice re-authenticated with PLAIN")
    deadline = time.monotonic() + 2.5 * REAUTH_MS / 1000
    i = 0
    while time.monotonic() < deadline:
        p.produce(topic, value=str(i).encode(),
                  on_delivery=lambda err, msg: (failed if err else delivered).append(err or msg.offset()))
        i += 1
        p.poll(0.1)
    assert p.flush(15) == 0
    assert not failed and len(delivered) == i
    assert sorted(delivered) == list(range(i))  # one connection's worth of offsets, no retries doubled any
    assert plain_broker.logs().count("expired without re-authentication") == before
    assert plain_broker.logs().count("User:alice re-authenticated with PLAIN") >= renewed + 2  # KIP-368, in place


# -- mTLS ------------------------------------------------------------------------

def ssl_config(b: BrokerProcess, certs: Certs, cert: devcerts.ClientCertificate | None) -> dict[str, Any]:
    config = {"bootstrap.servers": f"127.0.0.1:{b.secure_port}", "security.protocol": "SSL",  # type: ignore[attr-defined]
              "ssl.ca.location": str(certs.truststore)}
    if cert is not None:
        config |= {"ssl.certificate.location": str(cert.cert_path), "ssl.key.location": str(cert.key_path)}
    return config


def test_mtls_client_certificate_is_the_principal(mtls_broker: BrokerProcess, certs: Certs) -> None:
    config = ssl_config(mtls_broker, certs, certs.made.clients["alice"])
    assert produce_consume(config, unique("mtls"), 3) == [b"v0", b"v1", b"v2"]
    # the broker names the principal of an admin change: the certificate's subject
    admin = AdminClient(config)
    change = UserScramCredentialUpsertion("mtls-made", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), b"pw")
    admin.alter_user_scram_credentials([change])["mtls-made"].result(15)
    assert "changed by User:CN=alice" in mtls_broker.logs()


@pytest.mark.parametrize("which", ["none", "expired", "other CA"])
def test_mtls_refuses_a_missing_expired_or_foreign_certificate(
        mtls_broker: BrokerProcess, certs: Certs, which: str) -> None:
    cert = {"none": None, "expired": certs.expired, "other CA": certs.foreign}[which]
    err = auth_error(ssl_config(mtls_broker, certs, cert))
    assert err.code() in (KafkaError._SSL, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN), err


# -- cluster mode: users in ZooKeeper ------------------------------------------------

def test_scram_users_live_in_zookeeper_and_reach_every_broker(zookeeper: ZooKeeper, tmp_path: Path) -> None:
    from kazoo.client import KazooClient  # type: ignore[import-untyped]

    chroot = f"sasl-{time.time_ns()}"
    brokers: list[ZkBroker] = []
    try:
        for i in range(2):
            b = ZkBroker(i, tmp_path / f"broker-{i}", zookeeper.connect(chroot), {})
            b.sasl_port = free_port()  # type: ignore[attr-defined]
            b.env.update({**FAST_ENV, "ODRADEK_SASL_ENABLED_MECHANISMS": "SCRAM-SHA-512",
                          "ODRADEK_LISTENERS": f"PLAINTEXT://127.0.0.1:{b.port},"
                                               f"SASL_PLAINTEXT://127.0.0.1:{b.sasl_port}"})  # type: ignore[attr-defined]
            brokers.append(b.start())
            wait_port(b.sasl_port)  # type: ignore[attr-defined]
        user, password = "ops team*", "ops-secret-3b9d"
        admin = AdminClient({"bootstrap.servers": brokers[0].bootstrap})
        change = UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096),
                                              password.encode())
        admin.alter_user_scram_credentials([change])[user].result(15)

        def login(b: ZkBroker) -> Any:
            c = RawClient(b.sasl_port)  # type: ignore[attr-defined]
            try:
                return c.scram_login(user, password).error_code
            finally:
                c.close()

        deadline = time.monotonic() + 10
        while login(brokers[1]) != ErrorCode.none:  # broker 1 learns of the user through its watch
            assert time.monotonic() < deadline, "broker 1 never saw the user created through broker 0"
            time.sleep(0.1)
        # Kafka's znode, under the sanitized name
        zk = KazooClient(hosts=f"127.0.0.1:{zookeeper.port}")
        zk.start(timeout=10)
        try:
            raw, _ = zk.get(f"/{chroot}/config/users/ops%20team%2A")
        finally:
            zk.stop()
            zk.close()
        doc = json.loads(raw)
        assert doc["version"] == 1 and list(doc["config"]) == ["SCRAM-SHA-512"]
        assert doc["config"]["SCRAM-SHA-512"].endswith(",iterations=4096") and password not in raw.decode()
        # deleted through broker 1, refused by broker 0
        admin1 = AdminClient({"bootstrap.servers": brokers[1].bootstrap})  # kept: a collected client fails its futures
        admin1.alter_user_scram_credentials([UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512)])[user].result(15)
        deadline = time.monotonic() + 10
        while login(brokers[0]) == ErrorCode.none:
            assert time.monotonic() < deadline, "broker 0 still accepts a deleted user"
            time.sleep(0.1)
    finally:
        for b in brokers:
            b.kill()


# -- across restarts and in the logs ------------------------------------------------

def test_users_survive_a_broker_restart(scram_broker: BrokerProcess, certs: Certs,
                                        scram_users: dict[str, str]) -> None:
    scram_broker.restart()
    wait_port(scram_broker.secure_port)  # type: ignore[attr-defined]
    c = raw_scram(scram_broker, certs)
    assert c.scram_login("alice", scram_users["alice"]).error_code == ErrorCode.none
    c.close()
    got = produce_consume(sasl_ssl(scram_broker, certs, "bob", scram_users["bob"]), unique("after-restart"), 2)
    assert got == [b"v0", b"v1"]


def test_no_secret_reaches_a_broker_log(scram_broker: BrokerProcess, plain_broker: BrokerProcess,
                                        mtls_broker: BrokerProcess) -> None:
    secrets = [ADMIN_PASSWORD, ALICE_PLAIN_PASSWORD, WRONG_PASSWORD, "keystore-pass-1", *SCRAM_USERS.values()]
    secrets += [part for token in TOKENS for part in token.split(".") if len(part) > 20]
    for b in (scram_broker, plain_broker, mtls_broker):
        logs = b.logs()
        leaked = [s[:12] for s in secrets if s in logs]
        assert not leaked, f"secrets in {b.data_dir}'s log: {leaked}"
        assert "stored_key" not in logs and "Bearer" not in logs
