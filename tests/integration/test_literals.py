"""store.literals binds values into query text exactly as psycopg's ClientCursor does, and Postgres reads
back what was bound: the shortcut must never change what a log transaction writes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import StrEnum
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Json

from store.literals import Binder, binder_for
from tests.conftest import PG_ADMIN_DSN


class Stage(StrEnum):
    LEAD = "lead"


@pytest.fixture(scope="module")
def driver() -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as connection:
        yield connection


def _both(driver: psycopg.Connection[Any], query: str, params: dict[str, Any]) -> tuple[str, str]:
    with psycopg.ClientCursor(driver) as cursor:
        return Binder(driver).render(query, params), cursor.mogrify(query, params)


SAMPLES: list[Any] = [
    None,
    True,
    False,
    0,
    7,
    -7,
    2**70,
    -(2**70),
    "",
    "plain",
    "it's",
    "''",
    "back\\slash",
    "\\'",
    "tab\tnew\nline\r",
    "ünïcödé \u2028 \u202e 😀 \ufeff",
    "%(name)s %% %s",
    "-- not a comment",
    datetime(2026, 12, 2, 22, 20, 39, 459296, tzinfo=UTC),
    datetime(2026, 12, 2, 22, 20, 39, tzinfo=timezone(timedelta(hours=-3, minutes=-30))),
    datetime(2026, 12, 2, 22, 20, 39),
    Json({"attempt": 1, "note": "it's \\ \n ünï"}),
    Json([1, "two", None]),
    Json(None),
    # Left to psycopg: types the shortcut does not render itself.
    1.5,
    float("nan"),
    Decimal("1.10"),
    date(2026, 12, 2),
    ["a", "b'c"],
    Stage.LEAD,
    b"\x00\xff",
]


@pytest.mark.parametrize("value", SAMPLES, ids=repr)
def test_each_value_is_rendered_as_psycopg_renders_it(driver: psycopg.Connection[Any], value: Any) -> None:
    ours, theirs = _both(driver, "SELECT %(v)s, %(v)s::text", {"v": value})
    assert ours == theirs


def test_a_whole_statement_with_casts_and_percent_signs_is_rendered_alike(
    driver: psycopg.Connection[Any],
) -> None:
    query = (
        "UPDATE t SET a=%(a)s::VARCHAR, b=%(b)s::TIMESTAMP WITH TIME ZONE, c=%(c)s::json::JSON "
        "WHERE d LIKE 'x%%' AND e = %(e)s::BIGINT"
    )
    params = {"a": "q'", "b": datetime(2026, 1, 1, tzinfo=UTC), "c": Json({"k": "v"}), "e": -1}
    ours, theirs = _both(driver, query, params)
    assert ours == theirs
    assert "'x%'" in ours


def test_a_query_it_cannot_split_or_a_missing_value_is_left_to_psycopg(
    driver: psycopg.Connection[Any],
) -> None:
    binder = Binder(driver)
    with pytest.raises(psycopg.ProgrammingError):  # a stray %: psycopg's own error, not a guess
        binder.render("SELECT 5 % 2, %(a)s", {"a": 1})
    with pytest.raises(psycopg.ProgrammingError, match="missing: a"):
        binder.render("SELECT %(a)s", {})
    with pytest.raises(psycopg.DataError, match="NUL"):  # Postgres text cannot hold it
        binder.render("SELECT %(a)s", {"a": "a\x00b"})


def test_a_connection_without_standard_conforming_strings_is_left_to_psycopg() -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True, options="-c standard_conforming_strings=off") as off:
        binder = Binder(off)
        assert not binder.usable
        with psycopg.ClientCursor(off) as cursor:
            rendered = binder.render("SELECT %(v)s", {"v": "back\\slash"})
            assert rendered == cursor.mogrify("SELECT %(v)s", {"v": "back\\slash"})
            assert cursor.execute(rendered).fetchone() == ("back\\slash",)


def test_one_binder_per_connection(driver: psycopg.Connection[Any]) -> None:
    assert binder_for(driver) is binder_for(driver)


# Neither NUL nor a lone surrogate can reach Postgres (UTF-8 cannot carry one): what comes in is refused
# or cleaned of both before it is stored (bot.inbound.intake, store.storable).
texts = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=60)
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    texts,
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=45))])),
    st.recursive(
        st.none() | st.booleans() | st.integers(-1000, 1000) | texts,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
        max_leaves=6,
    ).map(Json),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=values)
def test_any_value_renders_alike_and_reads_back_unchanged(
    driver: psycopg.Connection[Any], value: Any
) -> None:
    ours, theirs = _both(driver, "SELECT %(v)s", {"v": value})
    assert ours == theirs
    [read] = driver.execute(ours).fetchone() or (None,)
    if isinstance(value, Json):
        assert read == json.loads(json.dumps(value.obj))
    else:
        assert read == value
