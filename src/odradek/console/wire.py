"""Requests librdkafka does not make for us, spoken with kio over the session's TLS and SASL:
ListTransactions and DescribeTransactions (KIP-664), DescribeLogDirs (partition sizes) and
DescribeUserScramCredentials (KIP-554; librdkafka 2.x crashes on its top-level errors).

Each call opens its own connections and closes them: the pages that use these are
opened by a person, not polled many times a second.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

import typer
from kio.schema.errors import ErrorCode

from odradek.cli.common import TIMEOUT_S
from odradek.cli.txn_wire import RETRIABLE, RETRY_BACKOFF_S, TRANSACTION_KEY_TYPE
from odradek.cli.user import MECHANISM_TYPES
from odradek.cluster.peer import PeerConnection
from odradek.console.session import ConsoleError, Session
from odradek.protocol.build import datetime_to_ms, timedelta_to_ms
from odradek.security.client import LoginFailed

API_VERSIONS, METADATA, FIND_COORDINATOR, DESCRIBE_LOG_DIRS = 18, 3, 10, 35
DESCRIBE_USER_SCRAM_CREDENTIALS, DESCRIBE_TRANSACTIONS, LIST_TRANSACTIONS = 50, 65, 66
# the versions the console reads; the highest one the cluster also speaks is used
SUPPORTED = {METADATA: (1, 12), FIND_COORDINATOR: (1, 4), DESCRIBE_LOG_DIRS: (1, 4),
             DESCRIBE_USER_SCRAM_CREDENTIALS: (0, 0), DESCRIBE_TRANSACTIONS: (0, 0), LIST_TRANSACTIONS: (0, 1)}
NAMES = {METADATA: "Metadata", FIND_COORDINATOR: "FindCoordinator", DESCRIBE_LOG_DIRS: "DescribeLogDirs",
         DESCRIBE_USER_SCRAM_CREDENTIALS: "DescribeUserScramCredentials",
         DESCRIBE_TRANSACTIONS: "DescribeTransactions", LIST_TRANSACTIONS: "ListTransactions"}

Address = tuple[str, int]


class Wire:
    """Connections of one session to the brokers it talks to, for one page's requests."""

    def __init__(self, session: Session) -> None:
        try:
            self.security = session.client.wire_security()
        except typer.Exit:
            raise ConsoleError("the client configuration cannot be used for this request", 500) from None
        host, _, port = session.client.bootstrap.split(",")[0].strip().rpartition(":")
        self.bootstrap: Address = (host, int(port))
        self.versions: dict[int, int] = {}
        self._peers: dict[Address, PeerConnection] = {}
        self._redact = session.client.redact

    async def call(self, address: Address, api_key: int, body: dict[str, Any], version: int | None = None) -> Any:
        peer = self._peers.get(address)
        if peer is None:
            peer = self._peers[address] = PeerConnection(address[0], address[1], "odradek-console", self.security)
        where = f"{address[0]}:{address[1]}"
        try:
            return await peer.call(api_key, self.versions[api_key] if version is None else version, body, TIMEOUT_S)
        except TimeoutError:
            raise ConsoleError(f"no answer from {where} within {TIMEOUT_S:.0f} s", 502) from None
        except LoginFailed as exc:
            raise ConsoleError(f"cannot log in to {where}: {self._redact(str(exc))}", 401) from None
        except ssl.SSLError as exc:
            raise ConsoleError(f"no TLS connection to {where}: {exc.reason or exc}", 502) from None
        except (OSError, EOFError) as exc:
            reason = "connection refused" if isinstance(exc, ConnectionRefusedError) else "connection closed"
            raise ConsoleError(f"cannot reach a broker at {where} ({reason})", 502) from None

    async def negotiate(self) -> None:
        response = await self.call(self.bootstrap, API_VERSIONS, {}, version=0)
        offered = {int(a.api_key): (int(a.min_version), int(a.max_version)) for a in response.api_keys}
        for key, (low, high) in SUPPORTED.items():
            if key in offered and offered[key][0] <= high and offered[key][1] >= low:
                self.versions[key] = min(high, offered[key][1])

    def require(self, api_key: int) -> None:
        if api_key not in self.versions:
            raise ConsoleError(f"the cluster does not serve {NAMES[api_key]}", 501)

    async def brokers(self) -> list[tuple[int, Address]]:
        meta = await self.call(self.bootstrap, METADATA, {"topics": [], "allow_auto_topic_creation": False})
        return sorted((int(b.node_id), (str(b.host), int(b.port))) for b in meta.brokers)

    def close(self) -> None:
        for peer in self._peers.values():
            peer.close()


async def _with_wire(session: Session, work: Any) -> Any:
    wire = Wire(session)
    try:
        await wire.negotiate()
        return await work(wire)
    finally:
        wire.close()


def _error(code: ErrorCode, message: str | None = None) -> str:
    name = code.name.upper()
    return f"{message.rstrip('.')} ({name})" if message else name


