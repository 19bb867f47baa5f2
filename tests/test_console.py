"""The web console end to end: Debian's Chromium, driven by Playwright, against `odradek
console` (a process of its own, as a user runs it) and a real odradek broker.

What a user does on the pages: create a topic (and read the one-sentence answer to an
invalid name), produce a record with key, value and headers, find it again by offset and by
key, edit a topic config, watch a group's lag fall while a consumer runs, reset the group's
offsets after their preview, and log in over SASL as a principal whose ACLs deny a topic.
The screenshots of the README's "Console" section (docs/console/*.png) are taken here: into a
temporary directory, or into the directory ODRADEK_CONSOLE_SCREENSHOTS names (relative to the
repository), so `ODRADEK_CONSOLE_SCREENSHOTS=docs/console pytest tests/test_console.py` refreshes
the README's and a plain run leaves the tree as it was.
Tests marked kafka_behaviour run against Apache Kafka too (`pytest --kafka`): the console
speaks only the Kafka protocol, so its pages must work there as well.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from conftest import ROOT, BrokerProcess, free_port, module_broker, unique, wait_for_port
from playwright.sync_api import Browser, Page, expect, sync_playwright

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FAST = {"ODRADEK_GROUP_INITIAL_REBALANCE_DELAY_MS": "0", "ODRADEK_OFFSETS_TOPIC_NUM_PARTITIONS": "3"}
ALICE_PASSWORD = "alice-pass-5e1f"

console_broker = module_broker("console_broker", env=FAST)
expect.set_options(timeout=20_000)  # pages wait on the cluster; the machine running the tests may be busy


class ConsoleProcess:
    """`odradek console` on a free loopback port, its output kept in a file."""

    def __init__(self, log_dir: Path, bootstrap: str, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = log_dir / f"console-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - open as long as the process runs
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "odradek", "console", "-b", bootstrap, "--listen", f"127.0.0.1:{self.port}",
             *extra], stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)
        wait_for_port(self.port, timeout=60, proc=self.proc)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
        self._log.close()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def console(console_broker: BrokerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleProcess]:
    c = ConsoleProcess(tmp_path_factory.mktemp("console"), console_broker.bootstrap)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(20_000)
    p = context.new_page()
    yield p
    context.close()


@pytest.fixture(scope="module", autouse=True)
def _screenshot_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Where shot() writes: ODRADEK_CONSOLE_SCREENSHOTS, else a temporary directory. The README
    shows odradek's pages: a run against Apache Kafka (--kafka) writes to a temporary one always."""
    wanted = os.environ.get("ODRADEK_CONSOLE_SCREENSHOTS")
    if wanted and not request.config.getoption("--kafka"):
        SHOTS["dir"] = ROOT / wanted
    else:
        SHOTS["dir"] = tmp_path_factory.mktemp("console-screenshots")


SHOTS: dict[str, Path] = {}


def shot(page: Page, name: str) -> None:
    page.evaluate("window.scrollTo(0, 0)")
    SHOTS["dir"].mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS["dir"] / f"{name}.png"))


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    client = admin(bootstrap)  # kept until the answer: a dropped handle cancels its futures
    client.create_topics([NewTopic(name, partitions, 1)])[name].result(15)


def produce(bootstrap: str, topic: str, records: list[tuple[str, str]], partition: int = 0) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for key, value in records:
        producer.produce(topic, value.encode(), key.encode(), partition=partition)
    assert producer.flush(15) == 0


def browse_ready(page: Page) -> None:
    """The message browser has drawn its first page (so later clicks are not overwritten by it)."""
    expect(page.locator("#msg-info")).to_contain_text("scanned")


# -- topics, produce, browse -----------------------------------------------------------

