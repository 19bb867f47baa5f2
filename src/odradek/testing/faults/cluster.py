"""A 3-server ZooKeeper ensemble and N brokers, each in its own network namespace,
each broker's data dir on a size-limited tmpfs of its own (a disk that can fill
up or turn read-only).

    with FaultCluster(Path(tmp), brokers=3) as c:
        c.start()
        ... c.bootstrap, c.kill_broker(0), c.net.cut([...], [...]) ...
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Self

from odradek.testing.faults.net import Net, run

ZK_SERVER = Path("/usr/share/zookeeper/bin/zkServer.sh")
BROKER_PORT = 9092
ZK_PORT = 2181

SESSION_TIMEOUT_MS = 4000
CHROOT = "/odradek"
BROKER_ENV = {
    "PYTHONUNBUFFERED": "1",
    "ODRADEK_ZOOKEEPER_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
    "ODRADEK_REPLICA_LAG_TIME_MAX_MS": "3000",
    "ODRADEK_REPLICA_FETCH_WAIT_MAX_MS": "200",
    "ODRADEK_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    "ODRADEK_OFFSETS_TOPIC_NUM_PARTITIONS": "3",
    "ODRADEK_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "3",
}


def zk_session_password(session_id: int) -> bytes:
    """ZooKeeperServer.generatePasswd: 16 bytes of java.util.Random(session id ^ 0xB3415C00)."""
    mult, mask = 0x5DEECE66D, (1 << 48) - 1
    seed = ((session_id ^ 0xB3415C00) ^ mult) & mask
    out = bytearray()
    while len(out) < 16:  # Random.nextBytes: each nextInt() gives 4 bytes, low byte first
        seed = (seed * mult + 0xB) & mask
        rnd = seed >> 16
        for _ in range(4):
            out.append(rnd & 0xFF)
            rnd >>= 8
    return bytes(out)


def wait_port(host: str, port: int, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with code {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


def reap(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGCONT then SIGKILL by pid (a stopped process dies too), and wait."""
    if proc is None:
        return
    if proc.poll() is None:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                break
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        pass


class Process:
    """One server in a namespace: start, SIGKILL, SIGSTOP/SIGCONT, restart."""

    def __init__(self, name: str, ip: str, port: int, log_path: Path) -> None:
        self.name = name
        self.ip = ip
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    def command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def start(self, wait: bool = True) -> None:
        cmd, env = self.command()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
                                         start_new_session=True)
        self.paused = False
        if wait:
            wait_port(self.ip, self.port, proc=self.proc)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        reap(self.proc)
        self.paused = False

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False


class ZkServer(Process):
    def __init__(self, myid: int, ip: str, ensemble: list[str], state: Path, prefix: list[str]) -> None:
        self.myid = myid
        self.dir = state / f"zk-{myid}"
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        (self.dir / "data" / "myid").write_text(f"{myid}\n")
        servers = "".join(f"server.{i + 1}={h}:2888:3888\n" for i, h in enumerate(ensemble))
        (self.dir / "zoo.cfg").write_text(
            f"tickTime=500\ninitLimit=20\nsyncLimit=6\ndataDir={self.dir / 'data'}\nclientPort={ZK_PORT}\n"
            f"clientPortAddress={ip}\nadmin.enableServer=false\nminSessionTimeout=1000\nmaxSessionTimeout=30000\n"
            f"4lw.commands.whitelist=ruok,srvr\n{servers}")
        self.prefix = prefix
        super().__init__(f"zk{myid}", ip, ZK_PORT, self.dir / "zookeeper.log")

    def command(self) -> tuple[list[str], dict[str, str]]:
        env = {"ZOOCFGDIR": str(self.dir), "ZOO_LOG_DIR": str(self.dir),
               "JVMFLAGS": "-Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1"}
        return [*self.prefix, str(ZK_SERVER), "start-foreground", str(self.dir / "zoo.cfg")], env


