"""Reading a request body with a hard size limit, before anything looks at its content."""

from __future__ import annotations

from starlette.requests import Request

from bot.inbound.errors import BodyTooLarge, MalformedBody

# Largest body accepted (1 MiB): far above any real signal, webhook or plain mail, and small enough
# that a flood of maximum-size requests cannot exhaust memory.
MAX_BODY_BYTES = 1024 * 1024


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body; BodyTooLarge as soon as Content-Length or the bytes streamed exceed limit."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise MalformedBody("Content-Length is not a number") from None
        if size > limit:
            raise BodyTooLarge(f"the body is {size} bytes; the limit is {limit}", limit=limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        # A missing or lying Content-Length (chunked transfer) is caught here, while streaming.
        if len(body) > limit:
            raise BodyTooLarge(f"the body is over the limit of {limit} bytes", limit=limit)
    return bytes(body)
