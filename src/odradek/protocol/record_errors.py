"""The error of a record batch Kafka would refuse (records.py, compression.py)."""

from __future__ import annotations

from kio.schema.errors import ErrorCode


class InvalidRecordError(Exception):
    """A batch Kafka would refuse; `error_code` goes to the client."""

    def __init__(self, error_code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
