"""The `crm` store commands as a user runs them: a subprocess against SQLite and Postgres test databases."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from store import events as ev
from store.db import make_engine
from store.uow import EventStore

CRM = Path(sys.executable).with_name("crm")
T0 = datetime(2025, 1, 10, 9, 0, tzinfo=UTC)
# Every command of DESIGN.md's public interface (`import` holds `import customers`).
DESIGN_COMMANDS = [
    "run",
    "demo",
    "web",
    "bot",
    "worker",
    "scheduler",
    "migrate",
    "import",
    "signal",
    "customer",
    "replay",
    "digest",
]


def crm(*args: str, db_url: str | None, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the installed `crm` with a private data dir and no `.env` (cwd is the test's tmp dir)."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "CHROMA_URL", "SLACK_BOT_TOKEN", "TELEGRAM_BOT_TOKEN"}
    }
    environment.update({"CRM_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200", **env})
    if db_url is not None:
        environment["DATABASE_URL"] = db_url
    return subprocess.run(
        [str(CRM), *args],
        cwd=tmp_path,
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def record(store: EventStore, kind: str, key: str, at: datetime, data: dict[str, Any], **ref: str) -> str:
    signal = ev.SIGNAL_TYPES[kind](customer=ev.CustomerRef(**ref), data=data)
    return store.record_signal(kind, signal, key, source="test", occurred_at=at).event.stream


@pytest.fixture
def acme(db_url: str) -> str:
    """Ann at Acme: an invoice created on Jan 11 and paid on Jan 20, and a note."""
    engine = make_engine(db_url)
    store = EventStore(engine)
    invoice = {"invoice_id": "in_77", "amount": "250.00", "due_date": "2025-01-31"}
    customer = record(
        store, "lead.created", "l", T0, {}, name="Ann Lee", email="ann@acme.com", company="Acme"
    )
    record(store, "invoice.created", "c", T0 + timedelta(days=1), invoice, email="ann@acme.com")
    record(store, "invoice.paid", "p", T0 + timedelta(days=10), {"invoice_id": "in_77"}, email="ANN@acme.com")
    store.append(
        ev.NewEvent(
            type="note.added",
            payload=ev.NoteAdded(text="prefers email", author="ops"),
            stream=customer,
            idempotency_key="n",
            occurred_at=T0,
        )
    )
    engine.dispose()
    return customer


def test_help_lists_every_command_of_the_design(tmp_path: Path) -> None:
    result = crm("--help", db_url=None, tmp_path=tmp_path)
    assert result.returncode == 0
    listed = set(re.findall(r"^│ (\w+) ", result.stdout, flags=re.MULTILINE))
    assert set(DESIGN_COMMANDS) <= listed, set(DESIGN_COMMANDS) - listed
    sub = crm("import", "--help", db_url=None, tmp_path=tmp_path)
    assert re.search(r"^│ customers ", sub.stdout, flags=re.MULTILINE)


@pytest.mark.parametrize("command", [["digest"], ["signal", "-"]])
def test_a_command_that_is_not_built_says_so_and_exits_non_zero(tmp_path: Path, command: list[str]) -> None:
    """Whatever these commands do once built, they never claim success while not built."""
    result = crm(*command, db_url=None, tmp_path=tmp_path)
    if "not built yet" in result.stderr:
        assert result.returncode == 3
    elif command == ["signal", "-"]:  # built by now: an empty stdin is no signal
        assert result.returncode != 0
    else:  # built by now: the digest of an empty CRM is still a digest
        assert result.returncode == 0, result.stderr


def test_migrate_creates_the_schema_and_says_where(db_url: str, tmp_path: Path) -> None:
    result = crm("migrate", db_url=db_url, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "schema up to date" in result.stdout


def test_migrate_on_the_default_creates_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    result = crm("migrate", db_url=None, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "crm.sqlite3").exists()


@pytest.mark.parametrize(
    ("name", "value"),
    [("DIGEST_AT", "25:00"), ("CRM_TIMEZONE", "Mars/Base"), ("SIGNALS_SECRET", "not-whsec")],
)
def test_a_malformed_setting_stops_the_cli_with_its_name(tmp_path: Path, name: str, value: str) -> None:
    result = crm("migrate", db_url=None, tmp_path=tmp_path, **{name: value})
    assert result.returncode == 2
    assert name in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    result = crm("migrate", db_url="postgresql://nobody@127.0.0.1:1/none", tmp_path=tmp_path)
    assert result.returncode == 2
    assert "cannot reach the database" in result.stderr
    assert "Traceback" not in result.stderr


def test_customer_json_prints_the_context_slice(db_url: str, tmp_path: Path, acme: str) -> None:
    result = crm("customer", "Ann Lee", "--json", db_url=db_url, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["id"] == acme
    assert (data["name"], data["company"], data["stage"]) == ("Ann Lee", "Acme", "lead")
    assert data["lifetime_value_cents"] == 25000
    assert data["open_invoices"] == []
    assert data["contacts"] == [{"kind": "email", "value": "ann@acme.com"}]
    assert data["recent_notes"][0]["text"] == "prefers email"
    assert data["as_of"] is None


@pytest.mark.parametrize("query", ["ANN@ACME.COM", "acme.com", "ann"])
def test_customer_is_found_by_email_domain_or_part_of_a_name(
    db_url: str, tmp_path: Path, acme: str, query: str
) -> None:
    result = crm("customer", query, "--json", db_url=db_url, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["id"] == acme


def test_customer_percent_is_a_literal_character_not_everyone(db_url: str, tmp_path: Path, acme: str) -> None:
    result = crm("customer", "%", db_url=db_url, tmp_path=tmp_path)
    assert result.returncode == 1
    assert "no customer matches '%'" in result.stderr


def test_customer_as_of_shows_the_invoice_still_unpaid(db_url: str, tmp_path: Path, acme: str) -> None:
    result = crm(
        "customer", "ann@acme.com", "--json", "--as-of", "2025-01-15", db_url=db_url, tmp_path=tmp_path
    )
    assert result.returncode == 0, result.stderr
    past = json.loads(result.stdout)
    assert [(i["id"], i["status"], i["amount_cents"]) for i in past["open_invoices"]] == [
        ("in_77", "open", 25000)
    ]
    assert past["lifetime_value_cents"] == 0
    assert past["as_of"].startswith("2025-01-15T23:59:59")


def test_customer_as_of_before_they_existed_exits_1(db_url: str, tmp_path: Path, acme: str) -> None:
    result = crm("customer", "ann@acme.com", "--as-of", "2024-12-31", db_url=db_url, tmp_path=tmp_path)
    assert result.returncode == 1
    assert "had no record as of 2024-12-31" in result.stderr


def test_customer_text_output_is_a_short_panel(db_url: str, tmp_path: Path, acme: str) -> None:
    result = crm("customer", "Ann Lee", db_url=db_url, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Ann Lee · Acme" in result.stdout
    assert "stage lead · MRR $0.00 · lifetime $250.00" in result.stdout
    assert "open invoices: none" in result.stdout


def test_an_unknown_customer_exits_1_with_the_closest_names(db_url: str, tmp_path: Path, acme: str) -> None:
    result = crm("customer", "Anne Le", db_url=db_url, tmp_path=tmp_path)
    assert result.returncode == 1
    assert "no customer matches 'Anne Le'" in result.stderr
    assert "closest: Ann Lee" in result.stderr


def test_a_bad_as_of_date_exits_2(tmp_path: Path) -> None:
    result = crm("customer", "ann", "--as-of", "last tuesday", db_url=None, tmp_path=tmp_path)
    assert result.returncode == 2
    assert "--as-of 'last tuesday' is not a date as YYYY-MM-DD" in result.stderr


def test_replay_verify_passes_then_names_a_tampered_row_then_replay_repairs_it(
    db_url: str, tmp_path: Path, acme: str
) -> None:
    ok = crm("replay", "--verify", db_url=db_url, tmp_path=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "projections match the log up to position" in ok.stdout

    engine = make_engine(db_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE customers SET stage = 'churned' WHERE id = :id"), {"id": acme})
        connection.execute(text("UPDATE invoices SET status = 'open' WHERE id = 'in_77'"))
    engine.dispose()
    bad = crm("replay", "--verify", db_url=db_url, tmp_path=tmp_path)
    assert bad.returncode == 1
    assert "2 difference(s)" in bad.stderr
    assert f"customers {acme}: stage live='churned' replayed='lead'" in bad.stderr
    assert "invoices in_77: status live='open' replayed='paid'" in bad.stderr
    assert "run `crm replay`" in bad.stderr

    rebuilt = crm("replay", db_url=db_url, tmp_path=tmp_path, CRM_PROGRESS="1")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "projections rebuilt up to position" in rebuilt.stdout
    assert "replaying the log" in rebuilt.stderr  # the progress bar
    assert crm("replay", "--verify", db_url=db_url, tmp_path=tmp_path).returncode == 0


def test_upgrading_to_monthly_amounts_keeps_each_subscriptions_old_figure_until_replay(db_url: str) -> None:
    from alembic import command

    from store.db import alembic_config, migrate

    engine = make_engine(db_url)
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0007")
            connection.execute(
                text(
                    "INSERT INTO subscriptions (id, customer_id, plan, amount_cents, currency, status,"
                    " updated_at) VALUES ('sub_y', 'cus_1', 'Yearly', 120000, 'usd', 'active',"
                    " CURRENT_TIMESTAMP)"
                )
            )
        migrate(engine)
        with engine.connect() as connection:
            row = connection.execute(text("SELECT amount_cents, monthly_cents FROM subscriptions")).one()
        assert tuple(row) == (120000, 120000)
    finally:
        engine.dispose()
