"""The ZooKeeper client's plumbing for cluster/zk.py: bounded calls and daemon threads.

kazoo's own blocking calls wait for a reconnection forever (a request made while disconnected
sits in its queue), so the store's calls go through `BoundedOps`, which gives up after the
session timeout, and at once once the store is `closing` and ZooKeeper is not connected. The
executor's threads are daemons, kazoo reconnects at most a second apart (its default backs off
to an hour), and `stop_client` gives up on a kazoo that does not close in `STOP_TIMEOUT_S`.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING, Any

from kazoo.client import KazooClient  # type: ignore[import-untyped]
from kazoo.exceptions import NoNodeError  # type: ignore[import-untyped]
from kazoo.handlers.threading import KazooTimeoutError  # type: ignore[import-untyped]
from kazoo.retry import KazooRetry  # type: ignore[import-untyped]

if TYPE_CHECKING:
    from odradek.cluster.zk import ZkMetadataStore

log = logging.getLogger("odradek.zk")

STOP_TIMEOUT_S = 3.0  # closing the kazoo client; past it the client is left to its daemon threads
RECONNECT_MAX_DELAY_S = 1.0  # kazoo's reconnection backoff caps at this (its default: 3600 s)
EXECUTOR_GRACE_S = 1.0  # calls in flight at stop() may finish while still connected



class ZkError(ConnectionError):
    """ZooKeeper is unreachable or refused a write; one sentence for the log."""


class DaemonExecutor(Executor):
    """A few daemon worker threads for blocking ZooKeeper calls.

    Not a ThreadPoolExecutor: the interpreter joins those threads at exit, so one call
    waiting on a ZooKeeper that is gone would keep a stopped broker's process alive."""

    def __init__(self, workers: int, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...],
                                             dict[str, Any]] | None] = queue.SimpleQueue()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._closed:
            raise ZkError("the ZooKeeper client is closed")
        fut: Future[Any] = Future()
        self._queue.put((fut, fn, args, kwargs))
        return fut

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            fut, fn, args, kwargs = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, as ThreadPoolExecutor does
                fut.set_exception(exc)
            else:
                fut.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False, timeout: float | None = None) -> None:
        """Stop taking calls; with `wait`, give the running ones up to `timeout` seconds."""
        self._closed = True
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            deadline = None if timeout is None else time.monotonic() + timeout
            for t in self._threads:
                t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))


class BoundedOps:
    """kazoo's blocking calls, each waiting at most the store's `op_timeout_s` for its answer.

    kazoo's own (zk.get, zk.set, ...) queue a request made while disconnected until the
    connection is back, however long that takes. Watches keep using those (on kazoo's
    threads, they should wait for the reconnection); every other caller uses these."""

    def __init__(self, store: ZkMetadataStore) -> None:
        self.store = store

    def _wait(self, start: Callable[[], Any], what: str) -> Any:
        store = self.store
        if store.closing and not store.connected:
            raise ZkError(f"ZooKeeper is not connected ({what})")
        result = start()
        try:
            return result.get(timeout=store.op_timeout_s)
        except KazooTimeoutError:
            raise ZkError(f"no answer from ZooKeeper within {store.op_timeout_s:.1f} s ({what})") from None

    def get(self, path: str) -> tuple[bytes, Any]:
        return self._wait(lambda: self.store.zk.get_async(path), f"get {path}")  # type: ignore[no-any-return]

    def exists(self, path: str) -> Any:
        return self._wait(lambda: self.store.zk.exists_async(path), f"exists {path}")

    def get_children(self, path: str) -> list[str]:
        return self._wait(lambda: self.store.zk.get_children_async(path), f"children of {path}")  # type: ignore[no-any-return]

    def set(self, path: str, value: bytes, version: int = -1) -> Any:
        return self._wait(lambda: self.store.zk.set_async(path, value, version), f"set {path}")

    def create(self, path: str, value: bytes = b"", *, ephemeral: bool = False, makepath: bool = False,
               sequence: bool = False) -> str:
        return self._wait(lambda: self.store.zk.create_async(path, value, ephemeral=ephemeral,  # type: ignore[no-any-return]
                                                             sequence=sequence, makepath=makepath),
                          f"create {path}")

    def ensure_path(self, path: str) -> None:
        self._wait(lambda: self.store.zk.ensure_path_async(path), f"ensure {path}")

    def delete(self, path: str, *, recursive: bool = False, version: int = -1) -> None:
        if recursive:
            try:
                children = self.get_children(path)
            except NoNodeError:
                return
            for child in children:
                self.delete(f"{path}/{child}", recursive=True)
        try:
            self._wait(lambda: self.store.zk.delete_async(path, version), f"delete {path}")
        except NoNodeError:
            if not recursive:
                raise

    def commit(self, tx: Any) -> list[Any]:
        return self._wait(tx.commit_async, "transaction")  # type: ignore[no-any-return]


def split_connect(connect: str) -> tuple[str, str]:
    """`host:port[,host:port]/chroot` -> (hosts, chroot or '')."""
    hosts, slash, chroot = connect.partition("/")
    return hosts, ("/" + chroot.strip("/")) if slash and chroot.strip("/") else ""


def new_client(hosts: str, session_timeout_s: float) -> KazooClient:
    """Reconnection tries forever but at most RECONNECT_MAX_DELAY_S apart; the command retry
    (kazoo's watches use it) likewise."""
    def retry() -> KazooRetry:
        return KazooRetry(max_tries=-1, delay=0.1, backoff=2, max_delay=RECONNECT_MAX_DELAY_S)

    return KazooClient(hosts=hosts, timeout=session_timeout_s, connection_retry=retry(), command_retry=retry())


def stop_client(client: KazooClient, timeout: float) -> None:
    """kazoo's stop() joins its connection thread without a timeout (a connect attempt to a
    host that drops packets lasts up to the session timeout): run it aside, wait `timeout`."""
    def stop() -> None:
        try:
            client.stop()
            client.close()
        except Exception as exc:  # noqa: BLE001 - kazoo's close() raises a bare Exception when not stopped
            log.debug("closing the ZooKeeper client: %r", exc)

    t = threading.Thread(target=stop, name="odradek-zk-stop", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        # kazoo's handler also stops at exit (atexit, joining its threads without a timeout,
        # under the lock the thread above may hold): it must not hold the process either
        atexit.unregister(client.handler.stop)
        log.warning("the ZooKeeper client did not close within %.1f s; leaving it", timeout)


def is_rollback(exc: Exception) -> bool:
    return type(exc).__name__ in ("RolledBackError", "RuntimeInconsistency")
