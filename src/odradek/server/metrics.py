"""Prometheus metrics under the names Kafka's JMX exporter gives Kafka's own metrics.

Served on `--metrics-port` (metrics.port) at /metrics. Each broker has its own
registry, so several brokers in one process (odradek.testing) do not collide.
Counters are bumped once per request or topic, never per record; the ones every request
bumps (requests, TotalTimeMs, bytes and messages in and out) are LoopCounter and
LoopHistogram: plain numbers the event loop adds to, read by the scrape.

Gauges that read broker state (log sizes, under-replicated partitions, consumer
lag) are set by `refresh`, which the server runs on the event loop every second:
the HTTP server answers scrapes on its own thread and must not walk structures the
loop is changing. What a dashboard queries is listed in the README's "Dashboards"
section; deploy/grafana/odradek.json is that dashboard.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from odradek.coordinator.lag import GroupLag, committed_partitions, consumer_lag

if TYPE_CHECKING:
    from odradek.server.broker import Broker

log = logging.getLogger("odradek.metrics")

# Request latency buckets, 0.5 ms to 10 s: a Produce of a few records sits in the first ones,
# a Fetch parked for fetch.max.wait.ms (500 ms by default) in the 500 ms one.
REQUEST_TIME_BUCKETS_MS = (0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
LIST_OFFSETS_KEY = 2
LIST_OFFSETS_VERSION = 4
LATEST_TIMESTAMP = -1
PEER_TIMEOUT_S = 2.0


# The scrape's thread lets the GIL go every this many samples it renders (ScrapeRegistry).
SCRAPE_SLICE_SAMPLES = 64


class _SlicedSamples:
    """A metric's samples as the exposition iterates them, with the GIL let go every
    SCRAPE_SLICE_SAMPLES (time.sleep(0) drops it, and the loop's thread, waiting, takes it)."""

    __slots__ = ("samples",)

    def __init__(self, samples: Sequence[Sample]) -> None:
        self.samples = samples

    def __iter__(self) -> Iterator[Sample]:
        for i, sample in enumerate(self.samples):
            if i and i % SCRAPE_SLICE_SAMPLES == 0:
                time.sleep(0)
            yield sample

    def __len__(self) -> int:
        return len(self.samples)


class ScrapeRegistry:
    """The broker's registry as the scrape's HTTP thread renders it: the same metrics, each one's
    samples rendered a slice at a time with the GIL let go between slices. Rendering is pure Python
    (~25 us a sample); while a thread runs Python, the loop's thread waits up to the interpreter's
    switch interval (5 ms) for the GIL after every system call it makes (a send, a read, epoll),
    so a scrape of 10,000 topics' series held each loop iteration tens of ms (bench/scrape_loop_lag.py)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for metric in self._registry.collect():
            time.sleep(0)
            metric.samples = _SlicedSamples(metric.samples)  # type: ignore[assignment]  # iterated once
            yield metric

    def restricted_registry(self, names: Iterable[str]) -> ScrapeRegistry:
        """A scrape's `name[]` parameters (prometheus_client's exposition asks for this)."""
        return ScrapeRegistry(self._registry.restricted_registry(names))  # type: ignore[arg-type]


class CounterChild:
    """One labelled counter's value: `inc` is one addition (prometheus_client's takes a lock)."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class LoopCounter(Collector):
    """A labelled counter under prometheus_client's exposition (`<name>_total`, `<name>_created`)
    whose children are bumped by the event loop only, so without the lock prometheus_client's
    Counter takes on every inc: at 1,000 partitions a Produce request carries one partition, and
    the request count and the topic's bytes and messages were three locked adds of each. The
    scrape's thread reads a copy of the children (taken whole under the GIL)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], CounterChild] = {}
        registry.register(self)

    def labels(self, *values: str) -> CounterChild:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = CounterChild()
        return child

    def describe(self) -> Iterable[Metric]:
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in tuple(self._children.items()):
            family.add_metric(values, child.value, created=child.created)
        return [family]


class HistogramChild:
    """One labelled histogram: a count per bucket (not cumulative) and the sum."""

    __slots__ = ("counts", "created", "sum", "upper")

    def __init__(self, upper: tuple[float, ...]) -> None:
        self.upper = upper
        self.counts = [0] * len(upper)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.upper, amount)] += 1  # the first bucket whose le >= amount
        self.sum += amount


class LoopHistogram(Collector):
    """A labelled histogram under prometheus_client's exposition (`_bucket` by `le`, `_count`,
    `_sum`, `_created`), observed by the event loop only (LoopCounter says why)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry,
                 buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.upper = (*sorted(float(b) for b in buckets if b != math.inf), math.inf)
        self._les = [floatToGoString(b) for b in self.upper]  # type: ignore[no-untyped-call]  # "+Inf", "0.5"
        self._children: dict[tuple[str, ...], HistogramChild] = {}
        registry.register(self)

    def labels(self, *values: str) -> HistogramChild:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = HistogramChild(self.upper)
        return child

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in tuple(self._children.items()):
            counts, total = list(child.counts), child.sum
            cumulative, buckets = 0, []
            for le, n in zip(self._les, counts, strict=True):
                cumulative += n
                buckets.append((le, float(cumulative)))
            family.add_metric(values, buckets, total)
            family.samples.append(Sample(f"{self.name}_created", dict(zip(self.labelnames, values, strict=True)),
                                         child.created, None))
        return [family]


