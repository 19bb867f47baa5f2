"""`odradek txn ...`: list and describe transactions, as Kafka's kafka-transactions.sh does.

confluent-kafka's AdminClient has no transaction APIs, so these commands speak the
protocol themselves (cli/txn_wire.py: PeerConnection and kio entities). They only use what
every Kafka of 3.0 or later answers (ListTransactions and DescribeTransactions are KIP-664),
so they work against any Kafka cluster, not only odradek.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from odradek.cli.options import OPTION_GROUP, Connection, with_option_groups

txn_app = typer.Typer(no_args_is_help=True, help="Transactions: list, describe.")


@txn_app.command("list")
@with_option_groups
def list_transactions(
    state: Annotated[list[str] | None, typer.Option("--state", help="Only transactions in this state "
                                                       "(repeatable), e.g. Ongoing.")] = None,
    producer_id: Annotated[list[int] | None, typer.Option("--producer-id", help="Only this producer id "
                                                             "(repeatable).")] = None,
    connection: Connection = OPTION_GROUP,
) -> None:
    """The transactions every broker of the cluster coordinates (ListTransactions to each)."""
    from odradek.cli import txn_wire

    client = connection.client()
    rows = asyncio.run(txn_wire.list_all(client, [txn_wire.state_name(s) for s in state or []],
                                         list(producer_id or [])))
    table = Table("TransactionalId", "Coordinator", "ProducerId", "TransactionState")
    table.columns[0].overflow = "fold"
    for r in rows:
        table.add_row(r.transactional_id, str(r.coordinator_id), str(r.producer_id), r.state)
    Console().print(table)


@txn_app.command("describe")
@with_option_groups
def describe(
    transactional_id: str,
    connection: Connection = OPTION_GROUP,
) -> None:
    """State, producer id and epoch, timeout, start time and partitions of one transactional id."""
    from odradek.cli import txn_wire
    from odradek.protocol.build import datetime_to_ms, timedelta_to_ms

    client = connection.client()
    coordinator_id, state = asyncio.run(txn_wire.describe(client, transactional_id))
    start_ms = datetime_to_ms(state.transaction_start_time)
    partitions = [f"{t.topic}-{p}" for t in state.topics for p in t.partitions]
    table = Table("Field", "Value")
    table.columns[1].overflow = "fold"
    # Kafka's tool prints None for the start time and duration of a transaction not in progress.
    for field, value in (
        ("CoordinatorId", str(coordinator_id)),
        ("TransactionalId", str(state.transactional_id)),
        ("ProducerId", str(state.producer_id)),
        ("ProducerEpoch", str(state.producer_epoch)),
        ("TransactionState", state.transaction_state),
        ("TransactionTimeoutMs", str(timedelta_to_ms(state.transaction_timeout))),
        ("CurrentTransactionStartTimeMs", str(start_ms) if start_ms >= 0 else "None"),
        ("TransactionDurationMs", str(int(time.time() * 1000) - start_ms) if start_ms >= 0 else "None"),
        ("TopicPartitions", "\n".join(partitions) or "None"),
    ):
        table.add_row(field, value)
    Console().print(table)
