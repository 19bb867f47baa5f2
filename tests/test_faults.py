"""Faults under load, checked against Kafka's guarantees (issue 18).

A 3-server ZooKeeper ensemble, 3 brokers and the clients each run in a network
namespace of their own (odradek.testing.faults); a partition is iptables dropping
packets between namespaces, a full disk is a broker's 64 MB tmpfs filled up. The
long seeded campaign is bench/fault_campaign.py; here a short seeded run of a few
faults of different kinds, and the storage behaviour it led to.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from odradek.protocol.records import decode_batch, encode_batch, scan_batches
from odradek.storage.log import LogConfig, PartitionLog
from odradek.testing.faults.checker import Report, split_brain, table
from odradek.testing.faults.cluster import FaultCluster
from odradek.testing.faults.nemesis import Campaign, fill
from odradek.testing.faults.net import Net, netns_works, run


def test_network_namespaces_work_here() -> None:
    """CI runs as root like this machine: the campaign's partitions need `ip netns` and iptables in it."""
    assert netns_works() is None, netns_works()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk))
    try:
        yield disk
    finally:
        run("umount", "-l", str(disk), check=False)


def idempotent(pid: int, seq: int, value: bytes) -> bytes:
    return encode_batch([(b"k", value, ())], producer_id=pid, producer_epoch=0, base_sequence=seq)


def test_a_write_the_full_disk_refused_is_not_remembered_as_written(small_disk: Path) -> None:
    """The campaign's disk-full fault: the log took the producer's sequence numbers before the
    write that failed, so the producer's retry, once space came back, was answered as a
    duplicate at offsets that were never written: an acknowledged record lost."""
    plog = PartitionLog.open(small_disk / "t-0", "t", 0, LogConfig())
    data = idempotent(7, 0, b"first")
    plog.append(data, scan_batches(data)[0], now_ms=int(time.time() * 1000))
    filler = fill(small_disk)
    retry = idempotent(7, 1, b"x" * 8192)
    with pytest.raises(OSError) as refused:
        plog.append(retry, scan_batches(retry)[0], now_ms=int(time.time() * 1000))
    assert refused.value.errno == errno.ENOSPC
    assert plog.log_end_offset == 1
    filler.unlink()  # the space comes back; the producer retries the same batch
    result = plog.append(retry, scan_batches(retry)[0], now_ms=int(time.time() * 1000))
    assert (result.base_offset, plog.log_end_offset) == (1, 2)
    assert read_values(plog) == [(0, b"first"), (1, b"x" * 8192)]
    plog.close()


def test_a_truncation_on_a_full_disk_forgets_the_cut_batches_sequence_numbers(small_disk: Path) -> None:
    """A follower whose disk was full truncated its log to a new leader's, but writing the
    leader-epoch checkpoint failed (ENOSPC) before the producer state was rebuilt: the state kept
    the sequence numbers of the batch just cut, so as the next leader it would have answered the
    producer's retry of that batch as a duplicate at an offset it no longer held (acknowledged,
    never written)."""

    def batch(seq: int, offset: int, value: bytes) -> bytes:
        return encode_batch([(b"k", value, ())], base_offset=offset, producer_id=7, producer_epoch=0,
                            base_sequence=seq, partition_leader_epoch=0)

    plog = PartitionLog.open(small_disk / "t-0", "t", 0, LogConfig())
    data = batch(0, 0, b"a") + batch(1, 1, b"b") + batch(2, 2, b"c")  # offset 2: not on the new leader
    plog.append_as_follower(data, scan_batches(data)[0])
    filler = fill(small_disk)
    try:
        with pytest.raises(OSError):  # the checkpoint: the truncation itself is done
            plog.truncate_to(2)
        assert plog.log_end_offset == 2
        assert plog.producer_state.producers[7].last_seq == 1
    finally:
        filler.unlink()
    plog.assign_leader_epoch(1, 2)  # leader now; the producer retries its unacknowledged batch
    plog.leader_epoch = 1
    retry = idempotent(7, 2, b"c")
    result = plog.append(retry, scan_batches(retry)[0], now_ms=int(time.time() * 1000))
    assert (result.base_offset, plog.log_end_offset) == (2, 3)
    assert read_values(plog) == [(0, b"a"), (1, b"b"), (2, b"c")]
    plog.close()


