"""LogManager: every partition log under one data dir, and its checkpoint files.

Kafka's files: `recovery-point-offset-checkpoint` and `log-start-offset-checkpoint`
("0", a count, then "topic partition offset" lines), and `.kafka_cleanshutdown`,
written by a clean close and removed at open, which tells recovery whether
segments after the recovery point must be scanned.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from odradek.storage.file_thread import (
    DELETE_SUFFIX,
    in_file_thread,
    materialize_later,
    remove_later,
    wait_for_file_jobs,
)
from odradek.storage.log import LogConfig, PartitionLog
from odradek.storage.log_maintenance import FlushJob
from odradek.storage.open_files import OPEN_SEGMENTS, open_segment_capacity

log = logging.getLogger("odradek.storage")

RECOVERY_POINT_FILE = "recovery-point-offset-checkpoint"
LOG_START_FILE = "log-start-offset-checkpoint"
CLEAN_SHUTDOWN_FILE = ".kafka_cleanshutdown"
_PARTITION_DIR = re.compile(r"^(.+)-(\d+)$")
FLUSH_BATCH = 64
_CHECKPOINT_LOCK = threading.Lock()
FLUSH_THREADS = 8
FLUSH_SLICE_S = 0.004  # the periodic flush's longest stretch on the event loop, about


def read_checkpoint(path: Path) -> dict[tuple[str, int], int]:
    try:
        lines = path.read_text().split("\n")
    except FileNotFoundError:
        return {}
    out = {}
    for line in lines[2:]:
        parts = line.split()
        if len(parts) == 3:
            out[(parts[0], int(parts[1]))] = int(parts[2])
    return out


def _run_jobs(jobs: list[FlushJob]) -> None:
    for job in jobs:
        job.run()


def write_checkpoint(path: Path, values: dict[tuple[str, int], int]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    body = "".join(f"{t} {p} {o}\n" for (t, p), o in sorted(values.items()))
    with open(tmp, "w") as f:
        f.write(f"0\n{len(values)}\n{body}")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class LogManager:
    def __init__(self, data_dir: Path, *, default_config: LogConfig) -> None:
        self.data_dir = Path(data_dir)
        self.default_config = default_config
        self._logs: dict[tuple[str, int], PartitionLog] = {}
        self._recovery: dict[tuple[str, int], int] = {}
        self._starts: dict[tuple[str, int], int] = {}
        self._clean = True
        self._checkpoint_queued = False

    def open(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        marker = self.data_dir / CLEAN_SHUTDOWN_FILE
        has_logs = any(c.is_dir() and _PARTITION_DIR.match(c.name) for c in self.data_dir.iterdir())
        self._clean = marker.exists() or not has_logs
        self._recovery = read_checkpoint(self.data_dir / RECOVERY_POINT_FILE)
        self._starts = read_checkpoint(self.data_dir / LOG_START_FILE)
        if not self._clean:
            log.warning("unclean shutdown detected in %s: recovering segments after the recovery points",
                        self.data_dir)
        OPEN_SEGMENTS.resize(open_segment_capacity())
        with os.scandir(self.data_dir) as entries:
            children = sorted((e.name, e.is_dir()) for e in entries)
        for name, is_dir in children:
            if name.endswith(DELETE_SUFFIX):  # a deletion a stop cut short
                remove_later(self.data_dir / name)
                continue
            m = _PARTITION_DIR.match(name)
            if m and is_dir:
                self._open_log(m.group(1), int(m.group(2)), self.default_config)
        marker.unlink(missing_ok=True)

    def _open_log(self, topic: str, partition: int, config: LogConfig) -> PartitionLog:
        key = (topic, partition)
        plog = PartitionLog.open(
            self.data_dir / f"{topic}-{partition}", topic, partition, config,
            recovery_point=self._recovery.get(key, 0), log_start_offset=self._starts.get(key, 0),
            clean_shutdown=self._clean,
        )
        self._logs[key] = plog
        return plog

    def get(self, topic: str, partition: int) -> PartitionLog | None:
        return self._logs.get((topic, partition))

    def get_or_create(self, topic: str, partition: int, config: LogConfig) -> PartitionLog:
        plog = self._logs.get((topic, partition))
        if plog is None:
            plog = self._logs[(topic, partition)] = PartitionLog.create(
                self.data_dir / f"{topic}-{partition}", topic, partition, config)
            materialize_later(plog)
            return plog
        plog.update_config(config)
        return plog

    def delete_topic(self, topic: str) -> None:
        for key in [k for k in self._logs if k[0] == topic]:
            self._logs.pop(key).delete()
        self.checkpoint_later()

    def checkpoint_later(self) -> None:
        """The checkpoint files without the deleted logs, written by the file thread before it
        makes any log created after this call (a recreated topic must not inherit the old one's
        log start offset). On the event loop, two files of 10,000 lines each a DeleteTopics
        held it for seconds while 100 topics were deleted."""
        if not self._checkpoint_queued:
            self._checkpoint_queued = True
            in_file_thread(self._write_queued_checkpoint)

    def _write_queued_checkpoint(self) -> None:
        self._checkpoint_queued = False  # first: a later checkpoint_later queues another write
        self.checkpoint()

    def delete_partition(self, topic: str, partition: int) -> None:
        """A replica moved away (partition reassignment): its log is deleted from this broker."""
        plog = self._logs.pop((topic, partition), None)
        if plog is not None:
            plog.delete()
            self.checkpoint_later()  # as delete_topic: two files of every log's line, off the loop

    def logs(self) -> list[PartitionLog]:
        return list(self._logs.values())

    def checkpoint(self) -> None:
        """Record the recovery points and log start offsets (DeleteRecords, a deleted topic), from
        any thread: the values are read and written under one lock, so the last write is the
        newest. The logs are not flushed here: `flush_in_background` moves the recovery points."""
        with _CHECKPOINT_LOCK:
            logs = list(self._logs.items())  # one step under the GIL: the loop may add logs meanwhile
            write_checkpoint(self.data_dir / RECOVERY_POINT_FILE, {k: p.recovery_point for k, p in logs})
            write_checkpoint(self.data_dir / LOG_START_FILE, {k: p.log_start_offset for k, p in logs})

    def flush_all(self) -> None:
        """Flush every log, then checkpoint (a stop): the fsyncs of FLUSH_BATCH logs at a time
        run side by side in threads, as the file system commits them together (one after
        another, 1,000 written partitions took a stop ~10 s on this machine)."""
        logs = list(self._logs.values())
        with ThreadPoolExecutor(FLUSH_THREADS, thread_name_prefix="odradek-flush") as pool:
            for i in range(0, len(logs), FLUSH_BATCH):
                jobs = [job for plog in logs[i:i + FLUSH_BATCH] if (job := plog.begin_flush()) is not None]
                list(pool.map(FlushJob.run, jobs))
                for job in jobs:
                    job.done()
        for plog in logs:  # anything a background flush left half done
            plog.flush()
        self.checkpoint()

    async def flush_in_background(self) -> None:
        """The periodic flush: its file work in a thread, FLUSH_BATCH logs at a time (bounded
        duplicate descriptors), the event loop free between batches; then the checkpoint files,
        also in the thread. On the loop, 1,000 written partitions' fsyncs held it for seconds,
        and the index entries and leader epochs written there 73-100 ms a batch of 64 freshly
        written logs: the thread writes those too now (FlushJob), and begin_flush only takes
        copies and duplicate descriptors. A batch still ends once FLUSH_SLICE_S of it has
        passed, so the loop is let go at least that often."""
        loop = asyncio.get_running_loop()
        logs = list(self._logs.values())
        i = 0
        while i < len(logs):
            started = time.perf_counter()
            end = min(i + FLUSH_BATCH, len(logs))
            jobs = []
            while i < end:
                job = logs[i].begin_flush()
                i += 1
                if job is not None:
                    jobs.append(job)
                if time.perf_counter() - started >= FLUSH_SLICE_S:
                    break
            if jobs:
                # shielded: a cancelled flush (a stop) still runs, and closes its descriptors
                await asyncio.shield(loop.run_in_executor(None, _run_jobs, jobs))
                for job in jobs:
                    job.done()
            elif i < len(logs):
                await asyncio.sleep(0)
        await loop.run_in_executor(None, self.checkpoint)

    def close(self) -> None:
        wait_for_file_jobs()
        self.flush_all()
        for plog in self._logs.values():
            plog.close()
        (self.data_dir / CLEAN_SHUTDOWN_FILE).write_text("")
