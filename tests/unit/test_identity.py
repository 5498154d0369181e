"""Identity resolution rules (store/identity.py), table-driven, with the traps that catch naive CRMs.

The rules are pure: they are run here against an in-memory `IdentityLookup`, the seam the store fills
with SQL. The same rules through the real store, on both backends, are in
tests/integration/test_store_contract.py and test_replay.py.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from store.events import ContactPoint, CustomerRef
from store.identity import (
    NAME_KEY_LENGTH,
    IdentityError,
    company_domain,
    normalise_email,
    normalise_name,
    normalise_phone,
    resolve,
    strong_keys,
)


def email(value: str) -> ContactPoint:
    return ContactPoint(kind="email", value=value)


def phone(value: str) -> ContactPoint:
    return ContactPoint(kind="phone", value=value)


@dataclass
class Known:
    """A customer on record, as the lookup sees them."""

    keys: set[ContactPoint] = field(default_factory=set)
    name: str | None = None
    domain: str | None = None


class MemoryLookup:
    """IdentityLookup over a dict of customers (ids sort by creation time, as in the store)."""

    def __init__(self, customers: dict[str, Known]) -> None:
        self.customers = customers

    def owners(self, keys: tuple[ContactPoint, ...]) -> dict[ContactPoint, str]:
        held = {
            key: next((cid for cid, c in sorted(self.customers.items()) if key in c.keys), None)
            for key in keys
        }
        return {key: owner for key, owner in held.items() if owner is not None}

    def keys_of(self, customer_id: str) -> set[ContactPoint]:
        return set(self.customers[customer_id].keys)

    def customers_named(self, name_key: str) -> list[str]:
        return sorted(cid for cid, c in self.customers.items() if normalise_name(c.name) == name_key)

    def customers_at(self, domain: str, limit: int) -> list[str]:
        return sorted(cid for cid, c in self.customers.items() if c.domain == domain)[:limit]


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("ACME@Example.com ", "acme@example.com"),
        ("  acme@example.com", "acme@example.com"),
        ("Ann.Lee+crm@Gmail.com", "ann.lee+crm@gmail.com"),  # dots and tags kept: maybe another person
        ("ÉLODIE@exemple.fr", "élodie@exemple.fr"),
        ("e\u0301lodie@exemple.fr", "élodie@exemple.fr"),  # decomposed accent → composed
    ],
)
def test_emails_are_trimmed_lowercased_and_composed(raw: str, normalised: str) -> None:
    assert normalise_email(raw) == normalised


@pytest.mark.parametrize("raw", ["not-an-email", "a@b", "a b@c.com", "@example.com", "a@@b.com", ""])
def test_what_is_not_an_email_is_refused(raw: str) -> None:
    with pytest.raises(IdentityError):
        normalise_email(raw)


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("(415) 555-2671", "US", "+14155552671"),
        ("+1 415 555 2671", "US", "+14155552671"),
        ("415.555.2671", "US", "+14155552671"),
        ("1-415-555-2671", "US", "+14155552671"),
        ("+1 (415) 555-2671", "GB", "+14155552671"),  # international form is region-independent
        ("001 415 555 2671", "DE", "+14155552671"),  # 00 is the international prefix in Europe
        ("0044 20 7946 0958", "GB", "+442079460958"),
        ("0044 20 7946 0958", "DE", "+442079460958"),
        ("020 7946 0958", "GB", "+442079460958"),  # national form, read in the operator's region
        ("+44 20 7946 0958", "US", "+442079460958"),
        ("011 44 20 7946 0958", "US", "+442079460958"),  # 011 is the US international prefix
    ],
)
def test_phone_formats_normalise_to_e164(raw: str, region: str, e164: str) -> None:
    assert normalise_phone(raw, region) == e164


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("0044 20 7946 0958", "US"),  # 00 is no international prefix in the US: refused, not misread
        ("004415552671", "US"),
        ("hello", "US"),
        ("12", "US"),
        ("", "US"),
    ],
)
def test_what_is_not_a_phone_number_in_the_region_is_refused(raw: str, region: str) -> None:
    with pytest.raises(IdentityError):
        normalise_phone(raw, region)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("José  Müller", "jose muller"),
        ("  ANN lee ", "ann lee"),
        ("Straße", "strasse"),
        ("", None),
        (None, None),
        ("   ", None),
    ],
)
def test_names_compare_without_case_accents_or_extra_spaces(raw: str | None, key: str | None) -> None:
    assert normalise_name(raw) == key


def _name_key_in_full(value: str) -> str | None:
    """normalise_name without its shortcut for ASCII names: every name decomposed, accents dropped."""
    decomposed = unicodedata.normalize("NFKD", value)
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    key = re.sub(r"\s+", " ", bare).strip().casefold()[:NAME_KEY_LENGTH].rstrip()
    return key or None


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=300))
def test_an_ascii_name_skips_decomposition_with_the_same_key(name: str) -> None:
    assert normalise_name(name) == (_name_key_in_full(name) if name else None)


@pytest.mark.parametrize(
    ("address", "domain"),
    [
        ("ann@acme.com", "acme.com"),
        ("ann@gmail.com", None),
        ("bob@googlemail.com", None),
        ("cid@outlook.com", None),
        ("dee@proton.me", None),
        ("eve@mail.acme.co.uk", "mail.acme.co.uk"),
        (None, None),
    ],
)
def test_company_domain_ignores_free_mail(address: str | None, domain: str | None) -> None:
    assert company_domain(address) == domain


def test_strong_keys_are_normalised_in_a_fixed_order() -> None:
    ref = CustomerRef(
        name="Ann",
        email=" Ann@Acme.COM",
        phone="(415) 555-2671",
        slack="U123 ",
        telegram="@AnnLee",
        external_id=" cus_Stripe1 ",
    )
    assert strong_keys(ref) == (
        email("ann@acme.com"),
        phone("+14155552671"),
        ContactPoint(kind="slack", value="U123"),
        ContactPoint(kind="telegram", value="annlee"),
        ContactPoint(kind="external", value="cus_Stripe1"),
    )


def test_a_name_and_company_alone_carry_no_strong_key() -> None:
    assert strong_keys(CustomerRef(name="Ann", company="Acme")) == ()


ANN = "cus_001ann"
BOB = "cus_002bob"
CID = "cus_003cid"

# (what is on record, the incoming reference, customer, new keys, merges, possible duplicates)
RULES = [
    pytest.param(
        {ANN: Known({email("acme@example.com")}, "Ann", "example.com")},
        CustomerRef(email="ACME@Example.com "),
        ANN,
        [],
        [],
        [],
        id="same-email-different-case-and-whitespace-is-the-same-customer",
    ),
    pytest.param(
        {ANN: Known({phone("+14155552671")}, "Ann")},
        CustomerRef(phone="+1 415 555 2671", email="ann@acme.com"),
        ANN,
        [email("ann@acme.com")],
        [],
        [],
        id="phone-in-another-format-matches-and-the-email-is-added",
    ),
    pytest.param(
        {ANN: Known({email("ann@gmail.com")}, "Ann Lee", None)},
        CustomerRef(name="Bob Stone", email="bob@gmail.com", company="Other Co"),
        None,
        [email("bob@gmail.com")],
        [],
        [],
        id="gmail-addresses-at-different-companies-are-not-duplicates-by-domain",
    ),
    pytest.param(
        {ANN: Known({email("ann@outlook.com")}, "Ann Lee", None)},
        CustomerRef(email="zed@outlook.com"),
        None,
        [email("zed@outlook.com")],
        [],
        [],
        id="a-shared-free-mail-domain-is-no-weak-match-either",
    ),
    pytest.param(
        {ANN: Known({email("ann@acme.com")}, "Ann Lee", "acme.com")},
        CustomerRef(email="bob@acme.com"),
        None,
        [email("bob@acme.com")],
        [],
        [(ANN, "same company domain acme.com")],
        id="same-company-domain-is-a-possible-duplicate-not-a-merge",
    ),
    pytest.param(
        {ANN: Known({email("ann@acme.com")}, "Ann Lee", "acme.com")},
        CustomerRef(name="  ann LEE ", email="ann.lee@gmail.com"),
        None,
        [email("ann.lee@gmail.com")],
        [],
        [(ANN, "same name 'ann LEE'")],  # the reference is stripped on the way in
        id="same-name-is-a-possible-duplicate-not-a-merge",
    ),
    pytest.param(
        {ANN: Known({email("ann@acme.com")}, "Ann Lee", "acme.com")},
        CustomerRef(name="Ann Lee", email="ann.lee@acme.com"),
        None,
        [email("ann.lee@acme.com")],
        [],
        [(ANN, "same name 'Ann Lee' and company domain acme.com")],
        id="same-name-and-domain-say-both",
    ),
    pytest.param(
        {
            ANN: Known({email("ann@acme.com")}, "Ann", "acme.com"),
            BOB: Known({phone("+14155552671")}, "Bob"),
        },
        CustomerRef(email="ann@acme.com", phone="(415) 555-2671"),
        ANN,
        [],
        [(BOB, "shared phone +14155552671")],
        [],
        id="strong-keys-of-two-customers-merge-them-into-the-oldest",
    ),
    pytest.param(
        {
            ANN: Known({email("ann@acme.com")}, "Ann", "acme.com"),
            BOB: Known({phone("+14155552671")}, "Bob"),
            CID: Known({ContactPoint(kind="telegram", value="cid")}, "Cid"),
        },
        CustomerRef(telegram="@Cid", phone="415-555-2671", email="new@acme.com"),
        BOB,
        [email("new@acme.com")],
        [(CID, "shared telegram cid")],
        [],
        id="the-oldest-of-the-matched-customers-survives-whatever-the-key-order",
    ),
    pytest.param(
        {ANN: Known({email("ann@acme.com")}, "Ann Lee", "acme.com")},
        CustomerRef(name="Ann Lee", email="ann@acme.com"),
        ANN,
        [],
        [],
        [],
        id="a-strong-match-never-reports-a-weak-one",
    ),
    pytest.param(
        {},
        CustomerRef(name="Nobody", email="n@new.io", phone="+44 20 7946 0958"),
        None,
        [email("n@new.io"), phone("+442079460958")],
        [],
        [],
        id="a-stranger-is-a-new-customer-with-all-their-keys",
    ),
]


@pytest.mark.parametrize(("known", "ref", "customer", "new_keys", "merges", "duplicates"), RULES)
def test_merge_rules(
    known: dict[str, Known],
    ref: CustomerRef,
    customer: str | None,
    new_keys: list[ContactPoint],
    merges: list[tuple[str, str]],
    duplicates: list[tuple[str, str]],
) -> None:
    resolution = resolve(ref, MemoryLookup(known))
    assert resolution.customer_id == customer
    assert resolution.is_new == (customer is None)
    assert resolution.new_keys == new_keys
    assert resolution.merges == merges
    assert resolution.possible_duplicates == duplicates


def test_a_merge_does_not_re_add_keys_the_absorbed_customer_already_had() -> None:
    known = {ANN: Known({email("ann@acme.com")}), BOB: Known({phone("+14155552671"), email("b@b.io")})}
    resolution = resolve(CustomerRef(email="ann@acme.com", phone="+14155552671"), MemoryLookup(known))
    assert resolution.new_keys == []


def test_a_bad_strong_key_is_refused_rather_than_ignored() -> None:
    with pytest.raises(IdentityError):
        resolve(CustomerRef(name="Ann", email="ann-at-acme"), MemoryLookup({}))


def test_a_busy_company_domain_flags_only_its_oldest_customers() -> None:
    from store.identity import DOMAIN_MATCHES

    known = {f"cus_{i:03d}": Known({email(f"p{i}@acme.com")}, f"P{i}", "acme.com") for i in range(8)}
    resolution = resolve(CustomerRef(email="new@acme.com"), MemoryLookup(known))
    assert [other for other, _ in resolution.possible_duplicates] == [
        f"cus_{i:03d}" for i in range(DOMAIN_MATCHES)
    ]


def test_a_name_key_is_cut_to_its_column_width() -> None:
    from store.identity import NAME_KEY_LENGTH, normalise_name

    assert normalise_name("ß" * 255) == "s" * NAME_KEY_LENGTH
    grown = normalise_name("ﷺ" * 200)
    assert grown is not None and len(grown) <= NAME_KEY_LENGTH and grown == grown.strip()
    assert normalise_name("José  Müller") == "jose muller"
