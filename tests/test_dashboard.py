"""The Grafana dashboard and the metrics it draws (issue 19, "Dashboards and metrics").

Every PromQL expression in deploy/grafana/odradek.json is read for the metric names
it queries, and each one must be on a real broker's /metrics with samples: a panel
never stays empty because of a renamed series. The values a user acts on are
checked too: consumer lag per group against known committed offsets, and the
under-replicated gauge of a 3-broker cluster when a follower dies (and the ISR
expansion when it comes back). The Kubernetes component that ships the dashboard
and a PodMonitor renders, and its objects line up with the brokers' pods.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cluster_fixtures import cluster_factory, zookeeper  # noqa: F401 - fixtures
from confluent_kafka import Consumer, Producer, TopicPartition
from conftest import BrokerProcess, free_port, unique
from test_clients import create_topic

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "src" / "odradek" / "deploy"
DASHBOARD = DEPLOY / "grafana" / "odradek.json"
COMPONENT = DEPLOY / "k8s" / "components" / "monitoring"

# -- PromQL: the metric names an expression selects ------------------------------------------

# PromQL's aggregation operators, keywords and functions the dashboard may call (a name
# followed by "(" is a function anyway; these also cover "by (...)" and friends)
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
            "count_values", "group", "inf", "nan"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: strings, label matchers, ranges, grouping
    label lists and Grafana's $variables are dropped; what is left that is not a function,
    keyword or number is a metric name."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', " ", expr)  # string literals (label values, quantiles' labels)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # $__rate_interval, ${datasource}, $instance
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = m.group(0)
        if word.lower() in KEYWORDS or text[m.end():].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def test_the_tokenizer_finds_metric_names_and_only_them() -> None:
    assert metric_names('histogram_quantile(0.99, sum by (request, le) (rate(a_bucket{instance=~"$instance"}'
                        '[$__rate_interval])))') == {"a_bucket"}
    assert metric_names("-sum(rate(b_total[5m])) / sum without (topic) (c)") == {"b_total", "c"}
    assert metric_names('label_values(kafka_x, instance)') == {"kafka_x", "instance"}  # see dashboard_queries


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in board["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # a collapsed row keeps its panels inside
    return out


def dashboard_queries(board: dict[str, Any]) -> dict[str, set[str]]:
    """{expression or variable query: metric names}, over every panel target and template variable."""
    queries = {t["expr"]: metric_names(t["expr"]) for p in panels(board) for t in p.get("targets", [])}
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query)
            assert m, f"variable {var['name']}: an unexpected query {query!r}"
            queries[query] = {m.group(1)}
    return queries


# -- /metrics ----------------------------------------------------------------------------------

def scrape(port: int) -> tuple[dict[str, float], dict[str, str]]:
    """({sample name with labels: value}, {family: type}) of one broker's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples, types


def series_names(samples: dict[str, float]) -> set[str]:
    return {key.split("{", 1)[0] for key in samples}


def missing_series(board: dict[str, Any], samples: dict[str, float], types: dict[str, str]) -> list[str]:
    """What a panel queries that /metrics does not have; _bucket/_sum/_count must be a histogram's,
    and whatever histogram_quantile reads must be buckets."""
    have = series_names(samples)
    missing = []
    for expr, names in dashboard_queries(board).items():
        for name in names:
            if name not in have:
                missing.append(f"{name} (queried by {expr})")
            elif name.endswith(HISTOGRAM_SUFFIXES) and types.get(name.rsplit("_", 1)[0]) == "histogram":
                continue
            elif name.endswith("_bucket"):
                missing.append(f"{name} is not a histogram's buckets")
        if "histogram_quantile" in expr:
            assert all(n.endswith("_bucket") for n in names), expr
    return missing


def lag_of(samples: dict[str, float], group: str, topic: str) -> dict[int, float]:
    out = {}
    for key, value in samples.items():
        if key.startswith("kafka_consumergroup_lag{") and f'consumergroup="{group}"' in key \
                and f'topic="{topic}"' in key:
            out[int(re.search(r'partition="(\d+)"', key).group(1))] = value  # type: ignore[union-attr]
    return out


