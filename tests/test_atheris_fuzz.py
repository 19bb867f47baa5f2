"""A short, seeded run of the coverage-guided fuzzer (bench/atheris_fuzz.py): request
decoding and every handler of ROUTES, with an embedded broker behind them, must meet a
few thousand inputs (raw bodies, structured requests with hostile values, mutated
frames) without an exception other than a closed connection, and without a traceback.

The long campaigns are the same command with -max_total_time (see bench/atheris_fuzz.py).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

FUZZER = Path(__file__).resolve().parent.parent / "bench" / "atheris_fuzz.py"
RUNS = 5000


def test_a_seeded_atheris_run_meets_no_crash(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(FUZZER), "--corpus", str(tmp_path / "corpus"), f"-runs={RUNS}", "-seed=1",
         "-max_total_time=50", f"-artifact_prefix={tmp_path}/"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    log = "\n".join(line for line in done.stderr.splitlines() if not line.startswith("INFO: Instrumenting"))
    crashes = sorted(p.name for p in tmp_path.glob("crash-*"))
    # atheris prints an uncaught exception's traceback on stdout, libFuzzer its progress on stderr
    assert done.returncode == 0 and not crashes, \
        f"exit {done.returncode}, {crashes}:\n{log[-4000:]}\nstdout:\n{done.stdout[-4000:]}"
    assert re.search(r"^Done \d+ runs", log, re.MULTILINE), log[-3000:]  # libFuzzer's own closing line
