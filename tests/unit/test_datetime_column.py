"""The DateTime column type (store.tables) binds every aware datetime as UTC and refuses a naive one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects import postgresql

from store.tables import DateTime

AT = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        AT,
        AT.astimezone(timezone(timedelta(hours=1))),
        AT.astimezone(timezone(timedelta(hours=-7, minutes=-30))),
    ],
)
def test_an_aware_datetime_is_bound_as_the_same_instant_in_utc(value: datetime) -> None:
    bound = DateTime().process_bind_param(value, postgresql.dialect())
    assert bound == AT and bound is not None and bound.tzinfo is UTC


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        DateTime().process_bind_param(datetime(2026, 12, 1, 9, 30), postgresql.dialect())
