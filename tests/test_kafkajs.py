"""kafkajs, a Kafka client written in JavaScript from the protocol up (no librdkafka), against
a real `odradek serve`: admin, keyed produce with headers and gzip, a consumer group with
committed offsets, and transactions read with read_committed and read_uncommitted.

The node script is tests/kafkajs/roundtrip.js; `./dev test` installs kafkajs there from
package-lock.json.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from conftest import BrokerProcess, unique

HERE = Path(__file__).with_name("kafkajs")
ENV = {"ODRADEK_GROUP_INITIAL_REBALANCE_DELAY_MS": "0", "ODRADEK_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "3",
       "ODRADEK_OFFSETS_TOPIC_NUM_PARTITIONS": "3"}
KEYS = ["alice", "bob", "carol", "dave"]
PER_KEY = 25


def run_kafkajs(bootstrap: str, prefix: str) -> dict[str, Any]:
    node = shutil.which("node")
    assert node is not None, "node is not installed (./dev test installs nodejs)"
    assert (HERE / "node_modules" / "kafkajs").is_dir(), "kafkajs is not installed (./dev test runs npm ci)"
    done = subprocess.run([node, "roundtrip.js", bootstrap, prefix], cwd=HERE, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_kafkajs_produces_consumes_commits_and_runs_transactions(tmp_path: Path) -> None:
    b = BrokerProcess(tmp_path / "data", env=ENV).start()
    try:
        prefix = unique("kjs")
        out = run_kafkajs(b.bootstrap, prefix)

        assert out["created"] is True and out["partitions"] == 3
        assert all(s["error"] == 0 for s in out["sent"])
        consumed = out["consumed"]
        assert len(consumed) == len(KEYS) * PER_KEY
        by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for m in consumed:
            by_key[m["key"]].append(m)
        for key in KEYS:
            msgs = by_key[key]
            assert len({m["partition"] for m in msgs}) == 1, f"{key} was spread over partitions"
            assert [m["value"] for m in msgs] == [f"{key}-{i}" for i in range(PER_KEY)]  # order per partition
            assert [m["headers"] for m in msgs] == [{"source": "kafkajs", "seq": str(i)} for i in range(PER_KEY)]
            assert all(m["timestamp"] >= out["before"] for m in msgs)
        per_partition: dict[int, list[int]] = defaultdict(list)
        for m in consumed:
            per_partition[m["partition"]].append(m["offset"])
        for offsets in per_partition.values():
            assert offsets == list(range(len(offsets)))  # offsets from 0, no gaps
        # the group committed the end of every partition it read
        assert {c["partition"]: c["offset"] for c in out["committed"]} == \
            {p: len(offsets) for p, offsets in per_partition.items()}
        assert f"{prefix}-group" in out["groups"]

        assert sorted(out["readCommitted"]) == ["committed-0", "committed-1", "committed-2", "committed-last"]
        assert sorted(out["readUncommitted"]) == sorted(
            ["committed-0", "committed-1", "committed-2", "committed-last", "aborted-0", "aborted-1", "aborted-2"])

        # what kafkajs wrote (gzip batches among them) reads back with librdkafka, headers and all
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": unique("rd"), "enable.auto.commit": False})
        c.assign([TopicPartition(f"{prefix}-plain", p, 0) for p in range(3)])
        seen: list[tuple[str, str, dict[str, str]]] = []
        try:
            while len(seen) < len(consumed):
                msgs = c.consume(100, 10)
                assert msgs, f"librdkafka read {len(seen)} of {len(consumed)} records"
                seen += [(m.key().decode(), m.value().decode(), {k: v.decode() for k, v in m.headers() or []})
                         for m in msgs if m.error() is None]
        finally:
            c.close()
        assert sorted(seen) == sorted((m["key"], m["value"], m["headers"]) for m in consumed)
    finally:
        b.stop()
