"""What a signed `POST /slack/events` body must look like before Bolt is given it.

Bolt parses the body inside `dispatch` and reads fields by assumption (`body["actions"][0]`,
`"id" in body["team"]`, `view["callback_id"]`…); a body of another shape makes it answer 500. Slack
never sends such bodies, but invariant 9 says no input gets a 5xx: so the shape Bolt and our listeners
rely on is checked here, and anything else is refused with a 400 naming the field.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from bot.inbound.errors import MalformedBody
from bot.inbound.signals import deeper_than, load_json

# Deeper than any Slack payload (a modal's state is about six levels, message blocks about eight);
# shallow enough that nothing walking a payload nears Python's recursion limit.
MAX_DEPTH = 32

# Fields read as an id or as an object with an `id` (Bolt's context extraction).
TEXT_OR_OBJECT = frozenset({"enterprise", "team", "user", "channel"})
# Fields read as objects, whose own fields follow these same rules.
OBJECTS = frozenset(
    [
        "event",
        "view",
        "message",
        "previous_message",
        "item",
        "assistant_thread",
        "function_data",
        "function",
        "container",
        "state",
        "selected_option",
        "workflow_step",
    ]
)
# Fields read as lists of objects.
OBJECT_LISTS = frozenset({"authorizations", "response_urls", "actions", "blocks"})
# Fields matched against strings, or used as ids and keys.
TEXTS = frozenset(
    [
        "type",
        "subtype",
        "event_id",
        "command",
        "callback_id",
        "action_id",
        "block_id",
        "user_id",
        "user_name",
        "channel_id",
        "team_id",
        "enterprise_id",
        "response_url",
        "trigger_id",
        "channel_type",
        "ts",
        "thread_ts",
        "message_ts",
        "bot_id",
        "value",
        "private_metadata",
        "token",
        "challenge",
        "id",
        "user_team",
    ]
)
# Payload types whose listeners need one particular field to be there.
REQUIRED = {
    "block_actions": "actions",
    "view_submission": "view",
    "view_closed": "view",
    "event_callback": "event",
}


def slack_payload(body: bytes, content_type: str | None) -> dict[str, Any]:
    """The body as Bolt will read it, once it is known to have the shape Bolt and our listeners expect.

    Raises MalformedBody (a 400) naming what is wrong: not UTF-8, not JSON, not an object, nested
    deeper than MAX_DEPTH, a field of the wrong type, or a block_actions without an action.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedBody("the body is not UTF-8") from None
    document = _parse(text, content_type)
    if not isinstance(document, dict):
        raise MalformedBody("the payload is not a JSON object")
    if deeper_than(document, MAX_DEPTH):
        raise MalformedBody(f"the payload is nested more than {MAX_DEPTH} levels deep")
    _check_object(document, "")
    required = REQUIRED.get(str(document.get("type")))
    if required is not None and not document.get(required):
        raise MalformedBody(f"a {document['type']} payload needs a non-empty {required}")
    if document.get("type") == "block_actions":
        for action in document["actions"]:
            if not isinstance(action.get("action_id"), str):
                raise MalformedBody("every action of a block_actions payload needs an action_id")
    view = document.get("view")
    if isinstance(view, dict) and document.get("type") in ("view_submission", "view_closed"):
        _check_view(view)
    return document


def _parse(text: str, content_type: str | None) -> Any:
    # The same decision Bolt's parse_body makes: JSON for the Events API, form fields otherwise, and
    # for interactivity a form whose `payload` field holds the JSON.
    media = (content_type or "").split(";")[0].strip().lower()
    if not text:
        return {}
    if media == "application/json" or text.startswith("{"):
        return load_json(text)
    if "payload" in text:
        fields = dict(parse_qsl(text, keep_blank_values=True))
        return load_json(fields["payload"]) if "payload" in fields else {}
    return dict(parse_qsl(text, keep_blank_values=True))


def _check_object(item: dict[str, Any], where: str) -> None:
    for key, value in item.items():
        path = f"{where}.{key}" if where else key
        if value is None:
            continue
        if key in TEXTS and not isinstance(value, str):
            raise MalformedBody(f"{path} must be a string")
        if key in TEXT_OR_OBJECT and not isinstance(value, str | dict):
            raise MalformedBody(f"{path} must be an id or an object")
        if key in OBJECTS and not isinstance(value, dict):
            raise MalformedBody(f"{path} must be an object")
        if key in OBJECT_LISTS and not (isinstance(value, list) and all(isinstance(v, dict) for v in value)):
            raise MalformedBody(f"{path} must be a list of objects")
        if isinstance(value, dict) and (key in OBJECTS or key in TEXT_OR_OBJECT):
            _check_object(value, path)
        elif isinstance(value, list) and key in OBJECT_LISTS:
            for index, child in enumerate(value):
                _check_object(child, f"{path}[{index}]")


def _check_view(view: dict[str, Any]) -> None:
    """A submitted modal as our view listeners read it: a callback id and state.values by block."""
    if not isinstance(view.get("callback_id"), str):
        raise MalformedBody("view.callback_id must be a string")
    values = (view.get("state") or {}).get("values")
    if values is None:
        return
    if not isinstance(values, dict):
        raise MalformedBody("view.state.values must be an object")
    for block, inputs in values.items():
        if not isinstance(inputs, dict) or not all(isinstance(one, dict) for one in inputs.values()):
            raise MalformedBody(f"view.state.values.{block} must map action ids to objects")
        for action, one in inputs.items():
            if not isinstance(one.get("value"), str | None):
                raise MalformedBody(f"view.state.values.{block}.{action}.value must be a string")
