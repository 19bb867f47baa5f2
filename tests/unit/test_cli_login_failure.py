"""The CLI says why a listener hung up (cli/common.Client.login_failure), from librdkafka's last
connection failure, instead of waiting out its timeout."""

from __future__ import annotations

import pytest

from odradek.cli.common import Client


@pytest.mark.parametrize("failure", [
    "127.0.0.1:9092/bootstrap: Connection closed by peer (after 2ms in state UP)",
    # the listener closed with the client's next request unread: the kernel resets the connection
    "127.0.0.1:9092/bootstrap: Disconnected: connection reset by peer (after 0ms in state UP)",
])
def test_a_listener_that_hangs_up_after_api_versions_wants_a_sasl_login(failure: str) -> None:
    client = Client("127.0.0.1:9092")
    client._logging[1].text = failure
    reason = client.login_failure()
    assert reason is not None and "want a SASL login" in reason


def test_a_listener_that_hangs_up_at_the_first_request_wants_tls() -> None:
    client = Client("127.0.0.1:9092")
    client._logging[1].text = "127.0.0.1:9092/bootstrap: Disconnected while requesting ApiVersion: ... (after 0ms in state APIVERSION_QUERY)"
    reason = client.login_failure()
    assert reason is not None and "want TLS" in reason


def test_a_broker_that_is_not_there_is_not_a_login_failure() -> None:
    client = Client("127.0.0.1:9092")
    client._logging[1].text = "127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection refused (after 0ms in state CONNECT)"
    assert client.login_failure() is None
