"""The `odradek` command end to end against a running broker."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from conftest import ROOT, BrokerProcess, free_port, unique


def odradek(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "odradek", *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, check=False)  # callers assert on the exit code


def ok(*args: str, stdin: str | None = None) -> str:
    out = odradek(*args, stdin=stdin)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    return out.stdout


def one_sentence_error(out: subprocess.CompletedProcess[str], contains: str) -> None:
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert contains in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_topic_lifecycle(broker: BrokerProcess) -> None:
    b = ["-b", broker.bootstrap]
    name = unique("cli")
    assert "created topic" in ok("topic", "create", name, "-p", "3", "-c", "retention.ms=3600000", *b)
    assert name in ok("topic", "list", *b)
    described = ok("topic", "describe", name, *b)
    assert "retention.ms" in described and "3600000" in described and "topic" in described
    assert described.count("│ 0      │ 0        │ 0   │") == 3, described  # leader, replicas, isr per partition
    ok("topic", "alter-config", name, "--set", "segment.bytes=1048576", "--delete", "retention.ms", *b)
    described = ok("topic", "describe", name, *b)
    assert "1048576" in described and "3600000" not in described
    one_sentence_error(odradek("topic", "create", name, *b), "already exists")
    ok("topic", "delete", name, *b)
    assert name not in ok("topic", "list", *b)
    one_sentence_error(odradek("topic", "describe", name, *b), "does not exist")


def test_produce_and_consume_with_keys_headers_and_formats(broker: BrokerProcess) -> None:
    b = ["-b", broker.bootstrap]
    name = unique("io")
    ok("topic", "create", name, "-p", "2", *b)
    lines = "".join(f"user{i % 3}:event {i}\n" for i in range(12))
    out = odradek("produce", name, "--key-separator", ":", "--header", "src=test", "--compression", "lz4",
                  *b, stdin=lines)
    assert out.returncode == 0 and "delivered 12" in out.stderr, out.stderr
    got = ok("consume", name, "--from-beginning", "-n", "12", "--format", "%p|%o|%k=%v|%h\\n", *b)
    rows = got.splitlines()
    assert len(rows) == 12
    by_key: dict[str, set[str]] = {}
    offsets: dict[str, list[int]] = {}
    values: set[str] = set()
    for row in rows:
        part, offset, kv, header = row.split("|")
        key, value = kv.split("=", 1)
        assert header == "src=test"
        assert key == f"user{int(value.removeprefix('event ')) % 3}", row  # the key split off its own line
        values.add(value)
        by_key.setdefault(key, set()).add(part)
        offsets.setdefault(part, []).append(int(offset))
    assert values == {f"event {i}" for i in range(12)}
    assert all(len(parts) == 1 for parts in by_key.values()), "a key keeps its partition"
    assert all(got == list(range(len(got))) for got in offsets.values()), offsets
    ok("produce", name, "--partition", "1", *b, stdin="pinned\n")
    # read by count: an idle --timeout of 3 s can end before the first fetch on a loaded machine
    in_one = len(offsets.get("1", [])) + 1
    pinned = ok("consume", name, "--partition", "1", "--offset", "earliest", "-n", str(in_one), "--timeout", "60",
                "-f", "%v\\n", *b)
    assert pinned.splitlines()[-1] == "pinned" and len(pinned.splitlines()) == in_one
    first = ok("consume", name, "--partition", "1", "--offset", "1", "-n", "1", "-f", "%o\\n", *b)
    assert first == "1\n"


def test_consume_with_a_group_commits(broker: BrokerProcess) -> None:
    b = ["-b", broker.bootstrap]
    name = unique("grp")
    ok("produce", name, *b, stdin="".join(f"m{i}\n" for i in range(5)))
    got = ok("consume", name, "--group", "cli-group", "--from-beginning", "-n", "5", *b)
    assert got.split() == [f"m{i}" for i in range(5)]


def test_cluster_info_and_health(broker: BrokerProcess) -> None:
    info = ok("cluster", "info", "-b", broker.bootstrap)
    assert "controller: broker 0" in info and str(broker.port) in info
    assert "is serving" in ok("health", "-b", broker.bootstrap)
    one_sentence_error(odradek("health", "-b", f"127.0.0.1:{free_port()}", "--timeout", "1"), "no answer")


def side_by_side(*calls: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    """Independent `odradek` runs at once: each process's start-up (most of its time) overlaps."""
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda args: odradek(*args, timeout=180), calls))


def test_mistakes_are_one_sentence(broker: BrokerProcess) -> None:
    closed = f"127.0.0.1:{free_port()}"
    b = ("-b", broker.bootstrap)
    unreachable, novalue, absent, bad_config = side_by_side(
        ("topic", "list", "-b", closed), ("topic", "create", "x", "-c", "novalue", *b),
        ("consume", unique("absent"), *b), ("topic", "create", unique("c"), "-c", "retention.ms=soon", *b))
    one_sentence_error(unreachable, "cannot reach")
    one_sentence_error(novalue, "key=value")
    one_sentence_error(absent, "does not exist")
    one_sentence_error(bad_config, "INVALID_CONFIG")
    one_sentence_error(odradek("produce", "t", "--compression", "brotli", *b, stdin=""), "--compression")


def test_every_command_has_working_help() -> None:
    commands = (("serve",), ("topic", "create"), ("produce",), ("consume",), ("health",), ("demo",),
                ("group", "describe"), ("txn", "list"), ("txn", "describe"), ("cluster", "up"), ("deploy", "gke"))
    for cmd, out in zip(commands, side_by_side(*((*cmd, "--help") for cmd in commands)), strict=True):
        assert out.returncode == 0 and "Traceback" not in out.stderr, (cmd, out.stderr)
