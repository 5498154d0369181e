"""Lead qualification: an explicit score, a stage, and an intro, nurture or polite-decline email.

The score (0 to 100) is fit + intent, each at most 50, every point named in the rationale:

fit
  +10 a company is named
  +15 the email is on a business domain (not a free-mail provider)
  +10 company size ≥ 10 (data.company_size or data.employees), +15 instead when ≥ 50
  +10 the sender's title is a decision-maker's (founder, CEO, head of, director, VP, owner, …)
intent
  +20 came from a demo request, pricing page, contact-sales or referral (data.source);
      +5 instead from a webinar, ebook or newsletter
  +15 the text asks about price, a demo, a trial or buying (en/de/es/fr)
  +10 the text has a timeline (asap, this month, next week, urgent, …)
  +5  the text names a team size ("12 users", "30 seats")
  +10 a budget is given (data.budget or data.budget_cents)

≥ GOOD_LEAD_SCORE: stage → qualified and an intro email. A disqualifier (job application, student
project) gets a polite decline; the rest nurture. Junk gets a note and nothing outbound: a test
submission, competitor fishing, a vendor pitch or other spam through the form (exact patterns, or the
triage classifier at least JUNK_SPAM_AT sure it is spam), and instructions aimed at the agent.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from agents.context import AgentContext
from agents.drafting import compose, email_of, first_name
from agents.injection import injection_rule, normalise
from agents.model import AgentModel, Tier
from agents.proposal import ActionKind, Proposal, Source
from agents.roles.base import Role

# The triage classifier's spam probability from which a form submission is junk on its own: it was
# trained on messages, so only its surest answers are taken for a lead.
JUNK_SPAM_AT = 0.97
GOOD_LEAD_SCORE = 55  # roughly: a business with a named need, or a smaller one asking to buy now
FIT_MAX = INTENT_MAX = 50
FREEMAIL = frozenset(
    {
        "gmail.com",
        "googlemail.com",
        "yahoo.com",
        "yahoo.es",
        "yahoo.fr",
        "hotmail.com",
        "hotmail.fr",
        "outlook.com",
        "live.com",
        "aol.com",
        "icloud.com",
        "me.com",
        "gmx.de",
        "gmx.net",
        "web.de",
        "t-online.de",
        "orange.fr",
        "free.fr",
        "laposte.net",
        "proton.me",
        "protonmail.com",
        "mail.ru",
    }
)
HOT_SOURCES = frozenset({"demo_request", "pricing_page", "contact_sales", "referral"})
WARM_SOURCES = frozenset({"webinar", "ebook", "newsletter"})
_TITLE = re.compile(
    r"\b(founder|co-?founder|ceo|cto|coo|cfo|owner|head of|director|vp|vice president|partner|manager|"
    r"gründer|geschäftsführer\w*|inhaber\w*|leiter\w*|fundador\w*|gerente|director\w*|directeur\w*|"
    r"fondat\w+|gérant\w*|responsable)\b",
    re.I,
)
_BUY = re.compile(
    r"\b(pric(e|es|ing)|quote|demo|trial|buy|purchase|how much|sign up|plans?|costs?|kostet|cuesta|coûte|"
    r"preis\w*|angebot|kaufen|testen|precio\w*|cotización|presupuesto|comprar|prueba|"
    r"tarifs?|prix|devis|acheter|essai|démo)\b",
    re.I,
)
_TIMELINE = re.compile(
    r"\b(asap|urgent\w*|this (week|month|quarter)|next (week|month)|deadline|by (monday|friday|end of)|"
    r"sofort|dringend|diesen monat|nächste woche|urgente|este mes|la próxima semana|"
    r"rapidement|ce mois|la semaine prochaine)\b",
    re.I,
)
_TEAM = re.compile(
    r"\b\d+\s*(users|seats|people|employees|mitarbeiter\w*|nutzer|usuarios|personas|utilisateurs|personnes)\b",
    re.I,
)
DISQUALIFIERS: dict[str, re.Pattern[str]] = {
    "job application": re.compile(
        r"\b(job|position|internship|resume|cv|hiring|apply|application for|bewerbung|praktikum|"
        r"empleo|trabajo|candidature|stage|alternance)\b",
        re.I,
    ),
    "student project": re.compile(
        r"\b(student|thesis|homework|school project|university project|tesis|mémoire)\b", re.I
    ),
}
JUNK: dict[str, re.Pattern[str]] = {
    "test submission": re.compile(
        r"^\W*((test|teste|testing|asdf\w*|qwert\w*|a{3,}\w*|xxx+|123+|lorem ipsum)\W*)+(\w+\W*)?$", re.I
    ),
    "competitor fishing": re.compile(
        r"\b(competitor|competing (crm |software )?(vendor|company|product)|market study|wettbewerber|"
        r"concurrent|competencia|concorrente|konkurencj\w+)\b",
        re.I,
    ),
    "vendor pitch": re.compile(
        r"\b(we offer|our agency|our services|partnership opportunity|outsourc\w+|lead generation services|"
        r"seo|link building|wir bieten|nuestra agencia|somos una agencia|notre agence|nous proposons|"
        r"oferujemy|pozycjonowanie|referencement|référencement)\b",
        re.I,
    ),
}

Verdict = Literal["good", "nurture", "decline", "spam"]


def score_lead(text: str, ref: dict[str, Any], data: dict[str, Any]) -> tuple[int, list[str]]:
    """(score, reasons) for a lead by the rules in this module's docstring."""
    fit: list[tuple[int, str]] = []
    intent: list[tuple[int, str]] = []
    if ref.get("company") or data.get("company"):
        fit.append((10, "company named"))
    email = str(ref.get("email") or "")
    domain = email.rpartition("@")[2].lower()
    if domain and domain not in FREEMAIL:
        fit.append((15, f"business email ({domain})"))
    size = _number(data.get("company_size") or data.get("employees"))
    if size is not None and size >= 50:
        fit.append((15, f"company size {size:g}"))
    elif size is not None and size >= 10:
        fit.append((10, f"company size {size:g}"))
    title = str(data.get("title") or data.get("role") or "")
    if _TITLE.search(title) or _TITLE.search(text[:200]):
        fit.append((10, "decision-maker title"))
    source = str(data.get("source") or "").lower()
    if source in HOT_SOURCES:
        intent.append((20, f"source: {source}"))
    elif source in WARM_SOURCES:
        intent.append((5, f"source: {source}"))
    if _BUY.search(text):
        intent.append((15, "asks about price/demo/trial"))
    if _TIMELINE.search(text):
        intent.append((10, "has a timeline"))
    if _TEAM.search(text):
        intent.append((5, "names a team size"))
    budget = _number(data.get("budget")) or (_number(data.get("budget_cents")) or 0) / 100
    if budget and budget > 0:
        intent.append((10, f"budget {budget:g}"))
    fit_score = min(sum(p for p, _ in fit), FIT_MAX)
    intent_score = min(sum(p for p, _ in intent), INTENT_MAX)
    reasons = [f"+{p} {r}" for p, r in fit + intent]
    return fit_score + intent_score, reasons


