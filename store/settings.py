"""Settings, read from the environment and `.env`, named exactly as DESIGN.md's public interface."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

SMTP_SCHEMES = frozenset({"smtp", "smtp+starttls", "smtps"})
IMAP_SCHEMES = frozenset({"imap", "imaps"})
# A first connect to a mailbox takes the last two weeks: the open conversations, not years of archive.
DEFAULT_IMAP_SINCE_DAYS = 14
# Without IDLE, the folder is looked at this often: new mail within a minute, a light load on the server.
DEFAULT_IMAP_POLL_SECONDS = 60.0
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
# OPERATORS rights: `*`, or action kinds joined by `|` (`send_email|create_task`).
ALL_KINDS = "*"
_RIGHTS = re.compile(r"^(\*|[a-z_]+(\s*\|\s*[a-z_]+)*)$")
# An IPv4 or IPv6 address or a host name: what uvicorn can bind (no scheme, no port).
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)$")

# Raw messages older than this are folded into a summary and archived: half a year keeps the running
# conversation verbatim while bounding what every recall has to rank.
DEFAULT_MESSAGE_RETENTION_DAYS = 183
# A draft that takes longer than this is not worth waiting for: the template is good enough.
DEFAULT_MODEL_TIMEOUT_S = 20.0
# What one agent may spend per day before it drops to templates.
DEFAULT_DAILY_BUDGET_USD = 1.00


class SettingsError(RuntimeError):
    """A setting is missing or malformed; the message names it and says how to fix it."""


class Settings(BaseSettings):
    """Everything the composition root needs; nothing here opens a connection."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    crm_data_dir: Path = Field(default=Path("./data"), alias="CRM_DATA_DIR")
    database_url: str | None = Field(default=None, alias="DATABASE_URL")
    redis_url: str | None = Field(default=None, alias="REDIS_URL")
    chroma_url: str | None = Field(default=None, alias="CHROMA_URL")
    openai_api_key: SecretStr | None = Field(default=None, alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(default=None, alias="OPENAI_BASE_URL")
    slack_bot_token: SecretStr | None = Field(default=None, alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = Field(default=None, alias="SLACK_SIGNING_SECRET")
    slack_app_token: SecretStr | None = Field(default=None, alias="SLACK_APP_TOKEN")
    slack_channel: str | None = Field(default=None, alias="SLACK_CHANNEL")
    slack_api_url: str = Field(default="https://slack.com/api/", alias="SLACK_API_URL")
    telegram_bot_token: SecretStr | None = Field(default=None, alias="TELEGRAM_BOT_TOKEN")
    telegram_chat_id: str | None = Field(default=None, alias="TELEGRAM_CHAT_ID")
    telegram_api_url: str = Field(default="https://api.telegram.org/bot", alias="TELEGRAM_API_URL")
    telegram_webhook_url: str | None = Field(default=None, alias="TELEGRAM_WEBHOOK_URL")
    telegram_webhook_secret: SecretStr | None = Field(default=None, alias="TELEGRAM_WEBHOOK_SECRET")
    operators: str = Field(default="", alias="OPERATORS")
    signals_secret: SecretStr | None = Field(default=None, alias="SIGNALS_SECRET")
    stripe_webhook_secret: SecretStr | None = Field(default=None, alias="STRIPE_WEBHOOK_SECRET")
    smtp_url: str | None = Field(default=None, alias="SMTP_URL")
    mail_from: str = Field(default="crm@localhost", alias="MAIL_FROM")
    digest_at: str = Field(default="08:00", alias="DIGEST_AT")
    crm_timezone: str = Field(default="UTC", alias="CRM_TIMEZONE")
    port: int = Field(default=8000, ge=1, le=65535, alias="PORT")
    # Issue 17: the interface the web app binds. Unset: `crm run` stays on this machine (127.0.0.1),
    # `crm web` takes every interface (the process a Procfile host or a proxy routes to); the image
    # sets 0.0.0.0 so `crm run` in a container is reachable through its published port.
    host: str | None = Field(default=None, alias="HOST")
    # Issue 17: what `crm run` does with its terminal console. auto: a console when no chat app is
    # configured or stdin is not a terminal, and end of input ends the process once its work is done;
    # serve: end of input ends the console only, the process serves until SIGTERM (the image's choice:
    # a container's stdin is closed); off: no console at all.
    console_mode: Literal["auto", "serve", "off"] = Field(default="auto", alias="CRM_CONSOLE")
    # Additions to the interface (documented in the README's settings table).
    crm_phone_region: str = Field(default="US", alias="CRM_PHONE_REGION")
    # Issue 5 (proposal lifecycle): how long an approved outbound message waits so Undo can cancel
    # it; how long a proposal waits for a decision before it expires (nothing is sent); how long an
    # execution may hold a proposal before a crashed worker's attempt is taken over.
    undo_window_seconds: float = Field(default=30.0, ge=0, le=3600, alias="UNDO_WINDOW_SECONDS")
    proposal_ttl_hours: float = Field(default=24.0, gt=0, alias="PROPOSAL_TTL_HOURS")
    # Share of a proposal's time to live after which the operator is reminded it will expire (0: never).
    expiry_reminder_at: float = Field(default=0.75, ge=0, lt=1, alias="EXPIRY_REMINDER_AT")
    action_lease_seconds: float = Field(default=300.0, gt=0, alias="ACTION_LEASE_SECONDS")
    # Memory: CRM_EMBEDDINGS picks the embedding model; the day count tunes retention.
    embeddings: Literal["local", "openai"] = Field(default="local", alias="CRM_EMBEDDINGS")
    embeddings_model: str = Field(default="text-embedding-3-small", alias="CRM_EMBEDDINGS_MODEL")
    message_retention_days: int = Field(
        default=DEFAULT_MESSAGE_RETENTION_DAYS, ge=1, alias="CRM_MEMORY_MESSAGE_DAYS"
    )
    # The model: tiers, timeout and budget; a policy file of the operator's own (the shipped one if unset).
    policy_file: Path | None = Field(default=None, alias="CRM_POLICY_FILE")
    model_cheap: str = Field(default="gpt-4o-mini", alias="CRM_MODEL_CHEAP")
    model_draft: str = Field(default="gpt-4o", alias="CRM_MODEL_DRAFT")
    model_timeout_s: float = Field(default=DEFAULT_MODEL_TIMEOUT_S, gt=0, le=600, alias="CRM_MODEL_TIMEOUT")
    agent_daily_budget_usd: float = Field(
        default=DEFAULT_DAILY_BUDGET_USD, ge=0, alias="CRM_AGENT_DAILY_BUDGET_USD"
    )
    # Issue 16: the bearer token that opens /metrics and the API docs to non-loopback clients; empty
    # means unset (loopback clients only), as a compose file passing an unset variable gives.
    # Where lead_qualification may propose to send a qualified lead (a Zapier/n8n/Make hook of the
    # operator's own, as JSON); unset: never proposed. Each post still needs the operator's Approve.
    crm_webhook_url: str | None = Field(default=None, alias="CRM_WEBHOOK_URL")
    metrics_token: SecretStr | None = Field(default=None, alias="METRICS_TOKEN")
    # Issue 18: the operator's own mailbox, watched with IDLE (or polled); replies appended to Sent.
    imap_url: SecretStr | None = Field(default=None, alias="IMAP_URL")
    imap_sent: str | None = Field(default=None, alias="IMAP_SENT")
    imap_since: str = Field(default=str(DEFAULT_IMAP_SINCE_DAYS), alias="IMAP_SINCE")
    imap_poll_seconds: float = Field(
        default=DEFAULT_IMAP_POLL_SECONDS, gt=0, le=86_400, alias="IMAP_POLL_SECONDS"
    )

    @field_validator("digest_at")
    @classmethod
    def _digest_at_is_hhmm(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError("must be local time as HH:MM, e.g. 08:00")
        return value

    @field_validator("crm_phone_region")
    @classmethod
    def _phone_region_exists(cls, value: str) -> str:
        import phonenumbers

        region = value.strip().upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError("must be a two-letter region phone numbers are read in, such as US, DE or GB")
        return region

    @field_validator("crm_timezone")
    @classmethod
    def _timezone_exists(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("must be an IANA time zone such as Europe/Berlin") from exc
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url_is_supported(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            url = make_url(normalise_database_url(value.strip()))
        except ArgumentError:
            raise ValueError(
                "is not a database URL: use postgresql://user:password@host:5432/dbname, "
                "or unset it for SQLite in CRM_DATA_DIR"
            ) from None
        if url.get_backend_name() not in {"postgresql", "sqlite"}:
            raise ValueError(
                f"{url.get_backend_name()}:// is not supported: use postgresql://… (Postgres), "
                "or unset it for SQLite in CRM_DATA_DIR"
            )
        return value.strip()

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url_is_smtp(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in SMTP_SCHEMES or not parts.hostname:
            raise ValueError(
                "must look like smtp://user:password@host:587 (STARTTLS when offered), "
                "smtp+starttls://… or smtps://…"
            )
        try:
            parts.port  # noqa: B018 - urlsplit checks the port only when asked
        except ValueError:
            raise ValueError("has a port that is not a number") from None
        return value.strip()

    @field_validator("host")
    @classmethod
    def _host_is_an_interface(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not _HOST.match(value.strip()):
            raise ValueError("must be an address to listen on: 127.0.0.1 (this machine) or 0.0.0.0 (all)")
        return value.strip()

    @field_validator("imap_url")
    @classmethod
    def _imap_url_is_imap(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        from store.mailbox_url import MailboxUrlError, parse_mailbox_url

        try:
            parse_mailbox_url(value.get_secret_value().strip())
        except MailboxUrlError as exc:
            raise ValueError(str(exc)) from None
        return SecretStr(value.get_secret_value().strip())

    @field_validator("imap_since")
    @classmethod
    def _imap_since_is_days_or_date(cls, value: str) -> str:
        from store.mailbox_url import since_date

        since_date(value)  # raises ValueError naming the accepted forms
        return value.strip()

    @field_validator("imap_sent")
    @classmethod
    def _blank_sent_is_unset(cls, value: str | None) -> str | None:
        return value.strip() if value and value.strip() else None

    @field_validator("crm_webhook_url")
    @classmethod
    def _webhook_is_http(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be an http(s) URL, e.g. https://hooks.example.com/new-lead")
        return value.strip()

    @field_validator("signals_secret")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("whsec_"):
            raise ValueError("must be a Standard Webhooks secret starting with whsec_")
        return value

    @field_validator("operators")
    @classmethod
    def _operators_are_surface_ids(cls, value: str) -> str:
        for item in _split(value):
            who, equals, rights = item.partition("=")
            surface, _, ident = who.strip().partition(":")
            if surface not in {"slack", "telegram", "terminal"} or not ident.strip():
                raise ValueError(
                    f"{item!r} is not surface:id[=rights] "
                    "(e.g. slack:U123,telegram:456=send_email|create_task)"
                )
            if equals and not _RIGHTS.match(rights.strip()):
                raise ValueError(
                    f"{item!r}: after = list the action kinds this person may decide, joined by | "
                    "(e.g. send_email|create_task), or * for all"
                )
        return value

    @model_validator(mode="after")
    def _slack_needs_secret_or_socket(self) -> Settings:
        if self.slack_bot_token and not (self.slack_signing_secret or self.slack_app_token):
            raise ValueError(
                "SLACK_BOT_TOKEN is set but neither SLACK_SIGNING_SECRET (HTTP mode) "
                "nor SLACK_APP_TOKEN (Socket Mode) is"
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        """DATABASE_URL, or SQLite in the data dir (the embedded default)."""
        if self.database_url:
            return normalise_database_url(self.database_url)
        return f"sqlite:///{(self.crm_data_dir / 'crm.sqlite3').resolve()}"

    @property
    def operator_ids(self) -> frozenset[str]:
        """The allowlist as `surface:id` strings."""
        return frozenset(self.operator_rights)

    @property
    def operator_rights(self) -> dict[str, frozenset[str] | None]:
        """`surface:id` → the action kinds that person may decide; None: every kind (no `=…`, or `=*`).

        A person listed twice gets the union of both entries.
        """
        rights: dict[str, frozenset[str] | None] = {}
        for item in _split(self.operators):
            who, equals, listed = item.partition("=")
            key = who.strip()
            kinds = None if not equals or listed.strip() == ALL_KINDS else _kinds(listed)
            before = rights.get(key, frozenset())
            rights[key] = None if kinds is None or before is None else before | kinds
        return rights

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.crm_timezone)


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _kinds(listed: str) -> frozenset[str]:
    return frozenset(kind.strip() for kind in listed.split("|") if kind.strip())


def normalise_database_url(url: str) -> str:
    """Pick the psycopg 3 driver for plain postgres URLs (Heroku-style `postgres://` too)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def load_settings(**overrides: object) -> Settings:
    """Read settings; a missing or malformed one raises SettingsError naming it."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = _env_name(error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{name}: {message}" if name else message)
        raise SettingsError("bad settings — " + "; ".join(problems)) from None


def _env_name(loc: tuple[int | str, ...]) -> str:
    if not loc:
        return ""
    field = Settings.model_fields.get(str(loc[0]))
    return (field.alias if field and field.alias else str(loc[0])).upper()
