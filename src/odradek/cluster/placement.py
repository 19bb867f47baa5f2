"""Replica placement: which brokers hold the replicas of new partitions (Kafka's AdminUtils).

`assign_replicas` is Kafka's AdminUtils.assignReplicasToBrokers. Without racks, the first
replica of partition p sits on broker (start + p) and the others follow at a shift that
grows by one every time the partitions wrap around the brokers, so that the followers of a
broker's leaders are spread over the others. With `broker.rack` on every broker, the brokers
are first interleaved rack by rack (rack a's first broker, rack b's first, ..., rack a's
second, ...), and each next replica is the first broker on from that shift whose rack holds
none of the partition's replicas yet (any rack once every rack has one), so the replicas of
a partition are in as many distinct racks as there are.

Kafka picks the start and the shift at random; odradek derives them from the topic name (a
deterministic layout that still spreads the preferred leaders of different topics).

When only some brokers have a rack, Kafka's CreateTopics (RackAwareMode.Enforced) refuses;
odradek places the replicas rack-unaware instead (RackAwareMode.Safe) and says so in the log,
so that a rolling change of broker.rack does not stop topic creation.

`rack_preferred` is for plans that move one replica at a time (rebalance, decommission): of
the candidate brokers, those whose rack holds no other replica of the partition.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable, Iterator, Mapping

log = logging.getLogger("odradek.placement")


class PlacementError(ValueError):
    """More replicas than brokers; one sentence (Kafka's InvalidReplicationFactorException)."""


def start_index(topic: str, brokers: int) -> int:
    """The start broker index and replica shift of a new topic (Kafka: random)."""
    return zlib.crc32(topic.encode()) % max(1, brokers)


def _shifted(first: int, shift: int, j: int, n: int) -> int:
    """Kafka's AdminUtils.replicaIndex: the j-th follower of the replica at `first`."""
    return (first + 1 + (shift + j) % (n - 1)) % n


def rack_alternated(racks: Mapping[int, str]) -> list[int]:
    """Kafka's getRackAlternatedBrokerList: racks in name order, their brokers in id order,
    taken one per rack in turn."""
    by_rack: dict[str, list[int]] = {}
    for broker in sorted(racks):
        by_rack.setdefault(racks[broker], []).append(broker)
    columns = [by_rack[r] for r in sorted(by_rack)]
    out: list[int] = []
    for i in range(max((len(c) for c in columns), default=0)):
        out.extend(c[i] for c in columns if i < len(c))
    return out


def assign_replicas(brokers: Mapping[int, str | None], partitions: int, replication_factor: int, *,
                    fixed_start: int = -1, first_partition: int = 0) -> list[list[int]]:
    """Replica lists for `partitions` new partitions numbered from `first_partition`.

    `brokers`: every live broker id and its rack (None without broker.rack). `fixed_start`:
    the start index and shift (Kafka's fixedStartIndex), -1 for none (then 0)."""
    if replication_factor <= 0:
        raise PlacementError("replication factor must be larger than 0")
    if replication_factor > len(brokers):
        raise PlacementError(f"replication factor: {replication_factor} larger than available brokers: "
                             f"{len(brokers)}")
    racks = {b: r for b, r in brokers.items() if r is not None}
    if racks and len(racks) < len(brokers):
        log.warning("brokers %s have no broker.rack: placing replicas without rack awareness",
                    sorted(set(brokers) - set(racks)))
    start = max(0, fixed_start)
    if racks and len(racks) == len(brokers):
        return _rack_aware(racks, partitions, replication_factor, start, first_partition)
    return _rack_unaware(sorted(brokers), partitions, replication_factor, start, first_partition)


def _leader_positions(n: int, partitions: int, start: int, first_partition: int) -> Iterator[tuple[int, int]]:
    """Each new partition's leader position in a list of `n` brokers, with its followers' shift
    (Kafka's AdminUtils: one more each time the partitions have gone round the brokers)."""
    shift = start
    for p in range(first_partition, first_partition + partitions):
        if p > 0 and p % n == 0:
            shift += 1
        yield (p + start) % n, shift


def _rack_unaware(ids: list[int], partitions: int, rf: int, start: int, first_partition: int) -> list[list[int]]:
    n = len(ids)
    return [[ids[first]] + [ids[_shifted(first, shift, j, n)] for j in range(rf - 1)]
            for first, shift in _leader_positions(n, partitions, start, first_partition)]


def _rack_aware(racks: Mapping[int, str], partitions: int, rf: int, start: int,
                first_partition: int) -> list[list[int]]:
    arranged = rack_alternated(racks)
    n = len(arranged)
    rack_count = len(set(racks.values()))
    out = []
    for first, shift in _leader_positions(n, partitions, start, first_partition):
        leader = arranged[first]
        replicas = [leader]
        used_racks = {racks[leader]}
        k = 0
        while len(replicas) < rf:
            broker = arranged[_shifted(first, shift * rack_count, k, n)]
            k += 1
            rack_free = racks[broker] not in used_racks or len(used_racks) == rack_count
            broker_free = broker not in replicas or len(replicas) == n
            if rack_free and broker_free:
                replicas.append(broker)
                used_racks.add(racks[broker])
        out.append(replicas)
    return out


def rack_preferred(candidates: Iterable[int], others: Iterable[int], racks: Mapping[int, str | None]) -> list[int]:
    """Of `candidates` for one more replica of a partition whose other replicas are `others`,
    those in a rack none of `others` is in; all of them when there is none such (or no racks)."""
    pool = list(candidates)
    taken = {racks.get(b) for b in others}
    better = [b for b in pool if racks.get(b) is not None and racks.get(b) not in taken]
    return better or pool


def distinct_racks(replicas: Iterable[int], racks: Mapping[int, str | None]) -> int:
    """How many racks the replicas of one partition are in (a broker without rack counts as its own)."""
    return len({racks.get(b) or f"broker-{b}" for b in replicas})
