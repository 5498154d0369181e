"""When to alert the operator at once: a table of documented rules, each naming itself when it fires.

Escalation is its own decision, not a side effect of intent. Rules read the message (exact legal,
security and fraud phrasings in the languages we support), the classifier's learned escalation signal,
and the customer's standing from the store (MRR, seats, plan) or the signal's data. Hot leads and a
bare injection attempt are not escalations.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agents.proposal import Proposal

# A customer paying at least this much a month is a valuable account: their churn is an alert.
VALUABLE_MRR_CENTS = 100_000
# Seats, or a yearly amount, from which an account is valuable whatever its MRR on file.
VALUABLE_SEATS = 20
VALUABLE_YEARLY_CENTS = 1_200_000
# An overdue invoice at least this large and this late goes to the operator, not to a reminder.
LARGE_OVERDUE_CENTS = 500_000
LONG_OVERDUE_DAYS = 60
# The classifier's escalation probability from which it fires on its own.
LEARNED_ESCALATION_AT = 0.5

_LEGAL = re.compile(
    r"\b(lawyers?|solicitors?|attorneys?|legal action|sue|court|trading standards|formal notice|chargeback|"
    r"disput\w* the charge|anwalt|anwältin|rechtliche schritte|abmahnung|avocats?|mise en demeure|"
    r"tribunal|abogad[oa]s?|reclamación formal|demanda|avvocat[oa]|legale|advogad[oa]s?|advocaat|"
    r"prawni\w+|sąd)\b",
    re.I,
)
_SECURITY = re.compile(
    r"(data (breach|leak)|privacy incident|security incident|unauthori[sz]ed (access|login)|hacked|"
    r"compromised|logged in(to)? .{0,40}(nobody|not us|unknown)|someone (else )?(logged|accessed)|"
    r"another (company|customer)'s (data|customer)|someone else's data|datenleck|sicherheitsvorfall|"
    r"datenpanne|fuite de données|accès (non autorisé|sans autorisation)|sans autorisation|"
    r"acceso no autorizado|datos personales de otros|violazione dei dati|accesso .{0,40}sconosciut|"
    r"dati di un altro cliente|vazamento de dados|acess\w* .{0,30}sem autorização|datalek|"
    r"onbekend apparaat|gegevens van een andere klant|wyciek danych|nieznanego urządzenia|"
    r"dane innego klienta|ingelogd .{0,40}onbekend|données d'un autre client|dossiers clients sans)",
    re.I,
)
_NEW_ACCOUNT = re.compile(
    r"(?i:\b(new (bank )?(account|iban|bank details)|bank details (have )?changed|changed banks|neue (iban|"
    r"bankverbindung)|nouvel? (iban|rib)|nueva cuenta|nuovo iban|nova conta|nieuw rekeningnummer|"
    r"nowy (numer konta|rachunek))\b)|\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}\b",
)
_REFUND_OR_PAYOUT = re.compile(
    r"\b(refunds?|payouts?|erstattung|remboursement|reembolso|rimborso|reembolso|terugbetaling|zwrot)\b", re.I
)
_FRAUD = re.compile(r"\b(fraud\w*|betrug|fraude|frode|oszustw\w*)\b", re.I)
_ANNUAL = re.compile(
    r"\b(annual|yearly|retainer|enterprise|jahres\w*|annuel|anual|annuale|jaar\w*|roczn\w*)\b", re.I
)
_SEATS = re.compile(
    r"\b(\d{2,4})\s*(seats?|licen[cs]es?|lizenzen|plätze|licences|postes|licencias|licenze|postazioni|"
    r"licenças|licenties|plekken|licencji|stanowisk|users|utilisateurs|usuarios|utenti|gebruikers)\b",
    re.I,
)


@dataclass(frozen=True)
class Situation:
    """What the escalation rules read about one signal."""

    signal_type: str
    text: str = ""
    intent: str | None = None
    learned_escalation: float = 0.0
    mrr_cents: int = 0
    seats: int | None = None
    yearly_cents: int = 0
    overdue_cents: int = 0
    days_overdue: int | None = None
    invoice_state: str | None = None  # disputed | insolvent | in_transit | payment_plan | away
    renewal_at_risk: bool = False
    data: dict[str, Any] = field(default_factory=dict)

    def seats_mentioned(self) -> int:
        """The largest seat or licence count in the text or on file."""
        found = [int(m.group(1)) for m in _SEATS.finditer(self.text)]
        return max([*found, self.seats or 0])

    def valuable(self) -> bool:
        """A valuable account: high MRR, many seats, a large yearly plan, or an annual/retainer deal."""
        return (
            self.mrr_cents >= VALUABLE_MRR_CENTS
            or self.seats_mentioned() >= VALUABLE_SEATS
            or self.yearly_cents >= VALUABLE_YEARLY_CENTS
            or (bool(_ANNUAL.search(self.text)) and self.seats_mentioned() >= 10)
        )


@dataclass(frozen=True)
class EscalationRule:
    name: str
    explanation: str
    fires: Callable[[Situation], bool]


MESSAGE = "message.received"
CHURN_OR_ANGER = frozenset({"complaint", "cancellation_risk", "billing_question"})

RULES: tuple[EscalationRule, ...] = (
    EscalationRule(
        "legal_threat",
        "the customer threatens legal action or a chargeback",
        lambda s: s.signal_type == MESSAGE and s.intent != "spam" and bool(_LEGAL.search(s.text)),
    ),
    EscalationRule(
        "security_incident",
        "a data leak, breach or unauthorised access is reported",
        lambda s: s.signal_type == MESSAGE and s.intent != "spam" and bool(_SECURITY.search(s.text)),
    ),
    EscalationRule(
        "suspected_fraud",
        "money is to go to new bank details, or fraud is reported",
        lambda s: (
            s.signal_type == MESSAGE
            and s.intent != "spam"
            and (
                (bool(_NEW_ACCOUNT.search(s.text)) and bool(_REFUND_OR_PAYOUT.search(s.text)))
                or bool(_FRAUD.search(s.text))
            )
        ),
    ),
    EscalationRule(
        "angry_or_serious",
        "the classifier reads this as a message the operator must see now (anger, threat, incident)",
        lambda s: (
            s.signal_type == MESSAGE
            and s.intent in CHURN_OR_ANGER
            and s.learned_escalation >= LEARNED_ESCALATION_AT
        ),
    ),
    EscalationRule(
        "valuable_churn",
        "a valuable account (MRR, seats, annual plan or retainer) signals churn",
        lambda s: s.signal_type == MESSAGE and s.intent == "cancellation_risk" and s.valuable(),
    ),
    EscalationRule(
        "disputed_invoice",
        "the invoice is disputed",
        lambda s: s.signal_type == "invoice.overdue" and s.invoice_state == "disputed",
    ),
    EscalationRule(
        "insolvency",
        "the customer is insolvent or in administration",
        lambda s: s.signal_type == "invoice.overdue" and s.invoice_state == "insolvent",
    ),
    EscalationRule(
        "large_long_overdue",
        f"the invoice is at least {LARGE_OVERDUE_CENTS // 100} and {LONG_OVERDUE_DAYS} days overdue",
        lambda s: (
            s.signal_type == "invoice.overdue"
            and s.overdue_cents >= LARGE_OVERDUE_CENTS
            and (s.days_overdue or 0) >= LONG_OVERDUE_DAYS
        ),
    ),
    EscalationRule(
        "valuable_renewal_at_risk",
        "a valuable renewal is at risk",
        lambda s: s.signal_type == "subscription.renewal_due" and s.renewal_at_risk and s.valuable(),
    ),
)


def fired(situation: Situation) -> list[EscalationRule]:
    """The rules that fire for a situation, in table order."""
    return [rule for rule in RULES if rule.fires(situation)]


def reason(rules: list[EscalationRule]) -> str:
    """One line naming every rule that fired, for the escalation's params and rationale."""
    return "; ".join(f"{rule.name}: {rule.explanation}" for rule in rules)


def escalation(rules: list[EscalationRule], why: str, **fields: Any) -> Proposal:
    """The escalate proposal for the rules that fired; `fields` are the role's shared proposal fields."""
    return Proposal(
        kind="escalate",
        params={"reason": reason(rules), "rules": [rule.name for rule in rules]},
        rationale=f"{why}; escalated by {', '.join(rule.name for rule in rules)}"[:500],
        confidence=0.9,
        **fields,
    )
