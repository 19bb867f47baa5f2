"""`odradek cluster up|info|down`: a local ZooKeeper plus brokers, started and stopped by pid."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from odradek.cli.cluster_up import cluster_app, free_port


def three_free_ports() -> int:
    """A port p with p, p+1 and p+2 free (`cluster up --port p` puts broker i on p+i)."""
    import socket

    for _ in range(100):
        first = free_port()
        try:
            socks = [socket.create_server(("127.0.0.1", first + i)) for i in range(3)]
        except OSError:
            continue
        for s in socks:
            s.close()
        return first
    raise RuntimeError("no three consecutive free ports")

pytestmark = pytest.mark.timeout(300)  # a bound on a hang; a loaded machine makes a passing run slow


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie child of this process counts as gone
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done != pid
    except ChildProcessError:
        return True


def test_cluster_up_info_down(tmp_path: Path) -> None:
    runner = CliRunner()
    state = tmp_path / "odradek-cluster"
    zk_port, first = free_port(), three_free_ports()
    ports = [first, first + 1, first + 2]
    result = runner.invoke(cluster_app, ["up", "--brokers", "3", "--dir", str(state),
                                         "--zookeeper-port", str(zk_port), "--port", str(first)],
                           env={"ODRADEK_ZOOKEEPER_SESSION_TIMEOUT_MS": "2000"})
    recorded = json.loads((state / "cluster.json").read_text()) if (state / "cluster.json").exists() else {}
    pids = dict(recorded.get("pids", {}))
    try:
        assert result.exit_code == 0, result.output
        assert ",".join(f"127.0.0.1:{p}" for p in ports) in result.output
        assert sorted(pids) == ["broker-0", "broker-1", "broker-2", "zookeeper"]
        assert all(_alive(pid) for pid in pids.values())
        again = runner.invoke(cluster_app, ["up", "--dir", str(state)])
        assert again.exit_code == 1 and "already running" in again.output

        info = runner.invoke(cluster_app, ["info", "--dir", str(state)])
        assert info.exit_code == 0, info.output
        assert "controller: broker" in info.output
        for p in ports:
            assert str(p) in info.output

        down = runner.invoke(cluster_app, ["down", "--dir", str(state)])
        assert down.exit_code == 0, down.output
        assert not any(_alive(pid) for pid in pids.values())
        assert "controlled shutdown" in (state / "broker-0.log").read_text()
    finally:
        for pid in pids.values():
            if _alive(pid):
                os.kill(pid, 9)


def test_cluster_down_without_cluster_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(cluster_app, ["down", "--dir", str(tmp_path / "nothing")])
    assert result.exit_code == 1
    assert "no cluster recorded" in result.output