async def list_transactions(session: Session) -> list[dict[str, Any]]:
    """ListTransactions to every broker: each coordinates the ids of its own partitions."""
    async def work(wire: Wire) -> list[dict[str, Any]]:
        wire.require(LIST_TRANSACTIONS)
        rows: list[dict[str, Any]] = []
        for node, address in await wire.brokers():
            deadline = time.monotonic() + TIMEOUT_S
            while True:
                response = await wire.call(address, LIST_TRANSACTIONS, {"state_filters": [], "producer_id_filters": []})
                if response.error_code == ErrorCode.none or response.error_code not in RETRIABLE \
                        or time.monotonic() > deadline:
                    break
                await asyncio.sleep(RETRY_BACKOFF_S)
            if response.error_code != ErrorCode.none:
                raise ConsoleError(f"broker {node} cannot list its transactions ({_error(response.error_code)})",
                                   403 if "authorization" in response.error_code.name else 400)
            rows += [{"transactional_id": str(t.transactional_id), "coordinator": node,
                      "producer_id": int(t.producer_id), "state": t.transaction_state}
                     for t in response.transaction_states]
        return sorted(rows, key=lambda r: r["transactional_id"])

    result: list[dict[str, Any]] = await _with_wire(session, work)
    return result


async def describe_transaction(session: Session, transactional_id: str) -> dict[str, Any]:
    async def work(wire: Wire) -> dict[str, Any]:
        wire.require(DESCRIBE_TRANSACTIONS)
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            found = await wire.call(wire.bootstrap, FIND_COORDINATOR, {
                "key": transactional_id, "key_type": TRANSACTION_KEY_TYPE, "coordinator_keys": [transactional_id]})
            coordinator = found.coordinators[0] if hasattr(found, "coordinators") else found  # v4: KIP-699
            error = coordinator.error_code
            if error == ErrorCode.none:
                described = await wire.call((str(coordinator.host), int(coordinator.port)), DESCRIBE_TRANSACTIONS,
                                            {"transactional_ids": [transactional_id]})
                state = described.transaction_states[0]
                error = state.error_code
                if error == ErrorCode.none:
                    start = datetime_to_ms(state.transaction_start_time)
                    return {"transactional_id": transactional_id, "coordinator": int(coordinator.node_id),
                            "state": state.transaction_state, "producer_id": int(state.producer_id),
                            "producer_epoch": int(state.producer_epoch),
                            "timeout_ms": timedelta_to_ms(state.transaction_timeout),
                            "start_ms": start if start >= 0 else None,
                            "partitions": [f"{t.topic}-{p}" for t in state.topics for p in t.partitions]}
            if error not in RETRIABLE or time.monotonic() > deadline:
                raise ConsoleError(f"cannot describe transactional id {transactional_id} ({_error(error)})",
                                   404 if error == ErrorCode.transactional_id_not_found else 400)
            await asyncio.sleep(RETRY_BACKOFF_S)

    result: dict[str, Any] = await _with_wire(session, work)
    return result


async def log_dir_sizes(session: Session, topic: str, partitions: list[int]) -> dict[tuple[str, int], int] | None:
    """Partition sizes of `topic` from every broker's DescribeLogDirs (the leader's replica is
    as large as any), or None when the cluster does not serve DescribeLogDirs."""
    async def work(wire: Wire) -> dict[tuple[str, int], int] | None:
        if DESCRIBE_LOG_DIRS not in wire.versions:
            return None
        sizes: dict[tuple[str, int], int] = {}
        for _, address in await wire.brokers():
            response = await wire.call(address, DESCRIBE_LOG_DIRS, {"topics": [{"topic": topic, "partitions": partitions}]})
            for result in response.results:
                for t in result.topics:
                    for p in t.partitions:
                        if not p.is_future_key:
                            key = (str(t.name), int(p.partition_index))
                            sizes[key] = max(sizes.get(key, 0), int(p.partition_size))
        return sizes

    try:
        sized: dict[tuple[str, int], int] | None = await _with_wire(session, work)
    except ConsoleError:
        return None  # sizes are extra: a page without them still shows the rest
    return sized


async def scram_users(session: Session) -> list[dict[str, Any]]:
    async def work(wire: Wire) -> list[dict[str, Any]]:
        wire.require(DESCRIBE_USER_SCRAM_CREDENTIALS)
        response = await wire.call(wire.bootstrap, DESCRIBE_USER_SCRAM_CREDENTIALS, {"users": None})
        if response.error_code != ErrorCode.none:
            raise ConsoleError(f"cannot list SCRAM users: {_error(response.error_code, response.error_message)}",
                               403 if "authorization" in response.error_code.name else 400)
        rows = []
        for result in response.results:
            if result.error_code != ErrorCode.none:
                continue
            for info in result.credential_infos:
                rows.append({"user": str(result.user), "iterations": int(info.iterations),
                             "mechanism": MECHANISM_TYPES.get(int(info.mechanism), str(info.mechanism))})
        return sorted(rows, key=lambda r: (r["user"], r["mechanism"]))

    result: list[dict[str, Any]] = await _with_wire(session, work)
    return result
