"""The checks behind the restricted operations pages (bot.web.guard)."""

from __future__ import annotations

import pytest

from bot.web.guard import bearer_matches, is_loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_loopback_addresses_are_loopback(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host", ["10.0.0.1", "203.0.113.7", "::ffff:10.0.0.1", "localhost", "testclient", ""]
)
def test_other_hosts_and_names_are_not(host: str) -> None:
    assert not is_loopback(host)


def test_only_the_exact_bearer_token_matches() -> None:
    assert bearer_matches(b"Bearer tok", b"tok")
    assert bearer_matches(b"bearer  tok ", b"tok")
    for header in (
        None,
        b"",
        b"tok",
        b"Bearer",
        b"Bearer to",
        b"Bearer tokk",
        b"Basic tok",
        b"Bearer \xfftok",
    ):
        assert not bearer_matches(header, b"tok")
