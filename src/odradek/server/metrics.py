"""Prometheus metrics under the names Kafka's JMX exporter gives Kafka's own metrics.

Served on `--metrics-port` (metrics.port) at /metrics. Each broker has its own
registry, so several brokers in one process (odradek.testing) do not collide.
Counters are bumped once per request or partition, never per record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    start_http_server,
)

if TYPE_CHECKING:
    from odradek.server.broker import Broker


class BrokerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("kafka_network_requestmetrics_requests", "Requests handled, by API",
                                ["request"], registry=r)
        # Kafka's RequestMetrics TotalTimeMs: arrival of the request to its response, parked time included
        self.request_time_ms = Summary("kafka_network_requestmetrics_totaltimems",
                                       "Milliseconds from a request's arrival to its response, by API",
                                       ["request"], registry=r)
        self.bytes_in = Counter("kafka_server_brokertopicmetrics_bytesin", "Record bytes appended",
                                ["topic"], registry=r)
        self.messages_in = Counter("kafka_server_brokertopicmetrics_messagesin", "Records appended",
                                   ["topic"], registry=r)
        self.bytes_out = Counter("kafka_server_brokertopicmetrics_bytesout", "Record bytes fetched",
                                 ["topic"], registry=r)
        self.failed_produce = Counter("kafka_server_brokertopicmetrics_failedproducerequests",
                                      "Produce partitions answered with an error", ["topic"], registry=r)
        self.log_size = Gauge("kafka_log_log_size", "Bytes on disk per partition", ["topic", "partition"],
                              registry=r)
        self.log_end_offset = Gauge("kafka_log_log_logendoffset", "Log end offset per partition",
                                    ["topic", "partition"], registry=r)
        self.partition_count = Gauge("kafka_server_replicamanager_partitioncount", "Partitions on this broker",
                                     registry=r)
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

    def refresh(self, broker: Broker) -> None:
        """Gauges read from the logs when scraped is too late; the server refreshes them periodically."""
        logs = broker.logs.logs()
        self.partition_count.set(len(logs))
        for plog in logs:
            labels = (plog.topic, str(plog.partition))
            self.log_size.labels(*labels).set(plog.size_bytes)
            self.log_end_offset.labels(*labels).set(plog.log_end_offset)

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        start_http_server(port, addr=host, registry=self.registry)
