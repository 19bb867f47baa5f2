"""The console's HTTP server: the pages (static/, shipped in the wheel) and the JSON API.

Every API answer is JSON; a mistake is {"error": "<one sentence>"} with a 4xx/5xx status,
shown by the page next to the form that caused it. The operations are blocking
confluent-kafka calls, so they run in a thread pool and the event loop only moves bytes.

Guards, because a console can delete topics: on a loopback address the Host header must
name a loopback host (a web page elsewhere cannot reach the console through DNS
rebinding); a request that changes something must carry the X-Odradek-Console header,
which no cross-site form can send (and the session cookie is SameSite=Strict).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from odradek.cli.client_config import ClientProperties
from odradek.cli.common import Client
from odradek.console import groups, messages, security, topics, wire
from odradek.console.session import IDLE_S, ConsoleError, Session, log_in, needs_login

log = logging.getLogger("odradek.console")
COOKIE = "odradek_console"
CSRF_HEADER = "X-Odradek-Console"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Console:
    """The console's state: how to reach the cluster, and the sessions of logged-in users."""

    bootstrap: str
    properties: ClientProperties
    loopback_only: bool = True
    sessions: dict[str, Session] = field(default_factory=dict)
    shared: Session | None = None
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(16, "console"))

    def __post_init__(self) -> None:
        if not needs_login(self.properties):
            self.shared = Session(Client(self.bootstrap, self.properties))

    @property
    def login_required(self) -> bool:
        return self.shared is None

    def session(self, request: web.Request) -> Session:
        if self.shared is not None:
            return self.shared
        token = request.cookies.get(COOKIE, "")
        found = self.sessions.get(token)
        if found is None:
            raise ConsoleError("log in first: the cluster asks for SASL credentials", 401)
        found.touch()
        return found

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, partial(fn, *args))

    def expire(self) -> None:
        now = time.monotonic()
        for token, s in list(self.sessions.items()):
            if now - s.last_used > IDLE_S:
                del self.sessions[token]
                self.executor.submit(s.close)

    def close(self) -> None:
        for s in [*self.sessions.values(), *([self.shared] if self.shared else [])]:
            s.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


CONSOLE = web.AppKey("console", Console)


