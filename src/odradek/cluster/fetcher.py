"""The follower's fetcher (Kafka's ReplicaFetcherThread), one asyncio task per leader broker.

Over a plain Kafka connection to the leader: a partition that starts following
first asks OffsetForLeaderEpoch (KIP-101, KIP-279) and truncates its log to
where it and the leader's diverge; then ordinary Fetch requests with
replica_id = own id bring whole batches, appended with the offsets and leader
epochs the leader gave them, and the follower's high watermark becomes
min(leader's high watermark, own log end offset).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from odradek.cluster.fetch_session import FetchSessionHandler, Position
from odradek.protocol.build import build
from odradek.protocol.framing import decode_response, encode_request, request_type
from odradek.security.client import ClientSecurity, open_connection

if TYPE_CHECKING:
    from odradek.cluster.replication import FollowState, ReplicaManager

log = logging.getLogger("odradek.replication")

TopicPartition = tuple[str, int]
FETCH_KEY, FETCH_VERSION = 1, 12
OFFSET_FOR_LEADER_EPOCH_KEY, OFFSET_FOR_LEADER_EPOCH_VERSION = 23, 4
PARTITION_FETCH_BYTES = 1 << 20  # replica.fetch.max.bytes
RESPONSE_FETCH_BYTES = 10 << 20  # replica.fetch.response.max.bytes
_QUIET = (OSError, asyncio.IncompleteReadError, TimeoutError)  # the leader went away: retry quietly


class FetchError(Exception):
    pass


class Fetcher:
    """Replicates every partition this broker follows from one leader broker."""

    def __init__(self, manager: ReplicaManager, leader: int) -> None:
        self.manager = manager
        self.broker = manager.broker
        self.leader = leader
        self.partitions: dict[TopicPartition, FollowState] = {}
        self._wake = asyncio.Event()
        self._stopping = False  # besides the cancel: Python 3.11's wait_for can swallow one
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._correlation = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.session = FetchSessionHandler()  # KIP-227: after the first, fetches send only what moved

    @property
    def done(self) -> bool:
        return self._task.done()

    def add(self, fs: FollowState) -> None:
        self.partitions[(fs.topic, fs.partition)] = fs
        self._wake.set()

    def remove(self, tp: TopicPartition) -> None:
        self.partitions.pop(tp, None)

    async def stop(self) -> None:
        self.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        self._disconnect()

    def cancel(self) -> None:
        """Stop without waiting: whatever answer still arrives is not applied to the logs."""
        self._stopping = True
        self._wake.set()
        self._task.cancel()

    def _disconnect(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
        self.session.reset()

    async def _run(self) -> None:
        try:
            await self._fetch_loop()
        finally:
            self._disconnect()

    async def _fetch_loop(self) -> None:
        while not self._stopping:
            if not self.partitions:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), 30.0)
                except TimeoutError:
                    if not self.partitions:
                        self.manager.fetchers.pop(self.leader, None)
                        self._disconnect()
                        return
                continue
            try:
                if self._writer is None:
                    await self._connect()
                await self._truncate()
                await self._fetch_once()
            except asyncio.CancelledError:
                raise
            except _QUIET as exc:
                if self._stopping:
                    return
                log.debug("fetcher from broker %d: %r", self.leader, exc)
                self._disconnect()
                await asyncio.sleep(0.1)
            except Exception as exc:  # noqa: BLE001 - a bug or a refused append: say so, then retry
                if self._stopping:
                    return
                log.warning("fetcher from broker %d: %r", self.leader, exc)
                self._disconnect()
                await asyncio.sleep(0.5)

    async def _connect(self) -> None:
        node = self.broker.node_by_id(self.leader)
        if node is None:
            raise FetchError(f"broker {self.leader} is not registered")
        security = getattr(self.broker, "client_security", None) or ClientSecurity()
        self._reader, self._writer = await open_connection(
            node.host, node.port, security, f"broker-{self.broker.node_id}-fetcher", 5.0)

    async def _call(self, api_key: int, version: int, body: Any, timeout: float) -> Any:
        assert self._writer is not None and self._reader is not None
        self._correlation += 1
        self._writer.write(encode_request(api_key, version, self._correlation, body,
                                          client_id=f"broker-{self.broker.node_id}-fetcher"))
        await self._writer.drain()
        size = struct.unpack(">i", await asyncio.wait_for(self._reader.readexactly(4), timeout))[0]
        frame = await asyncio.wait_for(self._reader.readexactly(size), timeout)
        _, response = decode_response(frame, api_key, version)
        return response

    async def _truncate(self) -> None:
        """OffsetForLeaderEpoch for every partition that has just started following."""
        pending = [fs for fs in self.partitions.values() if not fs.truncated]
        if not pending:
            return
        by_topic: dict[str, list[FollowState]] = {}
        for fs in pending:
            by_topic.setdefault(fs.topic, []).append(fs)
        body = build(request_type(OFFSET_FOR_LEADER_EPOCH_KEY, OFFSET_FOR_LEADER_EPOCH_VERSION), {
            "replica_id": self.broker.node_id,
            "topics": [{"topic": t, "partitions": [
                {"partition": fs.partition, "current_leader_epoch": fs.leader_epoch,
                 "leader_epoch": fs.plog.latest_leader_epoch()} for fs in items]}
                for t, items in by_topic.items()],
        })
        response = await self._call(OFFSET_FOR_LEADER_EPOCH_KEY, OFFSET_FOR_LEADER_EPOCH_VERSION, body, timeout=5.0)
        if self._stopping:  # stopped meanwhile: the logs may be closed
            return
        for topic in response.topics:
            for p in topic.partitions:
                state = self.partitions.get((topic.topic, p.partition))
                if state is None or state.truncated:
                    continue
                if p.error_code != ErrorCode.none:
                    continue  # the leader does not know it leads yet; ask again next round
                self._truncate_one(state, p.leader_epoch, p.end_offset)
                state.truncated = True
        if any(not fs.truncated for fs in self.partitions.values()):
            await asyncio.sleep(0.05)

    def _truncate_one(self, fs: FollowState, leader_epoch: int, end_offset: int) -> None:
        plog = fs.plog
        ours = plog.latest_leader_epoch()
        if leader_epoch < 0 or end_offset < 0:
            target = plog.high_watermark  # the leader has no epoch history: fall back to the HW
        elif leader_epoch == ours:
            target = end_offset
        else:
            # KIP-279: the leader answered an older epoch; cut at the end of that epoch in our log too
            target = min(end_offset, plog.end_offset_for_epoch(leader_epoch)[1])
        target = min(target, plog.log_end_offset)
        if target < plog.log_end_offset:
            log.info("%s-%d: truncating from %d to %d (leader %d epoch %d ends at %d)", fs.topic, fs.partition,
                     plog.log_end_offset, target, fs.leader, leader_epoch, end_offset)
            plog.truncate_to(target)
        plog.high_watermark = min(plog.high_watermark, plog.log_end_offset)

    def _throttled(self, fs: FollowState) -> bool:
        """follower.replication.throttled.replicas names this replica and it is not in sync
        (Kafka's shouldFollowerThrottle: the quota applies to catching up, not to keeping up)."""
        throttle = getattr(self.broker, "throttle", None)
        meta = self.broker.topics().get(fs.topic)
        return throttle is not None and meta is not None and not fs.in_sync \
            and throttle.follower_throttled(meta.configs, fs.partition)

    async def _fetch_once(self) -> None:
        ready = [fs for fs in self.partitions.values() if fs.truncated]
        throttle = getattr(self.broker, "throttle", None)
        throttled = {(fs.topic, fs.partition) for fs in ready if self._throttled(fs)}
        if throttled and throttle is not None and throttle.follower.exceeded():
            ready = [fs for fs in ready if (fs.topic, fs.partition) not in throttled]
            if not ready:
                await asyncio.sleep(0.05)
                return
        if not ready:
            return
        sent = {(fs.topic, fs.partition): (fs, fs.plog.log_end_offset) for fs in ready}
        wanted: dict[TopicPartition, Position] = {
            (fs.topic, fs.partition): (fs.plog.log_end_offset, fs.leader_epoch, fs.plog.log_start_offset)
            for fs in ready}
        session_id, epoch, changed, forgotten = self.session.build(wanted)
        by_topic: dict[str, list[dict[str, int]]] = {}
        for (topic, partition), (offset, leader_epoch, log_start) in changed.items():
            by_topic.setdefault(topic, []).append(
                {"partition": partition, "current_leader_epoch": leader_epoch, "fetch_offset": offset,
                 "log_start_offset": log_start, "last_fetched_epoch": -1, "partition_max_bytes": PARTITION_FETCH_BYTES})
        gone: dict[str, list[int]] = {}
        for topic, partition in forgotten:
            gone.setdefault(topic, []).append(partition)
        wait_ms = self.broker.config.replica_fetch_wait_max_ms
        body = build(request_type(FETCH_KEY, FETCH_VERSION), {
            "replica_id": self.broker.node_id, "max_wait": wait_ms, "min_bytes": 1,
            "max_bytes": RESPONSE_FETCH_BYTES, "session_id": session_id, "session_epoch": epoch,
            "topics": [{"topic": t, "partitions": items} for t, items in by_topic.items()],
            "forgotten_topics_data": [{"topic": t, "partitions": ps} for t, ps in gone.items()],
        })
        response = await self._call(FETCH_KEY, FETCH_VERSION, body, timeout=wait_ms / 1000.0 + 10.0)
        if self._stopping:  # stopped meanwhile: the logs may be closed
            return
        if not self.session.handle_response(response, epoch):
            return  # the leader lost or refused the session: the next fetch is full
        self.session.sent_request(wanted)
        backoff = False
        for topic in response.responses:
            for p in topic.partitions:
                tp = (topic.topic, p.partition_index)
                state = self.partitions.get(tp)
                fs_sent, offset_sent = sent.get(tp, (None, -1))
                # the role changed while the fetch was out, or the log moved: this answer is stale
                if state is None or state is not fs_sent or state.plog.log_end_offset != offset_sent:
                    continue
                if p.error_code == ErrorCode.none:
                    if tp in throttled and throttle is not None:
                        throttle.follower.record(len(p.records or b""))
                    self._apply(state, p.records, p.high_watermark, p.log_start_offset)
                elif p.error_code == ErrorCode.offset_out_of_range and p.log_start_offset > offset_sent:
                    self._start_at_leader_log_start(state, p.log_start_offset)
                elif p.error_code == ErrorCode.offset_out_of_range:
                    state.truncated = False  # diverged: ask for the epoch boundary again
                    backoff = True
                else:
                    backoff = True  # not (yet) the leader: wait for the state change
        if backoff:
            await asyncio.sleep(0.05)

    def _apply(self, fs: FollowState, records: bytes | None, leader_hw: int, leader_log_start: int) -> None:
        plog = fs.plog
        if records:
            self.broker.append_as_follower(plog, bytes(records))
        hw = min(leader_hw, plog.log_end_offset)
        plog.high_watermark = max(plog.high_watermark, hw)
        fs.in_sync = plog.log_end_offset >= leader_hw
        if leader_log_start > plog.log_start_offset:
            # Kafka's ReplicaFetcherThread: the leader's log start offset (retention, DeleteRecords)
            # moves the follower's, up to its high watermark; whole segments below it go
            plog.delete_records_before(leader_log_start)

    def _start_at_leader_log_start(self, fs: FollowState, leader_log_start: int) -> None:
        """OFFSET_OUT_OF_RANGE below the leader's log start offset (Kafka's AbstractFetcherThread
        .fetchOffsetAndTruncate): what this replica has is gone on the leader; start empty there."""
        plog = fs.plog
        log.info("%s-%d: log end offset %d is below leader %d's log start offset %d; starting over there",
                 fs.topic, fs.partition, plog.log_end_offset, fs.leader, leader_log_start)
        plog.truncate_fully_and_start_at(leader_log_start)
        self.broker.logs.checkpoint()
