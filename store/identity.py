"""Identity resolution: which customer a signal is about.

The rules, deterministic and in this order:

1. Strong keys name exactly one customer: a normalised email (trimmed, lower-cased), a phone number in
   E.164 (parsed with `phonenumbers`, national numbers read in CRM_PHONE_REGION), a Slack or Telegram
   handle, an external id (e.g. a Stripe customer id). Gmail-style dots and `+tags` are kept: they can
   be different people's addresses.
2. A signal whose strong keys all point to one customer is about that customer; keys it brings that
   the customer lacks are added to them.
3. A signal whose strong keys point to several customers joins them: the oldest (customer ids sort
   by creation time) absorbs the others, recorded as `customer.merged` with the shared key as reason.
4. No strong key matches: a new customer. If an existing customer has the same normalised name or the
   same company domain (free-mail domains such as gmail.com never count), that pair is recorded as a
   `customer.possible_duplicate` for a person to reconcile; nothing is merged on a weak match. A company
   domain is compared with its oldest DOMAIN_MATCHES customers only. The reason names what matched:
   `same name 'Ann Lee'`, `same company domain acme.com`, or both (`… and company domain acme.com`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import phonenumbers

from store.events import ContactPoint, CustomerRef

FREE_MAIL_DOMAINS = frozenset(
    [
        "gmail.com",
        "googlemail.com",
        "yahoo.com",
        "yahoo.co.uk",
        "yahoo.fr",
        "ymail.com",
        "hotmail.com",
        "hotmail.co.uk",
        "hotmail.fr",
        "outlook.com",
        "live.com",
        "msn.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "aol.com",
        "proton.me",
        "protonmail.com",
        "pm.me",
        "gmx.com",
        "gmx.de",
        "gmx.net",
        "web.de",
        "mail.com",
        "mail.ru",
        "yandex.ru",
        "yandex.com",
        "zoho.com",
        "fastmail.com",
        "hey.com",
        "tutanota.com",
        "qq.com",
        "163.com",
        "126.com",
        "naver.com",
        "orange.fr",
        "free.fr",
        "laposte.net",
        "libero.it",
        "t-online.de",
        "btinternet.com",
        "comcast.net",
        "verizon.net",
        "att.net",
    ]
)

# Same-domain customers a new one is flagged against. Beyond a few, the domain is a company with many
# contacts rather than a duplicate, and flagging every pair made importing N colleagues write N²/2 events.
DOMAIN_MATCHES = 3

# The width of customers.name_key: a key is cut to it. Case folding and compatibility decomposition can
# grow a name (`ß` folds to `ss`, `ﷺ` decomposes to 18 letters), so a name that fits its own column
# can outgrow this one; two names alike for their first 255 key characters are alike enough to flag.
NAME_KEY_LENGTH = 255
# The width of possible_duplicates.reason.
REASON_LENGTH = 255

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SPACES = re.compile(r"\s+")


class IdentityError(ValueError):
    """A contact value that cannot be normalised (e.g. `not-an-email`)."""


def normalise_email(value: str) -> str:
    email = unicodedata.normalize("NFC", value).strip().lower()
    if not _EMAIL.match(email):
        raise IdentityError(f"{value!r} is not an email address")
    return email


def normalise_phone(value: str, region: str = "US") -> str:
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        raise IdentityError(f"{value!r} is not a phone number") from exc
    if not phonenumbers.is_possible_number(number):
        raise IdentityError(f"{value!r} is not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_name(value: str | None) -> str | None:
    """Case-, accent- and space-insensitive form of a name (`José  Müller` → `jose muller`)."""
    if not value:
        return None
    if value.isascii():  # decomposes to itself and has no accents: the common case, skipped cheaply
        bare = value
    else:
        decomposed = unicodedata.normalize("NFKD", value)
        bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    key = _SPACES.sub(" ", bare).strip().casefold()[:NAME_KEY_LENGTH].rstrip()
    return key or None


def company_domain(email: str | None) -> str | None:
    """The email's domain when it names a company, None for free-mail domains."""
    if not email:
        return None
    domain = email.rpartition("@")[2]
    return None if domain in FREE_MAIL_DOMAINS else domain


