"""The broker measures its own event loop: lateness as a histogram, stalls logged with a
likely cause (issue 20's groundwork; the connection gauges are issue 13's limits seen)."""

from __future__ import annotations

import time
import urllib.request

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from conftest import free_port, unique


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def test_a_stall_is_measured_and_logged_with_the_request_that_caused_it(broker_factory: object) -> None:
    metrics_port = free_port()
    b = broker_factory(env={"ODRADEK_METRICS_PORT": str(metrics_port),  # type: ignore[operator]
                            "ODRADEK_EVENT_LOOP_STALL_THRESHOLD_MS": "5"})
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    topic = unique("wide")
    # 1,500 logs and an fsynced topics.json in one request: more than 5 ms of the loop (the
    # directories and files themselves are made by a thread since issue 20)
    admin.create_topics([NewTopic(topic, 1500, 1)])[topic].result(60)

    def stalls() -> list[str]:
        return [ln for ln in b.logs().splitlines() if "the event loop stalled" in ln]

    deadline = time.monotonic() + 10
    while not any("CreateTopics v" in ln for ln in stalls()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert any("CreateTopics v" in ln for ln in stalls()), stalls()
    time.sleep(1.2)  # the gauges are refreshed every second
    values = scrape(metrics_port)
    assert values['odradek_event_loop_lag_ms_bucket{le="5000.0"}'] >= 1
    assert values["kafka_server_socket_server_metrics_connection_count"] >= 1
    # the loop is measured on and on, idle too (a tick at least every 250 ms): not a count reached
    # by some moment after start, which a faster start-up (or machine) does not reach
    counted = values["odradek_event_loop_lag_ms_count"]
    deadline = time.monotonic() + 5
    while scrape(metrics_port)["odradek_event_loop_lag_ms_count"] < counted + 2:
        assert time.monotonic() < deadline, "the loop's lateness stopped being measured"
        time.sleep(0.1)
