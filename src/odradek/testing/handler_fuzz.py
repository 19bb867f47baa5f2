"""Every handler behind the real dispatcher of a real embedded broker, fed schema-driven
requests (odradek.testing.requests); used by tests/test_handler_fuzz.py and
bench/handler_fuzz.py.

A request passes when the dispatcher answers it (a response that decodes, or none
for acks=0), or closes the connection because the frame does not parse (Kafka's
answer to a bad frame). Everything else is a failure: an exception out of a
handler, a connection closed although the request parsed (a handler error the
dispatcher turned into a close), an error logged with a traceback or left to the
event loop while the request ran, a handler that does not answer in time (only
JoinGroup and SyncGroup may wait for the rest of their group), or a broker that no
longer answers ApiVersions over TCP.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import traceback
from dataclasses import dataclass, field
from typing import Any

from odradek.protocol import legacy
from odradek.protocol.build import build
from odradek.protocol.framing import (
    FrameError,
    decode_request,
    decode_response,
    encode_request,
    request_type,
)
from odradek.testing import Broker
from odradek.testing.requests import (
    FuzzRequest,
    Vocabulary,
    consumer_assignment,
    consumer_subscription,
)

__all__ = ["HandlerFuzzer", "Outcome"]

JOIN_GROUP, SYNC_GROUP = 11, 14
# APIs whose handler legitimately waits for other clients (the rest of the group)
MAY_WAIT = {JOIN_GROUP, SYNC_GROUP}
TOPICS = {"fuzz-a": 3, "fuzz-b": 1}
GROUP, ACTIVE_GROUP, TXN_ID = "fuzz-group", "fuzz-active", "fuzz-txn"


@dataclass
class Outcome:
    kind: str  # answered | no-response | refused | waiting | failed
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.kind == "failed"


@dataclass
class _Trouble:
    """Errors that surface beside the request: loop exception handler, logged tracebacks."""

    items: list[str] = field(default_factory=list)

    def take(self) -> list[str]:
        out, self.items = self.items, []
        return out


class _Capture(logging.Handler):
    def __init__(self, trouble: _Trouble) -> None:
        super().__init__(logging.ERROR)
        self.trouble = trouble

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                text += "\n" + "".join(traceback.format_exception(record.exc_info[1]))
            self.trouble.items.append(f"logged by {record.name}: {text}")


class HandlerFuzzer:
    """A started embedded broker with realistic state, and the vocabulary that names it."""

    def __init__(self, broker: Broker, *, timeout: float = 5.0, wait_timeout: float = 0.3) -> None:
        from odradek.server.dispatcher import Dispatcher
        from odradek.server.handlers import ROUTES

        self.broker = broker
        self.timeout = timeout
        self.wait_timeout = wait_timeout
        self.dispatcher = Dispatcher(broker.server.broker, ROUTES)
        self.trouble = _Trouble()
        self._capture = _Capture(self.trouble)
        logging.getLogger("odradek").addHandler(self._capture)
        loop = broker._loop
        assert loop is not None
        self.loop = loop
        self._default_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_exception)
        self._correlation = 0
        self.vocabulary = self._prepare()

    def close(self) -> None:
        logging.getLogger("odradek").removeHandler(self._capture)
        if not self.loop.is_closed():
            self.loop.set_exception_handler(self._default_handler)

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        text = context.get("message", "")
        if exc is not None:
            text += "\n" + "".join(traceback.format_exception(exc))
        self.trouble.items.append(f"event loop: {text}")
        loop.default_exception_handler(context)

    # -- state -------------------------------------------------------------------

    def _call(self, api_key: int, version: int, values: dict[str, Any]) -> Any:
        body = build(request_type(api_key, version), values)
        frame = encode_request(api_key, version, self._next(), body)
        response = self._run(self.dispatcher.dispatch(None, frame[4:]), self.timeout)
        return decode_response(response[4:], api_key, version)[1]

    def _next(self) -> int:
        self._correlation = (self._correlation + 1) & 0x7FFFFFFF
        return self._correlation

    def _run(self, coro: Any, timeout: float) -> Any:
        async def bounded() -> Any:
            return await asyncio.wait_for(coro, timeout)

        return asyncio.run_coroutine_threadsafe(bounded(), self.loop).result(timeout + 30)

    def ensure_topics(self) -> None:
        """Back to the prepared topics: the ones a fuzzed request created are deleted, the
        vocabulary's own have their partitions, their records and no config overrides (a
        fuzzed DeleteTopics, CreatePartitions or AlterConfigs changes them). A long campaign
        would otherwise pile up partitions until the broker runs out of file descriptors."""

        async def reset() -> list[str]:
            broker = self.broker.server.broker
            for name, topic in list(broker.topics().items()):
                if topic.internal:
                    continue
                if TOPICS.get(name) == topic.partitions:
                    if topic.configs:
                        broker.set_topic_configs(name, {})
                    continue
                broker.delete_topic(name)
            missing = [name for name in TOPICS if name not in broker.topics()]
            for name in missing:
                broker.create_topic(name, TOPICS[name], -1, {})
            return missing

        missing = self._run(reset(), self.timeout)
        if missing:
            self._produce(missing)

    def _produce(self, topics: list[str]) -> None:
        from odradek.protocol.records import encode_batch

        records = encode_batch([(b"k%d" % i, b"v%d" % i, ()) for i in range(5)])
        self._call(0, 9, {"acks": -1, "timeout": 1000, "topic_data": [
            {"name": t, "partition_data": [{"index": p, "records": records} for p in range(TOPICS[t])]}
            for t in topics]})

    def _prepare(self) -> Vocabulary:
        self.ensure_topics()
        self._call(8, 8, {"group_id": GROUP, "generation_id_or_member_epoch": -1, "member_id": "", "topics": [
            {"name": "fuzz-a", "partitions": [{"partition_index": p, "committed_offset": 2,
                                               "committed_leader_epoch": -1, "committed_metadata": ""}
                                              for p in range(3)]}]})
        idempotent = self._call(22, 4, {"transactional_id": None, "transaction_timeout": 60000,
                                        "producer_id": -1, "producer_epoch": -1})
        self._call(10, 3, {"key": TXN_ID, "key_type": 1})
        txn = self._call(22, 4, {"transactional_id": TXN_ID, "transaction_timeout": 60000,
                                 "producer_id": -1, "producer_epoch": -1})
        # a Stable group with one member (JoinGroup v3: no member-id round trip)
        joined = self._call(JOIN_GROUP, 3, {
            "group_id": ACTIVE_GROUP, "session_timeout": 30000, "rebalance_timeout": 100, "member_id": "",
            "protocol_type": "consumer",
            "protocols": [{"name": "range", "metadata": consumer_subscription(list(TOPICS))}]})
        self._call(SYNC_GROUP, 2, {
            "group_id": ACTIVE_GROUP, "generation_id": joined.generation_id, "member_id": joined.member_id,
            "assignments": [{"member_id": joined.member_id,
                             "assignment": consumer_assignment({t: list(range(n)) for t, n in TOPICS.items()})}]})
        topics = self.broker.server.broker.topics()
        return Vocabulary(
            topics=tuple(TOPICS),
            topic_ids=tuple(topics[t].topic_id for t in TOPICS),
            groups=(GROUP, ACTIVE_GROUP),
            transactional_ids=(TXN_ID,),
            producer_ids=(idempotent.producer_id, txn.producer_id),
            node_id=self.broker.server.broker.node_id,
        )

    # -- one request -------------------------------------------------------------

    def dispatch(self, request: FuzzRequest) -> Outcome:
        from odradek.server.dispatcher import CloseConnection

        frame = request.frame(self._next())[4:]
        self.trouble.take()
        may_wait = request.api_key in MAY_WAIT
        try:
            response = self._run(self.dispatcher.dispatch(None, frame),
                                 self.wait_timeout if may_wait else self.timeout)
        except CloseConnection as exc:
            outcome = self._closed(frame, str(exc))
        except TimeoutError:
            outcome = Outcome("waiting") if may_wait else Outcome(
                "failed", f"no answer within {self.timeout} s")
        except Exception as exc:  # noqa: BLE001 - any other exception is what we hunt
            outcome = Outcome("failed", "".join(traceback.format_exception(exc)))
        else:
            outcome = self._answered(request, response)
        trouble = self.trouble.take()
        if trouble and not outcome.failed:
            outcome = Outcome("failed", "\n".join(trouble))
        return outcome

    def _closed(self, frame: bytes, reason: str) -> Outcome:
        try:
            header, request = decode_request(frame)
        except FrameError:
            return Outcome("refused", reason)
        if (header.api_key, header.api_version) in legacy.REFUSED and request.acks == 0:
            # Kafka's answer to an acks=0 Produce it refuses: no response, the connection closed
            return Outcome("refused", reason)
        return Outcome("failed", f"connection closed although the request parses: {reason}")

    def _answered(self, request: FuzzRequest, response: bytes | None) -> Outcome:
        if response is None:
            if request.api_key == 0 and request.body.acks == 0:
                return Outcome("no-response")
            return Outcome("failed", "no response (only Produce with acks=0 goes unanswered)")
        try:
            decode_response(response[4:], request.api_key, request.version)
        except Exception as exc:  # noqa: BLE001 - a response kio cannot read back is a failure
            if "negative timestamp" in str(exc):
                # Kafka writes -1 for "no time" (DescribeTransactions' start time of a transaction
                # not in progress); kio's reader refuses it, Kafka's clients read it.
                return Outcome("answered", str(exc))
            return Outcome("failed", f"the response does not decode: {type(exc).__name__}: {exc}")
        return Outcome("answered")

    # -- health --------------------------------------------------------------

    def healthy(self, timeout: float = 2.0) -> bool:
        """ApiVersions v0 over a new TCP connection is answered."""
        frame = struct.pack(">ihhih", 10, 18, 0, 7, -1)
        try:
            with socket.create_connection(("127.0.0.1", self.broker.port), timeout=timeout) as s:
                s.sendall(frame)
                data = b""
                while len(data) < 4 or len(data) < 4 + struct.unpack_from(">i", data)[0]:
                    chunk = s.recv(65536)
                    if not chunk:
                        return False
                    data += chunk
                (correlation_id,) = struct.unpack_from(">i", data, 4)
                return bool(correlation_id == 7)
        except OSError:
            return False
