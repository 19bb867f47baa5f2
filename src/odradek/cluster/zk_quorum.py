"""Leading on while ZooKeeper has no quorum, safely.

A broker whose ZooKeeper connection drops cannot tell a partition that cuts it from
the ensemble (a new leader may be elected elsewhere once its session expires) from
an ensemble that lost its quorum (nobody can elect anything; Kafka's leaders keep
serving). It can ask every server at once: one that refuses the connection is down
(nothing listens there), one that answers `srvr` with "not currently serving
requests" is in no quorum; a server that does not answer (a partition drops
packets) proves nothing. When a majority is seen down within ROUND of the start of
the round, no quorum that existed at that start outlived it, so:

- no session expired in such a quorum, provided the round started within ROUND +
  FIRST of the connection's loss (kazoo notices a silent connection 2/3 of a session
  timeout after its last packet, and sessions live a whole timeout after it);
- a quorum formed later gives every session a fresh whole timeout from its start
  (ZooKeeper's new leader renews them all), so no leader can change before the
  round's start + a session timeout; the broker leads on until LEASE of it;
- rounds follow one another at most GAP apart, each extending the lease, so a
  quorum formed and lost between two rounds cannot have expired a session either.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger("odradek.cluster")

# fractions of the session timeout
LEASE = 0.6  # leading on after the start of a round that saw no quorum
ROUND = 0.1  # every server's answer within this of the round's start
FIRST = 0.1  # the first round within this of the connection's loss (plus kazoo's 2/3 + ROUND < 0.9)
GAP = 0.5  # rounds at most this far apart


def probe(host: str, port: int, timeout: float) -> str:
    """'down' (refused, or not serving), 'serving', or 'unknown' (no answer)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"srvr")
            data = b""
            while len(data) < 65536 and (chunk := s.recv(4096)):
                data += chunk
    except ConnectionRefusedError:
        return "down"
    except OSError:
        return "unknown"
    text = data.decode(errors="replace")
    if "not currently serving" in text:
        return "down"
    return "serving" if "Mode:" in text else "unknown"


def parse_hosts(hosts: str) -> list[tuple[str, int]]:
    out = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if host and port.isdigit():
            out.append((host.strip("[]"), int(port)))
    return out


class QuorumLease:
    """While the ZooKeeper connection is down: `valid()` while the ensemble is seen without a
    quorum, round after round (see the module's docstring for why that is safe)."""

    def __init__(self, hosts: str, session_timeout_s: float) -> None:
        self.servers = parse_hosts(hosts)
        self.session_timeout_s = session_timeout_s
        self.until = 0.0
        self._generation = 0  # one per connection loss; a newer loss supersedes an older loss's rounds

    def valid(self) -> bool:
        return time.monotonic() < self.until

    def round(self) -> bool:
        """Ask every server at once; True when a majority answered 'down' in time."""
        timeout = ROUND * self.session_timeout_s
        answers: list[str] = []

        def ask(host: str, port: int) -> None:
            answers.append(probe(host, port, timeout))

        threads = [threading.Thread(target=ask, args=server, daemon=True) for server in self.servers]
        for t in threads:
            t.start()
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        in_time = list(answers) if time.monotonic() <= deadline + 0.05 * self.session_timeout_s else []
        return bool(self.servers) and sum(a == "down" for a in in_time) > len(self.servers) // 2

    def watch(self, disconnected: Callable[[], bool], lost_at: float) -> None:
        """From the connection's loss (time.monotonic() when kazoo saw it), rounds while
        `disconnected()` (a daemon thread). A loss seen again before the rounds of an earlier one
        noticed the reconnection between them starts over from the new loss."""
        self._generation += 1
        generation = self._generation
        t_s = self.session_timeout_s

        def current() -> bool:
            return self._generation == generation and disconnected()

        def loop() -> None:
            previous = lost_at - ROUND * t_s  # the first round must start within FIRST of the loss
            gap, leading = FIRST + ROUND, False
            while current():
                started = time.monotonic()
                if started - previous > gap * t_s:  # too late to rule out an expiry: no lease until reconnected
                    log.warning("ZooKeeper unreachable and its quorum not seen lost in time (%.2f s after the "
                                "last round): acting as leader only when the session is back", started - previous)
                    break
                if self.round():  # (a round that sees a quorum leaves the lease already given as it is)
                    self.until = max(self.until, started + LEASE * t_s)
                    previous, gap = started, GAP
                    if not leading:
                        log.warning("ZooKeeper has no quorum (a majority of its servers down): "
                                    "leading on while no new leader can be elected")
                        leading = True
                # until the first lease, rounds follow closely: the servers of a lost quorum seldom go
                # down at the same instant, and the first lease must come within FIRST of the loss
                time.sleep(t_s / 8 if leading else t_s / 40)
            while current():  # wait for the reconnection (or the session's loss) to end the lease
                time.sleep(t_s / 8)
            if self._generation == generation:
                self.until = 0.0

        threading.Thread(target=loop, name="odradek-zk-quorum", daemon=True).start()

    def end(self) -> None:
        self.until = 0.0
