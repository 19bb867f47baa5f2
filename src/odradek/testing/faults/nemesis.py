"""Faults (nemeses) and the loop that applies them one after another under load.

Each nemesis starts a fault and returns a `heal` callable; the runner holds the
fault for its duration, heals it, waits until the cluster is whole again (every
broker registered, every partition led with every replica in its ISR) and goes on.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from odradek.testing.faults.checker import Fault, Report, check
from odradek.testing.faults.cluster import SESSION_TIMEOUT_MS, FaultCluster
from odradek.testing.faults.net import run

Heal = Callable[[], None]
ZK = ["z1", "z2", "z3"]


def leaders(c: FaultCluster, topic: str) -> dict[int, int]:
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": c.bootstrap}).list_topics(topic=topic, timeout=10)
    return {p: part.leader for p, part in md.topics[topic].partitions.items()}


def healthy(c: FaultCluster, topic: str, partitions: int) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        md = AdminClient({"bootstrap.servers": c.bootstrap}).list_topics(topic=topic, timeout=5)
    except Exception:  # noqa: BLE001 - no broker answers yet
        return False
    if len(md.brokers) < len(c.brokers) or topic not in md.topics:
        return False
    parts = md.topics[topic].partitions
    return len(parts) == partitions and all(pt.leader >= 0 and len(pt.isrs) == len(c.brokers) for pt in parts.values())


def victim(c: FaultCluster, rng: random.Random, topic: str) -> int:
    """The leader of a random partition (a random broker when metadata does not answer)."""
    try:
        ls = [b for b in leaders(c, topic).values() if b >= 0]
    except Exception:  # noqa: BLE001
        ls = []
    return rng.choice(sorted(ls)) if ls else rng.randrange(len(c.brokers))


def fill(path: Path) -> Path:
    """Write zeros until the filesystem is full; the file is the space to give back."""
    filler = path / ".filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 20, 4096, 1):  # to the last block
            with contextlib.suppress(OSError):
                while f.write(b"\0" * size):
                    pass
    return filler


def partition_leader_minority(c: FaultCluster, rng: random.Random, b: int) -> Heal:
    """The leader and one ZooKeeper server on one side, the other brokers and ZooKeepers on the other."""
    me = f"b{b}"
    zk = rng.choice(ZK)
    minority = [me, zk]
    majority = [n for n in c.others(me) if n not in minority]
    c.net.cut(minority, majority)
    return c.net.heal


def partition_follower_minority(c: FaultCluster, rng: random.Random, b: int) -> Heal:
    """A follower and one ZooKeeper server cut from the leader's majority."""
    others = [i for i in range(len(c.brokers)) if i != b]
    me = f"b{rng.choice(others)}"
    minority = [me, rng.choice(ZK)]
    c.net.cut(minority, [n for n in c.others(me) if n not in minority])
    return c.net.heal


def isolate_from_zk(c: FaultCluster, rng: random.Random, b: int) -> Heal:
    c.net.cut([f"b{b}"], ZK)
    return c.net.heal


def one_way_in(c: FaultCluster, rng: random.Random, b: int) -> Heal:
    """The leader hears nothing from the other brokers and ZooKeeper; they still hear it."""
    me = f"b{b}"
    c.net.drop_from(me, c.others(me))
    return c.net.heal


def one_way_out(c: FaultCluster, rng: random.Random, b: int) -> Heal:
    """What the leader sends to the other brokers and ZooKeeper is lost; it still hears them."""
    me = f"b{b}"
    c.net.drop_to(me, c.others(me))
    return c.net.heal


def pause_leader(c: FaultCluster, rng: random.Random, b: int) -> Heal:
    """SIGSTOP past the ZooKeeper session timeout: a zombie leader wakes up at SIGCONT."""
    c.brokers[b].pause()
    return c.brokers[b].resume


def kill_broker(c: FaultCluster, rng: random.Random, b: int) -> Heal:
    c.brokers[b].kill()
    return lambda: c.brokers[b].start()


