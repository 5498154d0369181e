"""Who may read the operations pages: `/metrics` and the API documentation (`/docs`, `/openapi.json`).

They tell an outsider what the CRM runs and how busy it is. With METRICS_TOKEN set, they answer only
requests carrying `Authorization: Bearer <METRICS_TOKEN>` (from anywhere, loopback included: a reverse
proxy on the same machine makes every client look local). Without it, they answer only loopback
clients, so a `crm web` bound to every interface does not publish them.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

BEARER = b"bearer "


class OpsPagesGuard:
    """ASGI middleware: refuses requests for `paths` that lack the token, or come from off the machine."""

    def __init__(self, app: ASGIApp, paths: Iterable[str], token: str | None) -> None:
        self.app = app
        self.paths = frozenset(paths)
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, error, message = refusal
        headers = [(b"content-type", b"application/json")]
        if status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="crm"'))
        body = json.dumps({"error": error, "message": message, "errors": []}).encode()
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        path = scope["path"]
        if self.token is not None:
            if bearer_matches(_header(scope, b"authorization"), self.token):
                return None
            return 401, "unauthorised", f"{path} needs the header Authorization: Bearer <METRICS_TOKEN>"
        client = scope.get("client")
        if client and is_loopback(client[0]):
            return None
        return 403, "forbidden", f"{path} answers only loopback clients while METRICS_TOKEN is not set"


def bearer_matches(header: bytes | None, token: bytes) -> bool:
    """Whether an Authorization header value is `Bearer <token>`; constant-time in the token."""
    if header is None or header[: len(BEARER)].lower() != BEARER:
        return False
    return hmac.compare_digest(header[len(BEARER) :].strip(), token)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and IPv4-mapped loopback; a name or anything unparseable is not."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None
