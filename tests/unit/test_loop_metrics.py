"""LoopCounter and LoopHistogram (server/metrics.py) expose what prometheus_client's own Counter and
Histogram expose for the same observations: the series a dashboard queries (deploy/grafana) keep
their names, labels, bucket bounds and values."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from odradek.server.metrics import REQUEST_TIME_BUCKETS_MS, LoopCounter, LoopHistogram


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
