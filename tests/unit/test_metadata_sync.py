"""A single-node broker's admin answers wait for topics.json (`LocalMetadataStore.synced`); the
write they wait for is shared by every request of the moment. One of them cancelled, as when its
client closes the connection mid-CreateTopics, must not cancel the others' wait (the fuzzer's
finding: the next DeleteTopics was answered with a CancelledError out of its handler)."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

from odradek.cluster.metadata import LocalMetadataStore, _metadata_thread
from odradek.protocol.build import build
from odradek.protocol.framing import encode_request, request_type
from odradek.server.dispatcher import CloseConnection, Dispatcher, Route
from odradek.server.handlers import ROUTES
from odradek.testing import Broker


def test_a_cancelled_waiter_leaves_the_shared_write_to_the_others(tmp_path: Path) -> None:
    store = LocalMetadataStore(tmp_path, "cluster")
    held = threading.Event()
    _metadata_thread().submit(held.wait, 10)  # the metadata thread busy: the next write stays queued

    async def scenario() -> None:
        store.create_topic("a", [[0]], {})
        first = asyncio.create_task(store.synced())  # a client that goes away
        store.create_topic("b", [[0]], {})
        second = asyncio.create_task(store.synced())  # one that waits for its answer
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.sleep(0)
        held.set()
        await asyncio.wait_for(second, 10)  # CancelledError here before the fix
        assert first.cancelled()

    try:
        asyncio.run(scenario())
    finally:
        held.set()
    assert set(json.loads((tmp_path / "topics.json").read_text())["topics"]) == {"a", "b"}
    store.create_topic("c", [[0]], {})
    store.wait_synced(10)  # later writes still complete
    assert set(LocalMetadataStore(tmp_path, "cluster").topics()) == {"a", "b", "c"}


def test_a_handler_handing_on_a_cancellation_costs_its_connection_not_the_broker() -> None:
    """A CancelledError out of a handler whose own task was not cancelled is a bug like any other
    (one log line, the connection closed); the request's own cancellation still ends it."""

    async def hands_on_a_cancellation(ctx: object, request: object) -> None:
        raise asyncio.CancelledError

    async def waits(ctx: object, request: object) -> None:
        await asyncio.sleep(10)

    frame = encode_request(3, 12, 1, build(request_type(3, 12), topics=None))[4:]

    async def scenario() -> None:
        broker = Broker(storage="memory")
        await broker.start_async()
        try:
            routes = dict(ROUTES)
            routes[3] = Route(hands_on_a_cancellation, 0, 12)
            try:
                await Dispatcher(broker.server.broker, routes).dispatch(None, frame)
            except CloseConnection as exc:
                assert "internal error in Metadata v12" in str(exc) and "CancelledError" in str(exc)
            else:
                raise AssertionError("dispatch answered")
            routes[3] = Route(waits, 0, 12)
            task = asyncio.create_task(Dispatcher(broker.server.broker, routes).dispatch(None, frame))
            await asyncio.sleep(0.01)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            else:
                raise AssertionError("a cancelled request was answered")
        finally:
            await broker.stop_async()

    asyncio.run(scenario())
