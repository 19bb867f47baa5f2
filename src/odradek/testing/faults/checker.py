"""Reads every worker's log and the topics back, and counts violations of Kafka's guarantees.

Zero is required of: lost (acknowledged, then absent from the log), duplicated (one
idempotently produced value twice), misplaced (acknowledged at an offset that holds
something else: the ack came from a deposed leader), order (a producer's records of one
key out of order), split_brain (two leaders acknowledging at once: acks of two leader epochs
interleaving in one partition, or an ack of an older epoch for a record sent after an ack of
a newer one; the epochs are read from the log, see split_brain()),
aborted_read (a read_committed reader sees an aborted record), txn_fenced_unexplained (the
transactional loop's producer fenced with no transaction of its id aborted by its coordinator
for passing transaction.timeout.ms since the loop's last start: see fencings()), offsets_backwards (a
group's committed offset lower than one committed before), stale_reads (a consumer
read a record the log no longer holds at that offset) and stale_leaders (after a fault
healed, a broker other than ZooKeeper's leader still acting as a partition's leader, or
ZooKeeper's leader not acting as one; nemesis.stale_leaders).
"""

from __future__ import annotations

import bisect
import itertools
import json
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Fault:
    kind: str
    target: str
    started: float
    healed: float
    recovered: float | None = None  # seconds from heal to the first ack of a record sent after it
    acked_during: int = 0  # records acknowledged while the fault held
    notes: str = ""


@dataclass
class Report:
    acked: int = 0
    unacked: int = 0
    lost: int = 0
    duplicated: int = 0
    misplaced: int = 0
    order: int = 0
    split_brain: int = 0
    aborted_read: int = 0
    offsets_backwards: int = 0
    stale_reads: int = 0
    stale_leaders: int = 0
    reads: int = 0
    epochs_checked: int = 0  # acks whose leader epoch the split-brain checks had from the log
    txn_committed: int = 0
    txn_aborted: int = 0
    txn_duplicates: int = 0
    txn_reread: int = 0  # input records copied again by a committed transaction (see check())
    txn_fenced: int = 0  # the transactional loop's producer fenced (a fatal error: it started a new one)
    txn_fenced_unexplained: int = 0
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    MUST_BE_ZERO = ("lost", "duplicated", "misplaced", "order", "split_brain", "aborted_read",
                    "offsets_backwards", "stale_reads", "stale_leaders", "txn_reread",
                    "txn_fenced_unexplained")

    def violations(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.MUST_BE_ZERO if getattr(self, k)}

    def note(self, kind: str, text: str) -> None:
        if len(self.examples[kind]) < 5:
            self.examples[kind].append(text)


