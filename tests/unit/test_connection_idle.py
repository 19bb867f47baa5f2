"""An idle connection holds no task, and a closed one is freed by its reference count: ten
thousand idle connections must not give the garbage collector's full collections (and the
gc.freeze that keeps them out of those) objects to walk or to leak (issue 20)."""

from __future__ import annotations

import asyncio
import gc
import weakref

from test_connection_writes import connect, frames_of, produce, settle


def test_an_idle_connection_keeps_no_task_and_the_next_request_is_answered() -> None:
    async def check() -> None:
        conn, transport, _ = await connect()
        assert conn.worker is None  # connected, nothing asked yet
        conn.data_received(produce(1))
        await settle()
        assert conn.worker is None  # answered: idle again, no task waiting
        conn.data_received(produce(2) + produce(3))
        await settle()
        assert [i for _, data in transport.writes for i in frames_of(data)] == [1, 2, 3]
        assert conn.worker is None
        conn.close(None)

    asyncio.run(check())


def test_answers_wait_while_the_transport_pauses_writing_and_go_on_after() -> None:
    async def check() -> None:
        conn, transport, _ = await connect()
        conn.pause_writing()
        conn.data_received(produce(1) + produce(2))
        await settle()
        assert [i for _, data in transport.writes for i in frames_of(data)] == [1]  # then it waits
        assert conn.worker is not None
        conn.resume_writing()
        await settle()
        assert [i for _, data in transport.writes for i in frames_of(data)] == [1, 2]
        assert conn.worker is None
        conn.close(None)

    asyncio.run(check())


def test_a_closed_connection_is_freed_without_the_garbage_collector() -> None:
    async def check() -> None:
        conn, _, _ = await connect()
        conn.data_received(produce(1))
        await settle()
        conn.pause_writing()  # a connection lost while its writes were paused and a request was queued
        conn.data_received(produce(2) + produce(3))
        await settle()
        gone = weakref.ref(conn)
        conn.close(None)
        conn.connection_lost(None)
        await settle()
        del conn
        assert gone() is None  # no reference cycle kept it (nor its task, its transport)

    gc.disable()
    try:
        asyncio.run(check())
    finally:
        gc.enable()
