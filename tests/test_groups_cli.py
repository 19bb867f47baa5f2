"""`odradek group ...` end to end: list, describe with lag, reset-offsets, delete."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from conftest import BrokerProcess, module_broker, unique
from typer.testing import CliRunner

from odradek.cli.group import group_app

ENV = {"ODRADEK_GROUP_INITIAL_REBALANCE_DELAY_MS": "0", "ODRADEK_GROUP_MIN_SESSION_TIMEOUT_MS": "500",
       "ODRADEK_OFFSETS_TOPIC_NUM_PARTITIONS": "3"}


cb = module_broker("cb", ENV)


def group_cmd(b: BrokerProcess, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(group_app, ["--bootstrap-server", b.bootstrap, *args], env={"COLUMNS": "250"})
    return result.exit_code, result.output


def consumer(b: BrokerProcess, group: str, topic: str) -> Consumer:
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "session.timeout.ms": 6000})
    c.subscribe([topic])
    return c


def test_group_list_describe_lag_reset_and_delete(cb: BrokerProcess) -> None:
    topic, group = unique("cli"), unique("cligroup")
    admin = AdminClient({"bootstrap.servers": cb.bootstrap})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(15)
    p = Producer({"bootstrap.servers": cb.bootstrap})
    for i in range(100):
        p.produce(topic, value=b"%d" % i, partition=i % 2)
    p.flush(15)

    c = consumer(cb, group, topic)
    got = 0
    deadline = time.monotonic() + 20
    while got < 60 and time.monotonic() < deadline:
        for m in c.consume(60 - got, 0.5):
            if m.error() is None:
                got += 1
                c.commit(message=m, asynchronous=False)
    assert got == 60

    code, out = group_cmd(cb, "list")
    assert code == 0 and group in out and "Stable" in out
    code, out = group_cmd(cb, "describe", group)
    assert code == 0 and "Stable" in out and f"{topic}-0" in out
    assert "total lag 40" in out

    code, out = group_cmd(cb, "reset-offsets", group, "--topic", topic, "--to-earliest")
    assert code == 1 and "active member" in out and "Traceback" not in out
    c.close()

    code, out = group_cmd(cb, "describe", group)
    assert code == 0 and "Empty" in out and "total lag 40" in out
    code, out = group_cmd(cb, "reset-offsets", group, "--topic", topic, "--to-earliest", "--dry-run")
    assert code == 0 and "dry run" in out
    assert "total lag 40" in group_cmd(cb, "describe", group)[1]
    code, out = group_cmd(cb, "reset-offsets", group, "--topic", topic, "--to-earliest")
    assert code == 0
    assert "total lag 100" in group_cmd(cb, "describe", group)[1]
    assert group_cmd(cb, "reset-offsets", group, "--topic", topic, "--to-offset", "45")[0] == 0
    assert "total lag 10" in group_cmd(cb, "describe", group)[1]  # 50 per partition: 5 + 5
    assert group_cmd(cb, "reset-offsets", group, "--topic", topic, "--to-latest")[0] == 0
    assert "total lag 0" in group_cmd(cb, "describe", group)[1]
    assert group_cmd(cb, "reset-offsets", group, "--topic", topic, "--to-datetime", "2000-01-01T00:00:00")[0] == 0
    assert "total lag 100" in group_cmd(cb, "describe", group)[1]

    code, out = group_cmd(cb, "delete", group)
    assert code == 0 and "deleted" in out
    assert group not in group_cmd(cb, "list")[1]
    code, out = group_cmd(cb, "delete", group)
    assert code == 1 and "Traceback" not in out


def test_group_cli_mistakes_are_one_sentence(cb: BrokerProcess) -> None:
    code, out = group_cmd(cb, "reset-offsets", unique("g"), "--topic", "x")
    assert code == 1 and "exactly one" in out
    code, out = group_cmd(cb, "reset-offsets", unique("g"), "--topic", unique("missing"), "--to-latest")
    assert code == 1 and "does not exist" in out
