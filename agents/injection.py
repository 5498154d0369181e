"""Recognising inbound text that tries to give the agent instructions, in any language.

Inbound text is data, never instructions: this detector does not make anything safe by itself (the
capability and money rules do), it only flags the message so policy keeps every proposal in front of
a person and never lets money or payment details follow from it. Two signals: the trained injection
head of the triage classifier (multilingual), and exact patterns for the markup and phrasings that are
unambiguous in any context.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_PATTERNS = [
    r"\bignore (all |any |your |the |my )*(previous |prior |above |earlier )*(instructions|rules|prompts?)\b",
    r"\bdisregard (all |any |your |the )*(previous |prior |above )*(instructions|rules|prompts?)\b",
    r"\b(system prompt|developer message|jailbreak|dan mode|developer mode)\b",
    r"<\s*/?\s*(system|assistant|instructions?)\s*>",
    r"\[\[?\s*(system|assistant)\s*:",
    r"#{2,}\s*(instruction|system)",
    r"\bignor(iere|ier) (alle |deine |die )*(vorherigen |bisherigen )*(anweisungen|regeln)\b",
    r"\bignora (todas |tus |las |le )*(instrucciones|reglas|istruzioni|regole)",
    r"\bignore[rz]? (toutes |tes |vos |les )*(instructions|consignes|règles)",
    r"\boublie[rz]? (toutes |tes |vos |les )*(instructions|consignes)\b",
    r"\bnegeer (alle |je )*(eerdere |vorige )*(instructies|regels)\b",
    r"\bzignoruj (wszystkie )*(wcześniejsze |poprzednie )*(instrukcje|polecenia|zasady)\b",
    r"\bignore (todas )?(as )?(instruções|regras)\b",
]
_REGEX = re.compile("|".join(_PATTERNS), re.IGNORECASE | re.DOTALL)


def normalise(text: str) -> str:
    """NFKC, zero-width characters removed and whitespace collapsed, so tricks with odd unicode fail."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return re.sub(r"\s+", " ", text)


def injection_rule(text: str | None) -> bool:
    """Whether an exact pattern (markup or an unambiguous phrase) addresses the agent."""
    return bool(text) and bool(_REGEX.search(normalise(text or "")))


@lru_cache(maxsize=512)
def looks_like_injection(text: str | None, subject: str | None = None) -> bool:
    """Whether the message tries to instruct the agent: an exact pattern, or the learned head says so.

    Pass the subject when there is one: the classifier reads subject and body together, as the
    triage does, so both ask the same question (and share one embedding).
    """
    if not (text or "").strip() and not (subject or "").strip():
        return False
    if injection_rule(text) or injection_rule(subject):
        return True
    from agents.classifier.model import INJECTION_THRESHOLD, predict

    return predict(normalise(text or ""), normalise(subject or "")).injection >= INJECTION_THRESHOLD
