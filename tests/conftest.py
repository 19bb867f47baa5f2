"""Fixtures that run real odradek broker processes on 127.0.0.1.

Tests talk to them over TCP with real clients. `broker` is one broker shared by
a test module; `broker_factory` makes brokers a test can restart, stop, or kill
with SIGKILL.

`pytest --kafka` runs only the tests marked `kafka_behaviour` (those that check
answers a user relies on: error codes, offsets, group states, transaction outcomes)
and gives them Apache Kafka 4.3.1 (odradek.testing.kafka_reference: one KRaft node
from tests/java/lib) instead of odradek, so each is known to describe Kafka's
behaviour. A broker's ODRADEK_* settings become the Kafka properties they are named
after (ODRADEK_GROUP_MIN_SESSION_TIMEOUT_MS -> group.min.session.timeout.ms).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from odradek.testing.kafka_reference import recv_exact

ROOT = Path(__file__).resolve().parent.parent
JAVA_DIR = ROOT / "tests" / "java"
# A small heap, and C1 only: the tests' JVMs live seconds to a minute.
JVM_FLAGS = ["-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]


def compile_java(sources: list[Path | str], out: Path) -> Path:
    """javac `sources` (paths, or names in tests/java) against Kafka's jars in tests/java/lib
    (./dev test fills it) into `out`, once for the tests that run them (a JVM compiling at every
    start costs seconds)."""
    javac = shutil.which("javac")
    assert javac is not None, "no javac on PATH (JDK 17 is needed)"
    assert any((JAVA_DIR / "lib").glob("kafka-clients-*.jar")), "tests/java/lib is empty (./dev test fills it)"
    done = subprocess.run([javac, *(f"-J{flag}" for flag in JVM_FLAGS), "-cp", str(JAVA_DIR / "lib" / "*"),
                           "-d", str(out), *(str(JAVA_DIR / source) for source in sources)],
                          capture_output=True, text=True, timeout=240, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def java_command(jar: str = "kafka-clients", classes: Path | None = None) -> list[str]:
    """`java` with JVM_FLAGS and Kafka's jars (tests/java/lib, after `classes` if given) on its class
    path; the main class or source file and its arguments follow. Fails the test at once when there
    is no JDK or no `jar`-*.jar it needs (./dev test fills tests/java/lib)."""
    java = shutil.which("java")
    assert java is not None, "no java on PATH (JDK 17 is needed)"
    assert any((JAVA_DIR / "lib").glob(f"{jar}-*.jar")), "tests/java/lib is empty (./dev test fills it)"
    lib = str(JAVA_DIR / "lib" / "*")
    return [java, *JVM_FLAGS, "-cp", lib if classes is None else f"{classes}{os.pathsep}{lib}"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--kafka", action="store_true", default=False,
                     help="run only the tests marked kafka_behaviour, against Apache Kafka 4.3.1 "
                          "(tests/java/lib, a JVM) instead of odradek")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--kafka"):
        return
    from odradek.testing.kafka_reference import kafka_available

    why = kafka_available()
    if why is not None:
        raise pytest.UsageError(f"--kafka: Apache Kafka cannot start here: {why}")
    kept = [item for item in items if item.get_closest_marker("kafka_behaviour")]
    config.hook.pytest_deselected(items=[item for item in items if item not in kept])
    items[:] = kept


def kafka_properties(env: dict[str, str] | None) -> dict[str, str]:
    """A test broker's ODRADEK_* settings as the Kafka server properties they are named after."""
    return {key.removeprefix("ODRADEK_").lower().replace("_", "."): value
            for key, value in (env or {}).items() if key.startswith("ODRADEK_")}


def start_kafka(data_dir: Path, env: dict[str, str] | None = None) -> Any:
    """An Apache Kafka broker with the attributes the tests use of a BrokerProcess (bootstrap, port,
    data_dir, proc, stop, kill, restart, logs)."""
    from odradek.testing.kafka_reference import KafkaReference

    kafka = KafkaReference(data_dir, overrides=kafka_properties(env)).start()
    wait_for_coordinators(kafka.bootstrap)
    return kafka


