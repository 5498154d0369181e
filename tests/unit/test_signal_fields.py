"""Warnings for `data` fields the project does not read, with the nearest known name."""

from __future__ import annotations

from store.signal_fields import unread_field_warnings


def test_a_misspelt_field_is_reported_with_the_name_it_was_probably_meant_to_be() -> None:
    warnings = unread_field_warnings("subscription.renewal_due", {"renew_on": "2026-04-01", "plan": "Pro"})
    assert warnings == ["data.renew_on is not read for subscription.renewal_due; did you mean renews_on?"]


def test_known_fields_and_unknown_types_give_no_warnings() -> None:
    assert unread_field_warnings("invoice.overdue", {"invoice_id": "I-1", "days_overdue": 9}) == []
    assert unread_field_warnings("something.else", {"x": 1}) == []


def test_a_field_like_nothing_known_is_reported_without_a_guess() -> None:
    assert unread_field_warnings("lead.created", {"favourite_colour": "blue"}) == [
        "data.favourite_colour is not read for lead.created"
    ]
