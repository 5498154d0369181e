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
- `Binder.compose` builds a log transaction's query from its statements, sending each statement that
  takes values as `EXECUTE name(values)` of a statement prepared on that connection: Postgres then
  neither parses nor plans it anew on every transaction (0.3 ms of planning alone for a handover's
  nine statements). See `Binder.compose` for how a statement that has gone from the server is found.

Binding is only done here with `standard_conforming_strings` on (the server's default since
PostgreSQL 9.1): a backslash is then an ordinary character in a plain literal. A connection where it
is off is left to psycopg altogether.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors, generators
from psycopg.adapt import PyFormat, Transformer
from psycopg.pq import ExecStatus, TransactionStatus
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


# A statement prepared on every connection that holds any of ours, run where a transaction's first query
# runs none of them, so that query finds out whether they are still there (Binder.compose).
PING = "crm_ping"
# At most this many of ours on one connection; statements past it are sent with their values in them.
MAX_PREPARED = 200

# The parameter types (as pg_prepared_statements names them) a value of each Python type is sent to as
# an EXECUTE's argument; None: any. An EXECUTE converts its arguments as an assignment does, where the
# statement with its values in it casts them explicitly (SQLAlchemy writes `%(v)s::INTEGER`), and the
# two differ where no assignment cast exists (a bool to an integer): such a value goes in the statement.
_TEXTS = frozenset({"text", "character varying", "character", "name"})
_TAKES: dict[type, frozenset[str] | None] = {
    type(None): None,
    str: None,  # a quoted literal has no type of its own: each type reads it as its own input
    bool: frozenset({"boolean"}) | _TEXTS,
    int: frozenset({"smallint", "integer", "bigint", "numeric", "real", "double precision"}) | _TEXTS,
    datetime: frozenset(
        {
            "timestamp with time zone",
            "timestamp without time zone",
            "date",
            "time with time zone",
            "time without time zone",
        }
    )
    | _TEXTS,
    Json: frozenset({"json", "jsonb"}),
}


