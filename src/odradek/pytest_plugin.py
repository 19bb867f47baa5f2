"""pytest plugin (entry point `pytest11`): a Kafka broker for your tests.

It lives outside odradek.testing so that loading it imports nothing heavy: the broker
(and kio, which registers Hypothesis strategies when it is imported) load with the
first fixture that needs them, after every plugin is in place.

Fixtures:
  kafka_broker     one embedded odradek broker for the whole session (None with --kafka-bootstrap)
  kafka_bootstrap  its "host:port" (or the --kafka-bootstrap address)
  kafka_topic      a fresh topic per test; partitions from @pytest.mark.partitions(N)
                   or indirect parametrization (default 1)
Option:
  --kafka-bootstrap HOST:PORT   run the same tests against an external Kafka instead
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

_counter = itertools.count()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("odradek", "Kafka broker fixtures (odradek)")
    group.addoption("--kafka-bootstrap", default=None, metavar="HOST:PORT",
                    help="use this Kafka cluster instead of starting an embedded odradek broker")
    group.addoption("--kafka-storage", default="memory", choices=("memory", "file"),
                    help="storage of the embedded broker (default: memory)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "partitions(n): number of partitions of the kafka_topic fixture")


@pytest.fixture(scope="session")
def kafka_broker(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.config.getoption("--kafka-bootstrap"):
        yield None
        return
    from odradek.testing import Broker

    with Broker(storage=request.config.getoption("--kafka-storage")) as broker:
        yield broker


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest, kafka_broker: Any) -> str:
    external = request.config.getoption("--kafka-bootstrap")
    return str(external) if external else str(kafka_broker.bootstrap_servers)


@pytest.fixture
def kafka_topic(request: pytest.FixtureRequest, kafka_bootstrap: str, kafka_broker: Any) -> str:
    marker = request.node.get_closest_marker("partitions")
    partitions = int(getattr(request, "param", marker.args[0] if marker else 1))
    name = f"test-{request.node.name[:60]}-{next(_counter)}-{uuid.uuid4().hex[:6]}"
    name = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    if kafka_broker is not None:
        kafka_broker.create_topic(name, partitions=partitions)
    else:
        # confluent_kafka.admin re-exports NewTopic without __all__, so strict mypy calls it private
        from confluent_kafka.admin import (  # type: ignore[attr-defined]
            AdminClient,
            NewTopic,
        )

        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
    return name
