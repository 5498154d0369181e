"""Recognising inbound text that tries to give the agent instructions.

Inbound text is data, never instructions: this detector does not make anything safe by itself (the
capability and money rules do), it only flags the message so policy keeps every proposal in front of
a person and the triage agent escalates it.
"""

from __future__ import annotations

import re
import unicodedata

# Phrases that address the assistant rather than the business, in the languages we see most.
_PATTERNS = [
    r"\bignore (all |any |your |the |my )*(previous |prior |above |earlier )*(instructions|rules|prompts?)\b",
    r"\bdisregard (all |any |your |the )*(previous |prior |above )*(instructions|rules|prompts?)\b",
    r"\bforget (all |your |the )*(previous |prior )*(instructions|rules)\b",
    r"\b(system prompt|developer message|jailbreak|dan mode)\b",
    r"\byou are now\b",
    r"\bact as (an? )?(admin|administrator|system|developer)\b",
    r"\bnew instructions?\s*:",
    r"<\s*/?\s*(system|assistant|instructions?)\s*>",
    r"\bas an ai\b.*\b(must|should)\b",
    r"\bignor(iere|ier) (alle |deine |die )*(vorherigen |bisherigen )*(anweisungen|regeln)\b",
    r"\bignora (todas |tus |las )*(instrucciones|reglas)( anteriores)?\b",
    r"\bignore[rz]? (toutes |tes |vos |les )*(instructions|consignes|règles)( précédentes)?\b",
    r"\boublie[rz]? (toutes |tes |vos |les )*(instructions|consignes)\b",
]
_REGEX = re.compile("|".join(_PATTERNS), re.IGNORECASE | re.DOTALL)


def normalise(text: str) -> str:
    """NFKC, zero-width characters removed and whitespace collapsed, so tricks with odd unicode fail."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return re.sub(r"\s+", " ", text)


def looks_like_injection(text: str | None) -> bool:
    """Whether the text tries to instruct the agent."""
    return bool(text) and bool(_REGEX.search(normalise(text or "")))