class BrokerProcess(Process):
    def __init__(self, broker_id: int, ip: str, zookeeper: str, data_dir: Path, prefix: list[str],
                 env: dict[str, str]) -> None:
        self.broker_id = broker_id
        self.data_dir = data_dir
        self.zookeeper = zookeeper
        self.prefix = prefix
        self.env = env
        super().__init__(f"b{broker_id}", ip, BROKER_PORT, data_dir.parent / f"broker-{broker_id}.log")

    def command(self) -> tuple[list[str], dict[str, str]]:
        exe = str(Path(sys.executable).with_name("odradek"))
        return [*self.prefix, exe, "serve", "--listen", f"{self.ip}:{BROKER_PORT}", "--data-dir", str(self.data_dir),
                "--zookeeper", self.zookeeper, "--broker-id", str(self.broker_id)], self.env

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class FaultCluster:
    """Everything under `state`; `close()` (or the with block) removes every namespace,
    mount and process it made, also after a failure."""

    def __init__(self, state: Path, brokers: int = 3, disk_mb: int = 64, env: dict[str, str] | None = None) -> None:
        self.state = state
        self.net = Net()
        self.n_brokers = brokers
        self.disk_mb = disk_mb
        self.env = {**BROKER_ENV, **(env or {})}
        self.zks: list[ZkServer] = []
        self.brokers: list[BrokerProcess] = []
        self.mounts: list[Path] = []
        self.clients: list[str] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def env_session_timeout_s(self) -> float:
        return int(self.env["ODRADEK_ZOOKEEPER_SESSION_TIMEOUT_MS"]) / 1000

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{b.ip}:{BROKER_PORT}" for b in self.brokers)

    @property
    def zk_connect(self) -> str:
        return ",".join(f"{z.ip}:{ZK_PORT}" for z in self.zks)

    def start(self, clients: int = 3) -> None:
        self.net.create()
        zk_ips = [self.net.add(f"z{i + 1}", 11 + i).ip for i in range(3)]
        for i in range(3):
            self.zks.append(ZkServer(i + 1, zk_ips[i], zk_ips, self.state, self.net.prefix(f"z{i + 1}")))
        for z in self.zks:
            z.start(wait=False)
        for z in self.zks:
            wait_port(z.ip, z.port, proc=z.proc)
        self.wait_zk_quorum()
        chroot = CHROOT
        for i in range(self.n_brokers):
            node = self.net.add(f"b{i}", 21 + i)
            data = self.state / f"broker-{i}" / "data"
            data.mkdir(parents=True, exist_ok=True)
            run("mount", "-t", "tmpfs", "-o", f"size={self.disk_mb}m", "tmpfs", str(data))
            self.mounts.append(data)
            self.brokers.append(BrokerProcess(i, node.ip, self.zk_connect + chroot, data, self.net.prefix(f"b{i}"),
                                              self.env))
        for i in range(clients):
            self.clients.append(self.net.add(f"c{i}", 31 + i).name)
        for b in self.brokers:
            b.start(wait=False)
        for b in self.brokers:
            wait_port(b.ip, b.port, proc=b.proc, timeout=120)
        self.wait_registered()

    def wait_registered(self, timeout: float = 120.0) -> None:
        """Until every broker's metadata names all the brokers: an internal topic created by a
        broker that knows fewer (a first FindCoordinator on a loaded machine) is given only the
        replicas of the brokers it knows, and a fault test expects three."""
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        for b in self.brokers:
            while True:
                with contextlib.suppress(Exception):  # the broker does not answer yet
                    md = AdminClient({"bootstrap.servers": f"{b.ip}:{b.port}"}).list_topics(timeout=5)
                    if len(md.brokers) == len(self.brokers):
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"broker {b.broker_id} never saw all {len(self.brokers)} brokers")
                time.sleep(0.3)

    def zk_ok(self, z: ZkServer) -> str:
        try:
            with socket.create_connection((z.ip, z.port), timeout=2) as s:
                s.sendall(b"srvr")
                s.settimeout(2)
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
            text = data.decode(errors="replace")
            for line in text.splitlines():
                if line.startswith("Mode:"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return ""

    def wait_zk_quorum(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            modes = [self.zk_ok(z) for z in self.zks if z.running and not z.paused]
            if "leader" in modes and sum(m in ("leader", "follower") for m in modes) >= 2:
                return
            time.sleep(0.3)
        raise TimeoutError("the ZooKeeper ensemble formed no quorum")

    # -- ZooKeeper sessions ----------------------------------------------------

    def zk_client(self, timeout: float = 15.0) -> Any:
        """A kazoo client of the ensemble under the brokers' chroot (the caller stops it)."""
        from kazoo.client import KazooClient  # type: ignore[import-untyped]

        zk = KazooClient(hosts=self.zk_connect + CHROOT, timeout=timeout)
        zk.start(timeout=timeout)
        return zk

    def broker_session(self, broker_id: int) -> int:
        """The id of the ZooKeeper session that holds /brokers/ids/<id> (0: not registered)."""
        from kazoo.exceptions import NoNodeError  # type: ignore[import-untyped]

        zk = self.zk_client()
        try:
            return int(zk.get(f"/brokers/ids/{broker_id}")[1].ephemeralOwner)
        except NoNodeError:
            return 0
        finally:
            zk.stop()
            zk.close()

    def expire_session(self, session_id: int) -> None:
        """End a session at ZooKeeper while its owner stays connected, as its expiry would: a
        second client takes the session over (ZooKeeper closes the owner's connection) and closes
        it (ZooKeeper deletes its ephemeral nodes); the owner's reconnection is told SESSION_EXPIRED.
        The session's password is ZooKeeper's own derivation from its id (Kazoo's and ZooKeeper's
        test harnesses do the same with the owner's client object, which a broker process keeps)."""
        from kazoo.client import KazooClient

        zk = KazooClient(hosts=self.zk_connect, client_id=(session_id, zk_session_password(session_id)),
                         timeout=self.env_session_timeout_s, connection_retry={"max_tries": 3})
        zk.start(timeout=15)
        try:
            if zk.client_id is None or zk.client_id[0] != session_id:
                raise RuntimeError(f"ZooKeeper did not give session 0x{session_id:x} to the expirer")
        finally:
            zk.stop()  # closeSession: the session ends, its ephemeral nodes go
            zk.close()

    def broker_node(self, broker_id: int) -> str:
        return f"b{broker_id}"

    def others(self, name: str) -> list[str]:
        return [n for n in self.net.nodes if n != name and not n.startswith("c")]

    def close(self) -> None:
        for p in [*self.brokers, *self.zks]:
            try:
                p.kill()
            except OSError as exc:  # pragma: no cover - keep removing the rest
                print(f"cannot kill {p.name}: {exc!r}")
        for m in self.mounts:
            run("mount", "-o", "remount,rw", str(m), check=False)
            run("umount", "-l", str(m), check=False)
        self.mounts.clear()
        self.net.close()
