"""Block Kit renderings: Slack's limits, escaping of customer text, buttons by state."""

from __future__ import annotations

import json

from bot.commands import Button, EditableField, ProposalView, Reply
from bot.slack import render as kit


def _view(**changes: object) -> ProposalView:
    values: dict[str, object] = {
        "id": "prp_0000000000001234abcd",
        "state": "pending",
        "kind": "send_email",
        "agent": "followup",
        "customer_id": "cus_1",
        "customer_name": "Ada <Lovelace> & Co",
        "title": "Send email to ada@acme.example · Ada · proposed by followup",
        "body": (
            "Subject: Hi",
            "<!channel> click <https://evil.example|here>",
            "Why: quiet (confidence 80%)",
        ),
        "buttons": (
            Button("approve", "Approve", "prp_0000000000001234abcd", style="primary"),
            Button("edit", "Edit", "prp_0000000000001234abcd"),
            Button("reject", "Reject", "prp_0000000000001234abcd", style="danger"),
            Button("snooze", "Snooze 1h", "prp_0000000000001234abcd", arg="1h"),
            Button("why", "Why?", "prp_0000000000001234abcd"),
        ),
    }
    values.update(changes)
    return ProposalView(**values)  # type: ignore[arg-type]


def test_customer_text_cannot_ping_the_channel_or_inject_links() -> None:
    rendered = json.dumps(kit.proposal_blocks(_view()))
    assert "<!channel>" not in rendered and "<https://evil" not in rendered
    assert "&lt;!channel&gt;" in rendered and "Ada &lt;Lovelace&gt; &amp; Co" in rendered


def test_pending_proposal_has_styled_buttons_and_a_snooze_menu() -> None:
    actions = next(b for b in kit.proposal_blocks(_view()) if b["type"] == "actions")
    styles = {e["action_id"]: e.get("style") for e in actions["elements"]}
    assert styles == {
        "crm:approve": "primary",
        "crm:edit": None,
        "crm:reject": "danger",
        "crm:snooze": None,
        "crm:why": None,
    }
    menu = next(e for e in actions["elements"] if e["type"] == "static_select")
    assert [o["value"] for o in menu["options"]] == [
        f"snooze:prp_0000000000001234abcd:{a}" for a in ("1h", "4h", "1d")
    ]


def test_a_decided_proposal_shows_the_outcome_and_no_buttons() -> None:
    blocks = kit.proposal_blocks(_view(state="rejected", status="Rejected by alice (slack) at …", buttons=()))
    assert all(b["type"] != "actions" for b in blocks)
    assert "Rejected by alice" in json.dumps(blocks)


def test_long_text_stays_inside_slack_limits() -> None:
    view = _view(body=("x" * 10_000,), title="t" * 5000)
    for block in kit.proposal_blocks(view):
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= kit.MAX_SECTION
    many = Reply(lines=("many",), proposals=tuple(_view(id=f"prp_{n}") for n in range(30)))
    message = kit.reply_message(many)
    assert len(message["blocks"]) <= kit.MAX_BLOCKS and "and 22 more" in json.dumps(message)


def test_edit_modal_is_prefilled_and_submissions_read_back() -> None:
    fields = (
        EditableField("subject", "Subject", "Hi"),
        EditableField("body", "Text", "Hello 👋", multiline=True),
    )
    modal = kit.edit_modal("prp_1", fields, {"channel": "C1", "ts": "1.2"})
    assert [b["element"]["initial_value"] for b in modal["blocks"]] == ["Hi", "Hello 👋"]
    assert json.loads(modal["private_metadata"]) == {"channel": "C1", "ts": "1.2", "proposal_id": "prp_1"}
    assert len(modal["title"]["text"]) <= kit.MAX_MODAL_TITLE
    state = {"values": {"field:body": {"value": {"value": "Bye"}}, "other": {"x": {"value": "ignored"}}}}
    assert kit.submitted_fields(state) == {"body": "Bye"}
    assert kit.submitted_reason({"values": {"reason": {"reason_input": {"value": "  "}}}}) is None


def test_the_manifest_parses_and_declares_every_slash_command_with_socket_mode_on() -> None:
    from pathlib import Path

    import yaml

    from bot.slack.listeners import SLASH_COMMANDS

    manifest = yaml.safe_load((Path(__file__).parents[2] / "slack-manifest.yml").read_text())
    assert [c["command"] for c in manifest["features"]["slash_commands"]] == list(SLASH_COMMANDS)
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert "request_url" not in manifest["settings"]["interactivity"]  # HTTP URLs stay commented out
    assert {"commands", "chat:write", "channels:history"} <= set(manifest["oauth_config"]["scopes"]["bot"])
