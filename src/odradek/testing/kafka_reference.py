"""Apache Kafka itself, the reference odradek is measured and tested against.

`KafkaReference` runs one Apache Kafka 4.x broker as a KRaft combined node
(process.roles=broker,controller, node.id=1, a standalone controller quorum) from
the `kafka_2.13` jar and its dependencies that tests/java/pom.xml brings into
tests/java/lib, on free 127.0.0.1 ports, with a freshly formatted log dir (what
`kafka-storage.sh format --standalone` does) and a heap of at most 1 GB. It is
ready when it answers a Metadata request naming itself; `startup_s` is the time
from exec to that answer. bench/ compares odradek with it; `pytest --kafka` runs
the behaviour tests against it.

    with KafkaReference() as kafka:
        Producer({"bootstrap.servers": kafka.bootstrap})

Everything but the replication factors of the internal topics (1, as there is
one broker) keeps Kafka's defaults; `overrides` adds or replaces server
properties. The JVM flags are those of bin/kafka-run-class.sh (G1, 20 ms pause
target); Kafka logs WARN and above to `<dir>/server.log`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from base64 import urlsafe_b64encode
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["KafkaReference", "find_lib", "kafka_available"]

ROOT = Path(__file__).resolve().parents[3]
POM = ROOT / "tests" / "java" / "pom.xml"
# bin/kafka-run-class.sh's KAFKA_JVM_PERFORMANCE_OPTS, with a smaller heap than its 1 GB default start
JVM_FLAGS = ["-Xmx1g", "-Xms256m", "-server", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
             "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
             "-XX:MaxInlineLevel=15", "-Djava.awt.headless=true"]
LOG4J2 = """status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = file
"""


def find_lib(lib: str | Path | None = None, fetch: bool = True) -> Path:
    """The directory of Kafka's jars: `lib`, $ODRADEK_KAFKA_LIB or tests/java/lib, which Maven fills
    from tests/java/pom.xml when it holds no kafka_2.13 jar yet and `fetch` is true."""
    path = Path(lib or os.environ.get("ODRADEK_KAFKA_LIB") or ROOT / "tests" / "java" / "lib")
    if not any(path.glob("kafka_2.13-*.jar")):
        if not fetch or not POM.exists() or shutil.which("mvn") is None:
            raise FileNotFoundError(f"no kafka_2.13 jar in {path}: run ./dev test, or mvn -f {POM} "
                                    "dependency:copy-dependencies -DoutputDirectory=lib -DincludeScope=runtime")
        subprocess.run(["mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
                        "-DoutputDirectory=lib", "-DincludeScope=runtime"], check=True)
        path = POM.parent / "lib"
    return path


def kafka_available() -> str | None:
    """None when Kafka can be started here, else why not (one sentence)."""
    if java_command() is None:
        return "no java command (JAVA_HOME or PATH)"
    try:
        find_lib(fetch=False)
    except FileNotFoundError as exc:
        return str(exc)
    return None


def java_command() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def random_cluster_id() -> str:
    """What `kafka-storage.sh random-uuid` prints: 16 random bytes, URL-safe base64 without padding;
    never starting with '-' (Kafka's Uuid.randomUuid draws again: StorageTool would read it as a flag)."""
    while (cluster_id := urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"):
        pass
    return cluster_id


def metadata_brokers(port: int, timeout: float = 1.0) -> int:
    """How many brokers a Metadata v4 request (all topics' names aside: topics=[]) returns."""
    client_id = b"odradek-kafka-reference"
    body = struct.pack(">hhih", 3, 4, 1, len(client_id)) + client_id + struct.pack(">i?", 0, False)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        head = recv_exact(s, 4)
        response = recv_exact(s, struct.unpack(">i", head)[0])
    if len(response) < 12:
        raise ConnectionError("a Metadata response too short to name a broker")
    # correlation id (4), throttle_time_ms (4), then the brokers array's length
    return int(struct.unpack(">i", response[8:12])[0])


def recv_exact(s: socket.socket, n: int) -> bytes:
    """Exactly n bytes from a raw socket (also the tests' that speak the wire protocol by hand)."""
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed by the broker")
        data += chunk
    return data


class KafkaReference:
    """One Apache Kafka broker process (KRaft, combined broker and controller, node.id=1)."""

    def __init__(self, data_dir: str | Path | None = None, *, port: int | None = None,
                 lib: str | Path | None = None, overrides: dict[str, str] | None = None,
                 heap: str = "1g") -> None:
        self._own_dir = tempfile.mkdtemp(prefix="kafka-ref-") if data_dir is None else None
        self.data_dir = Path(data_dir or self._own_dir or ".")
        self.port = port or free_port()
        self.controller_port = free_port()
        self.lib = find_lib(lib)
        self.overrides = dict(overrides or {})
        self.heap = heap
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None  # exec to the first Metadata answer naming this broker
        self.format_s: float | None = None  # the storage tool's run

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    def properties(self) -> dict[str, str]:
        controller = f"127.0.0.1:{self.controller_port}"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": controller,
            "listeners": f"PLAINTEXT://{self.bootstrap},CONTROLLER://{controller}",
            "advertised.listeners": f"PLAINTEXT://{self.bootstrap},CONTROLLER://{controller}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
            # one broker: the internal topics cannot have more replicas (config/server.properties)
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
        }
        return {**props, **self.overrides}

    def _java(self, main: str, *args: str, extra: list[str] | None = None) -> list[str]:
        java = java_command()
        if java is None:
            raise FileNotFoundError("no java command: set JAVA_HOME or put java on PATH")
        return [java, f"-Xmx{self.heap}", *(extra or []),
                f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
                f"-Dkafka.logs.dir={self.data_dir}", "-cp", f"{self.lib}/*", main, *args]

    def start(self, timeout: float = 90.0) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in self.properties().items()))
        (self.data_dir / "log4j2.properties").write_text(LOG4J2.format(log=self.log_path))
        if not (self.data_dir / "logs" / "meta.properties").exists():
            t0 = time.perf_counter()
            subprocess.run(self._java("kafka.tools.StorageTool", "format", "--config", str(config),
                                      "--cluster-id", random_cluster_id(), "--standalone", "--ignore-formatted"),
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
            self.format_s = time.perf_counter() - t0
        flags = [f for f in JVM_FLAGS if not f.startswith("-Xmx")]
        t0 = time.perf_counter()
        with open(self.data_dir / "stdout.log", "ab") as out:
            self.proc = subprocess.Popen(self._java("kafka.Kafka", str(config), extra=flags),
                                         stdout=out, stderr=subprocess.STDOUT, cwd=self.data_dir)
        deadline = t0 + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Kafka exited with code {self.proc.returncode}: {self.logs()[-2000:]}")
            try:
                if metadata_brokers(self.port) > 0:
                    break
            except OSError:
                pass
            if time.perf_counter() > deadline:
                self.kill()
                raise TimeoutError(f"Kafka did not answer Metadata on {self.bootstrap} within {timeout} s")
            time.sleep(0.02)
        self.startup_s = time.perf_counter() - t0
        return self

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (Kafka's controlled shutdown), SIGKILL if it has not exited within `timeout`."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> Self:
        self.stop()
        return self.start()

    def logs(self) -> str:
        parts = [p.read_text(errors="replace") for p in (self.data_dir / "stdout.log", self.log_path) if p.exists()]
        return "\n".join(parts)

    def cleanup(self) -> None:
        """Stop, and remove the data dir when this object made it."""
        self.stop()
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cleanup()
