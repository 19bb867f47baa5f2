"""A consumer-group member (KIP-848) that heartbeats under another group.instance.id than it joined
with left the first id mapped to it; once it left, a new member taking that first id hit the stale
mapping (the fuzzer's finding: KeyError, the connection closed with "internal error")."""

from __future__ import annotations

import asyncio
import datetime

from kio.schema.errors import ErrorCode

from odradek.protocol.build import build
from odradek.protocol.framing import decode_response, encode_request, request_type
from odradek.server.dispatcher import Dispatcher
from odradek.server.handlers import ROUTES
from odradek.testing import Broker


def heartbeat(member_id: str, epoch: int, instance_id: str) -> bytes:
    body = build(request_type(68, 1), group_id="g", member_id=member_id, member_epoch=epoch,
                 instance_id=instance_id, rack_id=None, rebalance_timeout=datetime.timedelta(seconds=5),
                 subscribed_topic_names=["t"] if epoch == 0 else None, subscribed_topic_regex=None,
                 server_assignor=None, topic_partitions=[] if epoch == 0 else None)
    return encode_request(68, 1, 1, body)[4:]


def test_an_instance_id_a_member_left_behind_is_free_for_the_next_member() -> None:
    async def scenario() -> list[ErrorCode]:
        broker = Broker(storage="memory")
        await broker.start_async()
        try:
            dispatcher = Dispatcher(broker.server.broker, ROUTES)
            codes = []
            for frame in (heartbeat("m", 0, "a"), heartbeat("m", 0, "b"), heartbeat("m", -1, "b"),
                          heartbeat("n", 0, "a")):
                answer = await dispatcher.dispatch(None, frame)
                assert answer is not None
                codes.append(decode_response(answer[4:], 68, 1)[1].error_code)
            return codes
        finally:
            await broker.stop_async()

    assert asyncio.run(scenario())[-1] == ErrorCode.none
