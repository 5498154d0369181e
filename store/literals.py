"""A log transaction's simple query, bound and sent by psycopg's rules with less of its client CPU.

A log transaction sends its lock and reads, then its writes and COMMIT, as simple queries with the
values in them (store.db.SentTogether). psycopg's ClientCursor renders each value through its
generic adaptation (a dumper looked up per value, escaping through libpq, a cast looked up per type),
and its cursor keeps per-query bookkeeping for features a simple query does not use. Together they
were the largest part of a handover's client CPU.

- `Binder` renders the types that path binds (None, bool, int, str, timezone-aware and naive
  datetimes, psycopg's Json) with the same text psycopg renders, and leaves any other value, and any
  query it cannot split with certainty, to psycopg. tests/integration/test_literals.py holds the two
  renderings equal, and Postgres reading back what was bound.
- `simple_query` sends one and loads its rows with the connection's own loaders.

Binding is only done here with `standard_conforming_strings` on (the server's default since
PostgreSQL 9.1): a backslash is then an ordinary character in a plain literal. A connection where it
is off is left to psycopg altogether.
"""

from __future__ import annotations

import functools
import re
import weakref
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors, generators
from psycopg.adapt import PyFormat, Transformer
from psycopg.pq import ExecStatus
from psycopg.types.json import Json

# A psycopg placeholder `%(name)s`, or `%%` (a literal percent sign); any other `%` is not ours to read.
_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%|%")


def _text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("NUL")  # psycopg's error, with its wording, comes from the fallback
    if "\\" in value:  # as psycopg writes it: an escape string, its backslashes doubled
        return " E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
    return "'" + value.replace("'", "''") + "'"


def _int(value: int) -> str:
    text = str(value)
    return text if value >= 0 else " " + text  # a space, so that `- -1` never reads as a comment


def _datetime(value: datetime) -> str:
    if value.tzinfo is None:
        return "'" + str(value) + "'::timestamp"
    return "'" + str(value) + "'::timestamptz"


class Binder:
    """Renders queries with `%(name)s` placeholders and their values for one psycopg connection."""

    def __init__(self, driver: psycopg.Connection[Any]) -> None:
        self.driver = driver
        self.usable = driver.pgconn.parameter_status(b"standard_conforming_strings") == b"on"
        dumper = driver.adapters.get_dumper(Json, PyFormat.TEXT)
        self._json_dumps: Callable[[Any], str | bytes] = dumper(Json, driver).dumps  # type: ignore[attr-defined]
        self._quoters: dict[type, Callable[[Any], str]] = {
            type(None): lambda _value: "NULL",
            bool: lambda value: "true" if value else "false",
            int: _int,
            str: _text,
            datetime: _datetime,
            Json: self._json,
        }

    def render(self, query: str, params: Mapping[str, Any]) -> str:
        """query with params bound, as psycopg's `ClientCursor.mogrify(query, params)` returns it."""
        parts = _split(query) if self.usable else None
        if parts is None:
            return self._mogrify(query, params)
        quoters = self._quoters
        rendered: list[str] = []
        try:
            for text, name in parts:
                rendered.append(text)
                if name is not None:
                    value = params[name]
                    rendered.append(quoters[type(value)](value))
        except (KeyError, ValueError):  # a type of its own, a missing value, a NUL: psycopg decides
            return self._mogrify(query, params)
        return "".join(rendered)

    def _mogrify(self, query: str, params: Mapping[str, Any]) -> str:
        with psycopg.ClientCursor(self.driver) as cursor:
            return cursor.mogrify(query, params)

    def _json(self, value: Json) -> str:
        dumped = (value.dumps or self._json_dumps)(value.obj)
        text = dumped if isinstance(dumped, str) else bytes(dumped).decode()
        return _text(text) + "::json"


@functools.lru_cache(maxsize=512)
def _split(query: str) -> tuple[tuple[str, str | None], ...] | None:
    """query as (text, name of the placeholder after it, or None at the end); None when it holds a `%`
    that is neither a placeholder nor `%%`."""
    parts: list[tuple[str, str | None]] = []
    start = 0
    text = ""
    for found in _PLACEHOLDER.finditer(query):
        if found.group(0) == "%":
            return None
        text += query[start : found.start()]
        start = found.end()
        if found.group(1) is None:  # %%
            text += "%"
            continue
        parts.append((text, found.group(1)))
        text = ""
    parts.append((text + query[start:], None))
    return tuple(parts)


_BINDERS: weakref.WeakKeyDictionary[psycopg.Connection[Any], Binder] = weakref.WeakKeyDictionary()


def binder_for(driver: psycopg.Connection[Any]) -> Binder:
    """The Binder of a psycopg connection, made on its first query."""
    binder = _BINDERS.get(driver)
    if binder is None:
        binder = _BINDERS[driver] = Binder(driver)
    return binder


def simple_query(driver: psycopg.Connection[Any], query: str) -> list[list[tuple[Any, ...]]]:
    """Send query (statements with their values in them) as one simple query on a connection already
    in the state it should run in (autocommit, or inside a transaction): each statement's rows, loaded
    by the connection's own loaders. What psycopg's cursor does for it, without its per-query
    bookkeeping (the prepare manager, result sets kept for scrolling, an object per column), which cost
    an email's handover more client CPU than binding its values. An error raises psycopg's own error for
    it, as the cursor would; the statements after a failed one did not run."""
    pgconn = driver.pgconn
    with driver.lock:
        pgconn.send_query(query.encode(driver.info.encoding))
        results = driver.wait(generators.fetch_many(pgconn))
    rows: list[list[tuple[Any, ...]]] = []
    loader: Any = None  # psycopg's Transformer (its C one where installed), made for the first rows
    for result in results:
        if result.status == ExecStatus.FATAL_ERROR:
            raise errors.error_from_result(result, encoding=driver.info.encoding)
        if result.status != ExecStatus.TUPLES_OK:
            rows.append([])
            continue
        if loader is None:
            loader = Transformer(driver)
        loader.set_pgresult(result)
        rows.append(loader.load_rows(0, result.ntuples, tuple))
    return rows
