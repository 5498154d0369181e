"""Rule-based intent classification for inbound messages (English, German, Spanish, French).

The no-model path of inbox triage, and the check the model's answer is compared against. Each intent
has cue phrases with weights; the highest total wins, ties broken by INTENT_PRIORITY (the costlier
intent to miss first). Auto-replies are recognised from headers and subjects before anything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from agents.injection import normalise

Intent = Literal[
    "question", "complaint", "cancellation_risk", "buying_signal", "billing_question", "auto_reply", "spam"
]
INTENTS: tuple[Intent, ...] = (
    "question",
    "complaint",
    "cancellation_risk",
    "buying_signal",
    "billing_question",
    "auto_reply",
    "spam",
)
INTENT_PRIORITY: tuple[Intent, ...] = (
    "cancellation_risk",
    "complaint",
    "billing_question",
    "buying_signal",
    "question",
)

# Cue (regex, weight). Weight 3 = decisive on its own, 1 = a hint.
_CUES: dict[Intent, list[tuple[str, int]]] = {
    "spam": [
        (r"\b(crypto|bitcoin|forex|casino|viagra|cialis|lottery|jackpot)\b", 3),
        (r"\b(seo (services|agency|expert)|rank (your|you) (website|site)|backlinks?|guest post)\b", 3),
        (r"\b(you (have|'ve) won|claim your (prize|reward)|congratulations!? you)\b", 3),
        (r"\b(investment opportunity|double your (money|income)|make \$?\d+k? (a|per) (day|week))\b", 3),
        (r"\b(buy (cheap )?followers|100% free|act now|limited time offer|click here)\b", 2),
        (r"\b(dear (sir|madam|friend)|beneficiary|inheritance|wire the funds)\b", 2),
        (r"\b(gana dinero|ganaste|gewinnspiel|sie haben gewonnen|vous avez gagné)\b", 3),
        (r"\b(unsubscribe|opt[- ]out)\b", 1),
    ],
    "cancellation_risk": [
        (r"\b(cancel|cancell?ing|cancell?ation|terminate|termination)\b", 3),
        (r"\b(close|delete|deactivate) (my|our) account\b", 3),
        (r"\b(not|won'?t|will not|don'?t plan to) (be )?renew(ing)?\b", 3),
        (
            r"\b(switch(ing)? to|moving to|move to|go(ing)? with) "
            r"(a |an )?(competitor|another|different|\w+ instead)\b",
            2,
        ),
        (
            r"\b(looking at|evaluating|considering) "
            r"(other|alternative)s?( (tools|options|vendors|solutions|providers))?\b",
            2,
        ),
        (r"\b(no longer need|stop using|last month with you)\b", 2),
        (r"\b(künd(ig|ung)\w*|vertrag beenden|nicht verlängern|wechseln zu)\b", 3),
        (r"\b(cancelar|darme de baja|dar de baja|baja del servicio|no renovar)\b", 3),
        (r"\b(résilier|résiliation|annuler (mon|notre) abonnement|ne pas renouveler)\b", 3),
    ],
    "complaint": [
        (
            r"\b(disappointed|unacceptable|frustrat\w*|terrible|awful|horrible|worst|ridiculous|furious|angry)\b",
            3,
        ),
        (
            r"\b(not working|doesn'?t work|does not work|isn'?t working|stopped working|"
            r"broken|keeps crashing|crash(es|ed)?)\b",
            2,
        ),
        (
            r"\b(still waiting|no (one|response|reply)|nobody (answered|replied)|"
            r"third time|again and again)\b",
            2,
        ),
        (r"\b(bug|error|outage|down again|lost (my|our) data)\b", 1),
        (r"(😡|🤬|😤|👎|😠)", 2),
        (r"\b(enttäuscht|inakzeptabel|ärgerlich|funktioniert nicht|katastrophe|unverschämt)\b", 3),
        (r"\b(decepcionad[oa]|inaceptable|pésimo|no funciona|horrible|indignad[oa])\b", 3),
        (r"\b(déçu|déçue|inacceptable|ne fonctionne pas|ne marche pas|scandaleux|lamentable)\b", 3),
    ],
    "billing_question": [
        (
            r"\b(invoice|billing|billed|receipt|vat|tax id|credit card|payment method|"
            r"overcharged|double charged)\b",
            3,
        ),
        (r"\b(charged?|charges|payment|pay|paid|refund|proration|prorated)\b", 1),
        (r"\b(rechnung|zahlung|abgebucht|abbuchung|mehrwertsteuer|ust-id)\b", 3),
        (r"\b(factura|cobro|cobrado|pago|tarjeta|reembolso)\b", 3),
        (r"\b(facture|paiement|prélèvement|prélevé|remboursement|tva)\b", 3),
    ],
    "buying_signal": [
        (
            r"\b(pricing|price|quote|upgrade|more seats|additional seats|"
            r"add (\d+ )?(more )?(users|seats|licen[cs]es))\b",
            3,
        ),
        (
            r"\b(enterprise plan|annual plan|yearly plan|purchase order|sign the contract|"
            r"ready to (buy|sign|start))\b",
            3,
        ),
        (r"\b(demo|trial|how much|interested in|roll (it )?out to|whole team|other teams?)\b", 2),
        (r"\b(angebot|preis(e|liste)?|kaufen|upgraden|lizenzen|weitere nutzer)\b", 3),
        (r"\b(precio|cotización|presupuesto|comprar|más usuarios|licencias)\b", 3),
        (r"\b(devis|tarifs?|prix|acheter|licences supplémentaires|plus d'utilisateurs)\b", 3),
    ],
    "question": [
        (r"\?", 1),
        (
            r"\b(how (do|can|should) (i|we)|is (it|there) (possible|a way)|can (i|we|you)|"
            r"could you|do you (support|have))\b",
            2,
        ),
        (r"\b(wie (kann|können)|gibt es|ist es möglich|können sie)\b", 2),
        (r"\b(cómo|es posible|pueden|podrían|hay (alguna|una) forma)\b", 2),
        (r"\b(comment|est-il possible|pouvez-vous|est-ce que)\b", 2),
    ],
}
_COMPILED = {intent: [(re.compile(p, re.I), w) for p, w in cues] for intent, cues in _CUES.items()}

_AUTO_SUBJECT = re.compile(
    r"(out of (the )?office|automatic reply|auto[- ]?reply|autoreply|abwesenheit|automatische antwort|"
    r"respuesta automática|fuera de la oficina|réponse automatique|absence du bureau|absent du bureau)",
    re.I,
)
_AUTO_BODY = re.compile(
    r"(i am (currently )?out of (the )?office|i'?m (currently )?out of (the )?office|"
    r"limited access to (my )?e-?mail|"
    r"i will (be back|return) on|bin (bis|ab) .{0,40}nicht im büro|nicht erreichbar|"
    r"estoy fuera de la oficina|estaré de vuelta|je suis absent|je serai de retour|"
    r"this is an automated (message|reply))",
    re.I,
)
_AUTO_HEADERS = {"auto-submitted", "x-autoreply", "x-autorespond", "x-auto-response-suppress"}


@dataclass(frozen=True)
class Classification:
    """An intent, how sure the rules are, and the cues that decided it (for the rationale)."""

    intent: Intent
    confidence: float
    cues: tuple[str, ...] = ()


def is_auto_reply(subject: str, text: str, data: dict[str, Any]) -> bool:
    """Out-of-office and other automatic answers, by header first, then subject, then body."""
    headers = {str(k).lower(): str(v).lower() for k, v in (data.get("headers") or {}).items()}
    if headers.get("auto-submitted", "no") != "no" or _AUTO_HEADERS & (headers.keys() - {"auto-submitted"}):
        return True
    if headers.get("precedence") in {"auto_reply", "bulk", "junk"} or data.get("auto_submitted"):
        return True
    return bool(_AUTO_SUBJECT.search(subject) or _AUTO_BODY.search(text[:600]))


def classify(
    text: str | None, subject: str | None = None, data: dict[str, Any] | None = None
) -> Classification:
    """The intent of one inbound message by rules."""
    subject = normalise(subject or "")
    body = normalise(text or "")
    if is_auto_reply(subject, body, data or {}):
        return Classification("auto_reply", 0.95, ("auto-reply header/subject/body",))
    whole = f"{subject}\n{body}"
    scores: dict[Intent, int] = {}
    cues: dict[Intent, list[str]] = {}
    for intent, patterns in _COMPILED.items():
        for pattern, weight in patterns:
            found = pattern.findall(whole)
            if found:
                scores[intent] = scores.get(intent, 0) + weight * min(len(found), 2)
                match = pattern.search(whole)
                cues.setdefault(intent, []).append(match.group(0) if match else "")
    if scores.get("spam", 0) >= 3:
        return Classification("spam", min(0.6 + 0.1 * scores["spam"], 0.95), tuple(cues["spam"]))
    scores.pop("spam", None)
    if not scores:
        return Classification("question", 0.4, ())
    best = max(scores.values())
    winner = next(i for i in INTENT_PRIORITY if scores.get(i) == best)
    runner_up = max((s for i, s in scores.items() if i != winner), default=0)
    confidence = min(0.5 + 0.08 * best - 0.05 * runner_up, 0.92)
    return Classification(winner, round(max(confidence, 0.45), 2), tuple(cues[winner]))