def read_values(plog: PartitionLog) -> list[tuple[int, bytes | None]]:
    out: list[tuple[int, bytes | None]] = []
    data = plog.read(0, 1 << 20)
    headers, _ = scan_batches(data)
    for h in headers:
        out.extend((r.offset, r.value) for r in decode_batch(data, h.position).records)
    return out


# -- a cluster in namespaces ------------------------------------------------------


@pytest.fixture(scope="module")
def fault_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultCluster]:
    with FaultCluster(tmp_path_factory.mktemp("faults")) as c:
        c.start(clients=0)
        yield c


def produce_one(c: FaultCluster, topic: str, p: int, value: bytes) -> Any:
    """One record, no retries: the broker's own answer (None for an acknowledgement)."""
    from confluent_kafka import Producer

    result: list[Any] = []
    prod = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "retries": 0, "enable.idempotence": False,
                     "message.timeout.ms": 15000})
    prod.produce(topic, value, partition=p, on_delivery=lambda err, msg: result.append(err))
    prod.flush(20)
    assert result, "no delivery report"
    return result[0]


def read_partition(c: FaultCluster, topic: str, p: int) -> list[bytes]:
    from odradek.testing.faults.checker import read_topic

    return [v.encode() for _, v in sorted(read_topic(c.bootstrap, topic, p + 1, committed=False)[p].items())]


def test_a_full_disk_answers_storage_error_for_its_partitions_and_recovers(fault_cluster: FaultCluster) -> None:
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    c = fault_cluster
    admin = AdminClient({"bootstrap.servers": c.bootstrap})
    # partition 0 on broker 0 alone, partition 1 on broker 1 alone
    fs = admin.create_topics([NewTopic("disk", num_partitions=2, replica_assignment=[[0], [1]])], operation_timeout=30)
    fs["disk"].result(60)
    deadline = time.monotonic() + 30
    while produce_one(c, "disk", 0, b"before") is not None:
        assert time.monotonic() < deadline, "partition 0 never took a write"
        time.sleep(0.5)
    filler = fill(c.brokers[0].data_dir)
    try:
        err = produce_one(c, "disk", 0, b"refused" * 2000)
        assert err is not None and err.code() == KafkaError.KAFKA_STORAGE_ERROR, err
        assert produce_one(c, "disk", 1, b"other disk") is None  # the other partitions keep serving
    finally:
        filler.unlink()
    assert produce_one(c, "disk", 0, b"after") is None  # the space came back
    assert read_partition(c, "disk", 0) == [b"before", b"after"]  # nothing that was refused


