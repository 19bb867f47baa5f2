"""A real ZooKeeper and real `odradek serve --zookeeper` brokers on 127.0.0.1.

`zookeeper` is one ZooKeeper per test module; `cluster_factory(n)` starts n
brokers under a chroot of their own, so tests of one module never share state.
Short timeouts (2 s ZooKeeper session, 1 s replica lag) keep failover quick; the waits for a
state are long (WAIT_S) since they return as soon as it holds, and a loaded CI machine can take
tens of seconds to elect a leader or start a broker.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from odradek.cli.cluster_up import broker_command, free_port, start_zookeeper, wait_for_port

ROOT = Path(__file__).resolve().parent.parent

FAST_ENV = {
    "PYTHONUNBUFFERED": "1",
    "ODRADEK_ZOOKEEPER_SESSION_TIMEOUT_MS": "2000",
    "ODRADEK_REPLICA_LAG_TIME_MAX_MS": "1500",
    "ODRADEK_REPLICA_FETCH_WAIT_MAX_MS": "200",
    "ODRADEK_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    "ODRADEK_OFFSETS_TOPIC_NUM_PARTITIONS": "3",
}
WAIT_S = 60.0  # the default bound on a wait for a cluster state


def _reap(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGKILL (after a SIGCONT, so a SIGSTOPped process dies too) and wait, by pid."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGKILL)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:  # uninterruptible sleep: the kernel finishes it later
        pass


class ZooKeeper:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.proc = start_zookeeper(state_dir, self.port)

    def connect(self, chroot: str) -> str:
        return f"127.0.0.1:{self.port}/{chroot}"

    def stop(self) -> None:
        _reap(self.proc)

    def restart(self) -> None:
        """The same data dir and port: the brokers find their cluster again."""
        self.stop()
        self.proc = start_zookeeper(self.state_dir, self.port)


class ClusterBroker:
    """One `odradek serve --zookeeper ... --broker-id i` process."""

    def __init__(self, broker_id: int, data_dir: Path, zookeeper: str, env: dict[str, str]) -> None:
        self.broker_id = broker_id
        self.data_dir = data_dir
        self.port = free_port()
        self.port2 = free_port()  # a second listener's, for "{port2}" in env values
        self.zookeeper = zookeeper
        self.env = {k: v.replace("{port}", str(self.port)).replace("{port2}", str(self.port2)) for k, v in env.items()}
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.log_path = data_dir.parent / f"broker-{broker_id}.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        """Running and answering (a SIGSTOPped broker is not)."""
        return self.proc is not None and self.proc.poll() is None and not self.paused

    def start(self) -> ClusterBroker:
        import os

        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                broker_command(self.broker_id, self.port, self.data_dir, self.zookeeper),
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}, cwd=ROOT)
        wait_for_port(self.port, timeout=WAIT_S, proc=self.proc)
        return self

    def kill(self) -> None:
        if self.proc is not None:
            _reap(self.proc)

    def pause(self) -> None:
        """SIGSTOP: the process is alive but silent, so its ZooKeeper session expires."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; a broker still running after `timeout` is SIGKILLed and the test fails."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _reap(self.proc)
                raise AssertionError(f"broker {self.broker_id} did not exit within {timeout:.0f} s of SIGTERM; "
                                     f"SIGKILLed") from None
        return int(self.proc.returncode)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Cluster:
    def __init__(self, brokers: list[ClusterBroker]) -> None:
        self.brokers = brokers

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers)

    def by_id(self, broker_id: int) -> ClusterBroker:
        return self.brokers[broker_id]

    def admin(self) -> Any:
        """One AdminClient kept alive (a collected client fails its pending futures), its metadata
        refreshed first: librdkafka waits for the controller it knows from its last metadata, and
        after a test killed that broker it would wait for it until the request timed out."""
        from confluent_kafka.admin import AdminClient

        if getattr(self, "_admin", None) is None:
            self._admin = AdminClient({"bootstrap.servers": self.bootstrap})
        elif any(not b.alive for b in self.brokers):
            from confluent_kafka import KafkaException

            try:
                self._admin.list_topics(timeout=10)
            except KafkaException:  # no broker answered in time: the caller's own request will tell
                pass
        return self._admin

    def metadata(self, topic: str | None = None, via: ClusterBroker | None = None) -> Any:
        from confluent_kafka.admin import AdminClient

        alive = [b for b in self.brokers if b.alive]
        target = via or alive[0]
        admin = AdminClient({"bootstrap.servers": target.bootstrap})
        return admin.list_topics(topic=topic, timeout=10)

    def partition(self, topic: str, p: int = 0, via: ClusterBroker | None = None) -> Any:
        return self.metadata(topic, via).topics[topic].partitions[p]

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = WAIT_S) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = check()
                if last:
                    return last
            except Exception as exc:  # noqa: BLE001 - a broker just killed, metadata in flux: ask again
                last = exc
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what} (last: {last!r})")

    def wait_leader(self, topic: str, p: int = 0, *, not_in: tuple[int, ...] = (), isr_size: int = 1,
                    timeout: float = WAIT_S) -> Any:
        def check() -> Any:
            alive_ids = {b.broker_id for b in self.brokers if b.alive}
            for b in self.brokers:
                if not b.alive:
                    continue
                part = self.partition(topic, p, via=b)
                if part.leader in alive_ids and part.leader not in not_in and len(part.isrs) >= isr_size:
                    return part
            return None

        return self.wait_for(f"a leader of {topic}-{p} outside {not_in} with isr >= {isr_size}", check, timeout)

    def create_topic(self, name: str, partitions: int = 1, rf: int = 3, configs: dict[str, str] | None = None) -> None:
        from confluent_kafka.admin import NewTopic

        fs = self.admin().create_topics([NewTopic(name, partitions, rf, config=configs or {})], operation_timeout=30)
        fs[name].result(WAIT_S)
        self.wait_for(f"{name} on every broker", lambda: all(
            name in self.metadata(name, via=b).topics and self.metadata(name, via=b).topics[name].error is None
            for b in self.brokers if b.alive))


@pytest.fixture(scope="module")
def zookeeper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeper]:
    zk = ZooKeeper(tmp_path_factory.mktemp("zk"))
    try:
        yield zk
    finally:
        zk.stop()


@pytest.fixture
def cluster_factory(zookeeper: ZooKeeper, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    made: list[ClusterBroker] = []

    def make(n: int = 3, env: dict[str, str] | None = None) -> Cluster:
        chroot = f"odradek-{request.node.name}-{time.time_ns()}".replace("[", "-").replace("]", "")
        full_env = {**FAST_ENV, **(env or {})}
        brokers = [ClusterBroker(i, tmp_path / f"broker-{i}", zookeeper.connect(chroot), full_env) for i in range(n)]
        made.extend(brokers)
        for b in brokers:
            b.start()
        cluster = Cluster(brokers)
        # every broker knows them all: one that knows fewer gives an internal topic it creates
        # (the first FindCoordinator's) fewer replicas
        cluster.wait_for(f"{n} live brokers", lambda: all(len(cluster.metadata(via=b).brokers) == n for b in brokers))
        return cluster

    try:
        yield make
    finally:
        for b in made:  # each one, even when another one's kill raised
            try:
                b.kill()
            except OSError as exc:  # pragma: no cover - a teardown must not skip the others
                print(f"cannot kill broker {b.broker_id}: {exc!r}")
