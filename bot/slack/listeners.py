"""Bolt listeners: a Slack payload in, one command-layer call, Block Kit out. No business rules here.

Every listener acknowledges first (Slack wants a 200 within 3 s) and then works in Bolt's thread pool;
replies to the person who asked are ephemeral (`response_url`); the proposal message in the channel is
refreshed by the command layer through the notify fan-out.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from bot.commands import Actor, Button, Reply
from bot.inbound import slack_state
from bot.inbound.chat import record_chat_message
from bot.slack import channels
from bot.slack import render as kit
from bot.slack.slash import IMAGE_KEY, SlashCommands

if TYPE_CHECKING:
    from collections.abc import Callable

    from slack_bolt import App as BoltApp
    from slack_sdk import WebClient

    from bot.bootstrap import App
    from bot.commands import Commands

log = logging.getLogger(__name__)

SLASH_COMMANDS = (
    "/customer",
    "/pending",
    "/digest",
    "/note",
    "/pause",
    "/resume",
    "/audit",
    "/merge",
    "/unmerge",
)
PROBLEM = "Something went wrong on our side; nothing was changed. Try again in a moment."


def register(app: BoltApp, container: App) -> None:
    """Attach every listener of the surface to `app`."""
    listeners = Listeners(container)
    # Lazy listeners: `acknowledge` answers Slack in the request itself; the work runs afterwards in
    # Bolt's thread pool, so a backlog of work never delays the next 200.
    for name in SLASH_COMMANDS:
        app.command(name)(ack=acknowledge, lazy=[listeners.slash])
    app.action(re.compile(rf"^{kit.ACTION_PREFIX}:"))(ack=acknowledge, lazy=[listeners.button])
    app.action(re.compile(rf"^{kit.ACTION_PREFIX}_pick:"))(ack=acknowledge, lazy=[listeners.pick])
    app.action(re.compile(rf"^{kit.NOOP_ACTION}"))(acknowledge)
    # Modal submissions are answered after the decision: a refusal or bad value goes back in the ack.
    app.view(kit.EDIT_CALLBACK)(listeners.edit_submitted)
    app.view(kit.REJECT_CALLBACK)(listeners.reject_submitted)
    app.event("message")(ack=acknowledge, lazy=[listeners.message])


def acknowledge(ack: Callable[..., None]) -> None:
    """The 200 Slack waits for (within 3 s), with nothing in it."""
    ack()


def actor_of(user: dict[str, Any] | None, user_id: str | None = None, name: str | None = None) -> Actor:
    """The Actor for a Slack user (from a payload's `user` object or a slash command's fields)."""
    user = user or {}
    return Actor("slack", str(user.get("id") or user_id or "?"), user.get("username") or name)


class Listeners:
    """The listener functions, bound to one container. Bolt injects arguments by parameter name."""

    def __init__(self, container: App) -> None:
        self.container = container
        self.slash_commands = SlashCommands(self._commands)

    def _commands(self) -> Commands:
        return self.container.commands

    # -- slash commands --------------------------------------------------------------------------

    def slash(self, command: dict[str, Any], respond: Callable[..., Any], client: WebClient) -> None:
        """/customer, /pending, /digest, /note, /pause, /resume: answer through response_url."""
        actor = actor_of(None, command.get("user_id"), command.get("user_name"))
        try:
            message = self.slash_commands.answer(
                actor, command.get("command", ""), command.get("text", ""), command.get("channel_id")
            )
        except Exception:
            log.exception("slack %s failed", command.get("command"))
            message = {"text": PROBLEM}
        image = message.pop(IMAGE_KEY, None)
        respond(response_type="ephemeral", replace_original=False, **message)
        if image is not None:
            self._send_image(client, actor, image, respond)

    def _send_image(self, client: WebClient, actor: Actor, image: Path, respond: Callable[..., Any]) -> None:
        """The digest chart, privately: uploaded into the person's direct messages with the bot."""
        try:
            channel = client.conversations_open(users=actor.user_id)["channel"]["id"]
            client.files_upload_v2(channel=channel, file=str(image), title=image.stem, filename=image.name)
        except (SlackApiError, OSError, KeyError, TypeError) as exc:
            log.warning("the chart could not be sent to %s: %s", actor.key, exc)
            respond(text=f"The chart could not be sent to you ({exc}); it is at {image}.", **_EPHEMERAL)

    def pick(self, body: dict[str, Any], respond: Callable[..., Any]) -> None:
        """A button from a "several customers match" answer: run the chosen command."""
        actor = actor_of(body.get("user"))
        value = str((body.get("actions") or [{}])[0].get("value") or "")
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        try:
            message = self.slash_commands.picked(actor, value, channel)
        except Exception:
            log.exception("slack pick failed")
            message = {"text": PROBLEM}
        # "Show" keeps the list it was tapped in; a picked customer replaces the question.
        keep_list = value.startswith("show ")
        respond(response_type="ephemeral", replace_original=not keep_list, **message)

    # -- proposal buttons ------------------------------------------------------------------------

    def button(
        self,
        body: dict[str, Any],
        client: WebClient,
        respond: Callable[..., Any],
    ) -> None:
        """Approve / Edit / Reject / Snooze / Why? / Undo / Retry on a proposal message."""
        action = (body.get("actions") or [{}])[0]
        data = str(action.get("value") or (action.get("selected_option") or {}).get("value") or "")
        actor = actor_of(body.get("user"))
        try:
            kind, proposal_id, _ = Button.parse(data)
        except ValueError:
            respond(text="That button is not one of ours; nothing was changed.", **_EPHEMERAL)
            return
        try:
            if kind == "edit":
                self._open_edit(actor, proposal_id, body, client, respond)
            elif kind == "reject":
                self._open_modal(
                    client, body, respond, kit.reject_modal(proposal_id, _message_metadata(body))
                )
            else:
                reply = self._commands().press(actor, data)
                if reply.ok and kind in QUIET_WHEN_DONE and not _from_ephemeral(body):
                    return  # the message itself now says what happened, who and when (chat.update)
                self._show(respond, reply, body)
        except Exception:
            log.exception("slack button %s failed", data)
            respond(text=PROBLEM, **_EPHEMERAL)

    def _open_edit(
        self,
        actor: Actor,
        proposal_id: str,
        body: dict[str, Any],
        client: WebClient,
        respond: Callable[..., Any],
    ) -> None:
        reply = self._commands().edit(actor, proposal_id)
        if not reply.ok or not reply.fields:
            self._show(respond, reply, body)
            return
        view = kit.edit_modal(proposal_id, reply.fields, _message_metadata(body))
        self._open_modal(client, body, respond, view)

    def _open_modal(
        self, client: WebClient, body: dict[str, Any], respond: Callable[..., Any], view: dict[str, Any]
    ) -> None:
        try:
            client.views_open(trigger_id=body.get("trigger_id", ""), view=view)
        except SlackApiError as exc:
            # The trigger_id is good for 3 s; a slow tap path or a replayed click lands here.
            error = exc.response.get("error", "error")
            respond(text=f"Slack would not open the form ({error}); tap the button again.", **_EPHEMERAL)

    def _show(self, respond: Callable[..., Any], reply: Reply, body: dict[str, Any]) -> None:
        """Tell the tapper. The channel copy is refreshed by the command layer (chat.update); a copy in
        an ephemeral answer (/pending, /customer) cannot be, so that one is replaced here."""
        if _from_ephemeral(body):
            respond(**kit.reply_message(reply), response_type="ephemeral", replace_original=True)
        else:
            respond(**kit.lines_message(reply), **_EPHEMERAL)

    # -- modal submissions -----------------------------------------------------------------------

    def edit_submitted(
        self, ack: Callable[..., None], body: dict[str, Any], view: dict[str, Any], client: WebClient
    ) -> None:
        """The Edit modal: approve the edited version; a refusal or bad value shows in the modal."""
        metadata = _metadata(view)
        values = kit.submitted_fields(view.get("state") or {})
        reply = self._commands().edit(actor_of(body.get("user")), metadata.get("proposal_id", ""), values)
        self._close_or_explain(ack, reply, next(iter(_field_blocks(view)), None), body, metadata, client)

    def reject_submitted(
        self, ack: Callable[..., None], body: dict[str, Any], view: dict[str, Any], client: WebClient
    ) -> None:
        """The Reject modal: reject with the optional reason."""
        metadata = _metadata(view)
        reason = kit.submitted_reason(view.get("state") or {})
        reply = self._commands().reject(actor_of(body.get("user")), metadata.get("proposal_id", ""), reason)
        self._close_or_explain(ack, reply, kit.REASON_BLOCK, body, metadata, client)

    def _close_or_explain(
        self,
        ack: Callable[..., None],
        reply: Reply,
        block_id: str | None,
        body: dict[str, Any],
        metadata: dict[str, str],
        client: WebClient,
    ) -> None:
        if reply.code == "invalid" and block_id:
            # Bad input: keep the modal open and say what is wrong next to the field.
            ack(response_action="errors", errors={block_id: kit.clip(reply.text, 150)})
            return
        ack()
        channel = metadata.get("channel")
        user = (body.get("user") or {}).get("id")
        if channel and user:
            try:
                client.chat_postEphemeral(channel=channel, user=user, **kit.reply_message(reply))
            except SlackApiError:
                log.warning("could not tell %s in %s: %s", user, channel, reply.text)

    # -- events ----------------------------------------------------------------------------------

    def message(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        """A customer's message in a channel linked to them becomes a `message.received` signal."""
        inbound = channels.inbound_message(event)
        if inbound is not None:
            author = actor_of(None, event.get("user"))
            record_chat_message(self.container, author, inbound, channel=str(event.get("channel")))
        event_id = body.get("event_id")
        if event_id:
            slack_state.mark_seen(self.container.engine, str(event_id))


_EPHEMERAL: dict[str, Any] = {"response_type": "ephemeral", "replace_original": False}
# Taps whose success the refreshed channel message shows in full; only a refusal or a lost race
# (someone else decided first) gets a private answer, which saves a Slack call per decision.
QUIET_WHEN_DONE = frozenset({"approve", "snooze", "undo", "retry", "resend", "keep"})


def _from_ephemeral(body: dict[str, Any]) -> bool:
    return bool((body.get("container") or {}).get("is_ephemeral"))


def _message_metadata(body: dict[str, Any]) -> dict[str, str]:
    """Where the tapped message is, carried through a modal in its private_metadata."""
    container = body.get("container") or {}
    channel = container.get("channel_id") or (body.get("channel") or {}).get("id") or ""
    return {"channel": str(channel), "ts": str(container.get("message_ts") or "")}


def _metadata(view: dict[str, Any]) -> dict[str, str]:
    try:
        found = json.loads(view.get("private_metadata") or "{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def _field_blocks(view: dict[str, Any]) -> list[str]:
    return [
        b["block_id"] for b in view.get("blocks") or [] if str(b.get("block_id", "")).startswith("field:")
    ]