def test_an_idempotent_producer_keeps_its_epoch_through_a_full_disk(fault_cluster: FaultCluster) -> None:
    """The campaign's disk-full during a leadership move wrote an idempotent producer's records
    twice: the batch the full disk refused was answered KAFKA_STORAGE_ERROR, but the batches in
    flight behind it OUT_OF_ORDER_SEQUENCE_NUMBER (a gap after the unwritten one), on which
    librdkafka bumps the producer's epoch and renumbers everything unacknowledged, in every
    partition (KIP-360): a batch an old leader elsewhere had written but not acknowledged was sent
    again under new numbers. Kafka answers KAFKA_STORAGE_ERROR for a log it cannot write, so the
    producer retries with the same numbers; here too, and the epoch stays."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    c = fault_cluster
    broker = c.brokers[2]
    admin = AdminClient({"bootstrap.servers": c.bootstrap})
    admin.create_topics([NewTopic("gap", num_partitions=1, replica_assignment=[[2]])],
                        operation_timeout=30)["gap"].result(60)
    errors: list[Any] = []
    prod = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "enable.idempotence": True,
                     "linger.ms": 0, "batch.num.messages": 1, "max.in.flight": 5, "message.timeout.ms": 60000,
                     "retry.backoff.ms": 100, "retry.backoff.max.ms": 300})

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(err)

    deadline = time.monotonic() + 30
    while True:  # the first write makes the producer id known to the log
        prod.produce("gap", b"before", partition=0, on_delivery=delivered)
        prod.flush(20)
        if not errors:
            break
        assert time.monotonic() < deadline, errors
        errors.clear()
    filler = fill(broker.data_dir)
    try:
        for i in range(20):  # one batch each (a page each), five in flight: the first refused, the others behind it
            prod.produce("gap", f"gap-{i}".encode() + b"." * 5000, partition=0, on_delivery=delivered)
        prod.poll(3)
    finally:
        filler.unlink()
    assert prod.flush(60) == 0 and errors == []
    values = read_partition(c, "gap", 0)
    assert values[1:] == [f"gap-{i}".encode() + b"." * 5000 for i in range(20)]
    data = b"".join(p.read_bytes() for p in sorted((broker.data_dir / "gap-0").glob("*.log")))
    epochs = {(h.producer_id, h.producer_epoch) for h in scan_batches(data)[0]}
    assert len(epochs) == 1, f"the producer's epoch was bumped: {sorted(epochs)}"
    assert "rejected produce to gap-0" not in broker.logs()  # no OUT_OF_ORDER_SEQUENCE_NUMBER


def test_produce_and_consume_go_on_while_zookeeper_has_no_quorum(fault_cluster: FaultCluster) -> None:
    """Two of the three ZooKeeper servers SIGKILLed for twice the session timeout: the existing
    leaders keep acknowledging acks=all writes and serving reads (as Kafka's do), and nothing
    acknowledged is lost when the quorum is back. The brokers used to stop leading the moment
    their ZooKeeper connection dropped (the campaign's zookeeper-quorum-loss: no acks at all)."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    c = fault_cluster
    admin = AdminClient({"bootstrap.servers": c.bootstrap})
    admin.create_topics([NewTopic("quorum", 1, 3, config={"min.insync.replicas": "2"})],
                        operation_timeout=30)["quorum"].result(60)
    acked: list[bytes] = []
    prod = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "enable.idempotence": True,
                     "message.timeout.ms": 60000, "linger.ms": 0})

    def send(value: bytes, within: float) -> float:
        started = time.monotonic()
        done: list[Any] = []
        prod.produce("quorum", value, partition=0, on_delivery=lambda err, msg: done.append(err))
        prod.flush(within)
        assert done == [None], f"{value!r} not acknowledged within {within} s: {done}"
        acked.append(value)
        return time.monotonic() - started

    deadline = time.monotonic() + 60
    while True:  # the topic led, its ISR whole
        md = admin.list_topics("quorum", timeout=10).topics["quorum"].partitions[0]
        if md.leader >= 0 and len(md.isrs) == 3:
            break
        assert time.monotonic() < deadline, md
        time.sleep(0.5)
    send(b"before", 30)
    killed = c.zks[:2]
    for z in killed:
        z.kill()
    try:
        time.sleep(1.0)
        hold = 2 * c.env_session_timeout_s
        started, n, slowest = time.monotonic(), 0, 0.0
        while time.monotonic() - started < hold:
            slowest = max(slowest, send(f"no-quorum-{n}".encode(), 5))
            n += 1
            time.sleep(0.3)
        cons = Consumer({"bootstrap.servers": c.bootstrap, "group.id": "quorum-reader", "enable.auto.commit": False})
        cons.assign([TopicPartition("quorum", 0, 0)])
        got: list[bytes] = []
        read_until = time.monotonic() + 10
        while len(got) < len(acked) and time.monotonic() < read_until:
            got.extend(m.value() for m in cons.consume(100, 0.5) if not m.error())  # type: ignore[misc]
        cons.close()
        assert got == acked, "reads while ZooKeeper has no quorum"
    finally:
        for z in killed:
            z.start(wait=False)
        c.wait_zk_quorum()
    send(b"after", 60)
    assert read_partition(c, "quorum", 0) == acked


