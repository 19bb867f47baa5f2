"""The security commands end to end: `odradek cert dev`, `user`, `acl`, and `--command-config` /
`-X` on the client commands, against a real `odradek serve` with a SASL_SSL listener.

The broker is configured from what `odradek cert dev` prints (its server.properties lines,
ports filled in), gets its first SCRAM user, admin, a super user, from
ODRADEK_INITIAL_SCRAM_USER/PASSWORD, and runs the ACL authorizer. Every command is a real
subprocess; none may print a password, and every mistake is one sentence.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, BrokerProcess, free_port, unique, wait_for_port

from odradek.cli.client_config import ClientConfigError, load, parse_properties

ADMIN_PASSWORD = "admin-Secr3t-4b1c"
ALICE_PASSWORD = "alice-Secr3t-77d2"
ALICE_NEW_PASSWORD = "alice-N3w-9e0f"
WRONG_PASSWORD = "not-Her-Password-51"
SECRETS = (ADMIN_PASSWORD, ALICE_PASSWORD, ALICE_NEW_PASSWORD, WRONG_PASSWORD)


def odradek(*args: str, stdin: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "odradek", *args], check=False, input=stdin, capture_output=True,
                         text=True, timeout=timeout, cwd=ROOT, env={**os.environ, "COLUMNS": "200", **(env or {})})
    for secret in SECRETS:  # whatever happened, no password is ever printed
        assert secret not in out.stdout and secret not in out.stderr, (args, out.stdout, out.stderr)
    return out


def ok(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    out = odradek(*args, stdin=stdin)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    return out


def one_sentence(out: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert out.returncode != 0, out.stdout
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@dataclass
class Secured:
    broker: BrokerProcess
    port: int  # the SASL_SSL listener
    certs: Path
    printed: str  # what `odradek cert dev` printed
    admin: list[str]  # -b and --command-config of the admin
    alice_file: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alice(self, *extra: str) -> list[str]:
        return ["-b", self.bootstrap, "--command-config", str(self.alice_file), *extra]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    base = tmp_path_factory.mktemp("seccli")
    certs = base / "certs"
    made = ok("cert", "dev", "--dir", str(certs), "--client", "alice")
    printed = made.stdout
    broker = BrokerProcess(base / "data", env={
        "ODRADEK_INITIAL_SCRAM_USER": "admin", "ODRADEK_INITIAL_SCRAM_PASSWORD": ADMIN_PASSWORD,
        "ODRADEK_GROUP_INITIAL_REBALANCE_DELAY_MS": "0", "ODRADEK_OFFSETS_TOPIC_NUM_PARTITIONS": "2"})
    port = free_port()
    # the broker's server.properties is what cert dev printed, with this test's ports
    server = printed.split("\n\n")[0]
    server = re.sub(r"^listeners=.*$", f"listeners=PLAINTEXT://127.0.0.1:{broker.port},SASL_SSL://127.0.0.1:{port}",
                    server, flags=re.MULTILINE)
    (base / "server.properties").write_text(server + "\n")
    broker.extra_args = ["--config", str(base / "server.properties")]
    broker.start()
    wait_for_port(port)
    # Kafka's Java client spelling, as a user brings it from kafka-topics.sh: JAAS over
    # continuation lines and a PEM truststore (translated to librdkafka's keys)
    admin_file = base / "admin.properties"
    admin_file.write_text(
        "# the admin, Java style\n"
        "security.protocol=SASL_SSL\n"
        "sasl.mechanism=SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n"
        '    username="admin" \\\n'
        f'    password="{ADMIN_PASSWORD}";\n'
        "ssl.truststore.type=PEM\n"
        f"ssl.truststore.location={certs / 'truststore.pem'}\n")
    # librdkafka's spelling, the password read from a mounted-secret-like dir (KIP-297 provider)
    secret_dir = base / "alice-secret"
    secret_dir.mkdir()
    (secret_dir / "password").write_text(ALICE_PASSWORD + "\n")
    alice_file = base / "alice.properties"
    alice_file.write_text(
        "config.providers=dir\n"
        "config.providers.dir.class=org.apache.kafka.common.config.provider.DirectoryConfigProvider\n"
        f"bootstrap.servers=127.0.0.1:{port}\n"
        "security.protocol=SASL_SSL\n"
        "sasl.mechanism=SCRAM-SHA-512\n"
        "sasl.username=alice\n"
        f"sasl.password=${{dir:{secret_dir}:password}}\n"
        f"ssl.ca.location={certs / 'ca.pem'}\n")
    yield Secured(broker, port, certs, printed, ["-b", f"127.0.0.1:{port}", "--command-config", str(admin_file)],
                  alice_file)
    broker.stop()
    assert not any(s in broker.logs() for s in SECRETS), "the broker logged a password"


# -- cert dev ---------------------------------------------------------------------


def test_cert_dev_writes_a_ca_a_pem_keystore_and_client_certificates(secured: Secured) -> None:
    certs = secured.certs
    for name in ("ca.pem", "truststore.pem", "broker-keystore.pem", "alice.pem", "alice-key.pem"):
        assert (certs / name).is_file(), name
    for private in ("broker-keystore.pem", "alice-key.pem", "ca-key.pem"):
        assert (certs / private).stat().st_mode & 0o077 == 0, f"{private} is readable by others"
    keystore = (certs / "broker-keystore.pem").read_text()
    assert "PRIVATE KEY" in keystore and keystore.count("BEGIN CERTIFICATE") == 2, "key, certificate, CA"
    printed = secured.printed
    assert f"ssl.keystore.location={(certs / 'broker-keystore.pem').resolve()}" in printed
    assert "security.protocol=SASL_SSL" in printed and f"ssl.ca.location={(certs / 'ca.pem').resolve()}" in printed
    assert "PRIVATE KEY" not in printed
    again = odradek("cert", "dev", "--dir", str(certs))
    one_sentence(again, "already holds a CA")
    assert (certs / "ca.pem").read_text() == (certs / "truststore.pem").read_text(), "nothing replaced"


# -- users ------------------------------------------------------------------------


def test_the_initial_admin_exists_and_user_commands_manage_scram_users(secured: Secured) -> None:
    listed = ok("user", "list", *secured.admin).stdout
    assert re.search(r"admin\s*│ SCRAM-SHA-512\s*│ 8192", listed), listed
    out = ok("user", "create", "alice", "--password-stdin", *secured.admin, stdin=WRONG_PASSWORD + "\n")
    assert "created SCRAM-SHA-512 user alice" in out.stdout
    one_sentence(odradek("user", "create", "alice", "--password", "x" * 12, *secured.admin), "already has",
                 "odradek user update")
    ok("user", "update", "alice", "--password-stdin", "--iterations", "4096", *secured.admin,
       stdin=ALICE_PASSWORD + "\n")
    listed = ok("user", "list", *secured.admin).stdout
    assert re.search(r"alice\s*│ SCRAM-SHA-512\s*│ 4096", listed), listed
    one_sentence(odradek("user", "create", "carol", *secured.admin, stdin=""), "no password")
    one_sentence(odradek("user", "create", "carol", "--password", "p" * 8, "--iterations", "100", *secured.admin),
                 "--iterations must be between 4096 and 16384")
    one_sentence(odradek("user", "list", *secured.alice()), "CLUSTER_AUTHORIZATION_FAILED")


# -- ACLs with produce and consume ------------------------------------------------


def test_produce_and_consume_are_denied_then_allowed_by_acl_create_then_denied_after_acl_delete(
        secured: Secured) -> None:
    ok("user", "update", "alice", "--password-stdin", *secured.admin, stdin=ALICE_PASSWORD + "\n")
    topic = unique("orders")
    ok("topic", "create", topic, "-p", "2", *secured.admin)
    denied = odradek("produce", topic, *secured.alice(), stdin="a\n")
    one_sentence(denied, "TOPIC_AUTHORIZATION_FAILED")

    created = ok("acl", "create", "--allow-principal", "User:alice", "--operation", "write", "--operation",
                 "Describe", "--topic", topic, *secured.admin)
    assert created.stdout.count("User:alice") == 2 and "created 2 ACL(s)" in created.stderr
    out = ok("produce", topic, "-K", ":", *secured.alice(), stdin="k1:one\nk2:two\nk3:three\n")
    assert "delivered 3 record(s)" in out.stderr
    one_sentence(odradek("consume", topic, "--from-beginning", "-n", "3", "--timeout", "8", *secured.alice()),
                 "TOPIC_AUTHORIZATION_FAILED")

    prefix = unique("app")
    ok("acl", "create", "--allow-principal", "User:alice", "--operation", "read", "--topic", topic, *secured.admin)
    ok("acl", "create", "--allow-principal", "User:alice", "--operation", "read", "--group", prefix,
       "--resource-pattern-type", "prefixed", *secured.admin)
    got = ok("consume", topic, "--from-beginning", "-n", "3", "--format", "%k=%v\\n", *secured.alice()).stdout
    assert sorted(got.split()) == ["k1=one", "k2=two", "k3=three"]
    got = ok("consume", topic, "-g", f"{prefix}-reporting", "--from-beginning", "-n", "3", *secured.alice()).stdout
    assert sorted(got.split()) == ["one", "three", "two"]
    one_sentence(odradek("consume", topic, "-g", unique("other"), "--from-beginning", "-n", "1", "--timeout", "8",
                         *secured.alice()), "GROUP_AUTHORIZATION_FAILED")

    listed = ok("acl", "list", "--principal", "User:alice", *secured.admin).stdout
    assert listed.count("User:alice") == 4 and "PREFIXED" in listed and prefix in listed
    assert "WRITE" in ok("acl", "list", "--topic", topic, "--operation", "write", *secured.admin).stdout
    matching = ok("acl", "list", "--group", f"{prefix}-x", "--resource-pattern-type", "match", *secured.admin).stdout
    assert prefix in matching, "match finds the prefixed ACL that applies to the name"
    assert f"{prefix}" not in ok("acl", "list", "--group", f"{prefix}-x", *secured.admin).stdout
    one_sentence(odradek("acl", "list", *secured.alice()), "CLUSTER_AUTHORIZATION_FAILED")

    asked = odradek("acl", "delete", "--topic", topic, *secured.admin, stdin="")
    one_sentence(asked, "3 ACL(s) match", "--yes")
    deleted = ok("acl", "delete", "--topic", topic, "--yes", *secured.admin)
    assert "deleted 3 ACL(s)" in deleted.stderr
    one_sentence(odradek("produce", topic, *secured.alice(), stdin="again\n"), "TOPIC_AUTHORIZATION_FAILED")
    ok("acl", "delete", "--principal", "User:alice", "--yes", *secured.admin)
    assert "User:alice" not in ok("acl", "list", *secured.admin).stdout


def test_acl_mistakes_are_one_sentence(secured: Secured) -> None:
    one_sentence(odradek("acl", "create", "--allow-principal", "User:alice", "--operation", "write", "--group", "g",
                         *secured.admin), "a group ACL cannot grant write")
    one_sentence(odradek("acl", "create", "--operation", "read", "--topic", "t", *secured.admin),
                 "--allow-principal or --deny-principal")
    one_sentence(odradek("acl", "create", "--allow-principal", "alice", "--operation", "read", "--topic", "t",
                         *secured.admin), "User:alice")
    one_sentence(odradek("acl", "create", "--allow-principal", "User:a", "--operation", "fly", "--topic", "t",
                         *secured.admin), "unknown --operation 'fly'")
    one_sentence(odradek("acl", "delete", *secured.admin), "name what to delete")
    one_sentence(odradek("acl", "create", "--allow-principal", "User:alice", "--operation", "alter", "--cluster",
                         *secured.alice()), "CLUSTER_AUTHORIZATION_FAILED")


def test_deny_beats_allow_and_cluster_acls(secured: Secured) -> None:
    topic = unique("deny")
    ok("topic", "create", topic, *secured.admin)
    ok("user", "update", "alice", "--password-stdin", *secured.admin, stdin=ALICE_PASSWORD + "\n")
    ok("acl", "create", "--allow-principal", "User:alice", "--operation", "all", "--topic", topic, *secured.admin)
    ok("acl", "create", "--deny-principal", "User:alice", "--operation", "write", "--topic", topic,
       "--host", "127.0.0.1", *secured.admin)
    one_sentence(odradek("produce", topic, *secured.alice(), stdin="x\n"), "TOPIC_AUTHORIZATION_FAILED")
    ok("acl", "create", "--allow-principal", "User:alice", "--operation", "describe", "--cluster", *secured.admin)
    listed = ok("user", "list", *secured.alice()).stdout  # DescribeUserScramCredentials: DESCRIBE on the cluster
    assert "alice" in listed and "admin" in listed
    cluster = ok("acl", "list", "--cluster", *secured.admin).stdout
    assert "CLUSTER" in cluster and "kafka-cluster" in cluster
    ok("acl", "delete", "--principal", "User:alice", "--yes", *secured.admin)


# -- the other client commands with --command-config ------------------------------


def test_topic_group_txn_cluster_and_health_take_the_command_config(secured: Secured) -> None:
    topic = unique("cfg")
    ok("topic", "create", topic, *secured.admin)
    assert topic in ok("topic", "list", *secured.admin).stdout
    assert topic in ok("topic", "describe", topic, *secured.admin).stdout
    ok("produce", topic, *secured.admin, stdin="v\n")
    group = unique("grp")
    ok("consume", topic, "-g", group, "-n", "1", "--from-beginning", *secured.admin)
    groups = ok("group", *secured.admin, "list").stdout
    assert group in groups
    assert topic in ok("group", *secured.admin, "describe", group).stdout
    assert "TransactionalId" in ok("txn", "list", *secured.admin).stdout  # its own protocol client: TLS + SCRAM
    info = ok("cluster", "info", *secured.admin).stdout
    assert str(secured.port) in info, "the brokers' SASL_SSL address, the listener asked through"
    assert "is serving" in ok("health", *secured.admin).stdout
    # -X beats the file: the same admin file with a wrong password fails to log in, quickly
    out = odradek("topic", "list", *secured.admin, "-X", f"sasl.password={WRONG_PASSWORD}")
    one_sentence(out, "cannot log in to", "Authentication failed")
    one_sentence(odradek("txn", "list", *secured.admin, "-X", f"sasl.password={WRONG_PASSWORD}"),
                 f"127.0.0.1:{secured.port}")
    ok("topic", "delete", topic, *secured.admin)


def test_deleted_user_cannot_log_in(secured: Secured) -> None:
    ok("user", "create", "dave", "--password", ALICE_NEW_PASSWORD, "--mechanism", "SCRAM-SHA-256", *secured.admin)
    ok("user", "update", "dave", "--password", ALICE_NEW_PASSWORD, *secured.admin)  # and SCRAM-SHA-512
    dave = ["-b", secured.bootstrap, "-X", "security.protocol=SASL_SSL", "-X", "sasl.mechanism=SCRAM-SHA-512",
            "-X", "sasl.username=dave", "-X", f"sasl.password={ALICE_NEW_PASSWORD}",
            "-X", f"ssl.ca.location={secured.certs / 'ca.pem'}"]
    ok("topic", "list", *dave)  # logged in (and sees no topic: no ACL)
    ok("user", "delete", "dave", "--mechanism", "SCRAM-SHA-256", *secured.admin)
    listed = ok("user", "list", *secured.admin).stdout
    assert re.search(r"dave\s*│ SCRAM-SHA-512", listed) and "SCRAM-SHA-256" not in listed.split("dave", 1)[1]
    ok("user", "delete", "dave", *secured.admin)
    assert "dave" not in ok("user", "list", *secured.admin).stdout
    one_sentence(odradek("topic", "list", *dave), "cannot log in to")
    one_sentence(odradek("user", "delete", "dave", *secured.admin), "user dave has no SCRAM credential")


def test_client_configuration_mistakes_are_one_sentence(secured: Secured, tmp_path: Path) -> None:
    b = ["-b", secured.bootstrap]
    one_sentence(odradek("topic", "list", *b, "--command-config", str(tmp_path / "nope.properties")),
                 "nope.properties does not exist")
    bad = tmp_path / "bad.properties"
    bad.write_text("security.protocol=SASL_SSL\njust-a-word\n")
    one_sentence(odradek("topic", "list", *b, "--command-config", str(bad)), "bad.properties line 2",
                 "not key=value")
    one_sentence(odradek("topic", "list", *b, "-X", "no.such.key=1"), "-X no.such.key", "no.such.key")
    unknown = tmp_path / "unknown.properties"
    unknown.write_text(f"security.protocol=SASL_SSL\nsasl.password={ADMIN_PASSWORD}\nretries.forever=yes\n")
    one_sentence(odradek("topic", "list", *b, "--command-config", str(unknown)), "unknown.properties line 3",
                 "retries.forever")
    one_sentence(odradek("produce", "t", *b, "-X", "security.protocol=SASL_TLS"), "SASL_TLS",
                 "security.protocol")
    one_sentence(odradek("topic", "list", *b, "-X", "ssl.ca.location=/no/such/ca.pem"),
                 "ssl.ca.location /no/such/ca.pem does not exist")
    one_sentence(odradek("topic", "list", *b, "-X", "oops"), "-X 'oops' is not key=value")
    jks = tmp_path / "truststore.jks"
    jks.write_bytes(b"\xfe\xed\xfe\xed\x00\x00\x00\x02")
    one_sentence(odradek("topic", "list", *b, "-X", f"ssl.truststore.location={jks}"), "not a PEM file",
                 "keytool")
    oauth = tmp_path / "oauth.properties"
    oauth.write_text("sasl.mechanism=OAUTHBEARER\nsasl.jaas.config=org.apache.kafka.common.security.oauthbearer."
                     "OAuthBearerLoginModule required clientId=\"c\" clientSecret=\"" + ADMIN_PASSWORD + "\";\n")
    one_sentence(odradek("topic", "list", *b, "--command-config", str(oauth)), "OAuthBearerLoginModule")
    # a plaintext client at the SASL_SSL port, and a SASL_SSL client that does not trust the CA
    one_sentence(odradek("topic", "list", *b), "does that listener want TLS")
    not_a_ca = secured.certs / "alice-key.pem"
    one_sentence(odradek("topic", "list", *secured.alice("-X", f"ssl.ca.location={not_a_ca}")), "ssl.ca.location")


def test_secured_broker_refuses_anonymous_plaintext_clients(secured: Secured) -> None:
    """The PLAINTEXT listener next to SASL_SSL: ANONYMOUS has no ACL, so nothing is visible."""
    plain = ["-b", secured.broker.bootstrap]
    topic = unique("anon")
    ok("topic", "create", topic, *secured.admin)
    assert topic not in ok("topic", "list", *plain).stdout
    one_sentence(odradek("produce", topic, *plain, stdin="x\n"), "TOPIC_AUTHORIZATION_FAILED")


# -- the client configuration, without a broker -------------------------------------


def test_java_properties_rules(tmp_path: Path) -> None:
    props = parse_properties(
        "# comment\n! also a comment\n"
        "a=1\n"
        "b : two words \n"
        "c three\n"
        "d=\\u0041\\tz\\\\\n"
        "e=line one \\\n    continued\n"
        "f\\=g=h\n"
        "empty=\n", "x.properties")
    assert props.values == {"a": "1", "b": "two words", "c": "three", "d": "A\tz\\", "e": "line one continued",
                            "f=g": "h", "empty": ""}
    assert props.origin("e") == "x.properties line 7"
    with pytest.raises(ClientConfigError, match="line 2 is not key=value"):
        parse_properties("a=1\nlonely\n", "x.properties")


def test_jaas_truststore_and_providers_become_librdkafka_keys(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    keystore = tmp_path / "client.pem"
    keystore.write_text("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n" + ca.read_text())
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "user").write_text("bob\n")
    (tmp_path / "more.properties").write_text("pw=" + ALICE_PASSWORD + "\n")
    monkeypatch.setenv("ODRADEK_TEST_MECH", "SCRAM-SHA-256")
    config = tmp_path / "client.properties"
    config.write_text(
        "config.providers=env,dir,file\n"
        "config.providers.env.class=org.apache.kafka.common.config.provider.EnvVarConfigProvider\n"
        "config.providers.dir.class=org.apache.kafka.common.config.provider.DirectoryConfigProvider\n"
        "config.providers.file.class=org.apache.kafka.common.config.provider.FileConfigProvider\n"
        "security.protocol=SASL_SSL\n"
        "sasl.mechanism=${env:ODRADEK_TEST_MECH}\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="${{dir:{tmp_path / "secrets"}:user}}" password="${{file:{tmp_path / "more.properties"}:pw}}";\n'
        f"ssl.truststore.location={ca}\n"
        "ssl.truststore.type=PEM\n"
        "ssl.truststore.password=changeit\n"
        f"ssl.keystore.location={keystore}\n"
        "ssl.keystore.type=PEM\n"
        "ssl.endpoint.identification.algorithm=\n"
        "client.dns.lookup=use_all_dns_ips\n")
    props = load(config, ["sasl.mechanism=SCRAM-SHA-512"])
    assert props.values == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "bob",
        "sasl.password": ALICE_PASSWORD, "ssl.ca.location": str(ca), "ssl.certificate.location": str(keystore),
        "ssl.key.location": str(keystore), "ssl.endpoint.identification.algorithm": "none"}
    assert ALICE_PASSWORD not in repr(props)
    with pytest.raises(ClientConfigError, match="ODRADEK_TEST_UNSET is not set"):
        load(None, ["config.providers=env", ("config.providers.env.class="
                    "org.apache.kafka.common.config.provider.EnvVarConfigProvider"), "x=${env:ODRADEK_TEST_UNSET}"])
    with pytest.raises(ClientConfigError, match="does not log in with sasl.mechanism PLAIN"):
        load(None, ["sasl.mechanism=PLAIN", ("sasl.jaas.config=org.apache.kafka.common.security.scram."
                    'ScramLoginModule required username="u" password="p";')])
