"""The web app's stager: `store.intake.stage` for an asyncio event loop on Postgres, in batches.

Handing each request's insert to a worker thread cost more CPU than the insert itself (the thread
pool's hand-off and the threads' contention for the GIL): half the web process's time under load.
Here the statements run on psycopg's async connection pool, in the loop. Requests that arrive while
the writers are busy are staged together by the next free writer in one statement, one round trip and
one commit: under load that costs a third of a statement per row, and a lone request still gets its
own statement at once. A request is answered only when the statement holding its row has committed.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import make_url

from store import tables as t
from store.events import Signal
from store.intake import _KNOWN, _STAGE, Staged, _known, _row
from store.log import NOT_IN_LOG

if TYPE_CHECKING:
    from psycopg import AsyncConnection

# Connections the stager keeps open when idle; it grows to its max_size under load.
ASYNC_POOL_MIN = 2
# Most rows one statement stages: a burst larger than this takes several statements, so one slow
# statement does not hold thousands of answers.
MAX_BATCH = 200

_Waiting = list[tuple[dict[str, Any], "asyncio.Future[Staged]"]]

# `_STAGE` for many rows: the same columns and the same rule (not in the log, not staged), over the
# rows as one JSON array, in the order the requests arrived (intake ids are the staging order).
# RETURNING names the event id, so a key repeated within a batch tells which of its rows was staged.
# The rows go as JSON rather than as an array per column: psycopg builds array literals in Python, at
# about 30 µs a row (a twentieth of the web process's CPU per request under load), where orjson
# writes the batch in under 1 µs a row and the signal's JSON text goes in as it is.
# "Not in the log" is a lookup of the key for each row (store.log.NOT_IN_LOG says why).
_BATCH_SQL = f"""
INSERT INTO {t.intake.name}
    (idempotency_key, event_id, type, source, occurred_at, signal, staged_at, attempts)
SELECT v.idempotency_key, v.event_id, v.type, v.source, v.occurred_at, v.signal, v.staged_at, 0
FROM ROWS FROM (
    json_to_recordset(%(rows)s::json) AS (
        idempotency_key text, event_id text, type text, source text, occurred_at timestamptz,
        signal json, staged_at timestamptz
    )
) WITH ORDINALITY AS v(idempotency_key, event_id, type, source, occurred_at, signal, staged_at, n)
WHERE {NOT_IN_LOG}
ORDER BY v.n
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id, event_id
"""
_BATCH_COLUMNS = ("idempotency_key", "event_id", "type", "source", "occurred_at", "staged_at")


def batch_rows(rows: list[dict[str, Any]]) -> str:
    """The rows as `_BATCH_SQL` takes them: a JSON array of objects, each row's signal (JSON text
    already) in it as it is. Raises orjson's error for text JSON cannot hold (a lone surrogate)."""
    return orjson.dumps(
        [
            {**{column: row[column] for column in _BATCH_COLUMNS}, "signal": orjson.Fragment(row["signal"])}
            for row in rows
        ]
    ).decode()


