"""The fault campaign: a 3-server ZooKeeper ensemble, 3 brokers and the clients each in
a network namespace of its own, each broker's data dir on a 64 MB tmpfs; idempotent
acks=all producers (RF 3, min.insync.replicas 2), a consumer group committing offsets
and a transactional consume-transform-produce loop run while seeded faults follow one
another (partitions, one-way cuts, a paused leader, SIGKILLs of brokers and ZooKeeper
servers, quorum loss, a leader's ZooKeeper session expired, a full or read-only disk, packet
loss, 200 ms of delay with 5% loss at a leader). Afterwards the checker reads everything back (and after each heal, every broker is asked
which partitions it leads). Needs root.

    .venv/bin/python bench/fault_campaign.py --seed 1 --faults 100 [--kinds pause-leader,disk-full]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from odradek.testing.faults.checker import table
from odradek.testing.faults.nemesis import NEMESES, Campaign, main_env_ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--faults", type=int, default=100)
    ap.add_argument("--kinds", default="", help=f"comma-separated, of: {', '.join(NEMESES)}")
    ap.add_argument("--workdir", default="", help="keep logs here (default: a temporary directory)")
    args = ap.parse_args()
    main_env_ok()
    kinds = [k for k in args.kinds.split(",") if k] or None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="odradek-faults-") as tmp:
        workdir = Path(args.workdir or tmp)
        campaign = Campaign(workdir, seed=args.seed, faults=args.faults, kinds=kinds,
                            log=lambda s: print(f"[{time.monotonic() - started:7.1f}] {s}", flush=True))
        report = campaign.run()
        faults = [vars(f) for f in campaign.faults]
        (Path(args.workdir) if args.workdir else Path.cwd()).joinpath(f"faults-seed{args.seed}.json").write_text(
            json.dumps({"seed": args.seed, "faults": faults, "report": {k: getattr(report, k) for k in (
                "acked", "unacked", "reads", "epochs_checked", "txn_committed", "txn_aborted", "txn_duplicates", "txn_reread",
                "txn_fenced",
                *report.MUST_BE_ZERO)}}, indent=1))
    print()
    print(f"seed {args.seed}, {len(campaign.faults)} faults, {time.monotonic() - started:.0f} s")
    print(table(campaign.faults))
    print()
    print(f"acknowledged {report.acked}, unacknowledged (timed out) {report.unacked}, consumer reads {report.reads}, "
          f"transactions committed {report.txn_committed} aborted {report.txn_aborted}, "
          f"records copied twice by the transactional loop {report.txn_duplicates} (input read again by a "
          f"committed transaction after an earlier committed one had committed offsets past it: {report.txn_reread}), "
          f"transactional producer fenced {report.txn_fenced} (each explained below, or counted as unexplained)")
    for k in report.MUST_BE_ZERO:
        print(f"  {k}: {getattr(report, k)}")
    for k, ex in report.examples.items():
        print(f"  e.g. {k}: " + json.dumps(ex))
    print("RESULT:", "FAIL" if report.violations() else "PASS")
    return 1 if report.violations() else 0


if __name__ == "__main__":
    sys.exit(main())