def rows(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line torn by a killed worker
            pass
    return out


def read_topic(bootstrap: str, topic: str, partitions: int, *, committed: bool, timeout: float = 120.0,
               epochs: dict[int, dict[int, int]] | None = None) -> dict[int, dict[int, str]]:
    """Every record of every partition, offset -> value, up to the high watermark; `epochs`, when
    given, gets offset -> the partition leader epoch of the record's batch in the log (what the
    leader that appended it stamped there; librdkafka reports it for fetched records only)."""
    from confluent_kafka import Consumer, TopicPartition

    c: Any = Consumer({"bootstrap.servers": bootstrap, "group.id": f"checker-{time.time_ns()}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest", "enable.partition.eof": True,
                  "isolation.level": "read_committed" if committed else "read_uncommitted"})
    out: dict[int, dict[int, str]] = {p: {} for p in range(partitions)}
    try:
        ends = {}
        for p in range(partitions):
            _lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            ends[p] = hi
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        eof: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(eof) < partitions and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                err = m.error()
                if err is not None:
                    # _PARTITION_EOF at the high watermark (read_committed may stop at the LSO)
                    if err.code() == -191 and (m.offset() >= ends[m.partition()] or committed):
                        eof.add(m.partition())
                    continue
                out[m.partition()][m.offset()] = m.value().decode()
                if epochs is not None:
                    epochs.setdefault(m.partition(), {})[m.offset()] = m.leader_epoch()
        if len(eof) < partitions:
            raise TimeoutError(f"reading {topic} back: partitions {set(range(partitions)) - eof} unfinished")
    finally:
        c.close()
    return out


def check(workdir: Path, bootstrap: str, topic: str, topic_out: str, partitions: int,
          faults: list[Fault]) -> Report:
    r = Report()
    log_epochs: dict[int, dict[int, int]] = {}
    log = read_topic(bootstrap, topic, partitions, committed=False, epochs=log_epochs)
    where: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for p, recs in log.items():
        for o, v in recs.items():
            where[v].append((p, o))
    for v, places in where.items():
        if len(places) > 1:
            r.duplicated += len(places) - 1
            r.note("duplicated", f"{v} at {places}")
    # per producer and key: sequence numbers rise with offsets
    for p, recs in log.items():
        last: dict[str, int] = {}
        for o in sorted(recs):
            w, seq, _ = recs[o].split(":")
            key = f"{w}-{int(seq) % 6}"
            if key in last and int(seq) < last[key]:
                r.order += 1
                r.note("order", f"p{p} offset {o}: {recs[o]} after seq {last[key]}")
            last[key] = max(last.get(key, -1), int(seq))
    acks: list[dict[str, Any]] = []
    for f in sorted(workdir.glob("producer-*.jsonl")):
        for row in rows(f):
            if row["t"] == "ack":
                acks.append(row)
            elif row["t"] == "err":
                r.unacked += 1
    r.acked = len(acks)
    by_offset: dict[tuple[int, int], str] = {}
    for a in acks:
        p, o, v = a["p"], a["o"], a["v"]
        if v not in where:
            r.lost += 1
            r.note("lost", f"{v} acked at p{p} offset {o} epoch {a.get('e')}")
        elif (p, o) not in where[v]:
            r.misplaced += 1
            r.note("misplaced", f"{v} acked at p{p} offset {o} epoch {a.get('e')}, found at {where[v]}")
        prev = by_offset.setdefault((p, o), v)
        if prev != v:
            r.split_brain += 1
            r.note("split_brain", f"p{p} offset {o} acked for {prev} and for {v}")
    split_brain(r, acks, log_epochs)
    for f in sorted(workdir.glob("consumer-*.jsonl")):
        best: dict[int, int] = {}
        for row in rows(f):
            if row["t"] == "read":
                r.reads += 1
                if log.get(row["p"], {}).get(row["o"]) != row["v"]:
                    r.stale_reads += 1
                    r.note("stale_reads", f"{f.name}: read {row['v']} at p{row['p']} offset {row['o']}, "
                                          f"the log holds {log.get(row['p'], {}).get(row['o'])!r}")
            elif row["t"] in ("commit", "committed"):
                if row["o"] < best.get(row["p"], -1):
                    r.offsets_backwards += 1
                    r.note("offsets_backwards", f"{f.name}: p{row['p']} {row['t']} {row['o']} after "
                                                f"{best[row['p']]}")
                best[row["p"]] = max(best.get(row["p"], -1), row["o"])
    if topic_out:
        out = read_topic(bootstrap, topic_out, partitions, committed=True)
        txns: dict[str, str] = {}  # "<worker>.<transaction>" -> what its worker logged of it
        for f in sorted(workdir.glob("txn-*.jsonl")):
            wid = f.stem.split("-", 1)[1]
            for row in rows(f):
                if "txn" in row and row["t"] in ("txn_commit", "txn_abort", "txn_err", "txn_fenced"):
                    txns.setdefault(f"{wid}.{row['txn']}", row["t"][4:])
        copies: dict[str, list[str]] = defaultdict(list)  # input record -> the transactions that copied it
        for p, recs in out.items():
            for o, v in recs.items():
                if v.startswith("ABORT:"):
                    r.aborted_read += 1
                    r.note("aborted_read", f"{topic_out} p{p} offset {o}: {v}")
                    continue
                tag, _, record = v.rpartition("|")
                if tag and txns.get(tag) == "abort":  # a transaction its worker aborted, read as committed
                    r.aborted_read += 1
                    r.note("aborted_read", f"{topic_out} p{p} offset {o}: {v} (transaction aborted)")
                copies[record].append(tag)
        for record, tags in copies.items():
            if len(tags) > 1:
                r.txn_duplicates += len(tags) - 1
                fates = sorted(txns.get(t, "unlogged") for t in tags)
                kind = "txn_duplicates_committed" if all(x == "commit" for x in fates) else "txn_duplicates_uncertain"
                r.note(kind, f"{record} copied by {tags} ({', '.join(fates)})")
        for f in sorted(workdir.glob("txn-*.jsonl")):
            covered: dict[str, int] = {}  # partition -> the highest offset a committed transaction committed
            for row in rows(f):
                r.txn_committed += row["t"] == "txn_commit"
                r.txn_aborted += row["t"] == "txn_abort"
                if row["t"] != "txn_commit" or "first" not in row:
                    continue
                # a committed transaction that read input an earlier committed one had already
                # committed offsets past: the loop restarted from committed offsets lower than
                # those (lost transactional offset commits, or read before their marker)
                for p, first in row["first"].items():
                    if first < covered.get(p, -1):
                        r.txn_reread += covered[p] - first
                        r.note("txn_reread", f"{f.name}: transaction committed at {row['at']:.3f} read p{p} from "
                                             f"{first}, a committed one had committed offset {covered[p]}")
                for p, o in row["to"].items():
                    covered[p] = max(covered.get(p, -1), o)
        fencings(r, workdir)
    # recovery: from each heal to the first ack of a record sent after it
    sends = sorted((a["sent"], a["at"]) for a in acks)
    for fault in faults:
        after = [at for sent, at in sends if sent >= fault.healed]
        fault.recovered = (min(after) - fault.healed) if after else None
        fault.acked_during = sum(1 for _, at in sends if fault.started <= at < fault.healed)
    return r


BROKER_ABORT = re.compile(r"^(\S+ \S+) INFO odradek\.transactions: aborting transaction (\S+) of producer (\d+) "
                          r"epoch (\d+): (.*)$")
BROKER_INIT = re.compile(r"^(\S+ \S+) INFO odradek\.transactions: InitProducerId of transaction (\S+): producer (\d+) "
                         r"epoch (\d+) \(a new instance\)$")


def _log_time(stamp: str) -> float:
    """A broker log line's `2026-12-02 04:55:04,082` (this machine's local time) as a Unix time."""
    return time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + int(stamp[20:23]) / 1000


def fencings(r: Report, workdir: Path) -> None:
    """Each time the transactional loop's producer was fenced (`txn_fenced`, a fatal error), why:
    Kafka fences a transactional producer only for a newer InitProducerId with its id, or
    when the coordinator aborted its transaction for passing transaction.timeout.ms (the abort
    bumps the epoch). So since the loop's previous start the brokers' logs must show such an
    abort of that id (or the loop's own clock saw the transaction open longer than the timeout),
    or an InitProducerId of a new instance after the loop's own; otherwise it is unexplained."""
    aborts: list[tuple[float, str, str]] = []  # (when, transactional id, the coordinator's reason)
    inits: list[tuple[float, str, str]] = []  # InitProducerId of a new instance: (when, id, what it got)
    for f in sorted(workdir.glob("cluster/broker-*/*.log")):
        for line in f.read_text(errors="replace").splitlines():
            m = BROKER_ABORT.match(line)
            if m is not None and "transaction.timeout.ms" in m.group(5):
                reason = f"{f.parent.name} aborted producer {m.group(3)} epoch {m.group(4)} at {m.group(1)[11:]}: {m.group(5)}"
                aborts.append((_log_time(m.group(1)), m.group(2), reason))
            m = BROKER_INIT.match(line)
            if m is not None:
                inits.append((_log_time(m.group(1)), m.group(2),
                              f"producer {m.group(3)} epoch {m.group(4)} at {m.group(1)[11:]} ({f.parent.name})"))
    for f in sorted(workdir.glob("txn-*.jsonl")):
        tid = f"faults-txn-{f.stem.split('-', 1)[1]}"
        since = 0.0  # the loop's last (re)start
        for row in rows(f):
            if row["t"] == "txn_fenced":
                r.txn_fenced += 1
                why = [reason for when, t, reason in aborts if t == tid and since <= when <= row["at"]]
                # the loop's own producer made one; a second one is another instance (an earlier one's late request)
                newer = [got for when, t, got in inits if t == tid and since <= when <= row["at"]][1:]
                opened = row.get("open_s")
                if why:
                    reason = why[-1]
                elif newer:
                    reason = f"another instance's InitProducerId took the epoch: {newer[-1]}"
                elif opened is not None and opened > row.get("timeout_s", float("inf")):
                    reason = f"its transaction was open {opened:.1f} s, past transaction.timeout.ms"
                else:
                    r.txn_fenced_unexplained += 1
                    r.note("txn_fenced_unexplained", f"{f.name}: transaction {row['txn']} at {row['at']:.3f}, "
                                                     f"open {opened} s: {row['code']}: {row['err']}")
                    reason = ""
                if reason:
                    r.note("txn_fenced", f"{f.name}: transaction {row['txn']} ({row['code']}, open {opened} s): "
                                         f"{reason}")
            if row["t"] in ("txn_fenced", "txn_err"):
                since = row["at"]


def split_brain(r: Report, acks: list[dict[str, Any]], log_epochs: dict[int, dict[int, int]]) -> None:
    """Two leaders acknowledging writes for one partition at once. Each acknowledged record found
    at its offset gets the leader epoch its batch has in the log (the epoch of the leader that
    appended it; librdkafka reports none for produced records, so the producer's ack carries -1).
    Within a partition, (a) every ack of epoch e lies below every ack of a later epoch, and (b) no
    record sent after an ack of epoch e' > e was received is acknowledged in epoch e: by then the
    leader of e' had committed that ack with a quorum of the ISR, so a leader of e that still
    appended and acknowledged later was a second leader (the clients share this machine's clock)."""
    per_epoch: dict[int, dict[int, tuple[int, int]]] = defaultdict(dict)
    timeline: dict[int, list[tuple[float, int, str]]] = defaultdict(list)  # p -> (acked at, epoch, value)
    for a in acks:
        p, o = a["p"], a["o"]
        e = log_epochs.get(p, {}).get(o, -1)
        a["e"] = e
        if e is None or e < 0:
            continue
        r.epochs_checked += 1
        lo, hi = per_epoch[p].get(e, (o, o))
        per_epoch[p][e] = (min(lo, o), max(hi, o))
        timeline[p].append((a["at"], e, a["v"]))
    for p, epochs in per_epoch.items():
        ordered = sorted(epochs.items())
        for (e1, (_, hi1)), (e2, (lo2, _)) in itertools.pairwise(ordered):
            if hi1 >= lo2:
                r.split_brain += 1
                r.note("split_brain", f"p{p}: epoch {e1} acked up to offset {hi1}, epoch {e2} from {lo2}")
    for p, events in timeline.items():
        events.sort()
        ats = [at for at, _, _ in events]
        newest: list[int] = list(itertools.accumulate((e for _, e, _ in events), max))
        for a in acks:
            if a["p"] != p or a["e"] is None or a["e"] < 0:
                continue
            i = bisect.bisect_left(ats, a["sent"])  # the acks received before this record was sent
            if i and newest[i - 1] > a["e"]:
                r.split_brain += 1
                r.note("split_brain", f"p{p}: {a['v']} acknowledged in epoch {a['e']} at offset {a['o']}, "
                                      f"sent after an ack of epoch {newest[i - 1]} was received")


def table(faults: list[Fault]) -> str:
    """One row per fault kind: runs, recovery p50 and max."""
    kinds: dict[str, list[Fault]] = defaultdict(list)
    for f in faults:
        kinds[f.kind].append(f)
    lines = ["| fault | runs | acks while it held (min per run) | recovery p50 | recovery max |",
             "|---|---:|---:|---:|---:|"]
    for kind, fs in sorted(kinds.items()):
        rec = sorted(f.recovered for f in fs if f.recovered is not None)
        p50 = f"{rec[len(rec) // 2]:.1f} s" if rec else "-"
        mx = f"{rec[-1]:.1f} s" if rec else "-"
        during = min(f.acked_during for f in fs)
        missing = f" ({len(fs) - len(rec)} never recovered)" if len(rec) < len(fs) else ""
        lines.append(f"| {kind} | {len(fs)} | {during} | {p50}{missing} | {mx} |")
    return "\n".join(lines)
