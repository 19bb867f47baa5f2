"""LoopCounter and LoopHistogram (server/metrics.py) expose what prometheus_client's own Counter and
Histogram expose for the same observations: the series a dashboard queries (deploy/grafana) keep
their names, labels, bucket bounds and values."""

from __future__ import annotations

import re
import socket
import time
import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from odradek.server.metrics import (
    REQUEST_TIME_BUCKETS_MS,
    SCRAPE_SLICE_SAMPLES,
    BrokerMetrics,
    LoopCounter,
    LoopHistogram,
)


def _mask(lines: list[str]) -> list[str]:
    """Sorted lines, the _created timestamps masked (the scrapes are moments apart)."""
    return sorted(re.sub(r"^(\S+_created(?:\{[^}]*\})?) .*$", r"\1 T", line) for line in lines)


def _exposition(registry: CollectorRegistry) -> list[str]:
    """The text exposition's lines, the _created timestamps masked (each object's own)."""
    text = generate_latest(registry).decode()
    return sorted(re.sub(r"^(\S+_created(?:\{[^}]*\})?) .*$", r"\1 T", line) for line in text.splitlines())


def test_loop_counter_exposes_what_a_prometheus_counter_exposes() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    counter = Counter("kafka_server_brokertopicmetrics_bytesin", "Record bytes appended", ["topic"], registry=theirs)
    loop = LoopCounter("kafka_server_brokertopicmetrics_bytesin", "Record bytes appended", ["topic"], registry=ours)
    for topic, amount in (("orders", 2600), ("orders", 1), ("clicks", 12.5), ("a\"quoted\\name", 3)):
        counter.labels(topic).inc(amount)
        loop.labels(topic).inc(amount)
    counter.labels("untouched")
    loop.labels("untouched")
    assert _exposition(ours) == _exposition(theirs)
    assert 'kafka_server_brokertopicmetrics_bytesin_total{topic="orders"} 2601.0' in _exposition(ours)


def test_loop_histogram_exposes_what_a_prometheus_histogram_exposes() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    name, doc = "kafka_network_requestmetrics_totaltimems", "Milliseconds from a request's arrival to its response"
    histogram = Histogram(name, doc, ["request"], buckets=REQUEST_TIME_BUCKETS_MS, registry=theirs)
    loop = LoopHistogram(name, doc, ["request"], registry=ours, buckets=REQUEST_TIME_BUCKETS_MS)
    # bucket bounds themselves (le is inclusive), between them, past the last one
    for request, ms in (("Produce", 0.5), ("Produce", 0.2), ("Produce", 1.0), ("Produce", 3), ("Fetch", 500),
                        ("Fetch", 10000), ("Fetch", 12000), ("Fetch", 0)):
        histogram.labels(request).observe(ms)
        loop.labels(request).observe(ms)
    assert _exposition(ours) == _exposition(theirs)
    lines = _exposition(ours)
    assert f'{name}_bucket{{le="0.5",request="Produce"}} 2.0' in lines
    assert f'{name}_bucket{{le="+Inf",request="Fetch"}} 4.0' in lines
    assert f'{name}_count{{request="Fetch"}} 4.0' in lines


def test_the_scrape_endpoint_serves_every_series_when_rendered_in_slices() -> None:
    """The broker's /metrics renders through ScrapeRegistry (the GIL let go between slices of
    samples): a scrape still gets every series of every topic, as prometheus_client renders the
    registry itself, in both the text and the OpenMetrics format, and a `name[]` filter still works."""
    metrics = BrokerMetrics()
    topics = 5 * SCRAPE_SLICE_SAMPLES + 3  # many slices of one metric
    for i in range(topics):
        metrics.bytes_in.labels(f"topic-{i}").inc(100 + i)
        metrics.messages_in.labels(f"topic-{i}").inc(1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    metrics.serve(port, host="127.0.0.1")
    base = f"http://127.0.0.1:{port}/metrics"

    def get(url: str, accept: str = "text/plain") -> str:
        request = urllib.request.Request(url, headers={"Accept": accept})
        for attempt in range(50):  # the server's thread may not listen yet
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return str(response.read().decode())
            except (ConnectionRefusedError, urllib.error.URLError):
                if attempt == 49:
                    raise
                time.sleep(0.1)
        raise AssertionError("unreachable")

    text = get(base)
    assert _mask(text.splitlines()) == _mask(generate_latest(metrics.registry).decode().splitlines())
    for i in (0, SCRAPE_SLICE_SAMPLES, topics - 1):
        assert f'kafka_server_brokertopicmetrics_bytesin_total{{topic="topic-{i}"}} {100 + i}.0' in text
    openmetrics = get(base, "application/openmetrics-text; version=1.0.0")
    assert _mask(openmetrics.splitlines()) == _mask(generate_openmetrics(metrics.registry).decode().splitlines())
    only = get(base + "?name[]=kafka_server_brokertopicmetrics_messagesin_total")
    assert f'kafka_server_brokertopicmetrics_messagesin_total{{topic="topic-{topics - 1}"}} 1.0' in only
    assert "bytesin" not in only
