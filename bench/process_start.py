"""Start-up of odradek's processes: `python -m odradek serve` from exec to its first answered
ApiVersions, and a CLI command (`python -m odradek topic list` against a running broker) from exec
to exit.

The test suite starts hundreds of brokers and CLI processes, and a deploy's pods and a user's
`odradek` commands pay the same start. Each figure is the median of --runs fresh processes (an
empty data dir for serve); the trees (this one, and --before-src trees) take turns round by round.

    .venv/bin/python bench/process_start.py [--what serve|cli] [--runs 5] [--rounds 3] [--before-src DIR]

A --before-src tree is another tree's src/ first on PYTHONPATH, run as found: a `git archive` of
an older commit has no bytecode, as a fresh clone's src/ has none where PYTHONDONTWRITEBYTECODE is
set, so comparing with this tree (after `./dev`'s compileall) shows that too.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from embedded_start import api_versions_answered, free_port
from tree_turns import add_turn_options, one_figure_turns


def serve(work: Path) -> tuple[subprocess.Popen[bytes], int, float]:
    """A broker started in `work`, its port, and the seconds from exec to its first answer."""
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "odradek", "serve", "--listen", f"127.0.0.1:{port}",
                             "--data-dir", str(work / f"data-{port}")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not api_versions_answered(port):
        if proc.poll() is not None or time.perf_counter() - t0 > 60:
            proc.kill()
            raise SystemExit(f"the broker did not answer (exit {proc.returncode})")
        time.sleep(0.005)
    return proc, port, time.perf_counter() - t0


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(30)


def serve_once(work: Path) -> float:
    proc, _, seconds = serve(work)
    stop(proc)
    return seconds


def cli_runs(work: Path, runs: int) -> list[float]:
    proc, port, _ = serve(work)
    try:
        figures = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "odradek", "topic", "list", "-b", f"127.0.0.1:{port}"],
                           check=True, capture_output=True)
            figures.append(time.perf_counter() - t0)
        return figures
    finally:
        stop(proc)


def child(what: str, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        figures = [serve_once(work) for _ in range(runs)] if what == "serve" else cli_runs(work, runs)
    print(f"{statistics.median(figures) * 1000:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--what", choices=["serve", "cli"], default="serve")
    ap.add_argument("--runs", type=int, default=5)
    add_turn_options(ap)
    args = ap.parse_args()
    if args.child:
        child(args.what, args.runs)
        return
    what = "exec to the first ApiVersions answer" if args.what == "serve" else "exec to exit of `odradek topic list`"
    one_figure_turns(__file__, ["--what", args.what, "--runs", str(args.runs)], args.before_src, args.rounds,
                     "ms", what, digits=0)


if __name__ == "__main__":
    main()
