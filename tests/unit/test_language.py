"""Language detection offline, template choice by language, and greetings by first name only."""

from __future__ import annotations

import pytest

from agents.drafting import first_name
from agents.language import detect
from agents.model import AgentModel
from agents.replies import REPLY_CORE
from agents.roles.triage import InboxTriage
from tests.fixtures.agents import context_for

SAMPLES = {
    "en": "Could you tell me how the export works?",
    "de": "Könnten Sie mir sagen, wie der Export funktioniert?",
    "fr": "Pourriez-vous m'expliquer comment fonctionne l'export ?",
    "es": "¿Podría explicarme cómo funciona la exportación?",
    "it": "Potrebbe spiegarmi come funziona l'esportazione?",
    "pt": "Pode explicar-me como funciona a exportação?",
    "nl": "Kunt u uitleggen hoe de export werkt?",
    "pl": "Czy możecie wyjaśnić, jak działa eksport?",
}


@pytest.mark.parametrize(("language", "text"), SAMPLES.items(), ids=SAMPLES.keys())
def test_the_language_is_detected_among_the_eight_we_support(language: str, text: str) -> None:
    assert detect(text) == language


def test_short_english_chat_lines_are_not_mistaken_for_other_languages() -> None:
    for text in ("hi is there a dark mode", "How do I export?", "can u resend inv 1042?"):
        assert detect(text) == "en", text
    assert detect("") == "en" and detect("👍") == "en"


def test_every_reply_template_exists_in_every_language() -> None:
    for purpose, by_language in REPLY_CORE.items():
        assert set(by_language) == set(SAMPLES), purpose


@pytest.mark.parametrize(
    ("language", "greeting"),
    [("de", "Hallo Jonas,"), ("fr", "Bonjour Jonas,"), ("pl", "Dzień dobry, Jonas,"), ("en", "Hi Jonas,")],
)
def test_the_reply_is_drafted_in_the_customers_language(language: str, greeting: str) -> None:
    example = {
        "id": "lang",
        "subject": "Export",
        "text": SAMPLES[language],
        "customer": {"name": "Jonas Becker"},
    }
    context = context_for(example, "message.received")
    model = AgentModel(None, "inbox_triage", 1.0, context.now.date())
    reply = next(p for p in InboxTriage().propose(context, model) if p.kind == "send_email")
    assert reply.draft is not None and reply.draft.body.startswith(greeting)
    assert REPLY_CORE["question"][language] in reply.draft.body


def test_the_greeting_never_uses_a_company_name() -> None:
    for name, company in (("Acme", "Acme"), ("Acme GmbH", None), ("Globex Ltd", "Globex Ltd")):
        example = {"id": "c", "text": "Hello", "customer": {"name": name, "company": company}}
        context = context_for(example, "message.received")
        assert first_name(context) == "", name
    example = {
        "id": "co",
        "subject": "Export",
        "text": "How do I export my contacts to a CSV file?",
        "customer": {"name": "Acme Corp", "company": "Acme Corp"},
        "ref": {"name": "Acme Corp", "company": "Acme Corp", "email": "info@acme.example"},
    }
    context = context_for(example, "message.received")
    model = AgentModel(None, "inbox_triage", 1.0, context.now.date())
    reply = next(p for p in InboxTriage().propose(context, model) if p.kind == "send_email")
    assert reply.draft is not None and reply.draft.body.startswith("Hello,")
    assert "Acme" not in reply.draft.body.splitlines()[0]
