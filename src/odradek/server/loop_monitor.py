"""The event loop's own lateness, measured and explained.

One loop serves every connection, so a synchronous stretch anywhere (a large
request, a file walk, a collection) delays every other request by as long. A
timer that should fire every 20 ms measures how late it fires; the lateness goes
to the `odradek_event_loop_lag_ms` histogram, and a stall over
`event.loop.stall.threshold.ms` is logged in one line with the slowest request
the dispatcher finished since the previous tick (what most likely held the loop).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from odradek.server.dispatcher import Dispatcher
    from odradek.server.metrics import BrokerMetrics

log = logging.getLogger("odradek.loop")

INTERVAL_S = 0.02


async def watch_loop(metrics: BrokerMetrics, dispatcher: Dispatcher, threshold_ms: float) -> None:
    loop = asyncio.get_running_loop()
    observe = metrics.loop_lag_ms.observe
    while True:
        started = loop.time()
        dispatcher.slowest = None
        await asyncio.sleep(INTERVAL_S)
        lag_ms = max((loop.time() - started - INTERVAL_S) * 1000, 0.0)
        observe(lag_ms)
        if lag_ms > threshold_ms:
            slowest = dispatcher.slowest
            what = (f"the slowest request since the last tick: {slowest[1]} ({slowest[0]:.0f} ms)"
                    if slowest is not None else "no request finished meanwhile")
            log.warning("the event loop stalled for %.0f ms; %s", lag_ms, what)