@pytest.mark.kafka_behaviour
def test_create_a_topic_produce_and_find_the_record_by_offset_and_by_key(
        page: Page, console: ConsoleProcess, console_broker: BrokerProcess) -> None:
    topic = unique("orders")
    page.goto(console.url + "#/topics")
    page.fill("#new-topic-name", topic)
    page.fill("#new-topic-partitions", "2")
    page.click("#create-topic-button")
    expect(page.locator("#create-topic .note")).to_have_text(f"Created topic {topic}.")
    expect(page.locator(f'tr[data-topic="{topic}"] td').nth(1)).to_have_text("2")
    page.fill("#topic-search", "orders-")
    expect(page.locator("#topic-list p")).to_contain_text("of")
    assert all("orders-" in name for name in page.locator("tr[data-topic]").evaluate_all(
        "rows => rows.map(r => r.dataset.topic)"))
    shot(page, "topics")

    produce(console_broker.bootstrap, topic, [(f"filler-{i}", f"value {i}") for i in range(40)])
    page.goto(console.url + f"#/messages/{topic}?produce=1")
    browse_ready(page)
    page.fill("#produce-key", "order-7")
    page.fill("#produce-value", '{"item": "lamp", "qty": 2}')
    page.locator("#produce-headers .hk").first.fill("source")
    page.locator("#produce-headers .hv").first.fill("console")
    page.select_option("#produce-partition", "0")
    page.click("#produce-button")
    expect(page.locator("#produce-form .note")).to_have_text(f"Produced to {topic} partition 0 at offset 40.")

    # the record is in the log as the page sent it
    consumer = Consumer({"bootstrap.servers": console_broker.bootstrap, "group.id": unique("check")})
    consumer.assign([TopicPartition(topic, 0, 40)])
    msg = consumer.consume(1, 15)[0]
    consumer.close()
    assert (msg.key(), json.loads(msg.value()), msg.headers()) == (
        b"order-7", {"item": "lamp", "qty": 2}, [("source", b"console")])

    # by offset: partition 0 from offset 40
    page.select_option("#msg-partition", "0")
    page.select_option("#msg-start", "offset")
    page.fill("#msg-value", "38")
    page.click("#msg-go")
    rows = page.locator("#msg-list tbody tr")
    expect(rows).to_have_count(3)  # 38, 39, 40: the page stops at the log end offset
    row = page.locator('#msg-list tr[data-offset="40"]')
    expect(row.locator("td").nth(3)).to_have_text("order-7")
    expect(row.locator('pre[data-format="json"]')).to_contain_text('"item": "lamp"')
    expect(row.locator("td").nth(5)).to_have_text("source: console")
    page.select_option("#msg-format", "hex")
    expect(row.locator("td").nth(3)).to_have_text("6f 72 64 65 72 2d 37")  # "order-7"

    # by key: every partition from the oldest record, filtered on the key
    page.select_option("#msg-format", "auto")
    page.select_option("#msg-partition", "all")
    page.select_option("#msg-start", "oldest")
    page.fill("#msg-filter", "order-7")
    page.select_option("#msg-where", "key")
    page.click("#msg-go")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-offset", "40")
    expect(page.locator("#msg-info")).to_contain_text("1 record(s) shown, 41 scanned")
    shot(page, "messages")


@pytest.mark.kafka_behaviour
def test_the_message_browser_pages_through_a_partition(
        page: Page, console: ConsoleProcess, console_broker: BrokerProcess) -> None:
    topic = unique("paged")
    create_topic(console_broker.bootstrap, topic)
    produce(console_broker.bootstrap, topic, [(f"k{i}", f"v{i}") for i in range(120)])
    page.goto(console.url + f"#/messages/{topic}")
    browse_ready(page)
    rows = page.locator("#msg-list tbody tr")
    expect(rows.first).to_have_attribute("data-offset", "70")  # newest: the last page of 50
    expect(rows).to_have_count(50)
    page.click("#msg-older")
    expect(rows.first).to_have_attribute("data-offset", "20")
    expect(rows.last).to_have_attribute("data-offset", "69")
    page.click("#msg-newer")
    expect(rows.first).to_have_attribute("data-offset", "70")
    expect(page.locator("#msg-newer")).to_be_disabled()
    # by time: a time before the first record starts at the oldest, one after the last at the end
    page.select_option("#msg-start", "timestamp")
    page.fill("#msg-value", "2001-01-01T00:00:00")
    page.click("#msg-go")
    expect(rows.first).to_have_attribute("data-offset", "0")
    page.fill("#msg-value", str(int(time.time() * 1000) + 3_600_000))
    page.click("#msg-go")
    expect(rows).to_have_count(0)
    expect(page.locator("#msg-info")).to_contain_text("0 record(s) shown")


