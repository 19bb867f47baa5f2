"""Before/after figures from one run on a noisy machine: a bench's measuring child run once a round
for each tree (this one, and --before-src trees: another tree's src/, first on PYTHONPATH), the
trees taking turns, each in a fresh process."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator


def trees_of(before_src: str | None) -> list[str]:
    """The --before-src trees, then "" for this one."""
    return [d for d in (before_src or "").split(",") if d] + [""]


def take_turns(script: str, child_args: list[str], trees: list[str], rounds: int) -> Iterator[tuple[int, str, str]]:
    """(round, tree, the child's stdout) of `script --child child_args`, round by round."""
    for r in range(rounds):
        for tree in trees:
            env = dict(os.environ)
            if tree:
                env["PYTHONPATH"] = os.pathsep.join(filter(None, (tree, env.get("PYTHONPATH"))))
            done = subprocess.run([sys.executable, script, "--child", *child_args], env=env, check=True,
                                  capture_output=True, text=True)
            yield r, tree, done.stdout


def round_line(r: int, tree: str) -> str:
    return f"round {r + 1}, load average {os.getloadavg()[0]:.1f}: {tree or 'this tree'}: "


def add_turn_options(ap: argparse.ArgumentParser, rounds: int = 3) -> None:
    """--rounds, --before-src and the hidden --child of a bench that takes turns."""
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--before-src", help="other trees' src/, comma-separated, taking turns with this one")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)


def one_figure_turns(script: str, child_args: list[str], before_src: str | None, rounds: int, unit: str,
                     what: str, digits: int = 1) -> None:
    """Turns of a child that prints one figure (its last word): each round's line, then each tree's
    median and rounds, as "<figure> <unit> <what>"."""
    trees = trees_of(before_src)
    results: dict[str, list[float]] = {t: [] for t in trees}
    for r, tree, out in take_turns(script, child_args, trees, rounds):
        results[tree].append(float(out.split()[-1]))
        print(f"{round_line(r, tree)}{results[tree][-1]:.{digits}f} {unit} {what}", flush=True)
    for tree, figures in results.items():
        print(f"{tree or 'this tree'}: median {statistics.median(figures):.{digits}f} {unit} "
              f"({' / '.join(f'{f:.{digits}f}' for f in figures)})")