def test_a_coordinator_cut_from_zookeeper_acknowledges_no_offset_commit(fault_cluster: FaultCluster) -> None:
    """Once its ZooKeeper session is suspended a broker may be replaced at any moment: its group
    coordinator must acknowledge no offset commit from then on (the campaign's zookeeper-quorum-loss:
    a suspended coordinator went on acknowledging commits, which the newly elected leader of
    __consumer_offsets did not have; the group's committed offset went backwards)."""
    import datetime

    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    c = fault_cluster
    admin = AdminClient({"bootstrap.servers": c.bootstrap})
    admin.create_topics([NewTopic("commits", 1, 3)], operation_timeout=30)["commits"].result(60)
    cons = Consumer({"bootstrap.servers": c.bootstrap, "group.id": "cut-coordinator", "enable.auto.commit": False})
    deadline = time.monotonic() + 60
    while True:
        try:
            cons.commit(offsets=[TopicPartition("commits", 0, 1)], asynchronous=False)
            break
        except KafkaException:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    group = admin.describe_consumer_groups(["cut-coordinator"])["cut-coordinator"].result(30)
    b = group.coordinator.id
    broker = c.brokers[b]
    mark = "ZooKeeper session suspended"
    before = broker.logs().count(mark)
    acked: list[tuple[float, int]] = []  # (wall clock of the acknowledgement, offset)
    c.net.cut([f"b{b}"], ["z1", "z2", "z3"])
    try:
        deadline = time.monotonic() + 4 * c.env_session_timeout_s
        while broker.logs().count(mark) == before:
            assert time.monotonic() < deadline, "the broker never noticed it was cut from ZooKeeper"
            time.sleep(0.05)
        line = [x for x in broker.logs().splitlines() if mark in x][-1]
        suspended_at = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").replace(
            tzinfo=datetime.UTC).timestamp()
        n = 2
        until = time.time() + c.env_session_timeout_s / 3
        while time.time() < until:
            try:
                res = cons.commit(offsets=[TopicPartition("commits", 0, n)], asynchronous=False)
                if res and all(tp.error is None for tp in res):
                    acked.append((time.time(), n))
            except KafkaException:
                pass
            n += 1
            time.sleep(0.1)
    finally:
        c.net.heal()
    # a new coordinator can only take over once the session expired, a third of a session timeout
    # after kazoo's suspension at the earliest: an acknowledgement before that came from the cut broker
    zombie = [(round(at - suspended_at, 2), o) for at, o in acked if at < suspended_at + c.env_session_timeout_s / 3]
    assert zombie == [], f"commits acknowledged by the coordinator cut from ZooKeeper: {zombie}"
    deadline = time.monotonic() + 60
    while True:  # the coordinator may be moving (its session may have expired in the cut): librdkafka's
        try:     # committed() gives up on NOT_COORDINATOR instead of finding the new one
            committed = cons.committed([TopicPartition("commits", 0)], timeout=30)[0].offset
            break
        except KafkaException as exc:
            assert time.monotonic() < deadline and exc.args[0].code() in (
                KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.COORDINATOR_LOAD_IN_PROGRESS), exc
            time.sleep(0.5)
    assert committed >= max((o for _, o in acked), default=1)
    cons.close()


def round_trips(ip: str, port: int, n: int = 7) -> list[float]:
    """TCP connects to ip:port, in milliseconds (SYN there, SYN-ACK back: one round trip each)."""
    out = []
    for _ in range(n):
        started = time.monotonic()
        with socket.create_connection((ip, port), timeout=15):
            out.append((time.monotonic() - started) * 1000)
    return [round(x, 1) for x in out]