@pytest.mark.kafka_behaviour
def test_follow_live_shows_records_as_they_arrive(
        page: Page, console: ConsoleProcess, console_broker: BrokerProcess) -> None:
    topic = unique("live")
    create_topic(console_broker.bootstrap, topic, 2)
    page.goto(console.url + f"#/messages/{topic}")
    browse_ready(page)
    page.check("#msg-follow")
    expect(page.locator("#msg-info")).to_contain_text("following")
    produce(console_broker.bootstrap, topic, [("live-key", "first live value")], partition=1)
    expect(page.locator("#msg-list")).to_contain_text("first live value")
    produce(console_broker.bootstrap, topic, [("live-key", "second live value")], partition=0)
    expect(page.locator("#msg-list")).to_contain_text("second live value")
    expect(page.locator("#msg-list tbody tr")).to_have_count(2)


@pytest.mark.kafka_behaviour
def test_a_page_ends_at_a_partition_whose_last_offsets_are_transaction_markers(
        page: Page, console: ConsoleProcess, console_broker: BrokerProcess) -> None:
    topic, tid = unique("txn"), unique("tid")
    create_topic(console_broker.bootstrap, topic)
    producer = Producer({"bootstrap.servers": console_broker.bootstrap, "transactional.id": tid})
    producer.init_transactions(15)
    for _ in range(2):
        producer.begin_transaction()
        for i in range(3):
            producer.produce(topic, f"v{i}".encode(), b"k", partition=0)
        producer.commit_transaction(15)
    started = time.monotonic()
    with urllib.request.urlopen(console.url + f"api/topics/{topic}/messages?start=oldest&filter=absent",
                                timeout=30) as response:
        page_data = json.load(response)
    # 6 records and 2 commit markers: the page scans the records and knows it reached the end
    assert (page_data["scanned"], page_data["next"], page_data["at_end"]) == (6, "0:8", True)
    assert time.monotonic() - started < 4  # not the page's 5 s budget

    # the transactions page lists the id and describes it (ListTransactions, DescribeTransactions)
    page.goto(console.url + "#/transactions")
    page.get_by_role("link", name=tid).click()
    detail = page.locator("#txn-detail")
    expect(detail).to_contain_text("CompleteCommit")
    expect(detail.locator("tr", has_text="producer_epoch")).to_be_visible()


