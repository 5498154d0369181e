"""A stand-in Telegram Bot API server on loopback, spoken to by the real python-telegram-bot client.

Wire facts from PROTOCOLS.md §6-7: `POST /bot<token>/<method>` (method names case-insensitive),
parameters as query string, form, JSON or multipart, answers `{"ok": true, "result": …}` or
`{"ok": false, "error_code": N, "description": "…"}`. It keeps the messages it sent so edits can be
checked ("message is not modified", "message to edit not found"), enforces the 64-byte callback_data
limit, parses HTML parse-mode text strictly enough to catch bad escaping, answers 429 with
`retry_after` on demand, and delivers queued updates by long polling or, once a webhook is set, by
POSTing them to it with the secret token header.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

BOT_USER = {"id": 7000001, "is_bot": True, "first_name": "CRM Bot", "username": "crm_test_bot"}
MAX_CALLBACK_DATA_BYTES = 64  # InlineKeyboardButtonLimit.MAX_CALLBACK_DATA
MAX_TEXT_CHARS = 4096  # MessageLimit.MAX_TEXT_LENGTH, counted after entity parsing
MAX_POLL_SECONDS = 5.0  # a long poll never holds a test for longer than this
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
NOT_FOUND = "Bad Request: message to edit not found"
CANT_PARSE = "Bad Request: can't parse entities"
# Telegram's HTML parse mode: these tags and nothing else (core.telegram.org/bots/api#html-style).
_TAG_NAMES = "b strong i em u ins s strike del span tg-spoiler a tg-emoji code pre blockquote"
HTML_TAGS = frozenset(_TAG_NAMES.split(" "))
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[a-zA-Z-]+(?:=(?:\"[^\"<>]*\"|'[^'<>]*'))?)*)\s*>")
_ENTITY = re.compile(r"&(lt|gt|amp|quot|#[0-9]{1,7}|#x[0-9a-fA-F]{1,6});")
_ENTITY_TEXT = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


class ApiError(Exception):
    """A Bot API error answer."""

    def __init__(self, code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after


def parse_html(text: str) -> str:
    """The plain text of an HTML parse-mode message; raises ApiError where Telegram would."""
    plain: list[str] = []
    open_tags: list[str] = []
    i = 0
    raw = text.encode()

    def offset(at: int) -> int:
        return len(text[:at].encode())

    while i < len(text):
        ch = text[i]
        if ch == "<":
            match = _TAG.match(text, i)
            if match is None:
                raise ApiError(
                    400, f"Bad Request: can't parse entities: unexpected < at byte offset {offset(i)}"
                )
            closing, name = match.group(1), match.group(2).lower()
            if name not in HTML_TAGS:
                kind = "end" if closing else "start"
                raise ApiError(
                    400,
                    f'Bad Request: can\'t parse entities: Unsupported {kind} tag "{name}" at byte offset '
                    f"{offset(i)}",
                )
            if closing:
                if not open_tags or open_tags[-1] != name:
                    raise ApiError(
                        400,
                        f"Bad Request: can't parse entities: Unmatched end tag at byte offset {offset(i)},"
                        f' expected "</{open_tags[-1] if open_tags else ""}>", found "</{name}>"',
                    )
                open_tags.pop()
            else:
                open_tags.append(name)
            i = match.end()
        elif ch == "&":
            match = _ENTITY.match(text, i)
            if match is None:
                raise ApiError(400, f"Bad Request: can't parse entities: stray & at byte offset {offset(i)}")
            name = match.group(1)
            if name.startswith("#x"):
                plain.append(chr(int(name[2:], 16)))
            elif name.startswith("#"):
                plain.append(chr(int(name[1:])))
            else:
                plain.append(_ENTITY_TEXT[name])
            i = match.end()
        elif ch == ">":
            plain.append(ch)  # Telegram tolerates a bare > but the bot should still escape it
            i += 1
        else:
            plain.append(ch)
            i += 1
    if open_tags:
        raise ApiError(
            400,
            f'{CANT_PARSE}: Can\'t find end tag corresponding to start tag "{open_tags[-1]}"'
            f" (text is {len(raw)} bytes)",
        )
    return "".join(plain)


def check_markup(markup: Any) -> None:
    """Inline keyboards: every button has text and 1-64 bytes of callback_data (or a url)."""
    if markup is None:
        return
    if not isinstance(markup, dict):
        raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
    for row in markup.get("inline_keyboard", []):
        for button in row:
            if not button.get("text"):
                raise ApiError(400, "Bad Request: text buttons are unallowed in the inline keyboard")
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= MAX_CALLBACK_DATA_BYTES:
                raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")


@dataclass
class Call:
    """One request the bot made."""

    method: str
    params: dict[str, Any]
    status: int
    result: Any
    at: float = field(default_factory=time.monotonic)


@dataclass
class Failure:
    code: int
    description: str
    retry_after: int | None
    times: int


class TelegramStandIn:
    """The server and its state; start() it, point TELEGRAM_API_URL at `.base_url`."""

    def __init__(self, token: str = "123456:TEST-token_abc") -> None:
        self.token = token
        self.calls: list[Call] = []
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self.webhook: dict[str, Any] | None = None
        self.webhook_deliveries: list[tuple[int, int]] = []  # (update_id, HTTP status)
        self.commands: list[dict[str, Any]] = []
        self.polls_started = 0  # getUpdates requests received (recorded in `calls` only once answered)
        self._updates: list[dict[str, Any]] = []
        self._next_update_id = 500_000
        self._next_message_id = 1
        self._next_query = 1
        self._failures: dict[str, list[Failure]] = {}
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._closing = False

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> TelegramStandIn:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                stand_in._handle(self)

            do_GET = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def root(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        """TELEGRAM_API_URL for the app: PTB appends the token."""
        return f"{self.root}/bot"

    # ---- what tests drive ------------------------------------------------------------------
    def fail_next(
        self,
        method: str,
        code: int = 429,
        description: str | None = None,
        *,
        retry_after: int = 1,
        times: int = 1,
    ) -> None:
        """Answer the next `times` calls of method with an error (429 carries retry_after)."""
        if description is None:
            description = f"Too Many Requests: retry after {retry_after}" if code == 429 else "Bad Request"
        failure = Failure(code, description, retry_after if code == 429 else None, times)
        with self._cond:
            self._failures.setdefault(method.lower(), []).append(failure)

    def delete_message(self, chat_id: int, message_id: int) -> None:
        """The message disappears (deleted by a person): later edits answer "not found"."""
        with self._cond:
            self.messages.pop((int(chat_id), int(message_id)), None)

    def push_update(self, update: dict[str, Any], *, keep_id: bool = False) -> dict[str, Any]:
        """Queue an update (delivered by getUpdates, or POSTed to the webhook when one is set)."""
        with self._cond:
            if not keep_id or "update_id" not in update:
                self._next_update_id += 1
                update = {**update, "update_id": self._next_update_id}
            webhook = self.webhook
            if webhook is None:
                self._updates.append(update)
                self._cond.notify_all()
        if webhook is not None:
            self._deliver(webhook, update)
        return update

    def _deliver(self, webhook: dict[str, Any], update: dict[str, Any]) -> None:
        headers = {"Content-Type": "application/json"}
        if webhook.get("secret_token"):
            headers["X-Telegram-Bot-Api-Secret-Token"] = webhook["secret_token"]
        request = urllib.request.Request(
            webhook["url"], data=json.dumps(update).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        self.webhook_deliveries.append((update["update_id"], status))

    def message_update(
        self,
        user: dict[str, Any],
        text: str | None = None,
        *,
        chat: dict[str, Any] | None = None,
        reply_to: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """An incoming message from user (a private chat unless chat is given)."""
        chat = chat or {"id": user["id"], "type": "private", "first_name": user.get("first_name", "")}
        with self._cond:
            self._next_message_id += 1
            message_id = self._next_message_id
        message: dict[str, Any] = {
            "message_id": message_id,
            "date": int(time.time()),
            "from": user,
            "chat": chat,
        }
        if text is not None:
            message["text"] = text
            if text.startswith("/"):
                length = len(text.split()[0].encode("utf-16-le")) // 2
                message["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        message.update(extra or {})
        return self.push_update({"message": message})

    def press(self, user: dict[str, Any], chat_id: int, message_id: int, data: str) -> dict[str, Any]:
        """A tap on an inline button of a message the bot sent."""
        with self._cond:
            sent = self.messages.get((int(chat_id), int(message_id)))
            self._next_query += 1
            query_id = f"q{self._next_query}"
        message = (
            dict(sent)
            if sent
            else {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private"},
                "from": BOT_USER,
                "text": "…",
            }
        )
        return self.push_update(
            {
                "callback_query": {
                    "id": query_id,
                    "from": user,
                    "message": message,
                    "chat_instance": "-5432109876543210987",
                    "data": data,
                }
            }
        )

    # ---- what tests read -------------------------------------------------------------------
    def calls_to(self, method: str) -> list[Call]:
        with self._cond:
            return [c for c in self.calls if c.method == method.lower()]

    def wait_for(self, predicate: Any, timeout: float = 15.0, what: str = "a condition") -> Any:
        """Poll predicate() until it returns something truthy; fail with the recent calls if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        recent = [(c.method, c.status, c.params) for c in self.calls[-12:]]
        raise AssertionError(f"timed out waiting for {what}; last calls: {recent}")

    def wait_call(self, method: str, where: Any = None, timeout: float = 15.0, after: int = 0) -> Call:
        """The first successful call of method (after `after` calls of it) matching where(params)."""

        def find() -> Call | None:
            for call in self.calls_to(method)[after:]:
                if call.status == 200 and (where is None or where(call.params)):
                    return call
            return None

        result: Call = self.wait_for(find, timeout, f"{method}")
        return result

    def wait_polling(self, timeout: float = 15.0) -> None:
        """Wait until the bot is long polling (a getUpdates request has arrived)."""
        self.wait_for(lambda: self.polls_started > 0, timeout, "the bot to poll getUpdates")

    def sent_to(self, chat_id: int) -> list[dict[str, Any]]:
        """Messages currently in chat_id, oldest first (text as a person sees it)."""
        with self._cond:
            return [m for (chat, _), m in sorted(self.messages.items()) if chat == int(chat_id)]

    # ---- the HTTP side ---------------------------------------------------------------------
    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(request.path)
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        match = re.fullmatch(r"/bot([^/]+)/([A-Za-z]+)", parts.path)
        status, payload = 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        method = ""
        params: dict[str, Any] = {}
        if match:
            token, method = match.group(1), match.group(2).lower()
            try:
                params = self._params(parts.query, request.headers.get("Content-Type", ""), body)
                if token != self.token:
                    raise ApiError(401, "Unauthorized")
                result = self._dispatch(method, params)
                status, payload = 200, {"ok": True, "result": result}
            except ApiError as exc:
                status = exc.code
                payload = {"ok": False, "error_code": exc.code, "description": exc.description}
                if exc.retry_after is not None:
                    payload["parameters"] = {"retry_after": exc.retry_after}
            with self._cond:
                self.calls.append(Call(method, params, status, payload.get("result")))
        data = json.dumps(payload).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    @staticmethod
    def _params(query: str, content_type: str, body: bytes) -> dict[str, Any]:
        params: dict[str, Any] = dict(parse_qsl(query))
        if content_type.startswith("application/json") and body:
            params.update(json.loads(body))
        elif content_type.startswith("application/x-www-form-urlencoded"):
            params.update(parse_qsl(body.decode()))
        elif content_type.startswith("multipart/form-data"):
            message = BytesParser(policy=HTTP).parsebytes(
                b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
            )
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                content = part.get_payload(decode=True) or b""
                if part.get_filename():
                    params[str(name)] = {"filename": part.get_filename(), "size": len(content)}
                else:
                    params[str(name)] = content.decode()
        for key in ("reply_markup", "entities", "commands", "allowed_updates", "reply_parameters"):
            if isinstance(params.get(key), str):
                try:
                    params[key] = json.loads(params[key])
                except json.JSONDecodeError as exc:
                    raise ApiError(400, f"Bad Request: can't parse {key} JSON object") from exc
        return params

    def _dispatch(self, method: str, params: dict[str, Any]) -> Any:
        with self._cond:
            queued = self._failures.get(method)
            if queued:
                failure = queued[0]
                failure.times -= 1
                if failure.times <= 0:
                    queued.pop(0)
                raise ApiError(failure.code, failure.description, failure.retry_after)
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            raise ApiError(404, "Not Found: method not found")
        return handler(params)

    def _m_getme(self, params: dict[str, Any]) -> Any:
        return {
            **BOT_USER,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    def _m_setmycommands(self, params: dict[str, Any]) -> Any:
        commands = params.get("commands") or []
        for command in commands:
            if not re.fullmatch(r"[a-z0-9_]{1,32}", command.get("command", "")):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
        self.commands = commands
        return True

    def _m_getmycommands(self, params: dict[str, Any]) -> Any:
        return self.commands

    def _m_setwebhook(self, params: dict[str, Any]) -> Any:
        secret = params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        with self._cond:
            self.webhook = {"url": params["url"], "secret_token": secret}
            pending, self._updates = self._updates, []
        webhook = self.webhook
        # Delivered from another thread: the app may be waiting for this very answer before it serves.
        threading.Thread(
            target=lambda: [self._deliver(webhook, update) for update in pending], daemon=True
        ).start()
        return True

    def _m_deletewebhook(self, params: dict[str, Any]) -> Any:
        with self._cond:
            self.webhook = None
        return True

    def _m_getupdates(self, params: dict[str, Any]) -> Any:
        offset = int(params.get("offset", 0) or 0)
        limit = int(params.get("limit", 100) or 100)
        deadline = time.monotonic() + min(float(params.get("timeout", 0) or 0), MAX_POLL_SECONDS)
        with self._cond:
            self.polls_started += 1
            if self.webhook is not None:
                raise ApiError(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook "
                    "to delete the webhook first",
                )
            while True:
                if offset > 0:  # confirmed: never delivered again
                    self._updates = [u for u in self._updates if u["update_id"] >= offset]
                # A test may re-queue an update with an id below the offset; deliver it anyway.
                ready = self._updates[:limit]
                remaining = deadline - time.monotonic()
                if ready or remaining <= 0 or self._closing:
                    self._updates = self._updates[len(ready) :]
                    return ready
                self._cond.wait(remaining)

    def _m_sendmessage(self, params: dict[str, Any]) -> Any:
        return self._store_message(params, self._text(params, "text"))

    def _m_sendphoto(self, params: dict[str, Any]) -> Any:
        if "photo" not in params:
            raise ApiError(400, "Bad Request: there is no photo in the request")
        caption = self._text(params, "caption") if params.get("caption") else ""
        return self._store_message(params, caption, photo=params["photo"])

    def _m_answercallbackquery(self, params: dict[str, Any]) -> Any:
        if not params.get("callback_query_id"):
            raise ApiError(
                400, "Bad Request: query is too old and response timeout expired or query ID is invalid"
            )
        if len(params.get("text", "")) > 200:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        return True

    def _m_editmessagetext(self, params: dict[str, Any]) -> Any:
        text = self._text(params, "text")
        markup = params.get("reply_markup")
        check_markup(markup)
        return self._edit(params, text=text, markup=markup)

    def _m_editmessagereplymarkup(self, params: dict[str, Any]) -> Any:
        markup = params.get("reply_markup")
        check_markup(markup)
        return self._edit(params, text=None, markup=markup)

    def _m_deletemessage(self, params: dict[str, Any]) -> Any:
        key = (int(params["chat_id"]), int(params["message_id"]))
        with self._cond:
            if self.messages.pop(key, None) is None:
                raise ApiError(400, "Bad Request: message to delete not found")
        return True

    # ---- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _text(params: dict[str, Any], name: str) -> str:
        text = str(params.get(name, ""))
        if params.get("parse_mode", "").upper() == "HTML":
            text = parse_html(text)
        elif params.get("parse_mode"):
            raise ApiError(
                400, f"Bad Request: unsupported parse_mode {params['parse_mode']!r} in the stand-in"
            )
        if not text.strip() and name == "text":
            raise ApiError(400, "Bad Request: message text is empty")
        if len(text) > MAX_TEXT_CHARS:
            raise ApiError(400, "Bad Request: message is too long")
        return text

    def _store_message(self, params: dict[str, Any], text: str, **extra: Any) -> dict[str, Any]:
        if "chat_id" not in params:
            raise ApiError(400, "Bad Request: chat_id is empty")
        try:
            chat_id = int(params["chat_id"])
        except ValueError:
            raise ApiError(400, "Bad Request: chat not found") from None
        markup = params.get("reply_markup")
        if markup is not None and "force_reply" not in markup:
            check_markup(markup)
        with self._cond:
            self._next_message_id += 1
            message: dict[str, Any] = {
                "message_id": self._next_message_id,
                "date": int(time.time()),
                "from": BOT_USER,
                "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"},
            }
            if "photo" in extra:
                message["photo"] = [
                    {"file_id": "photo1", "file_unique_id": "u1", "width": 800, "height": 600}
                ]
                if text:
                    message["caption"] = text
            else:
                message["text"] = text
            if markup is not None and "inline_keyboard" in markup:
                message["reply_markup"] = markup
            message["_raw"] = params.get("text", params.get("caption"))
            self.messages[(chat_id, message["message_id"])] = message
            return {k: v for k, v in message.items() if not k.startswith("_")}

    def _edit(self, params: dict[str, Any], *, text: str | None, markup: Any) -> Any:
        if "inline_message_id" in params:
            return True
        key = (int(params.get("chat_id", 0)), int(params.get("message_id", 0)))
        with self._cond:
            message = self.messages.get(key)
            if message is None:
                raise ApiError(400, NOT_FOUND)
            new_text = message.get("text") if text is None else text
            old_markup = message.get("reply_markup")
            new_markup = markup if markup and markup.get("inline_keyboard") else None
            if new_text == message.get("text") and new_markup == old_markup:
                raise ApiError(400, NOT_MODIFIED)
            message["text"] = new_text
            if text is not None:
                message["_raw"] = params.get("text")
            if new_markup is None:
                message.pop("reply_markup", None)
            else:
                message["reply_markup"] = new_markup
            message["edit_date"] = int(time.time())
            return {k: v for k, v in message.items() if not k.startswith("_")}


def operator_user(user_id: int = 4242, name: str = "Olga") -> dict[str, Any]:
    """A Telegram user as it appears in `from`."""
    return {"id": user_id, "is_bot": False, "first_name": name, "username": name.lower()}
