"""Settings: the names of DESIGN.md, read from the environment and `.env`; a bad one is named at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from store.settings import Settings, SettingsError, load_settings, normalise_database_url


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("DIGEST_AT", "25:00", "HH:MM"),
        ("DIGEST_AT", "8:00", "HH:MM"),
        ("DIGEST_AT", "08:60", "HH:MM"),
        ("DIGEST_AT", "eight", "HH:MM"),
        ("CRM_TIMEZONE", "Mars/Base", "IANA time zone"),
        ("CRM_TIMEZONE", "../etc/passwd", "IANA time zone"),
        ("CRM_PHONE_REGION", "XX", "two-letter region"),
        ("CRM_PHONE_REGION", "USA", "two-letter region"),
        ("SIGNALS_SECRET", "abc123", "whsec_"),
        ("PORT", "0", "greater than or equal to 1"),
        ("PORT", "70000", "less than or equal to 65535"),
        ("PORT", "eighty", "integer"),
        ("OPERATORS", "U123", "surface:id"),
        ("OPERATORS", "slack:U1,irc:bob", "surface:id"),
        ("OPERATORS", "telegram:", "surface:id"),
    ],
)
def test_a_malformed_setting_fails_with_a_message_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str, reason: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None, CRM_DATA_DIR=str(tmp_path))
    message = str(raised.value)
    assert f"{name}:" in message
    assert reason in message


def test_a_slack_token_without_a_secret_or_app_token_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None, CRM_DATA_DIR=str(tmp_path), SLACK_BOT_TOKEN="xoxb-1")
    assert "SLACK_BOT_TOKEN" in str(raised.value)
    assert "SLACK_SIGNING_SECRET" in str(raised.value)


def test_several_bad_settings_are_all_named_at_once(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None, DIGEST_AT="24:00", CRM_TIMEZONE="Nowhere/Else")
    assert "DIGEST_AT" in str(raised.value)
    assert "CRM_TIMEZONE" in str(raised.value)


@pytest.mark.parametrize(
    ("name", "value", "attribute", "expected"),
    [
        ("DIGEST_AT", "23:59", "digest_at", "23:59"),
        ("DIGEST_AT", "00:00", "digest_at", "00:00"),
        ("CRM_TIMEZONE", "Europe/Berlin", "crm_timezone", "Europe/Berlin"),
        ("PORT", "8080", "port", 8080),
        ("SLACK_CHANNEL", "C0123", "slack_channel", "C0123"),
        ("CRM_PHONE_REGION", "GB", "crm_phone_region", "GB"),
        ("CRM_PHONE_REGION", "de", "crm_phone_region", "DE"),
    ],
)
def test_good_settings_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str, attribute: str, expected: object
) -> None:
    monkeypatch.setenv(name, value)
    settings = load_settings(_env_file=None, CRM_DATA_DIR=str(tmp_path))
    assert getattr(settings, attribute) == expected


def test_settings_are_read_from_a_dotenv_file_in_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        "DIGEST_AT=07:30\nOPERATORS=slack:U1,telegram:42\nSIGNALS_SECRET=whsec_c2VjcmV0\n", encoding="utf-8"
    )
    for name in ("DIGEST_AT", "OPERATORS", "SIGNALS_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.digest_at == "07:30"
    assert settings.operator_ids == frozenset({"slack:U1", "telegram:42"})
    assert settings.signals_secret is not None
    assert settings.signals_secret.get_secret_value() == "whsec_c2VjcmV0"


def test_a_malformed_setting_in_dotenv_is_named_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("CRM_TIMEZONE=Mars/Base\n", encoding="utf-8")
    monkeypatch.delenv("CRM_TIMEZONE", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError, match="CRM_TIMEZONE"):
        load_settings()


def test_secrets_do_not_show_in_the_settings_repr(tmp_path: Path) -> None:
    settings = load_settings(_env_file=None, OPENAI_API_KEY="sk-very-secret", CRM_DATA_DIR=str(tmp_path))
    assert "sk-very-secret" not in repr(settings)


def test_the_default_database_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings(_env_file=None, CRM_DATA_DIR=str(tmp_path / "d"))
    assert settings.database_url is None
    assert settings.resolved_database_url == f"sqlite:///{(tmp_path / 'd' / 'crm.sqlite3').resolve()}"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("postgresql://u@h:5433/db", "postgresql+psycopg://u@h:5433/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:////tmp/x.sqlite3", "sqlite:////tmp/x.sqlite3"),
    ],
)
def test_database_urls_get_the_psycopg3_driver(url: str, expected: str) -> None:
    assert normalise_database_url(url) == expected


def test_every_setting_of_the_design_has_its_exact_name() -> None:
    design = [
        "CRM_DATA_DIR",
        "DATABASE_URL",
        "REDIS_URL",
        "CHROMA_URL",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "SLACK_APP_TOKEN",
        "SLACK_CHANNEL",
        "SLACK_API_URL",
        "TELEGRAM_BOT_TOKEN",
        "TELEGRAM_CHAT_ID",
        "TELEGRAM_API_URL",
        "TELEGRAM_WEBHOOK_URL",
        "TELEGRAM_WEBHOOK_SECRET",
        "OPERATORS",
        "SIGNALS_SECRET",
        "STRIPE_WEBHOOK_SECRET",
        "SMTP_URL",
        "MAIL_FROM",
        "DIGEST_AT",
        "CRM_TIMEZONE",
        "PORT",
    ]
    aliases = {field.alias for field in Settings.model_fields.values()}
    assert set(design) <= aliases


@pytest.mark.parametrize(
    ("values", "named", "says"),
    [
        ({"DATABASE_URL": "mysql://root@db/crm"}, "DATABASE_URL", "mysql:// is not supported"),
        ({"DATABASE_URL": "no scheme here"}, "DATABASE_URL", "is not a database URL"),
        ({"SMTP_URL": "http://mail.example.com"}, "SMTP_URL", "must look like smtp://"),
        ({"SMTP_URL": "smtp://mail.example.com:submission"}, "SMTP_URL", "port that is not a number"),
    ],
)
def test_a_wrong_url_is_refused_at_start_naming_the_setting_and_the_fix(
    values: dict[str, str], named: str, says: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None, **values)
    assert f"{named}: " in str(refused.value) and says in str(refused.value)
    assert "Value error" not in str(refused.value)


def test_postgres_and_smtp_urls_of_every_documented_form_are_accepted() -> None:
    settings = load_settings(
        _env_file=None, DATABASE_URL="postgres://u:p@db:5432/crm", SMTP_URL="smtp+starttls://u:p@mail:587"
    )
    assert settings.resolved_database_url == "postgresql+psycopg://u:p@db:5432/crm"
