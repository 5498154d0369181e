"""python-telegram-bot handlers: an Update in, one command-layer call, HTML out. No business rules here.

Who is who is the command layer's answer (`Commands.is_operator`, from OPERATORS): operators' commands,
taps and typed lines go to the command layer (which refuses anyone else and logs it); a private message
from anyone else is a customer writing in, recorded as a `message.received` signal (bot.inbound.chat).
The command layer is synchronous and touches the database, so every call runs in a thread, off the
bot's event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from telegram import BotCommand, ForceReply, InlineKeyboardMarkup, Update, User
from telegram.error import BadRequest
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot.commands import Actor, Button, EditableField, Reply
from bot.inbound import telegram_state as state
from bot.inbound.chat import record_chat_message
from bot.telegram import io as tio
from bot.telegram import render
from bot.telegram.customers import customer_signal

if TYPE_CHECKING:
    from bot.bootstrap import App
    from bot.commands import Commands

log = logging.getLogger(__name__)
T = TypeVar("T")
Context = ContextTypes.DEFAULT_TYPE

# Shown in Telegram's command menu (setMyCommands); each maps to the command layer.
MENU: tuple[tuple[str, str], ...] = (
    ("customer", "Look up a customer: /customer <name|email|domain> [as of YYYY-MM-DD]"),
    ("pending", "Proposals waiting for a decision"),
    ("digest", "Today's digest"),
    ("note", "Add a note: /note <customer> <text>"),
    ("pause", "Pause an agent or all: /pause [agent]"),
    ("resume", "Resume an agent or all: /resume [agent]"),
    ("audit", "Who decided what: /audit [customer] [days]"),
    ("merge", "Merge two customers: /merge <customer> <customer>"),
    ("unmerge", "Take a merged customer out: /unmerge [customer]"),
    ("help", "What I can do"),
)
PROBLEM = "Something went wrong on our side; nothing was changed. Try again in a moment."
GREETING = "Hello! Write your message here and we will get back to you."
# The field a Telegram edit replaces: the text that will be sent (the body), else the first field.
EDITED_FIELDS = ("body", "text")
# A reply prompt that asks why a proposal is rejected is kept with the edit prompts under this field
# (no proposal field is called so); a reply of NO_REASON rejects without one.
REJECT_REASON = "!reject"
NO_REASON = frozenset({"-", "—", "no", "none", "skip"})


def menu_commands() -> list[BotCommand]:
    """The commands for setMyCommands."""
    return [BotCommand(name, description) for name, description in MENU]


def actor_of(user: User | None) -> Actor:
    """The Actor for a Telegram user: `telegram:<id>`, shown by @username or name."""
    if user is None:
        return Actor("telegram", "?")
    name = f"@{user.username}" if user.username else user.full_name
    return Actor("telegram", str(user.id), name or None)


def register(application: Application[Any, Any, Any, Any, Any, Any], container: App) -> None:
    """Attach every handler of the surface to `application`."""
    handlers = Handlers(container)
    application.add_handler(TypeHandler(Update, handlers.skip_repeats), group=-1)
    for name, _ in MENU:
        application.add_handler(CommandHandler(name, handlers.command))
    application.add_handler(CommandHandler("start", handlers.start))
    application.add_handler(CallbackQueryHandler(handlers.button))
    application.add_handler(MessageHandler(filters.COMMAND, handlers.other_command))
    application.add_handler(MessageHandler(filters.ALL & ~filters.StatusUpdate.ALL, handlers.message))
    application.add_error_handler(handlers.error)


class Handlers:
    """The handler coroutines, bound to one container."""

    def __init__(self, container: App) -> None:
        self.container = container

    def _commands(self) -> Commands:
        return self.container.commands

    def is_operator(self, user: User | None) -> bool:
        return user is not None and self._commands().is_operator(actor_of(user))

    async def _run(self, work: Callable[[], T]) -> T:
        return await asyncio.to_thread(work)

    # -- replay safety ---------------------------------------------------------------------------

    async def skip_repeats(self, update: Update, context: Context) -> None:
        """Group -1: an update_id seen before stops here (Telegram redelivers after errors/restarts)."""
        fresh = await self._run(lambda: state.claim_update(self.container.engine, update.update_id))
        if not fresh:
            log.info("telegram update %s already handled; ignored", update.update_id)
            if update.callback_query is not None:
                await tio.answer(update, "")
            raise ApplicationHandlerStop

    # -- commands --------------------------------------------------------------------------------

    async def command(self, update: Update, context: Context) -> None:
        """/customer, /pending, /digest, /note, /pause, /resume, /help."""
        message = update.effective_message
        if message is None or not message.text:
            return
        name = message.text.split()[0][1:].split("@")[0].lower()
        args = message.text.partition(" ")[2].strip()
        actor = actor_of(update.effective_user)
        try:
            # `/customer jonas becker as of 2026-11-01` is the typed line the command layer reads.
            reply = await self._run(lambda: self._commands().run(actor, f"{name} {args}".strip()))
        except Exception:
            log.exception("telegram /%s failed", name)
            reply = Reply(lines=(PROBLEM,), ok=False)
        await self._send_reply(update, reply)

    async def start(self, update: Update, context: Context) -> None:
        """/start: operators get the help; anyone else is a customer opening the chat."""
        if not self.is_operator(update.effective_user):
            if update.effective_chat and update.effective_chat.type == "private":
                await tio.send(update, render.Message(render.escape(GREETING)))
            return
        reply = await self._run(lambda: self._commands().help(actor_of(update.effective_user)))
        await self._send_reply(update, reply)

    async def other_command(self, update: Update, context: Context) -> None:
        """Any other /command (e.g. /approve prp_…): the command layer's line grammar."""
        message = update.effective_message
        if message is None or not message.text:
            return
        head, _, rest = message.text[1:].partition(" ")
        line = f"{head.split('@')[0]} {rest}".strip()
        actor = actor_of(update.effective_user)
        try:
            reply = await self._run(lambda: self._commands().run(actor, line))
        except Exception:
            log.exception("telegram command %r failed", line[:40])
            reply = Reply(lines=(PROBLEM,), ok=False)
        await self._send_reply(update, reply)

    # -- messages --------------------------------------------------------------------------------

    async def message(self, update: Update, context: Context) -> None:
        """A reply to an edit prompt, an operator's typed line, or a customer writing in."""
        message = update.effective_message
        chat = update.effective_chat
        if message is None or chat is None:
            return
        replied = message.reply_to_message
        if replied is not None and message.text:
            edit = await self._run(
                lambda: state.edit_for_prompt(self.container.engine, str(chat.id), str(replied.message_id))
            )
            if edit is not None and edit.field == REJECT_REASON:
                await self._rejected(update, edit, message.text)
                return
            if edit is not None:
                await self._edited(update, edit, message.text)
                return
        if self.is_operator(update.effective_user):
            if chat.type == "private" and message.text:
                actor = actor_of(update.effective_user)
                reply = await self._run(lambda: self._commands().run(actor, message.text or ""))
                await self._send_reply(update, reply)
            return
        if chat.type != "private":
            return  # group chatter from non-operators is neither a command nor a customer message
        inbound = customer_signal(update)
        if inbound is not None:
            author = actor_of(update.effective_user)
            await self._run(lambda: record_chat_message(self.container, author, inbound))

    async def _edited(self, update: Update, edit: state.PendingEdit, text: str) -> None:
        if edit.status not in ("prompted", "drafted"):
            await tio.send(update, render.Message("This edit was already handled."))
            return
        await self._run(
            lambda: state.set_edit(
                self.container.engine, edit.id, status="drafted", text=text, expect=edit.status
            )
        )
        field = EditableField(edit.field, edit.field.capitalize(), text)
        await tio.send(update, render.edited_preview(edit.id, field, text))

    async def _rejected(self, update: Update, prompt: state.PendingEdit, text: str) -> None:
        """The reply to "why reject?": reject with that reason (the agents learn from it)."""
        engine = self.container.engine
        if not await self._run(
            lambda: state.set_edit(engine, prompt.id, status="rejected", text=text, expect="prompted")
        ):
            await tio.send(update, render.Message("This rejection was already handled."))
            return
        reason = None if text.strip().lower() in NO_REASON else text
        actor = actor_of(update.effective_user)
        reply = await self._run(lambda: self._commands().reject(actor, prompt.proposal_id, reason))
        await tio.send(update, render.Message(render.lines_html(reply.lines)))

    # -- buttons ---------------------------------------------------------------------------------

    async def button(self, update: Update, context: Context) -> None:
        """Every inline button; answerCallbackQuery is always called, whatever happens."""
        query = update.callback_query
        if query is None:
            return
        answer = ""
        try:
            answer = await self._button(update, query.data or "")
        except Exception:
            log.exception("telegram button %r failed", query.data)
            answer = PROBLEM
        finally:
            await tio.answer(update, render.clip(answer, render.MAX_ANSWER))

    async def _button(self, update: Update, data: str) -> str:
        actor = actor_of(update.effective_user)
        prefix, rest = render.split_callback(data)
        if prefix == render.PICK_CUSTOMER:
            reply = await self._run(lambda: self._commands().run(actor, rest))
            await self._send_reply(update, reply)
            return render.answer_text(reply) if not reply.ok else ""
        if prefix in (render.SNOOZE_MENU, render.BACK):
            return await self._keyboard_only(update, prefix, rest)
        if prefix in (render.EDIT_APPROVE, render.EDIT_CANCEL):
            return await self._edit_decision(update, actor, prefix, rest)
        try:
            action, proposal_id, _ = Button.parse(data)
        except ValueError:
            return "That button is not one of ours; nothing was changed."
        if action == "edit":
            return await self._ask_for_edit(update, actor, proposal_id)
        if action == "reject":
            return await self._ask_for_reason(update, actor, proposal_id)
        reply = await self._run(lambda: self._commands().press(actor, data))
        if action == "why" and reply.ok:
            await self._send_reply(update, reply)
            return "Why? — see below"
        await self._refresh_tapped(update, proposal_id, reply)
        return render.answer_text(reply)

    async def _keyboard_only(self, update: Update, prefix: str, proposal_id: str) -> str:
        """Swap the keyboard for the snooze choices, or back; nothing is decided here."""
        query = update.callback_query
        assert query is not None
        keyboard: InlineKeyboardMarkup | None
        if prefix == render.SNOOZE_MENU:
            keyboard = render.snooze_keyboard(proposal_id)
        else:
            view = await self._run(lambda: tio.notifier(self.container).view(proposal_id))
            keyboard = render.proposal_keyboard(view) if view is not None else None
        try:
            await query.edit_message_reply_markup(reply_markup=keyboard)
        except BadRequest as exc:
            log.info("keyboard swap on %s not possible: %s", proposal_id, exc)
        return "Snooze for how long?" if prefix == render.SNOOZE_MENU else ""

    async def _ask_for_edit(self, update: Update, actor: Actor, proposal_id: str) -> str:
        reply = await self._run(lambda: self._commands().edit(actor, proposal_id))
        if not reply.ok or not reply.fields:
            return render.answer_text(reply)
        field = _edited_field(reply.fields)
        view = reply.proposals[0] if reply.proposals else None
        chat = update.effective_chat
        assert chat is not None
        sent = await update.get_bot().send_message(
            chat_id=chat.id,
            text=render.edit_prompt_html(view, field),
            parse_mode=render.PARSE_MODE,
            reply_markup=ForceReply(selective=True, input_field_placeholder=f"New {field.label.lower()}…"),
        )
        await self._run(
            lambda: state.open_edit(
                self.container.engine, proposal_id, str(chat.id), str(sent.message_id), actor.key, field.name
            )
        )
        return "Reply to my message with the new text"

    async def _ask_for_reason(self, update: Update, actor: Actor, proposal_id: str) -> str:
        """Reject asks why first, as Slack's modal does: a reply prompt; the reply rejects."""
        reply = await self._run(lambda: self._commands().show(actor, proposal_id))
        view = reply.proposals[0] if reply.proposals else None
        if not reply.ok or view is None:
            return render.answer_text(reply)
        if not any(button.action == "reject" for button in view.buttons):
            return render.clip(view.status or f"This proposal is {view.state} now.", render.MAX_ANSWER)
        chat = update.effective_chat
        assert chat is not None
        sent = await update.get_bot().send_message(
            chat_id=chat.id,
            text=render.reject_prompt_html(view),
            parse_mode=render.PARSE_MODE,
            reply_markup=ForceReply(selective=True, input_field_placeholder="Why reject it?"),
        )
        await self._run(
            lambda: state.open_edit(
                self.container.engine, view.id, str(chat.id), str(sent.message_id), actor.key, REJECT_REASON
            )
        )
        return "Reply to my message with the reason (or - for none)"

    async def _edit_decision(self, update: Update, actor: Actor, prefix: str, edit_ref: str) -> str:
        engine = self.container.engine
        try:
            edit = await self._run(lambda: state.get_edit(engine, int(edit_ref)))
        except ValueError:
            edit = None
        if edit is None or edit.text is None:
            return "That edit is no longer open."
        if prefix == render.EDIT_CANCEL:
            if edit.operator != actor.key:
                return "Not authorised"
            if await self._run(lambda: state.set_edit(engine, edit.id, status="cancelled", expect="drafted")):
                await tio.edit_tapped(update, render.Message("✏️ Edit cancelled; the proposal is unchanged."))
            return "Cancelled"
        text = edit.text
        reply = await self._run(lambda: self._commands().edit(actor, edit.proposal_id, {edit.field: text}))
        if reply.ok:
            await self._run(lambda: state.set_edit(engine, edit.id, status="approved", expect="drafted"))
            done = render.escape(reply.lines[0] if reply.lines else "Approved the edited version")
            await tio.edit_tapped(update, render.Message(f"✏️ {done}\n<pre>{render.escape(text)}</pre>"))
        return render.answer_text(reply)

    async def _refresh_tapped(self, update: Update, proposal_id: str, reply: Reply) -> None:
        """A tap on a copy the fan-out does not know (e.g. from /pending): update that copy here."""
        message = update.effective_message
        view = next((v for v in reply.proposals if v.id == proposal_id), None)
        if message is None or view is None:
            return
        chat_id, message_id = str(message.chat_id), str(message.message_id)
        known = await self._run(
            lambda: self._commands().is_posted_copy(proposal_id, "telegram", chat_id, message_id)
        )
        if not known:
            await tio.edit_tapped(update, render.proposal_message(view))

    # -- output ----------------------------------------------------------------------------------

    async def _send_reply(self, update: Update, reply: Reply) -> None:
        messages = render.reply_messages(reply)
        keyboard = render.pick_keyboard(reply.choices) if reply.choices else None
        if reply.items:
            keyboard = render.items_keyboard(reply.items)
        if keyboard is not None and messages:
            messages[0] = render.Message(messages[0].html, keyboard)
        for item in messages:
            await tio.send(update, item)
        if reply.image is not None:  # the digest's chart
            await tio.send_photo(update, reply.image, reply.image.stem)

    async def error(self, update: object, context: Context) -> None:
        """Log what a handler raised; the next update is handled as usual."""
        log.error(
            "telegram handler failed for %r", getattr(update, "update_id", update), exc_info=context.error
        )


def _edited_field(fields: tuple[EditableField, ...]) -> EditableField:
    return next(
        (f for f in fields if f.name in EDITED_FIELDS), next((f for f in fields if f.multiline), fields[0])
    )