def test_a_delay_line_holds_both_ways_and_a_dead_one_lets_packets_pass() -> None:
    """net.delay (no netem in this kernel): a round trip to the node takes 2 x 200 ms more while
    its delay line runs, and nothing more once healed; a delay line that dies (SIGKILL) leaves the
    node reachable at once (`--queue-bypass`), so a crashed one never turns into a partition."""
    net = Net()
    listener = None
    try:
        net.create()
        ip = net.add("a", 1).ip
        listener = subprocess.Popen([*net.prefix("a"), sys.executable, "-c", (
            "import socket\ns = socket.create_server(('0.0.0.0', 7000), backlog=64)\n"
            "for _ in range(200):\n    s.accept()[0].close()")])
        deadline = time.monotonic() + 30
        while True:
            try:
                before = round_trips(ip, 7000)
                break
            except OSError:
                assert time.monotonic() < deadline, "the listener never came up"
                time.sleep(0.2)
        net.delay("a", 200.0, 20.0)
        during = round_trips(ip, 7000)
        net.heal()
        healed = round_trips(ip, 7000)
        stats = net.delay_stats["a"]
        net.delay("a", 200.0, 20.0)
        os.kill(net.delays["a"].pid, signal.SIGKILL)
        net.delays["a"].wait(10)
        killed = round_trips(ip, 7000)
    finally:
        if listener is not None:
            listener.kill()
            listener.wait(10)
        net.close()
    assert statistics.median(before) < 50, before
    assert min(during) >= 2 * (200 - 20), during
    assert statistics.median(healed) < 50, healed
    assert statistics.median(killed) < 50, killed
    # every packet held was let go, in a process that exited on its own at the heal
    assert stats["held"] >= 2 * 7 and stats["released"] == stats["held"] and stats["returncode"] == 0, stats


