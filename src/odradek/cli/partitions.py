"""`odradek partitions reassign` (the verbs and JSON file of kafka-reassign-partitions.sh),
`odradek cluster rebalance` and `odradek cluster decommission BROKER`.

They speak Kafka's reassignment APIs (reassign_plan.py), so they drive any Kafka 2.4+ as
well as odradek. rebalance and decommission print their plan first and run it with --yes
(or after a yes at the prompt); then they wait until every move is done, showing progress,
and clear the throttle they set. All three are rack-aware when every broker has a rack
(broker.rack, read from Metadata), and say which racks they saw.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from odradek.cli import reassign_plan as rp
from odradek.cli.common import Client, fail
from odradek.cli.options import OPTION_GROUP, Connection, OptionGroup, with_option_groups

partitions_app = typer.Typer(no_args_is_help=True, help="Partitions: reassign (like kafka-reassign-partitions.sh).")

ThrottleOption = typer.Option(
    "--throttle", min=1, help="Replication throttle in bytes/s for the moving replicas "
    "(leader/follower.replication.throttled.rate); cleared when the moves are done.")
YesOption = typer.Option("--yes", "-y", help="Move without asking.")
TimeoutOption = typer.Option("--timeout", help="Seconds to wait for the moves.")


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        fail(f"cannot read {what} {path}: {exc.strerror or exc}", 2)


def _names(tps: object) -> str:
    return ",".join(f"{t}-{p}" for t, p in sorted(tps))  # type: ignore[call-overload]


@partitions_app.command("reassign")
@with_option_groups
def reassign(
    generate: Annotated[bool, typer.Option("--generate", help="Propose an assignment of the topics over --broker-list.")] = False,
    execute: Annotated[bool, typer.Option("--execute", help="Start the reassignment of --reassignment-json-file.")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Say which moves are done; clears the throttle when all are.")] = False,
    cancel: Annotated[bool, typer.Option("--cancel", help="Cancel the moves of --reassignment-json-file.")] = False,
    reassignment_json_file: Annotated[Path | None, typer.Option(
        "--reassignment-json-file", help='{"version":1,"partitions":[{"topic","partition","replicas"}]}')] = None,
    topics_to_move_json_file: Annotated[Path | None, typer.Option(
        "--topics-to-move-json-file", help='{"version":1,"topics":[{"topic":"foo"}]} (with --generate)')] = None,
    broker_list: Annotated[str | None, typer.Option("--broker-list", help="e.g. 0,1,2 (with --generate)")] = None,
    throttle: Annotated[int | None, ThrottleOption] = None,
    connection: Connection = OPTION_GROUP,
) -> None:
    """Move partitions between brokers: --generate a plan, --execute it, --verify, --cancel."""
    actions = [n for n, on in (("--generate", generate), ("--execute", execute), ("--verify", verify),
                               ("--cancel", cancel)) if on]
    if len(actions) != 1:
        fail("give exactly one of --generate, --execute, --verify or --cancel", 2)
    client = connection.client()
    out = Console(soft_wrap=True, highlight=False)
    if generate:
        if topics_to_move_json_file is None or not broker_list:
            fail("--generate needs --topics-to-move-json-file and --broker-list", 2)
        try:
            topics = rp.topics_to_move(_read(topics_to_move_json_file, "the topics file"))
            brokers = [int(b) for b in broker_list.split(",") if b.strip()]
        except ValueError as exc:
            fail(f"{topics_to_move_json_file}: {exc}" if "format" in str(exc) else
                 f"--broker-list {broker_list!r} is not a list of broker ids like 0,1,2", 2)
        current, _ = rp.current_assignment(client, topics)
        missing = [t for t in topics if not any(tp[0] == t for tp in current)]
        if missing:
            fail(f"topic(s) {', '.join(missing)} do not exist")
        racks = rp.broker_racks(client)
        try:
            proposed = rp.generate(current, brokers, racks)
        except ValueError as exc:
            fail(str(exc), 2)
        _say_racks(out, racks, brokers)
        out.print(f"Current partition replica assignment\n{rp.to_json(current)}\n")
        out.print(f"Proposed partition reassignment configuration\n{rp.to_json(proposed)}")
        return
    if reassignment_json_file is None:
        fail(f"{actions[0]} needs --reassignment-json-file", 2)
    try:
        wanted = rp.from_json(_read(reassignment_json_file, "the reassignment file"))
    except ValueError as exc:
        fail(f"{reassignment_json_file}: {exc}", 2)
    if execute:
        current, _ = rp.current_assignment(client, sorted({t for t, _ in wanted}))
        unknown = [tp for tp in wanted if tp not in current]
        if unknown:
            fail(f"partition(s) {_names(unknown)} do not exist")
        out.print(f"Current partition replica assignment\n\n{rp.to_json({tp: current[tp] for tp in wanted})}\n\n"
                  "Save this to use as the --reassignment-json-file option during rollback")
        _start(client, dict(wanted.items()), current, throttle)
        out.print(f"Successfully started partition reassignments for {_names(wanted)}")
    elif verify:
        moving = _list(client)
        current, _ = rp.current_assignment(client, sorted({t for t, _ in wanted}))
        out.print("Status of partition reassignment:")
        done = True
        for tp in sorted(wanted):
            if tp in moving:
                state, done = "is still in progress.", False
            elif current.get(tp) == wanted[tp]:
                state = "is completed."
            else:
                state, done = f"failed: the replicas are {current.get(tp)}, not {wanted[tp]}.", False
            out.print(f"Reassignment of partition {tp[0]}-{tp[1]} {state}")
        if done and not moving:
            _clear_throttle(client, out, {t for t, _ in wanted})
        if not done:
            raise typer.Exit(1)
    else:
        moving = _list(client)
        try:
            refused = rp.alter(client, {tp: None for tp in wanted})
        except ValueError as exc:
            fail(f"cannot cancel: {exc}")
        cancelled = [tp for tp in wanted if tp not in refused]
        if cancelled:
            out.print(f"Successfully cancelled partition reassignments for: {_names(cancelled)}")
        for tp, why in sorted(refused.items()):
            out.print(f"Partition {tp[0]}-{tp[1]}: {'no reassignment in progress' if tp not in moving else why}")
        if not moving:
            _clear_throttle(client, out, {t for t, _ in wanted})


def _say_racks(out: Console, racks: dict[int, str | None], brokers: list[int]) -> None:
    line = rp.describe_racks({b: racks.get(b) for b in brokers})
    if line is not None:
        out.print(line)


def _list(client: Client) -> dict[rp.TopicPartition, tuple[list[int], list[int], list[int]]]:
    try:
        return rp.in_progress(client)
    except ValueError as exc:
        fail(f"cannot list the reassignments: {exc}")


def _start(client: Client, moves: dict[rp.TopicPartition, list[int]], current: rp.Assignment,
           throttle: int | None) -> None:
    if throttle is not None:
        try:
            rp.set_throttle(client, throttle, moves, current)
        except ValueError as exc:
            fail(str(exc))
    try:
        refused = rp.alter(client, dict(moves.items()))
    except ValueError as exc:
        fail(f"cannot start the reassignment: {exc}")
    if refused:
        fail("the reassignment was refused for " + "; ".join(f"{t}-{p}: {why}" for (t, p), why in sorted(refused.items())))


def _clear_throttle(client: Client, out: Console, topics: set[str]) -> None:
    """The broker rates everywhere and the replica lists of `topics` (Kafka's clearAllThrottles)."""
    current, brokers = rp.current_assignment(client, sorted(topics))
    try:
        rp.set_throttle(client, None, {tp: [] for tp in current}, current)
    except ValueError:
        return  # a cluster that never had a throttle may refuse to delete it; nothing to clear
    out.print(f"Clearing broker-level throttles on brokers {','.join(map(str, brokers))}")
    if topics:
        out.print(f"Clearing topic-level throttles on topic(s) {','.join(sorted(topics))}")


# -- cluster rebalance / decommission -----------------------------------------------------------

def _show_plan(out: Console, plan: rp.Assignment, current: rp.Assignment, brokers: list[int],
               sizes: dict[rp.TopicPartition, int]) -> None:
    table = Table("partition", "replicas now", "replicas after", "size")
    for tp in sorted(plan):
        table.add_row(f"{tp[0]}-{tp[1]}", ",".join(map(str, current[tp])), ",".join(map(str, plan[tp])),
                      _bytes(sizes.get(tp, 0)))
    out.print(table)
    before = rp.load(current, brokers, sizes)
    after = rp.load({**current, **plan}, brokers, sizes)
    spread = Table("broker", "replicas", "leaders", "bytes")
    for b in brokers:
        spread.add_row(str(b), f"{before.replicas[b]} -> {after.replicas[b]}", f"{before.leaders[b]} -> {after.leaders[b]}",
                       f"{_bytes(before.bytes[b])} -> {_bytes(after.bytes[b])}")
    out.print(spread)


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@dataclass(frozen=True)
class Moves(OptionGroup):
    """How `cluster rebalance` and `cluster decommission` move: after a yes (or --yes), throttled
    (or not), waited for up to --timeout."""

    yes: Annotated[bool, YesOption] = False
    throttle: Annotated[int | None, ThrottleOption] = None
    timeout: Annotated[float, TimeoutOption] = 600.0


def _run(client: Client, out: Console, plan: rp.Assignment, current: rp.Assignment, moves: Moves) -> None:
    throttle, timeout = moves.throttle, moves.timeout
    if not plan:
        out.print("nothing to move: the replicas are already spread evenly")
        return
    if not moves.yes and not typer.confirm(f"move {len(plan)} partition(s)?", default=False):
        out.print("nothing moved; run again with --yes to move without asking")
        raise typer.Exit(1)
    if _list(client):
        fail("a reassignment is already in progress; wait for it (odradek partitions reassign --verify) first")
    _start(client, plan, current, throttle)
    started = time.monotonic()
    remaining = set(plan)
    while remaining:
        if time.monotonic() - started > timeout:
            fail(f"{len(remaining)} partition(s) still moving after {timeout:.0f} s: {_names(remaining)}; "
                 "they go on in the background (odradek partitions reassign --verify)")
        time.sleep(0.5)
        moving = _list(client)
        done = {tp for tp in remaining if tp not in moving}
        if done:
            remaining -= done
            out.print(f"{len(plan) - len(remaining)}/{len(plan)} partition(s) moved "
                      f"({time.monotonic() - started:.1f} s)")
    if throttle is not None:
        _clear_throttle(client, out, {t for t, _ in plan})


def _current(connection: Connection) -> tuple[Client, Console, rp.Assignment, list[int]]:
    """The command's client and output; the cluster's current assignment and its brokers."""
    client = connection.client()
    out = Console(soft_wrap=True, highlight=False)
    current, brokers = rp.current_assignment(client)
    return client, out, current, brokers


def _plan_and_move(client: Client, out: Console, current: rp.Assignment, brokers: list[int],
                   planner: Callable[[dict[rp.TopicPartition, int], dict[int, str | None]], rp.Assignment],
                   cannot: str, headline: str, moves: Moves) -> rp.Assignment:
    """Plans with the partitions' sizes and the brokers' racks (`cannot ...: why` if the planner
    refuses), shows the plan after `headline` and moves (_run); the plan."""
    sizes = rp.partition_sizes(client)
    racks = rp.broker_racks(client)
    try:
        plan = planner(sizes, racks)
    except ValueError as exc:
        fail(f"{cannot}: {exc}")
    _say_racks(out, racks, brokers)
    out.print(f"{headline}: {len(plan)} partition(s) to move")
    if plan:
        _show_plan(out, plan, current, brokers, sizes)
    _run(client, out, plan, current, moves)
    return plan


@with_option_groups
def rebalance(moves: Moves = OPTION_GROUP, connection: Connection = OPTION_GROUP) -> None:
    """Spread replicas and leaders evenly over the brokers (count, then bytes): plan, then move."""
    client, out, current, brokers = _current(connection)
    plan = _plan_and_move(client, out, current, brokers,
                          lambda sizes, racks: rp.rebalance(current, brokers, sizes, racks),
                          "cannot plan a rebalance", f"rebalance over brokers {','.join(map(str, brokers))}", moves)
    if plan:
        out.print("rebalance complete")


@with_option_groups
def decommission(
    broker: Annotated[int, typer.Argument(help="The id of the broker to empty.")],
    moves: Moves = OPTION_GROUP,
    connection: Connection = OPTION_GROUP,
) -> None:
    """Move every replica off BROKER, then say when it can be stopped."""
    client, out, current, brokers = _current(connection)
    if broker not in brokers:
        fail(f"broker {broker} is not in the cluster (brokers: {','.join(map(str, brokers))})")
    _plan_and_move(client, out, current, brokers,
                   lambda sizes, racks: rp.decommission(current, brokers, broker, sizes, racks),
                   f"cannot decommission broker {broker}", f"decommission of broker {broker}", moves)
    deadline = time.monotonic() + 30
    while True:  # the final assignment is written; wait until no replica and no leadership is left
        md = client.metadata()
        held = [f"{t}-{p.id}" for t, tm in md.topics.items() for p in tm.partitions.values()
                if broker in p.replicas or p.leader == broker]
        if not held:
            break
        if time.monotonic() > deadline:
            fail(f"broker {broker} still holds {', '.join(sorted(held))}")
        time.sleep(0.3)
    out.print(f"broker {broker} holds no replicas any more: it can be stopped")
