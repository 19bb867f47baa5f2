"""Throughput over SASL_SSL (SCRAM-SHA-512) against PLAINTEXT on the same broker, and the
cost of a new authenticated connection.

One `odradek serve` with two listeners (PLAINTEXT and SASL_SSL, certificates from
odradek.security.devcerts, one SCRAM user made through AlterUserScramCredentials).
Rounds alternate the two listeners: confluent-kafka produces N x SIZE-byte records
(acks=1) and consumes them back, with the settings of bench/produce_consume.py.
Then K new connections per listener, each opened and asked ApiVersions: TCP alone,
and TCP + TLS + SaslHandshake + SCRAM-SHA-512 (odradek.security.client, the login a
broker makes to another). Prints msg/s per listener, the SASL_SSL/PLAINTEXT ratio,
and the median / p99 connection time.

    .venv/bin/python bench/security_bench.py [--messages 300000] [--size 100] [--rounds 3] [--connections 200]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from produce_consume import free_port, run_clients, stop, wait_port

from odradek.protocol.framing import decode_response, encode_request, request_type
from odradek.security.client import ClientSecurity, open_connection
from odradek.security.devcerts import write_dev_certificates
from odradek.security.tls import client_context

USER, PASSWORD = "bench", "bench-password"


async def connect_times(port: int, security: ClientSecurity, n: int) -> list[float]:
    body = request_type(18, 3)(client_software_name="bench", client_software_version="1")
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        reader, writer = await open_connection("127.0.0.1", port, security, "bench", 10.0)
        writer.write(encode_request(18, 3, i, body))
        await writer.drain()
        size = int.from_bytes(await reader.readexactly(4), "big")
        decode_response(await reader.readexactly(size), 18, 3)
        times.append((time.perf_counter() - t0) * 1000)
        writer.close()
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=300_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=200)
    ap.add_argument("--batch", type=int, default=10_000)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="odradek-secbench-"))
    certs = write_dev_certificates(work / "certs")
    plain_port, sasl_port = free_port(), free_port()
    env = {
        "ODRADEK_LISTENERS": f"PLAINTEXT://127.0.0.1:{plain_port},SASL_SSL://127.0.0.1:{sasl_port}",
        "ODRADEK_SSL_KEYSTORE_LOCATION": str(certs.keystore),
        "ODRADEK_SASL_ENABLED_MECHANISMS": "SCRAM-SHA-512",
    }
    proc = subprocess.Popen([sys.executable, "-m", "odradek", "serve", "--data-dir", str(work / "data")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **env})
    try:
        wait_port(plain_port)
        wait_port(sasl_port)
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{plain_port}"})
        cred = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
        admin.alter_user_scram_credentials([UserScramCredentialUpsertion(USER, cred, PASSWORD.encode())])[USER].result(15)
        confs = {
            "PLAINTEXT": {"bootstrap.servers": f"127.0.0.1:{plain_port}"},
            "SASL_SSL": {"bootstrap.servers": f"127.0.0.1:{sasl_port}", "security.protocol": "SASL_SSL",
                         "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": USER, "sasl.password": PASSWORD,
                         "ssl.ca.location": str(certs.truststore)},
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in confs}
        for r in range(args.rounds):
            for name, conf in confs.items():
                topic = f"bench-{name.lower()}-{r}"
                results[name].append(run_clients(conf, topic, args.messages, args.size, True, args.batch))
        print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
              f"{args.messages:,} x {args.size} B, median of {args.rounds} alternating rounds")
        print(f"{'listener':<10} {'produce msg/s':>14} {'consume msg/s':>14}")
        medians = {}
        for name, rows in results.items():
            produce = statistics.median(args.messages / p for p, _ in rows)
            consume = statistics.median(args.messages / c for _, c in rows)
            medians[name] = (produce, consume)
            print(f"{name:<10} {produce:>14,.0f} {consume:>14,.0f}")
        (pp, pc), (sp, sc) = medians["PLAINTEXT"], medians["SASL_SSL"]
        print(f"SASL_SSL / PLAINTEXT: produce {sp / pp:.0%}, consume {sc / pc:.0%}")

        from odradek.config import BrokerConfig

        tls = client_context(BrokerConfig(ssl_truststore_location=str(certs.truststore)), "SASL_SSL")
        plain_t = asyncio.run(connect_times(plain_port, ClientSecurity(), args.connections))
        sasl_t = asyncio.run(connect_times(
            sasl_port, ClientSecurity("SASL_SSL", tls, "SCRAM-SHA-512", USER, PASSWORD), args.connections))
        for name, ts in (("PLAINTEXT", plain_t), ("SASL_SSL", sasl_t)):
            ts.sort()
            print(f"new connection + ApiVersions, {name:<9}: median {statistics.median(ts):.2f} ms, "
                  f"p99 {ts[int(len(ts) * 0.99) - 1]:.2f} ms over {len(ts)}")
    finally:
        stop(proc)


if __name__ == "__main__":
    main()
