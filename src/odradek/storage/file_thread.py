"""The process's log directory work on one thread, in order: new logs' directories and files,
deleted logs' renames (Kafka's `-delete` suffix) and removals, the checkpoint files after a
deletion. Off the event loop: one mkdir or rename a partition held it seconds for thousands.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from odradek.storage.log import PartitionLog

log = logging.getLogger("odradek.storage")

DELETE_SUFFIX = "-delete"

# The process's log directory work, in order, on one thread: new logs' directories and files,
# deleted logs' renames and removals. A job list drained by one submitted task (a submit per
# log cost the event loop more than the log itself).
_file_worker: ThreadPoolExecutor | None = None
_jobs: deque[Callable[[], object]] = deque()
# A deleted log's directory -> the `-delete` name it gets, until the file thread renames it (or
# a new log of the same partition, about to write there, does it first: settle_rename)
_pending_renames: dict[Path, Path] = {}
_renames_lock = threading.Lock()


def in_file_thread(job: Callable[[], object]) -> None:
    """Run `job` on the process's log file thread, after every job queued before it."""
    global _file_worker
    _jobs.append(job)
    if len(_jobs) == 1:
        if _file_worker is None:
            _file_worker = ThreadPoolExecutor(1, thread_name_prefix="odradek-log-files")
        _file_worker.submit(_drain)


def _drain() -> None:
    while True:
        try:
            job = _jobs[0]
        except IndexError:
            return
        try:
            job()
        except OSError as exc:  # a created log's first write makes its files, or says why not
            log.warning("log file work failed: %s", exc)
        _jobs.popleft()


def wait_for_file_jobs() -> None:
    """Block until every job queued so far is done (a stopping broker: a restart in the same
    process, or the next test's broker in the same data dir, must not race its file work)."""
    if _file_worker is not None:
        _file_worker.submit(lambda: None).result()  # runs after the drain that holds the queued jobs


def remove_later(directory: Path) -> None:
    """rmtree in the background (a stop waits for it at exit)."""
    in_file_thread(lambda: shutil.rmtree(directory, ignore_errors=True))


def materialize_later(plog: PartitionLog) -> None:
    in_file_thread(plog.materialize)


def delete_later(directory: Path) -> None:
    """Rename a deleted log's directory `<dir>.<id>-delete` (Kafka's name: never opened as a log
    again) and remove it, in the background."""
    with _renames_lock:
        if directory in _pending_renames:  # its earlier deletion still waits: nothing new is there
            return
        gone = _pending_renames[directory] = directory.with_name(f"{directory.name}.{uuid.uuid4().hex}{DELETE_SUFFIX}")

    def job() -> None:
        settle_rename(directory)
        shutil.rmtree(gone, ignore_errors=True)

    in_file_thread(job)


def settle_rename(directory: Path) -> None:
    """If a deletion of `directory` waits for its rename, rename it now."""
    with _renames_lock:
        gone = _pending_renames.pop(directory, None)
        if gone is not None:
            try:
                os.rename(directory, gone)
            except FileNotFoundError:  # the deleted log never had files
                pass
