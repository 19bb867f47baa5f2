"""An answered CreateTopics (or DeleteTopics) is on disk: topics.json is written off the event
loop (issue 20), and the answer waits for that write, so a SIGKILL right after it loses nothing,
however many clients created topics at once."""

from __future__ import annotations

import threading

from confluent_kafka import Consumer, Producer  # type: ignore[attr-defined]
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic  # type: ignore[attr-defined]
from conftest import unique


def topics_on(bootstrap: str) -> dict[str, int]:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=15)
    return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}


def test_created_topics_survive_a_sigkill_right_after_the_answer(broker_factory) -> None:  # type: ignore[no-untyped-def]
    b = broker_factory(name="created")
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    names = [unique("answered") for _ in range(5)]
    futures = admin.create_topics([NewTopic(n, 3 + i, 1, config={"retention.ms": str(1000 + i)})
                                   for i, n in enumerate(names)], request_timeout=30)
    for f in futures.values():
        f.result(30)
    b.kill()  # no stop, no flush: whatever the answer promised must already be in the files
    b.start()
    topics = topics_on(b.bootstrap)
    assert {n: topics.get(n) for n in names} == {n: 3 + i for i, n in enumerate(names)}
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    res = ConfigResource("topic", names[-1])
    assert admin.describe_configs([res])[res].result(15)["retention.ms"].value == "1004"

    gone = names[:2]  # one DeleteTopics of two topics
    for f in admin.delete_topics(gone, request_timeout=30).values():
        f.result(30)
    b.kill()
    b.start()
    topics = topics_on(b.bootstrap)
    assert not set(gone) & set(topics)
    assert all(topics.get(n) == 3 + i for i, n in enumerate(names) if n not in gone)


def test_concurrent_create_topics_all_survive_a_sigkill(broker_factory) -> None:  # type: ignore[no-untyped-def]
    b = broker_factory(name="concurrent")
    clients, per_client = 6, 4
    wanted = {unique(f"c{c}t{t}"): 1 + (c + t) % 4 for c in range(clients) for t in range(per_client)}
    names = list(wanted)
    start = threading.Barrier(clients)
    errors: list[BaseException] = []

    def create(c: int) -> None:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        admin.list_topics(timeout=15)  # connected before the barrier: the requests meet at the broker
        start.wait(30)
        mine = names[c * per_client:(c + 1) * per_client]
        try:  # one request a topic, each client's in flight beside the others'
            futures = [admin.create_topics([NewTopic(n, wanted[n], 1)], request_timeout=30)[n] for n in mine]
            for f in futures:
                f.result(30)
        except Exception as exc:  # noqa: BLE001 - handed to the test's thread, which fails with it
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    b.kill()
    b.start()
    topics = topics_on(b.bootstrap)
    assert {n: topics.get(n) for n in names} == wanted


def test_a_topic_auto_created_by_metadata_survives_a_sigkill(broker_factory) -> None:  # type: ignore[no-untyped-def]
    """auto.create.topics.enable: the Metadata answer that names the new topic waits for topics.json,
    so a record delivered to it right after is still readable after a SIGKILL."""
    b = broker_factory(name="autocreated")
    name = unique("auto")
    producer = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "allow.auto.create.topics": True,
                         "message.timeout.ms": 60000, "retries": 1000, "retry.backoff.ms": 200})
    delivered: list[tuple[object, int]] = []
    # a Metadata that auto-creates answers LEADER_NOT_AVAILABLE or UNKNOWN_TOPIC first (as Kafka):
    # librdkafka asks again and retries the record until it lands
    producer.produce(name, b"v", key=b"k", on_delivery=lambda err, msg: delivered.append((err, msg.offset())))
    assert producer.flush(90) == 0
    assert delivered[0][0] is None, delivered
    b.kill()
    b.start()
    assert topics_on(b.bootstrap).get(name) == 1
    consumer = Consumer({"bootstrap.servers": b.bootstrap, "group.id": unique("g"), "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    try:
        consumer.subscribe([name])
        got = None
        for _ in range(60):  # bounded: up to 60 s for the group to form and the record to come
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                got = msg
                break
        assert got is not None and got.value() == b"v" and got.offset() == delivered[0][1]
    finally:
        consumer.close()