def test_a_leader_200_ms_away_with_loss_acknowledges_late_but_loses_nothing(fault_cluster: FaultCluster) -> None:
    """The campaign's delay-loss at a partition's leader: 200 ms (+- 20) each way and 5% loss each
    way. A round trip to it takes >= 360 ms more, to the other brokers not; acks=all acknowledgements
    come no sooner than a round trip, and every acknowledged record is read back once, in order.
    Once healed, round trips are back to normal."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    c = fault_cluster
    admin = AdminClient({"bootstrap.servers": c.bootstrap})
    admin.create_topics([NewTopic("delayed", 1, 3, config={"min.insync.replicas": "2"})],
                        operation_timeout=30)["delayed"].result(60)
    deadline = time.monotonic() + 60
    while True:
        md = admin.list_topics("delayed", timeout=10).topics["delayed"].partitions[0]
        if md.leader >= 0 and len(md.isrs) == 3:
            break
        assert time.monotonic() < deadline, md
        time.sleep(0.5)
    leader, other = c.brokers[md.leader], c.brokers[(md.leader + 1) % len(c.brokers)]
    prod = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "enable.idempotence": True,
                     "linger.ms": 0, "message.timeout.ms": 60000})
    acked: list[bytes] = []
    errors: list[Any] = []

    def send(value: bytes) -> float:
        started = time.monotonic()
        done: list[Any] = []
        prod.produce("delayed", value, partition=0, on_delivery=lambda err, msg: done.append(err))
        prod.flush(60)
        if done == [None]:
            acked.append(value)
        else:
            errors.append((value, done))
        return (time.monotonic() - started) * 1000

    for i in range(5):
        send(f"before-{i}".encode())
    before = round_trips(leader.ip, leader.port)
    c.net.lossy(leader.name, 0.05)
    c.net.delay(leader.name, 200.0, 20.0, seed=18)
    try:
        during = round_trips(leader.ip, leader.port)
        elsewhere = round_trips(other.ip, other.port)
        latencies = [send(f"delayed-{i}".encode()) for i in range(20)]
    finally:
        c.net.heal()
    stats = c.net.delay_stats[leader.name]
    after = round_trips(leader.ip, leader.port)
    for i in range(5):
        send(f"after-{i}".encode())
    assert statistics.median(before) < 50, before
    assert min(during) >= 2 * (200 - 20), during
    assert statistics.median(elsewhere) < 50, elsewhere
    assert min(latencies) >= 2 * (200 - 20), latencies
    assert statistics.median(after) < 50, after
    assert stats["held"] > 0 and stats["released"] == stats["held"] and stats["returncode"] == 0, stats
    assert errors == []
    assert read_partition(c, "delayed", 0) == acked


def offset_fetch(ip: str, port: int, group: str, topic: str) -> tuple[int, int]:
    """An OffsetFetch v7 (require_stable) for partition 0, sent to this broker alone: (error code, offset)."""
    import struct

    from odradek.protocol.build import build
    from odradek.protocol.framing import decode_response, encode_request, request_type

    body = build(request_type(9, 7), group_id=group, topics=[{"name": topic, "partition_indexes": [0]}],
                 require_stable=True)
    with socket.create_connection((ip, port), timeout=10) as s:
        s.settimeout(10)
        s.sendall(encode_request(9, 7, 1, body, client_id="fault-test"))
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack(">i", data[:4])[0]:
            chunk = s.recv(65536)
            assert chunk, "connection closed"
            data += chunk
    response = decode_response(data[4:], 9, 7)[1]
    part = response.topics[0].partitions[0] if response.topics else None
    error = int(response.error_code) or (int(part.error_code) if part is not None else 0)
    return error, int(part.committed_offset) if part is not None else -1


def test_a_coordinator_cut_from_zookeeper_serves_no_stale_committed_offsets(fault_cluster: FaultCluster) -> None:
    """The campaign's --seed 8: a group coordinator cut from ZooKeeper (its session expired there, its
    __consumer_offsets partition led elsewhere by then) went on answering OffsetFetch from what it
    had: a transactional consumer that asked it after an abort was told an offset three committed
    transactions old and copied their input again (471 records re-read). A broker whose session is
    suspended may be replaced at any moment, so it answers NOT_COORDINATOR, as it does for commits.
    (Not shown here by a newer commit at the new coordinator: that commit was refused
    COORDINATOR_NOT_AVAILABLE for over 60 s in 1 of 4 runs, with the cut broker flapping in and out
    of the ISR.)"""
    from confluent_kafka import Consumer, KafkaException, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    c = fault_cluster
    admin = AdminClient({"bootstrap.servers": c.bootstrap})
    admin.create_topics([NewTopic("stale-offsets", 1, 3)], operation_timeout=30)["stale-offsets"].result(60)

    def commit(bootstrap: str, offset: int) -> None:
        cons = Consumer({"bootstrap.servers": bootstrap, "group.id": "stale-reader", "enable.auto.commit": False})
        deadline = time.monotonic() + 60
        last: Any = None
        try:
            while True:
                try:
                    res = cons.commit(offsets=[TopicPartition("stale-offsets", 0, offset)], asynchronous=False)
                    if res and all(tp.error is None for tp in res):
                        return
                    last = res
                except KafkaException as exc:
                    last = exc
                assert time.monotonic() < deadline, f"commit of {offset} never acknowledged: {last}"
                time.sleep(0.5)
        finally:
            cons.close()

    commit(c.bootstrap, 1)
    b = admin.describe_consumer_groups(["stale-reader"])["stale-reader"].result(30).coordinator.id
    broker = c.brokers[b]
    assert offset_fetch(broker.ip, broker.port, "stale-reader", "stale-offsets") == (0, 1)
    mark = "ZooKeeper session suspended"
    before = broker.logs().count(mark)
    c.net.cut([broker.name], ["z1", "z2", "z3"])
    try:
        deadline = time.monotonic() + 4 * c.env_session_timeout_s
        while broker.logs().count(mark) == before:
            assert time.monotonic() < deadline, "the broker never noticed it was cut from ZooKeeper"
            time.sleep(0.05)
        # from now on its session may expire in ZooKeeper and the controller move the partition to a
        # coordinator that takes newer commits, while the cut broker still leads in its own eyes
        stale = offset_fetch(broker.ip, broker.port, "stale-reader", "stale-offsets")
    finally:
        c.net.heal()
    assert stale[0] != 0, f"the coordinator cut from ZooKeeper answered offset {stale[1]} as committed"
    assert stale[0] == 16, stale  # NOT_COORDINATOR: the client finds the coordinator again


def test_the_split_brain_check_takes_leader_epochs_from_the_log() -> None:
    """librdkafka reports no leader epoch for a produced record (the producer's ack carries -1), so
    the checker takes each acknowledged record's from its batch in the log: two epochs interleaving
    in offsets, or an old epoch acknowledging a record sent after a newer epoch's ack, count."""

    def ack(o: int, sent: float, at: float) -> dict[str, Any]:
        return {"t": "ack", "p": 0, "o": o, "v": f"0:{o}:{sent}", "e": -1, "sent": sent, "at": at}

    clean = Report()
    split_brain(clean, [ack(0, 1.0, 1.5), ack(1, 1.2, 1.6), ack(2, 1.7, 1.9)], {0: {0: 3, 1: 3, 2: 4}})
    assert (clean.epochs_checked, clean.split_brain) == (3, 0)
    # epoch 4's leader acknowledged offset 1 at 1.5; the deposed leader of epoch 3 took a record sent
    # at 1.7 and acknowledged it at offset 2
    zombie = Report()
    split_brain(zombie, [ack(0, 1.0, 1.2), ack(1, 1.1, 1.5), ack(2, 1.7, 1.9)], {0: {0: 3, 1: 4, 2: 3}})
    assert zombie.split_brain == 2, dict(zombie.examples)  # epoch 3 after epoch 4 in offsets, and in time
    assert "sent after an ack of epoch 4" in zombie.examples["split_brain"][1]


def test_a_seeded_run_of_faults_keeps_every_guarantee(tmp_path: Path) -> None:
    """A leader paused past its ZooKeeper session, a broker cut from ZooKeeper, a leader whose
    session ZooKeeper expires (it must register again and follow the leaders elected meanwhile),
    ZooKeeper losing quorum: nothing acknowledged lost, no duplicates, no reordering, no split
    brain, no aborted or stale reads, committed offsets never going backwards, and after each heal
    only ZooKeeper's leader acting as a partition's leader. Then a leader's disk fills up: with
    leadership moving meanwhile, an idempotent producer's records were written twice in 1 of 4 runs
    (a sequence gap behind the refused batch made librdkafka bump its epoch; see
    test_an_idempotent_producer_keeps_its_epoch_through_a_full_disk).
    """
    kinds = ["pause-leader", "isolate-from-zookeeper", "zookeeper-session-expiry", "zookeeper-quorum-loss", "disk-full"]
    lines: list[str] = []
    campaign = Campaign(tmp_path, seed=18, faults=len(kinds), kinds=kinds, in_order=True, hold=5.0,
                        log=lines.append)
    report = campaign.run()
    print("\n".join(lines))
    print(table(campaign.faults))
    assert report.acked > 500
    assert report.reads > 0 and report.txn_committed > 0
    assert report.epochs_checked == report.acked  # every ack's leader epoch, from the log
    assert report.violations() == {}, dict(report.examples)
    assert {f.kind for f in campaign.faults} == set(kinds)
    assert all(f.recovered is not None and f.recovered < 30 for f in campaign.faults), table(campaign.faults)
    # everything the harness made is gone: namespaces, the bridge, the data dirs' mounts
    net = campaign.cluster.net
    assert net.tag not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert net.bridge not in subprocess.run(["ip", "link"], capture_output=True, text=True, check=True).stdout
    assert str(tmp_path) not in Path("/proc/mounts").read_text()
