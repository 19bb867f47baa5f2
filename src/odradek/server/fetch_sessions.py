"""Fetch sessions (KIP-227): Kafka's FetchSession, FetchSessionCache and FetchManager.newContext.

A client (a consumer, or a follower's fetcher) that sends a full Fetch with session epoch 0
gets a session id; from then on it sends only the partitions whose fetch position changed
(and the ones it stops fetching as forgotten topics), with the epoch counting up, and the
broker answers only the partitions with something new: records, a moved high watermark,
last stable offset or log start offset, an error, or a preferred read replica. A fetch of
1,000 partitions that have nothing new is then a few bytes each way instead of 1,000
partition entries encoded, sent and decoded every round.

Sessions live in one cache per broker of at most max.incremental.fetch.session.cache.slots;
a new session evicts one unused for min.incremental.fetch.session.eviction.ms, or else, for
a follower (privileged), the least recently used consumer session; with no room the fetch
is answered without a session (id 0), and the client keeps sending full fetches.
"""

from __future__ import annotations

import random
import time
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any

from kio.schema.errors import ErrorCode

INITIAL_EPOCH = 0
FINAL_EPOCH = -1
SESSIONLESS = 0  # the session id of an answer without a session


@dataclass
class CachedPartition:
    """One partition of a session: what the client last asked (the fields of FetchPartition
    the read needs) and what it was last told (Kafka's CachedPartition)."""

    partition: int
    fetch_offset: int
    partition_max_bytes: int
    current_leader_epoch: int = -1
    log_start_offset: int = -1
    last_fetched_epoch: int = -1
    high_watermark: int = -1
    last_stable_offset: int = -1
    leader_log_start: int = -1

    def update(self, p: Any) -> None:
        self.fetch_offset = p.fetch_offset
        self.partition_max_bytes = p.partition_max_bytes
        self.current_leader_epoch = getattr(p, "current_leader_epoch", -1)
        self.log_start_offset = getattr(p, "log_start_offset", -1)
        self.last_fetched_epoch = getattr(p, "last_fetched_epoch", -1)

    def must_respond(self, entry: dict[str, Any]) -> bool:
        """Kafka's CachedPartition.maybeUpdateResponseData: remember what the answer tells and
        whether an incremental answer has to carry this partition."""
        changed = False
        for attr, key in (("high_watermark", "high_watermark"), ("last_stable_offset", "last_stable_offset"),
                          ("leader_log_start", "log_start_offset")):
            if entry[key] != getattr(self, attr):
                setattr(self, attr, entry[key])
                changed = True
        return changed or has_records(entry) or entry["error_code"] != ErrorCode.none \
            or entry["preferred_read_replica"] >= 0


def has_records(entry: dict[str, Any]) -> bool:
    records = entry["records"]
    size = getattr(records, "size", None)  # a FileSlice
    return bool(size if size is not None else records)


@dataclass
class SessionTopic:
    """A topic of a session, shaped like a request's FetchTopic for the read."""

    topic: str
    topic_id: uuid.UUID | None
    partitions: list[CachedPartition]


@dataclass
class FetchSession:
    session_id: int
    privileged: bool  # a follower's
    # (topic name, or its id from Fetch v13 on, partition) -> the cached partition, in the order
    # the session reads them; a partition that answered records moves to the end (fairness)
    partitions: dict[tuple[str | uuid.UUID, int], CachedPartition] = field(default_factory=dict)
    epoch: int = 1  # the epoch the next incremental fetch must carry
    last_used: float = field(default_factory=time.monotonic)

    def add(self, key: str | uuid.UUID, p: Any) -> None:
        cached = self.partitions.get((key, p.partition))
        if cached is None:
            cached = self.partitions[(key, p.partition)] = CachedPartition(p.partition, p.fetch_offset,
                                                                           p.partition_max_bytes)
        cached.update(p)

    def forget(self, key: str | uuid.UUID, partitions: list[int]) -> None:
        for p in partitions:
            self.partitions.pop((key, p), None)

    def topics(self) -> list[tuple[str | uuid.UUID, list[CachedPartition]]]:
        """The session's partitions grouped by topic, in session order."""
        grouped: dict[str | uuid.UUID, list[CachedPartition]] = {}
        for (key, _), cached in self.partitions.items():
            grouped.setdefault(key, []).append(cached)
        return list(grouped.items())

    def rotate(self, answered: list[tuple[str | uuid.UUID, int]]) -> None:
        """Partitions that got records go to the back, so a response limit does not starve the rest."""
        for key in answered:
            cached = self.partitions.pop(key, None)
            if cached is not None:
                self.partitions[key] = cached


class SessionError(Exception):
    def __init__(self, code: ErrorCode) -> None:
        super().__init__(code.name)
        self.code = code


class FetchSessionCache:
    def __init__(self, max_slots: int, eviction_ms: int) -> None:
        self.max_slots = max_slots
        self.eviction_s = eviction_ms / 1000.0
        self.sessions: dict[int, FetchSession] = {}
        self.evictions = 0

    def get(self, session_id: int, epoch: int) -> FetchSession:
        """The session of an incremental fetch; FETCH_SESSION_ID_NOT_FOUND or
        INVALID_FETCH_SESSION_EPOCH as Kafka's FetchManager.newContext answers."""
        session = self.sessions.get(session_id)
        if session is None:
            raise SessionError(ErrorCode.fetch_session_id_not_found)
        if session.epoch != epoch:
            raise SessionError(ErrorCode.invalid_fetch_session_epoch)
        session.last_used = time.monotonic()
        return session

    def remove(self, session_id: int) -> None:
        self.sessions.pop(session_id, None)

    def create(self, privileged: bool) -> FetchSession | None:
        """A new session, or None when the cache is full and nothing may be evicted."""
        if len(self.sessions) >= self.max_slots and not self._evict_one(privileged):
            return None
        while True:  # random, as Kafka's FetchSessionCache.newSessionId: an old client's id is not reused
            session_id = random.randint(1, 2**31 - 1)
            if session_id not in self.sessions:
                break
        session = self.sessions[session_id] = FetchSession(session_id, privileged)
        return session

    def _evict_one(self, privileged: bool) -> bool:
        if not self.sessions:
            return False
        now = time.monotonic()
        oldest = min(self.sessions.values(), key=lambda s: s.last_used)
        if now - oldest.last_used >= self.eviction_s:
            victim: FetchSession | None = oldest
        elif privileged:
            victim = min((s for s in self.sessions.values() if not s.privileged),
                         key=lambda s: s.last_used, default=None)
        else:
            victim = None
        if victim is None:
            return False
        del self.sessions[victim.session_id]
        self.evictions += 1
        return True


_caches: weakref.WeakKeyDictionary[Any, FetchSessionCache] = weakref.WeakKeyDictionary()


def cache_for(broker: Any) -> FetchSessionCache:
    """The broker's session cache (one per broker object, several brokers per process in tests)."""
    cache = _caches.get(broker)
    if cache is None:
        config = broker.config
        cache = _caches[broker] = FetchSessionCache(
            getattr(config, "max_incremental_fetch_session_cache_slots", 1000),
            getattr(config, "min_incremental_fetch_session_eviction_ms", 120000))
    return cache