def _console(request: web.Request) -> Console:
    return request.app[CONSOLE]


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    console = _console(request)
    if console.loopback_only:
        host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
        if host not in LOOPBACK_HOSTS:
            return web.Response(status=421, text="this console answers only on loopback host names\n")
    if request.method not in ("GET", "HEAD") and request.headers.get(CSRF_HEADER) != "1":
        return web.json_response({"error": f"a change needs the {CSRF_HEADER} header (sent by the console's pages)"},
                                 status=403)
    try:
        response = await handler(request)
    except ConsoleError as exc:
        return web.json_response({"error": exc.message}, status=exc.status)
    except ValueError as exc:  # a malformed number or body in the request itself
        return web.json_response({"error": f"the request is malformed: {exc}"}, status=400)
    except web.HTTPException:
        raise  # aiohttp's own answers (404 of an unknown path)
    # every page must get its one sentence, whatever failed; the traceback goes to the log
    except Exception as exc:
        log.exception("console request %s %s failed", request.method, request.path)
        return web.json_response({"error": f"the console failed on this request ({type(exc).__name__}); "
                                           "its log has the details"}, status=500)
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise ConsoleError("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise ConsoleError("the request body is not a JSON object")
    return body


def _int(text: Any, what: str, default: int | None = None) -> int:
    if text in (None, "") and default is not None:
        return default
    try:
        return int(text)
    except (TypeError, ValueError):
        raise ConsoleError(f"{what} must be a whole number, not {text!r}") from None


# -- session --------------------------------------------------------------------------

async def get_session(request: web.Request) -> web.Response:
    console = _console(request)
    principal = None
    logged_in = console.shared is not None
    if not logged_in:
        found = console.sessions.get(request.cookies.get(COOKIE, ""))
        logged_in, principal = found is not None, found.principal if found else None
    mechanism = console.properties.values.get("sasl.mechanism") or console.properties.values.get("sasl.mechanisms")
    return web.json_response({"login_required": console.login_required, "logged_in": logged_in,
                              "principal": principal, "bootstrap": console.bootstrap,
                              "mechanism": (mechanism or "SCRAM-SHA-512").upper()})


async def login(request: web.Request) -> web.Response:
    console = _console(request)
    if not console.login_required:
        raise ConsoleError("this console acts with the client configuration it was started with; no login")
    body = await _body(request)
    session = await console.run(log_in, console.bootstrap, console.properties, str(body.get("username", "")),
                                str(body.get("password", "")), str(body.get("mechanism", "SCRAM-SHA-512")))
    console.expire()
    console.sessions[session.token] = session
    log.info("console login as %s", session.principal)
    response = web.json_response({"principal": session.principal})
    response.set_cookie(COOKIE, session.token, httponly=True, samesite="Strict", path="/")
    return response


async def logout(request: web.Request) -> web.Response:
    console = _console(request)
    found = console.sessions.pop(request.cookies.get(COOKIE, ""), None)
    if found is not None:
        await console.run(found.close)
    response = web.json_response({"logged_out": True})
    response.del_cookie(COOKIE, path="/")
    return response


# -- pages' data ----------------------------------------------------------------------

def _op(fn: Callable[..., Any], *names: str) -> Handler:
    """A GET route calling fn(session, *path parameters) in the thread pool."""
    async def handler(request: web.Request) -> web.Response:
        console = _console(request)
        session = console.session(request)
        return web.json_response(await console.run(fn, session, *(request.match_info[n] for n in names)))
    return handler


def _delete(fn: Callable[..., Any], name: str) -> Handler:
    """A DELETE route calling fn(session, the path parameter `name`) in the thread pool; it
    answers {"deleted": that parameter}."""
    async def handler(request: web.Request) -> web.Response:
        console = _console(request)
        await console.run(fn, console.session(request), request.match_info[name])
        return web.json_response({"deleted": request.match_info[name]})
    return handler


async def get_topic(request: web.Request) -> web.Response:
    console = _console(request)
    session = console.session(request)
    name = request.match_info["name"]
    described = await console.run(topics.describe_topic, session, name)
    sizes = await wire.log_dir_sizes(session, name, [p["partition"] for p in described["partitions"]])
    return web.json_response(topics.add_sizes(described, sizes))


async def create_topic(request: web.Request) -> web.Response:
    console = _console(request)
    session = console.session(request)
    body = await _body(request)
    configs = body.get("configs") or {}
    if not isinstance(configs, dict):
        raise ConsoleError("configs must be an object of name: value")
    name = str(body.get("name", "")).strip()
    await console.run(topics.create_topic, session, name, _int(body.get("partitions"), "partitions", 1),
                      _int(body.get("replication_factor"), "the replication factor", -1),
                      {str(k): str(v) for k, v in configs.items()})
    return web.json_response({"created": name})


async def alter_config(request: web.Request) -> web.Response:
    console = _console(request)
    body = await _body(request)
    value = body.get("value")
    await console.run(topics.alter_config, console.session(request), request.match_info["name"],
                      str(body.get("name", "")).strip(), None if value is None else str(value))
    return web.json_response({"altered": body.get("name")})


async def get_messages(request: web.Request) -> web.Response:
    console = _console(request)
    q = request.query
    partition = q.get("partition", "all")
    result = await console.run(
        messages.page, console.session(request), request.match_info["name"],
        None if partition in ("", "all") else _int(partition, "the partition"), q.get("start", "newest"),
        q.get("value", ""), _int(q.get("limit"), "the page size", 50), q.get("format", "auto"),
        q.get("filter", ""), q.get("where", "any"), q.get("cursor", ""), q.get("follow") == "1")
    return web.json_response(result)


async def produce(request: web.Request) -> web.Response:
    console = _console(request)
    body = await _body(request)
    headers = body.get("headers") or []
    if not isinstance(headers, list) or not all(isinstance(h, list) and len(h) == 2 for h in headers):
        raise ConsoleError("headers must be a list of [key, value] pairs")
    partition = body.get("partition")
    key, value = body.get("key"), body.get("value")
    result = await console.run(
        messages.produce, console.session(request), request.match_info["name"],
        None if partition in (None, "", "any") else _int(partition, "the partition"),
        None if key is None else str(key), None if value is None else str(value),
        [(str(k), str(v)) for k, v in headers if str(k)])
    return web.json_response(result)


async def reset_offsets(request: web.Request) -> web.Response:
    console = _console(request)
    body = await _body(request)
    result = await console.run(groups.reset_offsets, console.session(request), request.match_info["group"],
                               str(body.get("topic", "")), str(body.get("to", "")), str(body.get("value", "")),
                               bool(body.get("execute")))
    return web.json_response(result)


async def list_transactions(request: web.Request) -> web.Response:
    return web.json_response(await wire.list_transactions(_console(request).session(request)))


async def describe_transaction(request: web.Request) -> web.Response:
    session = _console(request).session(request)
    return web.json_response(await wire.describe_transaction(session, request.match_info["id"]))


async def list_users(request: web.Request) -> web.Response:
    return web.json_response(await wire.scram_users(_console(request).session(request)))


async def upsert_user(request: web.Request) -> web.Response:
    console = _console(request)
    body = await _body(request)
    name = str(body.get("name", "")).strip()
    await console.run(security.upsert_user, console.session(request), name, str(body.get("password", "")),
                      str(body.get("mechanism", "SCRAM-SHA-512")), _int(body.get("iterations"), "iterations", 8192))
    return web.json_response({"user": name})


async def delete_user(request: web.Request) -> web.Response:
    console = _console(request)
    await console.run(security.delete_user, console.session(request), request.match_info["name"],
                      request.query.get("mechanism", "SCRAM-SHA-512"))
    return web.json_response({"deleted": request.match_info["name"]})


async def create_acl(request: web.Request) -> web.Response:
    console = _console(request)
    await console.run(security.create_acl, console.session(request), await _body(request))
    return web.json_response({"created": True})


async def delete_acl(request: web.Request) -> web.Response:
    console = _console(request)
    deleted = await console.run(security.delete_acl, console.session(request), await _body(request))
    return web.json_response({"deleted": deleted})


# -- the application ------------------------------------------------------------------

def static_dir() -> Path:
    return Path(str(resources.files("odradek.console") / "static"))


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(static_dir() / "index.html", headers={"Cache-Control": "no-store"})


async def _no_content() -> web.Response:
    return web.Response(status=204)


def make_app(console: Console) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=2 * 1024 * 1024)
    app[CONSOLE] = console
    r = app.router
    r.add_get("/", index)
    r.add_get("/favicon.ico", lambda request: _no_content())
    r.add_static("/static/", static_dir(), follow_symlinks=False)
    r.add_get("/api/session", get_session)
    r.add_post("/api/login", login)
    r.add_post("/api/logout", logout)
    r.add_get("/api/overview", _op(topics.overview))
    r.add_get("/api/topics", _op(topics.list_topics))
    r.add_post("/api/topics", create_topic)
    r.add_get("/api/topics/{name}", get_topic)
    r.add_delete("/api/topics/{name}", _delete(topics.delete_topic, "name"))
    r.add_post("/api/topics/{name}/configs", alter_config)
    r.add_get("/api/topics/{name}/messages", get_messages)
    r.add_post("/api/topics/{name}/produce", produce)
    r.add_get("/api/groups", _op(groups.list_groups))
    r.add_get("/api/groups/{group}", _op(groups.describe_group, "group"))
    r.add_delete("/api/groups/{group}", _delete(groups.delete_group, "group"))
    r.add_post("/api/groups/{group}/reset", reset_offsets)
    r.add_get("/api/transactions", list_transactions)
    r.add_get("/api/transactions/{id}", describe_transaction)
    r.add_get("/api/users", list_users)
    r.add_post("/api/users", upsert_user)
    r.add_delete("/api/users/{name}", delete_user)
    r.add_get("/api/acls", _op(security.list_acls))
    r.add_post("/api/acls", create_acl)
    r.add_post("/api/acls/delete", delete_acl)
    return app


async def serve(console: Console, host: str, port: int, parent_pid: int | None = None) -> None:
    """Serve until cancelled (SIGINT/SIGTERM) or, with `parent_pid`, until that process is gone
    (the console `odradek serve --console` started ends with its broker)."""
    import signal

    runner = web.AppRunner(make_app(console), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    shown = f"[{host}]" if ":" in host else host
    log.info("console listening on http://%s:%d/ (cluster %s)", shown, port, console.bootstrap)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass
            if parent_pid is not None and os.getppid() != parent_pid:
                break
            console.expire()
    finally:
        await runner.cleanup()
        console.close()
