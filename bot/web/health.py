"""What GET /healthz reports: whether the database, the queue, the memory and the mailbox can be reached."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

if TYPE_CHECKING:
    from bot.bootstrap import App

# A health probe must answer before the load balancer's own timeout (typically 5 s) gives up.
PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def check_health(container: App) -> list[Check]:
    """One check per dependency, in a fixed order (blocking: run it off the event loop)."""
    return [_database(container), _queue(container), _memory(container), _mailbox(container)]


def _database(container: App) -> Check:
    dialect = container.engine.dialect.name
    try:
        with container.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return Check("database", False, f"{dialect} unreachable: {reason}")
    return Check("database", True, dialect)


def _queue(container: App) -> Check:
    kind = "redis" if container.settings.redis_url else "in-process"
    try:
        ok = container.queue.ping()
    except Exception as exc:  # a backend's ping should not raise, but /healthz must answer regardless
        return Check("queue", False, f"{kind} unreachable: {exc}")
    return Check("queue", ok, kind if ok else f"{kind} unreachable")


def _memory(container: App) -> Check:
    # Only a memory already built is asked (reading `container.memory` would build one just to probe).
    memory: Any = container.memory_if_built
    if memory is not None and hasattr(memory, "ping"):
        try:
            ok = bool(memory.ping())
        except Exception as exc:  # as for the queue: report, never raise
            return Check("memory", False, f"unreachable: {exc}")
        return Check("memory", ok, "reachable" if ok else "unreachable")
    url = container.settings.chroma_url
    if not url:
        return Check("memory", True, "embedded Chroma in CRM_DATA_DIR (opened by the worker)")
    try:
        response = httpx.get(url.rstrip("/") + "/api/v2/heartbeat", timeout=PROBE_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return Check("memory", False, f"Chroma at CHROMA_URL unreachable: {exc}")
    if response.status_code != 200:
        return Check("memory", False, f"Chroma at CHROMA_URL answered {response.status_code}")
    return Check("memory", True, "Chroma server at CHROMA_URL")


def _mailbox(container: App) -> Check:
    """How the watch on IMAP_URL is going, from whichever process runs it (the status rows it keeps)."""
    from store.mailbox_positions import statuses
    from store.mailbox_url import parse_mailbox_url

    url = container.settings.imap_url
    if url is None:
        return Check("mailbox", True, "not configured (IMAP_URL unset)")
    config = parse_mailbox_url(url.get_secret_value())
    try:
        found = statuses(container.engine, config.account)
    except SQLAlchemyError:
        return Check("mailbox", False, "unknown: the database is unreachable")
    if not found:
        return Check(
            "mailbox", True, f"{config.where}: not watched yet (`crm mail`, `crm bot` or `crm run` do)"
        )
    detail = "; ".join(f"{s.folder}: {s.state} ({s.detail})" for s in found)
    return Check("mailbox", all(s.ok for s in found), detail)
