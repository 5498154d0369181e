"""Where the mailbox watcher stopped: the last UID taken per (account, folder, UIDVALIDITY), and how
each watched folder is doing (what `/healthz` reports, from whichever process watches it).

Operational state, not projections: nothing here is replayed from the log. A batch of messages is
staged in the intake inbox (store.intake: durable, and sequenced into the log soon after, or by the
relay after a crash) in the same transaction that stores its last UID here (`advance_in`), so a UID is
never stored for a message that is not kept; a crash before the commit fetches the batch again, and the
Message-ID idempotency key makes any repeat a no-op. A UIDVALIDITY never seen before starts from nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, Column, Connection, Engine, String, Table, insert, select, update

from store.events import utcnow
from store.tables import DateTime, metadata

mailbox_positions = Table(
    "mailbox_positions",
    metadata,
    Column("account", String(320), primary_key=True),
    Column("folder", String(255), primary_key=True),
    Column("uidvalidity", BigInteger, primary_key=True, autoincrement=False),
    Column("last_uid", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

mailbox_status = Table(
    "mailbox_status",
    metadata,
    Column("account", String(320), primary_key=True),
    Column("folder", String(255), primary_key=True),
    # syncing | watching | polling | reconnecting | refused | stopped
    Column("state", String(32), nullable=False),
    Column("detail", String(500), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)

# States that need attention: the login refused (fix IMAP_URL), the server unreachable, the watch
# ended by an unexpected error. A watch that stopped with its process (a deploy) is reported, not failed.
FAILING_STATES = frozenset({"refused", "reconnecting", "crashed"})


@dataclass(frozen=True)
class FolderStatus:
    account: str
    folder: str
    state: str
    detail: str
    at: datetime

    @property
    def ok(self) -> bool:
        return self.state not in FAILING_STATES


def last_uid(engine: Engine, account: str, folder: str, uidvalidity: int) -> int | None:
    """The last UID taken in this folder under this UIDVALIDITY, or None (never synced under it)."""
    p = mailbox_positions.c
    with engine.connect() as connection:
        return connection.execute(
            select(p.last_uid).where(p.account == account, p.folder == folder, p.uidvalidity == uidvalidity)
        ).scalar()


def ever_synced(engine: Engine, account: str, folder: str) -> bool:
    """Whether this folder was synced before under any UIDVALIDITY (not a first connect)."""
    p = mailbox_positions.c
    with engine.connect() as connection:
        found = connection.execute(
            select(p.last_uid).where(p.account == account, p.folder == folder).limit(1)
        ).first()
    return found is not None


def advance(engine: Engine, account: str, folder: str, uidvalidity: int, uid: int) -> None:
    """Store `uid` as taken (never moves backwards; a racing second watcher cannot rewind it)."""
    with engine.begin() as connection:
        advance_in(connection, account, folder, uidvalidity, uid)


def advance_in(connection: Connection, account: str, folder: str, uidvalidity: int, uid: int) -> None:
    """`advance` in the caller's transaction: it commits with whatever was recorded beside it."""
    p = mailbox_positions.c
    now = utcnow()
    changed = connection.execute(
        update(mailbox_positions)
        .where(p.account == account, p.folder == folder, p.uidvalidity == uidvalidity)
        .where(p.last_uid < uid)
        .values(last_uid=uid, updated_at=now)
    ).rowcount
    if changed:
        return
    exists = connection.execute(
        select(p.last_uid).where(p.account == account, p.folder == folder, p.uidvalidity == uidvalidity)
    ).first()
    if exists is None:
        connection.execute(
            insert(mailbox_positions).values(
                account=account, folder=folder, uidvalidity=uidvalidity, last_uid=uid, updated_at=now
            )
        )


def set_status(engine: Engine, account: str, folder: str, state: str, detail: str) -> None:
    """Record how the folder's watch is going (one row per folder, replaced)."""
    s = mailbox_status.c
    values = {"state": state, "detail": detail[:500], "at": utcnow()}
    with engine.begin() as connection:
        changed = connection.execute(
            update(mailbox_status).where(s.account == account, s.folder == folder).values(**values)
        ).rowcount
        if not changed:
            connection.execute(insert(mailbox_status).values(account=account, folder=folder, **values))


def statuses(engine: Engine, account: str) -> list[FolderStatus]:
    """Every watched folder's latest status for the account, by folder name."""
    s = mailbox_status.c
    with engine.connect() as connection:
        rows = connection.execute(select(mailbox_status).where(s.account == account).order_by(s.folder)).all()
    return [FolderStatus(**row._mapping) for row in rows]