def wait_until(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def until_none_missing(board: dict[str, Any], metrics: Any, timeout: float = 15.0) -> None:
    """Wait until /metrics has every series the dashboard queries; fail naming the missing ones."""
    deadline = time.monotonic() + timeout
    while (missing := missing_series(board, *metrics())) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert missing == []


def produce(bootstrap: str, topic: str, per_partition: dict[int, int]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for partition, n in per_partition.items():
        for i in range(n):
            p.produce(topic, value=b"v%d" % i, key=b"k%d" % i, partition=partition)
    assert p.flush(15) == 0


def consume_and_commit(bootstrap: str, topic: str, group: str, count: int) -> None:
    """A subscribed group member reads `count` records and commits where it stopped."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    try:
        c.subscribe([topic])
        seen = 0
        deadline = time.monotonic() + 30
        while seen < count and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and not msg.error():
                seen += 1
        assert seen == count
        c.commit(asynchronous=False)
    finally:
        c.close()


# -- a single broker ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def metrics_broker(tmp_path_factory: pytest.TempPathFactory) -> Any:
    port = free_port()
    b = BrokerProcess(tmp_path_factory.mktemp("dashboard") / "data", env={"ODRADEK_METRICS_PORT": str(port)})
    b.start()
    b.metrics_port = port  # type: ignore[attr-defined]
    yield b
    b.stop()


def test_every_series_the_dashboard_queries_is_on_metrics(metrics_broker: Any) -> None:
    topic, group = unique("dash"), unique("dash-group")
    create_topic(metrics_broker.bootstrap, topic, 2)
    produce(metrics_broker.bootstrap, topic, {0: 20, 1: 20})
    consume_and_commit(metrics_broker.bootstrap, topic, group, 40)
    # the lag series appear at the next refresh (every second)
    until_none_missing(dashboard(), lambda: scrape(metrics_broker.metrics_port))
    samples, types = scrape(metrics_broker.metrics_port)
    assert types["kafka_network_requestmetrics_totaltimems"] == "histogram"
    # the Summary's series a bench and older dashboards read are still there
    assert samples['kafka_network_requestmetrics_totaltimems_count{request="Produce"}'] >= 1
    assert samples['kafka_network_requestmetrics_totaltimems_sum{request="Produce"}'] > 0
    assert samples['kafka_network_requestmetrics_totaltimems_bucket{le="10000.0",request="Fetch"}'] >= 1
    assert samples["kafka_controller_kafkacontroller_activecontrollercount"] == 1  # a single node controls itself
    assert lag_of(samples, group, topic) == {0: 0, 1: 0}


def test_lag_series_is_high_watermark_minus_committed_offset(metrics_broker: Any) -> None:
    topic, group = unique("lag"), unique("lag-group")
    create_topic(metrics_broker.bootstrap, topic, 2)
    produce(metrics_broker.bootstrap, topic, {0: 10, 1: 10})
    c = Consumer({"bootstrap.servers": metrics_broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(topic, 0, 3), TopicPartition(topic, 1, 10)], asynchronous=False)
    finally:
        c.close()
    port = metrics_broker.metrics_port
    wait_until("the lag of both partitions", lambda: lag_of(scrape(port)[0], group, topic) == {0: 7, 1: 0})
    samples = scrape(port)[0]
    labels = f'consumergroup="{group}",partition="0",topic="{topic}"'
    assert samples[f"kafka_consumergroup_current_offset{{{labels}}}"] == 3
    assert samples[f'kafka_consumergroup_lag_sum{{consumergroup="{group}",topic="{topic}"}}'] == 7
    produce(metrics_broker.bootstrap, topic, {0: 5})  # the log grows: the lag follows the high watermark
    wait_until("the lag to follow new records", lambda: lag_of(scrape(port)[0], group, topic) == {0: 12, 1: 0})


# -- a 3-broker cluster -------------------------------------------------------------------------

def test_under_replicated_and_offline_gauges_rise_when_a_broker_is_killed(cluster_factory: Any) -> None:  # noqa: F811
    cluster = cluster_factory(3, env={"ODRADEK_METRICS_PORT": "{port2}"})
    topic, group = unique("ur"), unique("ur-group")
    cluster.create_topic(topic, partitions=1, rf=3)
    leader = cluster.wait_leader(topic, 0, isr_size=3).leader
    produce(cluster.bootstrap, topic, {0: 10})
    consume_and_commit(cluster.bootstrap, topic, group, 10)
    by_id = {b.broker_id: b for b in cluster.brokers}
    board = dashboard()

    def union() -> tuple[dict[str, float], dict[str, str]]:
        samples: dict[str, float] = {}
        types: dict[str, str] = {}
        for b in cluster.brokers:
            if b.alive:
                s, t = scrape(b.port2)
                samples.update({f"{k}@{b.broker_id}": v for k, v in s.items()})
                types.update(t)
        return samples, types

    def merged() -> tuple[dict[str, float], dict[str, str]]:  # lag is on the group's coordinator only
        samples, types = union()
        return {k.rsplit("@", 1)[0]: v for k, v in samples.items()}, types

    until_none_missing(board, merged)
    # one partition per broker: the group's coordinator holds one of them, and asks the
    # leaders of the others for their latest offsets
    spread = unique("spread")
    cluster.create_topic(spread, partitions=3, rf=1)
    assert len({cluster.partition(spread, p).leader for p in range(3)}) == 3
    produce(cluster.bootstrap, spread, {0: 5, 1: 5, 2: 5})
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(spread, p, p + 1) for p in range(3)], asynchronous=False)
    finally:
        c.close()
    wait_until("the lag of partitions led by other brokers", lambda: lag_of(
        {k.rsplit("@", 1)[0]: v for k, v in union()[0].items()}, group, spread) == {0: 4, 1: 3, 2: 2})
    gauge = "kafka_server_replicamanager_underreplicatedpartitions"
    # 0 once every replica is in sync (a follower a loaded machine held back may be out for a moment)
    wait_until("no under-replicated partition on the leader", lambda: scrape(by_id[leader].port2)[0][gauge] == 0)
    controllers = [b for b in cluster.brokers
                   if scrape(b.port2)[0]["kafka_controller_kafkacontroller_activecontrollercount"] == 1]
    assert len(controllers) == 1
    assert all(scrape(b.port2)[0]["kafka_controller_controllerstats_controllerchangerateandtimems_total"] >= 1
               for b in cluster.brokers)
    victim = next(b for b in cluster.brokers if b.broker_id not in (leader, controllers[0].broker_id))
    offline = "kafka_controller_kafkacontroller_offlinepartitionscount"
    assert scrape(controllers[0].port2)[0][offline] == 0
    victim.kill()
    wait_until("the leader to count its partition under-replicated",
               lambda: scrape(by_id[leader].port2)[0][gauge] >= 1)
    # the victim's replica of the spread topic was its only one: offline, as the controller counts
    wait_until("one offline partition", lambda: scrape(controllers[0].port2)[0][offline] == 1)
    assert all(scrape(b.port2)[0][offline] == 0 for b in cluster.brokers if b.alive and b is not controllers[0])
    expands = scrape(by_id[leader].port2)[0]["kafka_server_replicamanager_isrexpands_total"]
    victim.start()  # back: it catches up, the leader takes it into the ISR again
    wait_until("the ISR to expand and the gauges to fall", lambda: (
        (s := scrape(by_id[leader].port2)[0])[gauge] == 0
        and s["kafka_server_replicamanager_isrexpands_total"] > expands
        and scrape(controllers[0].port2)[0][offline] == 0), timeout=60)


# -- the dashboard file and its Kubernetes component ------------------------------------------

def test_dashboard_panels_are_well_formed() -> None:
    board = dashboard()
    assert {v["name"] for v in board["templating"]["list"]} >= {"datasource", "instance"}
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    titles = set()
    for p in panels(board):
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        titles.add(p["title"])
        assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
        for t in p["targets"]:
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
            assert '{instance=~"$instance"}' in t["expr"], t["expr"]
    for wanted in ("Messages in / s by topic", "Bytes in / out", "Request latency p99 by API",
                   "Under-replicated and offline partitions", "ISR shrinks / expands", "Consumer lag by group",
                   "Log size by topic", "Controller changes", "Connections by broker", "Event-loop lag p99 / mean"):
        assert wanted in titles


def render_with_monitoring(tmp_path: Path, overlay: str) -> list[dict[str, Any]]:
    """`kubectl kustomize` of an overlay of one's own: a shipped overlay plus the monitoring component,
    as the component's comment tells users to write it."""
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({  # kustomize takes relative paths
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "odradek",
        "resources": [os.path.relpath(DEPLOY / "k8s" / overlay, tmp_path)],
        "components": [os.path.relpath(COMPONENT, tmp_path)]}))
    out = subprocess.run(["kubectl", "kustomize", str(tmp_path)], check=True, capture_output=True, text=True,
                         timeout=60).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.parametrize("overlay", ["single", "cluster"])
def test_monitoring_component_scrapes_every_broker_and_ships_the_dashboard(tmp_path: Path, overlay: str) -> None:
    objects = render_with_monitoring(tmp_path, overlay)
    crds = [o for o in objects if o["apiVersion"].startswith("monitoring.coreos.com/")]
    for obj in objects:
        if obj not in crds:  # the operator's CRDs are not among the schemas kubernetes-validate knows
            kubernetes_validate.validate(obj, "1.32.0", strict=True)
        assert obj["kind"] == "Namespace" or obj["metadata"]["namespace"] == "odradek", obj["metadata"]["name"]
    [monitor] = crds
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    assert set(monitor["spec"]) <= {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel"}
    [sts] = [o for o in objects if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "odradek"]
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    others = [o for o in objects if o["kind"] == "StatefulSet" and o is not sts]  # ZooKeeper is not a broker
    assert all(not monitor["spec"]["selector"]["matchLabels"].items() <= o["spec"]["template"]["metadata"]
               ["labels"].items() for o in others)
    [broker] = [c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "odradek"]
    ports = {p["name"]: p["containerPort"] for p in broker["ports"]}
    env = {e["name"]: e.get("value") for e in broker.get("env", [])}
    config = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "odradek-config")
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "relabelings"}
        assert endpoint["path"] == "/metrics"
        assert ports[endpoint["port"]] == int(env.get("ODRADEK_METRICS_PORT") or config["data"]["ODRADEK_METRICS_PORT"])
        assert re.fullmatch(r"\d+[smh]", endpoint["interval"])
        for rule in endpoint.get("relabelings", []):
            assert set(rule) <= {"sourceLabels", "targetLabel", "action", "regex", "replacement", "separator"}
    [board] = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"].get("labels", {})
               .get("grafana_dashboard") == "1"]
    assert json.loads(board["data"]["odradek.json"]) == dashboard()
    assert len(json.dumps(board)) < 256 * 1024  # kubectl apply's last-applied annotation must hold it


def test_component_copy_of_the_dashboard_is_the_dashboard() -> None:
    assert (COMPONENT / "odradek.json").read_bytes() == DASHBOARD.read_bytes(), (
        "copy src/odradek/deploy/grafana/odradek.json to deploy/k8s/components/monitoring/ after editing it")


def test_default_overlays_need_no_prometheus_operator() -> None:
    for rendered in (DEPLOY / "k8s" / "rendered").glob("*.yaml"):
        kinds = {(d["apiVersion"], d["kind"]) for d in yaml.safe_load_all(rendered.read_text()) if d}
        assert not any(api.startswith("monitoring.coreos.com/") for api, _ in kinds), rendered.name