class AsyncStager:
    """`stage` for the web app's event loop (Postgres). Opened by the app's lifespan (bot.web.app), so
    it lives on the loop that serves the requests; at most max_size statements run at once."""

    def __init__(self, url: str, *, max_size: int, timeout: float) -> None:
        from psycopg_pool import AsyncConnectionPool
        from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

        dialect = PGDialect_psycopg()
        self._stage_sql = str(_STAGE["postgresql"].compile(dialect=dialect))
        self._known_sql = str(_KNOWN.compile(dialect=dialect))
        self._waiting: _Waiting = []
        self._writers = 0
        self._max_writers = max_size
        self._tasks: set[asyncio.Task[None]] = set()
        # No check on checkout (a round trip per statement, as pre-ping would be): a connection the
        # server dropped fails its statement, and the writer checks the pool and tries once more.
        self.pool = AsyncConnectionPool(
            make_url(url).set(drivername="postgresql").render_as_string(hide_password=False),
            min_size=min(ASYNC_POOL_MIN, max_size),
            max_size=max_size,
            timeout=timeout,
            kwargs={"autocommit": True},
            open=False,
            name="intake",
        )

    async def open(self) -> None:
        """Start connecting in the background; a database that is down answers requests with 503."""
        await self.pool.open(wait=False)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.pool.close()

    async def stage(
        self,
        signal_type: str,
        signal: Signal,
        idempotency_key: str,
        *,
        source: str,
        occurred_at: datetime | None = None,
    ) -> Staged:
        """As `stage`, once the row's statement has committed: raises what that statement raised for
        the row (psycopg's OperationalError, or PoolTimeout, when the database is down)."""
        values = _row(signal_type, signal.model_dump_json(), idempotency_key, source, occurred_at)
        answer: asyncio.Future[Staged] = asyncio.get_running_loop().create_future()
        self._waiting.append((values, answer))
        if self._writers < self._max_writers:
            self._writers += 1
            task = asyncio.create_task(self._write())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await answer

    async def _write(self) -> None:
        """Stage waiting rows, a batch per statement, until none wait."""
        try:
            while self._waiting:
                await self._write_next()
        finally:
            self._writers -= 1

    async def _write_next(self) -> None:
        from psycopg import OperationalError as Unreachable

        try:
            connection = await self.pool.getconn()
        except Exception as exc:  # PoolTimeout: no connection within the timeout, the database is down
            _settle(self._take(), exc)
            return
        # Taken once a connection is in hand: the rows that arrived while every writer was busy.
        batch = self._take()
        try:
            try:
                outcomes = await self._stage_batch(connection, batch)
            finally:
                await self.pool.putconn(connection)
        except Unreachable:
            # A server restart leaves the idle connections dead: drop them all, then once more.
            try:
                await self.pool.check()
                async with self.pool.connection() as fresh:
                    outcomes = await self._stage_batch(fresh, batch)
            except Exception as exc:
                _settle(batch, exc)
                return
        except Exception as exc:
            _settle(batch, exc)
            return
        for (_, answer), outcome in zip(batch, outcomes, strict=True):
            if answer.done():  # the request was cancelled (its client went away); its row is staged
                continue
            if isinstance(outcome, Exception):
                answer.set_exception(outcome)
            else:
                answer.set_result(outcome)

    def _take(self) -> _Waiting:
        batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
        return batch

    async def _stage_batch(self, connection: AsyncConnection, batch: _Waiting) -> list[Staged | Exception]:
        """Each row's outcome: one statement for the batch; a batch the database refuses (a value a
        column cannot hold) row by row, so only the bad row's request is refused."""
        from psycopg import OperationalError as Unreachable

        rows = [values for values, _ in batch]
        if len(rows) == 1:
            return [await self._stage_one(connection, rows[0])]
        try:
            cursor = await connection.execute(_BATCH_SQL, {"rows": batch_rows(rows)})
            staged = {event_id: row_id for row_id, event_id in await cursor.fetchall()}
        except Unreachable:
            raise
        except Exception:
            outcomes: list[Staged | Exception] = []
            for values in rows:
                try:
                    outcomes.append(await self._stage_one(connection, values))
                except Unreachable:
                    raise
                except Exception as exc:
                    outcomes.append(exc)
            return outcomes
        return [
            Staged(values["event_id"], duplicate=False, row_id=staged[values["event_id"]])
            if values["event_id"] in staged
            else await self._known(connection, values)
            for values in rows
        ]

    async def _stage_one(self, connection: AsyncConnection, values: dict[str, Any]) -> Staged:
        row = await (await connection.execute(self._stage_sql, values)).fetchone()
        if row is not None:
            return Staged(values["event_id"], duplicate=False, row_id=row[0])
        return await self._known(connection, values)

    async def _known(self, connection: AsyncConnection, values: dict[str, Any]) -> Staged:
        # Known: in the log already, or staged before (by a concurrent statement, whose insert this one
        # waited for; a new statement sees it committed).
        known = await (
            await connection.execute(self._known_sql, {"key": values["idempotency_key"]})
        ).fetchone()
        return _known(values, known[0] if known else None)


def _settle(batch: _Waiting, exc: BaseException) -> None:
    """Answer every request of a batch that could not be staged with the reason."""
    for _, answer in batch:
        if not answer.done():
            answer.set_exception(exc)