def kill_zk(c: FaultCluster, rng: random.Random, b: int) -> Heal:
    z = rng.choice(c.zks)
    z.kill()
    return lambda: z.start()


def zk_quorum_loss(c: FaultCluster, rng: random.Random, b: int) -> Heal:
    zs = rng.sample(c.zks, 2)
    for z in zs:
        z.kill()

    def heal() -> None:
        for z in zs:
            z.start(wait=False)
        c.wait_zk_quorum()

    return heal


def expire_zk_session(c: FaultCluster, rng: random.Random, b: int) -> Heal:
    """ZooKeeper ends the broker's session while every network path stays whole (the fault
    isolate-from-zookeeper reaches expiry by a cut, after a suspension): its registration and a
    /controller it held go at once and the controller moves its leaderships, while the broker is
    told SESSION_EXPIRED at its next reconnection. It must resign what it led, start a new session,
    register again and follow the leaders elected meanwhile; the heal waits for the new registration."""
    session = c.broker_session(b)
    if session:
        c.expire_session(session)

    def heal() -> None:
        deadline = time.monotonic() + 6 * c.env_session_timeout_s
        while True:
            now = c.broker_session(b)
            if now and now != session:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"broker {b} did not register again after its session 0x{session:x} expired")
            time.sleep(0.2)

    return heal


def leadership_claims(c: FaultCluster, topic: str, partitions: int) -> dict[int, list[int]]:
    """For each partition, the brokers whose replica manager answers as its leader now: a Produce of
    no records is refused INVALID_RECORD by the leader and NOT_LEADER_OR_FOLLOWER by the others
    (the leadership check comes first), so nothing is written. Metadata would not do: it answers
    from the broker's copy of ZooKeeper's state, not from what the broker acts as."""
    import datetime
    import socket
    import struct

    from kio.schema.errors import ErrorCode
    from kio.static.primitive import Records

    from odradek.protocol.build import build
    from odradek.protocol.framing import decode_response, encode_request, request_type

    body = build(request_type(0, 9), acks=-1, timeout=datetime.timedelta(seconds=5), topic_data=[
        {"name": topic, "partition_data": [{"index": p, "records": Records(b"")} for p in range(partitions)]}])
    frame = encode_request(0, 9, 1, body, client_id="fault-checker")
    claims: dict[int, list[int]] = {p: [] for p in range(partitions)}
    for broker in c.brokers:
        if not broker.running or broker.paused:
            continue
        try:
            with socket.create_connection((broker.ip, broker.port), timeout=5) as s:
                s.settimeout(10)
                s.sendall(frame)
                data = b""
                while len(data) < 4 or len(data) < 4 + struct.unpack(">i", data[:4])[0]:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed")
                    data += chunk
        except OSError:
            continue
        response = decode_response(data[4:], 0, 9)[1]
        for t in response.responses:
            for part in t.partition_responses:
                if part.error_code != ErrorCode.not_leader_or_follower:
                    claims[part.index].append(broker.broker_id)
    return claims


def zk_leaders(c: FaultCluster, topic: str, partitions: int) -> dict[int, int]:
    """Each partition's leader as ZooKeeper's state znode has it."""
    import json

    zk = c.zk_client()
    try:
        return {p: int(json.loads(zk.get(f"/brokers/topics/{topic}/partitions/{p}/state")[0])["leader"])
                for p in range(partitions)}
    finally:
        zk.stop()
        zk.close()


def stale_leaders(c: FaultCluster, topic: str, partitions: int, within: float = 10.0) -> list[str]:
    """After a heal: partitions whose brokers, for `within` seconds, do not agree that ZooKeeper's
    leader alone leads them (a deposed leader still acting as one, or the elected one not yet)."""
    deadline = time.monotonic() + within
    while True:
        zk, claims = zk_leaders(c, topic, partitions), leadership_claims(c, topic, partitions)
        wrong = [f"p{p}: ZooKeeper's leader {zk[p]}, acting as leader {claims[p]}" for p in range(partitions)
                 if claims[p] != [zk[p]]]
        if not wrong or time.monotonic() > deadline:
            return wrong
        time.sleep(0.5)


