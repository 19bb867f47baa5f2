"""The follower's fetcher (Kafka's ReplicaFetcherThread), per leader broker.

Over a plain Kafka connection to the leader: a partition that starts following
first asks OffsetForLeaderEpoch (KIP-101, KIP-279) and truncates its log to
where it and the leader's diverge; then ordinary Fetch requests with
replica_id = own id bring whole batches, appended with the offsets and leader
epochs the leader gave them, and the follower's high watermark becomes
min(leader's high watermark, own log end offset).

Two lanes per leader, each its own connection, fetch session and asyncio task: the
partitions that keep up (in sync at their last fetch) in one, the ones catching up (a new
replica of a reassignment, a follower back after a restart) in the other. A leader answers
one request per connection at a time, so in one lane an acks=all producer's records waited
behind megabytes of catch-up data in the same responses: the move of a throttled
reassignment cut the producer's throughput by a quarter to a half. A partition starts in the
catch-up lane and moves after each answer to the lane its state asks for; while the other
lane's request is out, both may fetch it once, and the answer applied second is dropped
(the log end moved), as any stale answer.
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
IDLE_FETCHER_S = 30.0  # a fetcher following nothing for this long ends
IDLE_LANE_S = 5.0  # the catch-up lane's connection closes after this long without partitions
# The catch-up lane's fetches wait at most this long for data (replica.fetch.wait.max.ms caps it
# too): its partitions have data unless a throttle holds them back, and then no produce to the
# partitions keeping up (in the other lane now) ends the leader's wait early as it used to.
CATCH_UP_WAIT_MS = 100
_QUIET = (OSError, asyncio.IncompleteReadError, TimeoutError)  # the leader went away: retry quietly

MAIN, CATCH_UP = 0, 1
LANE_NAMES = ("main", "catch-up")


class FetchError(Exception):
    pass


class LaneMap:
    """Which lane fetches each partition: a new one catches up first, then each answer puts
    it in the lane its state asks for (in sync: the main lane)."""

    def __init__(self) -> None:
        self.lane_of: dict[TopicPartition, int] = {}

    def add(self, tp: TopicPartition) -> None:
        self.lane_of[tp] = CATCH_UP

    def remove(self, tp: TopicPartition) -> None:
        self.lane_of.pop(tp, None)

    def answered(self, tp: TopicPartition, in_sync: bool) -> int | None:
        """After an answer for `tp`: the lane it moved to, or None when it stays (or is gone)."""
        which = MAIN if in_sync else CATCH_UP
        if self.lane_of.get(tp, which) == which:
            return None
        self.lane_of[tp] = which
        return which

    def members(self, which: int, partitions: dict[TopicPartition, FollowState]) -> list[FollowState]:
        return [fs for tp, fs in partitions.items() if self.lane_of.get(tp) == which]


class Lane:
    """One connection to the leader, its fetch session and the partitions it fetches."""

    def __init__(self, which: int) -> None:
        self.which = which
        self.name = LANE_NAMES[which]
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.correlation = 0
        self.session = FetchSessionHandler()  # KIP-227: after the first, fetches send only what moved
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def disconnect(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None
        self.session.reset()


class Fetcher:
    """Replicates every partition this broker follows from one leader broker."""

    def __init__(self, manager: ReplicaManager, leader: int) -> None:
        self.manager = manager
        self.broker = manager.broker
        self.leader = leader
        self.partitions: dict[TopicPartition, FollowState] = {}
        self.lane_map = LaneMap()
        self._stopping = False  # besides the cancel: Python 3.11's wait_for can swallow one
        self.lanes = (Lane(MAIN), Lane(CATCH_UP))
        loop = asyncio.get_running_loop()
        for lane in self.lanes:
            lane.task = loop.create_task(self._run(lane))

    @property
    def done(self) -> bool:
        task = self.lanes[MAIN].task
        return task is None or task.done()

    def add(self, fs: FollowState) -> None:
        tp = (fs.topic, fs.partition)
        self.partitions[tp] = fs
        self.lane_map.add(tp)
        self.lanes[CATCH_UP].wake.set()
        self.lanes[MAIN].wake.set()  # an idle fetcher's wait ends

    def remove(self, tp: TopicPartition) -> None:
        self.partitions.pop(tp, None)
        self.lane_map.remove(tp)

    async def stop(self) -> None:
        self.cancel()
        for lane in self.lanes:
            if lane.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await lane.task
            lane.disconnect()

    def cancel(self) -> None:
        """Stop without waiting: whatever answer still arrives is not applied to the logs."""
        self._stopping = True
        for lane in self.lanes:
            lane.wake.set()
            if lane.task is not None:
                lane.task.cancel()

    async def _run(self, lane: Lane) -> None:
        try:
            await self._fetch_loop(lane)
        finally:
            lane.disconnect()

    async def _fetch_loop(self, lane: Lane) -> None:
        while not self._stopping:
            mine = self.lane_map.members(lane.which, self.partitions)
            if not mine:
                lane.wake.clear()
                if lane.which == MAIN and not self.partitions:
                    try:
                        await asyncio.wait_for(lane.wake.wait(), IDLE_FETCHER_S)
                    except TimeoutError:
                        if not self.partitions:
                            if self.manager.fetchers.get(self.leader) is self:
                                self.manager.fetchers.pop(self.leader, None)
                            self._stopping = True  # the catch-up lane ends too
                            self.lanes[CATCH_UP].wake.set()
                            return
                    continue
                try:
                    await asyncio.wait_for(lane.wake.wait(), IDLE_LANE_S)
                except TimeoutError:
                    lane.disconnect()
                continue
            try:
                if lane.writer is None:
                    await self._connect(lane)
                await self._truncate(lane, mine)
                await self._fetch_once(lane, mine)
            except asyncio.CancelledError:
                raise
            except _QUIET as exc:
                if self._stopping:
                    return
                log.debug("fetcher from broker %d (%s): %r", self.leader, lane.name, exc)
                lane.disconnect()
                await asyncio.sleep(0.1)
            except Exception as exc:  # noqa: BLE001 - a bug or a refused append: say so, then retry
                if self._stopping:
                    return
                log.warning("fetcher from broker %d (%s): %r", self.leader, lane.name, exc)
                lane.disconnect()
                await asyncio.sleep(0.5)

    async def _connect(self, lane: Lane) -> None:
        node = self.broker.node_by_id(self.leader)
        if node is None:
            raise FetchError(f"broker {self.leader} is not registered")
        security = getattr(self.broker, "client_security", None) or ClientSecurity()
        lane.reader, lane.writer = await open_connection(
            node.host, node.port, security, f"broker-{self.broker.node_id}-fetcher", 5.0)

    async def _call(self, lane: Lane, api_key: int, version: int, body: Any, timeout: float) -> Any:
        assert lane.writer is not None and lane.reader is not None
        lane.correlation += 1
        lane.writer.write(encode_request(api_key, version, lane.correlation, body,
                                         client_id=f"broker-{self.broker.node_id}-fetcher"))
        await lane.writer.drain()
        size = struct.unpack(">i", await asyncio.wait_for(lane.reader.readexactly(4), timeout))[0]
        frame = await asyncio.wait_for(lane.reader.readexactly(size), timeout)
        _, response = decode_response(frame, api_key, version)
        return response

    async def _truncate(self, lane: Lane, mine: list[FollowState]) -> None:
        """OffsetForLeaderEpoch for every partition that has just started following."""
        pending = [fs for fs in mine if not fs.truncated]
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
        response = await self._call(lane, OFFSET_FOR_LEADER_EPOCH_KEY, OFFSET_FOR_LEADER_EPOCH_VERSION, body,
                                    timeout=5.0)
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
        if any(not fs.truncated for fs in pending if self.partitions.get((fs.topic, fs.partition)) is fs):
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

    async def _fetch_once(self, lane: Lane, mine: list[FollowState]) -> None:
        ready = [fs for fs in mine if fs.truncated]
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
        session = lane.session
        session_id, epoch, changed, forgotten = session.build(wanted)
        by_topic: dict[str, list[dict[str, int]]] = {}
        for (topic, partition), (offset, leader_epoch, log_start) in changed.items():
            by_topic.setdefault(topic, []).append(
                {"partition": partition, "current_leader_epoch": leader_epoch, "fetch_offset": offset,
                 "log_start_offset": log_start, "last_fetched_epoch": -1, "partition_max_bytes": PARTITION_FETCH_BYTES})
        gone: dict[str, list[int]] = {}
        for topic, partition in forgotten:
            gone.setdefault(topic, []).append(partition)
        wait_ms = self.broker.config.replica_fetch_wait_max_ms
        if lane.which == CATCH_UP:
            wait_ms = min(wait_ms, CATCH_UP_WAIT_MS)
        body = build(request_type(FETCH_KEY, FETCH_VERSION), {
            "replica_id": self.broker.node_id, "max_wait": wait_ms, "min_bytes": 1,
            "max_bytes": RESPONSE_FETCH_BYTES, "session_id": session_id, "session_epoch": epoch,
            "topics": [{"topic": t, "partitions": items} for t, items in by_topic.items()],
            "forgotten_topics_data": [{"topic": t, "partitions": ps} for t, ps in gone.items()],
        })
        response = await self._call(lane, FETCH_KEY, FETCH_VERSION, body, timeout=wait_ms / 1000.0 + 10.0)
        if self._stopping:  # stopped meanwhile: the logs may be closed
            return
        if not session.handle_response(response, epoch):
            return  # the leader lost or refused the session: the next fetch is full
        session.sent_request(wanted)
        backoff = False
        for topic in response.responses:
            for p in topic.partitions:
                tp = (topic.topic, p.partition_index)
                state = self.partitions.get(tp)
                fs_sent, offset_sent = sent.get(tp, (None, -1))
                # the role changed while the fetch was out, or the log moved (the other lane's
                # answer came first): this answer is stale
                if state is None or state is not fs_sent or state.plog.log_end_offset != offset_sent:
                    continue
                if p.error_code == ErrorCode.none:
                    if tp in throttled and throttle is not None:
                        throttle.follower.record(len(p.records or b""))
                    self._apply(state, p.records, p.high_watermark, p.log_start_offset)
                    moved = self.lane_map.answered(tp, state.in_sync)
                    if moved is not None:
                        self.lanes[moved].wake.set()
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