def judge(
    text: str, subject: str, ref: dict[str, Any], data: dict[str, Any]
) -> tuple[Verdict, int, list[str]]:
    """The lead's verdict, score and reasons."""
    whole = normalise(f"{subject}\n{text}\n{data.get('title') or ''}")
    body = normalise(f"{subject}\n{text}").strip()
    for label, pattern in JUNK.items():
        if pattern.search(body):
            return "spam", 0, [f"junk: {label}"]
    if injection_rule(body):
        return "spam", 0, ["junk: instructions aimed at the agent"]
    score, reasons = score_lead(whole, ref, data)
    if body and score < GOOD_LEAD_SCORE:
        from agents.classifier.model import predict

        if predict(body).probabilities.get("spam", 0.0) >= JUNK_SPAM_AT:
            return "spam", 0, ["junk: reads as spam"]
    for label, pattern in DISQUALIFIERS.items():
        if pattern.search(whole):
            return "decline", score, [*reasons, f"disqualified: {label}"]
    return ("good" if score >= GOOD_LEAD_SCORE else "nurture"), score, reasons


CORE = {
    "good": "Thanks for reaching out{about}. I'd love to learn what you need and show you how we can help. "
    "Would a 20-minute call this week work? Just reply with two times that suit you.",
    "nurture": "Thanks for your interest{about}. I'll send over a short overview of how teams like yours use "
    "us. Whenever the timing is right, just reply here and we'll set up a call.",
    "decline": "Thanks for getting in touch. I don't think we're the right fit for this right now, "
    "but I appreciate you thinking of us and wish you all the best.",
}