@pytest.mark.kafka_behaviour
def test_scram_users_and_acls_from_the_page(page: Page, console: ConsoleProcess) -> None:
    user = unique("bob")
    page.goto(console.url + "#/security")
    form = page.locator("#user-form")
    form.locator('input[name="name"]').fill(user)
    form.locator('input[name="password"]').fill("bob-secret-77")
    form.locator('select[name="mechanism"]').select_option("SCRAM-SHA-256")
    form.locator('input[name="iterations"]').fill("4096")
    form.locator("button[type=submit]").click()
    expect(form.locator(".note")).to_have_text(f"Saved the SCRAM-SHA-256 credential of {user}.")
    expect(page.locator("#user-list tr", has_text=user)).to_contain_text("SCRAM-SHA-256")
    form.locator('input[name="name"]').fill(user)
    form.locator('input[name="password"]').fill("bob-secret-78")
    form.locator('input[name="iterations"]').fill("12")
    form.locator("button[type=submit]").click()
    expect(form.locator(".error")).to_have_text("iterations must be between 4096 and 16384")
    page.locator("#user-list tr", has_text=user).get_by_role("button", name="Delete").click()
    expect(page.locator("#user-list tr", has_text=user)).to_have_count(0)

    acl = page.locator("#acl-form")
    acl.locator('input[name="principal"]').fill("alice")
    acl.locator('input[name="resource_name"]').fill("orders")
    acl.locator("button[type=submit]").click()
    expect(acl.locator(".error")).to_contain_text("(as in User:alice)")
    acl.locator('input[name="principal"]').fill("User:alice")
    acl.locator('select[name="operation"]').select_option("CLUSTER_ACTION")
    acl.locator("button[type=submit]").click()
    expect(acl.locator(".error")).to_contain_text("CLUSTER_ACTION is not an operation of a topic")
    acl.locator('select[name="operation"]').select_option("READ")
    acl.locator("button[type=submit]").click()
    # this broker runs no authorizer, and answers as Kafka does
    error = acl.locator(".error")
    expect(error).to_contain_text("cannot create the ACL: No Authorizer is configured")
    expect(error).to_contain_text(re.compile(r"\(SECURITY_DISABLED\)$"))


@pytest.mark.kafka_behaviour
def test_an_invalid_topic_name_is_answered_in_one_sentence(page: Page, console: ConsoleProcess) -> None:
    page.goto(console.url + "#/topics")
    page.fill("#new-topic-name", "no spaces allowed!")
    page.click("#create-topic-button")
    error = page.locator("#create-topic .error")
    expect(error).to_contain_text("cannot create topic no spaces allowed!: ")
    text = error.inner_text()
    assert re.fullmatch(r"cannot create topic no spaces allowed!: [^\n]+ \([A-Z_]+\)", text), text
    assert "Traceback" not in text


@pytest.mark.kafka_behaviour
def test_edit_a_topic_config(page: Page, console: ConsoleProcess, console_broker: BrokerProcess) -> None:
    topic = unique("configs")
    create_topic(console_broker.bootstrap, topic, 3)
    produce(console_broker.bootstrap, topic, [(f"k{i}", "x" * 100) for i in range(20)], partition=1)
    page.goto(console.url + f"#/topic/{topic}")
    row = page.locator('tr[data-partition-row="1"] td')
    expect(row.nth(1)).to_have_text(re.compile(r"^\d+$"))  # the leader's id
    expect(row.nth(5)).to_have_text("20")  # log end offset
    # odradek serves DescribeLogDirs: the sizes of the partitions' logs
    expect(page.locator('[data-size="1"]')).to_have_text(re.compile(r"^\d+(\.\d)? (B|KiB)$"))
    expect(page.locator('[data-size="0"]')).to_have_text("0 B")
    page.click('[data-config-edit="retention.ms"]')
    page.fill('[data-config-input="retention.ms"]', "3600000")
    page.click('[data-config-save="retention.ms"]')
    expect(page.locator('[data-config-value="retention.ms"]')).to_have_text("3600000")
    expect(page.locator('tr[data-config="retention.ms"] td').nth(2)).to_have_text("topic")
    resource = ConfigResource("topic", topic)
    client = admin(console_broker.bootstrap)
    configs = client.describe_configs([resource])[resource].result(15)
    assert configs["retention.ms"].value == "3600000"
    shot(page, "topic")

    page.click('[data-config-edit="retention.ms"]')  # the page was drawn again after the change
    page.fill('[data-config-input="retention.ms"]', "soon")
    page.click('[data-config-save="retention.ms"]')
    error = page.locator('tr[data-config="retention.ms"] .error')
    expect(error).to_contain_text(f"cannot set retention.ms of {topic}: ")
    assert "\n" not in error.inner_text()

    page.click("#delete-topic")
    expect(page.locator("#delete-topic")).to_have_text(f"Really delete {topic}?")  # asks once more
    page.click("#delete-topic")
    expect(page.locator("#topic-list")).to_be_visible()
    expect(page.locator(f'tr[data-topic="{topic}"]')).to_have_count(0)


