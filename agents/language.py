"""The language a customer wrote in, offline, among the languages we draft replies in.

lingua-language-detector restricted to SUPPORTED and in its low-accuracy (trigram) mode: about 20 MB
and a few milliseconds per message, instead of ~300 MB for every n-gram model of every language. The
detector is built on first use, once per process.
"""

from __future__ import annotations

import threading
from typing import Any

SUPPORTED: tuple[str, ...] = ("en", "de", "fr", "es", "it", "pt", "nl", "pl")
DEFAULT = "en"
# Shorter text than this says too little to tell one language from another; the default stands.
MIN_LETTERS = 3
# Below this many characters the trigram models guess poorly ("hi is there a dark mode" reads as
# German), so the commonest function words of each language vote first.
SHORT_TEXT = 80
_FUNCTION_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        [
            "the",
            "u",
            "pls",
            "please",
            "thanks",
            "hi",
            "hey",
            "a",
            "an",
            "is",
            "are",
            "there",
            "i",
            "we",
            "you",
            "my",
            "our",
            "to",
            "do",
            "does",
            "can",
            "how",
            "what",
            "it",
            "this",
            "that",
            "of",
            "and",
        ]
    ),
    "de": frozenset(
        [
            "der",
            "die",
            "das",
            "ist",
            "ich",
            "wir",
            "sie",
            "und",
            "nicht",
            "ein",
            "eine",
            "mit",
            "für",
            "kann",
            "wie",
            "gibt",
            "es",
        ]
    ),
    "fr": frozenset(
        [
            "le",
            "la",
            "les",
            "est",
            "je",
            "nous",
            "vous",
            "et",
            "pas",
            "un",
            "une",
            "avec",
            "pour",
            "comment",
            "il",
            "des",
            "du",
            "de",
            "ne",
            "en",
        ]
    ),
    "es": frozenset(
        [
            "el",
            "la",
            "los",
            "es",
            "yo",
            "usted",
            "y",
            "no",
            "un",
            "una",
            "con",
            "para",
            "cómo",
            "como",
            "hay",
            "del",
            "de",
            "que",
            "se",
            "por",
            "al",
        ]
    ),
    "it": frozenset(
        [
            "il",
            "lo",
            "la",
            "gli",
            "è",
            "io",
            "noi",
            "voi",
            "e",
            "non",
            "un",
            "una",
            "con",
            "per",
            "come",
            "si",
            "può",
            "del",
        ]
    ),
    "pt": frozenset(
        [
            "o",
            "a",
            "os",
            "é",
            "eu",
            "nós",
            "você",
            "e",
            "não",
            "um",
            "uma",
            "com",
            "para",
            "como",
            "dá",
            "pode",
            "do",
            "da",
            "de",
            "que",
            "em",
            "ao",
        ]
    ),
    "nl": frozenset(
        [
            "de",
            "het",
            "een",
            "is",
            "ik",
            "wij",
            "jullie",
            "en",
            "niet",
            "met",
            "voor",
            "hoe",
            "kan",
            "er",
            "van",
        ]
    ),
    "pl": frozenset(["jest", "nie", "się", "czy", "jak", "dla", "już", "proszę", "mam", "jestem", "możecie"]),
}

_lock = threading.Lock()
_detector: Any = None


def _build() -> Any:
    global _detector
    if _detector is None:
        with _lock:
            if _detector is None:
                from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

                languages = [
                    Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper())) for code in SUPPORTED
                ]
                builder = LanguageDetectorBuilder.from_languages(*languages)
                _detector = builder.with_low_accuracy_mode().build()
    return _detector


def detect(text: str | None, default: str = DEFAULT) -> str:
    """ISO 639-1 code of the text's language among SUPPORTED, or `default` when it cannot tell."""
    if not text or sum(ch.isalpha() for ch in text) < MIN_LETTERS:
        return default
    if len(text) < SHORT_TEXT:
        words = [w.strip(".,!?¿¡:;()\"'").lower() for w in text.split()]
        votes = {code: sum(w in vocab for w in words) for code, vocab in _FUNCTION_WORDS.items()}
        ranked = sorted(votes, key=lambda code: -votes[code])
        best, runner_up = votes[ranked[0]], votes[ranked[1]]
        if best >= 2 and best > 2 * runner_up:
            return ranked[0]
    found = _build().detect_language_of(text[:2000])
    if found is None:
        return default
    code = str(found.iso_code_639_1.name).lower()
    return code if code in SUPPORTED else default
