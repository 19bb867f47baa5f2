"""A broker pod's rack: the zone of the node it runs on, written to a file for broker.rack.

Kubernetes' downward API gives a pod its node's name but not the node's labels
(topology.kubernetes.io/zone); Strimzi reads them from the API server in an init container,
which needs a ClusterRole to get nodes. On GKE the node's zone is also what the metadata
server answers every pod (instance/zone, Workload Identity's metadata server included), so the
cluster overlay's init container runs `python -m odradek.deploy.node_zone FILE` instead: no
extra permission. FILE gets the zone, which the broker container's shell exports as
ODRADEK_BROKER_RACK; off GKE (no metadata server) FILE stays empty and the broker has no rack.
"""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

ZONE_URL = "http://metadata.google.internal/computeMetadata/v1/instance/zone"


def node_zone(timeout_s: float = 3.0) -> str | None:
    """The zone of this node from the GCE metadata server ("projects/1/zones/europe-west1-b" -> its last part)."""
    request = urllib.request.Request(ZONE_URL, headers={"Metadata-Flavor": "Google"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.read().decode().rsplit("/", 1)[-1].strip() or None
    except OSError:  # no metadata server: not on GKE
        return None


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m odradek.deploy.node_zone FILE", file=sys.stderr)
        return 2
    rack = node_zone()
    Path(argv[0]).write_text(rack or "")
    print(f"broker.rack={rack}" if rack else "no zone found: the broker runs without broker.rack")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