# -- groups ----------------------------------------------------------------------------

@pytest.mark.kafka_behaviour
def test_watch_a_groups_lag_fall_then_reset_its_offsets_after_a_preview(
        browser: Browser, page: Page, console: ConsoleProcess, console_broker: BrokerProcess) -> None:
    bootstrap = console_broker.bootstrap
    topic, group = unique("lag"), unique("readers")
    create_topic(bootstrap, topic)
    produce(bootstrap, topic, [(f"k{i}", f"v{i}") for i in range(300)])
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    read = 0
    deadline = time.monotonic() + 20
    while read < 10 and time.monotonic() < deadline:
        read += len([m for m in consumer.consume(10 - read, 1.0) if m.error() is None])
    consumer.commit(asynchronous=False)

    boss = admin(bootstrap)
    page.goto(console.url + f"#/group/{group}")
    lag = page.locator("#total-lag")
    expect(lag).to_have_text("290")
    expect(page.locator("#group-state")).to_have_text("Stable")
    overview = page.context.new_page()
    overview.goto(console.url + "#/overview")

    def run() -> None:
        nonlocal read
        while read < 300:
            read += len([m for m in consumer.consume(25, 1.0) if m.error() is None])
            consumer.commit(asynchronous=False)
            time.sleep(0.5)

    runner = threading.Thread(target=run)
    runner.start()
    seen = ["290"]
    deadline = time.monotonic() + 45
    while seen[-1] != "0" and time.monotonic() < deadline:
        now = lag.inner_text()
        if now != seen[-1]:
            seen.append(now)
        time.sleep(0.2)
    runner.join(30)
    lags = [int(x.replace(",", "")) for x in seen]
    assert lags[-1] == 0 and lags == sorted(lags, reverse=True), seen
    assert any(0 < x < 290 for x in lags), f"the page never showed the lag falling: {seen}"
    expect(overview.locator('[data-card="Consume rate"] .v')).to_contain_text("msg/s")
    shot(overview, "overview")
    overview.close()

    consumer.close()  # leaves the group: a reset needs it without members
    expect(page.locator("#group-state")).to_have_text("Empty", timeout=30_000)
    page.select_option("#reset-topic", topic)
    page.select_option("#reset-to", "earliest")
    page.click("#reset-preview-button")
    preview = page.locator('#reset-preview tr[data-partition="0"] td')
    expect(preview.nth(1)).to_have_text("300")  # current
    expect(preview.nth(2)).to_have_text("0")  # new
    committed = boss.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(15)
    assert [tp.offset for tp in committed.topic_partitions] == [300]  # a preview commits nothing
    shot(page, "group")
    page.click("#reset-execute")
    expect(page.locator("#reset-form .note")).to_have_text(f"Reset the offsets of {group} on {topic}.")
    committed = boss.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(15)
    assert [tp.offset for tp in committed.topic_partitions] == [0]
    expect(lag).to_have_text("300")


# -- SASL: the page logs in and acts as that principal ----------------------------------

