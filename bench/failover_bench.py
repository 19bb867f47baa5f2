"""Failover time with 1,000 partitions on 3 brokers.

A local ZooKeeper and three `odradek serve --zookeeper` brokers on 127.0.0.1; --topics topics
of --partitions partitions (1,000 in all by default), RF 3, min.insync.replicas 2. An acks=all
producer writes one record to every partition each --interval seconds. Then, --runs times
each:

  leader:      SIGKILL the broker (not the controller) that leads the most partitions;
  controller:  SIGKILL the controller (which leads about a third of the partitions too).

Measured from the SIGKILL: until Metadata (asked of a survivor every --poll s) shows a live
leader for every partition, until no ISR names the killed broker, and until every partition
has acknowledged a record produced after the kill (acks=all: a partition led by a survivor
waits too, for the dead follower to leave its ISR). The killed broker's ZooKeeper session
expires after --session-timeout-ms, which bounds all three from below. From the controller's
log: when its first and last election after the kill were written. The broker then comes back
and the next run waits until every ISR is full and every preferred leader leads again.

    .venv/bin/python bench/failover_bench.py [--topics 10] [--partitions 100] [--runs 3]
        [--session-timeout-ms 6000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cluster_bench import LocalCluster
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # re-exported without __all__

from odradek.cluster.peer import PeerConnection

METADATA_KEY, METADATA_VERSION = 3, 12
ELECTION = re.compile(r"^(\S+ \S+) INFO odradek\.controller: \S+: leader (-?\d+) epoch \d+ isr \[[^]]*\] \((.*)\)$")
CONTROLLER = re.compile(r"^(\S+ \S+) INFO odradek\.controller: broker (\d+) is the controller")


class Cluster(LocalCluster):
    """bench/cluster_bench.py's cluster with Kafka's timings but the ZooKeeper session's."""

    def __init__(self, work: Path, n: int, session_timeout_ms: int) -> None:
        super().__init__(work, n, env={"ODRADEK_ZOOKEEPER_SESSION_TIMEOUT_MS": str(session_timeout_ms)},
                         base_env={"PYTHONUNBUFFERED": "1"}, chroot="failover")


