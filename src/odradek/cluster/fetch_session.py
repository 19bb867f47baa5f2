"""The fetching side of a fetch session (KIP-227, Kafka's FetchSessionHandler), for the follower's fetcher.

The first fetch to a leader is full, with epoch 0; when the leader answers a session id, the
next fetches are incremental: only the partitions whose fetch position (or leader epoch, log
start offset) changed since the last request, the ones no longer fetched as forgotten topics,
and the epoch counting up from 1. An error about the session (FETCH_SESSION_ID_NOT_FOUND,
INVALID_FETCH_SESSION_EPOCH), a lost connection or an answer without a session make the next
fetch full again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kio.schema.errors import ErrorCode

TopicPartition = tuple[str, int]
# what the leader must know of a partition: (fetch offset, current leader epoch, log start offset)
Position = tuple[int, int, int]

SESSION_ERRORS = (ErrorCode.fetch_session_id_not_found, ErrorCode.invalid_fetch_session_epoch)


@dataclass
class FetchSessionHandler:
    session_id: int = 0
    epoch: int = 0  # 0: the next fetch is full and opens a session
    sent: dict[TopicPartition, Position] = field(default_factory=dict)  # what the session holds

    def build(self, wanted: dict[TopicPartition, Position]) -> tuple[int, int, dict[TopicPartition, Position],
                                                                     list[TopicPartition]]:
        """(session id, epoch, the partitions to send, the partitions to forget) for the next fetch."""
        if self.epoch == 0:
            return self.session_id, 0, dict(wanted), []
        changed = {tp: pos for tp, pos in wanted.items() if self.sent.get(tp) != pos}
        forgotten = [tp for tp in self.sent if tp not in wanted]
        return self.session_id, self.epoch, changed, forgotten

    def sent_request(self, wanted: dict[TopicPartition, Position]) -> None:
        """The session now holds `wanted` at these positions (once the answer confirms it)."""
        self.sent = dict(wanted)

    def handle_response(self, response: Any, epoch_sent: int) -> bool:
        """Follow the leader's answer; False when it refused the session (the next fetch is full)."""
        if response.error_code == ErrorCode.fetch_session_id_not_found:
            self.reset(close_existing=False)
            return False
        if response.error_code != ErrorCode.none:  # INVALID_FETCH_SESSION_EPOCH or worse
            self.reset()
            return False
        if epoch_sent == 0:
            self.session_id = response.session_id
            self.epoch = 1 if response.session_id != 0 else 0  # no session: every fetch stays full
        else:
            self.epoch = self.epoch + 1 if self.epoch < 2**31 - 1 else 1
        return True

    def reset(self, *, close_existing: bool = True) -> None:
        """The next fetch is full; with `close_existing` it names the old session, which the
        leader then drops (Kafka's FetchMetadata.nextCloseExisting)."""
        if not close_existing:
            self.session_id = 0
        self.epoch = 0
        self.sent = {}