def test_a_sasl_login_acts_as_a_principal_whose_acls_deny_a_topic(
        page: Page, broker_factory: Any, tmp_path: Path) -> None:
    sasl_port = free_port()
    broker = broker_factory(env={
        **FAST, "ODRADEK_LISTENERS": f"PLAINTEXT://127.0.0.1:{{port}},SASL_PLAINTEXT://127.0.0.1:{sasl_port}",
        "ODRADEK_SASL_ENABLED_MECHANISMS": "SCRAM-SHA-512",
        "ODRADEK_AUTHORIZER_CLASS_NAME": "kafka.security.authorizer.AclAuthorizer",
        "ODRADEK_SUPER_USERS": "User:ANONYMOUS"})  # the test's own set-up, over PLAINTEXT
    wait_for_port(sasl_port)
    boss = admin(broker.bootstrap)
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
    boss.alter_user_scram_credentials([UserScramCredentialUpsertion("alice", info, ALICE_PASSWORD.encode())])[
        "alice"].result(15)
    shared, secret = unique("shared"), unique("secret")
    for name in (shared, secret):
        create_topic(broker.bootstrap, name)
    acls = [AclBinding(ResourceType.TOPIC, shared, ResourcePatternType.LITERAL, "User:alice", "*", op,
                       AclPermissionType.ALLOW) for op in (AclOperation.DESCRIBE, AclOperation.READ)]
    for future in boss.create_acls(acls).values():
        future.result(15)

    console = ConsoleProcess(tmp_path, f"127.0.0.1:{sasl_port}", "-X", "security.protocol=SASL_PLAINTEXT",
                             "-X", "sasl.mechanism=SCRAM-SHA-512")
    try:
        page.goto(console.url + "#/topics")
        expect(page.locator("#login-form")).to_be_visible()
        page.fill("#login-user", "alice")
        page.fill("#login-password", "not-her-password")
        page.click("#login-form button[type=submit]")
        error = page.locator("#login-form .error")
        expect(error).to_contain_text("cannot log in to")
        assert "\n" not in error.inner_text()
        page.fill("#login-password", "")
        shot(page, "login")
        page.fill("#login-password", ALICE_PASSWORD)
        page.click("#login-form button[type=submit]")
        expect(page.locator("#who")).to_contain_text("as User:alice")
        expect(page.locator(f'tr[data-topic="{shared}"]')).to_be_visible()
        expect(page.locator(f'tr[data-topic="{secret}"]')).to_have_count(0)  # DESCRIBE denied: not listed

        page.goto(console.url + f"#/topic/{secret}")
        expect(page.locator("main .error").first).to_contain_text("TOPIC_AUTHORIZATION_FAILED")
        page.goto(console.url + f"#/messages/{shared}?produce=1")
        browse_ready(page)
        page.fill("#produce-value", "from alice")
        page.click("#produce-button")  # READ and DESCRIBE only: WRITE is denied
        expect(page.locator("#produce-form .error")).to_contain_text("TOPIC_AUTHORIZATION_FAILED")

        # another browser without the cookie is asked to log in; the secret never reaches the log
        anonymous = urllib.request.Request(console.url + "api/topics")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(anonymous, timeout=15)
        assert refused.value.code == 401
        assert ALICE_PASSWORD not in console.logs() and "not-her-password" not in console.logs()
        assert "console login as User:alice" in console.logs()
    finally:
        console.stop()


# -- where the console listens -----------------------------------------------------------

def test_the_console_guards_its_loopback_address(console: ConsoleProcess) -> None:
    def call(path: str, method: str = "GET", headers: dict[str, str] | None = None) -> int:
        request = urllib.request.Request(console.url + path, method=method, headers=headers or {},
                                         data=b"{}" if method == "POST" else None)
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    assert call("api/session") == 200
    assert call("api/session", headers={"Host": f"attacker.example:{console.port}"}) == 421  # DNS rebinding
    assert call("api/topics", "POST") == 403  # a change without the console's header (a cross-site form)
    refused = subprocess.run([sys.executable, "-m", "odradek", "console", "--listen", "0.0.0.0:18099"],
                             capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert refused.returncode == 2
    assert "not a loopback address" in refused.stderr and "--expose" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_serve_starts_the_console_beside_the_broker_and_stops_it_with_the_broker(broker_factory: Any) -> None:
    port = free_port()
    broker = broker_factory("--console", f"127.0.0.1:{port}", env=FAST)
    wait_for_port(port, timeout=60)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/overview", timeout=30) as response:
        overview = json.load(response)
    assert [b["port"] for b in overview["brokers"]] == [broker.port]
    broker.stop()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/session", timeout=1)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return
        time.sleep(0.2)
    pytest.fail("the console still answers after its broker stopped")
