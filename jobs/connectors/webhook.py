"""Outbound webhook: an HTTP POST carrying an `Idempotency-Key`, so a repeat is harmless at the receiver.

5xx answers and network errors are transient (the executor retries them with backoff); a 4xx is the
receiver saying the request itself is wrong, so it is not repeated automatically.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from jobs.connectors.base import ActionRequest, ActionResult, Handover, PermanentError, TransientError

# Connect fast or give up; allow a receiver a little longer to answer.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 15.0


class WebhookConnector:
    """post_webhook over httpx."""

    name = "webhook"
    dedupes = True

    def __init__(
        self, *, connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT
    ) -> None:
        self.timeout = httpx.Timeout(read_timeout, connect=connect_timeout)

    def run(self, request: ActionRequest, handover: Handover) -> ActionResult:
        """POST params["json"] to params["url"]."""
        url = str(request.params.get("url") or "")
        if urlsplit(url).scheme not in {"http", "https"}:
            raise PermanentError(f"webhook url must be http(s), not {url[:80]!r}", retryable=False)
        headers = {"Idempotency-Key": request.idempotency_key, "User-Agent": "chatops-crm"}
        handover()
        try:
            with httpx.Client(timeout=self.timeout) as client:
                response = client.post(url, json=request.params.get("json") or {}, headers=headers)
        except httpx.HTTPError as exc:
            raise TransientError(f"webhook {url} unreachable: {type(exc).__name__} {exc}") from None
        if response.status_code >= 500:
            raise TransientError(f"webhook {url} answered {response.status_code}")
        if response.status_code >= 400:
            raise PermanentError(f"webhook {url} answered {response.status_code}: {response.text[:200]}")
        return ActionResult(reference=f"HTTP {response.status_code}")