class Binder:
    """Renders queries with `%(name)s` placeholders and their values for one psycopg connection."""

    def __init__(self, driver: psycopg.Connection[Any]) -> None:
        self._driver = weakref.ref(driver)  # weak: the binder goes with its connection (binder_for)
        self.usable = driver.pgconn.parameter_status(b"standard_conforming_strings") == b"on"
        # The names of ours prepared on this connection (PING among them), with their parameters' types.
        self.held: dict[str, tuple[str, ...]] = {}
        self._pending: dict[str, _Prepared] = {}  # seen inside a transaction; prepared at the next start
        self._confirmed: weakref.ref[Any] | None = None  # the transaction whose first query found `held`
        self._dropping: list[str] = []  # ours to deallocate at the next start: their plans went stale
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

    @property
    def driver(self) -> psycopg.Connection[Any]:
        driver = self._driver()
        assert driver is not None, "a Binder outlived its connection"
        return driver

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

    def compose(self, statements: list[tuple[str, Mapping[str, Any] | None]], transaction: Any) -> Composed:
        """One simple query of statements (each with its values, or None when it takes none), those
        that take values sent as `EXECUTE` of a statement prepared on this connection where that is
        safe; `transaction` is the caller's (SQLAlchemy's), the same object for every query of it.

        A prepared statement goes from the server with all the others: psycopg sends `DEALLOCATE ALL`
        when it rolls back a connection holding statements it prepared itself, and so do `DISCARD ALL`
        and a new session behind a pooler. Nobody tells us, so each transaction's first query finds
        out: it runs one of ours (PING where it runs none), and the caller, on the error that one is
        missing or stale (`is_stale`: its plan's result changed with its table), rolls it back, calls
        `forget` and sends it again: nothing of it was kept. Statements are prepared (one round trip,
        before that query) only there, outside any transaction, so a statement Postgres cannot
        prepare (a value whose type it cannot infer) aborts nothing; it is then always sent with its
        values in it, as is a value an EXECUTE would convert otherwise (`_TAKES`). Later queries of a
        transaction run ours only once its first query has confirmed them (`confirm`) and nothing
        since may have deallocated them (`unconfirm`); one they do not hold is sent with its values in
        it and prepared at the next transaction's start."""
        driver = self.driver
        starts = driver.autocommit and driver.pgconn.transaction_status == TransactionStatus.IDLE
        if starts:
            # It is sent again when it finds ours gone (nothing of it was kept): so it runs none of ours
            # where it commits before its end, and would have kept what ran before that COMMIT.
            commits = [n for n, (query, _) in enumerate(statements) if query == "COMMIT"]
            prepared = self.usable and commits in ([], [len(statements) - 1])
        else:
            confirmed = self._confirmed() if self._confirmed is not None else None
            prepared = self.usable and transaction is not None and transaction is confirmed
        usable = self.usable
        forms = [
            prepared_form(query) if usable and values is not None else None for query, values in statements
        ]
        checked = False  # whether a round trip of this call found `held` on the server
        if starts and prepared:
            if self._dropping:
                self._drop()
            wanted = {form.name: form for form in forms if form is not None and self._unheld(form)}
            wanted.update((name, form) for name, form in self._pending.items() if self._unheld(form))
            self._pending = {}
            if wanted and len(self.held) + len(wanted) <= MAX_PREPARED:
                self._prepare(list(wanted.values()))
                checked = True
        rendered: list[str] = []
        executes = False
        for (query, values), form in zip(statements, forms, strict=True):
            if values is None:
                rendered.append(query)
                continue
            if form is not None and prepared and form.name in self.held:
                text = self._execute(form, values)
                if text is not None:
                    rendered.append(text)
                    executes = True
                    continue
            elif form is not None and self._unheld(form):
                self._pending[form.name] = form
            rendered.append(self.render(query, values))
        if starts and prepared and self.held and not (executes or checked):
            # Before a COMMIT that ends the query: a check that failed after it would find it kept.
            rendered.insert(len(rendered) - (statements[-1][0] == "COMMIT"), "EXECUTE " + PING)
            executes = True
        return Composed("; ".join(rendered), confirms=starts and prepared, executes=executes)

    def confirm(self, composed: Composed, transaction: Any) -> None:
        """The composed query ran: the rest of `transaction` may run the statements it holds."""
        if composed.confirms and transaction is not None:
            self._confirmed = weakref.ref(transaction)

    def unconfirm(self) -> None:
        """Something ran on the connection that may have deallocated ours (see store.db.make_engine):
        the rest of the transaction sends its statements with their values in them."""
        self._confirmed = None

    def forget(self, exc: BaseException) -> None:
        """A query found ours gone (`is_stale`): all of them went together; or one's plan stale, and
        then all are deallocated at the next start, since any may read what changed."""
        if not _missing(exc):
            self._dropping = list(self.held)
        self.held.clear()
        self._confirmed = None

    def _unheld(self, form: _Prepared) -> bool:
        """form is not prepared on this connection, and Postgres has not refused to prepare it."""
        return form.name not in self.held and form.name not in _UNPREPARABLE

    def _execute(self, form: _Prepared, params: Mapping[str, Any]) -> str | None:
        quoters = self._quoters
        values: list[str] = []
        try:
            for name, kind in zip(form.params, self.held[form.name], strict=True):
                value = params[name]
                takes = _TAKES[type(value)]
                if takes is not None and kind not in takes:
                    return None
                values.append(quoters[type(value)](value))
        except (KeyError, ValueError):  # left to psycopg's rendering of the whole statement
            return None
        return form.execute + ", ".join(values) + ")"

    def _prepare(self, forms: list[_Prepared]) -> None:
        """Prepare forms and learn their parameters' types, in one round trip outside any transaction;
        one by one when that fails, so a statement Postgres cannot prepare is known and the others
        still are. The round trip first runs one of ours already held, so it also tells whether they
        still are (see compose)."""
        if PING not in self.held:
            self.held.clear()
            forms = [_PING_FORM, *forms]
        check = ["EXECUTE " + PING] if self.held else []
        try:
            results = simple_query(
                self.driver, "; ".join([*check, *(form.statement for form in forms), _types(forms)])
            )
        except psycopg.Error as exc:
            if is_stale(exc):  # the check: PING's result never changes, so it is gone with the rest
                self.forget(exc)
                self._prepare([form for form in forms if form is not _PING_FORM])
                return
            if not _cannot_prepare(exc):
                raise
            prepared: list[_Prepared] = []
            for form in forms:  # those before the one that failed were prepared: a PREPARE outlives it
                try:
                    simple_query(self.driver, form.statement)
                except errors.DuplicatePreparedStatement:
                    pass
                except psycopg.Error as failed:
                    if not _cannot_prepare(failed):
                        raise
                    _UNPREPARABLE.add(form.name)
                    continue
                prepared.append(form)
            results = simple_query(self.driver, _types(prepared))
        self.held.update((name, tuple(kinds)) for name, kinds in results[-1])

    def _drop(self) -> None:
        """Deallocate the statements `forget` found stale (their names; missing ones are let be)."""
        names, self._dropping = self._dropping, []
        try:
            simple_query(self.driver, "; ".join(f"DEALLOCATE {name}" for name in names))
        except errors.InvalidSqlStatementName:
            for name in names:
                with contextlib.suppress(errors.InvalidSqlStatementName):
                    simple_query(self.driver, f"DEALLOCATE {name}")

    def _mogrify(self, query: str, params: Mapping[str, Any]) -> str:
        with psycopg.ClientCursor(self.driver) as cursor:
            return cursor.mogrify(query, params)

    def _json(self, value: Json) -> str:
        dumped = (value.dumps or self._json_dumps)(value.obj)
        text = dumped if isinstance(dumped, str) else bytes(dumped).decode()
        return _text(text) + "::json"


