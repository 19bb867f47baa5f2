"""LogManager: every partition log under one data dir, and its checkpoint files.

Kafka's files: `recovery-point-offset-checkpoint` and `log-start-offset-checkpoint`
("0", a count, then "topic partition offset" lines), and `.kafka_cleanshutdown`,
written by a clean close and removed at open, which tells recovery whether
segments after the recovery point must be scanned.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from odradek.storage.log import LogConfig, PartitionLog

log = logging.getLogger("odradek.storage")

RECOVERY_POINT_FILE = "recovery-point-offset-checkpoint"
LOG_START_FILE = "log-start-offset-checkpoint"
CLEAN_SHUTDOWN_FILE = ".kafka_cleanshutdown"
_PARTITION_DIR = re.compile(r"^(.+)-(\d+)$")


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
        for child in sorted(self.data_dir.iterdir()):
            m = _PARTITION_DIR.match(child.name)
            if child.is_dir() and m and not child.name.endswith("-delete"):
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
            return self._open_log(topic, partition, config)
        plog.update_config(config)
        return plog

    def delete_topic(self, topic: str) -> None:
        for key in [k for k in self._logs if k[0] == topic]:
            self._logs.pop(key).delete()
        self.checkpoint()

    def delete_partition(self, topic: str, partition: int) -> None:
        """A replica moved away (partition reassignment): its log is deleted from this broker."""
        plog = self._logs.pop((topic, partition), None)
        if plog is not None:
            plog.delete()
            self.checkpoint()

    def logs(self) -> list[PartitionLog]:
        return list(self._logs.values())

    def checkpoint(self) -> None:
        """Flush and record recovery points and log start offsets."""
        for plog in self._logs.values():
            plog.flush()
        write_checkpoint(self.data_dir / RECOVERY_POINT_FILE,
                         {k: p.recovery_point for k, p in self._logs.items()})
        write_checkpoint(self.data_dir / LOG_START_FILE,
                         {k: p.log_start_offset for k, p in self._logs.items()})

    def close(self) -> None:
        self.checkpoint()
        for plog in self._logs.values():
            plog.close()
        (self.data_dir / CLEAN_SHUTDOWN_FILE).write_text("")