def wait_for_coordinators(bootstrap: str, timeout: float = 60.0) -> None:
    """Until every partition of __consumer_offsets and __transaction_state has a coordinator loaded.

    A fresh Kafka creates those topics at the first FindCoordinator and answers
    COORDINATOR_NOT_AVAILABLE, then NOT_COORDINATOR or COORDINATOR_LOAD_IN_PROGRESS, until their
    partitions are loaded; clients retry through that. odradek's coordinators are ready when it
    listens, and the tests speak to a broker in that state: this brings Kafka there first. 1,000
    keys a kind reach every partition (50 by default) but with odds below 1e-7."""
    from odradek.protocol.build import build
    from odradek.protocol.framing import decode_response, encode_request, request_type

    host, port = bootstrap.split(":")
    keys = [f"warm-up-{i}" for i in range(1000)]
    deadline = time.monotonic() + timeout
    for key_type in (0, 1):  # groups, transactions
        while True:
            with socket.create_connection((host, int(port)), timeout=15) as s:
                s.sendall(encode_request(10, 4, 1, build(request_type(10, 4), key_type=key_type,
                                                         coordinator_keys=keys)))
                size = struct.unpack(">i", recv_exact(s, 4))[0]
                resp = decode_response(recv_exact(s, size), 10, 4)[1]
            if all(c.error_code == 0 for c in resp.coordinators):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"Kafka's coordinators (key type {key_type}) not loaded after {timeout} s")
            time.sleep(0.2)


def read_messages(bootstrap: str, topic: str, partitions: int, isolation: str, timeout: float = 30,
                  start: list[int] | None = None) -> list[Any]:
    """Every message of the topic's first `partitions` partitions (from the `start` offsets, else
    from the log start) up to the end a consumer with `isolation` may read (the LSO for
    read_committed): confluent_kafka Messages, each partition's in offset order."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("reader"), "isolation.level": isolation,
                  "auto.offset.reset": "earliest", "enable.partition.eof": True, "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p) if start is None else TopicPartition(topic, p, start[p])
              for p in range(partitions)])
    got: list[Any] = []
    eof: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(eof) < partitions:
            assert time.monotonic() < deadline, f"{isolation} reader did not reach the end of {topic}: eof {eof}"
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error() is not None:
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                eof.add(m.partition())
                continue
            eof.discard(m.partition())
            got.append(m)
    finally:
        c.close()
    return got


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"broker exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class BrokerProcess:
    """An `odradek serve` subprocess with its own data dir and port."""

    def __init__(self, data_dir: Path, port: int | None = None, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.extra_args = list(extra_args or [])
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-broker.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> BrokerProcess:
        # "{port}" in a variable stands for this broker's port (ODRADEK_LISTENERS=PLAINTEXT://127.0.0.1:{port},...)
        own = {key: value.replace("{port}", str(self.port)) for key, value in self.env.items()}
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **own}
        cmd = [sys.executable, "-m", "odradek", "serve", "--listen", self.bootstrap,
               "--data-dir", str(self.data_dir), *self.extra_args]
        # The child holds its own copy of the log's descriptor; ours closes once it is started.
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        wait_for_port(self.port, proc=self.proc)
        return self

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: a clean shutdown."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: no flush, no checkpoint."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def restart(self) -> BrokerProcess:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        return self.start()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def broker_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[object]:
    made: list[Any] = []

    def make(*extra_args: str, env: dict[str, str] | None = None, name: str | None = None) -> BrokerProcess:
        data_dir = tmp_path / (name or f"broker{len(made)}")
        if request.config.getoption("--kafka"):
            assert not extra_args, "odradek serve's flags have no meaning to Kafka: not a kafka_behaviour test"
            made.append(start_kafka(data_dir, env))
            return made[-1]  # type: ignore[no-any-return]
        b = BrokerProcess(data_dir, extra_args=list(extra_args), env=env)
        made.append(b)
        return b.start()

    yield make
    for b in made:
        if b.proc is not None and b.proc.poll() is None:
            b.kill()


def module_broker(fixture_name: str, env: dict[str, str] | None = None) -> Any:
    """A module-scoped fixture `fixture_name`: one `odradek serve` (with `env`) shared by the
    tests of a module, stopped cleanly after them."""

    @pytest.fixture(scope="module", name=fixture_name)
    def fixture(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Any]:
        data_dir = tmp_path_factory.mktemp(fixture_name) / "data"
        if request.config.getoption("--kafka"):
            kafka = start_kafka(data_dir, env)
            yield kafka
            kafka.stop()
            return
        b = BrokerProcess(data_dir, env=env).start()
        yield b
        if b.proc is not None and b.proc.poll() is None:
            b.stop()

    return fixture


broker = module_broker("broker")


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{time.time_ns()}"
