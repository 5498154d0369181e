"""`crm demo` tells a morning's story first: one of each thing, in order, before the rest of the work."""

from __future__ import annotations

import re
from pathlib import Path

from tests.e2e.test_run_and_demo import Process, offline_env

# What a newcomer sees first, each as the text its card carries.
STORY = {
    "a renewal coming due": r"proposed by renewal_nudges",
    "an overdue invoice": r"proposed by billing_monitor",
    "a hot lead": r"lead score \d+/100 → good",
    "a complaint escalated": r"escalated by legal_threat",
    "spam ignored, with the reason": r"Filed as spam, no reply: Exclusive offer",
    "a question answered": r"Send email to mateo@brisa\.studio[\s\S]*?question \(by classifier",
}


def test_the_demo_opens_with_a_believable_morning_before_the_scans_catch_up(tmp_path: Path) -> None:
    demo = Process(["demo"], offline_env(tmp_path), tmp_path)
    demo.wait_for("Demo business seeded")
    demo.wait_for(r"scan: \d+ more renewals coming due", timeout=120)
    assert demo.finish() == 0, demo.text

    morning = demo.text.split("Demo business seeded", 1)[1].split("more renewals coming due", 1)[0]
    missing = [what for what, pattern in STORY.items() if not re.search(pattern, morning)]
    assert missing == [], f"not in the first part of the demo: {missing}\n{morning}"
    order = [re.search(pattern, morning).start() for pattern in STORY.values()]  # type: ignore[union-attr]
    assert order == sorted(order), "the story is told in its order"
    first = re.search(r"proposed by (\w+)", morning)
    assert first is not None and first.group(1) == "renewal_nudges", "no card comes before the story's first"


def test_the_seeded_history_brings_no_proposals(tmp_path: Path) -> None:
    demo = Process(["demo"], offline_env(tmp_path), tmp_path)
    demo.wait_for(r"scan: \d+ more renewals coming due", timeout=120)
    demo.send("/pending")
    assert demo.finish() == 0, demo.text
    for subject in ("Re: Question about exports", "Re: onboarding", "Re: Seats", "Re: Invoice"):
        assert subject not in demo.text, "past conversations are history, not messages to answer"
    triaged = re.findall(r"Send email to (\S+) · [^·]+ · proposed by inbox_triage", demo.text)
    assert set(triaged) == {"jonas@nordlicht.de", "mateo@brisa.studio", "priya@copperleaf.io"}, triaged
