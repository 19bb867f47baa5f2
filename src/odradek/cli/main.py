"""The `odradek` command: the broker (`serve`) and tools that work against any Kafka."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from odradek.cli.acl import acl_app
from odradek.cli.cert import cert_app
from odradek.cli.cluster_up import cluster_app
from odradek.cli.console import console
from odradek.cli.demo import demo
from odradek.cli.deploy import deploy_app
from odradek.cli.group import group_app
from odradek.cli.io import consume, health, produce
from odradek.cli.partitions import decommission, partitions_app, rebalance
from odradek.cli.topic import topic_app
from odradek.cli.txn import txn_app
from odradek.cli.user import user_app

app = typer.Typer(no_args_is_help=True, help="odradek: a Kafka-compatible streaming platform.",
                  pretty_exceptions_enable=False)
err = Console(stderr=True, soft_wrap=True)


@app.command()
def serve(
    listen: Annotated[str | None, typer.Option(help="HOST:PORT to listen on (default 127.0.0.1:9092)")] = None,
    advertise: Annotated[str | None, typer.Option(help="HOST:PORT clients are told to use")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="log directory (default ./odradek-data)")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="a server.properties file (Kafka key names)")] = None,
    zookeeper: Annotated[str | None, typer.Option(help="HOST:PORT/chroot of ZooKeeper: cluster mode")] = None,
    broker_id: Annotated[int | None, typer.Option("--broker-id", help="broker.id (cluster mode)")] = None,
    storage: Annotated[str | None, typer.Option(help="file (default) or memory")] = None,
    metrics_port: Annotated[int | None, typer.Option("--metrics-port", help="Prometheus /metrics port")] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
    console_listen: Annotated[str | None, typer.Option(
        "--console", help="HOST:PORT of a web console started beside the broker (loopback only)")] = None,
) -> None:
    """Run a broker: the embedded single-node default, or a cluster member with --zookeeper."""
    from odradek.config import ConfigError, load_config
    from odradek.server import initial_scram_user
    from odradek.server.app import configure_logging, run

    try:
        cfg = load_config(config, listen=listen, advertise=advertise, data_dir=data_dir, zookeeper=zookeeper,
                          broker_id=broker_id, storage=storage, metrics_port=metrics_port)
        if cfg.storage not in ("file", "memory"):
            raise ConfigError(f"--storage must be file or memory, not {cfg.storage!r}")
        cfg.listen_address  # noqa: B018 - validates HOST:PORT now, not after start-up
        cfg.advertised_address  # noqa: B018
        initial_scram_user.initial_user()  # ODRADEK_INITIAL_SCRAM_*: checked now, created at start
    except ConfigError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    configure_logging(log_level)
    initial_scram_user.register()
    beside = None
    if console_listen is not None:
        from odradek.cli.console import start_beside_broker

        beside = start_beside_broker(cfg, console_listen)  # its own process: the broker's loop stays its own
    try:
        run(cfg)
    except OSError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass
    finally:
        if beside is not None:
            beside.terminate()


app.add_typer(topic_app, name="topic", help="Topics: create, list, describe, delete, alter-config, delete-records.")
app.command()(produce)
app.command()(consume)
app.command()(health)
app.command()(demo)
app.command("console")(console)
app.add_typer(group_app, name="group", help="Consumer groups: list, describe (lag), delete, reset offsets.")
app.add_typer(txn_app, name="txn", help="Transactions: list, describe (like kafka-transactions.sh).")
cluster_app.command("rebalance")(rebalance)
cluster_app.command("decommission")(decommission)
app.add_typer(cluster_app, name="cluster", help="A cluster: up, down, info (local); rebalance, decommission (any).")
app.add_typer(partitions_app, name="partitions", help="Partitions: reassign (like kafka-reassign-partitions.sh).")
app.add_typer(deploy_app, name="deploy")
app.add_typer(user_app, name="user", help="SCRAM users: create, update, list, delete (AlterUserScramCredentials).")
app.add_typer(acl_app, name="acl", help="ACLs: create, list, delete (like kafka-acls.sh / rpk acl).")
app.add_typer(cert_app, name="cert", help="Certificates for trying TLS and SASL_SSL out locally: dev.")


def main() -> None:
    app(prog_name="odradek")


if __name__ == "__main__":
    main()
