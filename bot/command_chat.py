"""Commands only a chat app needs: who is an operator, linking a Slack channel, which copies were posted.

Surfaces ask these rather than reading OPERATORS or the store themselves (DESIGN.md invariant 8).
"""

from __future__ import annotations

from typing import Any

from bot.command_base import CommandBase
from bot.inbound.slack_state import linked_customer
from bot.replies import Actor, Choice, Reply, fail, reply
from store import events as ev
from store import lifecycle as lc
from store.slice import closest_names, find_customers


class ChatCommands(CommandBase):
    """Reads and one write that belong to chat apps rather than to proposals or customers."""

    def is_operator(self, actor: Actor) -> bool:
        return actor.key in self.settings.operator_ids

    def channel_customer(self, channel_id: str) -> str | None:
        with self.store.engine.connect() as connection:
            return linked_customer(connection, channel_id)

    def is_posted_copy(self, proposal_id: str, surface: str, chat_id: str, message_id: str) -> bool:
        return any(
            m["surface"] == surface and m["chat_id"] == chat_id and m["message_id"] == message_id
            for m in lc.messages_of(self.store.engine, proposal_id)
        )

    def link_channel(self, actor: Actor, query: str, channel_id: str) -> Reply:
        """Give the customer the contact point `slack:<channel_id>`, unless another customer holds it.

        Only operators may link: a link routes a channel's messages into a customer's inbox.
        """
        refused = self._refuse(actor, "link a channel", None)
        if refused:
            return refused
        with self.store.engine.connect() as connection:
            found = find_customers(connection, query)
            near = closest_names(connection, query) if not found else []
            owner = linked_customer(connection, channel_id)
        if not found:
            hint = f"; closest: {', '.join(near)}" if near else ""
            return fail("not_found", f"No customer matches {query!r}{hint}.")
        if len(found) > 1:
            return reply(
                f"{len(found)} customers match {query!r}; link this channel to which one?",
                choices=tuple(Choice(label_of(c), f"link {c['id']}", c["id"]) for c in found),
            )
        customer_id = found[0]["id"]
        if owner == customer_id:
            return reply("This channel is already linked to that customer.")
        if owner is not None:
            return fail("conflict", f"This channel is already linked to {owner}; nothing changed.")
        self.store.append(
            ev.NewEvent(
                type="customer.contact_added",
                payload=ev.ContactAdded(contact=ev.ContactPoint(kind="slack", value=channel_id)),
                stream=customer_id,
                idempotency_key=f"slack-link:{channel_id}",
                actor=actor.key,
                source="slack",
            ),
            dispatch=False,
        )
        return reply("Linked: messages in this channel now reach that customer's inbox.")


def label_of(customer: dict[str, Any]) -> str:
    """A customer as a button label: the name, with the company when it says more."""
    name = customer.get("name") or customer["id"]
    company = customer.get("company")
    return f"{name} ({company})" if company and company != name else str(name)