class LeadQualification(Role):
    name: ClassVar[str] = "lead_qualification"
    consumes: ClassVar[frozenset[str]] = frozenset({"lead.created"})
    kinds: ClassVar[frozenset[ActionKind]] = frozenset(
        {"send_email", "change_stage", "create_task", "add_note", "post_webhook"}
    )
    tier: ClassVar[Tier] = "draft"
    daily_budget_usd: ClassVar[float] = 1.00

    def propose(self, context: AgentContext, model: AgentModel) -> list[Proposal]:
        """Score the lead and propose the stage and the email that fit."""
        trigger = context.trigger
        data = trigger.data
        subject = str(data.get("subject") or "")
        ref = {
            **trigger.customer_ref,
            "company": trigger.customer_ref.get("company") or context.customer.company,
        }
        verdict, score, reasons = judge(trigger.text or "", subject, ref, data)
        why = f"lead score {score}/100 → {verdict} ({', '.join(reasons) or 'no signals'})"
        sources = (Source(kind="event", id=trigger.id), Source(kind="rule", id="lead_score", note=why[:200]))
        confidence = round(min(0.55 + score / 200, 0.95), 2)

        def make(
            kind: ActionKind, params: dict[str, Any], conf: float = confidence, **extra: Any
        ) -> Proposal:
            return Proposal(
                agent=self.name,
                kind=kind,
                customer_id=context.customer.id,
                params=params,
                rationale=why[:500],
                sources=sources,
                confidence=conf,
                event_id=trigger.id,
                **extra,
            )

        note = make(
            "add_note",
            {"text": f"Lead scored {score}/100 ({verdict}): {'; '.join(reasons)}", "lead_verdict": verdict},
            0.9,
        )
        if verdict == "spam":
            return [note]
        proposals = [note]
        if verdict == "good" and context.customer.stage == "lead":
            proposals.append(make("change_stage", {"stage": "qualified"}))
        if verdict == "good" and context.webhook_url:
            lead = {"event": "lead.qualified", "customer": ref, "score": score, "reasons": reasons}
            proposals.append(make("post_webhook", {"url": context.webhook_url, "json": lead}))
        to = email_of(context)
        if to is None:
            name = first_name(context) or "the lead"
            proposals.append(
                make("create_task", {"title": f"Contact {name} ({verdict} lead, no email on file)"})
            )
            return proposals
        company = ref.get("company")
        drafted = compose(
            context,
            model,
            kind="send_email",
            purpose={
                "good": "first reply to a promising lead: thank them, propose a short call",
                "nurture": "first reply to a lead who is not ready yet: thank them, offer an overview, "
                "no pressure",
                "decline": "polite decline: we are not the right fit, thank them kindly",
            }[verdict],
            template_subject={
                "good": "Your enquiry",
                "nurture": "Thanks for your interest",
                "decline": "Thanks for reaching out",
            }[verdict],
            template_core=CORE[verdict].format(about=f" about {company}" if company else ""),
            facts={"lead_score": score, "verdict": verdict},
        )
        proposals.append(
            make(
                "send_email",
                {"to": to, "subject": drafted.draft.subject, "body": drafted.draft.body, "template": verdict},
                conf=min(confidence, 0.85),
                draft=drafted.draft,
                cost=drafted.cost,
                drafted_from_template=drafted.from_template,
            ).model_copy(update={"rationale": f"{why}; {drafted.note}"[:500]})
        )
        return proposals


def _number(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
