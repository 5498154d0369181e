"""What a proposal's card shows and offers to edit: what the operator decides on, not bookkeeping."""

from __future__ import annotations

from jobs.render_proposal import editable_fields, view_of
from store.uow import EventStore
from tests.integration.proposal_helpers import email_proposal, make_customer, proposal, record, row


def test_a_reminder_task_shows_its_title_not_the_key_that_keeps_it_from_being_proposed_twice(
    store: EventStore,
) -> None:
    customer = make_customer(store)
    params = {"title": "Call Ada about invoice inv_7, 14 days late", "dunning_key": "dunning:inv_7:call"}
    card = row(store, record(store, proposal(customer, "create_task", params, agent="billing_monitor")))

    body = "\n".join(view_of(card, "Ada Lovelace").body)
    assert "title: Call Ada about invoice inv_7, 14 days late" in body
    assert "dunning" not in body
    assert "Proposed by the agent's rules (no model) · cost $0.00" in body
    assert "Drafted" not in body, "there is no draft to speak of"
    assert [field.name for field in editable_fields(card)] == ["title"]


def test_an_email_offers_its_recipient_subject_and_text_to_edit_not_the_template_that_chose_it(
    store: EventStore,
) -> None:
    payload = email_proposal(make_customer(store))
    payload["params"]["template"] = "hot"
    card = row(store, record(store, payload))

    assert [field.name for field in editable_fields(card)] == ["to", "subject", "body"]
    assert "Drafted from a template (no model) · cost $0.00" in view_of(card, "Ada Lovelace").body
