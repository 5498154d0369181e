"""What the projections can hold, checked before a signal is accepted and again when it is recorded.

A value that fits its field as sent can outgrow its column once normalised (an email whose lower-case
form is longer) or computed (an amount in cents past a 64-bit column, a fraction of a cent). Postgres
refuses such a row; SQLite, which does not enforce VARCHAR widths, stores it. Either way the signal
was already answered 202, and the sequencer could only retry and give up. So the web routes refuse
it with a 422 before answering, and `record_signal` refuses it on both databases alike.
"""

from __future__ import annotations

from store import events as ev
from store.identity import IdentityError, normalise_email

# The longest usable email address: RFC 5321 caps a forward path at 256 octets including the
# brackets. Checked on the normalised form, which is what contact_points.value and the company
# domain column hold.
MAX_EMAIL = 254
# The largest amount, in cents, a signal may carry (ten trillion in major units): far above any real
# invoice, and far enough below the 64-bit columns that a monthly figure (up to 365/12 times a daily
# price) or a customer's lifetime sum cannot reach their limit.
MAX_CENTS = 10**15


def storable_text(text: str) -> str:
    """Text every database can store: NUL characters dropped (no Postgres text column holds one),
    lone UTF-16 surrogates (undecodable bytes, or escapes a chat app's JSON may carry) replaced."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


class Unstorable(ValueError):
    """A signal the projections cannot hold; `problems` lists (field, what is wrong) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{field} {message}" for field, message in problems))
        self.problems = problems


def unstorable(signal: ev.Signal) -> list[tuple[str, str]]:
    """Each field of signal the projections could not hold, with why; empty when all fit."""
    problems: list[tuple[str, str]] = []
    email = signal.customer.email
    if email is not None:
        try:
            normalised = normalise_email(email)
        except IdentityError:
            normalised = email  # not an address at all: the identity check names that
        if len(normalised) > MAX_EMAIL:
            problems.append(
                (
                    "customer.email",
                    f"is longer than {MAX_EMAIL} characters once normalised, the most an address can have",
                )
            )
    data = signal.typed_data()
    if isinstance(data, ev.InvoiceData | ev.SubscriptionData):
        field = "data.amount_cents" if data.amount_cents is not None else "data.amount"
        try:
            cents = data.cents()
        except ValueError as exc:
            problems.append((field, str(exc)))
        else:
            if abs(cents) > MAX_CENTS:
                problems.append(
                    (field, f"is beyond {MAX_CENTS // 100:,} in major units, the most an amount can be")
                )
    return problems


def check_storable(signal: ev.Signal) -> None:
    """Raise Unstorable naming every field of signal the projections could not hold."""
    problems = unstorable(signal)
    if problems:
        raise Unstorable(problems)