class ConsumerLagCollector(Collector):
    """kafka_consumergroup_lag and friends under kafka-exporter's names and labels, from the
    rows the last refresh computed; a group deleted or moved away simply has no series."""

    def __init__(self) -> None:
        self.rows: tuple[GroupLag, ...] = ()

    def collect(self) -> Iterable[Metric]:
        rows = self.rows  # replaced whole by refresh, never mutated: safe from the HTTP thread
        labels = ["consumergroup", "topic", "partition"]
        lag = GaugeMetricFamily("kafka_consumergroup_lag",
                                "Committed offset's distance to the high watermark, per group and partition",
                                labels=labels)
        current = GaugeMetricFamily("kafka_consumergroup_current_offset",
                                    "Committed offset per group and partition", labels=labels)
        lag_sum = GaugeMetricFamily("kafka_consumergroup_lag_sum", "Lag of a group over a topic's partitions",
                                    labels=["consumergroup", "topic"])
        sums: dict[tuple[str, str], int] = {}
        for row in rows:
            values = [row.group_id, row.topic, str(row.partition)]
            lag.add_metric(values, row.lag)
            current.add_metric(values, row.committed)
            sums[(row.group_id, row.topic)] = sums.get((row.group_id, row.topic), 0) + row.lag
        for (group_id, topic), total in sorted(sums.items()):
            lag_sum.add_metric([group_id, topic], total)
        return iter((lag, current, lag_sum))


class BrokerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = LoopCounter("kafka_network_requestmetrics_requests", "Requests handled, by API",
                                    ["request"], registry=r)
        # Kafka's RequestMetrics TotalTimeMs: arrival of the request to its response, parked time
        # included. A histogram, so dashboards can take percentiles (histogram_quantile over
        # _bucket); its _sum and _count are the series the earlier Summary had.
        self.request_time_ms = LoopHistogram("kafka_network_requestmetrics_totaltimems",
                                             "Milliseconds from a request's arrival to its response, by API",
                                             ["request"], registry=r, buckets=REQUEST_TIME_BUCKETS_MS)
        self.bytes_in = LoopCounter("kafka_server_brokertopicmetrics_bytesin", "Record bytes appended",
                                    ["topic"], registry=r)
        self.messages_in = LoopCounter("kafka_server_brokertopicmetrics_messagesin", "Records appended",
                                       ["topic"], registry=r)
        self.bytes_out = LoopCounter("kafka_server_brokertopicmetrics_bytesout", "Record bytes fetched",
                                     ["topic"], registry=r)
        self.failed_produce = LoopCounter("kafka_server_brokertopicmetrics_failedproducerequests",
                                          "Produce partitions answered with an error", ["topic"], registry=r)
        self.log_size = Gauge("kafka_log_log_size", "Bytes on disk per partition", ["topic", "partition"],
                              registry=r)
        self.log_end_offset = Gauge("kafka_log_log_logendoffset", "Log end offset per partition",
                                    ["topic", "partition"], registry=r)
        self.partition_count = Gauge("kafka_server_replicamanager_partitioncount", "Partitions on this broker",
                                     registry=r)
        # Kafka's ReplicaManager: partitions this broker leads, and those of them whose ISR is
        # smaller than their assignment; ISR changes made as their leader
        self.leader_count = Gauge("kafka_server_replicamanager_leadercount", "Partitions this broker leads",
                                  registry=r)
        self.under_replicated = Gauge("kafka_server_replicamanager_underreplicatedpartitions",
                                      "Partitions led here whose ISR is smaller than their replica set",
                                      registry=r)
        self.isr_shrinks = Counter("kafka_server_replicamanager_isrshrinks",
                                   "ISR shrinks of partitions led here", registry=r)
        self.isr_expands = Counter("kafka_server_replicamanager_isrexpands",
                                   "ISR expansions of partitions led here", registry=r)
        # Kafka's KafkaController gauges: 1 on the active controller; offline partitions (no live
        # leader) counted by the active controller only, 0 elsewhere, as Kafka does
        self.active_controller = Gauge("kafka_controller_kafkacontroller_activecontrollercount",
                                       "1 when this broker is the active controller", registry=r)
        self.offline_partitions = Gauge("kafka_controller_kafkacontroller_offlinepartitionscount",
                                        "Partitions without a live leader (on the active controller)",
                                        registry=r)
        # Kafka's ControllerStats ControllerChangeRateAndTimeMs: controller elections this broker saw
        self.controller_changes = Counter("kafka_controller_controllerstats_controllerchangerateandtimems",
                                          "Changes of the active controller seen by this broker", registry=r)
        self._controller_changes_seen = 0
        # Kafka's socket-server metrics: open connections, and the ones refused by the limits
        self.connection_count = Gauge("kafka_server_socket_server_metrics_connection_count",
                                      "Open client connections", registry=r)
        self.connections_refused = Gauge("odradek_connections_refused",
                                         "Connections refused by max.connections(.per.ip) since start",
                                         registry=r)
        # odradek's own: one event loop serves every connection, so its lateness is every request's
        self.loop_lag_ms = Histogram("odradek_event_loop_lag_ms",
                                     "How late the event loop woke a 20 ms timer, in milliseconds",
                                     buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000), registry=r)
        self.consumer_lag = ConsumerLagCollector()
        r.register(self.consumer_lag)
        # cluster mode: high watermarks of partitions without a replica here, from their leaders
        self._remote_ends: dict[tuple[str, int], int] = {}
        self._remote_task: asyncio.Task[None] | None = None

    def refresh(self, broker: Broker) -> None:
        """Gauges read from the logs when scraped is too late; the server refreshes them periodically."""
        logs = broker.logs.logs()
        self.partition_count.set(len(logs))
        for plog in logs:
            labels = (plog.topic, str(plog.partition))
            self.log_size.labels(*labels).set(plog.size_bytes)
            self.log_end_offset.labels(*labels).set(plog.log_end_offset)
        replicas = getattr(broker, "replicas", None)
        if replicas is None:  # single node: it leads everything, alone, and is its own controller
            self.leader_count.set(len(logs))
            self.active_controller.set(1)
        else:
            self._refresh_cluster(broker, replicas)
        if broker.coordinator is not None:
            self.consumer_lag.rows = tuple(consumer_lag(broker.coordinator, self._remote_ends))
            self._bring_remote_ends(broker)

    def _refresh_cluster(self, broker: Any, replicas: Any) -> None:
        leaders = list(replicas.leaders.values())
        self.leader_count.set(len(leaders))
        self.under_replicated.set(sum(1 for ls in leaders if len(ls.state.isr) < len(ls.replicas)))
        active = bool(broker.controller.active)
        self.active_controller.set(1 if active else 0)
        self.offline_partitions.set(_offline_partitions(broker) if active else 0)
        seen = broker.store.controller_changes
        if seen > self._controller_changes_seen:
            self.controller_changes.inc(seen - self._controller_changes_seen)
            self._controller_changes_seen = seen

    def _bring_remote_ends(self, broker: Broker) -> None:
        """Cluster mode: ask the leaders of committed partitions this broker holds no replica of
        for their latest offsets, in the background; the next refresh uses the answers."""
        if getattr(broker, "call_broker", None) is None or (self._remote_task and not self._remote_task.done()):
            return
        wanted = {(t, p) for _, t, p, _ in committed_partitions(broker.coordinator)
                  if broker.partition_log(t, p) is None}
        if not wanted:
            self._remote_ends = {}
            return
        self._remote_task = asyncio.get_running_loop().create_task(self._ask_leaders(broker, wanted))

    async def _ask_leaders(self, broker: Any, wanted: set[tuple[str, int]]) -> None:
        by_leader: dict[int, dict[str, list[int]]] = {}
        for t, p in wanted:
            leader = broker.leader_of(t, p)
            if leader >= 0:
                by_leader.setdefault(leader, {}).setdefault(t, []).append(p)
        ends: dict[tuple[str, int], int] = {}
        for leader, topics in by_leader.items():
            body = {"replica_id": -1, "isolation_level": 0, "topics": [
                {"name": t, "partitions": [{"partition_index": p, "current_leader_epoch": -1,
                                            "timestamp": LATEST_TIMESTAMP} for p in ps]}
                for t, ps in topics.items()]}
            try:
                resp = await broker.call_broker(leader, LIST_OFFSETS_KEY, LIST_OFFSETS_VERSION, body, PEER_TIMEOUT_S)
            except OSError as exc:  # the leader is away: its partitions keep no lag series until it answers
                log.debug("consumer lag: no latest offsets from broker %d: %s", leader, exc)
                continue
            ends.update(_latest_offsets(resp))
        self._remote_ends = ends

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        start_http_server(port, addr=host, registry=ScrapeRegistry(self.registry))


def _latest_offsets(resp: Any) -> Iterator[tuple[tuple[str, int], int]]:
    for topic in resp.topics:
        for p in topic.partitions:
            if p.error_code == 0 and p.offset >= 0:
                yield (topic.name, p.partition_index), p.offset


def _offline_partitions(broker: Any) -> int:
    """Kafka's OfflinePartitionsCount: partitions whose leader is not a live broker."""
    states, live = broker.store.seen.states, broker.nodes
    count = 0
    for name, meta in broker.topics().items():
        for p in range(meta.partitions):
            state = states.get((name, p))
            if state is None or state.leader not in live:
                count += 1
    return count