class MetadataPoller:
    """Metadata of every topic, asked of one live broker over one kept connection."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.peers: dict[int, PeerConnection] = {}

    def ask(self, port: int) -> Any:
        peer = self.peers.get(port)
        if peer is None:
            peer = self.peers[port] = PeerConnection("127.0.0.1", port, "failover-bench")
        body = {"topics": None, "allow_auto_topic_creation": False}
        return self.loop.run_until_complete(peer.call(METADATA_KEY, METADATA_VERSION, body, 10.0))

    def state(self, cluster: Cluster, topics: set[str],
              avoid: int = -1) -> tuple[int, dict[tuple[str, int], tuple[int, list[int], list[int]]]]:
        """(controller, {(topic, partition): (leader, replicas, isr)}) from the first live broker
        that answers, `avoid` (the controller: its thread shares the loop's interpreter) last."""
        order = sorted(range(len(cluster.ports)), key=lambda i: i == avoid)
        for i in order:
            port = cluster.ports[i]
            if not cluster.alive(i):
                continue
            try:
                md = self.ask(port)
            except Exception:  # noqa: BLE001 - a broker starting or stopping: ask the next one
                self.peers.pop(port, None)
                continue
            parts = {(t.name, p.partition_index): (p.leader_id, list(p.replica_nodes), list(p.isr_nodes))
                     for t in md.topics if t.name in topics for p in t.partitions}
            return md.controller_id, parts
        return -1, {}

    def close(self) -> None:
        for peer in self.peers.values():
            peer.close()
        self.loop.close()


class Load:
    """An acks=all producer writing one record to every partition each `interval` seconds;
    per partition, when it first acknowledged a record produced after `since`."""

    def __init__(self, bootstrap: str, partitions: list[tuple[str, int]], interval: float) -> None:
        self.partitions = partitions
        self.interval = interval
        self.since = float("inf")
        self.recovered: dict[tuple[str, int], float] = {}
        self.acked = 0
        self.failed = 0
        self._stop = threading.Event()
        # at most 5 requests in flight per broker, as Kafka's Java producer: librdkafka's default
        # (1,000,000) queues thousands of small requests behind the first one waiting for the dead
        # follower (a broker answers one request per connection at a time, as Kafka does)
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20,
                                  "max.in.flight.requests.per.connection": 5,
                                  "retry.backoff.ms": 50, "message.timeout.ms": 300000,
                                  "queue.buffering.max.messages": 1_000_000})
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def watch_from(self, since: float) -> None:
        self.recovered = {}
        self.since = since

    def _run(self) -> None:
        payload = b"x" * 100
        while not self._stop.is_set():
            round_at = time.time()
            for key in self.partitions:
                def delivered(err: Any, msg: Any, key: tuple[str, int] = key, at: float = round_at) -> None:
                    if err is not None:
                        self.failed += 1
                        return
                    self.acked += 1
                    if at >= self.since and key not in self.recovered:
                        self.recovered[key] = time.time()

                self.producer.produce(key[0], payload, partition=key[1], on_delivery=delivered)
                self.producer.poll(0)
            while time.time() < round_at + self.interval:
                self.producer.poll(0.005)
        self.producer.flush(5)  # what is still queued does not count

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def controller_log(cluster: Cluster, i: int, since: float) -> tuple[float | None, float | None, int, float | None]:
    """From broker i's log after `since`: (first election, last election, elections, took the seat) as wall times."""
    first = last = seat = None
    count = 0
    for line in cluster.log_path(i).read_text(errors="replace").splitlines():
        m = ELECTION.match(line) or CONTROLLER.match(line)
        if m is None:
            continue
        at = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if at < since:
            continue
        if m.re is CONTROLLER:
            seat = seat or at
            continue
        count += 1
        first = first or at
        last = at
    return first, last, count, seat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topics", type=int, default=10)
    parser.add_argument("--partitions", type=int, default=100, help="partitions per topic")
    parser.add_argument("--runs", type=int, default=3, help="kills of each kind")
    parser.add_argument("--session-timeout-ms", type=int, default=6000)
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between records to a partition")
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between Metadata requests after a kill")
    parser.add_argument("--give-up", type=float, default=90.0, help="seconds after a kill to stop waiting")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (broker logs)")
    parser.add_argument("--profile", type=Path, help="py-spy the survivors of each kind's first kill into this "
                        "directory (collapsed stacks, one file per broker; py-spy must be installed)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="failover-bench-"))
    cluster: Cluster | None = None
    poller = MetadataPoller()
    load: Load | None = None
    try:
        cluster = Cluster(work, 3, args.session_timeout_ms)
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        deadline = time.monotonic() + 60
        while len(admin.list_topics(timeout=10).brokers) < 3:
            assert time.monotonic() < deadline, "the brokers did not register"
            time.sleep(0.2)
        names = [f"failover-{t}" for t in range(args.topics)]
        started = time.monotonic()
        for fut in admin.create_topics([NewTopic(n, args.partitions, 3, config={"min.insync.replicas": "2"})
                                        for n in names], operation_timeout=60).values():
            fut.result(120)
        topics = set(names)
        total = args.topics * args.partitions

        def settled(require_preferred: bool) -> bool:
            _, parts = poller.state(cluster, topics)
            return len(parts) == total and all(
                leader >= 0 and len(isr) == 3 and (not require_preferred or leader == replicas[0])
                for leader, replicas, isr in parts.values())

        def wait_settled(require_preferred: bool, timeout: float) -> float:
            t0 = time.monotonic()
            while not settled(require_preferred):
                if time.monotonic() - t0 > timeout:
                    raise TimeoutError("the cluster did not settle (full ISRs, preferred leaders)")
                time.sleep(0.2)
            return time.monotonic() - t0

        wait_settled(True, 180)
        print(f"{total} partitions (RF 3, min ISR 2) created and in sync after {time.monotonic() - started:.1f} s; "
              f"session timeout {args.session_timeout_ms} ms")
        load = Load(cluster.bootstrap, [(n, p) for n in names for p in range(args.partitions)], args.interval)
        time.sleep(3.0)

        rows: list[dict[str, Any]] = []
        stuck = False
        for kind in ("leader", "controller"):
            for _ in range(args.runs):
                try:
                    if not stuck:
                        wait_settled(True, 180)
                except TimeoutError as exc:
                    print(f"{exc}: no more kills", flush=True)
                    stuck = True
                if stuck:
                    break
                time.sleep(2.0)
                controller, parts = poller.state(cluster, topics)
                led = {b: sum(1 for leader, _, _ in parts.values() if leader == b) for b in range(3)}
                if kind == "controller":
                    victim = controller
                else:
                    victim = max((b for b in range(3) if b != controller), key=lambda b: led[b])
                spies = []
                if args.profile is not None and not any(r["kind"] == kind for r in rows):
                    args.profile.mkdir(parents=True, exist_ok=True)
                    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                    for b in range(3):
                        proc = cluster.procs[b]
                        if b != victim and proc is not None:
                            spies.append(subprocess.Popen(
                                [spy, "record", "--pid", str(proc.pid), "--rate", "250", "--threads", "--nonblocking",
                                 "--format", "raw", "--duration", str(int(args.session_timeout_ms / 1000 + 15)),
                                 "--output", str(args.profile / f"{kind}-kill{victim}-broker{b}.txt")],
                                stdout=subprocess.DEVNULL,
                                stderr=open(args.profile / f"{kind}-broker{b}.err", "wb")))  # noqa: SIM115
                    time.sleep(1.0)
                load.watch_from(time.time())
                killed_at = cluster.kill(victim)
                t_leaders = t_isr = None
                deadline = time.monotonic() + args.give_up
                while time.monotonic() < deadline:
                    now = time.time()
                    _, parts = poller.state(cluster, topics, avoid=controller)
                    if parts and len(parts) == total:
                        if t_leaders is None and all(leader >= 0 and leader != victim
                                                     for leader, _, _ in parts.values()):
                            t_leaders = now - killed_at
                        if t_isr is None and all(victim not in isr for _, _, isr in parts.values()):
                            t_isr = now - killed_at
                    if t_leaders is not None and t_isr is not None and len(load.recovered) == total:
                        break
                    time.sleep(args.poll)
                accepted = sorted(at - killed_at for at in load.recovered.values())
                survivors = [b for b in range(3) if b != victim]
                elect = None
                for b in survivors:
                    first, last, count, seat = controller_log(cluster, b, killed_at)
                    if count:
                        elect = (b, first, last, count, seat)
                row = {
                    "kind": kind, "victim": victim, "led": led[victim], "leaders": t_leaders, "isr": t_isr,
                    "all_accept": accepted[-1] if len(accepted) == total else None,
                    "p50_accept": accepted[len(accepted) // 2] if accepted else None, "accepted": len(accepted),
                }
                if elect is not None:
                    b, first, last, count, seat = elect
                    row.update(controller=b, elections=count,
                               seat=None if seat is None else seat - killed_at,
                               first_election=None if first is None else first - killed_at,
                               last_election=None if last is None else last - killed_at)
                rows.append(row)
                print(f"{kind:10} killed broker {victim} (led {led[victim]}): " + ", ".join(
                    f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
                    if k not in ("kind", "victim", "led")), flush=True)
                for spy_proc in spies:
                    spy_proc.wait(60)
                cluster.start(victim)
                try:
                    back = wait_settled(True, 180)
                    print(f"{'':10} broker {victim} back; ISRs full and preferred leaders lead again after "
                          f"{back:.1f} s", flush=True)
                except TimeoutError:
                    print(f"{'':10} broker {victim} back, but after 180 s not every ISR is full again", flush=True)

        print(f"\n{total} partitions, 3 brokers, RF 3, min ISR 2, ZooKeeper session timeout "
              f"{args.session_timeout_ms / 1000:g} s; seconds from SIGKILL, over {args.runs} runs each (p50 / max)")
        print(f"{'killed':12} {'all leaders live':>18} {'dead out of ISRs':>18} {'all accept acks=all':>20} "
              f"{'controller writes':>22}")

        def fmt(values: list[float | None]) -> str:
            got = [v for v in values if v is not None]
            if len(got) < len(values):
                return "timeout"
            return f"{statistics.median(got):.2f} / {max(got):.2f}"

        for kind in ("leader", "controller"):
            mine = [r for r in rows if r["kind"] == kind]
            writes = fmt([r.get("first_election") for r in mine]) + " .. " + fmt([r.get("last_election") for r in mine])
            print(f"{kind:12} {fmt([r['leaders'] for r in mine]):>18} {fmt([r['isr'] for r in mine]):>18} "
                  f"{fmt([r['all_accept'] for r in mine]):>20} {writes:>22}")
        print(f"records acknowledged {load.acked}, failed {load.failed}")
    finally:
        if load is not None:
            load.stop()
        poller.close()
        if cluster is not None:
            cluster.stop()
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
