"""Handler fuzz campaign: schema-driven requests of every API and version odradek
routes, through the real dispatcher of an embedded broker (issue 13).

    .venv/bin/python bench/handler_fuzz.py [--examples 200] [--seconds 600] [--seed 0]
        [--max-wait-ms 100] [--show 3]

Each (api_key, version) of ROUTES gets up to --examples hypothesis examples (values
mixed from the broker's own topics, groups and producer ids and from the hostile
edges of each field's type, see odradek.testing.requests), in rounds over all the
routes until the examples or --seconds run out. Prints the APIs covered, the
examples run by outcome, and every distinct failure with the request that caused
it; exits 1 when a failure was found or the broker stopped answering ApiVersions.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import re
import sys
import time
from collections import Counter
from collections.abc import Callable

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import HypothesisException

from odradek.protocol.apis import api_name
from odradek.testing import Broker
from odradek.testing.handler_fuzz import HandlerFuzzer, Outcome
from odradek.testing.requests import FuzzRequest, Vocabulary, all_routes, request_strategy


class Stop(Exception):
    """The campaign's time is up."""


def signature(api_key: int, version: int, detail: str) -> str:
    """A failure's identity: the API and the last line of its traceback or message."""
    lines = [line for line in detail.strip().splitlines() if line.strip()]
    last = re.sub(r" \(correlation id \d+\)", "", lines[-1] if lines else detail)
    return f"{api_name(api_key)} v{version}: {last}"


def run_route(fuzzer: HandlerFuzzer, vocab: Vocabulary, api_key: int, version: int, examples: int,
              seed_value: int, deadline: float, record: Callable[[int, int, FuzzRequest, Outcome], None]) -> None:
    """`examples` requests of one API version, each recorded; Stop when the deadline passed."""

    @seed(seed_value)
    @settings(max_examples=examples, database=None, deadline=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.generate])
    @given(request_strategy(api_key, version, vocab))
    def one(request: FuzzRequest) -> None:
        if time.monotonic() > deadline:
            raise Stop
        record(api_key, version, request, fuzzer.dispatch(request))

    try:
        one()
    except HypothesisException as exc:  # e.g. fewer distinct examples than asked for
        print(f"# {api_name(api_key)} v{version}: {exc}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=200, help="examples per API version (default 200)")
    parser.add_argument("--seconds", type=float, default=600, help="stop after this long (default 600)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-wait-ms", type=int, default=100, help="upper bound of drawn wait timeouts")
    parser.add_argument("--show", type=int, default=3, help="requests shown per distinct failure")
    parser.add_argument("--round", type=int, default=25, help="examples per route per round (default 25)")
    parser.add_argument("--verbose", action="store_true", help="name each API version as it starts")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # the fuzzer captures ERROR logs itself

    deadline = time.monotonic() + args.seconds
    outcomes: Counter[str] = Counter()
    per_api: Counter[str] = Counter()
    failures: dict[str, list[str]] = {}
    unhealthy = 0
    routes = all_routes()
    started = time.monotonic()
    with Broker() as broker:
        fuzzer = HandlerFuzzer(broker)
        vocab = dataclasses.replace(fuzzer.vocabulary, max_wait_ms=args.max_wait_ms)
        done = dict.fromkeys(routes, 0)

        def record(api_key: int, version: int, request: FuzzRequest, outcome: Outcome) -> None:
            outcomes[outcome.kind] += 1
            per_api[api_name(api_key)] += 1
            done[(api_key, version)] += 1
            if outcome.failed:
                shown = failures.setdefault(signature(api_key, version, outcome.detail), [])
                if len(shown) < args.show:
                    shown.append(f"{request.describe()}\n{outcome.detail}")

        try:
            # rounds over all routes, so that a --seconds limit leaves every API version fuzzed
            for round_no in range(-(-args.examples // args.round)):
                for api_key, version in routes:
                    todo = min(args.round, args.examples - round_no * args.round)
                    if todo <= 0:
                        continue
                    fuzzer.ensure_topics()
                    if args.verbose:
                        print(f"# {api_name(api_key)} v{version}", file=sys.stderr, flush=True)

                    run_route(fuzzer, vocab, api_key, version, todo,
                              args.seed * 1_000_003 + api_key * 1009 + version * 31 + round_no, deadline, record)
                    if not fuzzer.healthy():
                        unhealthy += 1
        except Stop:
            pass
        healthy = fuzzer.healthy()
        fuzzer.close()
    elapsed = time.monotonic() - started

    print(f"machine: {platform.node()}, {os.cpu_count()} cpus, Python {platform.python_version()}")
    print(f"APIs covered: {len(per_api)} of {len({k for k, _ in routes})} "
          f"({sum(1 for n in done.values() if n)} of {len(routes)} API versions)")
    print(f"examples run: {sum(outcomes.values())} in {elapsed:.0f} s "
          f"({', '.join(f'{k} {v}' for k, v in outcomes.most_common())})")
    print(f"health checks failed: {unhealthy + (0 if healthy else 1)}")
    print(f"failures found: {len(failures)} distinct")
    for sig, shown in sorted(failures.items()):
        print(f"\n== {sig}")
        for text in shown:
            print(text[-3000:])
    return 1 if failures or unhealthy or not healthy else 0


if __name__ == "__main__":
    sys.exit(main())
