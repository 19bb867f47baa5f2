"""A broker under a real client's load keeps serving while other connections send hostile frames.

bench/net_fuzz.py, short, bounded and seeded: a real `odradek serve`, a confluent-kafka
producer (acks=all) and consumer group, and 4,000 frames of mutated captured client
sessions (every API odradek speaks) over 8 concurrent connections. The broker must not
die, hang or log an unhandled exception; ApiVersions on a fresh connection is answered
within 1 s at every check; the client's produce and consume go on; no acked record is lost.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_broker_keeps_serving_while_hostile_frames_arrive(tmp_path: Path) -> None:
    report_path = tmp_path / "net_fuzz.json"
    cmd = [sys.executable, str(ROOT / "bench" / "net_fuzz.py"), "--frames", "4000", "--seed", "13",
           "--seconds", "60", "--connections", "8", "--health-every", "250", "--rate", "200",
           "--triage-seconds", "60", "--json", str(report_path)]
    proc = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert report_path.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(report_path.read_text())
    findings = "\n".join(f"{f['kind']} x{f['count']}: {f['signature']} (frame {f['frame_hex'][:300]})"
                         for f in r["findings"])

    assert r["frames"] >= 2000, "the fuzzer sent too few frames in 60 s"
    assert r["mutated"] >= r["frames"] // 4
    assert r["crashes"] == 0, findings
    assert r["hangs"] == 0, findings
    assert r["exceptions"] == 0, findings
    assert r["health_checks"] >= 8 and r["health_failed"] == 0, findings
    assert r["rss_growth_mb"] is not None and r["rss_growth_mb"] <= r["rss_budget_mb"]
    assert r["records_acked"] > 0 and r["records_lost"] == 0
    assert r["records_read_back"] == r["records_acked"]
    assert not r["delivery_errors"]
    assert r["max_ack_stall_s"] < 10 and r["max_read_stall_s"] < 10
    assert r["targets_missed"] == [] and proc.returncode == 0, proc.stdout[-3000:]