def disk_full(c: FaultCluster, rng: random.Random, b: int) -> Heal:
    filler = fill(c.brokers[b].data_dir)
    return lambda: filler.unlink()


def read_only(c: FaultCluster, rng: random.Random, b: int) -> Heal:
    """The broker restarted on a data dir that turned read-only. (Linux refuses `mount -o
    remount,ro` while a process holds files open for writing there, "mount point is busy",
    so the disk turns read-only while the broker is down: SIGKILL, remount, start.)"""
    broker = c.brokers[b]
    path = str(broker.data_dir)
    broker.kill()
    run("mount", "-o", "remount,ro", path)
    broker.start(wait=False)

    def heal() -> None:
        broker.kill()
        run("mount", "-o", "remount,rw", path)
        broker.start()

    return heal


def lossy(c: FaultCluster, rng: random.Random, b: int) -> Heal:
    """20% packet loss both ways and a 512 kbit/s link at the leader (no netem here: no added delay)."""
    c.net.lossy(f"b{b}", 0.2)
    c.net.slow(f"b{b}")
    return c.net.heal


def delay_loss(c: FaultCluster, rng: random.Random, b: int) -> Heal:
    """Every packet to and from the leader waits 200 ms (+- 20 ms), so its round trips take 400 ms
    more, and 5% of them are lost each way: a delay line on NFQUEUE in its namespace (net.delay)."""
    c.net.lossy(f"b{b}", 0.05)
    c.net.delay(f"b{b}", 200.0, 20.0, seed=rng.randrange(1 << 30))
    return c.net.heal


NEMESES: dict[str, Callable[[FaultCluster, random.Random, int], Heal]] = {
    "partition-leader-minority": partition_leader_minority,
    "partition-follower-minority": partition_follower_minority,
    "isolate-from-zookeeper": isolate_from_zk,
    "zookeeper-session-expiry": expire_zk_session,
    "one-way-in": one_way_in,
    "one-way-out": one_way_out,
    "pause-leader": pause_leader,
    "kill-broker": kill_broker,
    "kill-zookeeper": kill_zk,
    "zookeeper-quorum-loss": zk_quorum_loss,
    "disk-full": disk_full,
    "read-only-disk": read_only,
    "packet-loss": lossy,
    "delay-loss": delay_loss,
}

# How long each fault holds: past the session timeout where a session must expire.
HOLD = {"pause-leader": 2.5 * SESSION_TIMEOUT_MS / 1000, "zookeeper-quorum-loss": 8.0,
        "partition-leader-minority": 10.0, "isolate-from-zookeeper": 10.0,
        "delay-loss": 2.5 * SESSION_TIMEOUT_MS / 1000}  # ZooKeeper pings, ISR and fetches slowed for a while


