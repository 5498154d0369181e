"""A stand-in OpenAI-compatible server on loopback, for driving the real `openai` client in tests.

Speaks `POST /v1/chat/completions` closely enough for the SDK: bearer auth, the chat.completion
object with choices and usage, OpenAI-shaped error bodies. Replies are scripted per response-format
schema name (e.g. "TriageOut", "DraftOut") or from a FIFO queue; each can be delayed (for timeouts),
carry invalid JSON, or be an HTTP error.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 1_000_000


@dataclass
class Reply:
    """One scripted answer."""

    content: str | dict[str, Any] = field(default_factory=dict)  # a dict is sent as JSON text
    prompt_tokens: int = 100
    completion_tokens: int = 50
    delay_s: float = 0.0
    status: int = 200
    model: str | None = None  # default: the model the request named


class OpenAIStandIn:
    """Start with `with OpenAIStandIn() as server:`; point the client at `server.base_url`."""

    def __init__(self, api_key: str = "sk-test") -> None:
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.by_schema: dict[str, deque[Reply]] = {}
        self.queue: deque[Reply] = deque()
        self.default: Reply | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the stand-in first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def on(self, schema: str, *replies: Reply) -> None:
        """Answer requests whose response_format names `schema` with these replies, in order."""
        with self._lock:
            self.by_schema.setdefault(schema, deque()).extend(replies)

    def then(self, *replies: Reply) -> None:
        """Answer the next requests (any schema) with these replies, in order."""
        with self._lock:
            self.queue.extend(replies)

    def next_reply(self, request: dict[str, Any]) -> Reply:
        schema = ((request.get("response_format") or {}).get("json_schema") or {}).get("name")
        with self._lock:
            self.requests.append(request)
            scripted = self.by_schema.get(str(schema))
            if scripted:
                return scripted.popleft()
            if self.queue:
                return self.queue.popleft()
            if self.default is not None:
                return self.default
        return Reply(status=500, content={"error": "no reply scripted"})

    def start(self) -> OpenAIStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                pass

            def do_POST(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {standin.api_key}":
                    return self._error(401, "invalid_api_key", "Incorrect API key provided")
                if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                    return self._error(404, "not_found", f"no route {self.path}")
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    return self._error(413, "too_large", "request too large")
                try:
                    request = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    return self._error(400, "invalid_json", "body is not JSON")
                reply = standin.next_reply(request)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.status != 200:
                    return self._error(reply.status, "server_error", "scripted failure")
                content = reply.content if isinstance(reply.content, str) else json.dumps(reply.content)
                body = {
                    "id": f"chatcmpl-{len(standin.requests)}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": reply.model or request.get("model", "unknown"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content, "refusal": None},
                            "finish_reason": "stop",
                            "logprobs": None,
                        }
                    ],
                    "usage": {
                        "prompt_tokens": reply.prompt_tokens,
                        "completion_tokens": reply.completion_tokens,
                        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
                    },
                }
                self._send(200, body)

            def _error(self, status: int, code: str, message: str) -> None:
                self._send(status, {"error": {"message": message, "type": code, "param": None, "code": code}})

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="openai-standin",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> OpenAIStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
