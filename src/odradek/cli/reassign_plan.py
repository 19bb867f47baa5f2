"""Replica placement plans for `partitions reassign --generate`, `cluster rebalance` and
`cluster decommission`, and the wire calls that carry them out (any Kafka: the APIs are
Kafka's AlterPartitionReassignments, ListPartitionReassignments, DescribeLogDirs and
IncrementalAlterConfigs, sent over this command's TLS and SASL settings).

The plans are pure functions of the current assignment, the brokers and the partition sizes,
so they are tested without a cluster. The rebalance evens out each topic in turn: its
replicas per broker (within one; the largest partitions move first, to the broker with the
fewest replicas of the topic, then of all topics, then bytes), then its preferred leaders
(the first replica of each partition, which the controller makes leader). It moves as few
replicas as that needs.

Racks (the `rack` of each broker in Metadata, from broker.rack): when every broker has one,
the plans are rack-aware, as topic creation is (cluster/placement.py). --generate lays each
topic out with Kafka's rack-aware assignReplicasToBrokers. The rebalance first moves a
replica that shares a rack with another replica of its partition to a broker in a rack the
partition does not use yet (while the racks allow), and its balancing moves never leave a
partition in fewer racks; a replica moved off a broker (rebalance of a gone broker,
decommission) goes preferably to a rack the partition does not use. Replicas per broker are
even within one where the racks allow it: with racks of unequal size (two brokers in rack a,
one in rack b, replication factor 2), the lone broker of rack b holds a replica of every
partition, as Kafka's placement does. With some brokers without a rack, the plans are
rack-unaware (as topic creation then is), and the commands say so.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from odradek.cli.common import Client
from odradek.cluster.placement import assign_replicas, distinct_racks, rack_preferred, start_index

TopicPartition = tuple[str, int]
Assignment = dict[TopicPartition, list[int]]
Racks = Mapping[int, str | None]

METADATA = 3
ALTER_REASSIGNMENTS, LIST_REASSIGNMENTS, DESCRIBE_LOG_DIRS, INCREMENTAL_ALTER_CONFIGS = 45, 46, 35, 44
BROKER_RESOURCE, TOPIC_RESOURCE = 4, 2
SET, DELETE = 0, 1
NOT_CONTROLLER_RETRIES = 20
THROTTLE_RATES = ("leader.replication.throttled.rate", "follower.replication.throttled.rate")
THROTTLE_REPLICAS = ("leader.replication.throttled.replicas", "follower.replication.throttled.replicas")


# -- the JSON file of kafka-reassign-partitions ------------------------------------------

def to_json(assignment: Assignment) -> str:
    """{"version":1,"partitions":[{"topic","partition","replicas","log_dirs"}]}, as Kafka writes it."""
    return json.dumps({"version": 1, "partitions": [
        {"topic": t, "partition": p, "replicas": r, "log_dirs": ["any"] * len(r)}
        for (t, p), r in sorted(assignment.items())]}, separators=(",", ":"))


def from_json(text: str) -> Assignment:
    """Raises ValueError with one sentence when the file is not Kafka's reassignment format."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"it is not JSON ({exc.msg} at line {exc.lineno})") from None
    entries = doc.get("partitions") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError('it has no "partitions" list; the format is {"version":1,"partitions":'
                         '[{"topic":"t","partition":0,"replicas":[1,2,3]}]}')
    out: Assignment = {}
    for e in entries:
        try:
            key = (str(e["topic"]), int(e["partition"]))
            replicas = [int(b) for b in e["replicas"]]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f'entry {json.dumps(e)} needs "topic", "partition" and "replicas"') from None
        if key in out:
            raise ValueError(f"partition {key[0]}-{key[1]} appears twice")
        out[key] = replicas
    return out