def strong_keys(ref: CustomerRef, region: str = "US") -> tuple[ContactPoint, ...]:
    """The normalised strong keys a reference carries, in a fixed order."""
    keys: list[ContactPoint] = []
    if ref.email:
        keys.append(ContactPoint(kind="email", value=normalise_email(ref.email)))
    if ref.phone:
        keys.append(ContactPoint(kind="phone", value=normalise_phone(ref.phone, region)))
    if ref.slack:
        keys.append(ContactPoint(kind="slack", value=ref.slack.strip()))
    if ref.telegram:
        keys.append(ContactPoint(kind="telegram", value=ref.telegram.strip().lstrip("@").lower()))
    if ref.external_id:
        keys.append(ContactPoint(kind="external", value=ref.external_id.strip()))
    return tuple(keys)


class IdentityLookup(Protocol):
    """What resolution needs to know about customers already on record."""

    def owners(self, keys: tuple[ContactPoint, ...]) -> dict[ContactPoint, str]:
        """The canonical customer holding each of these strong keys, for those held by anyone."""

    def keys_of(self, customer_id: str) -> set[ContactPoint]:
        """The strong keys a canonical customer holds."""

    def customers_named(self, name_key: str) -> list[str]:
        """Canonical customers whose normalised name is name_key."""

    def customers_at(self, domain: str, limit: int) -> list[str]:
        """The oldest `limit` canonical customers with this company domain (a big company has many)."""


@dataclass
class Resolution:
    """The outcome: which customer, and what must be recorded to make it so."""

    customer_id: str | None
    new_keys: list[ContactPoint] = field(default_factory=list)
    merges: list[tuple[str, str]] = field(default_factory=list)  # (customer absorbed, reason)
    possible_duplicates: list[tuple[str, str]] = field(default_factory=list)  # (other id, reason)

    @property
    def is_new(self) -> bool:
        return self.customer_id is None


def resolve(
    ref: CustomerRef,
    lookup: IdentityLookup,
    region: str = "US",
    keys: tuple[ContactPoint, ...] | None = None,
) -> Resolution:
    """Apply the module's rules to one customer reference; `keys` its strong_keys, when known already."""
    if keys is None:
        keys = strong_keys(ref, region)
    owners: dict[str, ContactPoint] = {}
    held = lookup.owners(keys) if keys else {}
    for key in keys:
        owner = held.get(key)
        if owner is not None and owner not in owners:
            owners[owner] = key
    if owners:
        survivor = min(owners)
        resolution = Resolution(customer_id=survivor)
        known = set(lookup.keys_of(survivor))
        for other, key in sorted(owners.items()):
            if other != survivor:
                resolution.merges.append((other, f"shared {key.kind} {key.value}"))
                known |= lookup.keys_of(other)
        resolution.new_keys = [key for key in keys if key not in known]
        return resolution
    resolution = Resolution(customer_id=None, new_keys=list(keys))
    resolution.possible_duplicates = weak_matches(ref, keys, lookup)
    return resolution


# How a possible duplicate that shares only the company domain is worded (the curator reads it: such a
# pair is usually two colleagues, not one person).
SAME_DOMAIN_ONLY = "same company domain"


def weak_matches(
    ref: CustomerRef, keys: Iterable[ContactPoint], lookup: IdentityLookup
) -> list[tuple[str, str]]:
    """Existing customers that share the name or company domain of a new one."""
    found: dict[str, str] = {}
    name_key = normalise_name(ref.name)
    if name_key:
        for other in lookup.customers_named(name_key):
            found.setdefault(other, f"same name {ref.name!r}")
    for key in keys:
        domain = company_domain(key.value) if key.kind == "email" else None
        if domain:
            for other in lookup.customers_at(domain, DOMAIN_MATCHES):
                if other in found:
                    found[other] += f" and company domain {domain}"
                else:
                    found[other] = f"{SAME_DOMAIN_ONLY} {domain}"
    return sorted((other, _clip(reason, REASON_LENGTH)) for other, reason in found.items())


def _clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"
