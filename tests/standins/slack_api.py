"""A stand-in Slack Web API on loopback, spoken to by the real slack-sdk / slack-bolt code.

Records every call (Web API methods, `response_url` posts, file uploads, Socket Mode acks), answers like
Slack (PROTOCOLS.md section 4), refuses missing or wrong bearer tokens with `invalid_auth`, answers 429
with `Retry-After` on demand, and serves a Socket Mode WebSocket that sends `hello` and envelopes.

Usage: `with SlackStandIn(bot_token="xoxb-1", app_token="xapp-1") as slack: ...`; point the app at
`slack.api_url` (SLACK_API_URL) and use `slack.response_url(name)` in payloads you send to the app.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

# How long `wait_for` waits by default: the app under test works in background threads.
DEFAULT_WAIT = 10.0


@dataclass
class Call:
    """One request the stand-in received."""

    method: str  # a Web API method ("chat.postMessage"), "response_url", "upload" or "socket_ack"
    body: dict[str, Any]
    headers: dict[str, str]
    path: str
    at: float = field(default_factory=time.monotonic)


class SlackStandIn:
    """The server; start and stop it with `with`, or `start()` / `stop()`."""

    def __init__(self, bot_token: str = "xoxb-test", app_token: str = "xapp-test") -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.sockets: list[web.WebSocketResponse] = []
        self.acks: dict[str, dict[str, Any]] = {}
        self.port = 0
        self._rate_limited: dict[str, list[int]] = {}
        self._ts = itertools.count(1)
        self._changed = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> SlackStandIn:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True, name="slack-standin")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the Slack stand-in did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    def __enter__(self) -> SlackStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """What SLACK_API_URL should be."""
        return f"{self.base_url}/api/"

    def response_url(self, name: str = "r1") -> str:
        """A `response_url` to put in a payload; posts to it are recorded as method "response_url"."""
        return f"{self.base_url}/response/{name}"

    # -- test controls ---------------------------------------------------------------------------

    def rate_limit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """Answer the next `times` calls of `method` with 429 and `Retry-After: retry_after`."""
        with self._changed:
            self._rate_limited.setdefault(method, []).extend([retry_after] * times)

    def of(self, method: str) -> list[Call]:
        with self._changed:
            return [call for call in self.calls if call.method == method]

    def wait_for(
        self,
        method: str,
        where: Callable[[Call], bool] = lambda call: True,
        count: int = 1,
        timeout: float = DEFAULT_WAIT,
    ) -> list[Call]:
        """Block until `count` calls of `method` matching `where` were received; return them."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [c for c in self.calls if c.method == method and where(c)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [c.method for c in self.calls]
                    raise AssertionError(f"{count} x {method} not received in {timeout}s; received {seen}")
                self._changed.wait(left)

    def wait_for_socket(self, timeout: float = DEFAULT_WAIT) -> None:
        """Block until a Socket Mode client is connected."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self.sockets:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no Socket Mode connection")
                self._changed.wait(left)

    def send_envelope(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        retry_attempt: int = 0,
        retry_reason: str = "",
        envelope_id: str | None = None,
    ) -> str:
        """Send a Socket Mode envelope ("slash_commands", "interactive", "events_api"); return its id."""
        envelope_id = envelope_id or str(uuid.uuid4())
        frame = {
            "envelope_id": envelope_id,
            "type": kind,
            "accepts_response_payload": kind != "events_api",
            "payload": payload,
            "retry_attempt": retry_attempt,
            "retry_reason": retry_reason,
        }
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._send(frame), self._loop).result(5)
        return envelope_id

    def wait_ack(self, envelope_id: str, timeout: float = DEFAULT_WAIT) -> dict[str, Any]:
        """The ack frame the app sent for an envelope."""
        self.wait_for("socket_ack", lambda c: c.body.get("envelope_id") == envelope_id, timeout=timeout)
        return self.acks[envelope_id]

    # -- the server ------------------------------------------------------------------------------

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_post("/response/{name}", self._response)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/link/", self._websocket)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        loop.run_forever()
        loop.close()

    async def _shutdown(self) -> None:
        for socket in list(self.sockets):
            await socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _record(self, method: str, body: dict[str, Any], request: web.Request) -> None:
        with self._changed:
            self.calls.append(Call(method, body, dict(request.headers), request.path))
            self._changed.notify_all()

    async def _parse(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw:
            return dict(request.query)
        if request.content_type == "application/json":
            parsed = json.loads(raw)
            return parsed if isinstance(parsed, dict) else {"_": parsed}
        if request.content_type.startswith("multipart/"):
            return {"_multipart_bytes": len(raw)}
        return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        body = await self._parse(request)
        self._record(method, body, request)
        with self._changed:
            pending = self._rate_limited.get(method)
            retry_after = pending.pop(0) if pending else None
        if retry_after is not None:
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": str(retry_after)}
            )
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        auth = request.headers.get("Authorization", "")
        if not auth:
            return web.json_response({"ok": False, "error": "not_authed"})
        if auth != f"Bearer {expected}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": True})
        return web.json_response(handler(body))

    async def _response(self, request: web.Request) -> web.Response:
        self._record("response_url", await self._parse(request), request)
        return web.Response(text="OK")

    async def _upload(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self._record("upload", {"file_id": request.match_info["file_id"], "bytes": len(raw)}, request)
        return web.Response(text="OK - " + str(len(raw)))

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        await socket.send_str(
            json.dumps({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0STANDIN"}})
        )
        with self._changed:
            self.sockets.append(socket)
            self._changed.notify_all()
        try:
            async for message in socket:
                if message.type != WSMsgType.TEXT:
                    continue
                frame = json.loads(message.data)
                if "envelope_id" in frame:
                    self.acks[frame["envelope_id"]] = frame
                    self._record("socket_ack", frame, request)
        finally:
            with self._changed:
                self.sockets.remove(socket)
        return socket

    async def _send(self, frame: dict[str, Any]) -> None:
        if not self.sockets:
            raise AssertionError("no Socket Mode client connected")
        await self.sockets[-1].send_str(json.dumps(frame))

    # -- Web API methods (answers shaped like Slack's; PROTOCOLS.md section 4) ---------------------

    def _new_ts(self) -> str:
        return f"{1_700_000_000 + next(self._ts)}.000100"

    def _m_auth_test(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://standin.slack.com/",
            "team": "Stand-in",
            "user": "bot",
            "team_id": "T0001",
            "user_id": "U0BOT",
            "bot_id": "B0BOT",
        }

    def _m_chat_postMessage(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = str(body.get("channel", ""))
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        ts = self._new_ts()
        message = {"type": "message", "subtype": "bot_message", "bot_id": "B0BOT", "ts": ts, **body}
        self.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _m_chat_update(self, body: dict[str, Any]) -> dict[str, Any]:
        key = (str(body.get("channel", "")), str(body.get("ts", "")))
        if key not in self.messages:
            return {"ok": False, "error": "message_not_found"}
        self.messages[key] = {**self.messages[key], **body}
        return {"ok": True, "channel": key[0], "ts": key[1], "text": body.get("text", "")}

    def _m_chat_postEphemeral(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "message_ts": self._new_ts()}

    def _m_views_open(self, body: dict[str, Any]) -> dict[str, Any]:
        if not body.get("trigger_id"):
            return {"ok": False, "error": "invalid_trigger_id"}
        view = body.get("view")
        if isinstance(view, str):
            view = json.loads(view)
        view_id = "V" + uuid.uuid4().hex[:10].upper()
        return {"ok": True, "view": {**(view or {}), "id": view_id, "root_view_id": view_id}}

    def _m_files_getUploadURLExternal(self, body: dict[str, Any]) -> dict[str, Any]:
        file_id = "F" + uuid.uuid4().hex[:10].upper()
        return {"ok": True, "upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    def _m_files_completeUploadExternal(self, body: dict[str, Any]) -> dict[str, Any]:
        files = body.get("files")
        if isinstance(files, str):
            files = json.loads(files)
        return {"ok": True, "files": [{"id": f.get("id"), "title": f.get("title")} for f in files or []]}

    def _m_files_upload(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "file": {"id": "F" + uuid.uuid4().hex[:10].upper()}}

    def _m_conversations_open(self, body: dict[str, Any]) -> dict[str, Any]:
        users = str(body.get("users") or "")
        if not users:
            return {"ok": False, "error": "users_list_not_supplied"}
        return {"ok": True, "channel": {"id": "D" + users.split(",")[0]}}

    def _m_apps_connections_open(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/link/?ticket=t&app_id=A0STANDIN"}


def main() -> None:
    """Run the stand-in by hand: `python -m tests.standins.slack_api` prints its SLACK_API_URL."""
    with SlackStandIn() as slack:
        print(f"SLACK_API_URL={slack.api_url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