def topics_to_move(text: str) -> list[str]:
    """--topics-to-move-json-file: {"version":1,"topics":[{"topic":"foo"}]}."""
    try:
        doc = json.loads(text)
        return [str(t["topic"]) for t in doc["topics"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f'the format is {{"version":1,"topics":[{{"topic":"foo"}}]}} ({exc})') from None


# -- plans ----------------------------------------------------------------------------------

def rack_aware(brokers: Iterable[int], racks: Racks | None) -> dict[int, str] | None:
    """The rack of each of `brokers` when every one has a rack, else None (rack-unaware plans,
    as topic creation places replicas when only some brokers have broker.rack)."""
    if not racks:
        return None
    out = {b: racks.get(b) for b in brokers}
    return {b: r for b, r in out.items() if r is not None} if all(r is not None for r in out.values()) else None


def generate(current: Assignment, brokers: list[int], racks: Racks | None = None) -> Assignment:
    """--generate: each listed topic spread over `brokers`, keeping its replication factor,
    starting at a broker picked by the name. With a rack for every listed broker, Kafka's
    rack-aware layout (AdminUtils.assignReplicasToBrokers: the replicas of a partition in
    distinct racks); else Kafka's rack-unaware round robin."""
    if not brokers:
        raise ValueError("the broker list is empty")
    out: Assignment = {}
    n = len(brokers)
    for (topic, p), replicas in sorted(current.items()):
        if len(replicas) > n:
            raise ValueError(f"{topic} has replication factor {len(replicas)}, more than the {n} broker(s) listed")
    placed = rack_aware(brokers, racks)
    if placed is not None:
        for topic in sorted({t for t, _ in current}):
            parts = {p: len(r) for (t, p), r in current.items() if t == topic}
            for rf in sorted(set(parts.values())):
                layout = assign_replicas(placed, max(parts) + 1, rf, fixed_start=start_index(topic, n))
                out.update({(topic, p): layout[p] for p, f in parts.items() if f == rf})
        return out
    for (topic, p), replicas in sorted(current.items()):
        start = zlib.crc32(topic.encode()) % n
        out[(topic, p)] = [brokers[(start + p + j) % n] for j in range(len(replicas))]
    return out


@dataclass
class Load:
    replicas: dict[int, int]
    bytes: dict[int, int]
    leaders: dict[int, int]


def load(assignment: Assignment, brokers: Iterable[int], sizes: dict[TopicPartition, int]) -> Load:
    ids = list(brokers)
    result = Load({b: 0 for b in ids}, {b: 0 for b in ids}, {b: 0 for b in ids})
    for tp, replicas in assignment.items():
        for i, b in enumerate(replicas):
            result.replicas[b] = result.replicas.get(b, 0) + 1
            result.bytes[b] = result.bytes.get(b, 0) + sizes.get(tp, 0)
            if i == 0:
                result.leaders[b] = result.leaders.get(b, 0) + 1
    return result


def rebalance(current: Assignment, brokers: list[int], sizes: dict[TopicPartition, int],
              racks: Racks | None = None) -> Assignment:
    """An even spread over `brokers`, topic by topic (each topic's replicas and preferred
    leaders within one per broker; ties go to the broker with fewer replicas, then bytes, over
    all topics); replicas on brokers not listed are moved onto listed ones (decommission).
    With a rack for every broker, each partition's replicas in as many distinct racks as the
    racks allow first (see the module's text)."""
    if not brokers:
        raise ValueError("no brokers to place replicas on")
    plan = {tp: list(r) for tp, r in current.items()}
    for tp, replicas in plan.items():
        if len(set(replicas)) > len(brokers):
            raise ValueError(f"{tp[0]}-{tp[1]} has {len(replicas)} replicas, more than the {len(brokers)} broker(s)")
    placed = rack_aware(brokers, racks)
    for topic in sorted({t for t, _ in plan}):
        tps = sorted((tp for tp in plan if tp[0] == topic), key=lambda tp: (-sizes.get(tp, 0), tp))
        if placed is not None:
            _spread_racks(plan, tps, brokers, sizes, placed)
        _even_replicas(plan, tps, brokers, sizes, placed)
        _even_leaders(plan, tps, brokers, sizes)
    return {tp: r for tp, r in plan.items() if r != current[tp]}


def _ranking(plan: Assignment, tps: list[TopicPartition], brokers: list[int],
             sizes: dict[TopicPartition, int]) -> dict[int, tuple[int, int, int, int]]:
    """Each broker's (replicas of these partitions, replicas of all, bytes of all, id): lowest first."""
    mine, everything = load({tp: plan[tp] for tp in tps}, brokers, sizes), load(plan, brokers, sizes)
    return {b: (mine.replicas[b], everything.replicas[b], everything.bytes[b], b) for b in brokers}


def _targets(replicas: list[int], i: int, free: list[int], racks: Mapping[int, str] | None) -> list[int]:
    """Of `free`, where replica i may go without leaving the partition in fewer racks, those
    in a rack the others do not use first; all of `free` without racks."""
    if racks is None:
        return free
    others = replicas[:i] + replicas[i + 1:]
    now = distinct_racks(replicas, racks)
    return [b for b in rack_preferred(free, others, racks) if distinct_racks([*others, b], racks) >= now]


def _spread_racks(plan: Assignment, tps: list[TopicPartition], brokers: list[int],
                  sizes: dict[TopicPartition, int], racks: Mapping[int, str]) -> None:
    """A replica sharing a rack with another replica of its partition moves to the least loaded
    broker of a rack the partition does not use, while there is one (a follower rather than the
    preferred leader, the one on the most loaded broker)."""
    for tp in tps:
        while True:
            replicas = plan[tp]
            now = distinct_racks(replicas, racks)
            free = [b for b in brokers if b not in replicas]
            shared = [i for i, b in enumerate(replicas)
                      if any(racks.get(b) == racks.get(x) for x in replicas if x != b) and racks.get(b) is not None]
            rank = _ranking(plan, tps, brokers, sizes)
            moves = [(i, to) for i in shared for to in free
                     if distinct_racks(replicas[:i] + [to] + replicas[i + 1:], racks) > now]
            if not moves:
                break
            i, to = min(moves, key=lambda m: (m[0] == 0, [-x for x in rank[replicas[m[0]]]], rank[m[1]]))
            replicas[i] = to


def _even_replicas(plan: Assignment, tps: list[TopicPartition], brokers: list[int],
                   sizes: dict[TopicPartition, int], racks: Mapping[int, str] | None = None) -> None:
    """Move replicas of these partitions (largest first) until each broker holds within one,
    never leaving a partition in fewer racks."""
    total = sum(len(plan[tp]) for tp in tps)
    ceiling = -(-total // len(brokers))

    # 1. replicas on brokers that are not listed, or above the ceiling, go to the lowest ranked
    for tp in tps:
        for i, b in enumerate(plan[tp]):
            here = load({t: plan[t] for t in tps}, brokers, sizes).replicas
            if b in brokers and here[b] <= ceiling:
                continue
            free = [x for x in brokers if x not in plan[tp]]
            targets = (rack_preferred(free, plan[tp][:i] + plan[tp][i + 1:], racks or {}) if b not in brokers
                       else _targets(plan[tp], i, free, racks))
            if not targets:
                continue
            rank = _ranking(plan, tps, brokers, sizes)
            to = min(targets, key=lambda x: rank[x])
            if b not in brokers or here[to] < here[b] - 1:
                plan[tp][i] = to
    # 2. a broker takes a replica from one holding more than one more, the lowest ranked from
    # the highest ranked that can give one (without racks that is always the extreme pair)
    for _ in range(total):
        rank = _ranking(plan, tps, brokers, sizes)
        by_rank = sorted(brokers, key=lambda b: rank[b])
        move = next(((tp, high, low) for high in reversed(by_rank) for low in by_rank
                     if rank[high][0] - rank[low][0] > 1
                     for tp in tps if high in plan[tp] and low not in plan[tp]
                     and _targets(plan[tp], plan[tp].index(high), [low], racks)), None)
        if move is None:
            break
        tp, high, low = move
        plan[tp][plan[tp].index(high)] = low


def _even_leaders(plan: Assignment, tps: list[TopicPartition], brokers: list[int],
                  sizes: dict[TopicPartition, int]) -> None:
    """Preferred leaders (first replicas) within one per broker: swap replicas inside a partition."""
    for _ in range(len(tps)):
        mine = load({tp: plan[tp] for tp in tps}, brokers, sizes)
        everything = load(plan, brokers, sizes)
        most = max(brokers, key=lambda b: (mine.leaders[b], everything.leaders[b], -b))
        fewest = min(brokers, key=lambda b: (mine.leaders[b], everything.leaders[b], b))
        if mine.leaders[most] - mine.leaders[fewest] <= 1:
            break
        swap = next((tp for tp in tps if plan[tp][0] == most and fewest in plan[tp]), None)
        if swap is None:
            break
        r = plan[swap]
        j = r.index(fewest)
        r[0], r[j] = r[j], r[0]


def decommission(current: Assignment, brokers: list[int], leaving: int,
                 sizes: dict[TopicPartition, int], racks: Racks | None = None) -> Assignment:
    """Every replica of `leaving` moved to the least loaded remaining broker (with a rack for
    every broker, the least loaded of those in a rack the partition does not use, if any); a
    partition it led gets its next replica as preferred leader (already in sync: leadership
    moves at once)."""
    remaining = [b for b in brokers if b != leaving]
    placed = rack_aware(brokers, racks) or {}
    plan: Assignment = {}
    counts = load(current, remaining, sizes)
    for tp in sorted(current, key=lambda tp: (-sizes.get(tp, 0), tp)):
        replicas = current[tp]
        if leaving not in replicas:
            continue
        free = [b for b in remaining if b not in replicas]
        if not free:
            raise ValueError(f"{tp[0]}-{tp[1]} has {len(replicas)} replicas and only {len(remaining)} broker(s) "
                             f"would remain")
        staying = [b for b in replicas if b != leaving]
        to = min(rack_preferred(free, staying, placed), key=lambda b: (counts.replicas[b], counts.bytes[b], b))
        counts.replicas[to] += 1
        counts.bytes[to] += sizes.get(tp, 0)
        plan[tp] = [*staying, to]
    return plan


# -- wire ----------------------------------------------------------------------------------

def current_assignment(client: Client, topics: list[str] | None = None) -> tuple[Assignment, list[int]]:
    """(topic, partition) -> replicas from Metadata, and the broker ids; internal topics included."""
    md = client.metadata()
    out: Assignment = {}
    for name, t in md.topics.items():
        if topics is not None and name not in topics:
            continue
        for p in t.partitions.values():
            out[(str(name), int(p.id))] = [int(b) for b in p.replicas]
    return out, sorted(int(b) for b in md.brokers)


def broker_racks(client: Client) -> dict[int, str | None]:
    """Each broker's rack (broker.rack), None for a broker without one: Metadata v1's `rack`
    (librdkafka's Metadata leaves it out)."""
    resp = client.call(METADATA, 1, {"topics": []}, "cannot read the brokers' racks")
    return {int(b.node_id): (str(b.rack) if b.rack else None) for b in resp.brokers}


def describe_racks(racks: Racks) -> str | None:
    """One line for the commands: the racks in use, or why the plan is rack-unaware when some
    brokers have a rack; None when none has (the commands then say nothing of racks)."""
    if not any(racks.values()):
        return None
    missing = sorted(b for b, r in racks.items() if not r)
    if missing:
        return (f"broker(s) {','.join(map(str, missing))} have no rack (broker.rack): placing replicas "
                "without rack awareness")
    by_rack: dict[str, list[int]] = {}
    for b, r in sorted(racks.items()):
        by_rack.setdefault(str(r), []).append(b)
    return "rack-aware: " + "; ".join(f"rack {r}: {','.join(map(str, bs))}" for r, bs in sorted(by_rack.items()))


def broker_addresses(client: Client) -> dict[int, str]:
    md = client.metadata()
    return {int(b.id): f"{b.host}:{b.port}" for b in md.brokers.values()}


def _at(client: Client, address: str) -> Client:
    return Client(address, client.properties)


def partition_sizes(client: Client) -> dict[TopicPartition, int]:
    """The largest size of each partition over its replicas (DescribeLogDirs to every broker)."""
    sizes: dict[TopicPartition, int] = {}
    for address in broker_addresses(client).values():
        resp = _at(client, address).call(DESCRIBE_LOG_DIRS, 1, {"topics": None}, "cannot describe the log dirs")
        for result in resp.results:
            for t in result.topics:
                for p in t.partitions:
                    key = (str(t.name), int(p.partition_index))
                    sizes[key] = max(sizes.get(key, 0), int(p.partition_size))
    return sizes


def controller(client: Client) -> Client:
    """The controller named by Metadata (fresh, not librdkafka's cached one); the bootstrap
    broker when there is none."""
    resp = client.call(METADATA, 1, {"topics": []}, "cannot find the controller")
    for b in resp.brokers:
        if b.node_id == resp.controller_id:
            return _at(client, f"{b.host}:{b.port}")
    return client


def alter(client: Client, moves: dict[TopicPartition, list[int] | None]) -> dict[TopicPartition, str]:
    """AlterPartitionReassignments; the partitions refused, with Kafka's message."""
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for (t, p), replicas in sorted(moves.items()):
        by_topic.setdefault(t, []).append({"partition_index": p, "replicas": replicas})
    body = {"timeout": 30000, "topics": [{"name": t, "partitions": parts} for t, parts in by_topic.items()]}
    for _ in range(NOT_CONTROLLER_RETRIES):  # only the controller carries it out, as in Kafka
        resp = controller(client).call(ALTER_REASSIGNMENTS, 0, body, "cannot start the reassignment")
        if resp.error_code.name != "not_controller":
            break
        time.sleep(0.5)  # Kafka's admin client: refresh the metadata, send to the new controller
    if resp.error_code.value != 0:
        raise ValueError(f"{resp.error_code.name}: {resp.error_message or ''}".strip())
    return {(t.name, p.partition_index): f"{p.error_code.name} ({p.error_message})"
            for t in resp.responses for p in t.partitions if p.error_code.value != 0}


def in_progress(client: Client) -> dict[TopicPartition, tuple[list[int], list[int], list[int]]]:
    """ListPartitionReassignments: (replicas, adding, removing) of each partition being moved."""
    resp = client.call(LIST_REASSIGNMENTS, 0, {"timeout": 30000, "topics": None}, "cannot list the reassignments")
    if resp.error_code.value != 0:
        raise ValueError(f"{resp.error_code.name}: {resp.error_message or ''}".strip())
    return {(t.name, p.partition_index): (list(p.replicas), list(p.adding_replicas), list(p.removing_replicas))
            for t in resp.topics for p in t.partitions}


def set_throttle(client: Client, rate: int | None, moves: dict[TopicPartition, list[int]],
                 current: Assignment) -> None:
    """--throttle: the two broker rates on every broker and, per moving topic, which replicas
    are throttled (kafka-reassign-partitions: leader side the current replicas, follower side
    the new ones); rate None clears them all (what --verify does once the moves are done)."""
    brokers = sorted(broker_addresses(client))
    resources: list[dict[str, Any]] = [
        {"resource_type": BROKER_RESOURCE, "resource_name": str(b), "configs": [
            {"name": n, "config_operation": SET if rate is not None else DELETE,
             "value": str(rate) if rate is not None else None} for n in THROTTLE_RATES]} for b in brokers]
    topics = sorted({t for t, _ in moves})
    for topic in topics:
        leader = sorted({f"{p}:{b}" for (t, p), _ in moves.items() if t == topic for b in current.get((t, p), [])})
        follower = sorted({f"{p}:{b}" for (t, p), r in moves.items() if t == topic
                           for b in r if b not in current.get((t, p), [])})
        values = (",".join(leader), ",".join(follower))
        resources.append({"resource_type": TOPIC_RESOURCE, "resource_name": topic, "configs": [
            {"name": n, "config_operation": SET if rate is not None else DELETE,
             "value": v if rate is not None else None} for n, v in zip(THROTTLE_REPLICAS, values, strict=True)]})
    resp = client.call(INCREMENTAL_ALTER_CONFIGS, 0, {"resources": resources, "validate_only": False},
                       "cannot set the replication throttle")
    refused = [f"{r.resource_name}: {r.error_message or r.error_code.name}" for r in resp.responses
               if r.error_code.value != 0]
    if refused:
        raise ValueError("the throttle was refused (" + "; ".join(refused) + ")")