class Campaign:
    """The cluster, the workers, the faults; `run()` returns the checker's report."""

    def __init__(self, workdir: Path, *, seed: int, faults: int, kinds: list[str] | None = None,
                 partitions: int = 3, producers: int = 2, rate: float = 50.0, hold: float = 6.0, in_order: bool = False,
                 log: Callable[[str], None] = print) -> None:
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.n_faults = faults
        self.kinds = kinds or list(NEMESES)
        self.partitions = partitions
        self.producers = producers
        self.rate = rate
        self.hold = hold
        self.in_order = in_order  # the kinds one after another (else seeded random picks)
        self.log = log
        self.topic, self.topic_out = "faults", "faults-out"
        self.faults: list[Fault] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self.stale: list[str] = []  # leadership claims that disagreed with ZooKeeper after a heal

    def _worker(self, c: FaultCluster, kind: str, i: int, client: str, **extra: Any) -> None:
        cmd = [*c.net.prefix(client), sys.executable, "-m", "odradek.testing.faults.workers", kind,
               "--bootstrap", c.bootstrap, "--topic", self.topic, "--topic-out", self.topic_out,
               "--partitions", str(self.partitions), "--out", str(self.workdir / f"{kind}-{i}.jsonl"),
               "--id", str(i), "--duration", "7200", *[str(x) for kv in extra.items() for x in (f"--{kv[0]}", kv[1])]]
        with open(self.workdir / f"{kind}-{i}.log", "ab") as log:
            self.workers.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))

    def _create_topics(self) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

        admin = AdminClient({"bootstrap.servers": self.cluster.bootstrap})
        cfg = {"min.insync.replicas": "2", "segment.bytes": str(4 << 20)}
        fs = admin.create_topics([NewTopic(t, self.partitions, 3, config=cfg) for t in (self.topic, self.topic_out)],
                                 operation_timeout=30)
        for f in fs.values():
            f.result(60)

    def _wait_for_acks(self, timeout: float = 60.0) -> None:
        """Until every producer has had an acknowledgement (at most `timeout` seconds), then 2 s more."""
        deadline = time.monotonic() + timeout
        files = [self.workdir / f"producer-{i}.jsonl" for i in range(self.producers)]
        while time.monotonic() < deadline:
            if all(f.exists() and '"t":"ack"' in f.read_text() for f in files):
                break
            time.sleep(0.5)
        time.sleep(2)

    def wait_healthy(self, timeout: float = 90.0) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if healthy(self.cluster, self.topic, self.partitions):
                return time.monotonic() - started
            time.sleep(0.5)
        raise TimeoutError(f"the cluster is not whole {timeout:.0f} s after the fault healed")

    def run(self) -> Report:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with FaultCluster(self.workdir / "cluster") as c:
            self.cluster = c
            c.start(clients=self.producers + 2)
            self.log(f"cluster up: brokers {c.bootstrap}, ZooKeeper {c.zk_connect}")
            self._create_topics()
            self.wait_healthy()
            try:
                for i in range(self.producers):
                    self._worker(c, "producer", i, f"c{i}", rate=self.rate)
                self._worker(c, "consumer", 0, f"c{self.producers}")
                self._worker(c, "txn", 0, f"c{self.producers + 1}")
                self._wait_for_acks()  # a fault before the producers run measures their start, not the fault
                for n in range(self.n_faults):
                    kind = self.kinds[n % len(self.kinds)] if self.in_order else self.rng.choice(self.kinds)
                    b = victim(c, self.rng, self.topic)
                    started = time.time()
                    heal = NEMESES[kind](c, self.rng, b)
                    try:
                        time.sleep(HOLD.get(kind, self.hold))
                    finally:
                        healed = time.time()
                        heal()
                    fault = Fault(kind, f"b{b}", started, healed)
                    self.faults.append(fault)
                    try:
                        whole = self.wait_healthy()
                    except TimeoutError as exc:
                        fault.notes = str(exc)
                        self.log(f"fault {n + 1}: {kind} at b{b}: {exc}")
                        raise
                    wrong = stale_leaders(c, self.topic, self.partitions)
                    self.stale += [f"after {kind} at b{b}: {w}" for w in wrong]
                    self.log(f"fault {n + 1}/{self.n_faults}: {kind} at b{b} held {healed - started:.1f} s; "
                             f"whole again {whole:.1f} s after healing" + (f"; LEADERS DISAGREE {wrong}" if wrong else ""))
                    time.sleep(self.rng.uniform(1.0, 3.0))
            finally:
                c.net.heal()
                for broker in c.brokers:
                    if not broker.running:
                        broker.start()
                    broker.resume()
                for w in self.workers:
                    if w.poll() is None:
                        w.terminate()
                for w in self.workers:
                    try:
                        w.wait(90)
                    except subprocess.TimeoutExpired:
                        w.kill()
                        w.wait(10)
            self.wait_healthy()
            report = check(self.workdir, c.bootstrap, self.topic, self.topic_out, self.partitions, self.faults)
            report.stale_leaders = len(self.stale)
            for claim in self.stale:
                report.note("stale_leaders", claim)
        return report


def main_env_ok() -> None:
    if os.geteuid() != 0:
        raise SystemExit("the fault campaign needs root (network namespaces, mounts)")
