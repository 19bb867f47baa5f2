"""The wire side of `odradek txn ...` (cli/txn.py): ListTransactions and DescribeTransactions
spoken with PeerConnection and kio entities. Imported by those commands when they run, so that
every other command starts without kio and the broker's client stack."""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.cli.common import TIMEOUT_S, Client, fail, stderr
from odradek.cluster.peer import PeerConnection
from odradek.security.client import LoginFailed

API_VERSIONS, METADATA, FIND_COORDINATOR, DESCRIBE_TRANSACTIONS, LIST_TRANSACTIONS = 18, 3, 10, 65, 66
API_NAMES = {METADATA: "Metadata", FIND_COORDINATOR: "FindCoordinator",
             DESCRIBE_TRANSACTIONS: "DescribeTransactions", LIST_TRANSACTIONS: "ListTransactions"}
# The versions this tool can read; the highest one the broker also speaks is used. Metadata
# starts at v1, where an empty topic list means "no topics" (in v0 it means all of them).
SUPPORTED = {METADATA: (1, 12), FIND_COORDINATOR: (1, 4), DESCRIBE_TRANSACTIONS: (0, 0), LIST_TRANSACTIONS: (0, 1)}
TRANSACTION_KEY_TYPE = 1  # FindCoordinator key_type of a transactional id (KIP-98)
# Kafka's Admin client retries these: the coordinator is moving or still loading its log.
RETRIABLE = {ErrorCode.coordinator_not_available, ErrorCode.coordinator_load_in_progress, ErrorCode.not_coordinator}
RETRY_BACKOFF_S = 0.2
# Kafka's state names (TransactionState.java); --state is matched to them case-insensitively.
STATES = ("Empty", "Ongoing", "PrepareCommit", "PrepareAbort", "CompleteCommit", "CompleteAbort", "Dead",
          "PrepareEpochFence")

Address = tuple[str, int]


def _address(text: str) -> Address:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        fail(f"--bootstrap-server {text!r} is not HOST:PORT", 2)
    return host, int(port)


def _error_name(code: ErrorCode) -> str:
    return code.name.upper()


@dataclass(frozen=True, slots=True)
class Listed:
    transactional_id: str
    coordinator_id: int
    producer_id: int
    state: str


class Cluster:
    """Connections to the brokers of one cluster, opened on first use, and the API versions
    agreed with the bootstrap broker (a cluster's brokers run one version in practice)."""

    def __init__(self, client: Client) -> None:
        self.bootstrap = _address(client.bootstrap.split(",")[0])
        self.security = client.wire_security()
        self.versions: dict[int, int] = {}
        self._peers: dict[Address, PeerConnection] = {}

    async def call(self, address: Address, api_key: int, body: dict[str, Any], version: int | None = None) -> Any:
        """One request; an unreachable broker or an unreadable answer ends the command in one sentence."""
        peer = self._peers.get(address)
        if peer is None:
            peer = self._peers[address] = PeerConnection(address[0], address[1], "odradek-cli", self.security)
        where = f"{address[0]}:{address[1]}"
        try:
            return await peer.call(api_key, self.versions[api_key] if version is None else version, body, TIMEOUT_S)
        except TimeoutError:
            check = ", and are the credentials right (a broker delays refused logins)" if self.security.mechanism else ""
            fail(f"no answer from a broker at {where} within {TIMEOUT_S:.0f} s; is a broker listening there{check}?")
        except LoginFailed as exc:
            fail(f"cannot log in to {where}: {exc}")
        except ssl.SSLError as exc:
            fail(f"no TLS connection to {where}: {exc.reason or exc}")
        except (OSError, EOFError) as exc:
            refused = isinstance(exc, ConnectionRefusedError)
            reason = "connection refused" if refused else getattr(exc, "strerror", None) or "connection closed"
            fail(f"cannot reach a broker at {where} ({reason}); is a broker listening there?")
        # kio could not decode the answer: not a Kafka broker, or a version we misread.
        except Exception as exc:  # noqa: BLE001 - kio's decoders raise assorted errors (UTF-8, enums, struct)
            fail(f"the answer of {where} to {API_NAMES.get(api_key, api_key)} is unreadable ({exc})")

    async def negotiate(self) -> None:
        """ApiVersions v0 (answered by every Kafka since 0.10) picks each API's version."""
        response = await self.call(self.bootstrap, API_VERSIONS, {}, version=0)
        offered = {int(a.api_key): (int(a.min_version), int(a.max_version)) for a in response.api_keys}
        for key, (low, high) in SUPPORTED.items():
            if key not in offered or offered[key][0] > high or offered[key][1] < low:
                fail(f"the broker at {self.bootstrap[0]}:{self.bootstrap[1]} does not speak {API_NAMES[key]} "
                     f"v{low}-v{high} (Kafka 3.0 or later does)")
            self.versions[key] = min(high, offered[key][1])

    def close(self) -> None:
        for peer in self._peers.values():
            peer.close()


