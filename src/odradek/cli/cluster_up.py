"""`odradek cluster up|down|info`: a local development cluster on 127.0.0.1.

`up` starts a ZooKeeper from Debian's zookeeper package and N `odradek serve`
processes in the background, each with its pid file and log in a state dir
(./odradek-cluster by default); `down` stops exactly those pids, brokers first
(SIGTERM: a controlled shutdown), then ZooKeeper. `info` asks the cluster for
its brokers, controller and partitions.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, TypedDict

import typer

from odradek.cli.common import (
    DEFAULT_BOOTSTRAP,
    Client,
    ClientPropertyOption,
    CommandConfigOption,
    connect,
)

ZK_SERVER = Path("/usr/share/zookeeper/bin/zkServer.sh")
DEFAULT_STATE_DIR = Path("odradek-cluster")

cluster_app = typer.Typer(no_args_is_help=True, help="A local ZooKeeper-coordinated cluster.")


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def start_zookeeper(state_dir: Path, port: int, *, tick_ms: int = 500) -> subprocess.Popen[bytes]:
    """A standalone ZooKeeper (start-foreground execs java, so the pid is ZooKeeper's)."""
    if not ZK_SERVER.exists():
        raise RuntimeError(f"ZooKeeper is not installed ({ZK_SERVER} is missing); apt-get install zookeeper")
    zk_dir = state_dir / "zookeeper"
    (zk_dir / "data").mkdir(parents=True, exist_ok=True)
    cfg = zk_dir / "zoo.cfg"
    cfg.write_text(
        f"tickTime={tick_ms}\ndataDir={zk_dir / 'data'}\nclientPort={port}\nclientPortAddress=127.0.0.1\n"
        "admin.enableServer=false\nminSessionTimeout=1000\nmaxSessionTimeout=60000\n"
        "4lw.commands.whitelist=ruok,srvr\n"
    )
    env = {**os.environ, "ZOOCFGDIR": str(zk_dir), "ZOO_LOG_DIR": str(zk_dir),
           "JVMFLAGS": os.environ.get("ODRADEK_ZK_JVMFLAGS", "-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1")}
    with open(zk_dir / "zookeeper.log", "ab") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([str(ZK_SERVER), "start-foreground", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    wait_for_port(port, proc=proc)
    return proc


def broker_command(broker_id: int, port: int, data_dir: Path, zookeeper: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "odradek", "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir),
            "--zookeeper", zookeeper, "--broker-id", str(broker_id), *extra]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


class ClusterState(TypedDict):
    """cluster.json: what `up` started, for `down` and `info`."""

    zookeeper: str
    pids: dict[str, int]
    bootstrap: list[str]


def _read_state(state_dir: Path) -> ClusterState | None:
    path = state_dir / "cluster.json"
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    if not raw:
        return None
    return ClusterState(zookeeper=str(raw.get("zookeeper", "")),
                        pids={str(name): int(pid) for name, pid in raw.get("pids", {}).items()},
                        bootstrap=[str(address) for address in raw.get("bootstrap", [])])


@cluster_app.command("up")
def up(
    brokers: Annotated[int, typer.Option("--brokers", min=1, max=9, help="Number of brokers.")] = 3,
    state_dir: Annotated[Path, typer.Option("--dir", help="Pid files, logs and data.")] = DEFAULT_STATE_DIR,
    zookeeper_port: Annotated[int, typer.Option("--zookeeper-port", help="ZooKeeper client port.")] = 2181,
    first_port: Annotated[int, typer.Option("--port", help="Port of broker 0; broker i listens on port + i.")] = 9092,
) -> None:
    """Start ZooKeeper and the brokers in the background; on a running cluster, add brokers up to --brokers."""
    state_dir = state_dir.resolve()
    existing = _read_state(state_dir)
    if existing and any(_alive(pid) for pid in existing["pids"].values()):
        _grow(state_dir, existing, brokers, first_port)
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        zk = start_zookeeper(state_dir, zookeeper_port)
    except (RuntimeError, TimeoutError) as exc:
        typer.echo(f"cannot start ZooKeeper: {exc} (see {state_dir / 'zookeeper' / 'zookeeper.log'})")
        raise typer.Exit(1) from None
    pids: dict[str, int] = {"zookeeper": zk.pid}
    (state_dir / "zookeeper.pid").write_text(f"{zk.pid}\n")
    connect = f"127.0.0.1:{zookeeper_port}/odradek"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = []
    for i in range(brokers):
        port = first_port + i
        proc = _start_broker(state_dir, i, port, connect, env)
        pids[f"broker-{i}"] = proc.pid
        procs.append((i, port, proc))
    (state_dir / "cluster.json").write_text(json.dumps({"zookeeper": connect, "pids": pids,
                                                        "bootstrap": [f"127.0.0.1:{p}" for _, p, _ in procs]}))
    bootstrap = ",".join(f"127.0.0.1:{p}" for _, p, _ in procs)
    _wait_started(state_dir, procs, bootstrap, brokers,
                  f"the brokers listen, but not all {brokers} registered with a controller within 30 s "
                  f"(see the logs in {state_dir})")
    typer.echo(f"cluster up: ZooKeeper {connect}, {brokers} broker(s); bootstrap servers {bootstrap}")
    typer.echo(f"state, logs and pids in {state_dir}; stop with `odradek cluster down --dir {state_dir}`")


def _start_broker(state_dir: Path, i: int, port: int, zookeeper: str,
                  env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Broker i in the background on `port`, its output in broker-i.log and its pid in broker-i.pid."""
    with open(state_dir / f"broker-{i}.log", "ab") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(broker_command(i, port, state_dir / f"broker-{i}", zookeeper), stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    (state_dir / f"broker-{i}.pid").write_text(f"{proc.pid}\n")
    return proc


def _wait_started(state_dir: Path, started: list[tuple[int, int, subprocess.Popen[bytes]]], bootstrap: str,
                  brokers: int, unregistered: str) -> None:
    """Exit 1 with a sentence unless each started broker (i, port, process) listens and all
    `brokers` registered with a controller within 30 s (else `unregistered` is the sentence)."""
    for i, port, proc in started:
        try:
            wait_for_port(port, proc=proc)
        except (RuntimeError, TimeoutError) as exc:
            typer.echo(f"broker {i} did not start: {exc} (see {state_dir / f'broker-{i}.log'})")
            raise typer.Exit(1) from None
    if not _wait_registered(bootstrap, brokers, timeout=30.0):
        typer.echo(unregistered)
        raise typer.Exit(1)


def _grow(state_dir: Path, state: ClusterState, brokers: int, first_port: int) -> None:
    """`up --brokers N` on a running cluster: start brokers len..N-1 beside the others (new
    brokers get no partitions by themselves: `odradek cluster rebalance` moves some onto them)."""
    running = sorted(int(name.split("-")[1]) for name in state["pids"] if name.startswith("broker-"))
    if brokers <= len(running):
        typer.echo(f"a cluster from {state_dir} is already running with {len(running)} broker(s); give --brokers "
                   f"N to add brokers, or run `odradek cluster down --dir {state_dir}` first")
        raise typer.Exit(1)
    ports = [int(address.rpartition(":")[2]) for address in state["bootstrap"]]
    base = min(ports) if ports else first_port
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    added = []
    for i in range(len(running), brokers):
        port = base + i
        proc = _start_broker(state_dir, i, port, state["zookeeper"], env)
        state["pids"][f"broker-{i}"] = proc.pid
        state["bootstrap"].append(f"127.0.0.1:{port}")
        added.append((i, port, proc))
    (state_dir / "cluster.json").write_text(json.dumps(state))
    bootstrap = ",".join(state["bootstrap"])
    _wait_started(state_dir, added, bootstrap, brokers,
                  f"the new brokers listen, but not all {brokers} registered within 30 s (see the logs in {state_dir})")
    typer.echo(f"added broker(s) {', '.join(str(i) for i, _, _ in added)}: the cluster has {brokers} broker(s); "
               f"bootstrap servers {bootstrap}")
    typer.echo("they hold no partitions yet: `odradek cluster rebalance` moves some onto them")


def _wait_registered(bootstrap: str, brokers: int, timeout: float) -> bool:
    """Listening is not joined: wait until Metadata shows every broker and a controller."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            known, controller, _ = describe(bootstrap, timeout=2.0)
        except RuntimeError:
            known, controller = [], -1
        if len(known) >= brokers and controller >= 0:
            return True
        time.sleep(0.2)
    return False


@cluster_app.command("down")
def down(
    state_dir: Annotated[Path, typer.Option("--dir", help="The dir given to `cluster up`.")] = DEFAULT_STATE_DIR,
) -> None:
    """Stop the brokers (controlled shutdown), then ZooKeeper: exactly the recorded pids."""
    state_dir = state_dir.resolve()
    state = _read_state(state_dir)
    if state is None:
        typer.echo(f"no cluster recorded in {state_dir}")
        raise typer.Exit(1)
    pids = state["pids"]
    brokers = sorted((name, pid) for name, pid in pids.items() if name != "zookeeper")
    for name, pid in brokers:
        _terminate(name, pid, timeout=15.0)
    if "zookeeper" in pids:
        _terminate("zookeeper", pids["zookeeper"], timeout=10.0)
    (state_dir / "cluster.json").unlink(missing_ok=True)
    for pid_file in state_dir.glob("*.pid"):
        pid_file.unlink(missing_ok=True)
    typer.echo(f"cluster in {state_dir} stopped")


def _terminate(name: str, pid: int, timeout: float) -> None:
    if not _alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = 0 if _alive(pid) else pid
        if done == pid or not _alive(pid):
            return
        time.sleep(0.05)
    typer.echo(f"{name} (pid {pid}) did not stop in {timeout:.0f} s; sending SIGKILL")
    os.kill(pid, signal.SIGKILL)


@cluster_app.command("info")
def info(
    bootstrap: Annotated[str, typer.Option(
        "--bootstrap-server", "-b", help="Any broker (default: the local cluster's).")] = "",
    state_dir: Annotated[Path, typer.Option("--dir", help="The dir given to `cluster up`.")] = DEFAULT_STATE_DIR,
    command_config: Path | None = CommandConfigOption,
    client_property: list[str] | None = ClientPropertyOption,
) -> None:
    """Brokers, the controller, and per partition its leader, replicas and ISR."""
    from rich.console import Console
    from rich.table import Table

    if not bootstrap:
        state = _read_state(state_dir.resolve())
        # the local cluster's brokers, else the embedded default of `odradek serve`
        bootstrap = ",".join(state["bootstrap"]) if state else DEFAULT_BOOTSTRAP
    client = connect(bootstrap, command_config, client_property)
    try:
        brokers, controller, partitions = describe(client.bootstrap, client=client)
    except RuntimeError as exc:
        typer.echo(f"cannot reach {client.bootstrap}: {exc}")
        raise typer.Exit(1) from None
    console = Console()
    console.print(f"controller: broker {controller}")
    bt = Table("broker", "host", "port")
    for node_id, host, port in brokers:
        bt.add_row(str(node_id), host, str(port))
    console.print(bt)
    pt = Table("topic", "partition", "leader", "replicas", "isr", "under-replicated")
    for topic, p, leader, replicas, isr in partitions:
        pt.add_row(topic, str(p), str(leader), ",".join(map(str, replicas)), ",".join(map(str, isr)),
                   "yes" if len(isr) < len(replicas) else "")
    console.print(pt)


def describe(bootstrap: str, timeout: float = 10.0, client: Client | None = None) -> tuple[
        list[tuple[int, str, int]], int, list[tuple[str, int, int, list[int], list[int]]]]:
    """Brokers, controller id, and (topic, partition, leader, replicas, isr) from Metadata."""
    from confluent_kafka import KafkaException

    client = client or Client(bootstrap)
    try:
        md = client.admin().list_topics(timeout=timeout)
    except KafkaException as exc:  # transport failure, timeout
        raise RuntimeError(f"{client.redact(str(exc))}; {client.why_unreachable()}") from None
    brokers = sorted((int(b.id), str(b.host), int(b.port)) for b in md.brokers.values())
    partitions = [
        (str(t.topic), int(p.id), int(p.leader), list(p.replicas), list(p.isrs))
        for t in sorted(md.topics.values(), key=lambda t: str(t.topic))
        for p in sorted(t.partitions.values(), key=lambda p: p.id)
    ]
    return brokers, int(md.controller_id), partitions
