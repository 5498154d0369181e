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


def test_remembered_warnings_equal_freshly_computed_ones_for_every_type() -> None:
    from store.signal_fields import READ_FIELDS, _unread_field_warning

    names = ["renew_on", "favourite_colour", "chanel", "x", "invoice", "ä" * 40]
    for signal_type in READ_FIELDS:
        for _ in range(2):  # the second round is answered from the cache
            for name in names:
                assert _unread_field_warning(signal_type, name) == _unread_field_warning.__wrapped__(
                    signal_type, name
                )