async def list_all(client: Client, states: list[str], producer_ids: list[int]) -> list[Listed]:
    """Every broker coordinates the ids of its __transaction_state partitions, so each is asked."""
    cluster = Cluster(client)
    try:
        await cluster.negotiate()
        meta = await cluster.call(cluster.bootstrap, METADATA, {"topics": [], "allow_auto_topic_creation": False})
        brokers = sorted((int(b.node_id), (str(b.host), int(b.port))) for b in meta.brokers)
        body = {"state_filters": states, "producer_id_filters": producer_ids}
        answers = await asyncio.gather(*(_list_on(cluster, node, address, body) for node, address in brokers))
    finally:
        cluster.close()
    unknown = sorted({s for _, filters in answers for s in filters})
    if unknown:
        stderr().print(f"warning: the brokers know no transaction state {', '.join(unknown)} "
                       f"(known: {', '.join(STATES)})")
    return sorted((row for rows, _ in answers for row in rows), key=lambda r: (r.transactional_id, r.coordinator_id))


async def _list_on(cluster: Cluster, node: int, address: Address, body: dict[str, Any]) -> tuple[list[Listed], list[str]]:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        response = await cluster.call(address, LIST_TRANSACTIONS, body)
        if response.error_code == ErrorCode.none:
            rows = [Listed(str(t.transactional_id), node, int(t.producer_id), t.transaction_state)
                    for t in response.transaction_states]
            return rows, list(response.unknown_state_filters)
        if response.error_code not in RETRIABLE or time.monotonic() > deadline:
            fail(f"broker {node} at {address[0]}:{address[1]} cannot list its transactions "
                 f"({_error_name(response.error_code)})")
        await asyncio.sleep(RETRY_BACKOFF_S)


async def describe(client: Client, transactional_id: str) -> tuple[int, Any]:
    """The coordinator's id and its DescribeTransactions entry; a moving coordinator is looked up again."""
    cluster = Cluster(client)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        await cluster.negotiate()
        while True:
            found = await cluster.call(cluster.bootstrap, FIND_COORDINATOR, {
                "key": transactional_id, "key_type": TRANSACTION_KEY_TYPE, "coordinator_keys": [transactional_id]})
            coordinator = found.coordinators[0] if hasattr(found, "coordinators") else found  # v4: KIP-699 batching
            error = coordinator.error_code
            if error == ErrorCode.none:
                described = await cluster.call((str(coordinator.host), int(coordinator.port)), DESCRIBE_TRANSACTIONS,
                                               {"transactional_ids": [transactional_id]})
                state = described.transaction_states[0]
                error = state.error_code
                if error == ErrorCode.none:
                    return int(coordinator.node_id), state
            if error not in RETRIABLE or time.monotonic() > deadline:
                break
            await asyncio.sleep(RETRY_BACKOFF_S)
    finally:
        cluster.close()
    if error == ErrorCode.transactional_id_not_found:
        fail(f"transactional id {transactional_id} is not known to its coordinator (TRANSACTIONAL_ID_NOT_FOUND)")
    fail(f"cannot describe transactional id {transactional_id} ({_error_name(error)})")


def state_name(text: str) -> str:
    return next((s for s in STATES if s.lower() == text.lower()), text)
