"""The daily digest on the seeded demo business: sections, the slot claim, and the chart PNG."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from bot.demo.dataset import seed
from jobs import context
from jobs import digest as d
from jobs.inprocess import InProcessJobQueue
from jobs.queue import HOUSEKEEPING
from store.uow import EventStore
from tests.integration.jobs_harness import app_for
from tests.integration.proposal_helpers import RecordingSurface, settings_for

NOW = datetime(2026, 11, 21, 7, 0, tzinfo=UTC)
TZ = ZoneInfo("Europe/Berlin")


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; fails on anything that is not a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_digest_on_the_demo_business(store: EventStore, tmp_path: Path) -> None:
    seed(store, now=NOW - timedelta(hours=1))
    digest = d.prepare(store, NOW, TZ, tmp_path)
    # The demo seeds renewals 6 days out for every sixth paying customer, and an unpaid latest
    # invoice for every fifth customer; the digest must find exactly those.
    assert digest.renewals, "renewals inside the next 7 days are listed"
    assert all(r["renews_on"] <= (NOW + timedelta(days=7)).date() for r in digest.renewals)
    assert {i["id"].rsplit("_", 1)[-1] for i in digest.overdue} == {"2"}
    assert len(digest.overdue) == 5
    assert digest.pending_total == 0
    text = "\n".join(digest.lines())
    assert "Overdue invoices: 5" in text
    assert "Waiting for you: 0" in text
    assert len(digest.lines()) < 40, "short enough to read on a phone"
    assert digest.chart is not None
    width, height = png_size(digest.chart)
    assert (width, height) == (800, 300)
    assert 5_000 < digest.chart.stat().st_size < 500_000


def test_a_slot_is_claimed_once(store: EventStore, tmp_path: Path) -> None:
    digest = d.prepare(store, NOW, TZ, tmp_path)
    slot = datetime(2026, 11, 21, 8, 0, tzinfo=TZ)
    assert d.claim_slot(store, slot, digest) is True
    assert d.claim_slot(store, slot, digest) is False
    assert d.claim_slot(store, slot + timedelta(days=1), digest) is True


def test_local_day_is_23_hours_on_spring_forward() -> None:
    start, end = d.local_day_bounds(datetime(2026, 3, 29).date(), TZ)
    assert end - start == timedelta(hours=23)


def test_new_leads_are_those_created_in_the_last_day(store: EventStore, tmp_path: Path) -> None:
    seed(store, now=NOW - timedelta(days=3))  # everything is older than a day
    from store import events as ev

    store.record_signal(
        "lead.created",
        ev.LeadCreated(
            customer=ev.CustomerRef(name="Rosa Delgado", email="rosa@finca.test", company="Finca Verde")
        ),
        "test:lead:rosa",
        source="test",
        occurred_at=NOW - timedelta(hours=2),
    )
    digest = d.prepare(store, NOW, TZ, tmp_path)
    assert [lead["name"] for lead in digest.new_leads] == ["Rosa Delgado"]


def test_a_sender_whose_only_mail_was_spam_or_an_auto_reply_is_not_a_new_lead(
    store: EventStore, tmp_path: Path
) -> None:
    """Every unknown sender's email makes a customer at stage lead; the digest's new leads are the
    people, not the junk. A new customer already qualified is still a new lead."""
    from store import events as ev

    seed(store, now=NOW - timedelta(days=3))

    def mail(name: str, email: str, text: str, *intents: str | None) -> str:
        """Messages from one sender, each classified as `intent` (None: not classified yet)."""
        customer = ev.CustomerRef(name=name, email=email)
        stream = ""
        for n, intent in enumerate(intents):
            received = store.record_signal(
                "message.received",
                ev.MessageReceived(customer=customer, text=text, data={"channel": "email"}),
                f"test:mail:{email}:{n}",
                source="test",
                occurred_at=NOW - timedelta(hours=3),
            ).event
            stream = received.stream
            if intent is not None:
                read = ev.MessageClassified(message_event_id=received.id, intent=intent, confidence=0.9)
                store.append(ev.NewEvent("message.classified", read, stream, f"classified:{received.id}"))
        return stream

    def correct(stream: str, intent: str) -> None:
        """The operator's "Not spam" / "Spam" on the sender's message."""
        [message] = [e for e in store.read_all() if e.stream == stream and e.type == "message.received"]
        corrected = ev.IntentCorrected(message_event_id=message.id, intent=intent, text="", by="terminal:op")
        store.append(ev.NewEvent("intent.corrected", corrected, stream, f"{message.id}:intent:{intent}"))

    web_form = ev.CustomerRef(name="Rosa Delgado", email="rosa@finca.test", company="Finca Verde")
    store.record_signal(
        "lead.created", ev.LeadCreated(customer=web_form), "test:lead:rosa", source="test", occurred_at=NOW
    )
    mail("Win Big", "prize@lottery.test", "You have won!", "spam")
    mail("Out of office", "away@acme.test", "I am away until Monday.", "auto_reply", "auto_reply")
    mail("Jonas Becker", "jonas@nordlicht.test", "Pricing for five seats?", "auto_reply", "buying_signal")
    qualified = mail("Mia Wong", "mia@harbor.test", "Can we start a trial next week?", "buying_signal")
    store.append(
        ev.NewEvent("stage.changed", ev.StageChanged(stage="qualified"), qualified, "test:stage:mia")
    )
    mail("Ines Roth", "ines@roth.test", "Quick question", "spam", None)  # the second not read yet
    correct(mail("Misread Sender", "misread@kanzlei.test", "Angebot?", "spam"), "question")
    correct(mail("Sneaky Spam", "deals@cheap.test", "Hello friend", "question"), "spam")
    mail("Rosa Delgado", "rosa@finca.test", "Out of office until Monday", "auto_reply")  # the form's lead

    digest = d.prepare(store, NOW, TZ, tmp_path)

    assert [lead["name"] for lead in digest.new_leads] == [
        "Jonas Becker",
        "Mia Wong",
        "Ines Roth",
        "Misread Sender",
        "Rosa Delgado",
    ]
    assert digest.screened_senders == 3
    assert "New leads since yesterday: 5 (3 spam or auto-reply sender(s) left out)" in digest.lines()


@dataclass
class FlakySurface(RecordingSurface):
    """A surface whose notices fail while `down` is set (an upload or API outage)."""

    down: bool = True

    def post_notice(self, lines: list[str]) -> None:
        if self.down:
            raise ConnectionError("files.upload: 503")
        super().post_notice(lines)


def test_a_failing_surface_does_not_keep_the_digest_from_the_others_and_is_retried(
    store: EventStore, tmp_path: Path
) -> None:
    queue = InProcessJobQueue()
    ctx = app_for(store, settings_for(tmp_path), queue)
    slack, telegram = FlakySurface(name="slack"), RecordingSurface(name="telegram")
    ctx.notifier.add(slack)
    ctx.notifier.add(telegram)
    slot = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)

    first = d.deliver(ctx, slot)

    assert set(first.failed) == {"slack"}
    assert telegram.notices[0][0].startswith("Daily digest"), "the working surface got it"
    assert "could not be posted to slack" in telegram.notices[-1][0], "and was told about the other"
    assert queue.depth()[HOUSEKEEPING] == 1, "a retry is queued for later"
    assert d.sent_to(store, slot, ["slack", "telegram"]) == {"telegram"}

    slack.down = False
    context.install(ctx)
    try:
        assert d.retry_digest(slot.isoformat(), 1) == []
    finally:
        context.uninstall()
    assert slack.notices[0][0].startswith("Daily digest")
    assert [n[0] for n in telegram.notices].count(first.lines()[0]) == 1, "telegram got it once"
    assert d.sent_to(store, slot, ["slack", "telegram"]) == {"slack", "telegram"}
    queue.stop(timeout=5)
