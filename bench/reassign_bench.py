"""Partition reassignment throughput, with and without a replication throttle, and what the
clients keep meanwhile.

A local ZooKeeper and four `odradek serve --zookeeper` brokers on 127.0.0.1. Topic `bench`
(RF 2, on brokers 0-2 only) is filled with --mb MB of incompressible records; then

  1. baseline: an acks=all producer (and a consumer reading it back) on topic `clients` for
     --seconds, alone;
  2. unthrottled move: every partition of `bench` moves one replica onto broker 3 while the
     same clients run; reassignment MB/s = bytes copied / time until the last move is done;
  3. throttled move: the partitions move back (a full copy again) with
     `--throttle` bytes/s (leader/follower.replication.throttled.rate), clients running.

    .venv/bin/python bench/reassign_bench.py [--mb 200] [--throttle 20000000] [--seconds 8]

  4. the clients alone again (the host's speed drifts: the share kept is of the mean of the
     two baselines).

Prints one table; the clients' figures are records/s of 1 KiB records, the share of the
baseline the producer kept during each move, the producer's acknowledgement latency (p50 and
p99; mostly its own queue when it runs at full speed), the latency of a probe producing one
record at a time on its own connection, to each partition in turn (the replication an acks=all
record waits for), and the CPU each process used meanwhile (% of one core: brokers 0-3,
ZooKeeper, this process with the clients).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # re-exported without __all__

from odradek.cli.cluster_up import broker_command, free_port, start_zookeeper, wait_for_port
from odradek.cluster.peer import PeerConnection

RECORD = 1024


def call(port: int, api_key: int, version: int, body: dict[str, Any]) -> Any:
    async def ask() -> Any:
        peer = PeerConnection("127.0.0.1", port, "reassign-bench")
        try:
            return await peer.call(api_key, version, body, 30.0)
        finally:
            peer.close()

    return asyncio.run(ask())


class Clients:
    """An acks=all producer at full speed and a consumer reading the same topic, counted."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.produced = 0
        self.consumed = 0
        self.latencies: list[float] = []
        self.probes: list[float] = []
        self._stop = threading.Event()

    def _produce(self) -> None:
        p = Producer({"bootstrap.servers": self.bootstrap, "acks": "all", "linger.ms": 5,
                      "queue.buffering.max.messages": 20000})
        payload = os.urandom(RECORD)

        def delivered(err: Any, msg: Any) -> None:
            if err is None:
                self.produced += 1
                self.latencies.append(msg.latency())

        while not self._stop.is_set():
            try:
                p.produce("clients", payload, on_delivery=delivered)
            except BufferError:
                p.poll(0.01)
            p.poll(0)
        p.flush(30)

    def _probe(self) -> None:
        """One record at a time (acks=all) on its own connection: the replication latency an
        acknowledgement waits for, without the queue of the producer running at full speed."""
        p = Producer({"bootstrap.servers": self.bootstrap, "acks": "all", "linger.ms": 0})
        acked: list[float] = []
        n = 0
        while not self._stop.is_set():
            started = time.monotonic()
            n += 1
            p.produce("clients", b"probe", partition=n % 3, on_delivery=lambda err, msg: acked.append(time.monotonic()))
            p.flush(30)
            if acked:
                self.probes.append(acked.pop() - started)
            time.sleep(0.02)

    def _consume(self) -> None:
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"bench-{time.time_ns()}",
                      "auto.offset.reset": "latest"})
        c.subscribe(["clients"])
        while not self._stop.is_set():
            for m in c.consume(500, 0.2):
                if not m.error():
                    self.consumed += 1
        c.close()

    def run_while(self, done: Any, at_least: float, pids: list[int]) -> Phase:
        """Run until done() and at_least seconds."""
        self._stop.clear()
        self.produced = self.consumed = 0
        threads = [threading.Thread(target=self._produce), threading.Thread(target=self._consume),
                   threading.Thread(target=self._probe)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # the consumer joins its group
        p0, c0, start = self.produced, self.consumed, time.monotonic()
        l0, q0 = len(self.latencies), len(self.probes)
        cpu0 = cpu_seconds(pids)
        while not (done() and time.monotonic() - start >= at_least):
            time.sleep(0.1)
        took = time.monotonic() - start
        p1, c1 = self.produced, self.consumed
        cpu = [(b - a) / took for a, b in zip(cpu0, cpu_seconds(pids), strict=True)]
        lat = sorted(self.latencies[l0:])
        probes = sorted(self.probes[q0:])
        self._stop.set()
        for t in threads:
            t.join(60)
        self.latencies.clear()
        self.probes.clear()
        return Phase(took, (p1 - p0) / took, (c1 - c0) / took, _pct(lat, 0.5), _pct(lat, 0.99), _pct(probes, 0.5),
                     _pct(probes, 0.99), cpu)


def _pct(values: list[float], q: float) -> float:
    return values[min(int(len(values) * q), len(values) - 1)] if values else float("nan")


class Phase(NamedTuple):
    seconds: float
    produced: float  # records/s
    consumed: float
    p50: float  # acknowledgement latency, s
    p99: float
    probe_p50: float  # one record at a time, s
    probe_p99: float
    cpu: list[float]  # share of one core, per pid


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> list[float]:
    """utime + stime of each process (0 for this process: os.times, all its threads)."""
    out = []
    for pid in pids:
        if pid == 0:
            t = os.times()
            out.append(t.user + t.system)
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out.append((int(fields[11]) + int(fields[12])) / _TICK)
        except OSError:
            out.append(0.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=200, help="MB in the moving topic")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--throttle", type=int, default=20_000_000, help="bytes/s for the throttled move")
    parser.add_argument("--seconds", type=float, default=8.0, help="baseline client run")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="reassign-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        zk_port = free_port()
        procs.append(start_zookeeper(work, zk_port))
        ports = [free_port() for _ in range(4)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "ODRADEK_ZOOKEEPER_SESSION_TIMEOUT_MS": "6000"}
        for i, port in enumerate(ports):
            with open(work / f"broker-{i}.log", "ab") as log:
                procs.append(subprocess.Popen(broker_command(i, port, work / f"broker-{i}",
                                                             f"127.0.0.1:{zk_port}/bench"),
                                              stdout=log, stderr=subprocess.STDOUT, env=env))
        for port in ports:
            wait_for_port(port, 90)
        bootstrap = ",".join(f"127.0.0.1:{p}" for p in ports)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        deadline = time.monotonic() + 30
        while len(admin.list_topics(timeout=5).brokers) < 4:
            assert time.monotonic() < deadline, "the brokers did not register"
            time.sleep(0.2)
        home = {p: [p % 3, (p + 1) % 3] for p in range(args.partitions)}
        admin.create_topics([NewTopic("bench", num_partitions=args.partitions, replica_assignment=list(home.values())),
                             NewTopic("clients", 3, 2)])["bench"].result(30)
        time.sleep(1.0)
        fill = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20,
                         "queue.buffering.max.messages": 100000})
        payload = os.urandom(RECORD)
        for i in range(args.mb * 1024):
            while True:
                try:
                    fill.produce("bench", payload, partition=i % args.partitions)
                    break
                except BufferError:
                    fill.poll(0.05)
        fill.flush(120)
        sizes: dict[int, int] = {}
        for port in ports[:3]:
            for r in call(port, 35, 4, {"topics": [{"topic": "bench", "partitions": list(home)}]}).results:
                for t in r.topics:
                    for part in t.partitions:
                        sizes[part.partition_index] = max(sizes.get(part.partition_index, 0), part.partition_size)
        clients = Clients(bootstrap)
        pids = [p.pid for p in procs[1:]] + [procs[0].pid, 0]
        base1 = clients.run_while(lambda: True, args.seconds, pids)

        def move(targets: dict[int, list[int]], throttle: int | None) -> tuple[float, Phase, int]:
            moved_bytes = sum(sizes[p] for p in targets)
            plan = work / "plan.json"
            plan.write_text(json.dumps({"version": 1, "partitions": [
                {"topic": "bench", "partition": p, "replicas": r} for p, r in targets.items()]}))
            cmd = [sys.executable, "-m", "odradek", "partitions", "reassign", "--execute",
                   "--reassignment-json-file", str(plan), "-b", bootstrap]
            if throttle:
                cmd += ["--throttle", str(throttle)]
            started = time.monotonic()
            subprocess.run(cmd, check=True, capture_output=True)
            finished: list[float] = []

            def done() -> bool:
                if finished:
                    return True
                if call(ports[0], 46, 0, {"timeout": 30000, "topics": None}).topics:
                    return False
                finished.append(time.monotonic())
                return True

            phase = clients.run_while(done, 0.0, pids)
            took = finished[0] - started
            subprocess.run([sys.executable, "-m", "odradek", "partitions", "reassign", "--verify",
                            "--reassignment-json-file", str(plan), "-b", bootstrap], check=False, capture_output=True)
            return took, phase, moved_bytes

        onto_3 = {p: [3, r[1]] for p, r in home.items()}
        rows: list[tuple[str, float, float | None, Phase]] = [("clients alone", args.seconds, None, base1)]
        took, phase, moved = move(onto_3, None)
        rows.append(("move, no throttle", took, moved / took / 1e6, phase))
        took, phase, moved = move(home, args.throttle)
        rows.append((f"move, throttle {args.throttle / 1e6:g} MB/s", took, moved / took / 1e6, phase))
        time.sleep(2.0)
        base2 = clients.run_while(lambda: True, args.seconds, pids)
        rows.append(("clients alone, after", args.seconds, None, base2))
        base_p = (base1.produced + base2.produced) / 2
        print(f"\n{args.mb} MB in {args.partitions} partitions of RF 2, one replica each moved (4 brokers, one host); "
              f"load average {os.getloadavg()[0]:.2f}")
        print(f"{'':28} {'seconds':>8} {'move MB/s':>10} {'produce/s':>10} {'consume/s':>10} {'kept':>6} "
              f"{'ack p50 ms':>10} {'ack p99 ms':>10} {'probe p50/p99 ms':>16}  CPU % (b0 b1 b2 b3 zk clients)")
        for name, secs, mbs, ph in rows:
            kept = f"{ph.produced / base_p:.0%}" if base_p else "-"
            print(f"{name:28} {secs:8.1f} {'-' if mbs is None else f'{mbs:.1f}':>10} {ph.produced:10.0f} "
                  f"{ph.consumed:10.0f} {kept:>6} {ph.p50 * 1000:10.1f} {ph.p99 * 1000:10.1f} "
                  f"{f'{ph.probe_p50 * 1000:.1f}/{ph.probe_p99 * 1000:.1f}':>16}  "
                  + " ".join(f"{c:.0%}" for c in ph.cpu))
    finally:
        for proc in procs[1:]:
            proc.terminate()
        for proc in procs[1:]:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if procs:
            procs[0].kill()
            procs[0].wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
