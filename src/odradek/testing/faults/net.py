"""Network namespaces on one bridge, with iptables cuts and loss between them.

Every node (a ZooKeeper server, a broker, a client) gets a namespace of its own,
a veth pair whose host end sits on a bridge, and an address in 10.201.N.0/24;
the bridge holds .254 so the test process reaches everyone. A cut is iptables
DROP rules inside the namespaces involved, so a partition is a real one: the
kernel drops the packets, connections hang until their timeouts.

This kernel has no sch_netem (`tc qdisc ... netem` answers "Specified qdisc
kind is unknown" and there is no /lib/modules to load it from), so loss is the
iptables `statistic` match, a slow link is a `tbf` rate limit, and an added delay
is NFQUEUE: iptables rules in the node's namespace queue its packets (both ways) to
a delay line process running in that namespace (odradek.testing.faults.delay),
which holds each for the delay before accepting it.
"""

from __future__ import annotations

import json
import random
import select
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DELAY_LINE = Path(__file__).with_name("delay.py")  # run as a script: it imports nothing of odradek's


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), check=False, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def netns_works() -> str | None:
    """None when `ip netns add` and iptables inside it work here; else why not."""
    name = f"odkprobe{random.randrange(1 << 16):x}"
    try:
        run("ip", "netns", "add", name)
    except (RuntimeError, OSError) as exc:
        return f"ip netns add: {exc}"
    try:
        run("ip", "netns", "exec", name, "iptables", "-S")
    except (RuntimeError, OSError) as exc:
        return f"iptables in a namespace: {exc}"
    finally:
        run("ip", "netns", "del", name, check=False)
    return None


@dataclass
class Node:
    name: str
    ns: str
    ip: str
    veth: str


@dataclass
class Net:
    """A bridge and its namespaces; `close()` removes all of them (idempotent)."""

    tag: str = field(default_factory=lambda: f"{random.randrange(1 << 16):04x}")
    subnet: int = field(default_factory=lambda: random.randrange(1, 250))
    nodes: dict[str, Node] = field(default_factory=dict)
    created: bool = False
    delays: dict[str, subprocess.Popen[str]] = field(default_factory=dict)  # delay lines running, by node
    delay_stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # the last summary of each node's

    @property
    def bridge(self) -> str:
        return f"odkb{self.tag}"

    @property
    def host_ip(self) -> str:
        return f"10.201.{self.subnet}.254"

    def create(self) -> None:
        run("ip", "link", "add", self.bridge, "type", "bridge")
        self.created = True
        run("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")

    def add(self, name: str, host: int) -> Node:
        ns = f"odk{self.tag}{name}"
        veth = f"k{self.tag}{host}"
        ip = f"10.201.{self.subnet}.{host}"
        run("ip", "netns", "add", ns)
        self.nodes[name] = node = Node(name, ns, ip, veth)
        run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        run("ip", "link", "set", veth, "master", self.bridge)
        run("ip", "link", "set", veth, "up")
        self.exec(name, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        self.exec(name, "ip", "link", "set", "eth0", "up")
        self.exec(name, "ip", "link", "set", "lo", "up")
        return node

    def exec(self, name: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.nodes[name].ns, *cmd, check=check)

    def prefix(self, name: str) -> list[str]:
        """The command prefix that runs a process inside `name`'s namespace."""
        return ["ip", "netns", "exec", self.nodes[name].ns]

    # -- faults ----------------------------------------------------------------

    def drop_from(self, at: str, sources: list[str]) -> None:
        """`at` no longer receives anything from `sources` (a one-way cut)."""
        for s in sources:
            self.exec(at, "iptables", "-A", "INPUT", "-s", self.nodes[s].ip, "-j", "DROP")

    def drop_to(self, at: str, targets: list[str]) -> None:
        """`at` no longer sends anything to `targets`."""
        for t in targets:
            self.exec(at, "iptables", "-A", "OUTPUT", "-d", self.nodes[t].ip, "-j", "DROP")

    def cut(self, side_a: list[str], side_b: list[str]) -> None:
        """A two-way partition between the two sides (rules on side A's nodes suffice)."""
        for a in side_a:
            self.drop_from(a, side_b)
            self.drop_to(a, side_b)

    def lossy(self, name: str, probability: float) -> None:
        """`name` loses this fraction of the packets it receives and of those it sends."""
        for chain in ("INPUT", "OUTPUT"):
            self.exec(name, "iptables", "-A", chain, "-s" if chain == "INPUT" else "-d", f"10.201.{self.subnet}.0/24",
                      "-m", "statistic", "--mode", "random", "--probability", f"{probability}", "-j", "DROP")

    def slow(self, name: str, rate: str = "512kbit") -> None:
        self.exec(name, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", rate, "burst", "16kbit",
                  "latency", "200ms")

    def delay(self, name: str, ms: float = 200.0, jitter_ms: float = 20.0, max_held: int = 4096,
              seed: int = 0) -> None:
        """Every packet `name` sends or receives on its link waits `ms` (+- `jitter_ms`), so a round
        trip to it takes 2 * `ms` more: a delay line process in its namespace, then the rules that
        feed it (`--queue-bypass`: packets pass while no delay line listens)."""
        if name in self.delays:
            raise RuntimeError(f"{name} already has a delay line")
        proc = subprocess.Popen(
            [*self.prefix(name), sys.executable, str(DELAY_LINE), "--delay-ms", str(ms),
             "--jitter-ms", str(jitter_ms), "--max-held", str(max_held), "--seed", str(seed)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.delays[name] = proc
        assert proc.stdout is not None
        readable, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if readable else ""
        if line.strip() != "ready":
            self._stop_delay(name)
            raise RuntimeError(f"the delay line in {name} did not start: {line!r} {self.delay_stats.get(name)}")
        for chain, flag in (("INPUT", "-s"), ("OUTPUT", "-d")):
            self.exec(name, "iptables", "-A", chain, flag, f"10.201.{self.subnet}.0/24", "-j", "NFQUEUE",
                      "--queue-num", "0", "--queue-bypass")

    def _stop_delay(self, name: str) -> None:
        """SIGTERM: the delay line releases what it holds and prints its summary."""
        proc = self.delays.pop(name)
        if proc.poll() is None:
            proc.terminate()
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=10)
        last = (out or "").strip().splitlines()[-1:] or [""]
        try:
            self.delay_stats[name] = {**json.loads(last[0]), "returncode": proc.returncode}
        except json.JSONDecodeError:
            self.delay_stats[name] = {"returncode": proc.returncode, "stderr": (err or "")[-2000:]}

    def heal(self) -> None:
        for name in self.nodes:
            self.exec(name, "iptables", "-F", check=False)
            self.exec(name, "tc", "qdisc", "del", "dev", "eth0", "root", check=False)
        for name in list(self.delays):  # after the rules: nothing is queued any more
            self._stop_delay(name)

    def close(self) -> None:
        for name in list(self.delays):
            self._stop_delay(name)
        for node in list(self.nodes.values()):
            run("ip", "link", "del", node.veth, check=False)
            run("ip", "netns", "del", node.ns, check=False)
        self.nodes.clear()
        if self.created:
            run("ip", "link", "del", self.bridge, check=False)
            self.created = False
