"""The daily digest on the seeded demo business: sections, the slot claim, and the chart PNG."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from bot.demo.dataset import seed
from jobs import digest as d
from store.uow import EventStore

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