@dataclass(frozen=True)
class Composed:
    """A query Binder.compose built; `confirms`: it is a transaction's first, which can be sent again
    (nothing of it is kept when it fails); `executes`: it runs statements of ours."""

    query: str
    confirms: bool
    executes: bool


@dataclass(frozen=True)
class _Prepared:
    name: str  # a digest of the statement: the same on every connection and in every process
    statement: str  # PREPARE name AS the query, `$n` for its placeholders
    params: tuple[str, ...]  # the placeholders' names, in `$n` order
    execute: str  # `EXECUTE name(`, for the values and `)` to follow


_PING_FORM = _Prepared(PING, f"PREPARE {PING} AS SELECT 1", (), f"EXECUTE {PING}(")
# Statements Postgres would not prepare, by name: always sent with their values in them.
_UNPREPARABLE: set[str] = set()


def _types(forms: list[_Prepared]) -> str:
    """The query for the parameters' types of forms, as prepared on the connection."""
    names = ", ".join(f"'{form.name}'" for form in forms) or "NULL"
    return f"SELECT name, parameter_types::text[] FROM pg_prepared_statements WHERE name IN ({names})"


def is_stale(exc: BaseException) -> bool:
    """exc is Postgres saying, of a query that ran our prepared statements, that one is not there, or
    that its plan's result changed since it was prepared (its table altered: feature not supported,
    "cached plan must not change result type"). See Binder.compose."""
    return _missing(exc) or isinstance(exc, errors.FeatureNotSupported)


def _missing(exc: BaseException) -> bool:
    if not isinstance(exc, errors.InvalidSqlStatementName):
        return False
    return '"crm_' in (exc.diag.message_primary or "")


def unconfirm(driver: psycopg.Connection[Any]) -> None:
    """Binder.unconfirm for driver's binder, if it has one."""
    binder = _BINDERS.get(driver)
    if binder is not None:
        binder.unconfirm()


def _cannot_prepare(exc: psycopg.Error) -> bool:
    """exc is Postgres refusing a statement (its syntax, a type it cannot infer, a value, a feature),
    not a failure of the connection."""
    return (exc.sqlstate or "")[:2] in ("42", "22", "0A")


@functools.lru_cache(maxsize=512)
def prepared_form(query: str) -> _Prepared | None:
    """query's statement to prepare; None when it takes no values or cannot be split with certainty."""
    parts = _split(query)
    if parts is None or len(parts) == 1:
        return None
    names: list[str] = []
    text: list[str] = []
    for chunk, name in parts:
        text.append(chunk)
        if name is not None:
            if name not in names:
                names.append(name)
            text.append(f"${names.index(name) + 1}")
    body = "".join(text)
    digest = hashlib.blake2b(body.encode(), digest_size=10).hexdigest()
    name = f"crm_{digest}"
    return _Prepared(name, f"PREPARE {name} AS {body}", tuple(names), f"EXECUTE {name}(")


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
    with driver.lock:
        send_query(driver, query)
        return query_results(driver)


def send_query(driver: psycopg.Connection[Any], query: str) -> None:
    """simple_query's first half: the query sent, its results left for query_results, which must be
    called next on this connection (the server works on it meanwhile)."""
    driver.pgconn.send_query(query.encode(driver.info.encoding))


def query_results(driver: psycopg.Connection[Any]) -> list[list[tuple[Any, ...]]]:
    """simple_query's second half: the rows of each statement of the query send_query sent."""
    results = driver.wait(generators.fetch_many(driver.pgconn))
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
